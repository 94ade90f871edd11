"""A reading added after the full run's massive condition was seen (2026-12-01), reported beside the
rules fixed before it, never instead of them: both kinds scored by greedy exact match (the paper
scores every task by generation), on every item. The fixed rules rank choices where a task has
them, and the 4-choice passkey ranking is 100% under every condition, so it cannot show a drop.

    python docs/disrupt-smollm2/exact_reading.py docs/disrupt-smollm2/full-pooled/results.json
"""

from __future__ import annotations

import json
import math
import sys

from mvjax.data.tasks.base import difference_interval


def kind_counts(result: dict, cond: str, kind: str) -> tuple[int, int]:
    k = n = 0
    for task, t in result["tasks"].items():
        s = result["conditions"][cond]["tasks"].get(task, {}).get("exact") if t["kind"] == kind else None
        if s is not None:
            k, n = k + s["correct"], n + s["n"]
    return k, n


def reading(result: dict, cond: str) -> dict:
    drops = {}
    for kind in ("contextual", "parametric"):
        (ko, n), (kd, _) = kind_counts(result, "original", kind), kind_counts(result, cond, kind)
        d, lo, hi = difference_interval(ko, n, kd, n)
        drops[kind] = {"original": ko / n, cond: kd / n, "n": n, "drop": d, "ci95": [lo, hi],
                       "share_kept": kd / ko if ko else None}
    c, p = drops["contextual"], drops["parametric"]
    diff = c["drop"] - p["drop"]
    lower = diff - math.hypot(c["drop"] - c["ci95"][0], p["ci95"][1] - p["drop"])
    return {"drops": drops, "difference": diff, "lower": lower, "contextual_drop_exceeds": lower > 0}


if __name__ == "__main__":
    result = json.load(open(sys.argv[1]))
    conds = [c for c in result["conditions"] if c != "original"]
    print(json.dumps({c: reading(result, c) for c in conds}, indent=1))
