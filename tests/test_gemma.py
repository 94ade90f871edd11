"""Gemma-style model options (QK-norm, sliding windows, (1 + w) and post norms, GeGLU, scaled
embeddings and queries) without torch: the window's properties, KV-cache decoding with windows,
the QK-norm sites, and config round trips that leave LLaMA configs unchanged. Parity against
transformers' Gemma 3 (torch) is in ``test_gemma_parity.py``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvjax.config import ModelConfig, PositionalConfig
from mvjax.generate import generate
from mvjax.model import init_model
from mvjax.probe import CaptureStats
from mvjax.sites import QK_NORM_SITES, STAT_SITES, sites_for

TOL = 1e-4


def gemma_like(window=(4, None), **overrides) -> ModelConfig:
    """Two layers: a local one (window 4, θ=1e4) and a global one (θ=1e6), every Gemma option on."""
    kw = dict(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=1, head_dim=16,
              mlp_hidden=48, max_seq_len=64, init_std=0.2, norm_eps=1e-6,
              positional=(PositionalConfig(theta=1e4), PositionalConfig(theta=1e6)),
              sliding_window=window, qk_norm=True, norm_weight_offset=1.0, post_norms=True,
              mlp_activation="gelu_tanh", scale_embeddings=True, query_pre_attn_scalar=24.0)
    kw.update(overrides)
    return ModelConfig(**kw)


def _randomize_norms(model, seed=3):
    """Gemma norms start at w = 0 (scale 1); give them values so a wrong offset cannot hide."""
    from flax import nnx

    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        if "norm" in "/".join(map(str, path)):
            var.set_value(jnp.asarray(0.3 * rng.standard_normal(var.get_value().shape), jnp.float32))
    return model


def test_llama_config_serializes_without_gemma_fields():
    """The new fields stay out of a LLaMA config's JSON, so saved configs are unchanged."""
    d = ModelConfig().to_dict()
    for name in ("sliding_window", "qk_norm", "norm_weight_offset", "post_norms", "mlp_activation",
                 "scale_embeddings", "query_pre_attn_scalar"):
        assert name not in d
    cfg = gemma_like()
    back = ModelConfig.from_text(cfg.to_json())
    assert back == cfg and back.sliding_window == (4, None) and back.to_dict()["qk_norm"] is True


@pytest.mark.parametrize("field,value", [("sliding_window", 0), ("sliding_window", (4,)),
                                         ("mlp_activation", "relu"), ("qk_norm", "yes"),
                                         ("query_pre_attn_scalar", -1.0)])
def test_bad_gemma_fields_are_one_line_errors(field, value):
    with pytest.raises(ValueError, match=field) as e:
        gemma_like(**{field: value})
    assert "\n" not in str(e.value)


def test_num_params_counts_gemma_parameters():
    from flax import nnx

    cfg = gemma_like()
    n = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(init_model(cfg), nnx.Param)))
    assert cfg.num_params() == n


def test_window_larger_than_sequence_equals_full_attention():
    toks = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 12)))
    full = init_model(gemma_like(window=None))
    wide = init_model(gemma_like(window=(12, 12)))
    narrow = init_model(gemma_like(window=(3, 3)))
    a, b, c = (np.asarray(m(toks).logits) for m in (full, wide, narrow))
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a[:, :3], c[:, :3], rtol=1e-5, atol=1e-5)  # first 3 see everything
    assert np.abs(a[:, 3:] - c[:, 3:]).max() > 1e-3  # later ones see less


def test_window_hides_tokens_beyond_it_through_gradients():
    """With window W, the output at t does not depend on inputs before t - W + 1 (one layer)."""
    cfg = gemma_like(window=4, num_layers=1, positional=PositionalConfig(theta=1e4))
    model = init_model(cfg)
    x = jax.random.normal(jax.random.key(0), (1, 10, cfg.hidden_size))
    from mvjax.model import SiteContext

    ctx = SiteContext(jnp.ones((1, 10), bool), jnp.arange(10)[None])
    grad = jax.grad(lambda x: model.layers[0](x, ctx, None, None, {})[0][0, 9].sum())(x)
    seen = np.abs(np.asarray(grad[0])).sum(-1) > 0
    assert seen.tolist() == [False] * 6 + [True] * 4


def test_cached_decoding_with_windows_matches_full_forward():
    """Greedy KV-cache decoding past the window gives the logits of full recomputation."""
    model = _randomize_norms(init_model(gemma_like(window=(5, None), vocab_size=64)))
    prompt = jnp.asarray(np.random.default_rng(1).integers(0, 64, (2, 7)))
    gen = generate(model, prompt, 9, return_logits=True)
    full = np.asarray(model(gen.tokens).logits)[:, 6:-1]
    np.testing.assert_allclose(np.asarray(gen.logits), full, rtol=2e-4, atol=2e-4)


def test_qk_norm_sites_see_unit_rms_heads():
    """q_normed / k_normed hold the per-head normalized q, k (rms 1 with w = 0); q / k do not."""
    model = init_model(gemma_like())
    toks = jnp.asarray(np.random.default_rng(2).integers(0, 64, (1, 8)))
    out = model(toks, probe=CaptureStats(frozenset({"q", "q_normed", "k_normed"})))
    for site in ("q_normed", "k_normed"):
        st = out.records[site][0]
        rms = np.sqrt(np.asarray(st.sumsq).sum(-1) / (int(st.count) * 16))
        np.testing.assert_allclose(rms, 1.0, rtol=1e-3)
    st = out.records["q"][0]
    assert abs(np.sqrt(np.asarray(st.sumsq).sum(-1) / (int(st.count) * 16)).mean() - 1) > 0.05
    assert sites_for(True) == ("q", "k", "v", *QK_NORM_SITES, "q_rot", "k_rot")
    assert sites_for(False) == STAT_SITES


def test_gemma_model_refuses_llama_export(tmp_path):
    from mvjax.convert.hf import save_hf

    with pytest.raises(ValueError, match="cannot be exported"):
        save_hf(tmp_path / "out", init_model(gemma_like()))
    assert not (tmp_path / "out").exists()
