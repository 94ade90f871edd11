"""``docs/rope-band/sweep.sh`` decides per run whether to train: a run stopped before STOP (an
earlier, smaller STOP or a signal; ``train`` writes summary.json in both cases) must continue, and
only a run that reached STOP or finished its schedule is skipped. ``mvjax`` is a stub on PATH that
records its arguments, so each case runs in milliseconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "docs" / "rope-band" / "sweep.sh"
RUN = "theta10000.0-ctx128-s0"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _sweep(tmp_path: Path, stop: int, summary: dict | str | None, model: bool = False) -> list[str]:
    """Run the sweep for one run (θ=1e4, context 128) whose directory holds ``summary`` (None: no
    directory yet); returns the stub's argument lists, one line per `mvjax train` call."""
    stub = tmp_path / "bin"
    stub.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "calls.log"
    (stub / "mvjax").write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    (stub / "mvjax").chmod(0o755)
    runs = tmp_path / "runs"
    out = runs / RUN
    if summary is not None:
        out.mkdir(parents=True, exist_ok=True)
        text = summary if isinstance(summary, str) else json.dumps(summary)
        (out / "summary.json").write_text(text)
        if model:
            (out / "model").mkdir()
    env = {**os.environ, "PATH": f"{stub}{os.pathsep}{os.environ['PATH']}", "THETAS": "10000.0",
           "CTXS": "128", "SEEDS": "0"}
    subprocess.run(["bash", str(SWEEP), str(runs), str(stop)], check=True, env=env, cwd=REPO,
                   capture_output=True, text=True, timeout=60)
    return log.read_text().splitlines() if log.exists() else []


def _stopped(step: int, signal: int | None = None) -> dict:
    """What ``train`` writes when it stops before its 800 steps (no final model)."""
    return {"event": "summary", "step": step, "interrupted_by_signal": signal,
            "checkpoint_step": step}


def test_a_stopped_run_continues_when_stop_grows(tmp_path):
    calls = _sweep(tmp_path, 700, _stopped(600))
    assert len(calls) == 1 and "--resume" in calls[0] and "--stop-at 700" in calls[0]


def test_a_run_stopped_by_a_signal_continues(tmp_path):
    calls = _sweep(tmp_path, 600, _stopped(300, signal=15))
    assert len(calls) == 1 and "--resume" in calls[0] and "--stop-at 600" in calls[0]


def test_a_cut_summary_is_not_taken_as_finished(tmp_path):
    calls = _sweep(tmp_path, 600, '{"event": "summ')
    assert len(calls) == 1 and "--resume" in calls[0]


def test_a_run_that_reached_stop_or_finished_is_skipped(tmp_path):
    assert _sweep(tmp_path, 600, _stopped(600)) == []
    finished = {**_stopped(800), "model_dir": str(tmp_path / "runs" / RUN / "model")}
    assert _sweep(tmp_path / "b", 1000, finished, model=True) == []


def test_a_new_run_starts_without_resume(tmp_path):
    calls = _sweep(tmp_path, 600, None)
    assert len(calls) == 1 and "--resume" not in calls[0] and "--stop-at 600" in calls[0]


def test_every_context_gets_the_same_rows_and_the_same_tokens(tmp_path):
    """The second design: ROWS rows per batch at every context, TOKENS / (ROWS x context) steps,
    and each seed its own run with its training and data seed."""
    stub = tmp_path / "bin"
    stub.mkdir()
    log = tmp_path / "calls.log"
    (stub / "mvjax").write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    (stub / "mvjax").chmod(0o755)
    env = {**os.environ, "PATH": f"{stub}{os.pathsep}{os.environ['PATH']}", "THETAS": "10000.0",
           "CTXS": "128 512", "SEEDS": "0 2"}
    subprocess.run(["bash", str(SWEEP), str(tmp_path / "runs")], check=True, env=env, cwd=REPO,
                   capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines()
    assert len(calls) == 4 and all("data.batch_size=16 " in c for c in calls)
    steps = {c.split("data.seq_len=")[1].split()[0]: c.split("train.steps=")[1].split()[0] for c in calls}
    assert steps == {"128": "2930", "512": "733"}  # 6M tokens at 16 rows
    assert sum("train.seed=2 " in c and "data.seed=2 " in c and "-s2 " in c for c in calls) == 2
    assert all(f"--stop-at {steps[c.split('data.seq_len=')[1].split()[0]]}" in c for c in calls)
