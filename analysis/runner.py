"""The condition runner disrupt and quantize share: a plan of conditions, each what it is (its
record in results.json) and how to score it; the checkpoint as the queue (``analysis.resume``:
finished pieces are read back, helpers on other cores take their share); the result so far
written beside the pieces after every condition (``partial.json``).

Why one runner: the two experiments repeated the same loop — plan → score closure → checkpoint
→ record — and a fix to one (resume, helpers, the partial result) had to be made twice."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from mvjax.analysis.resume import Checkpoint, in_plan_order

Entry = dict[str, Any]  # one condition as results.json records it (what it is | its scores)


@dataclasses.dataclass(frozen=True)
class Planned:
    """One condition of a plan: its name, what it is (``record``: the keys results.json gives it
    before its scores) and ``compute()`` → its scores, called only when no finished piece is saved."""

    name: str
    record: Entry
    compute: Callable[[], Entry]


def run_conditions(plan: Sequence[Planned], ck: Checkpoint,
                   assemble: Callable[[dict[str, Entry]], dict[str, Any]],
                   skip: Callable[[Planned], bool] | None = None) -> dict[str, Entry]:
    """Score every condition of ``plan`` this process wants (``ck.wanted``; ``skip`` leaves some to
    the caller), each its record | its scores, finished pieces from ``ck``; after each, the result
    so far — ``assemble(conditions in plan order)`` — is noted as partial.json. Returns the scored
    conditions in plan order."""
    by_name = {p.name: p for p in plan}
    done: dict[str, Entry] = {}

    def score(name: str) -> None:
        p = by_name[name]
        done[name] = p.record | ck.get(name, p.compute)
        ck.note("partial.json", assemble(in_plan_order(done, by_name)))

    ck.check_names(by_name)
    ck.each([p.name for p in plan if skip is None or not skip(p)], score)  # helpers share the plan
    return in_plan_order(done, by_name)
