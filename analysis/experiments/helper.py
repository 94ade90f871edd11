"""``--only NAMES``: a helper on a second core joins a run under way at ``--out`` and scores just
those conditions into its resume directory (``analysis.resume.Checkpoint(only=...)`` shares the
plan out like a queue); the main run finds them finished and writes the results.

Everything the experiment frame knows of helpers is here: retiring them is deleting this module,
its three calls in ``analysis.experiments.common.run_experiment``, the ``only`` field of
``RunSpec`` and ``Checkpoint``'s ``only``."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def add_only_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", default=None, metavar="NAMES",
                   help="a helper on a second core: with the arguments of a run under way at --out, "
                   "score just these comma-separated conditions into its resume directory and exit "
                   "(the run finds them finished); a condition another process is scoring is left to it")


def refuse_seeding(spec: Any) -> None:
    """A helper never seeds: ``--seed-from`` is the main run's."""
    if spec.seed_from is not None and spec.only is not None:
        raise ValueError("--seed-from seeds the main run: drop --only (a helper finds the seeded "
                         "conditions finished)")


def helper_conditions(spec: Any) -> list[str] | None:
    """The conditions a helper scores (``--only``), or None for the main run."""
    if spec.only is None:
        return None
    if not spec.only.strip(","):
        raise ValueError("--only is empty: name the conditions this helper scores, e.g. --only q_only,k_only")
    return [s.strip() for s in spec.only.split(",") if s.strip()]


def helper_done(conditions: Any, directory: Any, t0: float) -> int:
    """A helper's end: it says what it scored, and where; the main run writes the results."""
    print(json.dumps({"scored": sorted(conditions), "into": str(directory),
                      "seconds": round(time.time() - t0, 1)}))
    return 0
