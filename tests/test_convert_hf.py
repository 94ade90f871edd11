"""HF LLaMA ⇄ mvjax: logit parity against transformers (fp32, eager attention) on tiny random models,
bit-exact round trips, and one-line refusals that leave nothing behind."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from mvjax.cli import main  # noqa: E402
from mvjax.config import ModelConfig, PositionalConfig  # noqa: E402
from mvjax.convert.hf import (half_to_interleaved, hf_to_model_config, interleaved_to_half,  # noqa: E402
                              load_hf, model_config_to_hf, read_safetensors, save_hf)
from mvjax.load import load_pretrained  # noqa: E402
from mvjax.model import init_model  # noqa: E402
from hf_reference import hf_logits, mv_logits, random_tokens, randomize  # noqa: E402

TOL = 1e-4
SEQ = 64
VOCAB = 128
ATTN = {"mha": 4, "gqa": 2, "mqa": 1}
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 32}  # short original context: all three bands occur


def make_hf(tmp_path, name="hf", *, kv=2, tied=False, scaling=None, theta=1e4, seed=0, **extra):
    """A tiny random LlamaForCausalLM saved with save_pretrained; returns (dir, torch model)."""
    torch.manual_seed(seed)
    rope = {"rope_type": "default", "rope_theta": theta}
    if scaling is not None:
        rope = {**scaling, "rope_theta": theta}
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=kv, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=tied, rope_parameters=rope,
        attn_implementation="eager", **extra)
    model = transformers.LlamaForCausalLM(cfg).float().eval()
    randomize(model)
    path = tmp_path / name
    model.save_pretrained(path, **({"max_shard_size": "40KB"} if extra.pop("_shard", False) else {}))
    return path, model


def tokens(batch=2, seed=1):
    return random_tokens(VOCAB, SEQ, batch, seed)


GRID = list(itertools.product(ATTN, (False, True), (None, "llama3"), (1e4, 5e5)))
# A pairwise covering of the grid runs by default; the full product with -m slow.
FAST = [("mha", False, None, 1e4), ("gqa", True, "llama3", 1e4), ("mqa", False, "llama3", 5e5),
        ("mha", True, "llama3", 5e5), ("gqa", False, None, 5e5), ("mqa", True, None, 1e4)]


def _parity(tmp_path, attn, tied, scaling, theta):
    path, hf = make_hf(tmp_path, kv=ATTN[attn], tied=tied,
                       scaling=LLAMA3 if scaling else None, theta=theta)
    model, tok = load_hf(path)
    assert tok is None
    assert model.cfg.num_kv_heads == ATTN[attn] and model.cfg.tie_embeddings == tied
    assert model.cfg.positional.theta == theta
    assert (model.cfg.positional.scaling is None) == (scaling is None)
    toks = tokens()
    diff = np.abs(mv_logits(model, toks) - hf_logits(hf, toks)).max()
    assert diff <= TOL, f"max |Δlogit| = {diff}"


@pytest.mark.parametrize("attn,tied,scaling,theta", FAST)
def test_parity_grid_pairwise(tmp_path, attn, tied, scaling, theta):
    _parity(tmp_path, attn, tied, scaling, theta)


@pytest.mark.slow
@pytest.mark.parametrize("attn,tied,scaling,theta", [g for g in GRID if g not in FAST])
def test_parity_grid_full(tmp_path, attn, tied, scaling, theta):
    _parity(tmp_path, attn, tied, scaling, theta)


def test_scaling_changes_logits(tmp_path):
    """The llama3 case is not vacuous: the same weights without scaling give different logits."""
    path, hf = make_hf(tmp_path, scaling=LLAMA3)
    model, _ = load_hf(path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e4}
    (path / "config.json").write_text(json.dumps(cfg))
    plain, _ = load_hf(path)
    toks = tokens(1)
    assert np.abs(mv_logits(model, toks) - mv_logits(plain, toks)).max() > 1e-3


def test_sharded_checkpoint_and_linear_scaling(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4},
        attn_implementation="eager")
    hf = transformers.LlamaForCausalLM(cfg).float().eval()
    hf.save_pretrained(tmp_path / "hf", max_shard_size="40KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "hf").glob("*.safetensors"))) > 1
    model, _ = load_pretrained(str(tmp_path / "hf"))
    assert model.cfg.positional.scaling.type == "linear"
    toks = tokens(1)
    assert np.abs(mv_logits(model, toks) - hf_logits(hf, toks)).max() <= TOL


@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_hf_mvjax_hf_bit_exact(tmp_path, tied):
    src, hf = make_hf(tmp_path, "src", tied=tied, scaling=LLAMA3, theta=5e5)
    model, _ = load_hf(src)
    save_hf(tmp_path / "dst", model)
    a, b = read_safetensors(src), load_file(str(tmp_path / "dst" / "model.safetensors"))
    assert set(a) == set(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name
    back = transformers.LlamaForCausalLM.from_pretrained(
        tmp_path / "dst", attn_implementation="eager", dtype=torch.float32).eval()
    toks = tokens()
    assert np.array_equal(hf_logits(back, toks), hf_logits(hf, toks))
    assert hf_to_model_config(json.loads((tmp_path / "dst" / "config.json").read_text())) == model.cfg


def test_mvjax_model_dir_round_trip_via_cli(tmp_path):
    src, hf = make_hf(tmp_path, "src")
    assert main(["convert", str(src), str(tmp_path / "mv")]) == 0
    model, tok = load_pretrained(str(tmp_path / "mv"))
    toks = tokens(1)
    assert np.abs(mv_logits(model, toks) - hf_logits(hf, toks)).max() <= TOL
    assert main(["convert", "--from", "mvjax", "--to", "hf", str(tmp_path / "mv"),
                 str(tmp_path / "hf2")]) == 0
    assert np.array_equal(read_safetensors(src)["model.layers.1.self_attn.k_proj.weight"],
                          read_safetensors(tmp_path / "hf2")["model.layers.1.self_attn.k_proj.weight"])


def test_interleaved_model_exports_to_half(tmp_path):
    """An mvjax model in the interleaved layout exports to HF (half) with equal logits."""
    cfg = ModelConfig(vocab_size=VOCAB, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                      mlp_hidden=96, init_std=0.1, bos_id=1, eos_id=2,
                      positional=PositionalConfig(layout="interleaved", theta=1e4))
    model = init_model(cfg, seed=3)
    save_hf(tmp_path / "hf", model)
    back = transformers.LlamaForCausalLM.from_pretrained(
        tmp_path / "hf", attn_implementation="eager", dtype=torch.float32).eval()
    toks = tokens(1)
    assert np.abs(mv_logits(model, toks) - hf_logits(back, toks)).max() <= TOL


def test_pair_permutation_inverse_and_matches_definition():
    w = np.arange(2 * 8 * 3).reshape(16, 3)  # 2 heads × head_dim 8, in=3
    inter = half_to_interleaved(w, 2)
    assert np.array_equal(interleaved_to_half(inter, 2), w)
    # head 0: interleaved row 2i = half row i, row 2i+1 = half row i + D/2
    assert [int(r) for r in inter[:8, 0] // 3] == [0, 4, 1, 5, 2, 6, 3, 7]


def test_config_round_trips_through_hf():
    cfg = ModelConfig(vocab_size=VOCAB, hidden_size=64, num_layers=2, num_heads=4, mlp_hidden=96)
    assert hf_to_model_config(model_config_to_hf(cfg)) == cfg
    legacy = {**model_config_to_hf(cfg), "rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 4.0}}
    del legacy["rope_parameters"]
    old = hf_to_model_config(legacy)
    assert old.positional.theta == 5e5 and old.positional.scaling.factor == 4.0
    # an export carries both spellings (transformers < 5 reads only the legacy ones); they agree
    scaled = hf_to_model_config({**legacy, "rope_parameters": {"rope_type": "linear", "factor": 4.0,
                                                                "rope_theta": 5e5}})
    assert scaled == old and hf_to_model_config(model_config_to_hf(old)) == old
    assert model_config_to_hf(old)["rope_theta"] == 5e5 and model_config_to_hf(old)["rope_scaling"]["factor"] == 4.0


@pytest.mark.parametrize("legacy", [{"rope_scaling": {"type": "linear", "factor": 4.0}},
                                    {"rope_theta": 5e5},
                                    {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}])
def test_disagreeing_legacy_rope_fields_are_refused(legacy):
    """A legacy rope_scaling / rope_theta beside rope_parameters that says otherwise is refused,
    never silently dropped."""
    params = {"rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e4}}
    if "rope_scaling" in legacy and legacy["rope_scaling"]["factor"] == 4.0:
        params = {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}
    with pytest.raises(ValueError, match="disagree: keep one of them"):
        hf_to_model_config({**BASE, **params, **legacy})


BASE = model_config_to_hf(ModelConfig(vocab_size=VOCAB, hidden_size=64, num_layers=2, num_heads=4,
                                      mlp_hidden=96))


@pytest.mark.parametrize("field,value", [
    ("attention_bias", True), ("mlp_bias", True), ("hidden_act", "gelu"), ("model_type", "mistral"),
    ("pretraining_tp", 2), ("sliding_window", 128),
    ("rope_parameters", {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}),
    ("rope_parameters", {"rope_type": "dynamic", "factor": 4.0, "rope_theta": 1e4}),
])
def test_unsupported_hf_field_names_it(field, value):
    with pytest.raises(ValueError) as e:
        hf_to_model_config({**BASE, field: value})
    msg = str(e.value)
    assert "\n" not in msg
    assert (value["rope_type"] if isinstance(value, dict) else field) in msg


@pytest.mark.parametrize("cfg", [
    ModelConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=2, mlp_hidden=32,
                positional=PositionalConfig(scheme="alibi")),
    ModelConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=2, mlp_hidden=32,
                positional=PositionalConfig(rotary_fraction=0.5)),
])
def test_unexportable_model_refused_and_nothing_written(tmp_path, cfg):
    with pytest.raises(ValueError):
        save_hf(tmp_path / "out", init_model(cfg))
    assert list(tmp_path.iterdir()) == []


def _cli_error(capsys, argv):
    capsys.readouterr()  # drop earlier output (transformers' save progress bars)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error:" in err
    return err


def test_bad_inputs_one_line_and_no_output(tmp_path, capsys):
    dst = tmp_path / "dst"
    # missing directory
    err = _cli_error(capsys, ["convert", "--from", "hf", str(tmp_path / "nope"), str(dst)])
    assert "does not exist" in err
    # config.json without safetensors
    src, _ = make_hf(tmp_path, "src")
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(src / "config.json", bare / "config.json")
    assert "safetensors" in _cli_error(capsys, ["convert", str(bare), str(dst)])
    # config disagrees with tensor shapes
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 80}))
    assert "shape" in _cli_error(capsys, ["convert", str(src), str(dst)])
    # unsupported field
    (src / "config.json").write_text(json.dumps({**cfg, "attention_bias": True}))
    assert "attention_bias" in _cli_error(capsys, ["convert", str(src), str(dst)])
    # unknown path for the resolver
    with pytest.raises(FileNotFoundError):
        load_pretrained(str(tmp_path / "nothing-here"))
    assert not dst.exists() and not any(".partial-" in p.name for p in tmp_path.iterdir())


def test_export_config_is_loadable_by_transformers():
    hf = transformers.LlamaConfig(**{k: v for k, v in model_config_to_hf(
        ModelConfig(vocab_size=VOCAB, hidden_size=64, num_layers=2, num_heads=4, mlp_hidden=96,
                    positional=PositionalConfig(theta=5e5))).items() if k != "architectures"})
    assert hf.num_key_value_heads == 4 and hf.rope_parameters["rope_theta"] == 5e5


def test_bfloat16_checkpoint_reads_exactly(tmp_path):
    """Most released HF checkpoints are bf16, which NumPy lacks: widened bit-exactly to float32."""
    path, hf = make_hf(tmp_path, "f32")
    hf.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    model, _ = load_hf(tmp_path / "bf16")
    ref = transformers.LlamaForCausalLM.from_pretrained(  # same bf16 weights, fresh fp32 RoPE
        tmp_path / "bf16", dtype=torch.float32, attn_implementation="eager").eval()
    w = np.asarray(model.layers[0].mlp.down_proj.kernel[...]).T
    assert np.array_equal(w, ref.state_dict()["model.layers.0.mlp.down_proj.weight"].numpy())
    toks = tokens(1)
    assert np.abs(mv_logits(model, toks) - hf_logits(ref, toks)).max() <= TOL


def test_tied_config_with_distinct_lm_head_refused(tmp_path):
    from mvjax.convert.hf import model_from_hf_tensors

    path, _ = make_hf(tmp_path, tied=False)
    cfg = hf_to_model_config({**json.loads((path / "config.json").read_text()),
                              "tie_word_embeddings": True})
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        model_from_hf_tensors(cfg, read_safetensors(path))


@pytest.mark.slow  # compiles a fresh generation loop (~9 s on a busy 2-core box)
def test_generate_command_matches_library(tmp_path, capsys):
    """`mvjax generate` = BOS + prompt through mvjax.generate, greedy, decoded."""
    from mvjax.checkpoint import save_model
    from mvjax.generate import generate
    from mvjax.tokenizers import ByteTokenizer

    tok = ByteTokenizer()
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=1, num_heads=2,
                      mlp_hidden=64, init_std=0.5)
    model = init_model(cfg, seed=1)
    save_model(tmp_path / "m", model, tok)
    capsys.readouterr()
    assert main(["generate", "--model", str(tmp_path / "m"), "--prompt", "abc",
                 "--max-new-tokens", "6"]) == 0
    printed = capsys.readouterr().out.rstrip("\n")
    ids = [tok.bos_id] + tok.encode("abc")
    new = np.asarray(generate(model, jnp.asarray([ids]), 6).tokens[0, len(ids):]).tolist()
    if tok.eos_id in new:
        new = new[: new.index(tok.eos_id)]
    assert printed == "abc" + tok.decode(new)
