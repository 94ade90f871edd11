"""Plot probe runs of ``retrieval_probe.py``: answer NLL per token and greedy exact over training
tokens, one line per run, one panel per task. Usage::

    python benchmarks/retrieval_probe_plot.py OUT.png RUN.jsonl [RUN.jsonl ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out, runs = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
    tasks = ("copy", "kv_recall", "passkey")
    fig, axes = plt.subplots(2, 3, figsize=(13, 6), sharex=True)
    for i, path in enumerate(runs):
        points = [json.loads(line) for line in path.read_text().splitlines()[1:]]
        x = [p["tokens"] / 1e6 for p in points]
        for j, task in enumerate(tasks):
            if task in points[0]:
                axes[0, j].plot(x, [p[task]["answer_nll"] for p in points], color=f"C{i}",
                                label=path.stem if j == 1 else None)
                axes[1, j].plot(x, [p[task]["exact"] for p in points], color=f"C{i}")
    for j, task in enumerate(tasks):
        axes[0, j].set_title(f"{task}: answer NLL per token", fontsize=9)
        axes[1, j].set_title(f"{task}: greedy exact", fontsize=9)
        axes[1, j].set_xlabel("training tokens (M)", fontsize=8)
        axes[1, j].axhline(0.8, color="gray", ls="--", lw=0.8)
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
    axes[0, 1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
