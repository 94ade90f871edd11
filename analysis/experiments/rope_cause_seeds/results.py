"""The typed input of ``mvjax experiment rope-cause-seeds``: what it reads of one arm's record in
one seed's rope-cause ``results.json`` (``SeedRun``)."""

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
