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

import numpy as np

from analysis.claims import Claim, Outcome
from analysis.summaries import (DEFINITIONS, Curves, SiteSummary, SiteTotals, sites_from_json,
                                sites_json, summarize_norms, training_curves)


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

    def totals(self, site: str) -> SiteTotals:
        return self.final[site].totals()

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return out | {"curves": self.curves.to_json(), "final": sites_json(self.final)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ArmResult":
        fields = {f.name: data[f.name] for f in dataclasses.fields(cls)}
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
        from mvjax.atomic import read_json_state, require

        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: pass a rope-cause results.json or its "
                                    "directory")
        data = read_json_state(path, "rerun the experiment that wrote it")
        for key in ("preset", "definitions", "arms"):
            require(data, key, dict, path)
        return cls.from_json(data)


def _final_counts(analyzed_sites: dict[str, list[dict[str, Any]]], rotary: bool) -> dict[str, Any]:
    return {site: {
        "n_massive": sum(m["n_massive"] for m in layers),
        "n_massive_rotating": sum(m["n_massive_rotating"] for m in layers),
        "n_massive_unrotated": sum(m["n_massive"] - m["n_massive_rotating"] for m in layers)
        if rotary else None,
        "n_massive_low_freq": sum(m["n_massive_low_freq"] for m in layers)}
        for site, layers in analyzed_sites.items()}


def arm_result(arm_dir: Path) -> ArmResult:
    from analysis.analyze import RESULTS_FILE, Analysis
    from mvjax.atomic import read_json_state
    from mvjax.config import ModelConfig, to_plain
    from train.config import ExperimentConfig
    from train.metrics import read_metrics

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
        config=exp.to_dict())


def measure_reference(model: str, seq_len: int, n_rows: int = 4) -> dict[str, Any]:
    """A pretrained model measured like the arms: norms and first-token mass of every layer, on
    the embedded analysis sample (BOS-first windows), through the same jitted probe."""
    import jax
    from flax import nnx

    from analysis.analyze import make_sequences
    from analysis.sample import sample_texts
    from mvjax.load import load_pretrained
    from train.metrics import make_concentration_fn

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
    from mvjax.config import ModelConfig

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
    return Outcome({s: t.to_json() for s, t in r.items()}, _qk(r) > 0 and r["v"].n_massive == 0)


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


def check_4(res: RopeCauseResults) -> Outcome:
    r, qk = _totals(res, "rope"), ("q_rot", "k_rot")
    low = res.arms["rope"].final_analyze_summary
    n4 = {"rope_massive_low_freq_share": {s: low[s]["massive_low_freq_share"] for s in qk},
          "rope_band_low_share": {s: r[s].band_low_share_median for s in qk}}
    shares = n4["rope_massive_low_freq_share"].values()
    ok = all(v > 0.5 for v in shares if v is not None) and any(v is not None for v in shares)
    partial = res.arms.get("partial-rope")
    if partial is not None:
        n4["partial_massive_unrotated"] = {s: partial.final_counts[s]["n_massive_unrotated"]
                                           for s in qk}
        n4["partial_massive_rotated"] = {s: partial.final_counts[s]["n_massive_rotating"]
                                         for s in qk}
        n4["partial_rotated_energy_share"] = {
            s: partial.final[s].column("rotated_energy_share") for s in qk}
        ok = ok and all(v == 0 for v in n4["partial_massive_unrotated"].values())
    return Outcome(n4, None if _qk(r) == 0 else ok)


def retention(acc: dict[str, Any], cond: str, kind: str) -> float | None:
    """Accuracy of ``kind`` under ``cond`` as a share of the unmodified model's (None when the
    unmodified model scores nothing there)."""
    base, hit = acc["original"][kind], acc.get(cond, {}).get(kind)
    if not base or not base["accuracy"] or hit is None:
        return None
    return hit["accuracy"] / base["accuracy"]


def disruption_outcome(accuracy: dict[str, dict[str, Any]]) -> Outcome:
    """Claim (5) from each arm's accuracy per condition and kind; decided on the RoPE arm, every
    arm's retentions in the numbers."""
    numbers = {arm: {"original": acc["original"],
                     **{f"{kind}_retention_{cond}": retention(acc, cond, kind)
                        for cond in ("massive", "random_s0") for kind in ("contextual", "parametric")}}
               for arm, acc in accuracy.items()}
    r = numbers.get("rope")
    if r is None or None in (r["contextual_retention_massive"], r["parametric_retention_massive"],
                             r["contextual_retention_random_s0"]):
        return Outcome(numbers, None)
    return Outcome(numbers, r["contextual_retention_massive"] < r["parametric_retention_massive"]
                   and r["contextual_retention_massive"] < r["contextual_retention_random_s0"])


def check_5(res: RopeCauseResults) -> Outcome:
    return disruption_outcome({a: arm.disruption["accuracy"] for a, arm in res.arms.items()})


# The paper's claims, each with its fixed rule (written before any run) and the code that applies it.
CLAIMS = (
    Claim("1", "Q/K concentrate with RoPE, V does not",
          "holds iff the RoPE arm has > 0 massive entries in Q+K (post-RoPE) and 0 in V", check_1),
    Claim("2", "from the first layer",
          "holds iff the first layer with a massive Q or K entry in the RoPE arm is layer 0", check_2),
    Claim("3", "not (or far weaker) with NoPE and ALiBi",
          "holds iff NoPE's and ALiBi's Q+K massive counts are each at most half of RoPE's "
          "(not tested when RoPE has none)", check_3),
    Claim("4", "in low-frequency dims, and only among rotated dims with partial RoPE",
          "holds iff more than half of RoPE's massive Q and K entries lie in the low-frequency half "
          "and partial RoPE has none outside its rotated dims (not tested when RoPE has none)",
          check_4),
    Claim("5", "disrupting them hurts contextual more than parametric accuracy",
          "holds iff, in the RoPE arm, mean-replacing its top-1 Q and K dims per head (all "
          "layers, post-RoPE) keeps a smaller share of the original contextual accuracy than of "
          "the parametric accuracy (over the facts the unmodified model answers) and a smaller "
          "share than the random-dims control keeps; not tested when the RoPE arm solves no "
          "contextual episode or knows no fact", check_5),
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
    from mvjax.config import to_plain

    results = RopeCauseResults(
        sha, to_plain(preset), DEFINITIONS, {arm: arm_result(out / "arms" / arm) for arm in preset.arms},
        None if reference is None else reference_result(reference))
    return dataclasses.replace(results, claims=claims(results))
