"""The typed records of a rope-cause ``results.json``: per arm, the concentration metrics over
training (layers × logged steps) from the training logs, the final model's ``analyze`` numbers and
task accuracies, a reference model measured the same way, and the claim verdicts.

The results are typed records (``RopeCauseResults`` → ``ArmResult`` → ``analysis.summaries``
records) that read and write the JSON schema, so a saved ``results.json`` loads back whole::

    res = RopeCauseResults.load("docs/rope-cause-cpu/results.json")
    res.arms["rope"].totals("k_rot").n_massive

An arm's claim-(5) accuracies (its ``disrupt.json``'s ``accuracy``) are an ``ArmAccuracy`` of
``ExactScore``s (``ArmResult.accuracy``). A run directory becomes these records in
``analysis.experiments.rope_cause.measure``.

The claims are ``analysis.claims.Claim`` objects: their rules are written in
``analysis.experiments.rope_cause.claims``, before any run, and printed in the report beside the
numbers; they use the fixed massive definition (λ=5, per-head mean) and never a tuned one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from mvjax.analysis.claims import Claim
from mvjax.analysis.summaries import Curves, SiteSummary, SiteTotals, sites_from_json, sites_json
from mvjax.atomic import read_json_state, require
from mvjax.data.tasks.base import wilson_interval

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

    @property
    def accuracy(self) -> ArmAccuracy:
        """The claim-(5) accuracies of ``disruption`` (its ``accuracy``), typed."""
        return ArmAccuracy.from_json(self.disruption["accuracy"])

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
class ReferenceMeasurement:
    """A pretrained model measured like the arms (``reference.json``, cached in OUT): its config,
    the tokens and window length the probe read, per site the norm matrices (layers × heads ×
    dims) and per layer and head the attention mass on the first token."""

    model: str
    config: dict[str, Any]
    n_tokens: int
    seq_len: int
    norms: dict[str, list]
    first_token_mass: list

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ReferenceMeasurement":
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


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


@dataclasses.dataclass(frozen=True)
class ExactScore:
    """Greedy exact match of one condition on one kind of held-out episodes: k of n right (older
    results kept only the accuracy: ``correct`` None), its Wilson 95% interval, and the per-item
    outcomes (``"0110…"``, in task order) where recorded. Writes back the keys it was read with, in
    the schema's order (n, correct, accuracy, ci95, hits)."""

    n: int
    accuracy: float
    correct: int | None = None
    ci95: list[float] | None = None
    hits: str | None = None

    @property
    def solved(self) -> int:
        """Items answered right (older results kept only the accuracy: k = accuracy · n exactly)."""
        return int(self.correct) if self.correct is not None else round(self.accuracy * self.n)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ExactScore":
        unknown = set(data) - {"n", "correct", "accuracy", "ci95", "hits"}
        if unknown:
            raise ValueError(f"an exact-match score has unknown keys {sorted(unknown)}")
        return cls(n=data["n"], accuracy=data["accuracy"], correct=data.get("correct"),
                   ci95=data.get("ci95"), hits=data.get("hits"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n}
        if self.correct is not None:
            out["correct"] = self.correct
        out["accuracy"] = self.accuracy
        if self.ci95 is not None:
            out["ci95"] = list(self.ci95)
        return out | ({} if self.hits is None else {"hits": self.hits})


@dataclasses.dataclass(frozen=True)
class ArmAccuracy:
    """One arm's claim-(5) accuracies: per condition (in the file's order: original, massive, the
    ablations and controls, ``random_s0``…), per kind (contextual, parametric), an ``ExactScore``,
    or None where the condition counted no item of that kind."""

    conditions: dict[str, dict[str, ExactScore | None]]

    def score(self, condition: str, kind: str) -> ExactScore | None:
        """``condition``'s score on ``kind`` (None: not scored, or no item counted)."""
        return self.conditions.get(condition, {}).get(kind)

    def condition_json(self, condition: str) -> dict[str, Any] | None:
        """One condition's scores as results.json holds them (None: not scored)."""
        scores = self.conditions.get(condition)
        return None if scores is None else {k: None if s is None else s.to_json() for k, s in scores.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ArmAccuracy":
        return cls({c: {k: None if s is None else ExactScore.from_json(s) for k, s in kinds.items()}
                    for c, kinds in data.items()})

    def to_json(self) -> dict[str, Any]:
        return {c: self.condition_json(c) for c in self.conditions}


def counted(k: int, n: int) -> dict[str, Any]:
    """k of n right: the accuracy record every claim-(5) table reads, with its Wilson CI."""
    return {"n": n, "correct": k, "accuracy": k / n, "ci95": list(wilson_interval(k, n))}
