"""In-context key→value recall: ``pairs`` word→number lines, one word asked for. Choices: the right
number and three other numbers from the same list (so only the binding, not the presence of a
number, gives the answer away)."""

from __future__ import annotations

import random

from mvjax.data.tasks.base import Item, Task

WORDS = ("apple river candle tiger window garden pencil rocket silver forest bottle castle "
         "dragon mirror planet violin anchor butter falcon marble").split()


def recall_task(n: int, pairs: int = 6, seed: int = 0) -> Task:
    if n < 1 or not 4 <= pairs <= len(WORDS):
        raise ValueError(f"recall needs n ≥ 1 and 4 ≤ pairs ≤ {len(WORDS)}; got {n}, {pairs}")
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        words = rng.sample(WORDS, pairs)
        values = [str(v) for v in rng.sample(range(100, 1000), pairs)]
        q = rng.randrange(pairs)
        lines = "".join(f"{w}: {v}\n" for w, v in zip(words, values))
        prompt = (f"Here is a list of words and their numbers.\n{lines}"
                  f"Question: what is the number of {words[q]}?\nAnswer: the number of {words[q]} is")
        others = [values[i] for i in rng.sample([i for i in range(pairs) if i != q], 3)]
        choices = [" " + v for v in [values[q], *others]]
        rng.shuffle(choices)
        items.append(Item(prompt, tuple(choices), " " + values[q], " " + values[q]))
    return Task("kv_recall", "contextual", tuple(items),
                f"{pairs} word→number pairs, one asked; 4 choices from the list",
                exact_chance=1 / pairs)  # copying any listed number
