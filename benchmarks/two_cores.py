"""Two cores, one experiment: the ``--only`` helper queue against a 2-process ``jax.distributed``
run, beside one process on one core (issue: keep the queue only if it beats the engine).

    python benchmarks/two_cores.py [--model smollm2] [--experiment disrupt] [--cores 0,1]

Each variant runs ``mvjax experiment EXPERIMENT --quick`` from scratch into its own folder, every
process pinned to one core (``taskset``), compilation counted as a user pays it:
  one          one process on the first core;
  queue        the main run on the first core, and a helper (``--only``) on the second scoring the
               second half of the plan's conditions (names read from the ``one`` run's results);
  distributed  two processes, one CPU device each, ``--distributed --mesh data=2``: each scores
               half the rows of every condition.
Prints one JSON object: wall seconds per variant and whether the results agree with ``one``
(accuracies identical). Run it on an otherwise idle machine: a shared core inflates everything.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(core: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(["taskset", "-c", core, sys.executable, "-m", "mvjax.cli", *argv],
                            env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _wait(procs: list[subprocess.Popen]) -> list[int]:
    codes = []
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            print(err[-2000:], file=sys.stderr)
        codes.append(p.returncode)
    return codes


def _accuracies(results: Path) -> dict:
    """{condition: {task: exact correct count}}: what must not move between variants."""
    conds = json.loads(results.read_text())["conditions"]
    return {c: {t: (s.get("exact") or {}).get("correct") for t, s in e["tasks"].items()}
            for c, e in conds.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--experiment", choices=("disrupt", "quantize"), default="disrupt")
    ap.add_argument("--cores", default="0,1", help="two taskset cores")
    args = ap.parse_args()
    c0, c1 = args.cores.split(",")
    out: dict = {"experiment": args.experiment, "model": args.model, "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        base = ["experiment", args.experiment, "--model", args.model, "--quick"]
        one = Path(tmp) / "one"
        t = time.time()
        rc = _wait([_start(c0, [*base, "--out", str(one)])])
        out["one"] = {"wall_s": round(time.time() - t, 1), "rc": rc}
        reference = _accuracies(one / "results.json")
        plan = [c for c in reference if c != "original"]
        helper = plan[len(plan) // 2:]

        queue = Path(tmp) / "queue"
        t = time.time()
        main_run = _start(c0, [*base, "--out", str(queue)])
        pieces = queue.parent / f".{queue.name}.resume"
        while not list(pieces.glob("*.pkl")) and main_run.poll() is None:  # the baseline first
            time.sleep(1)
        rc = _wait([main_run, _start(c1, [*base, "--out", str(queue), "--only", ",".join(helper)])])
        out["queue"] = {"wall_s": round(time.time() - t, 1), "rc": rc, "helper_conditions": len(helper),
                        "same_results": _accuracies(queue / "results.json") == reference}

        dist = Path(tmp) / "distributed"
        port = _free_port()
        t = time.time()
        rc = _wait([_start(core, [*base, "--out", str(dist), "--distributed", "--mesh", "data=2"], {
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu",
            "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(i)}) for i, core in enumerate((c0, c1))])
        out["distributed"] = {"wall_s": round(time.time() - t, 1), "rc": rc,
                              "same_results": _accuracies(dist / "results.json") == reference}
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
