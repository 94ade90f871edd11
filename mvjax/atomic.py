"""Atomic writes of whole directories (a converted model, an exported HF checkpoint, a results set):
a reader sees the old complete directory or the new complete one, never a mix or a half.

The work happens in a sibling named ``.NAME.partial-XXXX`` (unique to this writer, so a user's own
``NAME.tmp`` is never touched, and obviously incomplete if a kill leaves it behind); on success the
old directory is moved aside, the new one renamed into place, and the old one deleted.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PARTIAL = ".partial-"


def partial_name(directory: Path) -> str:
    """The prefix of the work directories ``atomic_directory`` makes beside ``directory``."""
    return f".{directory.name}{PARTIAL}"


def check_writable(directory: str | Path, *, inside: bool = False) -> Path:
    """Refuse, in one line and before any work, an output that cannot be written: by default its
    parent (results replaced as a whole are built beside it), with ``inside`` the directory itself,
    created if needed (a training run writes into it in place)."""
    directory = Path(directory).absolute()
    where = directory
    if inside:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PermissionError(f"cannot write into {directory} ({e.strerror}): choose an "
                                  "output directory you can write to") from None
    else:
        where = directory.parent
        while not where.exists() and where != where.parent:
            where = where.parent
    try:
        probe = Path(tempfile.mkdtemp(prefix=partial_name(directory), dir=where))
        probe.rmdir()
    except OSError as e:
        raise PermissionError(f"cannot write into {where} ({e.strerror}): choose an output "
                              "directory you can write to") from None
    return directory


@contextlib.contextmanager
def atomic_directory(directory: str | Path) -> Iterator[Path]:
    """Yield a fresh work directory to fill; on success it replaces ``directory``, on any failure
    it is removed."""
    directory = check_writable(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=partial_name(directory), dir=directory.parent))
    try:
        yield tmp
        old = None
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=partial_name(directory), dir=directory.parent))
            directory.rename(old / directory.name)
        tmp.rename(directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_results_dir(directory: str | Path, marker: str) -> Path:
    """An output directory a command may replace as a whole: new, empty, or an earlier results set
    of the same command (holding ``marker``). Anything else — a user's folder of other files — is
    refused in one line rather than deleted or mixed into. Checked before any work is done."""
    directory = check_writable(directory)
    if directory.exists():
        if not directory.is_dir():
            raise FileExistsError(f"{directory} is a file: choose a directory for the results")
        if not (directory / marker).is_file() and any(directory.iterdir()):
            raise FileExistsError(f"{directory} exists and holds files that are not a results set "
                                  f"(no {marker}): choose a new or empty output directory")
    return directory
