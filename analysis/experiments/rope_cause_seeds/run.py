"""``mvjax experiment rope-cause-seeds``: claim (5) decided with training seeds as units.

Reads the per-(arm, seed) rope-cause runs under ROOT (``ROOT/<arm>/seed<s>/results.json``, as
``docs/rope-cause-seeds/run_seeds.sh`` lays them out) and applies the rule fixed before the runs
(``docs/rope-cause-seeds/RULE.md``, ``RULE`` in ``analysis.experiments.rope_cause_seeds.claims``): per seed, the massive edit against a null
distribution of pair-aware random controls (its empirical p), the energy-matched and lowest-norm
controls and the contextual-vs-parametric retention; per arm, the seeds' verdicts combined. Writes
ROOT/seeds.json, ROOT/report.md and ROOT/null.png.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from mvjax.analysis.claims import NOT_TESTED
from mvjax.analysis.experiments.rope_cause.presets import ARMS
from mvjax.analysis.experiments.rope_cause_seeds.claims import REPLACEMENT_RULE, RULE, arm_outcome, seed_outcome
from mvjax.analysis.experiments.rope_cause_seeds.report import null_figure, report
from mvjax.analysis.experiments.rope_cause_seeds.results import ArmSeeds, SeedRun, SeedsDecision
from mvjax.analysis.massive import top_share
from mvjax.atomic import read_json_state, write_json


def concentration(arm: SeedRun) -> dict[str, Any]:
    """λ=5 counts beside the head-size-free measure (top dim's share of its head's energy) on the
    final model's natural-text norms, per site: the mean over heads per layer and the largest."""
    out: dict[str, Any] = {"head_dim": arm.head_dim}
    for site, M in arm.final_M.items():
        shares = [top_share(np.asarray(m)) for m in M]
        out[site] = {"n_massive_lambda5": arm.final_counts.get(site, {}).get("n_massive"),
                     "top_share_mean_per_layer": [round(float(s.mean()), 4) for s in shares],
                     "top_share_max": round(float(max(s.max() for s in shares)), 4),
                     "flat": round(1 / arm.head_dim, 4)}
    return out


def load_runs(root: Path) -> dict[str, dict[int, SeedRun]]:
    """{arm: {seed: the arm's record in that seed's results.json}} for every run under ROOT."""
    runs: dict[str, dict[int, SeedRun]] = {}
    for path in sorted(root.glob("*/seed*/results.json")):
        arm, seed = path.parent.parent.name, int(path.parent.name.removeprefix("seed"))
        data = read_json_state(path, "rerun run_seeds.sh for that arm and seed")
        if arm not in data.get("arms", {}):
            raise ValueError(f"{path} holds no arm {arm!r} (it has {list(data.get('arms', {}))}): "
                             "put each run's results under ROOT/<arm>/seed<s>/")
        runs.setdefault(arm, {})[seed] = SeedRun.from_json(data["arms"][arm])
    if not runs:
        raise FileNotFoundError(f"no ROOT/<arm>/seed<s>/results.json under {root}: run "
                                "docs/rope-cause-seeds/run_seeds.sh first")
    return {a: dict(sorted(runs[a].items())) for a in ARMS if a in runs}


def decide(runs: dict[str, dict[int, SeedRun]]) -> SeedsDecision:
    """Every seed's outcome and concentration, every arm's verdict, the claim's verdict."""
    arms: dict[str, ArmSeeds] = {}
    for arm, seeds in runs.items():
        outcomes = {s: dataclasses.replace(seed_outcome(seeds[s].accuracy), concentration=concentration(seeds[s]))
                    for s in sorted(seeds)}
        verdict, detail, deciding = arm_outcome({s: o.verdict for s, o in outcomes.items()})
        arms[arm] = ArmSeeds(outcomes, verdict, detail, deciding)
    claim = arms["rope"].verdict if "rope" in arms else NOT_TESTED
    return SeedsDecision(RULE, REPLACEMENT_RULE, arms, claim)


def run(root: str | Path) -> SeedsDecision:
    root = Path(root)
    decided = decide(load_runs(root))
    write_json(root / "seeds.json", decided.to_json())
    null_figure(decided, root / "null.png")
    (root / "report.md").write_text(report(decided))
    return decided
