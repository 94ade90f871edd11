"""Wall time and peak memory of the quick experiment presets (targets on a 2-core CPU: disrupt
≤ 5 min, quantize ≤ 6 min). Each runs as its own process under ``/usr/bin/time -v`` (pinned to
the cores given), so compilation is counted as a user pays it.

    python benchmarks/experiment_cost.py [--model smollm2 --cores 0 --only disrupt]

Prints one JSON object: per experiment, wall seconds, peak RSS (GB), exit status and the command.
Note the machine's load beside it: a shared CPU inflates every number.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile


def timed(cmd: list[str]) -> dict:
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", r.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    h, m, s = (float(x or 0) for x in wall.groups()) if wall else (0, 0, float("nan"))
    return {"wall_s": round(3600 * h + 60 * m + s, 1), "peak_rss_gb": round(int(rss.group(1)) / 2**20, 2)
            if rss else None, "rc": r.returncode, "command": " ".join(cmd)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--cores", default="0", help="taskset core list")
    ap.add_argument("--only", choices=("disrupt", "quantize"), default=None)
    args = ap.parse_args()
    out = {"load_before": os.getloadavg()[0]}
    mvjax = [sys.executable, "-m", "mvjax.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        for exp in ("disrupt", "quantize"):
            if args.only in (None, exp):
                out[exp] = timed(["taskset", "-c", args.cores, *mvjax, "experiment", exp, "--model",
                                  args.model, "--quick", "--out", f"{tmp}/{exp}"])
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
