"""mvjax runs without torch: every runtime module imports, a model converts from a GGUF (weights and
tokenizer) and is analyzed, in a subprocess where torch is made unimportable exactly as if it were
not installed (``importlib.util.find_spec('torch')`` is None). torch stays a test-only reference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import write_llama_gguf

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import importlib, importlib.util, json, pkgutil, sys

class HideTorch:
    '''Wraps a meta-path finder so torch and its submodules look not installed.'''
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "torch":
            return None
        find = getattr(self.inner, "find_spec", None)
        return find(name, path, target) if find else None
    def __getattr__(self, attr):
        return getattr(self.inner, attr)

sys.meta_path[:] = [HideTorch(f) for f in sys.meta_path]
assert importlib.util.find_spec("torch") is None

import mvjax, train, analysis
imported = []
for pkg in (mvjax, train, analysis):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
        imported.append(info.name)

gguf_path, out = sys.argv[1], sys.argv[2]
from mvjax.cli import main
from mvjax.convert.gguf import load_gguf
model, tok = load_gguf(gguf_path)
ids = tok.encode("The capital of France is Paris.")
import jax.numpy as jnp
logits = model(jnp.asarray([ids])).logits
assert logits.shape == (1, len(ids), model.cfg.vocab_size), logits.shape
assert main(["convert", gguf_path, out + "/model"]) == 0
assert main(["analyze", "--model", out + "/model", "--seq-len", "32", "--tokens", "128",
             "--out", out + "/analysis"]) == 0
assert "torch" not in sys.modules
print(json.dumps({"imported": imported, "tokens": ids}))
"""


def test_runtime_needs_no_torch(tmp_path):
    write_llama_gguf(tmp_path / "m.gguf")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "m.gguf"), str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {p.relative_to(REPO).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
                for top in ("mvjax", "train", "analysis") for p in (REPO / top).rglob("*.py")}
    expected -= {"mvjax", "train", "analysis"}
    assert expected <= set(result["imported"]), sorted(expected - set(result["imported"]))
    assert len(result["tokens"]) > 3
    for name in ("massive_values.json", "report.md"):
        assert (tmp_path / "analysis" / name).is_file()
