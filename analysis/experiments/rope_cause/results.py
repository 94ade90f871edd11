"""Turn a rope-cause run directory into ``results.json``: per arm, the concentration metrics over
training (layers × logged steps) from the training logs, the final model's ``analyze`` numbers and
task accuracies, a reference model measured the same way, and the claim verdicts.

The results are typed records (``RopeCauseResults`` → ``ArmResult`` → ``analysis.summaries``
records) that read and write the JSON schema, so a saved ``results.json`` loads back whole::

    res = RopeCauseResults.load("docs/rope-cause-cpu/results.json")
    res.arms["rope"].totals("k_rot").n_massive

The claims are ``analysis.claims.Claim`` objects: their rules are written here, before any run, and
printed in the report beside the numbers; they use the fixed massive definition (λ=5, per-head
mean) and never a tuned one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from mvjax.analysis.analyze import RESULTS_FILE, Analysis, make_sequences
from mvjax.analysis.claims import HOLDS, NOT_TESTED, Claim, Outcome, verdict_of
from mvjax.analysis.concentration import labels_for
from mvjax.analysis.massive import low_frequency_dims
from mvjax.analysis.retrieval_curve import EPISODE_KEY, GAP_KEY, episode_point, first_step_at
from mvjax.analysis.sample import sample_texts
from mvjax.analysis.summaries import (DEFINITION, DEFINITIONS, Curves, SiteSummary, SiteTotals, sites_from_json,
                                sites_json, summarize_norms, training_curves)
from mvjax.atomic import read_json_state, require
from mvjax.config import ModelConfig, to_plain
from mvjax.data.tasks.base import wilson_interval
from mvjax.load import load_pretrained
from mvjax.massive_rule import massive_mask
from mvjax.train.config import ExperimentConfig
from mvjax.train.metrics import make_concentration_fn, read_metrics


# How to mend a cut state file of a run: measured again on --resume.
REMEASURE = "delete it and rerun with --resume (it is measured again)"


def _sink(mass_LxH) -> list[float]:
    return [float(np.mean(h)) for h in mass_LxH]


@dataclasses.dataclass(frozen=True)
class ArmResult:
    """One trained arm: its positional config, the curves over training, the final model's site
    summaries and ``analyze`` numbers, task accuracies and the disruption (claim 5) result."""

    positional: dict[str, Any]
    head_dim: int
    num_layers: int
    num_heads: int
    curves: Curves
    final: dict[str, SiteSummary]
    final_M: dict[str, list]
    final_analyze_summary: dict[str, Any]
    final_counts: dict[str, dict[str, int | None]]
    final_first_token_mass: list[float] | None
    final_eval_loss: float | None
    tasks: dict[str, Any]
    disruption: dict[str, Any]
    config: dict[str, Any]
    retrieval: dict[str, Any] | None = None  # held-out retrieval over training (retrieval_curve)

    def totals(self, site: str) -> SiteTotals:
        return self.final[site].totals()

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if not (f.name == "retrieval" and self.retrieval is None)}  # older runs: none
        return out | {"curves": self.curves.to_json(), "final": sites_json(self.final)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ArmResult":
        fields = {f.name: data[f.name] for f in dataclasses.fields(cls)
                  if f.name in data or f.default is dataclasses.MISSING}
        return cls(**fields | {"curves": Curves.from_json(data["curves"]),
                               "final": sites_from_json(data["final"])})


@dataclasses.dataclass(frozen=True)
class ReferenceResult:
    """A pretrained model measured like the arms (final numbers only)."""

    model: str
    head_dim: int
    num_layers: int
    num_heads: int
    n_tokens: int
    final: dict[str, SiteSummary]
    final_first_token_mass: list[float]

    def totals(self, site: str) -> SiteTotals:
        return self.final[site].totals()

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return out | {"final": sites_json(self.final)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ReferenceResult":
        fields = {f.name: data[f.name] for f in dataclasses.fields(cls)}
        return cls(**fields | {"final": sites_from_json(data["final"])})


@dataclasses.dataclass(frozen=True)
class RopeCauseResults:
    """The whole ``results.json`` of a rope-cause run."""

    git_sha: str | None
    preset: dict[str, Any]
    definitions: dict[str, Any]
    arms: dict[str, ArmResult]
    reference: ReferenceResult | None = None
    claims: dict[str, Claim] = dataclasses.field(default_factory=dict)
    experiment: str = "rope-cause"

    def curve_rows(self) -> list[dict[str, Any]]:
        """Every arm's curves over training as one tidy table (arm, site, layer, step, metric)."""
        return [{"arm": arm, **row} for arm, a in self.arms.items() for row in a.curves.rows()]

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "git_sha": self.git_sha, "preset": self.preset,
                "definitions": self.definitions,
                "claim_rules": {k: c.rule for k, c in self.claims.items()},
                "arms": {a: arm.to_json() for a, arm in self.arms.items()},
                "reference": None if self.reference is None else self.reference.to_json(),
                "claims": {k: c.to_json() for k, c in self.claims.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RopeCauseResults":
        rules = data.get("claim_rules", {})
        return cls(data.get("git_sha"), data["preset"], data["definitions"],
                   {a: ArmResult.from_json(v) for a, v in data["arms"].items()},
                   None if data.get("reference") is None else ReferenceResult.from_json(data["reference"]),
                   {k: Claim.from_json(k, c, rules.get(k)) for k, c in data.get("claims", {}).items()},
                   data.get("experiment", "rope-cause"))

    @classmethod
    def load(cls, path: str | Path) -> "RopeCauseResults":
        """A saved ``results.json`` (or the run directory holding it)."""
        path = Path(path)
        path = path / "results.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: pass a rope-cause results.json or its "
                                    "directory")
        data = read_json_state(path, "rerun the experiment that wrote it")
        for key in ("preset", "definitions", "arms"):
            require(data, key, dict, path)
        return cls.from_json(data)


RETRIEVED = 0.8  # greedy exact on the held-out contextual episodes at which an arm "has learned"


def retrieval_curve(metrics: list[dict[str, Any]], tokens_per_step: int, lam: float = 5.0
                    ) -> dict[str, Any]:
    """Held-out retrieval over training (``probe`` records of the training log), and the first
    logged step at which all contextual episodes together reach ``RETRIEVED`` exact (None: never).
    Where the probe logged them: the Q/K concentration on the episodes at every point
    (``episode_*`` keys) and the massive-vs-random disruption gap at its steps (``gaps``)."""
    logs = [r for r in metrics if "probe" in r]
    points, gaps, chance = [], [], {}
    for r in logs:
        step = int(r["step"])
        point = {"step": step, "tokens": step * tokens_per_step}
        for task, v in r["probe"].items():
            if task in (EPISODE_KEY, GAP_KEY):
                continue
            point |= {f"{task}_{key}": v[key] for key in ("exact", "answer_nll")}
            if "chance" in v:
                chance[task] = v["chance"]
        if EPISODE_KEY in r["probe"]:
            point |= episode_point(r["probe"][EPISODE_KEY], lam)
        points.append(point)
        if GAP_KEY in r["probe"]:
            gaps.append({"step": step, "tokens": step * tokens_per_step} | r["probe"][GAP_KEY])
    step = first_step_at(points, "all_exact", RETRIEVED)
    return {"points": points, "level": RETRIEVED, "first_step": step,
            "first_tokens": None if step is None else step * tokens_per_step,
            "chance": chance, "gaps": gaps}


def _final_counts(analyzed_sites: dict[str, list[dict[str, Any]]], rotary: bool) -> dict[str, Any]:
    return {site: {
        "n_massive": sum(m["n_massive"] for m in layers),
        "n_massive_rotating": sum(m["n_massive_rotating"] for m in layers),
        "n_massive_unrotated": sum(m["n_massive"] - m["n_massive_rotating"] for m in layers)
        if rotary else None,
        "n_massive_low_freq": sum(m["n_massive_low_freq"] for m in layers)}
        for site, layers in analyzed_sites.items()}


def arm_result(arm_dir: Path) -> ArmResult:
    exp = ExperimentConfig.load(arm_dir / "config.yaml")
    cfg: ModelConfig = exp.model
    metrics = read_metrics(arm_dir / "metrics.jsonl")
    analyzed = Analysis.from_json(read_json_state(arm_dir / "analyze" / RESULTS_FILE,
                                                  REMEASURE.replace("delete it", "delete its folder")))
    norms = analyzed.norms()
    logs = [r for r in metrics if "norms" in r]
    evals = [r["eval_loss"] for r in metrics if "eval_loss" in r and r["eval_loss"] is not None]
    return ArmResult(
        positional=to_plain(cfg.layer_positional(0)),
        head_dim=cfg.head_dim, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
        curves=training_curves(metrics, cfg, exp.data.batch_size * exp.data.seq_len),
        final=summarize_norms(norms, cfg),
        final_M={s: norms[s] for s in ("q_rot", "k_rot") if s in norms},
        final_analyze_summary=analyzed.summary,
        final_counts=_final_counts(analyzed.sites,
                                   bool(cfg.layer_positional(0).rotary_dims(cfg.head_dim))),
        final_first_token_mass=_sink(logs[-1]["first_token_mass"]) if logs else None,
        final_eval_loss=evals[-1] if evals else None,
        tasks=read_json_state(arm_dir / "tasks.json", REMEASURE),
        disruption=read_json_state(arm_dir / "disrupt.json", REMEASURE),
        config=exp.to_dict(),
        retrieval=retrieval_curve(metrics, exp.data.batch_size * exp.data.seq_len))


def measure_reference(model: str, seq_len: int, n_rows: int = 4) -> dict[str, Any]:
    """A pretrained model measured like the arms: norms and first-token mass of every layer, on
    the embedded analysis sample (BOS-first windows), through the same jitted probe."""
    net, tok = load_pretrained(model)
    if tok is None:
        raise ValueError(f"reference model {model} has no tokenizer: save one into its directory")
    length = min(512, net.cfg.max_seq_len, max(seq_len, 128))
    rows = make_sequences(tok, sample_texts(), length, n_rows * length)
    graphdef, params = nnx.split(net, nnx.Param)
    out = jax.device_get(make_concentration_fn(graphdef)(nnx.to_pure_dict(params), rows))
    return {"model": model, "config": net.cfg.to_dict(), "n_tokens": int(rows.size),
            "seq_len": length, "norms": {k: np.asarray(v).tolist() for k, v in out["norms"].items()},
            "first_token_mass": np.asarray(out["first_token_mass"]).tolist()}


def reference_result(ref: dict[str, Any]) -> ReferenceResult:
    cfg = ModelConfig.from_dict(ref["config"])
    return ReferenceResult(ref["model"], cfg.head_dim, cfg.num_layers, cfg.num_heads,
                           ref["n_tokens"], summarize_norms(ref["norms"], cfg),
                           _sink(ref["first_token_mass"]))


def _qk(t: dict[str, SiteTotals]) -> int:
    return t["q_rot"].n_massive + t["k_rot"].n_massive


def _totals(res: RopeCauseResults, arm: str, sites=("q_rot", "k_rot", "v")) -> dict[str, SiteTotals]:
    return {s: res.arms[arm].totals(s) for s in sites}


def check_1(res: RopeCauseResults) -> Outcome:
    r = _totals(res, "rope")
    others = {a: _totals(res, a) for a in ("nope", "alibi") if a in res.arms}
    numbers = {**{s: t.to_json() for s, t in r.items()}, "rope_qk_massive": _qk(r),
               **{f"{a}_qk_massive": _qk(o) for a, o in others.items()},
               **{f"{a}_v_massive": o["v"].n_massive for a, o in others.items()}}
    held = (_qk(r) > 0 and r["v"].n_massive == 0 and all(_qk(r) > _qk(o) for o in others.values()))
    return Outcome(numbers, held if others else None)


def check_2(res: RopeCauseResults) -> Outcome:
    r = _totals(res, "rope")
    firsts = [x for x in (r["q_rot"].first_massive_layer, r["k_rot"].first_massive_layer)
              if x is not None]
    return Outcome({"first_qk_massive_layer": min(firsts) if firsts else None},
                   bool(firsts) and min(firsts) == 0)


def check_3(res: RopeCauseResults) -> Outcome:
    r = _totals(res, "rope")
    qk = _qk(r)
    others = {a: _totals(res, a, ("q_rot", "k_rot")) for a in ("nope", "alibi") if a in res.arms}
    numbers = {"rope_qk_massive": qk, **{f"{a}_qk_massive": _qk(o) for a, o in others.items()},
               **{f"{a}_{s}_band_low_share": o[s].band_low_share_median
                  for a, o in {"rope": r, **others}.items() for s in ("q_rot", "k_rot")}}
    weaker = all(_qk(o) <= qk / 2 for o in others.values())
    return Outcome(numbers, None if not others or qk == 0 else weaker)


MIN_ENTRIES_4 = 5  # claim (4) is not decided on fewer pooled Q+K entries of the RoPE arm


def massive_entries(arm: ArmResult) -> list[dict[str, Any]]:
    """Every λ-massive entry of the final model's post-positional Q and K (pooled), with its RoPE
    pair, band (low/high frequency half of the rotating dims) and wavelength in tokens and in
    multiples of the training context (None where the dim does not rotate)."""
    cfg = ModelConfig.from_dict(arm.config["model"])
    context = arm.config["data"]["seq_len"]
    entries = []
    for site in ("q_rot", "k_rot"):
        for layer, M_HxD in enumerate(arm.final_M.get(site, [])):
            pairs, freqs, own = labels_for(cfg, layer)
            low, rotating = low_frequency_dims(list(freqs))
            for h, d in zip(*np.nonzero(massive_mask(np.asarray(M_HxD), DEFINITION))):
                rot = bool(own and rotating[d])
                wl = float(2 * np.pi / freqs[d]) if rot else None
                entries.append({"site": site, "layer": layer, "head": int(h), "dim": int(d),
                                "pair": pairs[d] if rot else None,
                                "band": ("low" if low[d] else "high") if rot else None,
                                "wavelength": wl, "wavelength_over_context":
                                wl / context if wl is not None else None})
    return entries


def _entries_summary(entries: list[dict[str, Any]]) -> dict[str, Any]:
    rot = [e for e in entries if e["band"] is not None]
    wl = [e["wavelength_over_context"] for e in rot]
    return {"n_entries": len(entries), "n_rotating": len(rot),
            "low_band_share": sum(e["band"] == "low" for e in rot) / len(rot) if rot else None,
            "wavelength_over_context_median": float(np.median(wl)) if wl else None,
            "wavelength_over_context_range": [min(wl), max(wl)] if wl else None,
            "entries": entries}


def check_4(res: RopeCauseResults) -> Outcome:
    """Q and K pooled; every RoPE-type arm's entries located in tokens (wavelength vs the
    training context), not only by band."""
    numbers: dict[str, Any] = {a: _entries_summary(massive_entries(res.arms[a]))
                               for a in ("rope", "rope-theta1e6", "partial-rope") if a in res.arms}
    share = numbers["rope"]["low_band_share"]
    ok = share is not None and share > 0.5
    if "partial-rope" in numbers:
        p = numbers["partial-rope"]
        numbers["partial_massive_unrotated"] = p["n_entries"] - p["n_rotating"]
        numbers["partial_rotated_energy_share"] = {
            s: res.arms["partial-rope"].final[s].column("rotated_energy_share")
            for s in ("q_rot", "k_rot")}
        ok = ok and numbers["partial_massive_unrotated"] == 0
    return Outcome(numbers, None if numbers["rope"]["n_entries"] < MIN_ENTRIES_4 else ok)


def retention(acc: dict[str, Any], cond: str, kind: str) -> float | None:
    """Accuracy of ``kind`` under ``cond`` as a share of the unmodified model's (None when the
    unmodified model scores nothing there)."""
    base, hit = acc["original"][kind], acc.get(cond, {}).get(kind)
    if not base or not base["accuracy"] or hit is None:
        return None
    return hit["accuracy"] / base["accuracy"]


MIN_SOLVED_5 = 20  # claim (5) needs this many contextual episodes solved by the unmodified arm
CONTROL_FAMILIES = ("random", "energy_matched", "lowest_norm")


def solved(entry: dict[str, Any]) -> int:
    """Items answered right (older results kept only the accuracy: k = accuracy · n exactly)."""
    return int(entry["correct"]) if "correct" in entry else round(entry["accuracy"] * entry["n"])


def counted(k: int, n: int) -> dict[str, Any]:
    """k of n right: the accuracy record every claim-(5) table reads, with its Wilson CI."""
    return {"n": n, "correct": k, "accuracy": k / n, "ci95": list(wilson_interval(k, n))}


def pooled(acc: dict[str, Any], family: str, kind: str) -> dict[str, Any] | None:
    """One control family's accuracy, pooled over its seeds (k and n summed), with its Wilson CI."""
    hits = [v[kind] for c, v in acc.items()
            if (c == family or c.startswith(f"{family}_s")) and v.get(kind)]
    if not hits:
        return None
    k, n = sum(solved(h) for h in hits), sum(h["n"] for h in hits)
    return counted(k, n)


def per_seed(acc: dict[str, Any], family: str, kind: str) -> dict[str, dict[str, Any]]:
    """One control family's seeds, each with its own accuracy and Wilson CI ({condition: entry};
    older results kept only the accuracy, so the interval is recomputed from the count)."""
    return {c: counted(solved(v[kind]), v[kind]["n"]) for c, v in acc.items()
            if c.startswith(f"{family}_s") and v.get(kind)}


def below_every_seed(acc: dict[str, Any], kind: str = "contextual") -> bool | None:
    """The stricter reading beside the rule: is the massive accuracy's CI wholly below every seed's
    own CI (pooling seeds into one binomial sample hides how far apart the seeds land)? None
    without a massive entry or a seeded control."""
    hit = acc.get("massive", {}).get(kind)
    seeds = [e for f in ("random", "energy_matched") for e in per_seed(acc, f, kind).values()]
    if hit is None or not seeds:
        return None
    upper = counted(solved(hit), hit["n"])["ci95"][1]
    return all(upper < e["ci95"][0] for e in seeds)


def arm_disruption(acc: dict[str, Any]) -> dict[str, Any]:
    """Claim (5) on one arm by its rule: retentions, pooled controls and the arm's verdict (with
    each seed's control and the per-seed reading reported beside it, not deciding it)."""
    orig, hit = acc["original"], acc.get("massive", {})
    out: dict[str, Any] = {"original": orig, "massive": hit,
                           "lambda_massive": acc.get("lambda_massive"),
                           **{f"{kind}_retention_massive": retention(acc, "massive", kind)
                              for kind in ("contextual", "parametric")},
                           "controls": {f: pooled(acc, f, "contextual") for f in CONTROL_FAMILIES},
                           "controls_per_seed": {f: per_seed(acc, f, "contextual")
                                                 for f in ("random", "energy_matched")},
                           "massive_below_every_seed": below_every_seed(acc)}
    ctx = orig.get("contextual")
    if (ctx is None or solved(ctx) < MIN_SOLVED_5 or not orig.get("parametric")
            or None in (out["contextual_retention_massive"], out["parametric_retention_massive"])):
        return out | {"verdict": verdict_of(None)}
    below = all(c is not None and hit["contextual"]["ci95"][1] < c["ci95"][0]
                for c in out["controls"].values())
    more = out["contextual_retention_massive"] < out["parametric_retention_massive"]
    return out | {"verdict": verdict_of(below and more)}


def disruption_outcome(accuracy: dict[str, dict[str, Any]]) -> Outcome:
    """Claim (5) from each arm's accuracy per condition and kind: a verdict per arm in the
    numbers; the claim's verdict is the RoPE arm's."""
    numbers = {arm: arm_disruption(acc) for arm, acc in accuracy.items()}
    r = numbers.get("rope")
    if r is None or r["verdict"] == NOT_TESTED:
        return Outcome(numbers, None)
    return Outcome(numbers, r["verdict"] == HOLDS)


def check_5(res: RopeCauseResults) -> Outcome:
    return disruption_outcome({a: arm.disruption["accuracy"] for a, arm in res.arms.items()})


# The paper's claims, each with its fixed rule (written before any run) and the code that applies it.
CLAIMS = (
    Claim("1", "Q/K concentrate with RoPE, V does not",
          "holds iff the RoPE arm has > 0 massive entries in Q+K (post-RoPE) and 0 in V, and more "
          "Q+K entries than each non-RoPE arm (NoPE, ALiBi; concentration that NoPE shows as well "
          "is not concentration with RoPE); not tested without a non-RoPE arm", check_1),
    Claim("2", "from the first layer",
          "holds iff the first layer with a massive Q or K entry in the RoPE arm is layer 0", check_2),
    Claim("3", "not (or far weaker) with NoPE and ALiBi",
          "holds iff NoPE's and ALiBi's Q+K massive counts are each at most half of RoPE's "
          "(not tested when RoPE has none)", check_3),
    Claim("4", "in low-frequency dims, and only among rotated dims with partial RoPE",
          "holds iff more than half of RoPE's massive Q and K entries, pooled, lie in the "
          "low-frequency half of the rotating dims and partial RoPE has none outside its rotated "
          f"dims; not tested when RoPE has fewer than {MIN_ENTRIES_4} pooled entries. Every RoPE "
          "arm's entries are also located in tokens (wavelength / training context), since a band "
          "label alone hides that two θ put their entries at the same wavelength", check_4),
    Claim("5", "disrupting them hurts contextual more than parametric accuracy",
          "per arm: holds iff mean-replacing the arm's own top-1 Q and K dims per head (all "
          "layers, post-positional) leaves a contextual accuracy whose 95% Wilson interval lies "
          "wholly below that of every control family (random dims, 3 seeds pooled; energy-matched, "
          "3 seeds pooled; the lowest-norm dims), and keeps a smaller share of the original "
          "contextual accuracy than of the parametric (over the facts the unmodified arm answers); "
          f"not tested when the unmodified arm solves fewer than {MIN_SOLVED_5} contextual "
          "episodes or knows no fact. The claim's verdict is the RoPE arm's; the λ-massive set's "
          "accuracies are reported beside it", check_5),
)
RULES = {c.name: c.rule for c in CLAIMS}
NEEDS_ROPE = ("1", "2", "3", "4")  # read the RoPE arm's totals: checked only when it was run


def claims(res: RopeCauseResults) -> dict[str, Claim]:
    """The paper's claims checked on the arms with their fixed rules (``CLAIMS``)."""
    return {c.name: c.apply(res) for c in CLAIMS if c.name not in NEEDS_ROPE or "rope" in res.arms}


def claim_disruption(accuracy: dict[str, dict[str, Any]]) -> Claim:
    """Claim (5) on {arm: accuracy per condition and kind} alone."""
    return dataclasses.replace(CLAIMS[4], check=disruption_outcome).apply(accuracy)


def collect(preset, out: Path, reference: dict[str, Any] | None, sha: str | None) -> RopeCauseResults:
    results = RopeCauseResults(
        sha, to_plain(preset), DEFINITIONS, {arm: arm_result(out / "arms" / arm) for arm in preset.arms},
        None if reference is None else reference_result(reference))
    return dataclasses.replace(results, claims=claims(results))
