"""``mvjax experiment emergence RUN_DIR... --out DIR``: its flags and its registry entry
(``EMERGENCE``); ``analysis.experiments.emergence.run`` reads the runs, ``report`` draws them."""

from __future__ import annotations

import argparse
import json

from mvjax.analysis.experiments.emergence.report import draw, table, totals
from mvjax.analysis.experiments.emergence.run import load_runs
from mvjax.analysis.experiments.spec import Command
from mvjax.atomic import check_own_dir, write_atomic, write_json


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="`mvjax train` output directories, "
                   "or an emergence.json written earlier (its runs are kept as recorded, so a "
                   "sweep can grow after its training directories are gone)")
    p.add_argument("--out", required=True, help="where emergence.json, .png and .md go")


OWN_FILES = ("emergence.json", "emergence.png", "emergence.md")


def run_from_args(args: argparse.Namespace) -> int:
    out = check_own_dir(args.out, OWN_FILES, "emergence outputs")
    runs = load_runs(args.runs)
    if not runs:
        raise ValueError(f"no runs to draw in {' '.join(args.runs)}: pass training run directories "
                         "or an emergence.json that holds runs")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "emergence.json",  # in place: the old file stays whole if this fails
               {"command": "mvjax experiment emergence " + " ".join(args.runs) + f" --out {args.out}",
                "runs": [r.to_json() for r in runs], "totals": {r.run: totals(r) for r in runs}},
               indent=None)
    draw(runs, out / "emergence.png")
    write_atomic(out / "emergence.md", table(runs) + "\n")
    print(json.dumps({r.run: {k: v[-1] if v else None for k, v in totals(r).items()}
                      for r in runs}, indent=1))
    return 0


EMERGENCE = Command(
    name="emergence",
    help="massive-value curves over training tokens for a set of training runs (λ=5 counts, "
    "max/mean, band share, sink mass)",
    add_flags=add_flags, run=run_from_args)
