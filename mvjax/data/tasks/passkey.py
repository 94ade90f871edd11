"""Passkey retrieval: a k-digit key hidden at a controlled depth in repetitive filler, then asked
for. The prompt is grown to (at most) a requested length in tokens; depth runs evenly over
[0, 1] across the items. Choices: the key and three other random keys of the same length."""

from __future__ import annotations

import random
from typing import Callable

from mvjax.data.tasks.base import Item, Task

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
INTRO = "There is a pass key hidden in this text. Find it and remember it.\n"
QUESTION = "\nWhat is the pass key? The pass key is"


def passkey_prompt(key: str, depth: float, repeats: int) -> str:
    at = round(depth * repeats)
    parts = [FILLER] * repeats
    parts.insert(at, f"The pass key is {key}. Remember it. {key} is the pass key. ")
    return INTRO + "".join(parts) + QUESTION


def _fit_repeats(length: int, count_tokens: Callable[[str], int], digits: int = 5) -> int:
    """Most filler repeats whose prompt (plus BOS) fits ``length`` tokens, measured with a key of
    the task's own length (a 12-digit key is written twice: 14 more tokens than a 5-digit one)."""
    lo, hi = 0, max(1, length)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(passkey_prompt("0" * digits, 0.5, mid)) + 1 <= length:
            lo = mid
        else:
            hi = mid - 1
    return lo


def distinct_keys(rng: random.Random, digits: int, count: int = 4) -> list[str]:
    """``count`` different ``digits``-digit keys: the answer first, then the choices' distractors."""
    keys: list[str] = []
    while len(keys) < count:
        k = str(rng.randrange(10 ** (digits - 1), 10 ** digits))
        if k not in keys:
            keys.append(k)
    return keys


def passkey_task(n: int, length: int, count_tokens: Callable[[str], int] | None = None,
                 digits: int = 5, seed: int = 0) -> Task:
    """``n`` items whose prompts are at most ``length`` tokens (by ``count_tokens``; default: one
    token per 4 characters)."""
    if n < 1 or length < 32 or digits < 1:
        raise ValueError(f"passkey needs n ≥ 1, length ≥ 32 and digits ≥ 1; got {n}, {length}, {digits}")
    count = count_tokens or (lambda s: len(s) // 4)
    repeats = _fit_repeats(length, count, digits)
    rng = random.Random(seed)
    items, depths = [], []
    for i in range(n):
        keys = distinct_keys(rng, digits)
        depth = i / max(n - 1, 1)
        depths.append(round(depth * repeats) / repeats if repeats else depth)  # where the key landed
        choices = [" " + k for k in keys]
        rng.shuffle(choices)
        items.append(Item(passkey_prompt(keys[0], depth, repeats), tuple(choices), " " + keys[0],
                          " " + keys[0]))
    name = f"passkey_{length}" if digits == 5 else f"passkey_{length}_d{digits}"
    return Task(name, "contextual", tuple(items),
                f"{digits}-digit key in filler, prompts ≤ {length} tokens, depth 0→1; 4 choices",
                depths=tuple(depths))
