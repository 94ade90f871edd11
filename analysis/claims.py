"""One type for a claim checked on a result: its words, its rule, the function that applies the
rule, and — once applied — its numbers and verdict. Disrupt, quantize and rope-cause all build
their claims from ``Claim``, so a rule's text and its code sit in one object and a new claim is
one more object::

    claim = Claim("k_only_v", "K carries more λ=5 entries than V", "holds iff K's count > V's",
                  lambda r: Outcome({"k": ..., "v": ...}, ... > ...))
    print(claim.apply(results).sentence())

Verdicts are fixed words: ``holds``, ``does not hold``, ``not tested`` (the rule could not be
applied: its inputs are missing or degenerate).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, NamedTuple

HOLDS, FAILS, NOT_TESTED = "holds", "does not hold", "not tested"


class Outcome(NamedTuple):
    """What a check returns: the numbers it read, and True / False / None (not tested); ``detail``
    is an optional sentence fragment for the report (numbers formatted for people)."""

    numbers: dict[str, Any]
    held: bool | None
    detail: str = ""


def verdict_of(held: bool | None) -> str:
    return NOT_TESTED if held is None else HOLDS if held else FAILS


@dataclasses.dataclass(frozen=True)
class Claim:
    """``check(data) -> Outcome`` decides the claim by ``rule``; ``apply`` returns a copy with the
    numbers and verdict filled in (a claim not yet applied is ``not tested``)."""

    name: str
    claim: str
    rule: str
    check: Callable[[Any], Outcome] | None = dataclasses.field(default=None, compare=False)
    numbers: dict[str, Any] = dataclasses.field(default_factory=dict)
    verdict: str = NOT_TESTED
    detail: str = ""

    def apply(self, data: Any) -> "Claim":
        if self.check is None:
            raise ValueError(f"claim {self.name!r} has no check function: build it with one")
        numbers, held, detail = self.check(data)
        return dataclasses.replace(self, numbers=numbers, verdict=verdict_of(held), detail=detail)

    @property
    def held(self) -> bool | None:
        return None if self.verdict == NOT_TESTED else self.verdict == HOLDS

    def sentence(self) -> str:
        """One line for a report: the claim, the verdict, the numbers (or the detail), the rule."""
        said = self.detail or json.dumps(self.numbers)
        return f"{self.claim}: {self.verdict} — {said} (rule: {self.rule})."

    def to_json(self) -> dict[str, Any]:
        out = {"claim": self.claim, "rule": self.rule, "numbers": self.numbers,
               "verdict": self.verdict}
        return out | ({"detail": self.detail} if self.detail else {})

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any], rule: str | None = None) -> "Claim":
        """A claim as a results file recorded it (older files keep the rule apart: pass it)."""
        return cls(name, data["claim"], data.get("rule", rule or ""), None,
                   data.get("numbers", {}), data["verdict"], data.get("detail", ""))


def apply_all(claims: list[Claim], data: Any) -> list[Claim]:
    return [c.apply(data) for c in claims]


def claims_json(claims: list[Claim]) -> list[dict[str, Any]]:
    """A list of claims for a results file (each with its name)."""
    return [{"name": c.name, **c.to_json()} for c in claims]


def claim_lines(recorded: list[dict[str, Any]]) -> list[str]:
    """Markdown bullets, one sentence per claim recorded by ``claims_json``."""
    return [f"- {Claim.from_json(c.get('name', ''), c).sentence()}" for c in recorded]
