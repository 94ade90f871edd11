"""``mvjax experiment rope-cause-seeds``: claim (5) decided with training seeds as units.

Reads the per-(arm, seed) rope-cause runs under ROOT (``ROOT/<arm>/seed<s>/results.json``, as
``docs/rope-cause-seeds/run_seeds.sh`` lays them out) and applies the rule fixed before the runs
(``docs/rope-cause-seeds/RULE.md``, ``RULE`` below): per seed, the massive edit against a null
distribution of pair-aware random controls (its empirical p), the energy-matched and lowest-norm
controls and the contextual-vs-parametric retention; per arm, the seeds' verdicts combined. Writes
ROOT/seeds.json, ROOT/report.md and ROOT/null.png.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from mvjax.analysis.claims import FAILS, HOLDS, NOT_TESTED, verdict_of
from mvjax.analysis.experiments.rope_cause import ARMS
from mvjax.analysis.experiments.rope_cause_results import arm_disruption, retention
from mvjax.analysis.massive import top_share
from mvjax.analysis.statistics import empirical_p, paired_difference
from mvjax.atomic import read_json_state, write_json

MIN_SOLVED = 20  # contextual episodes the unmodified arm must solve for a seed to be tested
MIN_NULL = 50  # pair-aware random controls the null distribution needs
ALPHA = 0.05
RULE = (f"per seed: not tested when the unmodified arm solves fewer than {MIN_SOLVED} held-out "
        "contextual episodes or answers no fact; otherwise holds iff (a) the massive edit's "
        f"contextual correct count has empirical p ≤ {ALPHA} among ≥ {MIN_NULL} pair-aware random "
        "controls (p = (1 + #controls ≤ massive) / (n + 1)), (b) it is strictly below every "
        "energy-matched seed's and the lowest-norm control's, and (c) the massive edit keeps a "
        "smaller share of the contextual than of the parametric accuracy. Per arm: holds iff it "
        "holds in each of three tested seeds; does not hold iff it does not hold in at least two "
        "tested seeds; otherwise not tested. The claim's verdict is the RoPE θ=1e4 arm's.")


def _correct(acc: dict[str, Any], cond: str, kind: str = "contextual") -> int | None:
    entry = acc.get(cond, {}).get(kind)
    return None if entry is None else int(entry["correct"])


def seed_outcome(acc: dict[str, Any]) -> dict[str, Any]:
    """One seed's numbers and verdict by ``RULE`` from its {condition: {kind: accuracy}}."""
    hit = _correct(acc, "massive")
    null = [_correct(acc, c) for c in sorted(acc, key=_seed_key) if c.startswith("random_s")]
    energy = [_correct(acc, c) for c in sorted(acc, key=_seed_key) if c.startswith("energy_matched_s")]
    lowest = _correct(acc, "lowest_norm")
    orig_ctx, orig_par = acc["original"].get("contextual"), acc["original"].get("parametric")
    out: dict[str, Any] = {
        "original": orig_ctx["correct"] if orig_ctx else None, "n": orig_ctx["n"] if orig_ctx else None,
        "massive": hit, "null": null, "energy_matched": energy, "lowest_norm": lowest,
        "p_null": empirical_p(hit, null) if null and hit is not None else None,
        "contextual_retention": retention(acc, "massive", "contextual"),
        "parametric_retention": retention(acc, "massive", "parametric"),
        "old_rule": arm_disruption(acc)["verdict"]}
    hits = (orig_ctx or {}).get("hits"), acc.get("massive", {}).get("contextual", {}).get("hits")
    if all(hits):
        out["paired_massive_vs_original"] = paired_difference(*hits)
    if (orig_ctx is None or orig_ctx["correct"] < MIN_SOLVED or not orig_par
            or not orig_par["correct"] or len(null) < MIN_NULL or None in (
                out["contextual_retention"], out["parametric_retention"])):
        return out | {"verdict": NOT_TESTED}
    a = out["p_null"] <= ALPHA
    b = all(hit < e for e in energy) and lowest is not None and hit < lowest
    c = out["contextual_retention"] < out["parametric_retention"]
    return out | {"checks": {"null": a, "energy_and_lowest": b, "kinds": c},
                  "verdict": verdict_of(a and b and c)}


def _seed_key(cond: str) -> tuple[str, int]:
    m = re.fullmatch(r"(.*)_s(\d+)", cond)
    return (m.group(1), int(m.group(2))) if m else (cond, -1)


def arm_verdict(verdicts: list[str]) -> tuple[str, str]:
    """(verdict, detail) across seeds by ``RULE``."""
    tested = [v for v in verdicts if v != NOT_TESTED]
    if len(verdicts) >= 3 and len(tested) == len(verdicts) and all(v == HOLDS for v in tested):
        return HOLDS, f"holds in all {len(tested)} seeds"
    if sum(v == FAILS for v in tested) >= 2:
        return FAILS, f"does not hold in {sum(v == FAILS for v in tested)} of {len(tested)} tested seeds"
    if len(tested) < 2:
        return NOT_TESTED, f"fewer than two seeds tested ({len(tested)} of {len(verdicts)})"
    if len(verdicts) < 3:
        return NOT_TESTED, f"only {len(verdicts)} seeds run"
    if all(v == HOLDS for v in tested):
        return NOT_TESTED, (f"holds in all {len(tested)} tested seeds, but {len(verdicts) - len(tested)} "
                            "seed(s) not tested: the rule needs all three")
    return NOT_TESTED, "seeds disagree"


REPLACEMENT_SEEDS = (3, 4)  # RULE-replacement.md: run in order while seeds 0–2 hold an untested one
REPLACEMENT_RULE = ("an arm whose seeds 0–2 include an untested seed runs replacement seeds 3, then "
                    "4, until it has three tested seeds; the across-seed rule then reads the first "
                    "three tested seeds in seed order (fewer than three: seeds 0–2, as before)")


def decisive_seeds(verdicts: dict[int, str]) -> list[int]:
    """The seeds whose verdicts decide the arm (``RULE-replacement.md``): seeds 0–2; when one of
    them is not tested and replacement seeds (3, then 4) bring the tested seeds to three, the first
    three tested seeds in seed order."""
    first = [s for s in sorted(verdicts) if s < 3]
    tested = [s for s in sorted(verdicts) if verdicts[s] != NOT_TESTED
              and (s < 3 or s in REPLACEMENT_SEEDS)]
    if any(verdicts[s] == NOT_TESTED for s in first) and len(tested) >= 3:
        return tested[:3]
    return first


def arm_outcome(verdicts: dict[int, str]) -> tuple[str, str, list[int]]:
    """(verdict, detail, deciding seeds) of one arm from its {seed: verdict}."""
    seeds = decisive_seeds(verdicts)
    verdict, detail = arm_verdict([verdicts[s] for s in seeds])
    if seeds != [s for s in sorted(verdicts) if s < 3]:
        replaced = [s for s in sorted(verdicts) if s < 3 and s not in seeds]
        detail = (f"seeds {', '.join(map(str, seeds))} decide (seed {', '.join(map(str, replaced))} "
                  f"not tested, replaced): {detail}")
    return verdict, detail, seeds


def concentration(arm: dict[str, Any]) -> dict[str, Any]:
    """λ=5 counts beside the head-size-free measure (top dim's share of its head's energy) on the
    final model's natural-text norms, per site: the mean over heads per layer and the largest."""
    out: dict[str, Any] = {"head_dim": arm["head_dim"]}
    for site, M in arm.get("final_M", {}).items():
        shares = [top_share(np.asarray(m)) for m in M]
        out[site] = {"n_massive_lambda5": arm["final_counts"].get(site, {}).get("n_massive"),
                     "top_share_mean_per_layer": [round(float(s.mean()), 4) for s in shares],
                     "top_share_max": round(float(max(s.max() for s in shares)), 4),
                     "flat": round(1 / arm["head_dim"], 4)}
    return out


def load_runs(root: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """{arm: {seed: the arm's record in that seed's results.json}} for every run under ROOT."""
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted(root.glob("*/seed*/results.json")):
        arm, seed = path.parent.parent.name, int(path.parent.name.removeprefix("seed"))
        data = read_json_state(path, "rerun run_seeds.sh for that arm and seed")
        if arm not in data.get("arms", {}):
            raise ValueError(f"{path} holds no arm {arm!r} (it has {list(data.get('arms', {}))}): "
                             "put each run's results under ROOT/<arm>/seed<s>/")
        runs.setdefault(arm, {})[seed] = data["arms"][arm]
    if not runs:
        raise FileNotFoundError(f"no ROOT/<arm>/seed<s>/results.json under {root}: run "
                                "docs/rope-cause-seeds/run_seeds.sh first")
    return {a: dict(sorted(runs[a].items())) for a in ARMS if a in runs}


def decide(runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Every seed's outcome and concentration, every arm's verdict, the claim's verdict."""
    arms: dict[str, Any] = {}
    for arm, seeds in runs.items():
        outcomes = {s: seed_outcome(seeds[s]["disruption"]["accuracy"]) | {"concentration": concentration(seeds[s])}
                    for s in sorted(seeds)}
        verdict, detail, deciding = arm_outcome({s: o["verdict"] for s, o in outcomes.items()})
        arms[arm] = {"seeds": outcomes, "verdict": verdict, "detail": detail, "deciding_seeds": deciding}
    claim = arms.get("rope", {}).get("verdict", NOT_TESTED)
    return {"rule": RULE, "replacement_rule": REPLACEMENT_RULE, "arms": arms, "claim_5": claim}


def _pct(k: int | None, n: int | None) -> str:
    return "n/a" if k is None or not n else f"{100 * k / n:.0f}"


def report(decided: dict[str, Any]) -> str:
    """Markdown: per seed, per arm across seeds, and the concentration measures."""
    lines = ["# Claim (5) across training seeds", "",
             f"Rule (fixed before the runs, `RULE.md`): {decided['rule']}", "",
             f"Replacement seeds (`RULE-replacement.md`, fixed before any seed above 2 ran): "
             f"{decided['replacement_rule']}.", "",
             f"**Claim (5), by the RoPE θ=1e4 arm: {decided['claim_5']}.**", "",
             "## Per arm", "", "| arm | seeds | per-seed verdicts | verdict |", "|---|---|---|---|"]
    for arm, a in decided["arms"].items():
        per = ", ".join(f"s{s}: {o['verdict']}" for s, o in a["seeds"].items())
        lines.append(f"| {arm} | {len(a['seeds'])} | {per} | **{a['verdict']}** ({a['detail']}) |")
    lines += ["", "## Per seed (contextual exact match, % of the held-out episodes)", "",
              "| arm | seed | original | massive | random controls: median [min, max] (n) | p | "
              "energy-matched | lowest-norm | retention ctx / par | massive − original [95% paired CI], "
              "McNemar p | verdict | old rule |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm, a in decided["arms"].items():
        for s, o in a["seeds"].items():
            n, null = o["n"], o["null"]
            nul = (f"{_pct(int(np.median(null)), n)} [{_pct(min(null), n)}, {_pct(max(null), n)}] "
                   f"({len(null)})") if null else "n/a"
            pr = o.get("paired_massive_vs_original")
            paired = (f"{100 * pr['difference']:+.0f} [{100 * pr['ci95'][0]:+.0f}, "
                      f"{100 * pr['ci95'][1]:+.0f}], {pr['mcnemar_p']:.2g}") if pr else "n/a"
            ret = " / ".join("n/a" if r is None else f"{r:.2f}"
                             for r in (o["contextual_retention"], o["parametric_retention"]))
            p = "n/a" if o["p_null"] is None else f"{o['p_null']:.3f}"
            lines.append(f"| {arm} | {s} | {_pct(o['original'], n)} | {_pct(o['massive'], n)} | {nul} | "
                         f"{p} | {', '.join(_pct(e, n) for e in o['energy_matched'])} | "
                         f"{_pct(o['lowest_norm'], n)} | {ret} | {paired} | {o['verdict']} | {o['old_rule']} |")
    lines += ["", "## Concentration: λ=5 counts and the top dim's share of its head's energy", "",
              "Natural-text norms of the final model. The top-dim share means the same at every head "
              "size (flat = 1/head_dim); the λ=5 count does not (its bar on the top dim's share moves "
              "with head_dim).", "",
              "| arm | seed | head_dim | λ=5 Q / K (post-positional) | top share K: max, per-layer mean | "
              "top share Q: max | flat |", "|---|---|---|---|---|---|---|"]
    for arm, a in decided["arms"].items():
        for s, o in a["seeds"].items():
            c = o["concentration"]
            q, k = c.get("q_rot", {}), c.get("k_rot", {})
            lines.append(f"| {arm} | {s} | {c['head_dim']} | {q.get('n_massive_lambda5')} / "
                         f"{k.get('n_massive_lambda5')} | {k.get('top_share_max')}, "
                         f"{k.get('top_share_mean_per_layer')} | {q.get('top_share_max')} | "
                         f"{k.get('flat')} |")
    lines += ["", "![null distributions](null.png)", ""]
    return "\n".join(lines)


def null_figure(decided: dict[str, Any], path: Path) -> Path:
    """Per arm, per seed: the random controls' contextual accuracies (the null), the
    energy-matched and lowest-norm controls, the original and the massive edit."""
    import matplotlib  # local: matplotlib is heavy and only drawing this figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # local: as matplotlib

    arms = decided["arms"]
    fig, axes = plt.subplots(1, len(arms), figsize=(3.2 * len(arms), 3.6), squeeze=False, sharey=True)
    rng = np.random.default_rng(0)  # jitter only
    for ax, (arm, a) in zip(axes[0], arms.items()):
        for i, (_s, o) in enumerate(a["seeds"].items()):
            n = o["n"] or 1
            null = np.asarray(o["null"], float) / n
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(null)), null, s=8, color="0.6",
                       label="random (pair-aware)" if i == 0 else None)
            ax.scatter([i + 0.25] * len(o["energy_matched"]), np.asarray(o["energy_matched"]) / n,
                       marker="^", color="tab:blue", label="energy-matched" if i == 0 else None)
            if o["lowest_norm"] is not None:
                ax.scatter(i + 0.25, o["lowest_norm"] / n, marker="s", color="tab:green",
                           label="lowest-norm" if i == 0 else None)
            ax.hlines((o["original"] or 0) / n, i - 0.3, i + 0.3, color="black",
                      label="original" if i == 0 else None)
            ax.scatter(i, (o["massive"] or 0) / n, marker="X", s=70, color="tab:red", zorder=3,
                       label="massive" if i == 0 else None)
        ax.set_xticks(range(len(a["seeds"])), [f"seed {s}" for s in a["seeds"]])
        ax.set_title(f"{arm}: {a['verdict']}", fontsize=9)
        ax.set_ylim(-0.03, 1.03)
    axes[0][0].set_ylabel("contextual exact match")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7)  # below: hides no point
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(root: str | Path) -> dict[str, Any]:
    root = Path(root)
    decided = decide(load_runs(root))
    write_json(root / "seeds.json", decided)
    null_figure(decided, root / "null.png")
    (root / "report.md").write_text(report(decided))
    return decided


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rope-cause-seeds", help="claim (5) across training seeds: null distribution "
                       "of pair-aware controls, per-seed and per-arm verdicts")
    p.add_argument("--root", default="docs/rope-cause-seeds",
                   help="folder holding <arm>/seed<s>/results.json (default: docs/rope-cause-seeds)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    decided = run(args.root)
    print(json.dumps({"root": args.root, "claim_5": decided["claim_5"],
                      "arms": {a: v["verdict"] for a, v in decided["arms"].items()}}, indent=1))
    return 0
