"""The typed record of ``band.json``: where one run's (or pretrained model's) K energy sits
(``Band``), and ``band_from_dict``, which reads one back with every field checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Band:
    """Where one model's (or run's) K energy sits: per layer and head, the strongest pair."""
    name: str
    theta: list[float]                  # per layer (a model may mix bases)
    context: int                        # training context (tokens)
    window: list[int | None]            # per layer: sliding window, None = full attention
    pairs_LxH: list[list[int]]
    wavelengths_LxH: list[list[float]]
    n_pairs: int
    tokens: int | None = None           # training tokens at the measurement (runs only)
    seed: int | None = None             # training seed (runs only): the bootstrap's outer unit
    first_massive_tokens: int | None = None  # runs: tokens at the first log with a λ=5 K entry

    def median_wavelength(self, layers: Sequence[int] | None = None) -> float:
        rows = [self.wavelengths_LxH[l] for l in (layers or range(len(self.pairs_LxH)))]
        return float(np.median(np.concatenate(rows)))

    def median_pair(self, layers: Sequence[int] | None = None) -> float:
        rows = [self.pairs_LxH[l] for l in (layers or range(len(self.pairs_LxH)))]
        return float(np.median(np.concatenate(rows)))


BAND_JSON_FIX = "pass a band.json written by `mvjax experiment band`, or the run directories"


def seeds_of(bands: Sequence[Band]) -> list[int | None]:
    """The seeds of ``bands``, in order (a run without one first)."""
    return sorted({b.seed for b in bands}, key=lambda s: -1 if s is None else s)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _matrix(value: Any, number: Any) -> bool:
    """A non-empty list of non-empty lists whose entries pass ``number``."""
    return (isinstance(value, list) and bool(value) and
            all(isinstance(row, list) and row and all(number(x) for x in row) for row in value))


def band_from_dict(data: Any, where: str) -> Band:
    """A ``Band`` from its band.json record, each field checked: a malformed record is refused in
    one line naming ``where`` (file and index) and the field, never a TypeError deep in the rule."""
    def bad(field: str, want: str) -> ValueError:
        return ValueError(f"{where}: {field!r} {want}: {BAND_JSON_FIX}")

    if not isinstance(data, dict):
        raise ValueError(f"{where} is a {type(data).__name__}, not a run record: {BAND_JSON_FIX}")
    fields = {f.name for f in Band.__dataclass_fields__.values()}
    for key in data:
        if key not in fields:
            raise bad(key, "is not a band field")
    for key in fields - {"tokens", "seed", "first_massive_tokens"}:
        if key not in data:
            raise bad(key, "is missing")
    d = data  # short name for the checks below
    if not isinstance(d["name"], str) or not d["name"]:
        raise bad("name", "must be a non-empty string")
    if not isinstance(d["context"], int) or isinstance(d["context"], bool) or d["context"] < 1:
        raise bad("context", f"must be a positive whole number of tokens, not {d['context']!r}")
    if not isinstance(d["n_pairs"], int) or isinstance(d["n_pairs"], bool) or d["n_pairs"] < 1:
        raise bad("n_pairs", f"must be a positive whole number, not {d['n_pairs']!r}")
    for key in ("tokens", "seed", "first_massive_tokens"):
        value = d.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise bad(key, f"must be a whole number or null, not {value!r}")
    is_int = lambda x: isinstance(x, int) and not isinstance(x, bool)  # noqa: E731
    if not _matrix(d["pairs_LxH"], is_int):
        raise bad("pairs_LxH", "must list, per layer, a non-empty list of pair indices")
    if not _matrix(d["wavelengths_LxH"], lambda x: _number(x) and x > 0):
        raise bad("wavelengths_LxH", "must list, per layer, a non-empty list of positive wavelengths")
    layers = len(d["pairs_LxH"])
    if [len(r) for r in d["wavelengths_LxH"]] != [len(r) for r in d["pairs_LxH"]]:
        raise bad("wavelengths_LxH", "must have the shape of 'pairs_LxH' (layers x heads)")
    if not (isinstance(d["theta"], list) and len(d["theta"]) == layers
            and all(_number(t) and t > 0 for t in d["theta"])):
        raise bad("theta", f"must list one positive base per layer ({layers})")
    if not (isinstance(d["window"], list) and len(d["window"]) == layers
            and all(w is None or is_int(w) and w > 0 for w in d["window"])):
        raise bad("window", f"must list one window (a positive whole number or null) per layer "
                  f"({layers})")
    return Band(**d)
