"""The quantization claims' rules, each a pure function of a scored run (``analysis.records``):
does keeping the massive dims (rows) in full precision help the contextual tasks, and does it
help more than keeping as many random dims? Decided only when pooled 95% intervals separate, so
one flipped item never decides."""

from __future__ import annotations

import functools

from mvjax.analysis.claims import Claim, Outcome
from mvjax.analysis.experiments.disrupt.claims import pooled_kind
from mvjax.analysis.formatting import DASH, point_ci
from mvjax.analysis.records import ScoredRun
from mvjax.data.tasks.base import wilson_interval

# the second reading: passkey's 4-choice ranking is 100% under every condition, so under the main
# metrics 600 of the 1,000 contextual items cannot move; greedy exact match on every task can.
# Both readings were written before any full-preset quantization was scored.
READINGS = {None: ("", "each task's main metric, rank where it has choices"),
            "exact": ("_exact", "greedy exact match on every task")}


def kind_point(run: ScoredRun, cond: str, kind: str,
               metric: str | None = None) -> tuple[float, float, float, int] | None:
    """A kind's pooled accuracy (every item; each task's main metric unless ``metric``), its Wilson
    interval and n; None when the kind has no item."""
    k, n, _ = pooled_kind(run, cond, kind, metric=metric)
    return (k / n, *wilson_interval(k, n), n) if n else None


def kind_ci(run: ScoredRun, cond: str, kind: str,
            metric: str | None = None) -> tuple[str, tuple[float, float] | None]:
    """``kind_point`` as text, and its interval."""
    p = kind_point(run, cond, kind, metric)
    return (DASH, None) if p is None else (point_ci(p), (p[1], p[2]))


def kept_pairs(run: ScoredRun) -> list[tuple[str, str]]:
    """(setting, its twin with the massive dims kept) for every setting scored with its twin."""
    pairs = []
    for name, c in run.conditions.items():
        if name == "original" or c.kept is not None:
            continue
        twin = run.twin(name, "massive")
        if twin is not None:
            pairs.append((name, twin.name))
    return pairs


def random_twin(run: ScoredRun, name: str) -> str | None:
    """The keep-random control beside setting ``name`` (k random dims / rows kept), if scored."""
    twin = run.twin(name, "random")
    return None if twin is None else twin.name


def keeping_helps(name: str, kept: str, metric: str | None = None) -> Claim:
    """Claim: quantization ``name`` with the massive dims (rows) kept in full precision (``kept``)
    scores higher on the contextual tasks than without — decided only when the pooled contextual
    accuracies' 95% intervals are separated (one flipped item never decides). ``metric``: None
    pools each task's main metric, "exact" greedy exact match."""
    suffix, how = READINGS[metric]

    def check(run: ScoredRun) -> Outcome:
        ci = functools.partial(kind_ci, run, metric=metric)
        (a, ia), (b, ib) = ci(name, "contextual"), ci(kept, "contextual")
        orig_c = ci("original", "contextual")[0]
        pa, pb = ci(name, "parametric")[0], ci(kept, "parametric")[0]
        e, k = run.conditions[name], run.conditions[kept]
        ppl = (f"; perplexity {e.perplexity:.2f} → "
               f"{float('nan') if k.perplexity is None else k.perplexity:.2f}") if e.perplexity else ""
        held = None if ia is None or ib is None else ib[0] > ia[1]
        return Outcome({"contextual_ci95": {"quantized": ia, "kept": ib}}, held,
                       f"pooled contextual accuracy ({how}) {a} → {b} (original {orig_c}); "
                       f"parametric {pa} → {pb}{ppl}")
    return Claim(f"keep_{name}{suffix}", f"{name}: keeping the massive dims in full precision helps "
                 f"contextual tasks ({how})", "the pooled contextual accuracy's 95% interval with the "
                 "massive dims kept lies wholly above the one without", check)


def massive_beats_random(name: str, kept: str, random: str) -> Claim:
    """Claim: keeping the massive dims helps more than keeping as many random other dims (the
    keep-random control) — contextual tasks by greedy exact, intervals separated."""
    def check(run: ScoredRun) -> Outcome:
        (a, ia), (b, ib) = (kind_ci(run, c, "contextual", "exact") for c in (random, kept))
        held = None if ia is None or ib is None else ib[0] > ia[1]
        return Outcome({"contextual_ci95": {"random_kept": ia, "massive_kept": ib}}, held,
                       f"pooled contextual accuracy (greedy exact) keeping k random dims {a}, keeping "
                       f"the massive dims {b}")
    return Claim(f"massive_not_random_{name}", f"{name}: keeping the massive dims helps contextual "
                 "tasks more than keeping the same number of random other dims", "the pooled "
                 "contextual greedy-exact accuracy's 95% interval with the massive dims kept lies "
                 "wholly above the one with k random non-massive dims kept", check)
