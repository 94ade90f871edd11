"""``report.md`` of a rope-cause run: what this preset can show, the definitions, one table per
measurement (arms side by side, the reference last), the claims with their fixed rules and numbers,
then the figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mvjax.analysis.experiments.rope_cause.claims import below_every_seed, per_seed, pooled
from mvjax.analysis.experiments.rope_cause.results import ExactScore, RopeCauseResults
from mvjax.atomic import write_atomic


def _f(x: Any, fmt: str = ".2f") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, (int,)) and not isinstance(x, bool):
        return str(x)
    return format(float(x), fmt)


def arm_table(results: RopeCauseResults) -> str:
    """One row per arm (and the reference): λ counts, first layer, max/mean, band share,
    agreement, K/Q, sink mass, eval loss."""
    rows = ["| arm | head_dim | Q / K / V massive (λ=5) | first Q/K layer | Q / K / V max/mean "
            "(median over layers) | K max/mean max | Q / K low-band share | K top-pair agreement "
            "(chance) | K/Q max/mean | first-token mass (mean over layers) | eval loss |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    entries: list[tuple[str, Any]] = list(results.arms.items())
    if results.reference is not None:
        entries.append((f"**reference {results.reference.model}**", results.reference))
    for name, arm in entries:
        q, k, v = (arm.totals(s) for s in ("q_rot", "k_rot", "v"))
        firsts = [x for x in (q.first_massive_layer, k.first_massive_layer) if x is not None]
        sink = arm.final_first_token_mass
        kq = k.max_mean_median / q.max_mean_median if q.max_mean_median else None
        rows.append(
            f"| {name} | {arm.head_dim} | {q.n_massive} / {k.n_massive} / {v.n_massive} | "
            f"{min(firsts) if firsts else 'none'} | "
            f"{_f(q.max_mean_median)} / {_f(k.max_mean_median)} / {_f(v.max_mean_median)} | "
            f"{_f(k.max_mean_max)} | {_f(q.band_low_share_median)} / {_f(k.band_low_share_median)} | "
            f"{_f(k.top_pair_agreement)} ({_f(k.agreement_chance)}) | "
            f"{_f(kq)} | {_f(sum(sink) / len(sink) if sink else None)} | "
            f"{_f(getattr(arm, 'final_eval_loss', None), '.3f')} |")
    return "\n".join(rows)


def task_table(results: RopeCauseResults) -> str:
    rows = ["| arm | contextual accuracy (chance) | parametric accuracy (chance) | per task |",
            "|---|---|---|---|"]
    for name, arm in results.arms.items():
        k = arm.tasks["kinds"]

        def cell(kind: str, k: dict = k) -> str:
            return (f"{k[kind]['accuracy']:.2f} ({k[kind]['chance']:.3g}), n={k[kind]['n']}"
                    if kind in k else "n/a")
        per = ", ".join(f"{t} {v['accuracy']:.2f}" for t, v in arm.tasks["tasks"].items())
        rows.append(f"| {name} | {cell('contextual')} | {cell('parametric')} | {per} |")
    return "\n".join(rows)


DISRUPT_COLUMNS = ("original", "massive", "lambda_massive", "k_only", "q_only", "first_token_kept",
                   "random", "energy_matched", "lowest_norm")


def disruption_table(results: RopeCauseResults) -> str:
    """Per arm and kind, greedy exact-match accuracy [95% CI] under each condition; the random and
    energy-matched controls pooled over their seeds."""
    rows = ["| arm | kind | " + " | ".join(c.replace("_", " ") for c in DISRUPT_COLUMNS) + " |",
            "|---|---|" + "---|" * len(DISRUPT_COLUMNS)]
    for name, arm in results.arms.items():
        acc = arm.accuracy
        for kind in ("contextual", "parametric"):
            cells = []
            for c in DISRUPT_COLUMNS:
                score = acc.score(c, kind)
                v = pooled(acc, c, kind) if c in ("random", "energy_matched") else \
                    None if score is None else score.to_json()
                ci = f" [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]" if v and "ci95" in v else ""
                cells.append("n/a" if v is None else f"{v['accuracy']:.2f}{ci}")
            original = acc.score("original", kind)
            n = original.n if original else 0
            rows.append(f"| {name} | {kind} (n={n}) | {' | '.join(cells)} |")
    return "\n".join(rows)


def seed_table(results: RopeCauseResults) -> str:
    """Per arm, the massive contextual accuracy beside every random / energy-matched seed's, and
    whether its CI lies below each seed's CI (the stricter reading; the verdict follows the rule)."""
    def cell(v: ExactScore) -> str:
        ci = f" [{v.ci95[0]:.2f}, {v.ci95[1]:.2f}]" if v.ci95 is not None else ""
        return f"{v.accuracy:.2f}{ci}"

    rows = ["| arm | massive | random seeds | energy-matched seeds | massive below every seed |",
            "|---|---|---|---|---|"]
    for name, arm in results.arms.items():
        acc = arm.accuracy
        hit = acc.score("massive", "contextual")
        seeds = [", ".join(f"{c.rsplit('_s', 1)[1]}: {cell(ExactScore.from_json(v))}" for c, v in per_seed(acc, f, "contextual").items())
                 or "n/a" for f in ("random", "energy_matched")]
        below = {None: "n/a", True: "yes", False: "no"}[below_every_seed(acc)]
        rows.append(f"| {name} | {cell(hit) if hit else 'n/a'} | {seeds[0]} | {seeds[1]} | {below} |")
    return "\n".join(rows)


def per_layer_table(results: RopeCauseResults, site: str) -> str:
    rows = [f"| arm | {site}: λ=5 count per layer | max/mean (median over heads) per layer | "
            "low-band share per layer |", "|---|---|---|---|"]
    for name, arm in results.arms.items():
        f = arm.final[site]
        rows.append(f"| {name} | {' '.join(str(n) for n in f.column('n_massive'))} | "
                    f"{' '.join(_f(x, '.1f') for x in f.column('max_mean_median'))} | "
                    f"{' '.join(_f(x) for x in f.column('band_low_share_median'))} |")
    return "\n".join(rows)


def emergence_table(results: RopeCauseResults, columns: int = 6) -> str:
    """Q+K λ=5 count and K max/mean (max over layers and heads) at up to ``columns`` logged steps."""
    first = next(iter(results.arms.values())).curves
    n = len(first.steps)
    if n == 0:
        return "(no training logs)"
    picks = sorted({round(i * (n - 1) / max(columns - 1, 1)) for i in range(min(columns, n))})
    head = " | ".join(f"{first.tokens[i] / 1e6:.2f}M" for i in picks)
    rows = [f"| arm | {head} |", "|---|" + "---|" * len(picks)]
    for name, arm in results.arms.items():
        c = arm.curves
        qk = (c.series("q_rot", "n_massive") + c.series("k_rot", "n_massive")).sum(axis=0)
        k = c.series("k_rot", "max_mean_max").max(axis=0)
        cells = [f"{int(qk[i])} / {k[i]:.1f}" for i in picks]
        rows.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(rows)


def _first_k_entry(arm) -> int | None:
    """The first logged step with a λ-massive post-positional K entry in any layer."""
    cur = arm.curves
    if "k_rot" not in cur.sites:
        return None
    per_step = cur.series("k_rot", "n_massive").sum(axis=0)
    return next((cur.steps[i] for i, n in enumerate(per_step) if n), None)


def retrieval_table(results: RopeCauseResults) -> str:
    """Per arm: the first logged step with held-out retrieval at the level, the final probe
    numbers, and the first step with a K massive entry (does retrieval come with K's
    concentration?)."""
    rows = ["| arm | first step (tokens) with contextual exact ≥ level | passkey / kv exact at the "
            "end | answer NLL per token at the end | first step with a K λ=5 entry |",
            "|---|---|---|---|---|"]
    for name, arm in results.arms.items():
        r = arm.retrieval or {"points": []}
        if not r["points"]:
            rows.append(f"| {name} | not logged | | | {_f(_first_k_entry(arm))} |")
            continue
        end = r["points"][-1]
        first = ("never" if r["first_step"] is None
                 else f"{r['first_step']} ({r['first_tokens'] / 1e6:.2f}M)")
        rows.append(f"| {name} | {first} | {_f(end.get('passkey_exact'))} / "
                    f"{_f(end.get('kv_recall_exact'))} | {_f(end['all_answer_nll'], '.3f')} | "
                    f"{_f(_first_k_entry(arm)) if _first_k_entry(arm) is not None else 'none'} |")
    level = next((a.retrieval["level"] for a in results.arms.values() if a.retrieval), None)
    return "\n".join(rows) + f"\n\nLevel: {level}. Logged at every eval step on the held-out episodes."


def shared_settings(results: RopeCauseResults) -> dict[str, Any]:
    """The settings the report's set-up line names, from either preset schema: one with its own
    short names (``hidden``, ``batch``, …; results.json written before presets spoke the config's
    field names) or one of override strings (read from the first arm's recorded config)."""
    p = results.preset
    if "overrides" not in p:
        return p
    cfg = next(iter(results.arms.values())).config
    m, d, t = cfg["model"], cfg["data"], cfg["train"]
    return {"layers": m["num_layers"], "hidden": m["hidden_size"], "heads": m["num_heads"],
            "steps": t["steps"], "batch": d["batch_size"], "seq_len": d["seq_len"],
            "lr": t["optim"]["lr"], "schedule": t["optim"]["schedule"],
            "weight_decay": t["optim"]["weight_decay"], "source": d["source"],
            "mixture": d["mixture"]}


def _setup(results: RopeCauseResults) -> list[str]:
    p = results.preset | shared_settings(results)
    return [
        f"# RoPE as the cause of massive values — preset `{p['name']}`",
        "",
        f"**What this preset can and cannot show:** {p['what']}",
        "",
        f"Arms: {', '.join(results.arms)}; each {p['layers']} layers, hidden {p['hidden']}, "
        f"{p['heads']} heads (head_dim {p['hidden'] // p['heads']}), {p['steps']} steps × "
        f"{p['batch']}×{p['seq_len']} tokens = {p['steps'] * p['batch'] * p['seq_len'] / 1e6:.2f}M "
        f"tokens, lr {p['lr']:g} ({p['schedule']}), weight decay {p['weight_decay']:g}, "
        f"data {p['source']} (bytes) mixed {json.dumps(p['mixture'])}. Same seed and "
        f"data order for every arm. git {results.git_sha or 'unknown'}.",
        "",
        "## Definitions (fixed before the runs)",
        "",
        *[f"- **{k}**: {v if isinstance(v, str) else v.get('rule', v)}"
          for k, v in results.definitions.items()],
        "",
        "Q and K are read after RoPE (`q_rot`, `k_rot`, as the paper's code); pre-RoPE sites are in "
        "results.json. Final numbers come from `mvjax analyze` on each final model "
        f"({p['analyze_tokens']} tokens of natural text).",
    ]


def _measurements(results: RopeCauseResults) -> list[str]:
    return [
        "## Final models", "", arm_table(results), "", per_layer_table(results, "k_rot"), "",
        per_layer_table(results, "q_rot"), "",
        "## Over training (Q+K massive entries / K max/mean, max over layers and heads)", "",
        emergence_table(results), "",
        "## Tasks (held-out episodes; greedy exact match)", "", task_table(results), "",
        "## Retrieval over training (held-out contextual episodes, greedy exact)", "",
        retrieval_table(results), "",
        "## Disrupting each arm's own top-1 Q and K dims per head (claim 5)", "",
        "Mean-replaced after the positional transform in every layer, on the same held-out "
        "episodes; parametric counts only the facts the unmodified model answers (its original "
        "accuracy is 1 by construction).", "",
        disruption_table(results), "",
        "Each seed of the seeded controls on its own (contextual; the rule pools them, which treats "
        "seeds that land far apart as one binomial sample):", "",
        seed_table(results),
    ]


def write_report(results: RopeCauseResults, figures: dict[str, list[Path]], out: Path) -> Path:
    lines = [*_setup(results), "", *_measurements(results), "", "## Claims", ""]
    for key, c in results.claims.items():
        lines += [f"**({key}) {c.claim}** — *{c.verdict}*. Rule: {c.rule}.",
                  "", f"Numbers: `{json.dumps(c.numbers)}`", ""]
    lines += ["## Figures", ""]
    for name, paths in figures.items():
        if paths:  # a figure with nothing to draw in this run is left out
            lines += [f"### {name.replace('_', ' ')}", "", f"![{name}]({paths[0].relative_to(out)})", ""]
    return write_atomic(out / "report.md", "\n".join(lines))
