"""KV-cache generation: equality with full recomputation for every scheme and head layout,
argument errors, sampling reproducibility, top-k=1 ≡ greedy."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from mvjax.generate import generate, sample_token
from mvjax.model import init_model

B, T, N = 2, 5, 6


@functools.lru_cache(maxsize=None)
def _model(scheme, kv=2):
    """Shared, never-mutated models: generate's jit cache keys on the model graph."""
    return init_model(tiny_config(scheme, num_kv_heads=kv), seed=3)


def _prompt(seed=0):
    return jax.random.randint(jax.random.key(seed), (B, T), 0, 32)


@pytest.mark.parametrize("scheme, kv", [
    ("rope", 2), ("rope", 1), ("alibi", 2), ("alibi", 1), ("nope", 2), ("nope", 1),
    (("rope", "nope"), 2),
], ids=lambda x: str(x))
def test_cache_generation_matches_full_recompute(scheme, kv):
    """Greedy KV-cache decoding gives, at every step, the logits of a full forward over the
    sequence so far (≤ 1e-5, fp32), and each token is the argmax of those logits. Covers RoPE,
    ALiBi, NoPE, GQA (kv=2) and MQA (kv=1) and a per-layer rope/nope mix."""
    model = _model(scheme, kv)
    prompt = _prompt()
    gen = generate(model, prompt, N, return_logits=True)
    assert gen.tokens.shape == (B, T + N) and gen.logits.shape == (B, N, 32)
    np.testing.assert_array_equal(gen.tokens[:, :T], prompt)
    full = model(gen.tokens[:, :-1]).logits[:, T - 1:]
    np.testing.assert_allclose(gen.logits, full, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(gen.tokens[:, T:], jnp.argmax(full, axis=-1))


def test_single_new_token():
    """max_new_tokens=1 works (empty decode scan) and equals the full forward's argmax."""
    model = _model("alibi")
    gen = generate(model, _prompt(), 1, return_logits=True)
    full = model(_prompt()).logits[:, -1]
    np.testing.assert_allclose(gen.logits[:, 0], full, atol=1e-5)
    np.testing.assert_array_equal(gen.tokens[:, -1], jnp.argmax(full, -1))


# ------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("kwargs, needle", [
    (dict(max_new_tokens=3, temperature=0.7), "key"),
    (dict(max_new_tokens=0), "max_new_tokens=0"),
    (dict(max_new_tokens=-2), "max_new_tokens=-2"),
    (dict(max_new_tokens=64), "max_seq_len=64"),
    (dict(max_new_tokens=3, temperature=-1.0), "temperature=-1.0"),
    (dict(max_new_tokens=3, temperature=1.0, key=jax.random.key(0), top_k=0), "top_k=0"),
    (dict(max_new_tokens=3, temperature=1.0, key=jax.random.key(0), top_k=33), "top_k=33"),
])
def test_bad_arguments(kwargs, needle):
    """Invalid generate arguments raise a one-line ValueError naming the problem."""
    with pytest.raises(ValueError) as e:
        generate(_model("nope"), _prompt(), **kwargs)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("prompt", [jnp.zeros((4,), jnp.int32), jnp.zeros((2, 0), jnp.int32)])
def test_bad_prompt_shape(prompt):
    """A prompt that is not B×T with T ≥ 1 is a one-line ValueError."""
    with pytest.raises(ValueError, match="prompt") as e:
        generate(_model("nope"), prompt, 2)
    assert "\n" not in str(e.value)


def test_exact_max_seq_len_allowed():
    """prompt + max_new_tokens == max_seq_len is allowed (the limit is inclusive)."""
    gen = generate(_model("nope"), _prompt()[:, :2], 62)
    assert gen.tokens.shape == (B, 64)


# -------------------------------------------------------------------------------- sampling
def test_sampling_reproducible_with_same_key():
    """Sampling with the same key gives the same tokens; different keys give different ones."""
    model = _model("rope")
    a = generate(model, _prompt(), N, key=jax.random.key(7), temperature=1.5)
    b = generate(model, _prompt(), N, key=jax.random.key(7), temperature=1.5)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    others = [generate(model, _prompt(), N, key=jax.random.key(k), temperature=1.5).tokens
              for k in (8, 9)]
    assert any(not np.array_equal(o, a.tokens) for o in others)


def test_top_k_1_equals_greedy():
    """Sampling restricted to the top-1 token reproduces greedy decoding for any key."""
    model = _model("rope")
    greedy = generate(model, _prompt(), N, return_logits=True)
    for k in (0, 1):
        sampled = generate(model, _prompt(), N, key=jax.random.key(k), temperature=0.8, top_k=1,
                           return_logits=True)
        np.testing.assert_array_equal(sampled.tokens, greedy.tokens)
        np.testing.assert_allclose(sampled.logits, greedy.logits, atol=1e-6)


def test_sample_token_top_k_support():
    """sample_token only ever returns tokens among the top-k logits; temperature 0 is argmax."""
    logits = jax.random.normal(jax.random.key(0), (4, 32))
    top3 = np.argsort(-np.asarray(logits), axis=-1)[:, :3]
    for s in range(20):
        tok = np.asarray(sample_token(logits, jax.random.key(s), 1.0, 3))
        assert all(tok[b] in top3[b] for b in range(4))
    np.testing.assert_array_equal(sample_token(logits, None, 0.0, None), jnp.argmax(logits, -1))
