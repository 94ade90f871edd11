"""report.md, claims and figures of a quantization result: every condition × task table, the
claims of ``analysis.experiments.quantize.claims`` per setting that has a kept twin, and each setting without
and with the massive dims kept, pooled by kind."""

from __future__ import annotations

from pathlib import Path

from mvjax.analysis.claims import Claim, claim_lines
from mvjax.analysis.experiments.disrupt.report import cell, condition_figure, metrics_of
from mvjax.analysis.experiments.length_bins import bin_table
from mvjax.analysis.formatting import DASH, pct
from mvjax.analysis.plots import paired_intervals
from mvjax.analysis.experiments.quantize.claims import (READINGS, keeping_helps, kept_pairs, kind_point,
                                           massive_beats_random, random_twin)
from mvjax.analysis.records import ScoredRun
from mvjax.provenance import provenance_lines

# what the figure and the README table show of each setting: (kind, metric) per label
KIND_READINGS = {"contextual, greedy exact": ("contextual", "exact"),
                 "contextual, main metric": ("contextual", None), "parametric, main metric": ("parametric", None)}

GGUF_NOTE = ("The weights are a {quant} GGUF dequantized to fp32 ({source}): W_q/W_k already sit on a "
             "4-bit grid, so int4 round-to-nearest of W_q/W_k re-rounds already-rounded weights onto "
             "another grid (per output row) and int8 is nearly lossless by construction; the "
             "activation (Q/K) settings are not affected.")


def quantize_notes(run: ScoredRun) -> list[str]:
    """What the reader should know beside the claims: weights that were quantized before this
    experiment quantized them (a GGUF source, as provenance records it)."""
    for quant in ("Q4_1", "Q4_K_M", "Q4_0", "Q8_0"):
        if quant in run.model_source:
            return [GGUF_NOTE.format(quant=quant, source=run.model_source)]
    return []


def quantize_claims(run: ScoredRun) -> list[Claim]:
    """Per quantization setting that has a kept twin: does keeping the massive dims (rows) in full
    precision help the contextual tasks? Once by each task's main metric, once by greedy exact;
    and, where the keep-random control was scored, does it help more than keeping random dims?"""
    out = [keeping_helps(name, kept, metric).apply(run)
           for name, kept in kept_pairs(run) for metric in READINGS]
    for name, kept in kept_pairs(run):
        random = random_twin(run, name)
        if random is not None:
            out.append(massive_beats_random(name, kept, random).apply(run))
    return out


def keeping_figure(run: ScoredRun, out: Path, title: str) -> str | None:
    """keeping_massive.png: each setting without and with the massive dims kept, pooled by kind
    (contextual by greedy exact and by main metric, parametric by main metric), original dotted."""
    pairs = kept_pairs(run)
    if not pairs:
        return None
    panels = {label: {name: (kind_point(run, name, kind, m), kind_point(run, kept, kind, m))
                      for name, kept in pairs} for label, (kind, m) in KIND_READINGS.items()}
    ref = {label: p[0] for label, (kind, m) in KIND_READINGS.items()
           if (p := kind_point(run, "original", kind, m)) is not None}
    paired_intervals(panels, ("quantized", "massive dims kept"), out, "keeping_massive", title, ref)
    return "keeping_massive.png"


def quant_table(run: ScoredRun) -> str:
    """Rows = conditions, columns = tasks (rank accuracy % / greedy exact %, n) and perplexity."""
    tasks = list(run.tasks)
    head = [f"{t} ({' / '.join(metrics_of(run, t))}; n={run.tasks[t].n_items})" for t in tasks]
    rows = ["| condition | " + " | ".join(head) + " | perplexity |", "|---" * (len(tasks) + 2) + "|"]
    for name, e in run.conditions.items():
        ppl = e.perplexity
        cells = [" / ".join(pct(cell(run, name, t, m)) for m in metrics_of(run, t)) for t in tasks]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {DASH if ppl is None else f'{ppl:.2f}'} |")
    return "\n".join(rows)


def write_quantize_report(run: ScoredRun, out: Path, title: str) -> Path:
    """Bars per task with every condition side by side, and report.md with the table."""
    fig = condition_figure(run, out, title)
    lines = [f"# {title}", "", "## Definition (fixed before the run)", ""]
    lines += [f"- {k}: {v}" for k, v in run.definition.items()]
    lines += [*provenance_lines(run.provenance_record), "- Config in results.json.", "",
              "## Accuracy (%) per condition (every item of every task)",
              "", quant_table(run), ""]
    if run.bins:  # length-binned tasks (--preset confounds): every condition by kind and bin
        lines += ["## Greedy exact accuracy (%) by kind and prompt-length bin", "",
                  bin_table(run, [(name, name) for name in run.conditions]), ""]
    lines += ["## Claims", ""]
    lines += [f"- {n}" for n in run.notes or []]
    lines += claim_lines(run.claims) + ["", f"![{fig}]({fig})", ""]
    kept_fig = keeping_figure(run, out, title + ": keeping the massive dims")
    if kept_fig:
        lines += [f"![{kept_fig}]({kept_fig})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
