"""The rule of ``mvjax experiment rope-cause-seeds`` (``RULE``, fixed before the runs in
``docs/rope-cause-seeds/RULE.md``; ``REPLACEMENT_RULE`` in ``RULE-replacement.md``): one seed's
outcome from its typed accuracies (``ArmAccuracy``), an arm's verdict across its seeds."""

from __future__ import annotations

import dataclasses
import re

from mvjax.analysis.claims import FAILS, HOLDS, NOT_TESTED, verdict_of
from mvjax.analysis.experiments.rope_cause.claims import arm_disruption, retention
from mvjax.analysis.experiments.rope_cause.results import ArmAccuracy
from mvjax.analysis.experiments.rope_cause_seeds.results import SeedOutcome
from mvjax.analysis.statistics import empirical_p, paired_difference


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


def _correct(acc: ArmAccuracy, cond: str, kind: str = "contextual") -> int | None:
    entry = acc.score(cond, kind)
    return None if entry is None else int(entry.correct)


def seed_outcome(acc: ArmAccuracy) -> SeedOutcome:
    """One seed's numbers and verdict by ``RULE`` from its accuracies per condition and kind."""
    hit = _correct(acc, "massive")
    null = [_correct(acc, c) for c in sorted(acc.conditions, key=_seed_key) if c.startswith("random_s")]
    energy = [_correct(acc, c) for c in sorted(acc.conditions, key=_seed_key) if c.startswith("energy_matched_s")]
    lowest = _correct(acc, "lowest_norm")
    orig_ctx, orig_par = acc.score("original", "contextual"), acc.score("original", "parametric")
    p_null = empirical_p(hit, null) if null and hit is not None else None
    ctx_kept, par_kept = retention(acc, "massive", "contextual"), retention(acc, "massive", "parametric")
    massive_ctx = acc.score("massive", "contextual")
    hits = orig_ctx.hits if orig_ctx else None, massive_ctx.hits if massive_ctx else None
    out = SeedOutcome(
        original=orig_ctx.correct if orig_ctx else None, n=orig_ctx.n if orig_ctx else None,
        massive=hit, null=null, energy_matched=energy, lowest_norm=lowest, p_null=p_null,
        contextual_retention=ctx_kept, parametric_retention=par_kept,
        old_rule=arm_disruption(acc)["verdict"], verdict=NOT_TESTED,
        paired_massive_vs_original=paired_difference(*hits) if all(hits) else None)
    if (orig_ctx is None or orig_ctx.correct < MIN_SOLVED or not orig_par
            or not orig_par.correct or len(null) < MIN_NULL or None in (ctx_kept, par_kept)):
        return out
    a = p_null <= ALPHA
    b = all(hit < e for e in energy) and lowest is not None and hit < lowest
    c = ctx_kept < par_kept
    return dataclasses.replace(out, checks={"null": a, "energy_and_lowest": b, "kinds": c},
                               verdict=verdict_of(a and b and c))


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
