"""``report.md`` and figures for a disruption result: the table in the paper's shape (original /
massive disrupted / each control), the per-condition details with n and 95% CI, and one plain
sentence per claim — held or not, with its numbers. Claims are decided by fixed rules stated in
the sentence, never by looking at which way the numbers went. The quantize and confounds reports
read their cells through ``cell`` and ``metrics_of`` too."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mvjax.analysis.claims import Claim, Outcome, claim_lines
from mvjax.analysis.experiments.disrupt.claims import PARAMETRIC_SURVIVES, control_costs_less, main_metric
from mvjax.analysis.formatting import pct, pct_ci
from mvjax.analysis.plots import condition_bars, condition_heatmap, layer_lines
from mvjax.analysis.records import Score, ScoredRun
from mvjax.data.tasks.base import accuracy_summary
from mvjax.provenance import provenance_lines


def pooled(run: ScoredRun, column: str, task: str, metric: str, known: bool = False) -> Score | None:
    """Accuracy of a seeded control pooled over its seeds (items × seeds), with a Wilson CI."""
    runs = [c.score(task, metric, known) for c in run.seeded(column)]
    runs = [r for r in runs if r is not None]
    if not runs:
        return None
    flags = [True] * sum(r.correct for r in runs) + [False] * sum(r.n - r.correct for r in runs)
    return Score.from_json(accuracy_summary(flags, runs[0].chance))


def cell(run: ScoredRun, col: str, task: str, metric: str, known: bool = False) -> Score | None:
    """A table cell: a condition's score, or a seeded column's pooled over its seeds."""
    if col in run.conditions:
        return run.conditions[col].score(task, metric, known)
    return pooled(run, col, task, metric, known)


def metrics_of(run: ScoredRun, task: str) -> list[str]:
    """The metrics a task was scored by: rank (choices) first, then greedy exact (targets)."""
    original = run.conditions["original"]
    return [m for m in ("rank", "exact") if original.score(task, m) is not None]


def unswept(run: ScoredRun) -> list[str]:
    """The columns of the main table and figure: every one but the sweeps (their own figures)."""
    return [c for c in run.columns() if run.group(c) != "sweep"]


def main_table(run: ScoredRun, known: bool = False, ci: bool = False) -> str:
    """Tasks × conditions (sweeps left to their figures); every item, or only the items the
    unmodified model gets right (``known``); with 95% CIs when ``ci``."""
    cols = unswept(run)
    fmt = pct_ci if ci else pct
    rows = ["| task (metric, chance; n) | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for task in run.tasks:
        for metric in metrics_of(run, task):
            base = cell(run, "original", task, metric, known)
            if base is None:
                continue
            rows.append(f"| {task} ({metric}, {100 * base.chance:.0f}%; n={base.n}) | "
                        + " | ".join(fmt(cell(run, c, task, metric, known)) for c in cols) + " |")
    return "\n".join(rows)


def detail_table(run: ScoredRun) -> str:
    rows = ["| condition | task | n | rank acc % [95% CI] | above chance (pts) | greedy exact % [95% CI] |",
            "|---|---|---|---|---|---|"]
    for cond, entry in run.conditions.items():
        for task, r in entry.tasks.items():
            rk, ex = r.rank, r.exact
            n = (rk or ex).n if (rk or ex) else 0
            above = "–" if rk is None else f"{100 * rk.above_chance:+.1f}"
            rows.append(f"| {cond} | {task} | {n} | {pct_ci(rk)} | {above} | {pct_ci(ex)} |")
    return "\n".join(rows)


def _drop(run: ScoredRun, col: str, task: str) -> float | None:
    m = main_metric(run, task)
    a, b = cell(run, "original", task, m), cell(run, col, task, m)
    return None if a is None or b is None else 100 * (a.accuracy - b.accuracy)


def disrupt_notes(run: ScoredRun) -> list[str]:
    """What the reader should know beside the claims: tasks the unmodified model does not clearly
    solve, a chosen-layers condition equal to 'massive', the perplexities."""
    out = []
    for t, v in run.tasks.items():
        b = None if v.baseline_all_items is None else v.baseline_all_items.get(v.main_metric)
        if b is not None and not b.clearly_above_chance:
            out.append(f"Caveat: the unmodified model is not clearly above chance on {t} "
                       f"({pct_ci(b)} vs chance {100 * b.chance:.0f}%); its rows say little.")
    if "chosen_layers" in run.conditions and run.tasks_of("contextual") and \
            len(run.chosen_layers) == run.model_layers:
        out.append("Chosen layers: the rule picked every layer (each has a λ-massive entry), so "
                   "this condition equals 'massive'; pass --layers to compare a subset.")
    ppl = {c: e.perplexity for c, e in run.conditions.items() if e.perplexity}
    if ppl:
        out.append("Held-out perplexity: " + ", ".join(f"{c} {v:.2f}" for c, v in ppl.items()) + ".")
    return out


def breaks_contextual(task: str, metric: str) -> Claim:
    def check(run: ScoredRun) -> Outcome:
        a, b = cell(run, "original", task, metric), cell(run, "massive", task, metric)
        return Outcome({"original": a.to_json(), "massive": b.to_json()}, b.ci95[1] < a.ci95[0],
                       f"{pct_ci(a)} → {pct_ci(b)} (n={a.n})")
    return Claim(f"massive_breaks_{task}_{metric}",
                 f"Disrupting the massive dims breaks contextual task {task} ({metric})",
                 "the 95% CIs do not overlap", check)


ABLATIONS = {  # condition: (claim words, whether most of the damage must go (≤ 50% left) or stay)
    "first_token_kept": ("Keeping position 0 intact (the sink) undoes", False),
    "k_only": ("Editing K alone reproduces", True), "q_only": ("Editing Q alone reproduces", True),
    "chosen_layers": ("Editing only the chosen layers reproduces", True)}


def ablation(name: str) -> Claim:
    words, reproduces = ABLATIONS[name]

    def check(run: ScoredRun) -> Outcome:
        ctx = run.tasks_of("contextual")
        mass = [d for d in (_drop(run, "massive", t) for t in ctx) if d is not None]
        this = [d for d in (_drop(run, name, t) for t in ctx) if d is not None]
        if not mass or np.mean(mass) <= 0:
            return Outcome({"massive_drop": mass, "drop": this}, None, "massive disruption cost "
                           "nothing on the contextual tasks")
        share = float(np.mean(this) / np.mean(mass))
        edited = "" if reproduces else " with position 0 edited"
        return Outcome({"mean_drop": float(np.mean(this)), "massive_mean_drop": float(np.mean(mass)),
                        "share": share}, share >= 0.5 if reproduces else share <= 0.5,
                       f"mean contextual drop {np.mean(this):.1f} points vs {np.mean(mass):.1f}"
                       f"{edited} ({100 * share:.0f}% of it remains)")
    return Claim(name, f"{words} most of the contextual damage",
                 "≥ 50% of the drop remains" if reproduces else "≤ 50% of the drop remains", check)


def disrupt_claims(run: ScoredRun) -> list[Claim]:
    """Every claim the run can test, each with its rule, numbers and verdict."""
    ctx, par = run.tasks_of("contextual"), run.tasks_of("parametric")
    todo = [breaks_contextual(t, m) for t in ctx for m in metrics_of(run, t)]
    todo += PARAMETRIC_SURVIVES if par and ctx else []
    for col in run.columns():
        if run.group(col, "control") != "control":
            continue  # pooled seeded columns are controls; named conditions say their group
        if any(_drop(run, col, t) is not None for t in run.tasks):
            todo.append(control_costs_less(col, cell))
    every_layer = len(run.chosen_layers or ()) == run.model_layers
    todo += [ablation(n) for n in ABLATIONS if n in run.conditions and ctx
             and not (n == "chosen_layers" and every_layer)]
    return [c.apply(run) for c in todo]


def condition_figure(run: ScoredRun, out: Path, title: str, cols: list[str] | None = None,
                     name: str = "accuracy_by_condition", what: str = "accuracy per condition") -> str:
    """Bars per task with every condition side by side (seeded controls pooled; sweeps left to
    their own figures): one panel by each task's main metric, one by greedy exact for the tasks
    that have choices (passkey's 4-choice ranking cannot move; its exact match can). Beyond 8
    conditions, where bars stop being readable, a heatmap of every task × metric. Returns the
    PNG's name."""
    cols = cols or unswept(run)

    def table(pairs) -> dict:
        return {f"{t} ({m})": {c: cell(run, c, t, m) for c in cols} for t, m in pairs}
    tasks = list(run.tasks)
    if len(cols) > 8:
        condition_heatmap(table((t, m) for t in tasks for m in metrics_of(run, t)), cols, out, name,
                          f"{title}: {what}")
    else:
        ranked = [t for t in tasks if main_metric(run, t) == "rank" and "exact" in metrics_of(run, t)]
        condition_bars({"main metric": table((t, main_metric(run, t)) for t in tasks),
                        "greedy exact": table((t, "exact") for t in ranked)}, cols, out, name,
                       f"{title}: {what}")
    return f"{name}.png"


def sweep_figures(run: ScoredRun, out: Path, title: str) -> list[str]:
    """The top-k sweep (massive and lowest-norm at each k) and the layer sweep (massive dims in
    one third of the layers), one figure each, when the run has them."""
    conds, k0 = run.conditions, run.config["top_k"]
    ks = sorted({k0, *run.config.get("sweep_k", ())})
    figs = []
    if len(ks) > 1:
        name = lambda k, r: ({"massive": "massive", "lowest": "lowest_norm"}[r] if k == k0  # noqa: E731
                             else f"sweep_top{k}_{r}")
        cols = ["original"] + [name(k, r) for r in ("massive", "lowest") for k in ks]
        figs.append(condition_figure(run, out, title, [c for c in cols if c in conds], "topk_sweep",
                                     f"top-k per head edited, k = {ks}"))
    thirds = [c for c in conds if c.startswith("sweep_layers_")]
    if thirds:
        figs.append(condition_figure(run, out, title, ["original", "massive", *thirds], "layer_sweep",
                                     "massive dims edited in one third of the layers"))
    return figs


def dims_lines(run: ScoredRun) -> list[str]:
    """What was edited: counts, the massive dims' share of the removable energy, the controls'
    energy relative to the massive dims (energy-matched should be ≈ 1), the chosen layers."""
    info = run.dims
    out = ["## Dims edited", ""]
    for site, per in info["massive_dims"].items():
        n = sum(len(v) for v in per.values())
        out.append(f"- {site}: {n} entries selected as massive in {len(per)} layers, holding "
                   f"{100 * info['energy_share_of_massive'][site]:.1f}% of the site's removable "
                   f"energy ({info['removable_energy']}).")
    for site, share in info.get("prompt_top1_is_pooled_top1", {}).items():
        out.append(f"- {site}: a prompt's own top-1 dim per head is the pooled top-1 in "
                   f"{100 * share:.1f}% of (prompt, layer, head).")
    for cond, ratios in info.get("energy_ratio_to_massive", {}).items():
        out.append(f"- {cond}: removable energy = " + ", ".join(
            f"{r:.3f}× the massive dims' at {s}" for s, r in ratios.items()) + ".")
    out.append(f"- chosen layers: {info['chosen_layers']}.")
    return out


def write_disrupt_report(run: ScoredRun, out: Path, title: str) -> Path:
    """Figures (bars with controls side by side, first-token attention per layer) and report.md."""
    figs = [condition_figure(run, out, title), *sweep_figures(run, out, title)]
    sinks = {c: e.first_token_attention for c, e in run.conditions.items() if e.first_token_attention}
    if sinks:
        layer_lines(sinks, out, "first_token_attention", f"{title}: attention on the first token",
                    "mean attention probability on key 0")
        figs.append("first_token_attention.png")
    d = run.definition
    lines = [f"# {title}", "", "## Definition and set-up (fixed before the run)", "",
             f"- Statistics: **{run.statistics or 'pooled'}** — {d.get('statistics', '')}.",
             f"- Massive dims: {d.get('selected_by', '')}; "
             f"λ rule recorded: {d.get('rule', '')}.",
             f"- Edit: {d.get('edit', '')}.",
             f"- Model: {run.model_name}; config in results.json.",
             *provenance_lines(run.provenance_record), "",
             *dims_lines(run), "",
             "## Accuracy (%) — the paper's table shape", "",
             f"Every item of every task. Seeded controls are pooled over seeds (per-seed rows below). "
             f"rank = the gold choice scores highest (ranking: {run.ranking or 'sum'} of the "
             "choice's token log-likelihoods; chance 1/K); exact = greedy decoding emits the answer "
             "(chance: 0, or 1/#pairs for key→value recall, where copying any listed value counts). "
             "95% Wilson intervals in brackets.", "",
             main_table(run, ci=True), "",
             "### On the items the unmodified model gets right", "",
             main_table(run, known=True), "",
             "## Claims", ""]
    lines += [f"- {n}" for n in run.notes or []] + claim_lines(run.claims)
    lines += ["", "## Every condition × task", "", detail_table(run), ""]
    lines += [f"![{f}]({f})" for f in figs]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
