"""The NNX transformer: positional invariances, causality through gradients, jit equality,
KV-cache chunking, layouts and GQA at model level, padding, probes, training, bf16."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import tiny_config
from mvjax.config import PositionalConfig
from mvjax.model import KVCache, init_model

SCHEMES = ["rope", "alibi", "nope"]
MIXED = ("rope", "nope")
ALL = SCHEMES + [MIXED]
B, T = 2, 12


@functools.lru_cache(maxsize=None)
def _model(scheme, **overrides):
    """One shared (never mutated) model per config: jit caches key on the model's graph, so
    sharing it across tests compiles each forward shape once."""
    return init_model(tiny_config(scheme, **overrides), seed=1)


@nnx.jit
def _fwd(m, toks, pos, mask):
    return m(toks, pos, attention_mask_BxT=mask).logits


def _pos(b=B, t=T):
    return jnp.broadcast_to(jnp.arange(t), (b, t))


ONES = jnp.ones((B, T), bool)


def _tokens(seed=0, b=B, t=T, vocab=32):
    return jax.random.randint(jax.random.key(seed), (b, t), 0, vocab)


def _params(model):
    return {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))}


# ------------------------------------------------------------------------------ position shifts
@pytest.mark.parametrize("scheme", ALL, ids=str)
def test_position_shift_invariance(scheme):
    """Shifting all position ids by s leaves the logits unchanged: exactly for NoPE, up to float
    error for RoPE (relative rotation) and ALiBi (relative bias)."""
    model = _model(scheme)
    toks = _tokens()
    base = _fwd(model, toks, _pos(), ONES)
    for s in (5, 300):
        shifted = _fwd(model, toks, _pos() + s, ONES)
        if scheme == "nope":
            np.testing.assert_array_equal(shifted, base)
        else:
            np.testing.assert_allclose(shifted, base, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("scheme", ["rope", "alibi"])
def test_positions_matter(scheme):
    """Control for the shift test: non-uniform position changes do change RoPE/ALiBi outputs."""
    model, toks = _model(scheme), _tokens()
    assert np.abs(_fwd(model, toks, _pos() * 3, ONES) - _fwd(model, toks, _pos(), ONES)).max() > 1e-3


# ------------------------------------------------------------------------ causality via grads
@pytest.mark.parametrize("scheme", SCHEMES)
def test_causality_through_gradients(scheme):
    """d(logits at t)/d(embedding of the token at t') is exactly 0 for every t' > t and nonzero
    for t' ≤ t. Tokens are unique so each embedding-table row feeds exactly one position; the
    head is untied so the table only enters through the input."""
    model = _model(scheme, tie_embeddings=False)
    cfg = model.cfg
    toks = jax.random.permutation(jax.random.key(0), cfg.vocab_size)[:T][None]
    w = jax.random.normal(jax.random.key(1), (cfg.vocab_size,))
    graphdef, emb, rest = nnx.split(model, nnx.PathContains("embed"), ...)
    assert len(jax.tree.leaves(emb)) == 1

    def per_position(table):
        m = nnx.merge(graphdef, jax.tree.map(lambda _: table, emb), rest)
        return m(toks).logits[0] @ w  # T

    jac = jax.jit(jax.jacrev(per_position))(model.embed.embedding[...])  # T × V × hidden
    per_src = np.abs(np.asarray(jac)[:, np.asarray(toks[0])]).max(-1)  # T(out) × T(src)
    future = np.triu(np.ones((T, T), bool), k=1)
    assert np.all(per_src[future] == 0.0)
    assert np.all(per_src[~future] > 0.0)


# ------------------------------------------------------------------------------------- jit
@pytest.mark.parametrize("scheme", SCHEMES)
def test_jit_matches_eager(scheme):
    """nnx.jit of the forward gives the same logits as eager execution."""
    model = _model(scheme)
    toks = _tokens(1)
    eager = model(toks, _pos(), attention_mask_BxT=ONES).logits
    jitted = _fwd(model, toks, _pos(), ONES)
    np.testing.assert_allclose(jitted, eager, atol=1e-5, rtol=1e-5)


# -------------------------------------------------------------------------------- KV cache
@pytest.mark.parametrize("scheme, kv", [("rope", 2), ("alibi", 1)], ids=str)
def test_chunked_prefill_matches_full(scheme, kv):
    """Prefilling the cache in chunks (5 + 1 + 6 tokens) gives the logits of one full forward
    and of a one-shot cached prefill, and the same cache contents."""
    model = _model(scheme, num_kv_heads=kv)
    toks = _tokens(2)

    @nnx.jit
    def run(m):
        full = m(toks).logits
        one = m(toks, cache=KVCache.empty(m.cfg, B, 16))
        cache, parts = KVCache.empty(m.cfg, B, 16), []
        for a, b in ((0, 5), (5, 6), (6, T)):
            out = m(toks[:, a:b], cache=cache)
            cache = out.cache
            parts.append(out.logits)
        return full, one, cache, parts

    full, one, cache, parts = run(model)
    np.testing.assert_allclose(one.logits, full, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(jnp.concatenate(parts, axis=1), full, atol=1e-5, rtol=1e-5)
    assert int(cache.end) == T == int(one.cache.end)
    np.testing.assert_array_equal(cache.valid_BxS, one.cache.valid_BxS)
    assert cache.valid_BxS[:, :T].all() and not cache.valid_BxS[:, T:].any()
    for layer in range(model.cfg.num_layers):
        np.testing.assert_allclose(cache.k[layer], one.cache.k[layer], atol=1e-5)
        np.testing.assert_allclose(cache.v[layer], one.cache.v[layer], atol=1e-5)


# -------------------------------------------------------------------------- layouts, GQA
def _perm(head_dim, rot):
    perm = np.arange(head_dim)
    for d in range(rot):
        perm[2 * d if d < rot // 2 else 2 * (d - rot // 2) + 1] = d
    return perm


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_half_vs_interleaved_model_with_permuted_weights(fraction):
    """A half-layout model and an interleaved one whose q/k projection columns are permuted per
    head (d<R/2 → 2d, d≥R/2 → 2(d−R/2)+1) produce the same logits."""
    half_cfg = tiny_config(PositionalConfig(layout="half", rotary_fraction=fraction))
    inter_cfg = tiny_config(PositionalConfig(layout="interleaved", rotary_fraction=fraction))
    half = init_model(half_cfg, seed=5)
    inter = init_model(inter_cfg, seed=5)
    hd, rot = half_cfg.head_dim, half_cfg.positional.rotary_dims(half_cfg.head_dim)
    perm = _perm(hd, rot)
    for lh, li in zip(half.layers, inter.layers):
        for name, heads in (("q_proj", half_cfg.num_heads), ("k_proj", half_cfg.num_kv_heads)):
            w = getattr(lh.attn, name).kernel[...].reshape(-1, heads, hd)
            getattr(li.attn, name).kernel[...] = w[..., perm].reshape(-1, heads * hd)
    toks = _tokens(3)
    np.testing.assert_allclose(inter(toks).logits, half(toks).logits, atol=1e-5, rtol=1e-5)
    unpermuted = init_model(inter_cfg, seed=5)
    assert np.abs(unpermuted(toks).logits - half(toks).logits).max() > 1e-4


@pytest.mark.parametrize("scheme, kv", [("alibi", 2), ("alibi", 1), ("rope", 1)], ids=str)
def test_gqa_equals_mha_with_repeated_kv(scheme, kv):
    """GQA/MQA equals MHA whose k/v heads are copies (query head h uses kv head h // G), incl.
    ALiBi slopes assigned per query head."""
    gqa = init_model(tiny_config(scheme, num_kv_heads=kv), seed=6)
    mha = init_model(tiny_config(scheme, num_kv_heads=4), seed=7)
    G, hd = 4 // kv, gqa.cfg.head_dim
    mha.embed.embedding[...] = gqa.embed.embedding[...]
    mha.norm.weight[...] = gqa.norm.weight[...]
    for lg, lm in zip(gqa.layers, mha.layers):
        for mod in ("input_norm", "post_attn_norm"):
            getattr(lm, mod).weight[...] = getattr(lg, mod).weight[...]
        for name in ("gate_proj", "up_proj", "down_proj"):
            getattr(lm.mlp, name).kernel[...] = getattr(lg.mlp, name).kernel[...]
        for name in ("q_proj", "o_proj"):
            getattr(lm.attn, name).kernel[...] = getattr(lg.attn, name).kernel[...]
        for name in ("k_proj", "v_proj"):
            w = getattr(lg.attn, name).kernel[...].reshape(-1, kv, hd)
            getattr(lm.attn, name).kernel[...] = jnp.repeat(w, G, axis=1).reshape(-1, 4 * hd)
    toks = _tokens(4)
    np.testing.assert_allclose(gqa(toks).logits, mha(toks).logits, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------ padding mask
@pytest.mark.parametrize("scheme", SCHEMES)
def test_left_padding_is_masked(scheme):
    """A left-padded row (mask 0 on the pads, positions starting at 0 on the first real token)
    gives the same logits on its real tokens as the unpadded sequence."""
    model = _model(scheme)
    pad = 3
    toks = _tokens(5, t=T - pad)
    padded = jnp.concatenate([jnp.full((B, pad), 7), toks], axis=1)
    mask = jnp.concatenate([jnp.zeros((B, pad)), jnp.ones((B, T - pad))], axis=1)
    pos = jnp.broadcast_to(jnp.concatenate([jnp.zeros(pad, jnp.int32), jnp.arange(T - pad)]), (B, T))
    out = _fwd(model, padded, pos, mask)[:, pad:]
    ref = _fwd(model, toks, _pos(t=T - pad), jnp.ones((B, T - pad), bool))
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
    unmasked = _fwd(model, padded, pos, ONES)[:, pad:]  # control: without the mask pads leak in
    assert np.abs(unmasked - ref).max() > 1e-4


# ------------------------------------------------------------------------------------ probes
class _Recorder:
    sites = frozenset({"q", "k", "v", "q_rot", "k_rot", "attn"})

    def __call__(self, site, layer, x, ctx):
        return x, x


class _ZeroV:
    sites = frozenset({"v"})

    def __call__(self, site, layer, x, ctx):
        return jnp.zeros_like(x), None


def test_probe_sites_shapes_and_edits():
    """Probes see every site with the documented shapes; attention rows sum to 1 and are causal;
    an identity probe changes nothing, an editing probe changes the output."""
    model = _model("rope")
    cfg = model.cfg
    toks = _tokens(6)
    plain = model(toks)
    out = model(toks, probe=_Recorder())  # observing attn takes the plain core, not mvjax.flash
    np.testing.assert_allclose(out.logits, plain.logits, atol=1e-5)
    H, KV, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    for layer in range(cfg.num_layers):
        assert out.records["q"][layer].shape == (B, T, H, D)
        assert out.records["k_rot"][layer].shape == (B, T, KV, D)
        attn = np.asarray(out.records["attn"][layer])
        assert attn.shape == (B, H, T, T)
        np.testing.assert_allclose(attn.sum(-1), 1.0, atol=1e-5)
        assert np.all(attn[..., np.triu(np.ones((T, T), bool), k=1)] == 0)
    assert plain.records == {}
    zeroed = model(toks, probe=_ZeroV())
    assert zeroed.records == {}
    assert np.abs(zeroed.logits - plain.logits).max() > 1e-4


def test_logits_false_and_hidden():
    """logits=False skips the head; hidden is B×T×hidden and the logits are hidden @ embedding."""
    model = _model("rope")
    toks = _tokens(7)
    out = model(toks, logits=False)
    assert out.logits is None and out.hidden.shape == (B, T, 32)
    full = model(toks)
    np.testing.assert_allclose(full.hidden @ model.embed.embedding[...].T, full.logits, atol=1e-5)


# --------------------------------------------------------------------------------- training
@pytest.mark.parametrize("scheme", ALL, ids=str)
def test_one_adamw_step(scheme):
    """One AdamW step on random tokens: finite loss and grads, every parameter moves, the loss
    on the same batch goes down."""
    model = init_model(tiny_config(scheme), seed=11)
    toks = _tokens(8)
    before = _params(model)

    def loss_fn(m):
        logits = m(toks).logits[:, :-1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, toks[:, 1:]).mean()

    opt = nnx.Optimizer(model, optax.adamw(3e-3), wrt=nnx.Param)
    loss0, grads = nnx.value_and_grad(loss_fn)(model)
    assert np.isfinite(float(loss0))
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    opt.update(model, grads)
    after = _params(model)
    assert all(np.isfinite(v).all() for v in after.values())
    assert all(np.abs(after[k] - before[k]).max() > 0 for k in before)
    loss1 = float(loss_fn(model))
    assert np.isfinite(loss1) and loss1 != float(loss0) and loss1 < float(loss0)


# ------------------------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("scheme", ["rope", "alibi"])
def test_bf16_close_to_fp32(scheme):
    """bfloat16 compute runs, keeps float32 parameters and float32 logits, and stays close to the
    float32 model with the same weights (loose tolerance)."""
    f32 = _model(scheme)
    bf16 = _model(scheme, dtype="bfloat16")  # same seed → same float32 weights
    for k, v in _params(bf16).items():
        assert v.dtype == np.float32, k
    toks = _tokens(9)
    a, b = _fwd(f32, toks, _pos(), ONES), _fwd(bf16, toks, _pos(), ONES)
    assert b.dtype == jnp.float32 and np.isfinite(np.asarray(b)).all()
    scale = float(jnp.abs(a).max())
    assert float(jnp.abs(a - b).max()) <= 0.05 * scale + 0.02
    assert float(jnp.abs(a - b).max()) > 0  # really computed in lower precision
    cache = KVCache.empty(bf16.cfg, B, 16)
    assert cache.k[0].dtype == jnp.bfloat16


def test_bad_token_shape():
    """Tokens that are not B×T raise a one-line ValueError."""
    model = init_model(tiny_config("nope"), seed=0)
    with pytest.raises(ValueError, match="B×T") as e:
        model(jnp.zeros((T,), jnp.int32))
    with pytest.raises(ValueError, match="B×T"):
        model(jnp.zeros((1, 2, T), jnp.int32))
    assert "\n" not in str(e.value)
