"""The memory-light causal attention (mvjax.flash) against the plain attention core: outputs and
hand-written gradients, with GQA, an ALiBi bias, left padding and ragged blocks; and the model
path that uses it against the path that observes probabilities."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from mvjax.flash import causal_attention
from mvjax.model import attend, init_model
from mvjax.positional import alibi_bias, alibi_slopes


class _Alibi:
    """A hashable bias function, as the model passes its scheme's ``bias`` method."""

    def __init__(self, heads: int):
        self.slopes = alibi_slopes(heads)

    def __call__(self, q_pos, k_pos):
        return alibi_bias(self.slopes, q_pos, k_pos)

    def __hash__(self):
        return hash(tuple(self.slopes))

    def __eq__(self, other):
        return isinstance(other, _Alibi) and np.array_equal(self.slopes, other.slopes)


@pytest.mark.parametrize("kv, with_bias, t, block", [(4, False, 37, 8), (2, True, 37, 8),
                                                     (1, True, 32, 16), (2, False, 37, 64)], ids=str)
def test_flash_equals_plain_attention(kv, with_bias, t, block):
    """Values and q/k/v gradients equal the plain path on real rows (row 1 left-padded by 5;
    a ragged last block; a block longer than the sequence)."""
    b, h, d = 2, 4, 8
    ks = jax.random.split(jax.random.key(3), 4)
    q = jax.random.normal(ks[0], (b, t, h, d))
    k, v = (jax.random.normal(kk, (b, t, kv, d)) for kk in ks[1:3])
    valid = jnp.arange(t)[None, :] >= jnp.array([[0], [5]])
    mask = jnp.tril(jnp.ones((t, t), bool))[None] & valid[:, None, :]
    pos = jnp.maximum(jnp.arange(t)[None, :] - jnp.array([[0], [5]]), 0)
    bias_fn = _Alibi(h) if with_bias else None
    bias = bias_fn(pos, pos) if with_bias else None
    cot = jax.random.normal(ks[3], (b, t, h, d)) * valid[:, :, None, None]  # real rows only

    def plain(q, k, v):
        return jnp.sum(attend(q, k, v, mask, bias) * cot)

    def flash(q, k, v):
        out = causal_attention(*(jnp.swapaxes(x, 1, 2) for x in (q, k, v)), valid, pos, bias_fn,
                               block)  # kv heads not repeated: the grouped (GQA) path
        return jnp.sum(jnp.swapaxes(out, 1, 2) * cot)

    (l_plain, g_plain), (l_flash, g_flash) = (jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(q, k, v)
                                              for f in (plain, flash))
    np.testing.assert_allclose(l_flash, l_plain, rtol=1e-5)
    for name, a, e in zip("qkv", g_flash, g_plain):
        np.testing.assert_allclose(a, e, atol=2e-5, rtol=1e-5, err_msg=f"d{name}")


def test_fully_padded_rows_are_zero_and_finite():
    """A query row with no valid key (front padding) gives zeros, and gradients stay finite."""
    q = jnp.ones((1, 2, 6, 4))
    valid = jnp.array([[False, False, True, True, True, True]])
    pos = jnp.arange(6)[None]
    out = causal_attention(q, q, q + 1.0, valid, pos, None, 4)
    np.testing.assert_array_equal(out[0, :, :2], 0.0)
    assert np.all(np.asarray(out[0, :, 2:]) > 0)
    g = jax.grad(lambda x: jnp.sum(causal_attention(x, x, x, valid, pos, None, 4)[:, :, 2:]))(q)
    assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("scheme", ["rope", "alibi", "nope"])
def test_model_fast_path_equals_observed_path(scheme):
    """The model's unobserved causal path (flash) gives the logits of the path that observes the
    probabilities (plain attention, via an ``attn`` probe that records nothing)."""
    model = init_model(tiny_config(scheme), seed=2)
    tokens = jax.random.randint(jax.random.key(0), (2, 20), 0, 32)

    class Watch:
        sites = frozenset({"attn"})

        def __call__(self, site, layer, x, ctx):
            return x, None

    fast = model(tokens).logits
    observed = model(tokens, probe=Watch()).logits
    np.testing.assert_allclose(fast, observed, atol=2e-5, rtol=1e-5)


def test_kv_heads_must_divide_query_heads():
    q, kv = jnp.ones((1, 4, 6, 8)), jnp.ones((1, 3, 6, 8))
    valid, pos = jnp.ones((1, 6), bool), jnp.arange(6)[None]
    with pytest.raises(ValueError, match="kv head count must divide"):
        causal_attention(q, kv, kv, valid, pos)
