"""Tiny random ``transformers`` models as logit references for the conversion and parity tests.

Every parameter is drawn anew — the norms too, biases wider — so a swapped, untransposed or
dropped tensor cannot hide behind an init of ones or zeros. Import after
``pytest.importorskip("torch")``: torch is a test-only dependency."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch


def randomize(model, *, norm_mean: float = 1.0, bias_std: float = 0.08):
    """Norm weights ``norm_mean + 0.3·N(0,1)`` (0 for norms stored as an offset from 1, as Gemma's
    are), biases ``bias_std·N(0,1)``, every other weight ``0.08·N(0,1)``; returns ``model``."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(norm_mean + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(bias_std * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
    return model


def random_tokens(vocab: int, seq: int, batch: int = 2, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(batch, seq))


def hf_logits(model, toks) -> np.ndarray:
    """The reference's logits for token ids ``toks`` (batch, seq)."""
    with torch.no_grad():
        return model(torch.tensor(toks)).logits.numpy()


def mv_logits(model, toks) -> np.ndarray:
    """An mvjax model's logits for the same ids."""
    return np.asarray(model(jnp.asarray(toks)).logits)
