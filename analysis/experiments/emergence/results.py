"""The typed record of ``emergence.json``: one training run's settings and its curves over
training (``RunCurves``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from mvjax.analysis.summaries import Curves


@dataclasses.dataclass(frozen=True)
class RunCurves:
    """One training run's settings and its curves over training (``emergence.json``'s ``runs``)."""

    run: str
    positional: dict[str, Any]
    head_dim: int
    hidden: int
    layers: int
    heads: int
    tokenizer: str
    source: str
    seq_len: int
    batch: int
    lr: float
    schedule: str
    weight_decay: float
    eval_loss: list[tuple[int, float]]
    curves: Curves
    definitions: dict[str, Any]
    made_by: str | None = None  # the command that first measured it

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return out | {"curves": self.curves.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunCurves":
        fields = {f.name: data.get(f.name) for f in dataclasses.fields(cls)}
        return cls(**fields | {"curves": Curves.from_json(data["curves"])})
