"""``mvjax experiment rope-cause-seeds``'s report.md (per arm, per seed, concentration) and its
null.png (each seed's random controls beside the original and the massive edit)."""

from __future__ import annotations

from pathlib import Path
import numpy as np

from mvjax.analysis.experiments.rope_cause_seeds.results import SeedsDecision


def _pct(k: int | None, n: int | None) -> str:
    return "n/a" if k is None or not n else f"{100 * k / n:.0f}"


def report(decided: SeedsDecision) -> str:
    """Markdown: per seed, per arm across seeds, and the concentration measures."""
    lines = ["# Claim (5) across training seeds", "",
             f"Rule (fixed before the runs, `RULE.md`): {decided.rule}", "",
             f"Replacement seeds (`RULE-replacement.md`, fixed before any seed above 2 ran): "
             f"{decided.replacement_rule}.", "",
             f"**Claim (5), by the RoPE θ=1e4 arm: {decided.claim_5}.**", "",
             "## Per arm", "", "| arm | seeds | per-seed verdicts | verdict |", "|---|---|---|---|"]
    for arm, a in decided.arms.items():
        per = ", ".join(f"s{s}: {o.verdict}" for s, o in a.seeds.items())
        lines.append(f"| {arm} | {len(a.seeds)} | {per} | **{a.verdict}** ({a.detail}) |")
    lines += ["", "## Per seed (contextual exact match, % of the held-out episodes)", "",
              "| arm | seed | original | massive | random controls: median [min, max] (n) | p | "
              "energy-matched | lowest-norm | retention ctx / par | massive − original [95% paired CI], "
              "McNemar p | verdict | old rule |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm, a in decided.arms.items():
        for s, o in a.seeds.items():
            n, null = o.n, o.null
            nul = (f"{_pct(int(np.median(null)), n)} [{_pct(min(null), n)}, {_pct(max(null), n)}] "
                   f"({len(null)})") if null else "n/a"
            pr = o.paired_massive_vs_original
            paired = (f"{100 * pr['difference']:+.0f} [{100 * pr['ci95'][0]:+.0f}, "
                      f"{100 * pr['ci95'][1]:+.0f}], {pr['mcnemar_p']:.2g}") if pr else "n/a"
            ret = " / ".join("n/a" if r is None else f"{r:.2f}"
                             for r in (o.contextual_retention, o.parametric_retention))
            p = "n/a" if o.p_null is None else f"{o.p_null:.3f}"
            lines.append(f"| {arm} | {s} | {_pct(o.original, n)} | {_pct(o.massive, n)} | {nul} | "
                         f"{p} | {', '.join(_pct(e, n) for e in o.energy_matched)} | "
                         f"{_pct(o.lowest_norm, n)} | {ret} | {paired} | {o.verdict} | {o.old_rule} |")
    lines += ["", "## Concentration: λ=5 counts and the top dim's share of its head's energy", "",
              "Natural-text norms of the final model. The top-dim share means the same at every head "
              "size (flat = 1/head_dim); the λ=5 count does not (its bar on the top dim's share moves "
              "with head_dim).", "",
              "| arm | seed | head_dim | λ=5 Q / K (post-positional) | top share K: max, per-layer mean | "
              "top share Q: max | flat |", "|---|---|---|---|---|---|---|"]
    for arm, a in decided.arms.items():
        for s, o in a.seeds.items():
            c = o.concentration
            q, k = c.get("q_rot", {}), c.get("k_rot", {})
            lines.append(f"| {arm} | {s} | {c['head_dim']} | {q.get('n_massive_lambda5')} / "
                         f"{k.get('n_massive_lambda5')} | {k.get('top_share_max')}, "
                         f"{k.get('top_share_mean_per_layer')} | {q.get('top_share_max')} | "
                         f"{k.get('flat')} |")
    lines += ["", "![null distributions](null.png)", ""]
    return "\n".join(lines)


def null_figure(decided: SeedsDecision, path: Path) -> Path:
    """Per arm, per seed: the random controls' contextual accuracies (the null), the
    energy-matched and lowest-norm controls, the original and the massive edit."""
    import matplotlib  # local: matplotlib is heavy and only drawing this figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # local: as matplotlib

    arms = decided.arms
    fig, axes = plt.subplots(1, len(arms), figsize=(3.2 * len(arms), 3.6), squeeze=False, sharey=True)
    rng = np.random.default_rng(0)  # jitter only
    for ax, (arm, a) in zip(axes[0], arms.items()):
        for i, (_s, o) in enumerate(a.seeds.items()):
            n = o.n or 1
            null = np.asarray(o.null, float) / n
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(null)), null, s=8, color="0.6",
                       label="random (pair-aware)" if i == 0 else None)
            ax.scatter([i + 0.25] * len(o.energy_matched), np.asarray(o.energy_matched) / n,
                       marker="^", color="tab:blue", label="energy-matched" if i == 0 else None)
            if o.lowest_norm is not None:
                ax.scatter(i + 0.25, o.lowest_norm / n, marker="s", color="tab:green",
                           label="lowest-norm" if i == 0 else None)
            ax.hlines((o.original or 0) / n, i - 0.3, i + 0.3, color="black",
                      label="original" if i == 0 else None)
            ax.scatter(i, (o.massive or 0) / n, marker="X", s=70, color="tab:red", zorder=3,
                       label="massive" if i == 0 else None)
        ax.set_xticks(range(len(a.seeds)), [f"seed {s}" for s in a.seeds])
        ax.set_title(f"{arm}: {a.verdict}", fontsize=9)
        ax.set_ylim(-0.03, 1.03)
    axes[0][0].set_ylabel("contextual exact match")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7)  # below: hides no point
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
