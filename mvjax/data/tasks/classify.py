"""In-context classification whose labels exist only in the prompt (IMDB's role in the paper,
without its prior): a few labelled one-line reviews, then an unlabelled one. The two label words
are drawn per item from a pool of unrelated words and assigned to positive / negative at random,
so no prior about the words helps — only reading the examples' pairing does. Choices: the two
label words (chance 1/2); the classes are balanced over the items.

SmolLM2-135M cannot do it: 52/100 with this design (benchmarks/task_baselines.py), and on 32–40
items each, 19/32 with the rule also stated in words, 19/32 when the query repeats an example's
adjective, 17/40 when it repeats a whole example, 22/40 with ten examples — none clearly above
chance. The task stays as the paper's IMDB role for larger models; a report flags it when the
unmodified model is not above chance."""

from __future__ import annotations

import random

from mvjax.data.tasks.base import Item, Task

THINGS = "film meal hotel book concert phone game trip class show".split()
GOOD = "wonderful excellent delightful superb lovely brilliant fantastic great".split()
BAD = "terrible awful dreadful horrible boring disappointing poor miserable".split()
LABELS = "blue green river stone apple tiger north south window candle".split()


def review(rng: random.Random, good: bool) -> str:
    adj = rng.choice(GOOD if good else BAD)
    return f"The {rng.choice(THINGS)} was {adj}."


def classify_task(n: int, shots: int = 6, seed: int = 0) -> Task:
    if n < 1 or shots < 2 or shots % 2:
        raise ValueError(f"classify needs n ≥ 1 and an even shots ≥ 2; got {n}, {shots}")
    rng = random.Random(seed)
    items = []
    for i in range(n):
        pos, neg = rng.sample(LABELS, 2)
        shown = [True] * (shots // 2) + [False] * (shots // 2)
        rng.shuffle(shown)
        lines = "".join(f"Review: {review(rng, g)}\nLabel: {pos if g else neg}\n" for g in shown)
        good = i % 2 == 0
        prompt = (f"Each review is labelled {pos} or {neg}.\n{lines}"
                  f"Review: {review(rng, good)}\nLabel:")
        answer = " " + (pos if good else neg)
        items.append(Item(prompt, (" " + pos, " " + neg), answer, answer))
    return Task("classify", "contextual", tuple(items),
                f"{shots}-shot sentiment with two arbitrary label words per item; 2 choices")
