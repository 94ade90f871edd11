"""Tasks for the disruption experiments: seeded generators (no downloads), each item with its
choices and/or greedy target, each task with a stated chance level; plus user task files (JSONL).

    tasks = builtin_tasks(count_tokens=lambda s: len(tok.encode(s)), n=32, seed=0)
    tasks.append(load_task_file("my_set.jsonl"))

Scoring lives in ``mvjax.data.tasks.base`` (pure functions on log-likelihoods and token ids).
"""

from __future__ import annotations

from mvjax.data.tasks.arithmetic import arithmetic_task
from mvjax.data.tasks.base import Item, Task, accuracy_summary, rank_correct, wilson_interval
from mvjax.data.tasks.classify import classify_task
from mvjax.data.tasks.facts import facts_task, world_task
from mvjax.data.tasks.jsonl import load_task_file
from mvjax.data.tasks.passkey import passkey_task
from mvjax.data.tasks.reading import reading_task
from mvjax.data.tasks.recall import recall_task

__all__ = ["Item", "Task", "accuracy_summary", "arithmetic_task", "builtin_tasks", "classify_task",
           "facts_task", "load_task_file", "passkey_task", "rank_correct", "reading_task",
           "recall_task", "wilson_interval", "world_task"]

PASSKEYS = ((128, 5), (256, 5), (512, 5), (1024, 5), (128, 6), (256, 12))  # (tokens, digits)


def builtin_tasks(count_tokens, n: int, seed: int = 0,
                  passkeys: tuple[tuple[int, int], ...] = PASSKEYS, max_len: int | None = None,
                  facts_every: int = 1) -> list[Task]:
    """The contextual tasks (passkey per (length, digits) — the 5-digit key at every length, the
    paper's 6 digits at 128 and 12 at 256 —, in-context classification, arithmetic word problems,
    key→value recall, reading), ``n`` items each, and the parametric tables (facts, world; every
    ``facts_every``-th item). Passkeys longer than ``max_len`` - 16 tokens are left out."""
    tasks = [passkey_task(n, length, count_tokens, digits=d, seed=seed + i)
             for i, (length, d) in enumerate(passkeys) if max_len is None or length + 16 <= max_len]
    tasks += [classify_task(n, seed=seed + 300), arithmetic_task(n, seed=seed + 400),
              recall_task(n, seed=seed + 100), reading_task(n, seed=seed + 200)]
    for t in (facts_task(seed), world_task(seed)):
        tasks.append(Task(t.name, t.kind, t.items[::facts_every], t.description))
    return tasks
