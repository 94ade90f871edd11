"""Reading: a short first-person profile (home town, job, pet, favourite food, each drawn at
random) followed by a question on one of them. The answer is only in the prompt; the choices are
the right value and three values of the same category that the profile does not mention (chance
1/4), so the model must read the profile, not guess from its priors.

(A first design — four people × objects × colours, asking a colour — left SmolLM2-135M at or
below chance, 3/16 and 8/16 with three people; this one is the simplification.)"""

from __future__ import annotations

import random

from mvjax.data.tasks.base import Item, Task

FIELDS = {
    "town": ("Where do I live? I live in", "I live in {}.",
             "Boston Denver Seattle Chicago Dallas Miami Phoenix Portland Atlanta Detroit".split()),
    "job": ("What is my job? I am a", "I work as a {}.",
            "teacher doctor farmer baker pilot nurse lawyer painter driver chef".split()),
    "pet": ("What pet do I have? I have a", "I have a pet {}.",
            "dog cat rabbit parrot turtle hamster horse goat snake duck".split()),
    "food": ("What is my favourite food? My favourite food is", "My favourite food is {}.",
             "pizza rice soup cheese bread pasta salad cake fish chicken".split()),
}
NAMES = "Sarah David Maria James Laura Peter Nina Omar Julia Carlos".split()


def reading_task(n: int, seed: int = 0) -> Task:
    if n < 1:
        raise ValueError(f"reading needs n ≥ 1; got {n}")
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        values = {f: rng.choice(v[2]) for f, v in FIELDS.items()}
        order = rng.sample(list(FIELDS), len(FIELDS))
        profile = " ".join(FIELDS[f][1].format(values[f]) for f in order)
        asked = rng.choice(list(FIELDS))
        question, _, pool = FIELDS[asked]
        prompt = f"My name is {rng.choice(NAMES)}. {profile}\nQuestion: {question}"
        others = rng.sample([v for v in pool if v != values[asked]], 3)
        choices = [" " + v for v in [values[asked], *others]]
        rng.shuffle(choices)
        items.append(Item(prompt, tuple(choices), " " + values[asked], " " + values[asked]))
    return Task("reading", "contextual", tuple(items),
                "first-person profile (town, job, pet, food), one asked; 4 choices, 3 not in it")
