"""One run per ``--out`` for ``mvjax experiment disrupt|quantize`` (issue: a second run with other
flags deleted the first one's finished pieces, even while it ran, and both shared one directory).

A run's pieces are never deleted by another run: a different plan is refused in one line naming
the flag that differs, a second main run on the same plan by the lock; an ``--only`` helper with
the same plan still joins. Flags that cannot change a number (``--batch-size``, how the ``--tasks``
path is spelled) do not change the plan, so a killed run resumes with them changed.

Tiny: a 2-layer byte model, one user task file, no built-in tasks, one 32-token held-out row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mvjax.analysis.experiments.common as common
from mvjax.analysis.resume import resume_dir
from mvjax.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY_QUICK = {"n": 1, "passkeys": ((32, 2),), "facts_every": 64, "ppl_rows": 1, "ppl_len": 32}


def _tiny_presets(monkeypatch) -> None:
    monkeypatch.setattr(common, "QUICK", TINY_QUICK)
    monkeypatch.setitem(common.PRESETS, "quick", TINY_QUICK)
    monkeypatch.setattr(common, "builtin_tasks", lambda *a, **k: [])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(a saved 2-layer byte model, a two-item task file)."""
    from mvjax.checkpoint import save_model
    from mvjax.config import ModelConfig
    from mvjax.model import init_model
    from mvjax.tokenizers import ByteTokenizer

    root = tmp_path_factory.mktemp("lock")
    cfg = ModelConfig(vocab_size=257, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                      mlp_hidden=48, head_dim=8, max_seq_len=64, init_std=0.2)
    model = save_model(root / "m", init_model(cfg, 0), ByteTokenizer())
    tasks = root / "mine.jsonl"
    tasks.write_text(json.dumps({"prompt": "ab", "choices": [" a", " b"], "answer": " b"}) + "\n"
                     + json.dumps({"prompt": "xy", "target": "z"}) + "\n")
    return model, tasks


def _argv(tiny, out: Path, *extra: str) -> list[str]:
    model, tasks = tiny
    return ["experiment", "disrupt", "--model", str(model), "--out", str(out), "--quick",
            "--conditions", "table", "--tasks", str(tasks), *extra]


def _interrupt_after(monkeypatch, n: int) -> None:
    """Ctrl-C when the (n+1)-th condition would be scored (a kill after n finished)."""
    import mvjax.analysis.experiments.disrupt.run as D

    real, calls = D.evaluate_condition, []

    def evaluate(*a, **k):
        calls.append(1)
        if len(calls) > n:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(D, "evaluate_condition", evaluate)


def _pieces(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in resume_dir(out).glob("*.pkl")}


def _error(capsys) -> str:
    """The one error line (notes such as a shortened perplexity row are not errors)."""
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("mvjax ") and ": error" in l]
    assert len(err) == 1, err
    return err[0]


def test_a_killed_run_keeps_its_pieces_against_other_flags_and_resumes_with_harmless_ones(
        tiny, tmp_path, monkeypatch, capsys):
    """A killed run rerun with --method zero is refused naming --method (before: its pieces
    were deleted and the other plan ran); rerun with another --batch-size and the --tasks path
    spelled relative, it resumes from every piece (before: all thrown away)."""
    _tiny_presets(monkeypatch)
    out = tmp_path / "run"
    _interrupt_after(monkeypatch, 1)  # the unmodified pass and one condition finished
    assert main(_argv(tiny, out, "--method", "mean")) == 130
    kept = _pieces(out)
    assert len(kept) == 2
    capsys.readouterr()
    assert main(_argv(tiny, out, "--method", "zero")) == 2
    err = _error(capsys)
    assert "--method" in err and "'mean'" in err and "'zero'" in err, err
    assert _pieces(out) == kept and not (out / "results.json").exists()
    model, tasks = tiny
    monkeypatch.chdir(tasks.parent)
    _interrupt_after(monkeypatch, 0)
    argv = _argv(tiny, out, "--method", "mean", "--batch-size", "3")
    argv[argv.index(str(tasks))] = tasks.name  # the same file, spelled relative
    assert main(argv) == 130
    assert f"resuming: {len(kept)} finished piece(s)" in capsys.readouterr().out
    assert _pieces(out) == kept


_MAIN_RUN = """
import sys, time
import mvjax.analysis.experiments.common as common, mvjax.analysis.experiments.disrupt.run as D
common.QUICK = common.PRESETS["quick"] = {quick!r}
common.builtin_tasks = lambda *a, **k: []
real, calls = D.evaluate_condition, []
def evaluate(*a, **k):  # the second condition never ends: a run under way
    calls.append(1)
    if len(calls) > 1:
        open({ready!r}, "w").close()
        time.sleep(120)
    return real(*a, **k)
D.evaluate_condition = evaluate
from mvjax.cli import main
sys.exit(main({argv!r}))
"""


@pytest.mark.slow
def test_two_processes_on_one_out(tiny, tmp_path, monkeypatch, capsys):
    """While a main run is under way on --out: a run with another --method is refused naming it
    and deletes nothing (before: it deleted the pieces, scored its own plan into the same
    directory and both exited 0); a second main run on the same plan is refused by the lock;
    an --only helper on the same plan joins and adds its piece."""
    _tiny_presets(monkeypatch)
    out, ready = tmp_path / "run", tmp_path / "ready"
    script = _MAIN_RUN.format(quick=TINY_QUICK, ready=str(ready),
                              argv=_argv(tiny, out, "--method", "mean"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not ready.exists():
            assert first.poll() is None, first.stderr.read()
            assert time.time() < deadline, "the main run never got under way"
            time.sleep(0.2)
        kept = _pieces(out)
        assert len(kept) == 2  # the unmodified pass and the first condition
        assert main(_argv(tiny, out, "--method", "zero")) == 2
        err = _error(capsys)
        assert "--method" in err and "'zero'" in err, err
        assert main(_argv(tiny, out, "--method", "mean")) == 2
        err = _error(capsys)
        assert "in use by another mvjax run" in err and f"pid {first.pid}" in err, err
        assert _pieces(out) == kept and first.poll() is None
        assert main(_argv(tiny, out, "--method", "mean", "--only", "random_s1")) == 0
        now = _pieces(out)
        assert len(now) == 3 and {k: now[k] for k in kept} == kept
        assert not (out / "results.json").exists()
    finally:
        first.kill()
        first.wait()


def test_an_older_mvjax_run_resumes_with_its_own_flags_and_is_kept_otherwise(tmp_path):
    """A resume directory from before plans were recorded (only a hash of the flags) resumes when
    the flags hash the same, and is refused, pieces kept, when they do not."""
    from mvjax.analysis.resume import Checkpoint

    for legacy, ok in (("old hash", True), ("new hash", False)):
        where = tmp_path / legacy.replace(" ", "_")
        where.mkdir()
        (where / "fingerprint").write_text("old hash")
        (where / "0123.pkl").write_bytes(b"piece")
        if ok:
            with Checkpoint(where, {"--method": "mean"}, legacy_key=legacy) as ck:
                assert ck.done() == 1
            assert json.loads((where / "plan.json").read_text()) == {"--method": "mean"}
        else:
            with pytest.raises(ValueError, match="older mvjax"):
                Checkpoint(where, {"--method": "mean"}, legacy_key=legacy)
            assert not (where / "plan.json").exists()
        assert (where / "0123.pkl").read_bytes() == b"piece"


def test_the_plan_leaves_out_batch_size_and_task_path_spelling(tiny, tmp_path, monkeypatch):
    """Flags that cannot change a number are not in the plan; one that can is, by its flag name."""
    import argparse

    import numpy as np

    from mvjax.analysis.experiments.common import run_plan
    from mvjax.analysis.experiments.registry import FRAMED
    from mvjax.analysis.experiments.spec import RunSpec
    from mvjax.data.tasks import load_task_file
    from mvjax.load import load_pretrained

    model_dir, tasks_file = tiny
    model, _ = load_pretrained(str(model_dir))
    tasks, rows = [load_task_file(str(tasks_file))], np.zeros((1, 4), np.int32)
    monkeypatch.chdir(tasks_file.parent)

    def plan(**flags):
        args = argparse.Namespace(**({"model": str(model_dir), "quick": True, "n": None, "seed": 0,
                                      "batch_size": 8, "tasks": [str(tasks_file)], "lam": 5.0,
                                      "out": "o", "only": None, "seed_from": None} | flags))
        return run_plan("disrupt", RunSpec.from_args(args, FRAMED["disrupt"]), model, tasks, rows)
    assert plan() == plan(batch_size=1, tasks=[tasks_file.name], out="elsewhere")
    assert plan(lam=2.0)["--lambda"] == 2.0 != plan()["--lambda"]


# ---------------------------------------------------------------- --seed-from RESULTS.json


def _partial_results(tiny, tmp_path, monkeypatch, capsys, *flags: str) -> Path:
    """The results.json of a run killed after its first condition (via --partial-to)."""
    _interrupt_after(monkeypatch, 1)
    assert main(_argv(tiny, tmp_path / "first", *flags)) == 130
    assert main(_argv(tiny, tmp_path / "first", *flags, "--partial-to", str(tmp_path / "part"))) == 0
    capsys.readouterr()
    return tmp_path / "part" / "results.json"


def test_seed_from_refuses_a_results_file_of_other_settings(tiny, tmp_path, monkeypatch, capsys):
    """A --top-k 2 run's conditions never seed a --top-k 1 run (the docs script compared
    experiment, model and run, not config: its results said top_k 1 with top-k-2 numbers)."""
    _tiny_presets(monkeypatch)
    results = _partial_results(tiny, tmp_path, monkeypatch, capsys, "--top-k", "2")
    out = tmp_path / "second"
    assert main(_argv(tiny, out, "--top-k", "1", "--seed-from", str(results))) == 2
    err = _error(capsys)
    assert "config.top_k is 2 there, 1 here" in err and str(results) in err, err
    assert not resume_dir(out).exists() and not out.exists()
    assert main(_argv(tiny, out, "--seed-from", str(tmp_path / "none.json"))) == 2
    assert "--seed-from" in _error(capsys)


def test_seed_from_saves_each_condition_as_a_finished_piece(tiny, tmp_path, monkeypatch, capsys):
    """Same settings (another --batch-size is the same settings): every condition of the file is
    a finished piece, not scored again; the unmodified pass is recomputed."""
    import pickle

    _tiny_presets(monkeypatch)
    results = _partial_results(tiny, tmp_path, monkeypatch, capsys)
    conditions = json.loads(results.read_text())["conditions"]
    assert len(conditions) == 1
    out = tmp_path / "second"
    _interrupt_after(monkeypatch, 0)  # no condition scored here
    assert main(_argv(tiny, out, "--batch-size", "3", "--seed-from", str(results))) == 130
    assert f"seeded from {results}: {', '.join(conditions)}" in capsys.readouterr().out
    pieces = [pickle.loads(b) for b in _pieces(out).values()]
    assert len(pieces) == 2 and list(conditions.values())[0] in pieces  # and the unmodified pass
