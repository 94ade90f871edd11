"""Shared tiny-config fixtures (hidden ≤ 64, ≤ 2 layers) so every test file stays fast on CPU."""

from __future__ import annotations

import pytest

from mvjax.config import ModelConfig, PositionalConfig


def tiny_config(scheme="rope", **overrides) -> ModelConfig:
    """A 2-layer, hidden-32, vocab-32 model; ``scheme`` may be a name, a PositionalConfig or a per-layer tuple."""
    if isinstance(scheme, str):
        positional = PositionalConfig(scheme=scheme)
    elif isinstance(scheme, (list, tuple)):
        positional = tuple(PositionalConfig(scheme=s) if isinstance(s, str) else s for s in scheme)
    else:
        positional = scheme
    # few distinct parameter shapes (32×32, 32×16, 32) keep eager-mode compile counts low
    kw = dict(vocab_size=32, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
              mlp_hidden=32, max_seq_len=64, init_std=0.2, positional=positional)
    kw.update(overrides)
    return ModelConfig(**kw)


@pytest.fixture
def make_config():
    """Factory fixture: ``make_config(scheme, **overrides)`` → a tiny ModelConfig."""
    return tiny_config
