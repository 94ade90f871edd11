"""A reading added after the full run's massive condition was seen (2026-12-01), reported beside the
rules fixed before it, never instead of them: both kinds scored by greedy exact match (the paper
scores every task by generation), on every item. The fixed rules rank choices where a task has
them, and the 4-choice passkey ranking is 100% under every condition, so it cannot show a drop.

    python docs/disrupt-smollm2/exact_reading.py docs/disrupt-smollm2/full-pooled/results.json
"""

from __future__ import annotations

import json
import sys

from mvjax.analysis.experiments.disrupt.claims import drop_difference, kind_drop, pooled_kind
from mvjax.analysis.records import ScoredRun


def reading(result: ScoredRun, cond: str) -> dict:
    drops, intervals = {}, []
    for kind in ("contextual", "parametric"):
        ko, n, _ = pooled_kind(result, "original", kind, metric="exact")
        kd, _, _ = pooled_kind(result, cond, kind, metric="exact")
        intervals.append(kind_drop(result, cond, kind, metric="exact"))
        d, lo, hi, _ = intervals[-1]
        drops[kind] = {"original": ko / n, cond: kd / n, "n": n, "drop": d, "ci95": [lo, hi],
                       "share_kept": kd / ko if ko else None}
    diff, lower = drop_difference(*intervals)
    return {"drops": drops, "difference": diff, "lower": lower, "contextual_drop_exceeds": lower > 0}


if __name__ == "__main__":
    result = ScoredRun.load(sys.argv[1])
    conds = [c for c in result.conditions if c != "original"]
    print(json.dumps({c: reading(result, c) for c in conds}, indent=1))
