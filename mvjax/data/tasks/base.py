"""Items, tasks and their scorers: pure functions of log-likelihoods and token ids.

Two ways to score an item:
  rank   — the gold ``answer`` must have the strictly highest summed log-likelihood of its tokens
           after the prompt among the item's ``choices`` (ties count as wrong); chance 1/K.
  exact  — greedy decoding reproduces the ``target``'s tokens (teacher-forced: every target token
           is the argmax given the prompt and the target tokens before it, which is exactly when
           greedy decoding emits them); chance ≈ 0.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

KINDS = ("contextual", "parametric", "user")


@dataclasses.dataclass(frozen=True)
class Item:
    prompt: str
    choices: tuple[str, ...] = ()
    answer: str | None = None  # the text of the right choice
    target: str | None = None  # greedy exact-match target

    def __post_init__(self) -> None:
        if not self.choices and self.target is None:
            raise ValueError("an item needs choices with an answer, or a target")
        if self.choices and self.answer not in self.choices:
            raise ValueError(f"answer {self.answer!r} is not among the choices {list(self.choices)}")
        if self.choices and len(set(self.choices)) != len(self.choices):
            raise ValueError(f"choices {list(self.choices)} repeat: give distinct choices")

    @property
    def answer_index(self) -> int | None:
        return self.choices.index(self.answer) if self.choices else None


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    kind: str
    items: tuple[Item, ...]
    description: str = ""
    exact_chance: float = 0.0  # greedy exact by copying any value the prompt lists (recall: 1/#pairs)
    depths: tuple[float, ...] | None = None  # passkey: where each item's key sits (share of the filler before it)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task kind {self.kind!r} is invalid: use one of {KINDS}")
        if not self.items:
            raise ValueError(f"task {self.name!r} has no items")
        if self.depths is not None and len(self.depths) != len(self.items):
            raise ValueError(f"task {self.name!r} has {len(self.depths)} depths for {len(self.items)} "
                             "items: give one depth per item")

    @property
    def rank_chance(self) -> float | None:
        """Mean 1/K over the items with choices (None when no item has choices)."""
        ks = [len(it.choices) for it in self.items if it.choices]
        return sum(1 / k for k in ks) / len(ks) if ks else None

    @property
    def has_targets(self) -> bool:
        return any(it.target is not None for it in self.items)


def rank_correct(logliks: Sequence[float], answer_index: int) -> bool:
    """True iff the gold choice has the strictly highest log-likelihood."""
    gold = logliks[answer_index]
    return all(gold > x for i, x in enumerate(logliks) if i != answer_index)


def exact_match(greedy_ids: Sequence[int], target_ids: Sequence[int]) -> bool:
    """True iff greedy decoding emitted exactly the target's tokens (same length, same ids)."""
    return len(target_ids) > 0 and list(greedy_ids) == list(target_ids)


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for k successes in n trials ((0, 1) when n = 0)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def difference_interval(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float]:
    """(p1 − p2, lower, upper): Newcombe's hybrid score interval (95%) for a difference of two
    proportions, from their Wilson intervals — stable at 0% and 100%, unlike the Wald interval.
    Unpaired, so conservative when both are measured on the same items."""
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson_interval(k1, n1), wilson_interval(k2, n2)
    d = p1 - p2
    return d, d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def accuracy_summary(correct: Sequence[bool], chance: float) -> dict:
    """n, accuracy, chance, accuracy above chance and the Wilson 95% CI of the accuracy."""
    n, k = len(correct), int(sum(bool(c) for c in correct))
    acc = k / n if n else float("nan")
    lo, hi = wilson_interval(k, n)
    return {"n": n, "correct": k, "accuracy": acc, "chance": chance,
            "above_chance": acc - chance if n else float("nan"), "ci95": [lo, hi],
            "clearly_above_chance": bool(n and lo > chance)}
