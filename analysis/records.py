"""Typed records of a disrupt or quantize results.json: a task's score by one metric (``Score``),
a task's scores (``TaskScore``), what each task is (``TaskRecord``), one condition's result
(``ConditionResult``) and the whole scored run (``ScoredRun``).

Why: the claims, tables and figures read these fields instead of string keys of nested dicts,
and the structure that used to be parsed back out of condition names (a control's seed in
``random_s2``, the keep-massive twin in ``…_keep_massive``, the position-0 twin in
``keep0_…``) is read once, here, into fields (``seed``, ``column``, ``kept``, ``twin_of``).

The records load from and write back the same JSON: every record remembers which keys its file
held, in their order (``keys``), and any key it does not know (``extra``), so a committed
results.json re-renders byte for byte. Values are kept as JSON gave them (no int/float coercion;
lists stay lists, but for a score's ``ci95`` pair). Parse a results dict here, once, where it is read — ``ScoredRun.load`` /
``ScoredRun.from_json`` — and pass the record on.
A record built in code (``keys=()``) writes its fields that are set, in declared order.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

R = TypeVar("R")
METRICS = ("rank_sum", "rank_per_token", "rank", "exact")  # the order score_task writes them
SEED_MARK = "_s"  # a seeded control's name: its column, "_s", its seed (random_s0)
KEEP0 = "keep0_"  # a disrupt condition's twin with position 0 (the sink) kept
# quantize name suffixes of the twins that keep dims in full precision, and what each keeps
KEPT_SUFFIXES = (("_keep_massive", "massive"), ("_keep_random", "random"),
                 ("_protect_random", "random"), ("_protect", "massive"))


def _derived(**kw: Any) -> Any:
    """A field that is not a JSON key (the condition's name, what is read off it)."""
    return dataclasses.field(metadata={"json": False}, **kw)


def _json_fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("json", True)
            and f.name not in ("keys", "extra")]


def _parse(cls: type[R], data: Mapping[str, Any], convert: Mapping[str, Callable[[Any], Any]] = {},
           **derived: Any) -> R:
    """``cls`` from a JSON object: known keys through ``convert`` (else as they are), unknown ones
    into ``extra``, the keys' order into ``keys``."""
    known = set(_json_fields(cls))
    kw = {k: convert.get(k, _same)(v) for k, v in data.items() if k in known}
    extra = {k: v for k, v in data.items() if k not in known}
    return cls(**kw, **derived, extra=extra, keys=tuple(data))


def _same(x: Any) -> Any:
    return x


def _plain(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _dump(record: Any) -> dict[str, Any]:
    """A record as its JSON object: the keys it was read with, in their order (built in code:
    every field that is set, in declared order, then ``extra``)."""
    keys = record.keys or [*(k for k in _json_fields(type(record)) if getattr(record, k) is not None),
                           *record.extra]
    return {k: record.extra[k] if k in record.extra else _plain(getattr(record, k)) for k in keys}


def _keys() -> Any:
    return dataclasses.field(default=(), compare=False, repr=False)


def _extra() -> Any:
    return dataclasses.field(default_factory=dict, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Score:
    """One task's accuracy by one metric: k of n right, its chance level and Wilson 95% interval;
    ``hits`` the per-item greedy exact outcomes (``"0110…"``) where recorded."""

    n: int
    correct: int
    accuracy: float
    chance: float | None = None
    above_chance: float | None = None
    ci95: tuple[float, float] | None = None
    clearly_above_chance: bool | None = None
    hits: str | None = None
    keys: tuple[str, ...] = _keys()
    extra: dict[str, Any] = _extra()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Score":
        return _parse(cls, data, {"ci95": lambda v: None if v is None else tuple(v)})

    def to_json(self) -> dict[str, Any]:
        out = _dump(self)
        if "ci95" in out and out["ci95"] is not None:
            out["ci95"] = list(out["ci95"])
        return out


def _scores(data: Mapping[str, Any] | None) -> dict[str, "TaskScore"] | None:
    return None if data is None else {t: TaskScore.from_json(s) for t, s in data.items()}


@dataclasses.dataclass(frozen=True)
class TaskScore:
    """A task's scores under one condition, per metric: ``rank`` (the run's ranking of the
    choices; ``rank_sum`` and ``rank_per_token`` both rankings where recorded) and ``exact``
    (greedy exact match); a metric the task has no item for is None."""

    rank_sum: Score | None = None
    rank_per_token: Score | None = None
    rank: Score | None = None
    exact: Score | None = None
    keys: tuple[str, ...] = _keys()
    extra: dict[str, Any] = _extra()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TaskScore":
        return _parse(cls, data, {m: Score.from_json for m in METRICS})

    def to_json(self) -> dict[str, Any]:
        return _dump(self)

    def get(self, metric: str) -> Score | None:
        """The score by ``metric`` (one of ``METRICS``), None where the task has none."""
        return getattr(self, metric) if metric in METRICS else None

    @property
    def metrics(self) -> list[str]:
        return [m for m in METRICS if getattr(self, m) is not None]


@dataclasses.dataclass(frozen=True)
class TaskRecord:
    """What a task is: kind, size, chance levels, prompt lengths (and passkey key depths), how
    many items the unmodified model gets right per metric, and its scores on every item."""

    kind: str
    description: str | None = None
    n_items: int | None = None
    min_prompt_tokens: int | None = None
    max_prompt_tokens: int | None = None
    prompt_tokens: Sequence[int] | None = None
    key_depth: Sequence[float] | None = None
    key_depth_bin: Sequence[str] | None = None
    n_known: dict[str, int] | None = None
    rank_chance: float | None = None  # None: the task has no choices (read exact)
    exact_chance: float | None = None
    baseline_all_items: TaskScore | None = None
    keys: tuple[str, ...] = _keys()
    extra: dict[str, Any] = _extra()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TaskRecord":
        return _parse(cls, data, {"baseline_all_items": TaskScore.from_json})

    def to_json(self) -> dict[str, Any]:
        return _dump(self)

    @property
    def main_metric(self) -> str:
        """rank where the task has choices, else greedy exact."""
        return "rank" if self.rank_chance is not None else "exact"


def seed_of(name: str) -> tuple[str, int | None]:
    """(column, control seed) of a condition name: ``random_s2`` → (``random``, 2)."""
    column, mark, seed = name.rpartition(SEED_MARK)
    return (column, int(seed)) if mark and seed.isdigit() else (name, None)


def twin_of(name: str) -> tuple[str | None, str | None]:
    """(the condition a twin varies, what it keeps): ``x_keep_massive`` → (x, "massive"),
    ``w_int4_protect`` → (w_int4, "massive"), ``keep0_massive`` → (massive, "position0")."""
    if name.startswith(KEEP0):
        return name[len(KEEP0):], "position0"
    for suffix, kept in KEPT_SUFFIXES:
        if name.endswith(suffix):
            return name[:-len(suffix)], kept
    return None, None


@dataclasses.dataclass(frozen=True)
class ConditionResult:
    """One condition of a run: what it edits (disrupt: rule, top_k, layers, keep_first;
    quantize: bits, granularity, side and which dims it keeps) and its scores (every item,
    ``tasks_known`` the items the unmodified model gets right), perplexity and attention on the
    first token per layer. ``same_as``: a condition equal to another, recorded not rescored.

    Read off the name once, at load: ``column`` and ``seed`` (a seeded control's table column and
    seed), ``twin_of`` and ``kept`` (the condition this one repeats keeping the massive dims, k
    random dims, or position 0 — "massive", "random", "position0")."""

    name: str = _derived()
    group: str = ""
    description: str | None = None
    keep_first: bool | None = None
    rule: str | None = None
    top_k: int | None = None
    layers: Sequence[int] | None = None
    bits: int | None = None
    granularity: str | None = None
    side: str | None = None
    keep_massive: bool | None = None
    keep_random: bool | None = None
    protect_massive_rows: bool | None = None
    protect_random_rows: bool | None = None
    tasks: dict[str, TaskScore] = dataclasses.field(default_factory=dict)
    tasks_known: dict[str, TaskScore] | None = None
    perplexity: float | None = None
    first_token_attention: Sequence[float] | None = None  # per layer
    same_as: str | None = None
    keys: tuple[str, ...] = _keys()
    extra: dict[str, Any] = _extra()
    column: str = _derived(init=False, compare=False)
    seed: int | None = _derived(init=False, compare=False)
    twin_of: str | None = _derived(init=False, compare=False)
    kept: str | None = _derived(init=False, compare=False)

    def __post_init__(self) -> None:
        column, seed = seed_of(self.name)
        twin, kept = twin_of(self.name)
        for k, v in (("column", column), ("seed", seed), ("twin_of", twin), ("kept", kept)):
            object.__setattr__(self, k, v)

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> "ConditionResult":
        return _parse(cls, data, {"tasks": _scores, "tasks_known": _scores}, name=name)

    def to_json(self) -> dict[str, Any]:
        return _dump(self)

    def score(self, task: str, metric: str, known: bool = False) -> Score | None:
        """The score of ``task`` by ``metric`` on every item (or on the known ones), or None."""
        per = (self.tasks_known or {}) if known else self.tasks
        ts = per.get(task)
        return None if ts is None else ts.get(metric)


def _conditions(data: Mapping[str, Any]) -> dict[str, ConditionResult]:
    return {n: ConditionResult.from_json(n, e) for n, e in data.items()}


@dataclasses.dataclass(frozen=True)
class ScoredRun:
    """A disrupt or quantize results.json: the run record (experiment, model, provenance, the
    run's preset, config, definition, dims), every task, every condition in plan order, and —
    once checked — the claims and notes. ``config``, ``definition`` and ``dims`` are the
    experiment's own blocks, kept as the run wrote them."""

    tasks: dict[str, TaskRecord] = dataclasses.field(default_factory=dict)
    conditions: dict[str, ConditionResult] = dataclasses.field(default_factory=dict)
    experiment: str | None = None
    git_sha: str | None = None
    provenance: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    run: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    statistics: str | None = None
    definition: dict[str, Any] | None = None
    ranking: str | None = None
    dims: dict[str, Any] | None = None
    model_layers: int | None = None
    seconds: float | None = None
    partial: str | None = None
    claims: list[dict[str, Any]] | None = None
    notes: list[str] | None = None
    keys: tuple[str, ...] = _keys()
    extra: dict[str, Any] = _extra()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ScoredRun":
        return _parse(cls, data, {"tasks": lambda d: {t: TaskRecord.from_json(v) for t, v in d.items()},
                                  "conditions": _conditions})

    @classmethod
    def load(cls, path: str | Path) -> "ScoredRun":
        return cls.from_json(json.loads(Path(path).read_text()))

    def to_json(self) -> dict[str, Any]:
        return _dump(self)

    def recorded(self, **fields: Any) -> "ScoredRun":
        """This run with ``fields`` set (None: left as they are); a field the file did not hold is
        written after the rest, in the order given — as setting a key of the JSON object would."""
        fields = {k: v for k, v in fields.items() if v is not None}
        new = [k for k in fields if k not in self.keys]
        return dataclasses.replace(self, **fields, keys=(*self.keys, *new) if self.keys else ())

    def with_claims(self, claims: list[dict[str, Any]], notes: list[str] | None = None) -> "ScoredRun":
        """This run with its checked claims (and notes, where given) recorded, after the rest."""
        return self.recorded(claims=claims, notes=notes)

    # what the reports read of the run record
    @property
    def provenance_record(self) -> dict[str, Any]:
        return self.provenance or {}

    @property
    def model_source(self) -> str:
        return self.provenance_record.get("model_source", "")

    @property
    def model_name(self) -> str:
        return (self.model or {}).get("name", "")

    @property
    def bins(self) -> tuple[int, ...] | None:
        """The confounds preset's length bins, where the run recorded them."""
        bins = ((self.run or {}).get("preset") or {}).get("bins")
        return tuple(bins) if bins else None

    @property
    def chosen_layers(self) -> tuple[int, ...] | None:
        layers = (self.dims or {}).get("chosen_layers")
        return None if layers is None else tuple(layers)

    # the structure of the conditions
    def tasks_of(self, kind: str) -> list[str]:
        return [t for t, v in self.tasks.items() if v.kind == kind]

    def main_metric(self, task: str) -> str:
        return self.tasks[task].main_metric

    def seeded(self, column: str) -> list[ConditionResult]:
        """The seeds of a seeded control column (``random`` → random_s0, random_s1, …)."""
        return [c for c in self.conditions.values() if c.seed is not None and c.column == column]

    def columns(self) -> list[str]:
        """Condition names with seeded controls pooled into one column each, in plan order."""
        return list(dict.fromkeys(c.column for c in self.conditions.values()))

    def twin(self, name: str, kept: str) -> ConditionResult | None:
        """The condition that repeats ``name`` keeping ``kept`` (``ConditionResult.kept``)."""
        return next((c for c in self.conditions.values() if c.twin_of == name and c.kept == kept), None)

    def group(self, name: str, default: str = "") -> str:
        """A condition's (or a named column's) group; ``default`` for a pooled seeded column."""
        c = self.conditions.get(name)
        return default if c is None else c.group
