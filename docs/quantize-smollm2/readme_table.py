"""The quantization table of docs/quantize-smollm2/README.md (between its quantize readme_table.py
markers): each setting without and with the massive dims kept in full precision, pooled by kind —
contextual by greedy exact and by each task's main metric, parametric by main metric — accuracy %
[95% Wilson CI], perplexity, and the verdict of each reading.

    python docs/quantize-smollm2/readme_table.py docs/quantize-smollm2/full/results.json
"""

from __future__ import annotations

import sys

from mvjax.analysis.experiments.quantize.report import KIND_READINGS
from mvjax.analysis.experiments.quantize.claims import READINGS, kept_pairs, kind_point
from mvjax.analysis.records import ScoredRun


def _ci(p: tuple | None) -> str:
    return "–" if p is None else f"{100 * p[0]:.1f} [{100 * p[1]:.0f}, {100 * p[2]:.0f}]"


def _ppl(result: ScoredRun, cond: str) -> str:
    ppl = result.conditions[cond].perplexity
    return "–" if ppl is None else f"{ppl:.1f}"


def table(result: ScoredRun) -> str:
    verdict = {c["name"]: c["verdict"] for c in result.claims or []}
    head = ["setting"] + [f"{label}: {arm}" for label in KIND_READINGS for arm in ("quantized", "kept")]
    head += ["perplexity: quantized / kept", "keeping helps (main / exact)"]
    rows = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    orig = ["original (unquantized)"] + [x for k, m in KIND_READINGS.values()
                                         for x in (_ci(kind_point(result, "original", k, m)), "")]
    rows.append("| " + " | ".join(orig + [_ppl(result, "original"), ""]) + " |")
    for name, kept in kept_pairs(result):
        cells = [name] + [_ci(kind_point(result, c, k, m)) for k, m in KIND_READINGS.values() for c in (name, kept)]
        cells += [f"{_ppl(result, name)} / {_ppl(result, kept)}",
                  " / ".join(verdict.get(f"keep_{name}{READINGS[m][0]}", "–") for m in (None, "exact"))]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(ScoredRun.load(sys.argv[1])))
