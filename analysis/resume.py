"""Resumable experiments: each finished piece (the unmodified pass, one condition) is saved as it
completes, so a killed run restarted with the same command redoes only what was unfinished.

The pieces live in a hidden directory beside the results (``.NAME.resume``) with the *plan* that
decides them (``plan.json``: the flags that can change a number, the model, the tasks' contents,
the held-out rows). Pieces are never deleted by another run: a run with a different plan is
refused in one line naming what differs (rerun with that run's flags, or choose another --out).
The main run holds the directory's lock (``mvjax.atomic.lock_dir``), so a second main run on it
is refused too. The directory is removed once the results set is written.

A second core can share a run: a *helper* (``only=`` a few condition names, ``--only`` on the
command line) joins the pieces directory of a run already under way with the same plan (taking
no lock), scores just those conditions there and stops; the main run finds them finished. While a process
scores a condition it holds a ``.busy`` marker (its pid); every other process defers that
condition, so main run and helpers share out the plan like a queue and never score one twice.
After each condition of its own the main run reads every piece the others have finished, and at
the end waits for a live holder or takes over from a dead one.

A multi-process run (``jax.distributed``, several processes on one mesh) scores every condition
in every process together (each its rows); process 0 alone reads and writes the pieces and sends
what it read to the others, so the processes agree on what is left to score without a shared
disk. Any process dying stops the run; the same command started again in every process resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

from mvjax.atomic import lock_dir
from mvjax.mesh import meet

PLAN = "plan.json"
LEGACY_STAMP = "fingerprint"  # an older mvjax's resume directory: a hash of its flags only
T = TypeVar("T")


def resume_dir(out: str | Path) -> Path:
    """The hidden directory beside ``out`` that holds a run's finished pieces."""
    out = Path(out).absolute()
    return out.parent / f".{out.name}.resume"


def in_plan_order(pieces: Mapping[str, T], plan: Iterable[str]) -> dict[str, T]:
    """``pieces`` (finished conditions by name) reordered as ``plan``: they are read as they
    finish, not in plan order."""
    return {name: pieces[name] for name in plan if name in pieces}


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (anything else by ``repr``)."""
    text = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else "…"


def plan_differences(there: dict, here: dict) -> list[str]:
    """What differs between two plans, one ``key (value there, value here)`` per entry."""
    keys = list(here) + [k for k in there if k not in here]
    return [f"{k} ({_short(there.get(k))} there, {_short(here.get(k))} here)"
            for k in keys if there.get(k) != here.get(k)]


class Checkpoint:
    """Pieces saved under ``directory`` for one plan (a dict of what decides the numbers, or a
    key string); ``directory=None`` saves nothing. The main run holds the directory's lock until
    ``close()`` (or the end of a ``with`` block); a helper (``only``) holds none and joins."""

    def __init__(self, directory: str | Path | None, plan: dict | str,
                 only: Iterable[str] | None = None, legacy_key: str | None = None):
        self.directory = None if directory is None else Path(directory)
        self.only = None if only is None else frozenset(only)
        self.plan = json.loads(json.dumps({"key": plan} if isinstance(plan, str) else plan,
                                          default=repr))
        self._legacy_key, self._lock = legacy_key, ExitStack()
        self.multi, self.lead = _processes()
        if self.multi and self.only is not None:
            raise ValueError("--only is for a helper process on a second core; a multi-process run "
                             "(jax.distributed) already splits every condition over its processes: "
                             "drop --only")
        if self.directory is None or not self.lead:  # process 0 keeps the pieces (``get``)
            return
        if self.helper:  # never writes the plan: it joins a run under way
            if not self._same_plan():
                raise ValueError(f"--only joins a run under way, but {self.directory} holds no "
                                 "run: start the main run first, with the same arguments as this "
                                 "one (less --only)")
            return
        self._same_plan()  # a different plan is named before the lock (whoever holds it)
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.enter_context(lock_dir(self.directory))
        except FileExistsError as e:
            raise FileExistsError(f"{e}; or help it on another core: this command with --only "
                                  "NAMES") from None
        try:
            if not self._same_plan():  # checked again under the lock: a run may have just begun
                tmp = self.directory / f".{PLAN}.{os.getpid()}.tmp"
                tmp.write_text(json.dumps(self.plan, indent=1))
                os.replace(tmp, self.directory / PLAN)
        except BaseException:
            self.close()
            raise

    def _same_plan(self) -> bool:
        """True when the directory holds this plan's run, False when it holds none; a run with
        another plan is refused in one line naming what differs (its pieces are left alone)."""
        elsewhere = f"choose another --out (or delete {self.directory} to drop its pieces)"
        what = f"rerun with that run's flags to resume it, or {elsewhere}"
        stamp = self.directory / PLAN
        if stamp.is_file():
            try:
                there = json.loads(stamp.read_text())
            except ValueError:  # cut by a kill while written (it is replaced atomically)
                raise ValueError(f"{stamp} is not valid JSON: {what}") from None
            differ = plan_differences(there, self.plan)
            if differ:
                raise ValueError(f"{self.directory} holds the finished pieces of a run with other "
                                 f"settings — {'; '.join(differ)}: {what}")
            return True
        legacy = self.directory / LEGACY_STAMP
        if legacy.is_file():
            if self._legacy_key is not None and legacy.read_text() == self._legacy_key:
                return self.helper  # the same flags: the main run records the plan
            raise ValueError(f"{self.directory} holds the finished pieces of a run started by an "
                             "older mvjax with other flags (it recorded no plan to name them): "
                             f"rerun with that run's exact command line, or {elsewhere}")
        return False

    def close(self) -> None:
        """Release the lock (a main run)."""
        self._lock.close()

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def helper(self) -> bool:
        return self.only is not None

    def wanted(self, name: str) -> bool:
        """Whether this process scores the condition ``name`` (a helper: only its own)."""
        return self.only is None or name in self.only

    def check_names(self, names: Iterable[str]) -> None:
        """Refuse a helper's condition names that the run does not plan."""
        names = list(names)
        unknown = sorted((self.only or frozenset()) - set(names))
        if unknown:
            raise ValueError(f"--only names unknown condition(s) {unknown}: use names of this run's "
                             f"conditions ({', '.join(names)})")

    def _path(self, name: str) -> Path:
        return self.directory / f"{hashlib.sha256(name.encode()).hexdigest()[:16]}.pkl"

    def done(self) -> int:
        """Pieces already saved (as process 0 sees them)."""
        if self.directory is None or not self.lead:
            return 0
        return len(list(self.directory.glob("*.pkl")))

    def get(self, name: str, compute: Callable[[], Any]) -> Any:
        """The saved piece ``name``, or ``compute()`` saved atomically (a kill mid-write leaves
        no half piece)."""
        if self.directory is None:
            return compute()
        path = self._path(name)
        if self.multi:  # process 0 reads it and sends it (or the news that it is missing)
            saved = _broadcast_bytes(path.read_bytes() if self.lead and path.is_file() else b"")
            if saved:
                return pickle.loads(saved)  # our own file, written below
            value = compute()
            if not self.lead:
                return value
        elif path.is_file():
            with path.open("rb") as f:  # our own file, written below
                return pickle.load(f)
        else:
            value = compute()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            pickle.dump(value, f)
        os.replace(tmp, path)
        return value

    def seed(self, name: str, value: Any) -> bool:
        """Save ``value`` as the finished piece ``name`` unless one is there; whether it was."""
        if self.directory is None or self._path(name).is_file():
            return False
        self.get(name, lambda: value)
        return True

    def _marker(self, name: str) -> Path:
        return self._path(name).with_suffix(".busy")

    def _claim(self, name: str) -> bool:
        """Hold ``name``'s marker (atomically); False while another live process holds it."""
        marker = self._marker(name)
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                text = marker.read_text()
                if not text:  # being written now, or left half-written by a kill long ago
                    if time.time() - marker.stat().st_mtime < 60:
                        return False
                    raise ProcessLookupError
                os.kill(int(text), 0)
                return False  # its holder is alive
            except PermissionError:
                return False  # alive, another user's
            except (ValueError, OSError):  # its holder is gone: take it over
                marker.unlink(missing_ok=True)
                return self._claim(name)
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True

    def each(self, names: Iterable[str], score: Callable[[str], None], poll_s: float = 20.0) -> None:
        """``score(name)`` for each name this process wants, in order, each under its marker;
        names another live process is scoring are deferred. After each of its own, the main run
        reads every piece the others have finished meanwhile, wherever it is in the plan (so
        partial.json shows it), and at the end waits for a live holder or takes over from a dead
        one; a helper leaves them."""
        todo, done = list(filter(self.wanted, names)), set()
        if self.multi:  # every process scores every condition together: no markers
            for name in todo:
                score(name)
            return
        for name in todo:
            if name not in done and self._score_free(name, score):
                done.add(name)
            if not self.helper and self.directory is not None:
                for other in todo:
                    if other not in done and self._path(other).is_file():
                        score(other)
                        done.add(other)
        for name in ([] if self.helper else todo):
            while name not in done and not self._score_free(name, score):
                time.sleep(poll_s)
            done.add(name)

    def _score_free(self, name: str, score: Callable[[str], None]) -> bool:
        """Score ``name`` (read its piece, or compute it under its marker) unless another live
        process holds it; whether it was scored."""
        if self.directory is None or self._path(name).is_file():
            score(name)
            return True
        if not self._claim(name):
            return False
        try:
            score(name)
        finally:
            self._marker(name).unlink(missing_ok=True)
        return True

    def note(self, name: str, data: dict) -> None:
        """Write ``data`` as JSON beside the pieces (e.g. the result so far, readable while a long
        run goes on: ``partial.json``); a helper writes none, the main run's notes stand."""
        if self.directory is None or self.helper or not self.lead:
            return
        tmp = self.directory / f".{name}.tmp"
        tmp.write_text(json.dumps(data, indent=1, default=repr))
        os.replace(tmp, self.directory / name)

    def remove(self) -> None:
        """Delete the pieces (the results are written), then release the lock."""
        if self.directory is not None and self.lead:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.close()


def _processes() -> tuple[bool, bool]:
    """(several jax processes, this is process 0); one process when jax.distributed is not joined."""
    if not jax.distributed.is_initialized():
        return False, True
    return jax.process_count() > 1, jax.process_index() == 0


def _broadcast_bytes(data: bytes) -> bytes:
    """Process 0's ``data`` in every process (the others pass anything)."""
    meet("piece")  # a slower process reaches the broadcast's rendezvous in time
    n = int(multihost_utils.broadcast_one_to_all(np.int64(len(data))))
    if n == 0:
        return b""
    buf = np.frombuffer(data, np.uint8) if len(data) == n else np.zeros(n, np.uint8)
    return np.asarray(multihost_utils.broadcast_one_to_all(buf), np.uint8).tobytes()
