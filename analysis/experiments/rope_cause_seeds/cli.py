"""``mvjax experiment rope-cause-seeds --root ROOT``: its flag and its registry entry
(``ROPE_CAUSE_SEEDS``); ``analysis.experiments.rope_cause_seeds.run`` does the work."""

from __future__ import annotations

import argparse
import json

from mvjax.analysis.experiments.rope_cause_seeds.run import run
from mvjax.analysis.experiments.spec import Command


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default="docs/rope-cause-seeds",
                   help="folder holding <arm>/seed<s>/results.json (default: docs/rope-cause-seeds)")


def run_from_args(args: argparse.Namespace) -> int:
    decided = run(args.root)
    print(json.dumps({"root": args.root, "claim_5": decided.claim_5,
                      "arms": {a: v.verdict for a, v in decided.arms.items()}}, indent=1))
    return 0


ROPE_CAUSE_SEEDS = Command(
    name="rope-cause-seeds",
    help="claim (5) across training seeds: null distribution of pair-aware controls, per-seed and "
    "per-arm verdicts",
    add_flags=add_flags, run=run_from_args)
