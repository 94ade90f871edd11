"""Arithmetic word problems whose numbers are all in the prompt (GSM8K's role, one step): a
person has some objects, gains or loses some, how many now? Choices: the answer, the two numbers
of the problem and the result of the other operation (chance 1/4; the distractors are exactly
what a model that does not read or combine the numbers would say). Greedy exact target: the
answer."""

from __future__ import annotations

import random

from mvjax.data.tasks.base import Item, Task

NAMES = "Tom Anna Ben Lucy Sam Mia Jack Emma Leo Zoe".split()
OBJECTS = "apples pencils books coins stickers marbles cookies stamps".split()
GAIN = "{n} has {a} {o}. {p} gets {b} more {o}. How many {o} does {n} have now?"
LOSS = "{n} has {a} {o}. {p} gives away {b} {o}. How many {o} does {n} have now?"


def arithmetic_task(n: int, seed: int = 0) -> Task:
    if n < 1:
        raise ValueError(f"arithmetic needs n ≥ 1; got {n}")
    rng = random.Random(seed)
    items = []
    while len(items) < n:
        a, b = rng.randint(5, 19), rng.randint(2, 9)
        add = len(items) % 2 == 0
        name = rng.choice(NAMES)
        pron = "She" if name in ("Anna", "Lucy", "Mia", "Emma", "Zoe") else "He"
        text = (GAIN if add else LOSS).format(n=name, a=a, b=b, o=rng.choice(OBJECTS), p=pron)
        right, other = (a + b, a - b) if add else (a - b, a + b)
        values = [right, a, b, other]
        if len(set(values)) < 4:
            continue
        choices = [f" {v}" for v in values]
        rng.shuffle(choices)
        items.append(Item(f"Question: {text}\nAnswer: The answer is", tuple(choices), f" {right}",
                          f" {right}"))
    return Task("arithmetic", "contextual", tuple(items),
                "one-step add / subtract word problems, numbers in the prompt; 4 choices "
                "(answer, both operands, the other operation)")
