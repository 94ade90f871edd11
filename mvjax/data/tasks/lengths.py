"""Length-matched task families: the same questions at every prompt length, so a contextual /
parametric comparison is not a short-prompt / long-prompt comparison in disguise.

The full SmolLM2 table compared parametric prompts of 6–12 tokens with contextual ones of 33–1,015.
Here every family is built in length bins (prompt tokens, BOS included, in (previous edge, edge]):
a question is put after neutral filler (passkey's own filler sentences) until its prompt reaches
its bin, so facts, world and arithmetic are asked at 32, 128, 256, 512 and 1,024 tokens; passkey
(which needs filler to hide its key) and key→value recall start at 128. Every prompt lands in the
bucket ``analysis.evaluate.bucket`` pads it to, so a bin is one compiled shape.

Passkey items record where the key sits (``Task.depths``: the share of the filler before the key,
0 = farthest from the question, 1 = just before it), binned by ``depth_bin``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from mvjax.data.tasks.arithmetic import arithmetic_task
from mvjax.data.tasks.base import Item, Task
from mvjax.data.tasks.facts import facts_task, world_task
from mvjax.data.tasks.passkey import FILLER, INTRO, QUESTION, distinct_keys
from mvjax.data.tasks.recall import recall_task

BINS = (32, 128, 256, 512, 1024)  # upper edges, prompt tokens with BOS
DEPTH_BINS = (0.25, 0.5, 0.75, 1.0)  # upper edges of the key-depth bins (the last one closed)
SHORT = ("facts", "world", "arithmetic")  # families asked in the first bin, without filler
LONG = ("passkey", "arithmetic", "kv_recall", "facts", "world")  # families of the other bins

Count = Callable[[str], int]


def bin_range(length: int, bins: tuple[int, ...] = BINS) -> tuple[int, int]:
    """(lower, upper): a bin holds prompts of lower < tokens ≤ upper (BOS included)."""
    if length not in bins:
        raise ValueError(f"length {length} is not a bin edge: use one of {bins}")
    i = bins.index(length)
    return (0 if i == 0 else bins[i - 1]), length


def length_bin(tokens: int, bins: tuple[int, ...] = BINS) -> int:
    """The bin (its upper edge) of a prompt of ``tokens`` tokens."""
    for edge in bins:
        if tokens <= edge:
            return edge
    raise ValueError(f"a prompt of {tokens} tokens is longer than the last bin {bins[-1]}: add a bin edge")


def depth_bin(depth: float, edges: tuple[float, ...] = DEPTH_BINS) -> str:
    """The label of a key depth's bin, e.g. ``"0.25-0.50"`` (the last bin includes 1)."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"key depth {depth} is outside [0, 1]: a depth is a share of the filler")
    lo = 0.0
    for hi in edges:
        if depth < hi or hi == edges[-1]:
            return f"{lo:.2f}-{hi:.2f}"
        lo = hi
    raise AssertionError("unreachable")


def after_filler(prompt: str, length: int, count: Count) -> str:
    """``prompt`` after as many filler sentences as keep it (plus BOS) within ``length`` tokens."""
    if count(prompt) + 1 > length:
        raise ValueError(f"prompt of {count(prompt) + 1} tokens does not fit {length}: "
                         "give larger bin edges (--bins)")
    step = max(1, count(FILLER))
    r = max(0, (length - 1 - count(prompt)) // step)
    while r > 0 and count(FILLER * r + "\n" + prompt) + 1 > length:
        r -= 1
    while count(FILLER * (r + 1) + "\n" + prompt) + 1 <= length:
        r += 1
    return prompt if r == 0 else FILLER * r + "\n" + prompt


def binned(task: Task, length: int, count: Count, bins: tuple[int, ...] = BINS) -> Task:
    """``task`` with every prompt grown by filler into the bin ending at ``length`` (the first
    bin: as it is); named ``{task}_L{length}``. Refuses a prompt that misses the bin."""
    lo, hi = bin_range(length, bins)
    items = []
    for it in task.items:
        prompt = it.prompt if lo == 0 else after_filler(it.prompt, hi, count)
        n = count(prompt) + 1
        if not lo < n <= hi:
            raise ValueError(f"task {task.name}: a prompt of {n} tokens misses the bin ({lo}, {hi}]: "
                             "shorten the question or give larger bin edges (--bins)")
        items.append(Item(prompt, it.choices, it.answer, it.target))
    return Task(f"{task.name}_L{length}", task.kind, tuple(items),
                f"{task.description}; prompts in ({lo}, {hi}] tokens", task.exact_chance)


def passkey_binned(n: int, length: int, count: Count, seed: int = 0, digits: int = 5,
                   bins: tuple[int, ...] = BINS) -> Task:
    """``n`` passkey items in the bin ending at ``length``, the key's depth running evenly over
    [0, 1]; ``Task.depths`` holds each item's realised depth (filler repeats before the key / all)."""
    lo, hi = bin_range(length, bins)
    rng = random.Random(seed)
    base = INTRO + "{}" + QUESTION
    sentence = "The pass key is {k}. Remember it. {k} is the pass key. "
    fixed = count(base.format(sentence.format(k="0" * digits)))
    step = max(1, count(FILLER))
    repeats = max(0, (hi - 1 - fixed) // step)
    while repeats and count(base.format(FILLER * repeats + sentence.format(k="0" * digits))) + 1 > hi:
        repeats -= 1
    if repeats == 0:
        raise ValueError(f"passkey needs filler: bin {length} is too short, give larger bin edges (--bins)")
    items, depths = [], []
    for i in range(n):
        keys = distinct_keys(rng, digits)
        at = round(i / max(n - 1, 1) * repeats)
        prompt = base.format(FILLER * at + sentence.format(k=keys[0]) + FILLER * (repeats - at))
        if not lo < count(prompt) + 1 <= hi:
            raise ValueError(f"a passkey prompt of {count(prompt) + 1} tokens misses ({lo}, {hi}]")
        choices = [" " + k for k in keys]
        rng.shuffle(choices)
        items.append(Item(prompt, tuple(choices), " " + keys[0], " " + keys[0]))
        depths.append(at / repeats)
    return Task(f"passkey_L{length}", "contextual", tuple(items),
                f"{digits}-digit key in filler, prompts in ({lo}, {hi}] tokens, depth 0→1; "
                "greedy exact (its 4 choices are not in the prompt: ranking is uninformative)",
                depths=tuple(depths))


def _subset(task: Task, n: int, seed: int) -> Task:
    """``n`` items of ``task`` (a seeded sample, the same in every bin), or all of them."""
    if n >= len(task.items):
        return task
    keep = sorted(random.Random(seed).sample(range(len(task.items)), n))
    return Task(task.name, task.kind, tuple(task.items[i] for i in keep), task.description,
                task.exact_chance)


def short_arithmetic(n: int, seed: int = 0) -> Task:
    """``arithmetic`` short enough for the first bin (33–37 tokens → at most 32): no "Question: "
    lead, and "How many apples now?" for "How many apples does Tom have now?"."""
    t = arithmetic_task(n, seed)
    items = tuple(Item(re.sub(r" does \w+ have now\?", " now?", it.prompt.removeprefix("Question: ")),
                       it.choices, it.answer, it.target) for it in t.items)
    return Task("arithmetic", t.kind, items, t.description + " (short wording: no 'Question:' "
                "lead, 'How many X now?')")


def family(name: str, n: int, seed: int) -> Task:
    """One family's items before any filler."""
    if name == "arithmetic":
        return short_arithmetic(n, seed + 400)
    if name == "kv_recall":
        return recall_task(n, pairs=4, seed=seed + 100)
    if name in ("facts", "world"):
        return _subset(facts_task(seed) if name == "facts" else world_task(seed), n, seed + 500)
    raise ValueError(f"unknown family {name!r}: use one of {sorted(set(SHORT) | set(LONG))}")


def confound_tasks(count: Count, n: int, seed: int = 0, bins: tuple[int, ...] = BINS,
                   max_len: int | None = None) -> list[Task]:
    """Every family in every bin it fits (``SHORT`` in the first, ``LONG`` in the others), ``n``
    items each (parametric: at most the table's size); bins beyond ``max_len`` − 16 are left out."""
    if n < 1:
        raise ValueError(f"n={n} is invalid: give at least one item per family and bin")
    if list(bins) != sorted(set(bins)) or bins[0] < 8:
        raise ValueError(f"bins {bins} are invalid: give increasing edges ≥ 8")
    tasks = []
    for i, length in enumerate(bins):
        if max_len is not None and length + 16 > max_len:
            continue
        for name in SHORT if i == 0 else LONG:
            if name == "passkey":
                tasks.append(passkey_binned(n, length, count, seed + 10 + i, bins=bins))
            else:
                tasks.append(binned(family(name, n, seed), length, count, bins))
    return tasks
