"""Processes sharing one run's plan (analysis.resume): a condition another live process is scoring
is deferred, a helper leaves it, the main run reads it once done or takes it over from a dead
holder; no condition is scored twice."""

from __future__ import annotations

import subprocess
import sys
import threading

from analysis.resume import Checkpoint


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
