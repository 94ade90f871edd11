"""The tables of the full runs in docs/disrupt-smollm2/README.md (between its readme_table.py
markers): the paper's Table 1 shape (original → massive → each control, pooled and per-prompt
statistics side by side), accuracy % [95% Wilson CI] on every item; then the pooled run's sweeps
(top-k per head, and the massive dims of one third of the layers). Passkey rows show greedy exact
only: its 4-choice ranking is 100% under every condition.

    python docs/disrupt-smollm2/readme_table.py docs/disrupt-smollm2/full-pooled/results.json \
        docs/disrupt-smollm2/full-prompt/results.json
"""

from __future__ import annotations

import sys

from mvjax.analysis.experiments.disrupt.report import cell, metrics_of
from mvjax.analysis.records import Score, ScoredRun

COLUMNS = ("original", "massive", "lowest_norm", "random", "energy_matched")


def _ci(summary: Score | None) -> str:
    if summary is None:
        return "–"
    lo, hi = summary.ci95
    return f"{100 * summary.accuracy:.0f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def _has(result: ScoredRun, col: str) -> bool:
    return col in result.conditions or bool(result.seeded(col))


def table(pooled: ScoredRun, prompt: ScoredRun) -> str:
    runs = {"pooled": pooled, "per prompt": prompt}
    cols = [("pooled", "original")] + [(name, c) for c in COLUMNS[1:] for name in runs if _has(runs[name], c)]
    head = [c.replace("_", "-") + ("" if c == "original" else f", {name}") for name, c in cols]
    rows = ["| task (metric, chance; n) | " + " | ".join(head) + " |", "|---" * (len(cols) + 1) + "|"]
    for task in pooled.tasks:
        for metric in metrics_of(pooled, task):
            if metric == "rank" and task.startswith("passkey"):
                continue
            base = cell(pooled, "original", task, metric)
            rows.append(f"| {task} ({metric}, {100 * base.chance:.0f}%; n={base.n}) | "
                        + " | ".join(_ci(cell(runs[name], c, task, metric)) for name, c in cols) + " |")
    return "\n".join(rows)


def sweep_table(result: ScoredRun) -> str:
    """Tasks (main metric: exact for passkey, else rank) × the sweep conditions scored so far."""
    c = result.conditions
    cols = [("original", "original"), ("massive", "top-1 massive")]
    cols += [(f"sweep_top{k}_massive", f"top-{k} massive") for k in (2, 4)]
    cols += [("lowest_norm", "top-1 lowest")] + [(f"sweep_top{k}_lowest", f"top-{k} lowest") for k in (2, 4)]
    cols += [(f"sweep_layers_{p}", f"{p} third") for p in ("early", "middle", "late")]
    cols = [(name, head) for name, head in cols if name in c]
    rows = ["| task (metric) | " + " | ".join(head for _, head in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for task in result.tasks:
        metric = "exact" if task.startswith("passkey") else metrics_of(result, task)[0]
        cells = [cell(result, name, task, metric) for name, _ in cols]
        rows.append(f"| {task} ({metric}) | " + " | ".join(f"{100 * x.accuracy:.0f}" for x in cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    pooled, prompt = (ScoredRun.load(path) for path in sys.argv[1:3])
    print(table(pooled, prompt), "", "Which dims and layers matter (pooled; accuracy %, CIs in results.json; "
          "`topk_sweep.png`, `layer_sweep.png` in the report):", "", sweep_table(pooled), sep="\n")
