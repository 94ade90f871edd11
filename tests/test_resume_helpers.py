"""Processes sharing one run's plan (analysis.resume): a condition another live process is scoring
is deferred, a helper leaves it, the main run reads it once done or takes it over from a dead
holder; no condition is scored twice."""

from __future__ import annotations

import subprocess
import sys
import threading

from mvjax.analysis.resume import Checkpoint


def _scorer(ck: Checkpoint, log: list):
    def score(name: str) -> None:
        log.append(ck.get(name, lambda: f"{name} by {id(ck)}"))
    return score


def test_deferred_while_held_then_taken_over_when_the_holder_dies(tmp_path):
    main = Checkpoint(tmp_path / "ck", "key")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        main._marker("b").write_text(str(holder.pid))  # another process is scoring b
        helper, helped = Checkpoint(tmp_path / "ck", "key", only=["a", "b", "c"]), []
        helper.each(["a", "b", "c"], _scorer(helper, helped))
        assert helped == [f"a by {id(helper)}", f"c by {id(helper)}"]  # b left to its holder
        threading.Timer(0.3, lambda: (holder.kill(), holder.wait())).start()  # reaped: a zombie counts as alive
        scored: list = []
        main.each(["a", "b", "c"], _scorer(main, scored), poll_s=0.05)
        # a and c come from the helper's pieces; b waited for, then scored here
        assert scored == [f"a by {id(helper)}", f"c by {id(helper)}", f"b by {id(main)}"]
        assert not list((tmp_path / "ck").glob("*.busy"))
    finally:
        holder.kill()
        holder.wait()


def test_a_marker_of_a_dead_process_is_taken_over_at_once(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ck = Checkpoint(tmp_path / "ck", "key")
    ck._marker("x").write_text(str(dead.pid))
    scored: list = []
    ck.each(["x"], _scorer(ck, scored), poll_s=60)
    assert scored == [f"x by {id(ck)}"]


def test_the_main_run_reads_a_deferred_piece_as_soon_as_it_is_there(tmp_path):
    main = Checkpoint(tmp_path / "ck", "key")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        main._marker("a").write_text(str(holder.pid))
        scored: list = []

        def score(name: str) -> None:
            scored.append(main.get(name, lambda: name))
            if name == "b":  # the other process finishes a while b is scored here
                main._path("a").write_bytes(__import__("pickle").dumps("a by the other"))
                main._marker("a").unlink()
        main.each(["a", "b", "c"], score, poll_s=60)
        assert scored == ["b", "a by the other", "c"]  # a read right after b, not at the end
    finally:
        holder.kill()
        holder.wait()


def test_the_main_run_reads_a_later_piece_a_helper_finished_before_its_turn(tmp_path):
    """A helper's piece for a condition later in the plan shows in partial.json at once, not when
    the main run reaches that condition."""
    main = Checkpoint(tmp_path / "ck", "key")
    scored: list = []

    def score(name: str) -> None:
        scored.append(main.get(name, lambda: name))
        if name == "a":  # meanwhile a helper finished d
            helper = Checkpoint(tmp_path / "ck", "key", only=["d"])
            helper.each(["a", "b", "c", "d"], _scorer(helper, []))
    main.each(["a", "b", "c", "d"], score)
    assert scored[0] == "a" and scored[1].startswith("d by ") and scored[2:] == ["b", "c"]


def test_partial_to_of_a_finished_run_redraws_it_with_todays_claims(tmp_path):
    """No resume directory left, a results.json at --out: its numbers are kept, its old claims
    and notes replaced, and it is not called partial; with neither, a one-line error."""
    import argparse
    import json

    import pytest

    from mvjax.analysis.claims import Claim, Outcome
    from mvjax.analysis.experiments.common import write_partial

    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"conditions": {"original": {"x": 1}},
                                                  "claims": [{"name": "old"}], "notes": ["old"]}))
    claim = Claim("new", "n", "r", lambda r: Outcome({}, "original" in r.conditions, "d"))
    args = argparse.Namespace(out=str(run), partial_to=str(tmp_path / "again"))
    assert write_partial(args, lambda r: [claim.apply(r)],
                         lambda r, out: (out / "report.md").write_text("r"), lambda r: ["today"]) == 0
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert again["conditions"] == {"original": {"x": 1}} and "partial" not in again
    assert [c["name"] for c in again["claims"]] == ["new"] and again["notes"] == ["today"]
    args.out = str(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="no finished condition"):
        write_partial(args, lambda r: [], lambda r, out: None, None)
