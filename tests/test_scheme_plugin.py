"""A positional scheme added from outside the package, in one file: the registry is the only list.

Two test-only schemes register themselves here and go through config validation, the model (full
forward and KV-cached decode), training, checkpoints and analysis labels without any other file
knowing them:

- ``xpos`` (Sun et al. 2022, "A Length-Extrapolatable Transformer"): RoPE whose queries are scaled
  by ζ^(n/B) and keys by ζ^(−m/B) per pair, so q and k transforms differ and logits decay with
  distance as ζ^((n−m)/B). It owns its settings (``scale_base``, ``gamma``) as ``Options``.
- ``learned-slopes``: ALiBi with one learned slope per head (``nnx.Param``), a stand-in for a
  FIRE-style learned bias: its gradient must flow through attention.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mvjax.config import ModelConfig, PositionalConfig
from mvjax.positional import RoPE, Scheme, alibi_bias, alibi_slopes, register_scheme

from conftest import tiny_config


@dataclasses.dataclass(frozen=True)
class XPosOptions:
    scale_base: float = 512.0
    gamma: float = 0.4

    def __post_init__(self) -> None:
        if not self.scale_base > 0:
            raise ValueError(f"positional.options.scale_base={self.scale_base!r} is invalid: "
                             "use a positive number of tokens, e.g. 512")


@register_scheme
class XPos(RoPE):
    name, Options = "xpos", XPosOptions

    def _scale(self, positions_BxT, sign: float):
        o, rot = self.pos.options, len(self.inv_freq) * 2
        zeta = (np.arange(0, rot, 2) / rot + o.gamma) / (1 + o.gamma)  # one per pair, < 1
        per_dim = np.concatenate([zeta, zeta]) if self.pos.layout == "half" else np.repeat(zeta, 2)
        power = sign * positions_BxT.astype(jnp.float32)[..., None, None] / o.scale_base
        return jnp.asarray(per_dim, jnp.float32) ** power  # B×T×1×R

    def _transform(self, x, positions_BxT, sign):
        rot = len(self.inv_freq) * 2
        scaled = jnp.concatenate([x[..., :rot] * self._scale(positions_BxT, sign), x[..., rot:]], -1)
        return self.rotate(scaled.astype(x.dtype), positions_BxT)

    def rotate_q(self, x, positions_BxT):
        return self._transform(x, positions_BxT, +1.0)

    def rotate_k(self, x, positions_BxT):
        return self._transform(x, positions_BxT, -1.0)


@register_scheme
class LearnedSlopes(Scheme, nnx.Module):
    name, learned = "learned-slopes", True

    def __init__(self, pos, head_dim, num_heads, *, rngs: nnx.Rngs):
        super().__init__(pos, head_dim, num_heads)
        self.slopes = nnx.Param(jnp.asarray(alibi_slopes(num_heads), jnp.float32))

    __eq__, __hash__ = object.__eq__, object.__hash__  # a graph node with state, not a static

    def bias(self, q_positions_BxT, k_positions_BxS):
        return alibi_bias(self.slopes[...], q_positions_BxT, k_positions_BxS)


XPOS = PositionalConfig(scheme="xpos", options={"scale_base": 64.0})


def test_config_validates_and_round_trips_the_schemes_own_options():
    cfg = tiny_config(XPOS)
    assert cfg.positional.options == XPosOptions(scale_base=64.0)
    assert cfg.positional.rotary_dims(cfg.head_dim) == cfg.head_dim  # a rotary scheme
    again = ModelConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg and again.to_dict()["positional"]["options"] == {"scale_base": 64.0,
                                                                         "gamma": 0.4}
    assert "options" not in tiny_config("rope").to_dict()["positional"]  # none: no trace
    with pytest.raises(ValueError, match="unknown field"):
        PositionalConfig(scheme="xpos", options={"base": 3})
    with pytest.raises(ValueError, match="scale_base"):
        PositionalConfig(scheme="xpos", options={"scale_base": -1.0})
    with pytest.raises(ValueError, match="takes no options"):
        PositionalConfig(scheme="rope", options={"scale_base": 64.0})
    with pytest.raises(ValueError, match="already registered"):
        register_scheme(type("Other", (RoPE,), {"name": "xpos"}))
    with pytest.raises(ValueError, match="frozen dataclass"):
        register_scheme(type("Loose", (RoPE,), {"name": "loose", "Options": dict}))


def test_xpos_treats_q_and_k_differently_and_logits_see_only_relative_position():
    scheme = XPos(XPOS, 16, 2)
    x = jax.random.normal(jax.random.key(0), (1, 6, 2, 16))
    pos = jnp.arange(6)[None]
    assert float(jnp.abs(scheme.rotate_q(x, pos) - scheme.rotate_k(x, pos)).max()) > 1e-3

    def logits(shift):
        q, k = scheme.rotate_q(x, pos + shift), scheme.rotate_k(x, pos + shift)
        return jnp.einsum("bthd,bshd->bhts", q, k)
    np.testing.assert_allclose(logits(0), logits(37), rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("positional", [XPOS, PositionalConfig(scheme="learned-slopes")],
                         ids=["xpos", "learned-slopes"])
def test_cached_decode_equals_the_full_forward(positional):
    from mvjax.generate import generate
    from mvjax.model import init_model

    model = init_model(tiny_config(positional), seed=1)
    prompt = jnp.asarray([[1, 5, 7, 2]])
    gen = generate(model, prompt, 5, return_logits=True)
    full = model(gen.tokens[:, :-1]).logits[:, prompt.shape[1] - 1:]
    np.testing.assert_allclose(full, gen.logits, atol=2e-4)


def test_learned_slopes_start_as_alibi_and_their_gradient_flows_through_attention():
    from mvjax.model import init_model

    learned = init_model(tiny_config(PositionalConfig(scheme="learned-slopes")), seed=3)
    alibi = init_model(tiny_config("alibi"), seed=3)
    tokens = jnp.asarray([[1, 4, 9, 16, 25, 3, 8]])
    np.testing.assert_allclose(learned(tokens).logits, alibi(tokens).logits, atol=1e-5)

    def loss(model):
        return jnp.mean(model(tokens).logits[..., 0] ** 2)
    grads = nnx.grad(loss)(learned)
    g = np.asarray(grads["layers"][0]["attn"]["scheme"]["slopes"][...])
    assert g.shape == (4,) and np.abs(g).max() > 0


@pytest.mark.parametrize("positional", [{"scheme": "xpos", "options": {"scale_base": 64.0}},
                                        {"scheme": "learned-slopes"}], ids=["xpos", "learned"])
def test_a_registered_scheme_trains_saves_and_loads(tmp_path, positional):
    from flax import nnx as _nnx

    from mvjax.checkpoint import load_model
    from mvjax.train.config import ExperimentConfig
    from mvjax.train.loop import train
    from mvjax.train.metrics import read_metrics

    exp = ExperimentConfig.from_dict({
        "model": dict(vocab_size=257, hidden_size=32, num_layers=2, num_heads=2, mlp_hidden=64,
                      max_seq_len=64, bos_id=256, positional=positional),
        "data": dict(source="tinyshakespeare", tokenizer="byte", seq_len=32, batch_size=8,
                     eval_rows=8),
        "train": dict(steps=8, log_every=1, eval_every=8, eval_batches=1, checkpoint_every=4,
                      progress=False, concentration_every=4, optim={"lr": 1e-2, "warmup_steps": 1})})
    train(exp, tmp_path)
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.3
    model = load_model(tmp_path / "model")
    assert model.cfg == exp.model
    from mvjax.cli import main

    assert main(["analyze", "--model", str(tmp_path / "model"), "--tokens", "256", "--seq-len",
                 "32", "--no-figures", "--out", str(tmp_path / "analyze")]) == 0
    found = json.loads((tmp_path / "analyze" / "massive_values.json").read_text())
    # xPos's dims carry its RoPE frequencies in the analysis; the learned bias rotates nothing
    freqs = found["frequencies"]["0"]
    if positional["scheme"] == "xpos":
        assert all(f is not None for f in freqs) and freqs[0] == 1.0
    else:
        assert all(f is None for f in freqs)
    if positional["scheme"] == "learned-slopes":
        slopes = np.asarray(model.layers[0].attn.scheme.slopes[...])
        assert np.abs(slopes - alibi_slopes(2)).max() > 1e-4  # trained, saved, restored
        assert len(_nnx.state(model, _nnx.Param)["layers"][0]["attn"]["scheme"]) == 1
