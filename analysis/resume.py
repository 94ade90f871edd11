"""Resumable experiments: each finished piece (the unmodified pass, one condition) is saved as it
completes, so a killed run restarted with the same command redoes only what was unfinished.

The pieces live in a hidden directory beside the results (``.NAME.resume``), keyed by a
fingerprint of everything that decides them (config, tasks, model, held-out rows); a different
fingerprint discards them. The directory is removed once the results set is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any, Callable


def resume_dir(out: str | Path) -> Path:
    out = Path(out).absolute()
    return out.parent / f".{out.name}.resume"


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (anything else by ``repr``)."""
    text = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


class Checkpoint:
    """Pieces saved under ``directory`` for one fingerprint; ``directory=None`` saves nothing."""

    def __init__(self, directory: str | Path | None, key: str):
        self.directory = None if directory is None else Path(directory)
        if self.directory is None:
            return
        stamp = self.directory / "fingerprint"
        if self.directory.exists() and (not stamp.is_file() or stamp.read_text() != key):
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp.write_text(key)

    def _path(self, name: str) -> Path:
        return self.directory / f"{hashlib.sha256(name.encode()).hexdigest()[:16]}.pkl"

    def done(self) -> int:
        """Pieces already saved."""
        return 0 if self.directory is None else len(list(self.directory.glob("*.pkl")))

    def get(self, name: str, compute: Callable[[], Any]) -> Any:
        """The saved piece ``name``, or ``compute()`` saved atomically (a kill mid-write leaves
        no half piece)."""
        if self.directory is None:
            return compute()
        path = self._path(name)
        if path.is_file():
            with path.open("rb") as f:  # our own file, written below
                return pickle.load(f)
        value = compute()
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(value, f)
        os.replace(tmp, path)
        return value

    def note(self, name: str, data: dict) -> None:
        """Write ``data`` as JSON beside the pieces (e.g. the result so far, readable while a long
        run goes on: ``partial.json``)."""
        if self.directory is None:
            return
        tmp = self.directory / f".{name}.tmp"
        tmp.write_text(json.dumps(data, indent=1, default=repr))
        os.replace(tmp, self.directory / name)

    def remove(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
