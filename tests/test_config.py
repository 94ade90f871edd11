"""ModelConfig / PositionalConfig / RopeScaling: validation errors, round trips, derived values."""

from __future__ import annotations

import dataclasses

import json

import pytest

from mvjax.config import ModelConfig, PositionalConfig, RopeScaling


def _raises(fn, *needles):
    """Assert fn() raises a one-line ValueError containing every needle; return the message."""
    with pytest.raises(ValueError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


# ------------------------------------------------------------------------- validation errors
@pytest.mark.parametrize("kwargs, needles", [
    (dict(type="yarn"), ["rope_scaling.type", "'yarn'", "llama3"]),
    (dict(factor=0.0), ["rope_scaling.factor", "positive"]),
    (dict(factor=-2.0, type="linear"), ["rope_scaling.factor"]),
    (dict(low_freq_factor=4.0, high_freq_factor=4.0), ["rope_scaling.low_freq_factor"]),
    (dict(low_freq_factor=0.0), ["rope_scaling.low_freq_factor"]),
    (dict(original_max_position_embeddings=0), ["rope_scaling.original_max_position_embeddings"]),
])
def test_rope_scaling_errors(kwargs, needles):
    """Each invalid RopeScaling field raises a one-line ValueError naming the field."""
    _raises(lambda: RopeScaling(**kwargs), *needles)


def test_linear_scaling_ignores_llama3_fields():
    """A linear scaling does not validate the llama3-only ramp fields."""
    s = RopeScaling(type="linear", factor=2.0, low_freq_factor=5.0, high_freq_factor=1.0)
    assert s.factor == 2.0


@pytest.mark.parametrize("kwargs, needles", [
    (dict(scheme="sinusoidal"), ["positional.scheme", "'sinusoidal'", "alibi"]),
    (dict(layout="neox"), ["positional.layout", "'neox'", "interleaved"]),
    (dict(theta=0.0), ["positional.theta"]),
    (dict(theta=-1.0), ["positional.theta"]),
    (dict(rotary_fraction=0.0), ["positional.rotary_fraction", "(0, 1]"]),
    (dict(rotary_fraction=1.5), ["positional.rotary_fraction"]),
    (dict(scaling={"type": "llama3", "factor": -1.0}), ["rope_scaling.factor"]),
    (dict(scaling={"typo": 1}), ["rope_scaling", "unknown", "typo"]),
])
def test_positional_errors(kwargs, needles):
    """Each invalid PositionalConfig field raises a one-line ValueError naming the field."""
    _raises(lambda: PositionalConfig(**kwargs), *needles)


@pytest.mark.parametrize("name", ["vocab_size", "hidden_size", "num_layers", "num_heads",
                                  "num_kv_heads", "mlp_hidden", "max_seq_len"])
@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_positive_int_fields(name, bad):
    """Every size field must be a positive integer; the error names the field."""
    kw = dict(hidden_size=32, num_heads=4, num_layers=2)
    kw[name] = bad
    _raises(lambda: ModelConfig(**kw), f"{name}=", "positive integer")


@pytest.mark.parametrize("kwargs, needles", [
    (dict(hidden_size=30, num_heads=4), ["num_heads=4", "hidden_size=30", "head_dim"]),
    (dict(hidden_size=32, num_heads=4, head_dim=0), ["head_dim=0"]),
    (dict(hidden_size=32, num_heads=4, head_dim=-8), ["head_dim=-8"]),
    (dict(hidden_size=32, num_heads=4, num_kv_heads=3), ["num_kv_heads=3", "num_heads=4"]),
    (dict(hidden_size=32, num_heads=4, dtype="float16"), ["dtype", "bfloat16"]),
    (dict(hidden_size=32, num_heads=4, norm_eps=0.0), ["norm_eps"]),
    (dict(hidden_size=32, num_heads=4, num_layers=3,
          positional=(PositionalConfig(), PositionalConfig())), ["positional", "num_layers=3"]),
    (dict(hidden_size=32, num_heads=4, positional=PositionalConfig(rotary_fraction=0.1)),
     ["positional.rotary_fraction", "head_dim=8"]),
    (dict(hidden_size=32, num_heads=4, bos_id=64, vocab_size=64), ["bos_id=64", "vocab_size=64"]),
    (dict(hidden_size=32, num_heads=4, eos_id=-1), ["eos_id=-1"]),
])
def test_model_errors(kwargs, needles):
    """Each cross-field ModelConfig error raises a one-line ValueError naming the field."""
    _raises(lambda: ModelConfig(**kwargs), *needles)


def test_tiny_rotary_fraction_ok_for_nope():
    """A rotary_fraction that rotates no dims only matters for RoPE layers."""
    cfg = ModelConfig(hidden_size=32, num_heads=4,
                      positional=PositionalConfig(scheme="nope", rotary_fraction=0.1))
    assert cfg.layer_positional(0).rotary_dims(cfg.head_dim) == 0


@pytest.mark.parametrize("data, where, field", [
    ({"hidden_sise": 32}, "model", "hidden_sise"),
    ({"positional": {"scheme": "rope", "base": 10.0}}, "positional", "base"),
    ({"positional": [{"scheme": "rope"}, {"schema": "nope"}], "num_layers": 2}, "positional", "schema"),
    ({"positional": {"scaling": {"type": "linear", "factr": 2.0}}}, "rope_scaling", "factr"),
])
def test_unknown_fields_refused_by_name(data, where, field):
    """Unknown keys anywhere in the nested config are refused, naming the key and known fields."""
    msg = _raises(lambda: ModelConfig.from_dict(data), where, "unknown", repr(field))
    assert "known fields" in msg


@pytest.mark.parametrize("text", ["[1, 2]", "just a string", "42"])
def test_from_text_non_mapping(text):
    """Config text that is not a mapping is refused with a one-line ValueError."""
    _raises(lambda: ModelConfig.from_text(text), "mapping")


@pytest.mark.parametrize("positional", ["rope", 3])
def test_positional_not_a_mapping(positional):
    """A positional entry that is neither a mapping nor a PositionalConfig is a ValueError."""
    _raises(lambda: ModelConfig.from_dict({"positional": positional}), "positional")


def test_malformed_yaml_is_value_error():
    """Syntactically broken config text gives a one-line ValueError, not a parser traceback."""
    _raises(lambda: ModelConfig.from_text("model: {hidden_size: [32"))


def test_yaml_exponent_floats_accepted():
    """YAML written by hand with ``1e-5`` / ``5e5`` (strings in YAML 1.1) still loads as numbers."""
    cfg = ModelConfig.from_text("hidden_size: 32\nnum_heads: 4\nnorm_eps: 1e-6\n"
                                "positional: {theta: 5e5}\n")
    assert cfg.norm_eps == 1e-6 and cfg.positional.theta == 5e5


def test_non_numeric_field_is_value_error():
    """A string where a number belongs raises ValueError naming the field (not TypeError)."""
    _raises(lambda: ModelConfig(hidden_size=32, num_heads=4, norm_eps="small"), "norm_eps")
    _raises(lambda: PositionalConfig(theta="big"), "positional.theta")


# ------------------------------------------------------------------------------ round trips
def _rich_configs():
    scaled = PositionalConfig(scheme="rope", theta=500000.0, layout="interleaved",
                              rotary_fraction=0.5,
                              scaling=RopeScaling(type="llama3", factor=8.0, low_freq_factor=1.0,
                                                  high_freq_factor=4.0,
                                                  original_max_position_embeddings=64))
    return [
        ModelConfig(),
        ModelConfig(hidden_size=32, num_heads=4, num_kv_heads=1, norm_eps=1e-6, bos_id=1, eos_id=2,
                    dtype="bfloat16", tie_embeddings=False, positional=scaled),
        ModelConfig(hidden_size=32, num_heads=4, num_layers=3, positional=(
            scaled, PositionalConfig(scheme="alibi"),
            PositionalConfig(scheme="rope", scaling=RopeScaling(type="linear", factor=2.0))),
            head_dim=16),
    ]


@pytest.mark.parametrize("cfg", _rich_configs())
def test_json_yaml_round_trip(cfg, tmp_path):
    """to_json/to_yaml → from_text, and save/load (.json, .yaml) reproduce an equal config."""
    assert ModelConfig.from_text(cfg.to_json()) == cfg
    assert ModelConfig.from_text(cfg.to_yaml()) == cfg
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for name in ("c.json", "c.yaml"):
        cfg.save(tmp_path / name)
        back = ModelConfig.load(tmp_path / name)
        assert back == cfg and hash(back) == hash(cfg)
    if isinstance(cfg.positional, tuple):
        assert isinstance(ModelConfig.from_text(cfg.to_yaml()).positional, tuple)


def test_from_text_accepts_model_section():
    """A file with a top-level ``model:`` section loads that section."""
    cfg = ModelConfig(hidden_size=32, num_heads=4)
    assert ModelConfig.from_text(json.dumps({"model": cfg.to_dict()})) == cfg


def test_load_missing_file(tmp_path):
    """Loading a missing config gives a one-line FileNotFoundError naming the path."""
    with pytest.raises(FileNotFoundError) as e:
        ModelConfig.load(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------- derived values
def test_defaults_and_derived():
    """num_kv_heads defaults to num_heads, head_dim to hidden/heads, q_per_kv is their ratio."""
    cfg = ModelConfig(hidden_size=32, num_heads=4)
    assert cfg.num_kv_heads == 4 and cfg.head_dim == 8 and cfg.q_per_kv == 1
    gqa = ModelConfig(hidden_size=32, num_heads=4, num_kv_heads=2)
    assert gqa.q_per_kv == 2


def test_rotary_dims_even_and_zero_for_other_schemes():
    """rotary_dims rounds fraction·head_dim down to even; 0 for ALiBi/NoPE."""
    assert PositionalConfig(rotary_fraction=0.3).rotary_dims(16) == 4
    assert PositionalConfig(rotary_fraction=0.25).rotary_dims(16) == 4
    assert PositionalConfig(rotary_fraction=1.0).rotary_dims(16) == 16
    assert PositionalConfig(scheme="alibi").rotary_dims(16) == 0
    assert PositionalConfig(scheme="nope").rotary_dims(16) == 0


def test_layer_positional_per_layer():
    """A tuple positional gives each layer its own entry; a single one is shared."""
    p = (PositionalConfig(), PositionalConfig(scheme="nope"))
    cfg = ModelConfig(hidden_size=32, num_heads=4, num_layers=2, positional=p)
    assert cfg.layer_positional(1).scheme == "nope" and cfg.layer_positional(0).scheme == "rope"
    single = ModelConfig(hidden_size=32, num_heads=4, num_layers=2)
    assert single.layer_positional(1) is single.positional


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("kv", [4, 2, 1])
def test_num_params_matches_model(tie, kv):
    """num_params equals the number of float parameters the model actually allocates."""
    import jax
    from flax import nnx

    from mvjax.model import init_model

    cfg = ModelConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=kv,
                      mlp_hidden=48, tie_embeddings=tie)
    model = nnx.eval_shape(lambda: init_model(cfg))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n == cfg.num_params()


def test_diff_lists_changed_fields():
    """diff names exactly the fields that differ (nested values compared as plain data)."""
    a = ModelConfig(hidden_size=32, num_heads=4)
    b = ModelConfig(hidden_size=32, num_heads=4, num_layers=3,
                    positional=PositionalConfig(scheme="alibi"))
    d = a.diff(b)
    assert set(d) == {"num_layers", "positional"}
    assert d["num_layers"] == (4, 3)
    assert a.diff(a) == {}


def test_frozen():
    """Configs are immutable (they are jit-static identities)."""
    cfg = ModelConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.hidden_size = 3  # type: ignore[misc]
