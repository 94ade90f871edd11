"""The band rules, fixed before the runs: the first (``RULE``, ``docs/rope-band/RULE.md``: per
base, does W / context stay put across contexts?) and the second, which decides (``SLOPE_RULE``,
``docs/rope-band/RULE-slope.md``: the slope of log W on log C with a bootstrap interval; the law
as an ``analysis.claims.Claim``), applied to ``Band`` records."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import numpy as np

from mvjax.analysis.claims import Claim, Outcome
from mvjax.analysis.experiments.band.results import Band, seeds_of

RULE = ("Per run: at the last logged step, each (layer, K head)'s strongest RoPE pair by pair energy "
        "(site k); W = median wavelength over layers x heads, P = median pair index, R = W / context. "
        "Per base across contexts: 'follows the context' if max R / min R <= 1.5 and P is not the same "
        "at all contexts; 'follows the pair index' if P is the same at all contexts (within +-1) and "
        "max R / min R > 1.5; otherwise 'neither'. The law holds if both bases follow the context, "
        "fails if either follows the pair index, else undecided.")
RATIO_TOLERANCE = 1.5
# The second rule (docs/rope-band/RULE-slope.md), fixed before the seeded sweep: the slope of
# log W against log C per base, W each (layer ≥ 1, K head)'s strongest pair's wavelength, with a
# bootstrap interval over seeds and heads. It decides; the first rule above is still reported.
SLOPE_RULE = ("Per base θ: fit the least-squares slope of log W on log C over every (run, layer ≥ 1, "
              "K head), W that head's strongest K pair's wavelength at the run's last logged step, C "
              "the training context; its 95% interval is the 2.5-97.5 percentile of 2,000 bootstrap "
              "refits that resample seeds, then (layer, head) units within each resampled seed, with "
              "replacement. 'follows the context' when the interval holds 1 and excludes 0; 'fixed in "
              "frequency' when it holds 0 and excludes 1; otherwise 'undecided' (needs two contexts "
              "and two seeds). The law (the band follows the context) holds when every base follows "
              "the context, does not hold when any base is fixed in frequency, else is not tested.")
SLOPE_VERDICTS = ("follows the context", "fixed in frequency", "undecided")
BOOTSTRAP = 2000


@dataclass(frozen=True)
class BaseVerdict:
    """The first rule (``RULE``) for one base θ across contexts: per context, W / context and the
    median pair; their spread; the base's verdict ("follows the context", "follows the pair
    index", "neither")."""
    contexts: list[int]
    runs: list[str]
    wavelength_over_context: list[float]
    median_pair: list[float]
    ratio_spread: float
    verdict: str


@dataclass(frozen=True)
class FirstRule:
    """The first rule applied per base, and the law in the rule's own words (``RULE``, fixed in
    docs/rope-band/RULE.md before the runs: holds / fails / undecided — kept, not ``Claim``'s
    words, since the committed pages quote them; the slope rule, which decides, is a ``Claim``)."""
    per_base: dict[str, BaseVerdict]
    law: str

    def to_json(self) -> dict[str, Any]:
        return {"rule": RULE, "per_base": {t: asdict(v) for t, v in self.per_base.items()}, "law": self.law}


def verdict_for_base(bands: Sequence[Band]) -> BaseVerdict:
    """The fixed rule for one base across contexts (needs at least two contexts)."""
    bands = sorted(bands, key=lambda b: b.context)
    if len({b.context for b in bands}) < 2:
        raise ValueError("the rule compares contexts: give runs at two or more context lengths")
    R = [b.median_wavelength() / b.context for b in bands]
    P = [b.median_pair() for b in bands]
    spread = max(R) / min(R)
    same_pair = max(P) - min(P) <= 1
    if spread <= RATIO_TOLERANCE and max(P) != min(P):
        verdict = "follows the context"
    elif same_pair and spread > RATIO_TOLERANCE:
        verdict = "follows the pair index"
    else:
        verdict = "neither"
    return BaseVerdict([b.context for b in bands], [b.name for b in bands], R, P, spread, verdict)


def by_base(bands: Sequence[Band]) -> dict[str, list[Band]]:
    """Runs grouped by their layer-0 θ (as ``f"{θ:g}"``), in increasing θ."""
    groups: dict[float, list[Band]] = {}
    for b in bands:
        groups.setdefault(b.theta[0], []).append(b)
    return {f"{theta:g}": group for theta, group in sorted(groups.items())}


def by_base_and_seed(bands: Sequence[Band]) -> dict[str, list[Band]]:
    """Runs grouped by base θ, and by seed where a base has runs of more than one seed: the first
    rule compares one run per context, so a seeded sweep is read one seed at a time."""
    out: dict[str, list[Band]] = {}
    for theta, group in by_base(bands).items():
        seeds = seeds_of(group)
        if len(seeds) == 1:
            out[theta] = group
            continue
        for s in seeds:
            out[f"{theta} seed {s}"] = [b for b in group if b.seed == s]
    return out


def verdict(bands: Sequence[Band]) -> FirstRule:
    """The rule applied per base θ (runs grouped by their layer-0 θ; per seed too in a seeded
    sweep), then the law."""
    # a seed (or base) with one context so far is left out (a sweep in progress); none left: refused
    groups = {k: g for k, g in by_base_and_seed(bands).items() if len({b.context for b in g}) >= 2}
    if not groups:
        raise ValueError("the rule compares contexts: give runs at two or more context lengths")
    per_base = {key: verdict_for_base(group) for key, group in groups.items()}
    kinds = [v.verdict for v in per_base.values()]
    bases = {group[0].theta[0] for group in groups.values()}
    # RULE: "holds if *both* bases follow the context": one base alone cannot make it hold
    law = ("holds" if len(bases) >= 2 and all(k == "follows the context" for k in kinds) else
           "fails" if "follows the pair index" in kinds else "undecided")
    return FirstRule(per_base, law)


def fit_points(bands: Sequence[Band]) -> tuple[np.ndarray, np.ndarray]:
    """log C and log W of every (run, layer ≥ 1, K head) of ``bands``: the slope rule's points."""
    pts = [(np.log(b.context), np.log(float(w))) for b in bands
           for layer in b.wavelengths_LxH[1:] for w in layer]
    return np.array([c for c, _ in pts], float), np.array([w for _, w in pts], float)


def _slope(logC: np.ndarray, logW: np.ndarray) -> float:
    c = logC - logC.mean()
    return float((c * (logW - logW.mean())).sum() / (c * c).sum())


@dataclass(frozen=True)
class SlopeFit:
    """``SLOPE_RULE`` for one base: the fitted slope of log W on log C and its bootstrap 95%
    interval (None with fewer than two contexts or seeds, ``detail`` saying so), the number of
    (run, layer, head) points, the verdict (``SLOPE_VERDICTS``) and the pair grid."""
    contexts: list[int]
    seeds: list[int | None]
    runs: list[str]
    pair_grid: dict[str, float]
    slope: float | None = None
    ci95: list[float] | None = None
    n_points: int | None = None
    verdict: str = SLOPE_VERDICTS[2]
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("contexts", "seeds", "runs", "pair_grid", "slope", "ci95")}
        out |= {} if self.n_points is None else {"n_points": self.n_points}
        return out | {"verdict": self.verdict} | ({"detail": self.detail} if self.detail else {})


def slope_for_base(bands: Sequence[Band], n_boot: int = BOOTSTRAP, rng_seed: int = 0) -> SlopeFit:
    """``SLOPE_RULE`` for the runs of one base: the fitted slope, its bootstrap interval, the
    verdict, and the pair grid (one pair step multiplies the wavelength by θ^(2/D), so a context
    ratio moves the band by log(ratio) / log(θ^(2/D)) pairs if it follows the context)."""
    contexts = sorted({b.context for b in bands})
    seeds = seeds_of(bands)
    points = {s: fit_points([b for b in bands if b.seed == s]) for s in seeds}
    flat = {s: (c, w) for s, (c, w) in points.items() if len(c)}  # per seed, its (log C, log W)
    theta, D = bands[0].theta[0], 2 * bands[0].n_pairs
    step = theta ** (2 / D)
    grid = {"wavelength_factor_per_pair": step, "pairs_per_context_doubling": float(np.log(2) / np.log(step))}
    fit = SlopeFit(contexts, seeds, [b.name for b in bands], grid)
    if len(contexts) < 2 or len(flat) < 2:
        return replace(fit, detail="needs two contexts and two seeds")
    logC = np.concatenate([flat[s][0] for s in flat])
    logW = np.concatenate([flat[s][1] for s in flat])
    rng = np.random.default_rng(rng_seed)
    keys = list(flat)
    boots = []
    for _ in range(n_boot):
        cs, ws = [], []
        for s in rng.choice(len(keys), len(keys)):
            c, w = flat[keys[s]]
            idx = rng.integers(0, len(c), len(c))
            cs.append(c[idx]); ws.append(w[idx])
        c = np.concatenate(cs)
        if np.ptp(c) > 0:
            boots.append(_slope(c, np.concatenate(ws)))
    lo, hi = (float(x) for x in np.percentile(boots, [2.5, 97.5]))
    holds1, holds0 = lo <= 1 <= hi, lo <= 0 <= hi
    verdict = (SLOPE_VERDICTS[0] if holds1 and not holds0 else
               SLOPE_VERDICTS[1] if holds0 and not holds1 else SLOPE_VERDICTS[2])
    return replace(fit, slope=_slope(logC, logW), ci95=[lo, hi], n_points=int(len(logC)), verdict=verdict)


@dataclass(frozen=True)
class SlopeLaw:
    """``SLOPE_RULE`` per base and the law as an applied ``Claim`` (the rule that decides)."""
    per_base: dict[str, SlopeFit]
    claim: Claim

    def to_json(self) -> dict[str, Any]:
        return {"rule": SLOPE_RULE, "per_base": {t: f.to_json() for t, f in self.per_base.items()},
                "claim": self.claim.to_json()}


def _slope_check(per: dict[str, SlopeFit]) -> Outcome:
    kinds = [f.verdict for f in per.values()]
    held = (True if kinds and all(k == SLOPE_VERDICTS[0] for k in kinds) else
            False if SLOPE_VERDICTS[1] in kinds else None)
    return Outcome({t: {"slope": f.slope, "ci95": f.ci95, "verdict": f.verdict} for t, f in per.items()}, held)


def slope_law(bands: Sequence[Band], n_boot: int = BOOTSTRAP) -> SlopeLaw:
    """``SLOPE_RULE`` per base, and the law as a ``Claim``."""
    per_base = {t: slope_for_base(g, n_boot) for t, g in by_base(bands).items()}
    claim = Claim("band", "the strongest K pair's wavelength follows the training context",
                  SLOPE_RULE, _slope_check).apply(per_base)
    return SlopeLaw(per_base, claim)
