"""The disruption claims' rules, each a pure function of a scored run (``analysis.records``) that
returns one sentence
(verdict, numbers, and the rule itself). Every comparison is between counts with 95% intervals:
Wilson for one accuracy, Newcombe's hybrid score interval for a difference. Rules never divide by
a margin that can be near chance.

Pooling a kind (contextual / parametric) adds up its tasks' items under each task's main metric
(rank when the task has choices, else greedy exact); its chance is the item-weighted mean.
"""

from __future__ import annotations

import math

from typing import Callable

from mvjax.analysis.claims import Claim, Outcome
from mvjax.analysis.formatting import signed_interval
from mvjax.analysis.records import Score, ScoredRun
from mvjax.data.tasks.base import difference_interval, wilson_interval

Cell = Callable[[ScoredRun, str, str, str], "Score | None"]  # (run, column, task, metric) -> score


def main_metric(run: ScoredRun, task: str) -> str:
    return run.main_metric(task)


def summary(run: ScoredRun, cond: str, task: str, known: bool = False,
            metric: str | None = None) -> Score | None:
    """A condition's score on a task by ``metric`` (default: its main metric), on every item or
    on the known ones."""
    return run.conditions[cond].score(task, metric or run.main_metric(task), known)


def pooled_kind(run: ScoredRun, cond: str, kind: str, known: bool = False,
                metric: str | None = None) -> tuple[int, int, float]:
    """(correct, n, chance) over every task of ``kind`` (seeded columns: pass the column's first
    seed's name — pooling over seeds happens in the report)."""
    k = n = 0
    chance = 0.0
    for t in run.tasks_of(kind):
        s = summary(run, cond, t, known, metric)
        if s is not None:
            k, n, chance = k + s.correct, n + s.n, chance + s.chance * s.n
    return k, n, (chance / n if n else float("nan"))


def retained_share(k: int, n: int, chance: float) -> tuple[float, float, float]:
    """On items the original gets right: (share kept above chance, CI) = (p − c) / (1 − c) with
    p's Wilson interval mapped through the same line (1 − c ≥ 1/2 for ≥ 2 choices: stable)."""
    lo, hi = wilson_interval(k, n)
    f = lambda p: (p - chance) / (1 - chance)  # noqa: E731
    return f(k / n), f(lo), f(hi)


def parametric_survives_known(run: ScoredRun, cond: str = "massive") -> Outcome:
    """Reading 1: both kinds on the items the original gets right."""
    kc, nc, cc = pooled_kind(run, cond, "contextual", known=True)
    kp, np_, cp = pooled_kind(run, cond, "parametric", known=True)
    if not nc or not np_:
        return Outcome({}, None, "one kind has no item the original gets right")
    rc, rp = retained_share(kc, nc, cc), retained_share(kp, np_, cp)
    return Outcome({"parametric": {"share": rp, "n": np_}, "contextual": {"share": rc, "n": nc}},
                   rp[1] > rc[2],
                   f"on items the original gets right, share kept above chance: parametric "
                   f"{rp[0]:.2f} [{rp[1]:.2f}, {rp[2]:.2f}] (n={np_}) vs contextual {rc[0]:.2f} "
                   f"[{rc[1]:.2f}, {rc[2]:.2f}] (n={nc})")


def kind_drop(run: ScoredRun, cond: str, kind: str,
              metric: str | None = None) -> tuple[float, float, float, int] | None:
    ko, n, _ = pooled_kind(run, "original", kind, metric=metric)
    kd, n2, _ = pooled_kind(run, cond, kind, metric=metric)
    return None if not n or n != n2 else (*difference_interval(ko, n, kd, n), n)


def drop_difference(dc: tuple, dp: tuple) -> tuple[float, float]:
    """(contextual drop − parametric drop, its lower 95% bound: half-widths added in quadrature)."""
    diff = dc[0] - dp[0]
    return diff, diff - math.hypot(dc[0] - dc[1], dp[2] - dp[0])


def parametric_survives_all(run: ScoredRun, cond: str = "massive") -> Outcome:
    """Reading 2: both kinds on every item: the contextual drop (points) exceeds the parametric
    one, with the difference's interval (half-widths added in quadrature) above 0."""
    dc, dp = kind_drop(run, cond, "contextual"), kind_drop(run, cond, "parametric")
    if dc is None or dp is None:
        return Outcome({}, None, "a kind is missing")
    diff, lo = drop_difference(dc, dp)
    return Outcome({"contextual_drop": dc, "parametric_drop": dp, "difference": diff, "lower": lo},
                   lo > 0, f"on every item, drop original → {cond}: contextual {signed_interval(*dc[:3])} points "
                   f"(n={dc[3]}), parametric {signed_interval(*dp[:3])} (n={dp[3]}); difference "
                   f"{100 * diff:+.1f}, lower bound {100 * lo:+.1f}")


PARAMETRIC_SURVIVES = [
    Claim("parametric_survives_known", "Parametric knowledge survives the massive disruption better "
          "than contextual (reading 1: items the original gets right)", "the parametric share kept "
          "above chance, (p − chance) / (1 − chance), has its 95% interval wholly above the "
          "contextual one", parametric_survives_known),
    Claim("parametric_survives_all", "Parametric knowledge survives the massive disruption better "
          "than contextual (reading 2: every item)", "the contextual drop in points exceeds the "
          "parametric drop, the difference's 95% interval above 0", parametric_survives_all),
]


def control_costs_less(col: str, cell: Cell) -> Claim:
    """A control costs less than the massive edit on every task where the massive edit costs
    something (original − massive interval above 0); tasks at floor or unaffected cannot decide.
    ``cell(run, col, task, metric)`` reads a column (seeded controls pooled over seeds)."""
    def check(run: ScoredRun) -> Outcome:
        decided, lines, numbers = [], [], {}
        for t in run.tasks:
            m = run.main_metric(t)
            o, ms, c = (cell(run, x, t, m) for x in ("original", "massive", col))
            if o is None or ms is None or c is None or o.n != ms.n:
                continue
            d_mass = difference_interval(o.correct, o.n, ms.correct, ms.n)
            if d_mass[1] <= 0:
                continue
            gap = difference_interval(c.correct, c.n, ms.correct, ms.n)
            decided.append(gap[1] > 0)
            numbers[t] = {"massive_drop": d_mass, "control_minus_massive": gap}
            lines.append(f"{t} massive drop {signed_interval(*d_mass)}, {col} − massive {signed_interval(*gap)}")
        if not decided:
            return Outcome({}, None, "on no task does the massive edit cost accuracy with 95% confidence")
        return Outcome(numbers, all(decided), "; ".join(lines) + " (points)")
    return Claim(f"control_{col}", f"Control {col} costs less than the massive edit on every task "
                 "the massive edit hurts", "on each task whose original − massive interval lies above "
                 "0, the control's accuracy exceeds the massive edit's with the difference's 95% "
                 "interval above 0", check)
