"""``report.md`` and figures for a disruption or quantization result: the table in the paper's
shape (original / massive disrupted / each control), the per-condition details with n and 95% CI,
and one plain sentence per claim — held or not, with its numbers. Claims are decided by fixed
rules stated in the sentence, never by looking at which way the numbers went."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mvjax.analysis.claims import Claim, Outcome, claim_lines
from mvjax.analysis.disrupt_rules import PARAMETRIC_SURVIVES, control_costs_less, main_metric
from mvjax.analysis.plots import condition_bars, condition_heatmap, layer_lines
from mvjax.provenance import provenance_lines

def _acc(result: dict, cond: str, task: str, metric: str = "rank", known: bool = False) -> dict | None:
    entry = result["conditions"][cond]
    per = entry.get("tasks_known", {}) if known else entry["tasks"]
    return per.get(task, {}).get(metric)


def _pct(s: dict | None) -> str:
    return "–" if s is None else f"{100 * s['accuracy']:.1f}"


def _ci(s: dict | None) -> str:
    return "–" if s is None else f"{100 * s['accuracy']:.1f} [{100 * s['ci95'][0]:.0f}, {100 * s['ci95'][1]:.0f}]"


def pooled(result: dict, prefix: str, task: str, metric: str, known: bool = False) -> dict | None:
    """Accuracy of a seeded control pooled over its seeds (items × seeds), with a Wilson CI."""
    from mvjax.data.tasks.base import accuracy_summary

    runs = [_acc(result, c, task, metric, known) for c in result["conditions"] if c.startswith(prefix)]
    runs = [r for r in runs if r is not None]
    if not runs:
        return None
    flags = [True] * sum(r["correct"] for r in runs) + [False] * sum(r["n"] - r["correct"] for r in runs)
    return accuracy_summary(flags, runs[0]["chance"])


def columns(result: dict) -> list[str]:
    """Conditions for the main table: seeded controls pooled into one column each."""
    cols, seen = [], set()
    for c in result["conditions"]:
        base = c.rsplit("_s", 1)[0] if c.rsplit("_s", 1)[-1].isdigit() else c
        if base not in seen:
            seen.add(base)
            cols.append(base)
    return cols


def cell(result: dict, col: str, task: str, metric: str, known: bool = False) -> dict | None:
    if col in result["conditions"]:
        return _acc(result, col, task, metric, known)
    return pooled(result, col + "_s", task, metric, known)


def metrics_of(result: dict, task: str) -> list[str]:
    """The metrics a task was scored by: rank (choices) first, then greedy exact (targets)."""
    return [m for m in ("rank", "exact") if _acc(result, "original", task, m) is not None]


def main_table(result: dict, known: bool = False, ci: bool = False) -> str:
    """Tasks × conditions (sweeps left to their figures); every item, or only the items the
    unmodified model gets right (``known``); with 95% CIs when ``ci``."""
    cols = [c for c in columns(result) if result["conditions"].get(c, {}).get("group") != "sweep"]
    fmt = _ci if ci else _pct
    rows = ["| task (metric, chance; n) | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for task, _t in result["tasks"].items():
        for metric in metrics_of(result, task):
            base = cell(result, "original", task, metric, known)
            if base is None:
                continue
            rows.append(f"| {task} ({metric}, {100 * base['chance']:.0f}%; n={base['n']}) | "
                        + " | ".join(fmt(cell(result, c, task, metric, known)) for c in cols) + " |")
    return "\n".join(rows)


def detail_table(result: dict) -> str:
    rows = ["| condition | task | n | rank acc % [95% CI] | above chance (pts) | greedy exact % [95% CI] |",
            "|---|---|---|---|---|---|"]
    for cond, entry in result["conditions"].items():
        for task, r in entry["tasks"].items():
            rk, ex = r.get("rank"), r.get("exact")
            n = (rk or ex or {"n": 0})["n"]
            above = "–" if rk is None else f"{100 * rk['above_chance']:+.1f}"
            rows.append(f"| {cond} | {task} | {n} | {_ci(rk)} | {above} | {_ci(ex)} |")
    return "\n".join(rows)


def _drop(result: dict, col: str, task: str) -> float | None:
    m = main_metric(result, task)
    a, b = cell(result, "original", task, m), cell(result, col, task, m)
    return None if a is None or b is None else 100 * (a["accuracy"] - b["accuracy"])


def disrupt_notes(result: dict) -> list[str]:
    """What the reader should know beside the claims: tasks the unmodified model does not clearly
    solve, a chosen-layers condition equal to 'massive', the perplexities."""
    out = []
    for t, v in result["tasks"].items():
        b = v["baseline_all_items"].get(main_metric(result, t))
        if b is not None and not b["clearly_above_chance"]:
            out.append(f"Caveat: the unmodified model is not clearly above chance on {t} "
                       f"({_ci(b)} vs chance {100 * b['chance']:.0f}%); its rows say little.")
    if "chosen_layers" in result["conditions"] and _kind(result, "contextual") and \
            len(result["dims"]["chosen_layers"]) == result["model_layers"]:
        out.append("Chosen layers: the rule picked every layer (each has a λ-massive entry), so "
                   "this condition equals 'massive'; pass --layers to compare a subset.")
    ppl = {c: e.get("perplexity") for c, e in result["conditions"].items() if e.get("perplexity")}
    if ppl:
        out.append("Held-out perplexity: " + ", ".join(f"{c} {v:.2f}" for c, v in ppl.items()) + ".")
    return out


def _kind(result: dict, kind: str) -> list[str]:
    return [t for t, v in result["tasks"].items() if v["kind"] == kind]


def breaks_contextual(task: str, metric: str) -> Claim:
    def check(result: dict) -> Outcome:
        a, b = cell(result, "original", task, metric), cell(result, "massive", task, metric)
        return Outcome({"original": a, "massive": b}, b["ci95"][1] < a["ci95"][0],
                       f"{_ci(a)} → {_ci(b)} (n={a['n']})")
    return Claim(f"massive_breaks_{task}_{metric}",
                 f"Disrupting the massive dims breaks contextual task {task} ({metric})",
                 "the 95% CIs do not overlap", check)


ABLATIONS = {  # condition: (claim words, whether most of the damage must go (≤ 50% left) or stay)
    "first_token_kept": ("Keeping position 0 intact (the sink) undoes", False),
    "k_only": ("Editing K alone reproduces", True), "q_only": ("Editing Q alone reproduces", True),
    "chosen_layers": ("Editing only the chosen layers reproduces", True)}


def ablation(name: str) -> Claim:
    words, reproduces = ABLATIONS[name]

    def check(result: dict) -> Outcome:
        ctx = _kind(result, "contextual")
        mass = [d for d in (_drop(result, "massive", t) for t in ctx) if d is not None]
        this = [d for d in (_drop(result, name, t) for t in ctx) if d is not None]
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


def disrupt_claims(result: dict) -> list[Claim]:
    """Every claim the result can test, each with its rule, numbers and verdict."""
    ctx, par = _kind(result, "contextual"), _kind(result, "parametric")
    todo = [breaks_contextual(t, m) for t in ctx for m in metrics_of(result, t)]
    todo += PARAMETRIC_SURVIVES if par and ctx else []
    for col in columns(result):
        if result["conditions"].get(col, {}).get("group", "control") != "control":
            continue  # pooled seeded columns are controls; named conditions say their group
        if any(_drop(result, col, t) is not None for t in result["tasks"]):
            todo.append(control_costs_less(col, cell))
    every_layer = len(result["dims"].get("chosen_layers") or ()) == result.get("model_layers")
    todo += [ablation(n) for n in ABLATIONS if n in result["conditions"] and ctx
             and not (n == "chosen_layers" and every_layer)]
    return [c.apply(result) for c in todo]


def condition_figure(result: dict, out: Path, title: str, cols: list[str] | None = None,
                     name: str = "accuracy_by_condition", what: str = "accuracy per condition") -> str:
    """Bars per task with every condition side by side (seeded controls pooled; sweeps left to
    their own figures): one panel by each task's main metric, one by greedy exact for the tasks
    that have choices (passkey's 4-choice ranking cannot move; its exact match can). Beyond 8
    conditions, where bars stop being readable, a heatmap of every task × metric. Returns the
    PNG's name."""
    cols = cols or [c for c in columns(result) if result["conditions"].get(c, {}).get("group") != "sweep"]

    def table(pairs) -> dict:
        return {f"{t} ({m})": {c: cell(result, c, t, m) for c in cols} for t, m in pairs}
    tasks = list(result["tasks"])
    if len(cols) > 8:
        condition_heatmap(table((t, m) for t in tasks for m in metrics_of(result, t)), cols, out, name,
                          f"{title}: {what}")
    else:
        ranked = [t for t in tasks if main_metric(result, t) == "rank" and "exact" in metrics_of(result, t)]
        condition_bars({"main metric": table((t, main_metric(result, t)) for t in tasks),
                        "greedy exact": table((t, "exact") for t in ranked)}, cols, out, name,
                       f"{title}: {what}")
    return f"{name}.png"


def sweep_figures(result: dict, out: Path, title: str) -> list[str]:
    """The top-k sweep (massive and lowest-norm at each k) and the layer sweep (massive dims in
    one third of the layers), one figure each, when the run has them."""
    conds, k0 = result["conditions"], result["config"]["top_k"]
    ks = sorted({k0, *result["config"].get("sweep_k", ())})
    figs = []
    if len(ks) > 1:
        name = lambda k, r: ({"massive": "massive", "lowest": "lowest_norm"}[r] if k == k0  # noqa: E731
                             else f"sweep_top{k}_{r}")
        cols = ["original"] + [name(k, r) for r in ("massive", "lowest") for k in ks]
        figs.append(condition_figure(result, out, title, [c for c in cols if c in conds], "topk_sweep",
                                     f"top-k per head edited, k = {ks}"))
    thirds = [c for c in conds if c.startswith("sweep_layers_")]
    if thirds:
        figs.append(condition_figure(result, out, title, ["original", "massive", *thirds], "layer_sweep",
                                     "massive dims edited in one third of the layers"))
    return figs


def dims_lines(result: dict) -> list[str]:
    """What was edited: counts, the massive dims' share of the removable energy, the controls'
    energy relative to the massive dims (energy-matched should be ≈ 1), the chosen layers."""
    info = result["dims"]
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


def write_disrupt_report(result: dict, out: Path, title: str) -> Path:
    """Figures (bars with controls side by side, first-token attention per layer) and report.md."""
    figs = [condition_figure(result, out, title), *sweep_figures(result, out, title)]
    sinks = {c: e["first_token_attention"] for c, e in result["conditions"].items()
             if e.get("first_token_attention")}
    if sinks:
        layer_lines(sinks, out, "first_token_attention", f"{title}: attention on the first token",
                    "mean attention probability on key 0")
        figs.append("first_token_attention.png")
    d = result["definition"]
    lines = [f"# {title}", "", "## Definition and set-up (fixed before the run)", "",
             f"- Statistics: **{result.get('statistics', 'pooled')}** — {d.get('statistics', '')}.",
             f"- Massive dims: {d.get('selected_by', '')}; "
             f"λ rule recorded: {d.get('rule', '')}.",
             f"- Edit: {d.get('edit', '')}.",
             f"- Model: {result.get('model', {}).get('name', '')}; config in results.json.",
             *provenance_lines(result.get("provenance", {})), "",
             *dims_lines(result), "",
             "## Accuracy (%) — the paper's table shape", "",
             f"Every item of every task. Seeded controls are pooled over seeds (per-seed rows below). "
             f"rank = the gold choice scores highest (ranking: {result.get('ranking', 'sum')} of the "
             "choice's token log-likelihoods; chance 1/K); exact = greedy decoding emits the answer "
             "(chance: 0, or 1/#pairs for key→value recall, where copying any listed value counts). "
             "95% Wilson intervals in brackets.", "",
             main_table(result, ci=True), "",
             "### On the items the unmodified model gets right", "",
             main_table(result, known=True), "",
             "## Claims", ""]
    lines += [f"- {n}" for n in result.get("notes", [])] + claim_lines(result["claims"])
    lines += ["", "## Every condition × task", "", detail_table(result), ""]
    lines += [f"![{f}]({f})" for f in figs]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
