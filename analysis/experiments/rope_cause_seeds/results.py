"""The typed records of ``mvjax experiment rope-cause-seeds``: what it reads of one arm's record in
one seed's rope-cause ``results.json`` (``SeedRun``) and what it writes, ``seeds.json``
(``SeedsDecision`` → ``ArmSeeds`` → ``SeedOutcome``)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from mvjax.analysis.experiments.rope_cause.results import ArmAccuracy


@dataclasses.dataclass(frozen=True)
class SeedRun:
    """One arm in one seed: its head size, the final model's natural-text norm matrices and λ=5
    counts per site (the concentration measures), and its claim-(5) accuracies (the rule)."""

    head_dim: int
    final_M: dict[str, list]
    final_counts: dict[str, dict[str, int | None]]
    accuracy: ArmAccuracy

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SeedRun":
        """From the arm's record in results.json (``ArmResult``'s JSON; the keys read here only)."""
        return cls(data["head_dim"], data.get("final_M", {}), data["final_counts"],
                   ArmAccuracy.from_json(data["disruption"]["accuracy"]))

    def to_json(self) -> dict[str, Any]:
        return {"head_dim": self.head_dim, "final_M": self.final_M, "final_counts": self.final_counts,
                "disruption": {"accuracy": self.accuracy.to_json()}}


@dataclasses.dataclass(frozen=True)
class SeedOutcome:
    """One seed by ``RULE``: contextual correct counts of the original, the massive edit, the
    random controls (the null), the energy-matched and lowest-norm controls (of ``n`` episodes);
    the empirical p; the retentions; the verdict of the rope-cause rule (``old_rule``); the paired
    massive-vs-original difference where per-item hits were recorded; the rule's three checks
    (tested seeds only); the verdict; and the concentration measures (``run.concentration``)."""

    original: int | None
    n: int | None
    massive: int | None
    null: list[int | None]
    energy_matched: list[int | None]
    lowest_norm: int | None
    p_null: float | None
    contextual_retention: float | None
    parametric_retention: float | None
    old_rule: str
    verdict: str
    paired_massive_vs_original: dict[str, Any] | None = None
    checks: dict[str, bool] | None = None
    concentration: dict[str, Any] | None = None

    ORDER = ("original", "n", "massive", "null", "energy_matched", "lowest_norm", "p_null",
             "contextual_retention", "parametric_retention", "old_rule", "paired_massive_vs_original",
             "checks", "verdict", "concentration")  # seeds.json's keys, in order
    OPTIONAL = ("paired_massive_vs_original", "checks", "concentration")  # left out while None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SeedOutcome":
        return cls(**{k: data.get(k) for k in cls.ORDER})

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.ORDER
                if not (k in self.OPTIONAL and getattr(self, k) is None)}


@dataclasses.dataclass(frozen=True)
class ArmSeeds:
    """One arm across seeds: each seed's outcome, the arm's verdict and why, the deciding seeds."""

    seeds: dict[int, SeedOutcome]
    verdict: str
    detail: str
    deciding_seeds: list[int]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ArmSeeds":
        return cls({int(s): SeedOutcome.from_json(o) for s, o in data["seeds"].items()}, data["verdict"],
                   data["detail"], data["deciding_seeds"])

    def to_json(self) -> dict[str, Any]:
        return {"seeds": {s: o.to_json() for s, o in self.seeds.items()}, "verdict": self.verdict,
                "detail": self.detail, "deciding_seeds": self.deciding_seeds}


@dataclasses.dataclass(frozen=True)
class SeedsDecision:
    """``seeds.json``: the rules as fixed, every arm across its seeds, the claim's verdict."""

    rule: str
    replacement_rule: str
    arms: dict[str, ArmSeeds]
    claim_5: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SeedsDecision":
        return cls(data["rule"], data["replacement_rule"],
                   {a: ArmSeeds.from_json(v) for a, v in data["arms"].items()}, data["claim_5"])

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "replacement_rule": self.replacement_rule,
                "arms": {a: v.to_json() for a, v in self.arms.items()}, "claim_5": self.claim_5}
