"""A scored run read by prompt-length bin and task family (the ``--preset confounds`` tasks, whose
names end in ``_L<bin>``): per-item greedy exact hits joined across tasks, paired with the
unmodified model's, and the kind × length-bin table of any conditions. Disrupt's confound rules
and both experiments' reports read a run through these, so a bin means the same everywhere."""

from __future__ import annotations

import statistics as st

from mvjax.analysis.records import ScoredRun
from mvjax.data.tasks.lengths import BINS, length_bin

KINDS = ("contextual", "parametric")


def family_of(task: str) -> str:
    """``passkey_L256`` → ``passkey``."""
    return task.rsplit("_L", 1)[0] if "_L" in task else task


def bins_of(run: ScoredRun) -> tuple[int, ...]:
    return tuple(run.bins or BINS)


def task_bin(run: ScoredRun, task: str) -> int:
    """A task's length bin, from its recorded longest prompt (tokens, BOS included)."""
    return length_bin(run.tasks[task].max_prompt_tokens, bins_of(run))


def hits(run: ScoredRun, cond: str, task: str) -> str | None:
    """Per-item greedy exact outcomes of ``task`` under ``cond`` (every item), or None."""
    c = run.conditions.get(cond)
    s = None if c is None else c.score(task, "exact")
    return None if s is None else s.hits


def joined(run: ScoredRun, cond: str, kind: str, length: int | None = None) -> tuple[str, str] | None:
    """(original's hits, ``cond``'s hits) over every task of ``kind`` (in bin ``length``, or every
    bin), concatenated in task order: paired item by item."""
    a, b = [], []
    for t, rec in run.tasks.items():
        if rec.kind != kind or (length is not None and task_bin(run, t) != length):
            continue
        o, c = hits(run, "original", t), hits(run, cond, t)
        if o is None or c is None:
            return None
        a.append(o)
        b.append(c)
    return ("".join(a), "".join(b)) if a else None


def kind_hits(run: ScoredRun, cond: str, kind: str, length: int | None = None) -> tuple[int, int] | None:
    """(greedy exact hits, items) of ``cond`` over every item of ``kind`` (in bin ``length``, or
    every bin), or None where it was not scored."""
    pair = joined(run, cond, kind, length)
    return None if pair is None else (pair[1].count("1"), len(pair[1]))


def kind_percent(run: ScoredRun, column: str, kind: str, length: int | None = None) -> list[float]:
    """Greedy exact % of ``kind`` under each condition of ``column`` (one value per seed of a
    seeded control: seeds are units); empty where nothing was scored."""
    hits_n = (kind_hits(run, c, kind, length) for c in members(run, column))
    return [100 * h[0] / h[1] for h in hits_n if h is not None]


def members(run: ScoredRun, column: str) -> list[str]:
    """The conditions of a column: itself, or a seeded control's seeds (random → random_s0, …)."""
    return [column] if column in run.conditions else [c.name for c in run.seeded(column)]


def kind_cell(run: ScoredRun, column: str, kind: str, length: int | None) -> str:
    """Greedy exact % of a kind (in a bin, or every bin); a seeded column as median [min–max] of
    its seeds' accuracies (seeds are units)."""
    accs = kind_percent(run, column, kind, length)
    if not accs:
        return "–"
    if len(accs) == 1:
        return f"{accs[0]:.1f}"
    return f"{st.median(accs):.1f} [{min(accs):.0f}–{max(accs):.0f}] ({len(accs)} seeds)"


def bin_table(run: ScoredRun, columns: list[tuple[str, str]]) -> str:
    """Kinds × length bins (and every bin) × ``columns`` ((label, column) pairs), greedy exact on
    every item."""
    rows = ["| kind, prompt tokens (n) | " + " | ".join(c for c, _ in columns) + " |",
            "|---" * (len(columns) + 1) + "|"]
    for kind in KINDS:
        for length in (*bins_of(run), None):
            pair = joined(run, "original", kind, length)
            if pair is None:
                continue
            where = "all bins" if length is None else f"≤{length}"
            rows.append(f"| {kind}, {where} (n={len(pair[0])}) | "
                        + " | ".join(kind_cell(run, c, kind, length) for _, c in columns) + " |")
    return "\n".join(rows)
