"""The attention mass on the first token is one function (``mvjax.probe.first_token_mass``) used
by the training logs and by the interventions' sink probe; padding at either end of a row leaves
its value unchanged."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from mvjax.config import ModelConfig
from mvjax.probe import first_token_mass


def _causal_probs(rng, H: int, T: int) -> np.ndarray:
    logits = rng.normal(size=(1, H, T, T))
    logits = np.where(np.tril(np.ones((T, T), bool)), logits, -np.inf)
    return np.asarray(jax.nn.softmax(logits, axis=-1))


def test_padding_at_either_end_counts_a_row_as_itself():
    rng = np.random.default_rng(0)
    H, T, pad = 3, 6, 2
    probs = _causal_probs(rng, H, T)
    by_hand = probs[0, :, 1:, 0].mean(axis=1)  # queries t >= 1, key 0
    mass = np.asarray(first_token_mass(probs, np.ones((1, T), bool)))
    np.testing.assert_allclose(mass, by_hand, rtol=1e-6)
    right = np.pad(probs, ((0, 0), (0, 0), (0, pad), (0, pad)), constant_values=0.3)
    left = np.pad(probs, ((0, 0), (0, 0), (pad, 0), (pad, 0)), constant_values=0.3)
    valid_right = np.arange(T + pad)[None] < T
    np.testing.assert_allclose(first_token_mass(right, valid_right), by_hand, rtol=1e-6)
    np.testing.assert_allclose(first_token_mass(left, valid_right[:, ::-1]), by_hand, rtol=1e-6)
    assert np.all(np.asarray(first_token_mass(probs, np.zeros((1, T), bool))) == 0)


def test_training_log_and_sink_probe_record_the_same_mass():
    from mvjax.interventions import intervention
    from mvjax.model import init_model
    from mvjax.train.metrics import make_concentration_fn

    cfg = ModelConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                      mlp_hidden=48, head_dim=8, max_seq_len=64)
    model = init_model(cfg, seed=0)
    tokens = np.random.default_rng(1).integers(0, 64, (2, 12)).astype(np.int32)
    graphdef, params = nnx.split(model, nnx.Param)
    logged = make_concentration_fn(graphdef)(nnx.to_pure_dict(params), tokens)["first_token_mass"]
    sink = model(tokens, probe=intervention(cfg, {}, sink=True)).records["attn"]
    np.testing.assert_allclose(np.stack([sink[l] for l in sorted(sink)]), logged, rtol=1e-5)
