"""``mvjax experiment band RUN_DIR... --out DIR``: what sets where massive K dims sit — their RoPE
band against the training context.

Why: in the scale runs and the ``cpu`` preset, θ=1e4 and θ=1e6 put their strongest K pair at about
the same wavelength *in tokens* (2–2.5× the 256-token context) although at different pair indices.
If that is a law, a model's base and context predict its massive band. The sweep
(``docs/rope-band/sweep.sh``) trains the same RoPE arm at several contexts and both bases; this
command reads the runs' last logged K norm matrices, finds each head's strongest pair, and applies
the rule fixed before the runs (``RULE`` below, also in ``docs/rope-band/RULE.md``).
Pretrained models (``--reference``) are measured the same way, reported beside, never in the verdict.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mvjax.analysis.claims import Claim, Outcome
from mvjax.analysis.concentration import labels_for, pair_energy
from mvjax.analysis.experiments.emergence import read_run
from mvjax.analysis.experiments.rope_cause_results import measure_reference
from mvjax.atomic import atomic_directory, check_results_dir, read_json_state
from mvjax.config import ModelConfig
from mvjax.massive_rule import MassiveDefinition, massive_mask

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
SITE = "k"            # training runs: the rule's site (before RoPE; pair energy is rotation-invariant)
REFERENCE_SITE = "k_rot"  # pretrained: the K that RoPE rotated (after QK-norm where a model has one)


@dataclass(frozen=True)
class Band:
    """Where one model's (or run's) K energy sits: per layer and head, the strongest pair."""
    name: str
    theta: list[float]                  # per layer (a model may mix bases)
    context: int                        # training context (tokens)
    window: list[int | None]            # per layer: sliding window, None = full attention
    pairs_LxH: list[list[int]]
    wavelengths_LxH: list[list[float]]
    n_pairs: int
    tokens: int | None = None           # training tokens at the measurement (runs only)
    seed: int | None = None             # training seed (runs only): the bootstrap's outer unit
    first_massive_tokens: int | None = None  # runs: tokens at the first log with a λ=5 K entry

    def median_wavelength(self, layers: Sequence[int] | None = None) -> float:
        rows = [self.wavelengths_LxH[l] for l in (layers or range(len(self.pairs_LxH)))]
        return float(np.median(np.concatenate(rows)))

    def median_pair(self, layers: Sequence[int] | None = None) -> float:
        rows = [self.pairs_LxH[l] for l in (layers or range(len(self.pairs_LxH)))]
        return float(np.median(np.concatenate(rows)))


def strongest_pairs(M_LxHxD: np.ndarray, cfg) -> tuple[list[list[int]], list[list[float]], int]:
    """Per layer and head, the RoPE pair with the most energy (ΣM² over its two dims; the same
    before and after rotation) and its wavelength 2π/frequency, under each layer's own scheme."""
    pairs_out, waves_out, n_pairs = [], [], 0
    for layer, M_HxD in enumerate(np.asarray(M_LxHxD, np.float64)):
        pairs, freqs, own = labels_for(cfg, layer)
        if not own:
            raise ValueError(f"layer {layer} of {cfg.layer_positional(layer).scheme!r} does not "
                             "rotate: the band is only defined for RoPE layers")
        top = pair_energy(M_HxD, pairs).argmax(axis=1)
        freq_of_pair = {p: f for p, f in zip(pairs, freqs) if p is not None}
        pairs_out.append([int(p) for p in top])
        waves_out.append([float(2 * np.pi / freq_of_pair[int(p)]) for p in top])
        n_pairs = max(n_pairs, len(freq_of_pair))
    return pairs_out, waves_out, n_pairs


def _layer_thetas(cfg) -> list[float]:
    return [float(cfg.layer_positional(l).theta) for l in range(cfg.num_layers)]


def _layer_windows(cfg) -> list[int | None]:
    """Per layer sliding window (Gemma 3's local layers), None for full attention."""
    return [cfg.layer_window(l) for l in range(cfg.num_layers)]


def run_band(run_dir: str | Path) -> Band:
    """The band of a ``mvjax train`` run at its last logged norm matrices."""
    d = Path(run_dir)
    exp, metrics = read_run(d)
    logs = [r for r in metrics if SITE in r.get("norms", {})]
    if not logs:
        raise ValueError(f"{d} logged no K norm matrices: train with train.concentration_every > 0")
    pairs, waves, n_pairs = strongest_pairs(np.asarray(logs[-1]["norms"][SITE]), exp.model)
    per_step = exp.data.batch_size * exp.data.seq_len
    first = next((int(r["step"]) * per_step for r in logs
                  if any(massive_mask(np.asarray(M), MassiveDefinition()).any() for M in r["norms"][SITE])),
                 None)
    return Band(d.name, _layer_thetas(exp.model), exp.data.seq_len, _layer_windows(exp.model),
                pairs, waves, n_pairs, int(logs[-1]["step"]) * per_step, exp.train.seed, first)


def reference_band(model: str, context: int | None = None, seq_len: int = 512) -> Band:
    """A pretrained model's band, measured on the embedded analysis sample (same probe as the
    rope-cause reference). ``context``: its training context, else the config's max_seq_len."""
    ref = measure_reference(model, seq_len)
    cfg = ModelConfig.from_dict(ref["config"])
    pairs, waves, n_pairs = strongest_pairs(np.asarray(ref["norms"][REFERENCE_SITE]), cfg)
    return Band(model, _layer_thetas(cfg), int(context or cfg.max_seq_len), _layer_windows(cfg),
                pairs, waves, n_pairs)


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


def verdict(bands: Sequence[Band]) -> FirstRule:
    """The rule applied per base θ (runs grouped by their layer-0 θ), then the law."""
    per_base = {theta: verdict_for_base(group) for theta, group in by_base(bands).items()}
    kinds = [v.verdict for v in per_base.values()]
    # RULE: "holds if *both* bases follow the context": one base alone cannot make it hold
    law = ("holds" if len(kinds) >= 2 and all(k == "follows the context" for k in kinds) else
           "fails" if "follows the pair index" in kinds else "undecided")
    return FirstRule(per_base, law)


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
    seeds = sorted({b.seed for b in bands}, key=lambda s: -1 if s is None else s)
    units = {s: [(np.log(b.context), np.log(np.asarray(b.wavelengths_LxH[l], float)))
                 for b in bands if b.seed == s for l in range(1, len(b.wavelengths_LxH))]
             for s in seeds}  # per seed: (log C, log W of every head) per (run, layer ≥ 1)
    flat = {s: (np.concatenate([np.full(len(w), c) for c, w in u]), np.concatenate([w for _, w in u]))
            for s, u in units.items() if u}
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


def layer_groups(band: Band) -> dict[str, list[int]]:
    """Layers grouped by (θ, window): a model mixing local and global layers is read per group."""
    groups: dict[str, list[int]] = {}
    for l, (theta, window) in enumerate(zip(band.theta, band.window)):
        key = f"theta={theta:g}" + ("" if window is None else f", window={window}")
        groups.setdefault(key, []).append(l)
    return groups


def reference_rows(band: Band) -> list[dict[str, Any]]:
    """Per layer group of a pretrained model: median wavelength and pair, against its context and
    (for windowed layers) its window."""
    rows = []
    for key, layers in layer_groups(band).items():
        w = band.median_wavelength(layers)
        window = band.window[layers[0]]
        rows.append({"model": band.name, "layers": key, "n_layers": len(layers),
                     "median_wavelength": w, "median_pair": band.median_pair(layers),
                     "n_pairs": band.n_pairs, "context": band.context,
                     "wavelength_over_context": w / band.context,
                     "wavelength_over_window": None if window is None else w / window})
    return rows


def table(runs: Sequence[Band], refs: Sequence[Band], first: FirstRule, slope: SlopeLaw | None = None) -> str:
    head = ("| run | θ | context | tokens | median top-pair (of n) | median wavelength W | W / context "
            "| K top-pair wavelength per layer (median over heads) |")
    lines = [head, "|---" * head.count(" | ") + "|---|"]
    for b in sorted(runs, key=lambda b: (b.theta[0], b.context)):
        per_layer = " / ".join(f"{np.median(w):.0f}" for w in b.wavelengths_LxH)
        lines.append(f"| {b.name} | {b.theta[0]:g} | {b.context} | "
                     f"{(b.tokens or 0) / 1e6:.1f}M | {b.median_pair():g} (of {b.n_pairs}) | "
                     f"{b.median_wavelength():.0f} | {b.median_wavelength() / b.context:.2f} | "
                     f"{per_layer} |")
    lines += ["", "| θ | contexts | W / context | median pair | max/min of W/context | verdict |",
              "|---|---|---|---|---|---|"]
    for theta, v in first.per_base.items():
        lines.append(f"| {theta} | {' / '.join(map(str, v.contexts))} | "
                     f"{' / '.join(f'{r:.2f}' for r in v.wavelength_over_context)} | "
                     f"{' / '.join(f'{p:g}' for p in v.median_pair)} | {v.ratio_spread:.2f} | "
                     f"{v.verdict} |")
    lines += ["", f"**Law: {first.law}.** Rule (fixed before the runs): {RULE}"]
    if slope is not None:
        lines += ["", "Second rule (the one that decides, `RULE-slope.md`): slope of log W on log C "
                  "over (run, layer ≥ 1, K head), bootstrap over seeds and heads.", "",
                  "| θ | contexts | seeds | points | slope [95% CI] | pairs per context doubling "
                  "(if it follows) | verdict |", "|---|---|---|---|---|---|---|"]
        for theta, v in slope.per_base.items():
            fit = "n/a" if v.slope is None else f"{v.slope:.2f} [{v.ci95[0]:.2f}, {v.ci95[1]:.2f}]"
            lines.append(f"| {theta} | {' / '.join(map(str, v.contexts))} | "
                         f"{', '.join(map(str, v.seeds))} | {v.n_points or 0} | {fit} | "
                         f"{v.pair_grid['pairs_per_context_doubling']:.2f} | {v.verdict} |")
        lines += ["", f"**The band follows the context: {slope.claim.verdict}.**"]
    if refs:
        lines += ["", "| pretrained | layers | n | median top-pair (of n) | median wavelength W "
                  "| context | W / context | W / window |", "|---|---|---|---|---|---|---|---|"]
        for b in refs:
            for r in reference_rows(b):
                ow = "" if r["wavelength_over_window"] is None else f"{r['wavelength_over_window']:.2f}"
                lines.append(f"| {r['model']} | {r['layers']} | {r['n_layers']} | "
                             f"{r['median_pair']:g} (of {r['n_pairs']}) | {r['median_wavelength']:.0f} | "
                             f"{r['context']} | {r['wavelength_over_context']:.2f} | {ow} |")
    return "\n".join(lines) + "\n"


def draw(runs: Sequence[Band], refs: Sequence[Band], path: Path) -> Path:
    """Left: median top-pair wavelength against context per base (dashed: W = 2.5 C, W = C);
    pretrained layer groups at their context, or their window where they have one.
    Right: the same as W / context per layer, so 'follows the context' reads as flat lines."""
    import matplotlib  # local: matplotlib is heavy and only drawing this figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # local: as matplotlib

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    bases = sorted({r.theta[0] for r in runs})
    for i, theta in enumerate(bases):
        group = sorted((r for r in runs if r.theta[0] == theta), key=lambda r: r.context)
        C = np.array([r.context for r in group], float)
        a.plot(C, [r.median_wavelength() for r in group], "o-", color=f"C{i}",
               label=f"θ={theta:g} (median over layers × heads)")
        depth = max(len(r.wavelengths_LxH) for r in group)  # runs of one base may differ in depth
        for layer in range(depth):
            have = [r for r in group if layer < len(r.wavelengths_LxH)]  # each run's own layers
            b.plot([r.context for r in have],
                   [np.median(r.wavelengths_LxH[layer]) / r.context for r in have], "o-",
                   color=f"C{i}", alpha=0.35 + 0.6 * layer / max(1, depth - 1), lw=1,
                   label=f"θ={theta:g}" if layer == 0 else None)
    for j, ref in enumerate(refs):
        for k, (key, layers) in enumerate(layer_groups(ref).items()):
            span = ref.window[layers[0]] or ref.context  # a windowed layer sees its window
            a.plot([span], [ref.median_wavelength(layers)], "*^sD"[k % 4], ms=10,
                   color=f"C{len(bases) + j}", label=f"{ref.name} {key} (at {span} tokens)")
    if runs:
        C = np.array(sorted({r.context for r in runs}), float)
        for f, ls in ((1.0, ":"), (2.5, "--")):
            a.plot(C, f * C, ls, color="gray", lw=0.8, label=f"W = {f:g} × context")
    a.set(xscale="log", yscale="log", xlabel="training context (tokens)",
          ylabel="K top-pair wavelength (tokens)")
    b.set(xscale="log", xlabel="training context (tokens)", ylabel="wavelength / context, per layer")
    for ax in (a, b):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("band", help="where the strongest K dims sit (RoPE wavelength) against the "
                       "training context, across a context × θ sweep; the fixed band-vs-context rule")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="`mvjax train` directories (RoPE, "
                   "concentration logged), or a band.json written earlier (its bands kept as recorded)")
    p.add_argument("--reference", action="append", default=[], metavar="MODEL[:CONTEXT]",
                   help="a pretrained model measured the same way (e.g. smollm2:2048); repeatable")
    p.add_argument("--out", required=True, help="where band.json, band.png and band.md go")
    p.set_defaults(func=_run)


BAND_JSON_FIX = "pass a band.json written by `mvjax experiment band`, or the run directories"


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _matrix(value: Any, number: Any) -> bool:
    """A non-empty list of non-empty lists whose entries pass ``number``."""
    return (isinstance(value, list) and bool(value) and
            all(isinstance(row, list) and row and all(number(x) for x in row) for row in value))


def band_from_dict(data: Any, where: str) -> Band:
    """A ``Band`` from its band.json record, each field checked: a malformed record is refused in
    one line naming ``where`` (file and index) and the field, never a TypeError deep in the rule."""
    def bad(field: str, want: str) -> ValueError:
        return ValueError(f"{where}: {field!r} {want}: {BAND_JSON_FIX}")

    if not isinstance(data, dict):
        raise ValueError(f"{where} is a {type(data).__name__}, not a run record: {BAND_JSON_FIX}")
    fields = {f.name for f in Band.__dataclass_fields__.values()}
    for key in data:
        if key not in fields:
            raise bad(key, "is not a band field")
    for key in fields - {"tokens", "seed", "first_massive_tokens"}:
        if key not in data:
            raise bad(key, "is missing")
    d = data  # short name for the checks below
    if not isinstance(d["name"], str) or not d["name"]:
        raise bad("name", "must be a non-empty string")
    if not isinstance(d["context"], int) or isinstance(d["context"], bool) or d["context"] < 1:
        raise bad("context", f"must be a positive whole number of tokens, not {d['context']!r}")
    if not isinstance(d["n_pairs"], int) or isinstance(d["n_pairs"], bool) or d["n_pairs"] < 1:
        raise bad("n_pairs", f"must be a positive whole number, not {d['n_pairs']!r}")
    for key in ("tokens", "seed", "first_massive_tokens"):
        value = d.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise bad(key, f"must be a whole number or null, not {value!r}")
    is_int = lambda x: isinstance(x, int) and not isinstance(x, bool)  # noqa: E731
    if not _matrix(d["pairs_LxH"], is_int):
        raise bad("pairs_LxH", "must list, per layer, a non-empty list of pair indices")
    if not _matrix(d["wavelengths_LxH"], lambda x: _number(x) and x > 0):
        raise bad("wavelengths_LxH", "must list, per layer, a non-empty list of positive wavelengths")
    layers = len(d["pairs_LxH"])
    if [len(r) for r in d["wavelengths_LxH"]] != [len(r) for r in d["pairs_LxH"]]:
        raise bad("wavelengths_LxH", "must have the shape of 'pairs_LxH' (layers x heads)")
    if not (isinstance(d["theta"], list) and len(d["theta"]) == layers
            and all(_number(t) and t > 0 for t in d["theta"])):
        raise bad("theta", f"must list one positive base per layer ({layers})")
    if not (isinstance(d["window"], list) and len(d["window"]) == layers
            and all(w is None or is_int(w) and w > 0 for w in d["window"])):
        raise bad("window", f"must list one window (a positive whole number or null) per layer "
                  f"({layers})")
    return Band(**d)


def _read_band_json(src: str) -> tuple[list[Band], list[Band]]:
    saved = read_json_state(src, "write it again with `mvjax experiment band RUN_DIR... --out DIR`")
    if not isinstance(saved, dict) or "runs" not in saved:
        raise ValueError(f"{src} is not a band.json (no 'runs'): pass one written by "
                         "`mvjax experiment band`, or a training run directory")
    out = []
    for key in ("runs", "references"):
        records = saved.get(key, [])
        if not isinstance(records, list):
            raise ValueError(f"{src}: {key!r} is a {type(records).__name__}, not a list of band "
                             f"records: {BAND_JSON_FIX}")
        out.append([band_from_dict(b, f"{src} {key}[{i}]") for i, b in enumerate(records)])
    return out[0], out[1]


def _load(sources: Sequence[str]) -> tuple[list[Band], list[Band]]:
    """The runs (and earlier references) of ``sources``; a run given twice (the same directory,
    or one a band.json already holds) is refused, since it would be listed and compared twice."""
    runs, refs, origin = [], [], {}
    for src in sources:
        if Path(src).is_file() and src.endswith(".json"):
            got, saved_refs = _read_band_json(src)
            refs += saved_refs
        else:
            got = [run_band(src)]
        for b in got:
            if b.name in origin:
                raise ValueError(f"run {b.name!r} is given twice ({origin[b.name]} and {src}): give "
                                 "each run once (band tells runs apart by their directory name)")
            origin[b.name] = src
        runs += got
    return runs, refs


def _run(args: argparse.Namespace) -> int:
    check_results_dir(args.out, "band.json")
    runs, refs = _load(args.runs)
    for spec in args.reference:
        name, _, ctx = spec.partition(":")
        refs = [r for r in refs if r.name != name] + [reference_band(name, int(ctx) if ctx else None)]
    first, slope = verdict(runs), slope_law(runs)
    command = "mvjax experiment band " + " ".join(args.runs) + "".join(
        f" --reference {r}" for r in args.reference) + f" --out {args.out}"
    with atomic_directory(args.out) as tmp:  # a band.json read above may live in --out
        (tmp / "band.json").write_text(json.dumps(
            {"command": command, **first.to_json(), "slope": slope.to_json(), "runs": [asdict(b) for b in runs],
             "references": [asdict(b) for b in refs],
             "reference_rows": [row for b in refs for row in reference_rows(b)]}, indent=1))
        draw(runs, refs, tmp / "band.png")
        (tmp / "band.md").write_text(table(runs, refs, first, slope))
    print(table(runs, refs, first, slope))
    return 0
