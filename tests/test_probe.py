"""Streaming statistics equal a naive NumPy computation on the full activations; merging is
associative; dim_to_frequency agrees with what apply_rope actually does."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest

from mvjax.config import ModelConfig, PositionalConfig, RopeScaling
from mvjax.model import init_model
from mvjax.positional import apply_rope, dim_to_frequency, rope_frequencies
from mvjax.probe import STAT_SITES, CaptureStats, Stats, collect_stats, merge, merge_records

CFG = ModelConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  mlp_hidden=48, head_dim=8)


@dataclasses.dataclass(frozen=True)
class Raw:
    """Returns the activation itself as the record: the naive reference."""

    sites: frozenset = frozenset(STAT_SITES)

    def __call__(self, site, layer, x, ctx):
        return x, x


@pytest.fixture(scope="module")
def setup():
    model = init_model(CFG, seed=1)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, CFG.vocab_size, (5, 12)).astype(np.int32)
    mask = np.ones(tokens.shape, bool)
    mask[1, 9:] = False  # right padding inside a row
    mask[3, 5:] = False
    raw = model(jnp.asarray(tokens), attention_mask_BxT=jnp.asarray(mask), probe=Raw(),
                logits=False).records
    return model, tokens, mask, raw


def _naive(x_BxTxHxD, mask) -> Stats:
    x = np.asarray(x_BxTxHxD, np.float64)[mask]  # N×H×D valid tokens only
    return Stats(len(x), x.sum(0), (x ** 2).sum(0), np.abs(x).max(0), None)


def _split(tokens, mask, sizes):
    out, i = [], 0
    for s in sizes:
        out.append((tokens[i: i + s], mask[i: i + s]))
        i += s
    return out


def _assert_close(got: Stats, want: Stats, tol: float = 1e-5) -> None:
    assert got.count == want.count
    for f in ("sum", "sumsq", "absmax"):
        a, b = getattr(got, f), getattr(want, f)
        assert a.shape == b.shape
        scale = np.abs(b).max()
        assert np.abs(a - b).max() <= tol * scale, f


@pytest.mark.parametrize("sizes", [(5,), (2, 3), (1, 1, 3)])
def test_streaming_equals_naive_all_sites_gqa_padding(setup, sizes):
    model, tokens, mask, raw = setup
    recs = collect_stats(model, _split(tokens, mask, sizes), STAT_SITES, progress=False)
    assert set(recs) == set(STAT_SITES)
    for site in STAT_SITES:
        for layer in range(CFG.num_layers):
            got = recs[site][layer]
            heads = CFG.num_heads if site.startswith("q") else CFG.num_kv_heads
            assert got.sumsq.shape == (heads, CFG.head_dim)
            _assert_close(got, _naive(raw[site][layer], mask))
    assert recs["q"][0].count == mask.sum()


def test_padding_contributes_nothing(setup):
    model, tokens, mask, _ = setup
    garbage = tokens.copy()
    garbage[~mask] = (garbage[~mask] + 7) % CFG.vocab_size  # change only padded tokens
    a = collect_stats(model, [(tokens, mask)], ("k", "v"), progress=False)
    b = collect_stats(model, [(garbage, mask)], ("k", "v"), progress=False)
    for site in ("k", "v"):
        _assert_close(a[site][1], b[site][1], 1e-6)


def test_merge_associative_and_exact(setup):
    model, tokens, mask, _ = setup
    parts = [collect_stats(model, [b], ("q",), progress=False)["q"][0]
             for b in _split(tokens, mask, (2, 2, 1))]
    left = merge(merge(parts[0], parts[1]), parts[2])
    right = merge(parts[0], merge(parts[1], parts[2]))
    whole = collect_stats(model, [(tokens, mask)], ("q",), progress=False)["q"][0]
    _assert_close(left, right, 1e-12)
    _assert_close(left, whole)


def test_norm_dims_values_are_valid_tokens(setup):
    model, tokens, mask, raw = setup
    recs = collect_stats(model, _split(tokens, mask, (3, 2)), ("k_rot",), norm_dims=(1, 6),
                         progress=False)
    vals = recs["k_rot"][1].values
    want = np.asarray(raw["k_rot"][1])[mask][..., [1, 6]]
    assert vals.shape == (mask.sum(), CFG.num_kv_heads, 2)
    np.testing.assert_allclose(vals, want, rtol=1e-5, atol=1e-6)


def test_bad_inputs(setup):
    model, tokens, mask, _ = setup
    with pytest.raises(ValueError, match="cannot be captured"):
        CaptureStats(frozenset({"attn"}))
    with pytest.raises(ValueError, match="cannot be captured"):
        CaptureStats(frozenset())
    with pytest.raises(ValueError, match="norm_dims"):
        CaptureStats(frozenset({"q"}), norm_dims=(-1,))
    with pytest.raises(ValueError, match="empty"):
        collect_stats(model, [], ("q",), progress=False)
    with pytest.raises(ValueError, match="B×T"):
        collect_stats(model, [(tokens, mask[:, :3])], ("q",), progress=False)
    a = Stats(1, np.zeros((2, 8)), np.zeros((2, 8)), np.zeros((2, 8)))
    b = Stats(1, np.zeros((4, 8)), np.zeros((4, 8)), np.zeros((4, 8)))
    with pytest.raises(ValueError, match="different sites"):
        merge(a, b)
    with pytest.raises(ValueError, match="different sites/layers"):
        merge_records({"q": {0: a}}, {"k": {0: a}})


def test_probe_is_hashable_static_data():
    a, b = CaptureStats(frozenset({"q", "k"})), CaptureStats(frozenset({"k", "q"}))
    assert a == b and hash(a) == hash(b)
    assert CaptureStats(frozenset({"q"}), norm_dims=[3, 4]).norm_dims == (3, 4)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("fraction", [1.0, 0.5])
@pytest.mark.parametrize("scaling", [None, RopeScaling(original_max_position_embeddings=64)])
def test_dim_to_frequency_matches_rotation(layout, fraction, scaling):
    """Rotating unit vector e_d by position p turns it by freq(d)·p within its pair's plane."""
    D = 16
    cfg = ModelConfig(vocab_size=8, hidden_size=32, num_layers=1, num_heads=2, head_dim=D,
                      mlp_hidden=8, positional=PositionalConfig(layout=layout,
                                                                rotary_fraction=fraction,
                                                                scaling=scaling))
    pos = cfg.layer_positional(0)
    freqs = dim_to_frequency(cfg, 0)
    inv = rope_frequencies(pos.rotary_dims(D), pos.theta, pos.scaling)
    p = 2
    x = jnp.eye(D)[None, :, None, :]  # B=1, T=D tokens each holding one unit vector, H=1
    rotated = np.asarray(apply_rope(x, jnp.full((1, D), p), inv, layout))[0, :, 0, :]
    assert sum(f is not None for f in freqs) == pos.rotary_dims(D)
    for d, f in enumerate(freqs):
        if f is None:
            np.testing.assert_allclose(rotated[d], np.eye(D)[d], atol=1e-7)
            continue
        assert math.isclose(rotated[d, d], math.cos(f * p), abs_tol=1e-6)
        others = np.delete(rotated[d], d)
        assert math.isclose(np.linalg.norm(others), abs(math.sin(f * p)), abs_tol=1e-6)
