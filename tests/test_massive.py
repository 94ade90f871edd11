"""The massive-value definition and metrics: hand-made matrices with known answers, and a random
model with planted outliers in W_q / W_k that must be found in the right heads, dims and band."""

from __future__ import annotations

import numpy as np
import pytest

from mvjax.analysis.massive import (MassiveDefinition, analyze, band_energy, frequency_order, gini,
                              layer_metrics, low_frequency_dims, massive_mask, topk_mask)
from mvjax.config import ModelConfig, PositionalConfig
from mvjax.model import init_model
from mvjax.positional import dim_to_frequency
from mvjax.probe import STAT_SITES, collect_stats


def test_massive_mask_head_vs_global_mean():
    M = np.ones((2, 4))
    M[0, 3] = 10.0  # head 0: mean 3.25 → 10 > 5·3.25? no (16.25)
    M[1, 2] = 30.0  # head 1: mean 8.25 → 30 < 41.25 per head; global mean 5 → 30 > 25
    per_head = massive_mask(M, MassiveDefinition(lam=2.5))
    assert per_head.tolist() == [[False, False, False, True], [False, False, True, False]]
    assert not massive_mask(M, MassiveDefinition()).any()
    glob = massive_mask(M, MassiveDefinition(mean_over="global"))
    assert np.argwhere(glob).tolist() == [[1, 2]]


def test_topk_and_gini():
    M = np.array([[1.0, 5.0, 3.0, 0.0], [2.0, 2.0, 9.0, 1.0]])
    assert np.argwhere(topk_mask(M, 1)).tolist() == [[0, 1], [1, 2]]
    assert topk_mask(M, 2).sum(axis=1).tolist() == [2, 2]
    assert gini(np.ones(8)) == pytest.approx(0.0)
    assert gini(np.eye(8)[0]) == pytest.approx(7 / 8)


def test_low_frequency_half_partial_rotary_and_layouts():
    for layout in ("half", "interleaved"):
        cfg = ModelConfig(vocab_size=8, hidden_size=32, num_layers=1, num_heads=2, head_dim=16,
                          mlp_hidden=8, positional=PositionalConfig(layout=layout,
                                                                    rotary_fraction=0.5))
        freqs = dim_to_frequency(cfg, 0)
        low, rot = low_frequency_dims(freqs)
        assert rot.sum() == 8 and not rot[8:].any()
        assert low.sum() == 4
        f = np.array([x if x is not None else np.nan for x in freqs])
        assert f[low].max() < f[rot & ~low].min()
        order = frequency_order(freqs)
        assert set(order[-8:]) == set(range(8, 16))  # non-rotating dims last
        assert np.all(np.diff(f[order[:8]]) <= 0)  # high → low frequency


def test_layer_metrics_and_band_energy_known_answer():
    cfg = ModelConfig(vocab_size=8, hidden_size=32, num_layers=1, num_heads=2, head_dim=8,
                      mlp_hidden=8)  # half layout: dims 2,3,6,7 are the low-frequency half
    freqs = dim_to_frequency(cfg, 0)
    M = np.ones((2, 8))
    M[0, 3] = M[1, 6] = 50.0
    m = layer_metrics(M, freqs, MassiveDefinition())
    assert m["n_massive"] == 2 and m["massive"] == [[0, 3], [1, 6]]
    assert m["massive_low_freq_share"] == 1.0 and m["top_dim_low_freq_share"] == 1.0
    assert m["max_mean_ratio_median"] == pytest.approx(50 / (57 / 8))
    assert m["top_dim_wavelengths"][0] == pytest.approx(2 * np.pi / freqs[3])
    E = band_energy(M, freqs, 4)
    assert E.sum() == pytest.approx(1.0) and E[-1] == 0.0
    assert E.argmax() in (2, 3)
    V = np.ones((2, 8))
    assert layer_metrics(V, freqs, MassiveDefinition())["massive_low_freq_share"] is None


def test_bad_definitions():
    for kw in ({"lam": 0}, {"mean_over": "tokens"}, {"top_k": 0}, {"aggregation": "prompt"}):
        with pytest.raises(ValueError, match="invalid"):
            MassiveDefinition(**kw)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_planted_outliers_found_in_right_heads_dims_band(layout):
    D, H, KV = 16, 4, 2
    cfg = ModelConfig(vocab_size=40, hidden_size=32, num_layers=2, num_heads=H, num_kv_heads=KV,
                      head_dim=D, mlp_hidden=48, positional=PositionalConfig(layout=layout))
    freqs = np.array(dim_to_frequency(cfg, 0))
    by_freq = np.argsort(-freqs)  # dims from highest to lowest frequency
    low_dim, low_dim_k, high_dim = int(by_freq[-1]), int(by_freq[-3]), int(by_freq[0])
    model = init_model(cfg, seed=3)
    attn0, attn1 = model.layers[0].attn, model.layers[1].attn
    for proj, col in ((attn0.q_proj, 1 * D + low_dim), (attn0.k_proj, 0 * D + low_dim_k),
                      (attn1.q_proj, 2 * D + high_dim)):
        w = np.array(proj.kernel[...])
        w[:, col] *= 300.0
        proj.kernel[...] = w
    tokens = np.random.default_rng(0).integers(0, 40, (4, 24)).astype(np.int32)
    recs = collect_stats(model, [tokens[:2], tokens[2:]], STAT_SITES, progress=False)
    res = analyze(recs, cfg, MassiveDefinition())
    q0, k0, v0 = res["sites"]["q"][0], res["sites"]["k"][0], res["sites"]["v"][0]
    assert q0["massive"] == [[1, low_dim]] and q0["massive_low_freq_share"] == 1.0
    assert k0["massive"] == [[0, low_dim_k]] and k0["massive_low_freq_share"] == 1.0
    assert v0["n_massive"] == 0
    assert res["sites"]["q_rot"][0]["massive"] == [[1, low_dim]]  # slow pair barely turns
    q1 = res["sites"]["q"][1]
    assert [2, high_dim] in q1["massive"] and q1["massive_low_freq_share"] == 0.0
    assert q1["topk"][2] == [high_dim]
    s = res["summary"]
    assert s["q"]["first_massive_layer"] == 0 and s["first_qk_concentration_layer"] == 0
    assert s["v"]["n_massive"] == 0
    assert res["definition"]["lam"] == 5.0 and "rule" in res["definition"]
    M = np.array(q0["M"])
    assert M.shape == (H, D) and M[1, low_dim] > 5 * M[1].mean()


def test_one_rule_on_host_and_inside_jit():
    """The training log counts massive entries with the same function analyze uses, traced."""
    import jax

    from mvjax.massive_rule import massive_mask, max_mean_ratio

    M = np.abs(np.random.default_rng(3).standard_normal((3, 4, 16))) + 0.1
    M[1, 2, 5] = 40.0  # one massive entry in layer 1, head 2
    M[2, 0] = 0.0      # an all-zero head has ratio 0
    for definition in (MassiveDefinition(), MassiveDefinition(mean_over="global", lam=3.0)):
        host = massive_mask(M, definition)
        traced = jax.jit(lambda m, definition=definition: massive_mask(m, definition))(M.astype(np.float32))
        np.testing.assert_array_equal(host, np.asarray(traced))
        assert host[1, 2, 5] and np.array_equal(host[1], massive_mask(M[1], definition))
    np.testing.assert_allclose(np.asarray(jax.jit(max_mean_ratio)(M.astype(np.float32))),
                               max_mean_ratio(M), rtol=1e-5)
    assert max_mean_ratio(M)[2, 0] == 0 and max_mean_ratio(M)[1, 2] > 5
