"""Tasks for the disruption experiments: seeded generators (no downloads), each item with its
choices and/or greedy target, each task with a stated chance level; plus user task files (JSONL).

    tasks = builtin_tasks(count_tokens=lambda s: len(tok.encode(s)), n=32, seed=0)
    tasks.append(load_task_file("my_set.jsonl"))

Scoring lives in ``mvjax.data.tasks.base`` (pure functions on log-likelihoods and token ids).
"""

from __future__ import annotations

from mvjax.data.tasks.base import Item, Task, accuracy_summary, rank_correct, wilson_interval
from mvjax.data.tasks.facts import facts_task
from mvjax.data.tasks.jsonl import load_task_file
from mvjax.data.tasks.passkey import passkey_task
from mvjax.data.tasks.reading import reading_task
from mvjax.data.tasks.recall import recall_task

__all__ = ["Item", "Task", "accuracy_summary", "builtin_tasks", "facts_task", "load_task_file",
           "passkey_task", "rank_correct", "reading_task", "recall_task", "wilson_interval"]


def builtin_tasks(count_tokens, n: int, seed: int = 0,
                  passkey_lengths: tuple[int, ...] = (128, 256, 512, 1024)) -> list[Task]:
    """The contextual tasks (one passkey task per prompt length, key→value recall, reading) and
    the parametric facts table, ``n`` items each (facts: the whole table)."""
    tasks = [passkey_task(n, length, count_tokens, seed=seed + i)
             for i, length in enumerate(passkey_lengths)]
    tasks += [recall_task(n, seed=seed + 100), reading_task(n, seed=seed + 200), facts_task()]
    return tasks
