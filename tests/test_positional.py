"""Positional encodings: RoPE relativity, layouts, partial rotary, HF-matching frequencies,
dim→frequency maps, ALiBi slopes and bias, and the scheme registry."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from mvjax.config import PositionalConfig, RopeScaling
from mvjax.positional import (SCHEME_REGISTRY, alibi_bias, alibi_slopes, apply_rope, build_scheme,
                              dim_to_frequency, dim_to_wavelength, pair_index, rope_frequencies)

T, H, D = 8, 2, 16


def _qk(seed=0, d=D):
    kq, kk = jax.random.split(jax.random.key(seed))
    return jax.random.normal(kq, (1, T, H, d)), jax.random.normal(kk, (1, T, H, d))


def _logits(q, k, pos, inv_freq, layout):
    pos = jnp.asarray(pos)[None]
    return jnp.einsum("bthd,bshd->bhts", apply_rope(q, pos, inv_freq, layout),
                      apply_rope(k, pos, inv_freq, layout))


def half_to_interleaved_perm(head_dim: int, rot: int) -> np.ndarray:
    """perm[j] = the half-layout dim stored at interleaved dim j (pass-through dims fixed)."""
    perm = np.arange(head_dim)
    for d in range(rot):
        perm[2 * d if d < rot // 2 else 2 * (d - rot // 2) + 1] = d
    return perm


# --------------------------------------------------------------------------------------- RoPE
@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("rot, scaling", [(16, None), (8, None),
                                          (16, RopeScaling(type="llama3", original_max_position_embeddings=32)),
                                          (16, RopeScaling(type="linear", factor=4.0))])
def test_rope_logits_depend_only_on_relative_offset(layout, rot, scaling):
    """Shifting every position by s leaves all rotated q·k logits unchanged (but not a per-token
    shuffle of positions: the positions do matter)."""
    q, k = _qk()
    inv = rope_frequencies(rot, 10000.0, scaling)
    pos = np.arange(T) * 3 + 1
    base = _logits(q, k, pos, inv, layout)
    for s in (1, 17, 250):
        np.testing.assert_allclose(_logits(q, k, pos + s, inv, layout), base, atol=2e-4, rtol=1e-4)
    shuffled = pos[::-1].copy()
    assert np.abs(_logits(q, k, shuffled, inv, layout) - base).max() > 1e-2


def test_rope_preserves_norm_and_is_identity_at_zero():
    """Rotation is norm-preserving per head and position 0 is the identity."""
    q, _ = _qk()
    inv = rope_frequencies(D, 10000.0)
    for layout in ("half", "interleaved"):
        out = apply_rope(q, jnp.arange(T)[None] * 5, inv, layout)
        np.testing.assert_allclose(jnp.linalg.norm(out, axis=-1), jnp.linalg.norm(q, axis=-1), rtol=1e-5)
        np.testing.assert_allclose(apply_rope(q, jnp.zeros((1, T), jnp.int32), inv, layout), q, atol=1e-7)


@pytest.mark.parametrize("rot", [16, 8])
def test_half_and_interleaved_equal_after_permutation(rot):
    """With q/k dims permuted half→interleaved (d<R/2 → 2d, d≥R/2 → 2(d−R/2)+1), both layouts give
    identical attention logits; without the permutation they differ."""
    q, k = _qk(1)
    inv = rope_frequencies(rot, 10000.0)
    pos = np.arange(T) + 5
    perm = half_to_interleaved_perm(D, rot)
    half = _logits(q, k, pos, inv, "half")
    inter = _logits(q[..., perm], k[..., perm], pos, inv, "interleaved")
    np.testing.assert_allclose(inter, half, atol=1e-4, rtol=1e-5)
    # the rotated vectors themselves correspond under the same permutation
    np.testing.assert_allclose(apply_rope(q[..., perm], jnp.asarray(pos)[None], inv, "interleaved"),
                               apply_rope(q, jnp.asarray(pos)[None], inv, "half")[..., perm], atol=1e-5)
    assert np.abs(_logits(q, k, pos, inv, "interleaved") - half).max() > 1e-2


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_partial_rotary_passes_tail_through(layout):
    """Partial rotary: dims ≥ R are bit-identical to the input, dims < R rotate."""
    q, _ = _qk(2)
    rot = PositionalConfig(rotary_fraction=0.5).rotary_dims(D)
    inv = rope_frequencies(rot, 10000.0)
    assert len(inv) == rot // 2 == 4
    out = apply_rope(q, jnp.arange(T)[None] + 3, inv, layout)
    np.testing.assert_array_equal(out[..., rot:], q[..., rot:])
    assert np.all(np.abs(out[..., :rot] - q[..., :rot]).max(axis=(0, 2, 3)) > 1e-3)


def test_apply_rope_matches_hf_rotate_half():
    """The half layout equals HF LLaMA's apply_rotary_pos_emb (rotate_half convention)."""
    torch = pytest.importorskip("torch")
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    q, k = _qk(3)
    inv = rope_frequencies(D, 10000.0)
    pos = np.arange(T) + 2
    emb = np.concatenate([np.outer(pos, inv)] * 2, axis=-1)  # T×D
    cos = torch.tensor(np.cos(emb), dtype=torch.float32)[None]
    sin = torch.tensor(np.sin(emb), dtype=torch.float32)[None]
    tq = torch.tensor(np.asarray(q)).transpose(1, 2)  # B×H×T×D
    tk = torch.tensor(np.asarray(k)).transpose(1, 2)
    hq, hk = apply_rotary_pos_emb(tq, tk, cos, sin)
    ours_q = apply_rope(q, jnp.asarray(pos)[None], inv, "half")
    ours_k = apply_rope(k, jnp.asarray(pos)[None], inv, "half")
    np.testing.assert_allclose(ours_q, hq.transpose(1, 2).numpy(), atol=1e-5)
    np.testing.assert_allclose(ours_k, hk.transpose(1, 2).numpy(), atol=1e-5)


def test_apply_rope_bad_layout():
    """An unknown layout is a one-line ValueError."""
    q, _ = _qk()
    with pytest.raises(ValueError, match="layout"):
        apply_rope(q, jnp.arange(T)[None], rope_frequencies(D, 10000.0), "neox")


# ------------------------------------------------------------------- frequencies vs transformers
def _hf_inv_freq(head_dim, rope_parameters):
    pytest.importorskip("torch")
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim,
                      rope_parameters=dict(rope_parameters))
    if rope_parameters["rope_type"] == "default":
        inv, _ = LlamaRotaryEmbedding.compute_default_rope_parameters(cfg)
    else:
        inv, _ = ROPE_INIT_FUNCTIONS[rope_parameters["rope_type"]](cfg, "cpu")
    return inv.double().numpy()


@pytest.mark.parametrize("theta", [10000.0, 500000.0])
@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_default_frequencies_match_transformers(theta, fraction):
    """Unscaled frequencies equal HF LLaMA's default RoPE init; with partial rotary (which LLaMA's
    default ignores) they equal HF's partial-rotary-aware init at factor 1."""
    hd = 32
    rot = PositionalConfig(rotary_fraction=fraction).rotary_dims(hd)
    ours = rope_frequencies(rot, theta)
    if fraction == 1.0:
        hf = _hf_inv_freq(hd, dict(rope_type="default", rope_theta=theta))
    else:
        hf = _hf_inv_freq(hd, dict(rope_type="linear", factor=1.0, rope_theta=theta,
                                   partial_rotary_factor=fraction))
    assert ours.shape == hf.shape
    np.testing.assert_allclose(ours, hf, rtol=1e-6)


@pytest.mark.parametrize("factor", [2.0, 8.0])
def test_linear_scaling_matches_transformers(factor):
    """Linear scaling divides every frequency by factor, exactly as HF's "linear" init."""
    hd = 32
    s = RopeScaling(type="linear", factor=factor)
    ours = rope_frequencies(hd, 10000.0, s)
    hf = _hf_inv_freq(hd, dict(rope_type="linear", rope_theta=10000.0, factor=factor))
    np.testing.assert_allclose(ours, hf, rtol=1e-6)
    np.testing.assert_allclose(ours * factor, rope_frequencies(hd, 10000.0), rtol=1e-12)


@pytest.mark.parametrize("params", [
    dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64),
    dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192),
    dict(factor=4.0, low_freq_factor=2.0, high_freq_factor=8.0, original_max_position_embeddings=256),
])
@pytest.mark.parametrize("theta, fraction", [(10000.0, 1.0), (500000.0, 1.0), (500000.0, 0.5)])
def test_llama3_scaling_matches_transformers(params, theta, fraction):
    """llama3 scaling (low band slowed by factor, high band kept, smooth ramp) equals HF's,
    also with partial rotary."""
    hd = 64
    pos = PositionalConfig(theta=theta, rotary_fraction=fraction,
                           scaling=RopeScaling(type="llama3", **params))
    ours = rope_frequencies(pos.rotary_dims(hd), theta, pos.scaling)
    hf = _hf_inv_freq(hd, dict(rope_type="llama3", rope_theta=theta, partial_rotary_factor=fraction,
                               **params))
    assert ours.shape == hf.shape
    np.testing.assert_allclose(ours, hf, rtol=1e-6)


def test_llama3_scaling_bands():
    """Sanity of the three llama3 bands, computed independently: short wavelengths kept, long
    ones divided by factor, the ramp in between strictly between the two."""
    s = RopeScaling(type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=64)
    base = 1.0 / 500000.0 ** (np.arange(0, 64, 2) / 64)
    out = rope_frequencies(64, 500000.0, s)
    wl = 2 * np.pi / base
    high, low = wl < 64 / 4, wl > 64 / 1
    mid = ~high & ~low
    assert high.any() and low.any() and mid.any()
    np.testing.assert_allclose(out[high], base[high], rtol=1e-12)
    np.testing.assert_allclose(out[low], base[low] / 8, rtol=1e-12)
    assert np.all(out[mid] < base[mid]) and np.all(out[mid] > base[mid] / 8)


# ---------------------------------------------------------------------------- dim → frequency
@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("fraction", [1.0, 0.5])
@pytest.mark.parametrize("scaling", [None, RopeScaling(type="llama3", original_max_position_embeddings=32)])
def test_dim_to_frequency_one_hot(layout, fraction, scaling):
    """Rotating a one-hot vector in dim d by position p puts cos(ω_d·p) back in d and the rest of
    its unit energy in exactly one partner dim, with ω_d = dim_to_frequency[d]; dims reported None
    never move."""
    hd = 16
    cfg = tiny_config(PositionalConfig(layout=layout, rotary_fraction=fraction, scaling=scaling),
                      hidden_size=64, num_heads=4)
    assert cfg.head_dim == hd
    freqs = dim_to_frequency(cfg, 0)
    rot = cfg.positional.rotary_dims(hd)
    assert sum(f is not None for f in freqs) == rot
    scheme = build_scheme(cfg.positional, hd, cfg.num_heads)
    positions = np.arange(0, 40, 3)
    eye = jnp.eye(hd)[None, None].repeat(len(positions), axis=1)  # 1×P×hd(as heads)×hd
    out = np.asarray(scheme.rotate(eye, jnp.asarray(positions)[None]))[0]  # P×(one-hot d)×hd
    for d, f in enumerate(freqs):
        vec = out[:, d, :]  # P×hd: where e_d's energy went
        if f is None:
            np.testing.assert_array_equal(vec, np.eye(hd)[d][None].repeat(len(positions), 0))
            continue
        np.testing.assert_allclose(vec[:, d], np.cos(f * positions), atol=1e-5)
        others = np.delete(vec, d, axis=1)
        moved = np.abs(others).max(axis=0) > 1e-6
        assert moved.sum() == 1  # one partner dim
        partner = np.delete(np.arange(hd), d)[moved][0]
        np.testing.assert_allclose(np.abs(vec[:, partner]), np.abs(np.sin(f * positions)), atol=1e-5)
        assert freqs[partner] == f  # partners share the frequency
    # wavelengths are 2π/ω
    for f, w in zip(freqs, dim_to_wavelength(cfg, 0)):
        assert (f is None and w is None) or math.isclose(w, 2 * math.pi / f)


def test_dim_to_frequency_none_for_alibi_nope_layers():
    """In a mixed model, ALiBi and NoPE layers report no frequency for any dim; RoPE layers do."""
    cfg = tiny_config(("rope", "alibi", "nope"), num_layers=3)
    assert all(f is not None for f in dim_to_frequency(cfg, 0))
    assert dim_to_frequency(cfg, 1) == [None] * cfg.head_dim
    assert dim_to_frequency(cfg, 2) == [None] * cfg.head_dim
    assert dim_to_wavelength(cfg, 2) == [None] * cfg.head_dim


def test_pair_index_layouts():
    """pair_index: half pairs d with d+R/2, interleaved 2i with 2i+1; tail dims None."""
    assert pair_index(8, 8, "half") == [0, 1, 2, 3, 0, 1, 2, 3]
    assert pair_index(8, 8, "interleaved") == [0, 0, 1, 1, 2, 2, 3, 3]
    assert pair_index(8, 4, "half") == [0, 1, 0, 1, None, None, None, None]
    assert pair_index(8, 4, "interleaved") == [0, 0, 1, 1, None, None, None, None]


# ----------------------------------------------------------------------------------------- ALiBi
def test_alibi_slopes_8_heads():
    """8 heads: slopes 2^-1 … 2^-8 (the paper's geometric sequence)."""
    np.testing.assert_allclose(alibi_slopes(8), [2.0 ** -(i + 1) for i in range(8)], rtol=1e-12)


def test_alibi_slopes_12_heads():
    """12 heads: the 8-head slopes followed by every other 16-head slope (2^-0.5, 2^-1.5, …)."""
    eight = [2.0 ** -(i + 1) for i in range(8)]
    sixteen = [2.0 ** (-0.5 * (i + 1)) for i in range(16)]
    np.testing.assert_allclose(alibi_slopes(12), eight + sixteen[0::2][:4], rtol=1e-12)
    np.testing.assert_allclose(alibi_slopes(12)[8:], [2 ** -0.5, 2 ** -1.5, 2 ** -2.5, 2 ** -3.5])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 16])
def test_alibi_slopes_general(n):
    """Any head count gives n distinct slopes in (0, 1]."""
    s = alibi_slopes(n)
    assert s.shape == (n,) and np.all((s > 0) & (s <= 1)) and len(set(s.tolist())) == n


@pytest.mark.parametrize("n_heads", [8, 12])
def test_alibi_bias_is_slope_times_offset(n_heads):
    """bias[b,h,i,j] = slope_h · (pos_k[j] − pos_q[i]) for every head, including shifted and
    cache-style (S ≠ T) positions."""
    slopes = alibi_slopes(n_heads)
    q_pos = np.array([[3, 4, 5], [10, 11, 12]])
    k_pos = np.array([[0, 1, 2, 3, 4, 5], [7, 8, 9, 10, 11, 12]])
    bias = np.asarray(alibi_bias(slopes, jnp.asarray(q_pos), jnp.asarray(k_pos)))
    assert bias.shape == (2, n_heads, 3, 6)
    for b in range(2):
        for h in range(n_heads):
            for i in range(3):
                for j in range(6):
                    assert math.isclose(bias[b, h, i, j], slopes[h] * (k_pos[b, j] - q_pos[b, i]),
                                        rel_tol=1e-6, abs_tol=1e-7)
    scheme = build_scheme(PositionalConfig(scheme="alibi"), 8, n_heads)
    np.testing.assert_array_equal(scheme.bias(jnp.asarray(q_pos), jnp.asarray(k_pos)), bias)


# -------------------------------------------------------------------------------------- registry
def test_registry_and_identity_schemes():
    """build_scheme dispatches by name; ALiBi/NoPE leave q/k unchanged, RoPE/NoPE have no bias."""
    assert set(SCHEME_REGISTRY) >= {"rope", "alibi", "nope"}
    q, _ = _qk()
    pos = jnp.arange(T)[None] + 4
    for name in ("alibi", "nope"):
        np.testing.assert_array_equal(build_scheme(PositionalConfig(scheme=name), D, H).rotate(q, pos), q)
    assert build_scheme(PositionalConfig(scheme="nope"), D, H).bias(pos, pos) is None
    rope = build_scheme(PositionalConfig(), D, H)
    assert rope.bias(pos, pos) is None
    assert np.abs(rope.rotate(q, pos) - q).max() > 1e-3


def test_unknown_scheme_is_refused_by_the_config_and_by_build_scheme():
    """The config asks the registry: an unregistered name is a one-line error naming the known
    schemes and how to register one, at config time and (a config bypassed) at build time."""
    with pytest.raises(ValueError, match="register_scheme") as e:
        PositionalConfig(scheme="xpos-unregistered")
    assert "\n" not in str(e.value) and "rope" in str(e.value)
    pos = PositionalConfig()
    object.__setattr__(pos, "scheme", "xpos-unregistered")
    with pytest.raises(ValueError, match="xpos-unregistered"):
        build_scheme(pos, D, H)
