"""User task files: one JSON object per line, either
``{"prompt": ..., "choices": [...], "answer": ...}`` (ranked by log-likelihood; ``answer`` is the
text of the right choice; an optional ``target`` is also scored by greedy exact match) or
``{"prompt": ..., "target": ...}`` (greedy exact match). The task is named after the file.

An optional ``"kind": "contextual" | "parametric"`` says what the task tests (the answer is in the
prompt, or must come from the model's weights); declared tasks enter the experiments' claims like
the built-in ones. Every line of a file has the same kind; without one the kind is ``user``
(scored, reported, never counted in a claim)."""

from __future__ import annotations

import json
from pathlib import Path

from mvjax.data.tasks.base import KINDS, Item, Task


def _check_text(row: dict, where: str) -> None:
    """JSON's ``\\ud800`` escapes decode to lone surrogates, which no tokenizer can encode: name
    the line and the field here rather than fail in the tokenizer without either."""
    for field in ("prompt", "target", "answer", "choices"):
        value = row.get(field)
        for text in value if isinstance(value, list) else [value]:
            if not isinstance(text, str):
                continue
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(f"{where}: {field!r} holds a lone surrogate "
                                 f"{text[e.start]!r} at character {e.start + 1}, which is not "
                                 "text: replace the \\u escape by the character it stands for, "
                                 "or remove it") from None


def load_task_file(path: str | Path) -> Task:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist: pass a JSONL file")
    items, kinds = [], set()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"task file {path} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where} is not valid JSON ({e.msg}): write one object per line") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise ValueError(f"{where} has no \"prompt\" string: each line needs "
                             "{\"prompt\": ..., \"choices\": [...], \"answer\": ...} or {\"prompt\": ..., \"target\": ...}")
        _check_text(row, where)
        kind = row.get("kind", "user")
        if kind not in KINDS:
            raise ValueError(f"{where}: \"kind\" {kind!r} is invalid: use \"contextual\" or \"parametric\"")
        kinds.add(kind)
        if len(kinds) > 1:
            raise ValueError(f"{where}: kind {kind!r} differs from earlier lines ({sorted(kinds - {kind})}): "
                             "one file is one task of one kind; split it into two files")
        choices, answer, target = row.get("choices"), row.get("answer"), row.get("target")
        if choices is None and target is None:
            raise ValueError(f"{where} has neither \"choices\"+\"answer\" nor \"target\": give one")
        if choices is not None:
            if (not isinstance(choices, list) or len(choices) < 2
                    or not all(isinstance(c, str) and c for c in choices)):
                raise ValueError(f"{where}: \"choices\" must be a list of at least 2 non-empty strings")
            if answer not in choices:
                raise ValueError(f"{where}: answer {answer!r} is not among the choices {choices}: "
                                 "the answer must be the text of one choice")
        if target is not None and not (isinstance(target, str) and target):
            raise ValueError(f"{where}: \"target\" must be a non-empty string")
        try:
            items.append(Item(row["prompt"], tuple(choices or ()), answer, target))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    if not items:
        raise ValueError(f"task file {path} is empty: write one JSON object per line")
    kind = kinds.pop()
    return Task(path.stem, kind, tuple(items), f"task file {path.name} ({kind})")
