"""Arithmetic word problems whose numbers are all in the prompt (GSM8K's role, one step): a
person has some objects, gains or loses some; the answer line starts the equation with the
prompt's numbers ("Answer: 14 + 5 ="), so the model must read them and compute. Choices: the
result and three neighbours (within ±3, never one of the problem's numbers; chance 1/4); greedy exact
target: the result (never itself one of the problem's numbers).

(Asked with "Answer: Tom has" or with the operands and the other operation as distractors,
SmolLM2-135M sits at or below chance — 8/32 and 5/100 — so the equation lead-in is kept: 74/100
ranked, 65/100 greedy exact; benchmarks/task_baselines.py --tasks arithmetic.)"""

from __future__ import annotations

import random

from mvjax.data.tasks.base import Item, Task

NAMES = "Tom Anna Ben Lucy Sam Mia Jack Emma Leo Zoe".split()
SHE = {"Anna", "Lucy", "Mia", "Emma", "Zoe"}
OBJECTS = "apples pencils books coins stickers marbles cookies stamps".split()


def arithmetic_task(n: int, seed: int = 0) -> Task:
    if n < 1:
        raise ValueError(f"arithmetic needs n ≥ 1; got {n}")
    rng = random.Random(seed)
    items = []
    for i in range(n):
        add = i % 2 == 0
        a, b = rng.randint(5, 19), rng.randint(2, 9)
        while not add and a - b == b:  # the answer must not be a number of the problem
            b = rng.randint(2, 9)
        name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
        pron = "She" if name in SHE else "He"
        change = f"gets {b} more {obj}" if add else f"gives away {b} {obj}"
        right = a + b if add else a - b
        others = rng.sample([right + d for d in (-3, -2, -1, 1, 2, 3) if right + d not in (a, b)], 3)
        choices = [f" {v}" for v in [right, *others]]
        rng.shuffle(choices)
        prompt = (f"Question: {name} has {a} {obj}. {pron} {change}. How many {obj} does {name} "
                  f"have now?\nAnswer: {a} {'+' if add else '-'} {b} =")
        items.append(Item(prompt, tuple(choices), f" {right}", f" {right}"))
    return Task("arithmetic", "contextual", tuple(items),
                "one-step add / subtract word problems, numbers in the prompt, answer line starts "
                "the equation; 4 choices (the result and neighbours)")
