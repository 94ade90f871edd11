"""Whole or nothing: every file a command writes.

Directories (a converted model, an exported HF checkpoint, a results set) and single files (JSON
state, figures, reports) are built in a sibling named ``.NAME.partial-PID-XXXX`` (unique to this
writer, so a user's own ``NAME.tmp`` is never touched, and obviously incomplete if a kill leaves it
behind) and renamed into place: a reader sees the old complete version or the new one, never a
half. Work dirs left by a killed writer (its pid gone) are removed the next time a command writes
there. Appended logs (``metrics.jsonl``) lose at most their last line to a kill; readers drop a cut
last line with a warning naming the file. Readers of JSON state name the file and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, TextIO

PARTIAL = ".partial-"
LOCK_FILE = ".mvjax.lock"


def partial_name(directory: Path) -> str:
    """The prefix of the work directories and files made beside ``directory`` (then the writer's
    pid, so a leftover is told from a writer still at work)."""
    return f".{directory.name}{PARTIAL}"


def _my_prefix(path: Path) -> str:
    return f"{partial_name(path)}{os.getpid()}-"


def _writer_gone(name: str) -> bool:
    """True when the ``.partial-PID-`` entry ``name`` belongs to no running process."""
    pid = name.split(PARTIAL, 1)[1].split("-", 1)[0]
    if not pid.isdigit():
        return True  # an older writer's name, without a pid
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_partials(root: str | Path, recursive: bool = False) -> list[Path]:
    """Remove the work dirs and files that killed writers left in ``root`` (with ``recursive``, in
    every folder below it but checkpoints); returns what was removed."""
    removed = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            if name.startswith(".") and PARTIAL in name and _writer_gone(name):
                _remove(Path(folder) / name)
                removed.append(Path(folder) / name)
        dirs[:] = [d for d in dirs if recursive and PARTIAL not in d and d != "checkpoints"]
    return removed


def check_writable(directory: str | Path, *, inside: bool = False) -> Path:
    """Refuse, in one line and before any work, an output that cannot be written: by default its
    parent (results replaced as a whole are built beside it), with ``inside`` the directory itself,
    created if needed (a training run writes into it in place). Leftovers of killed writers of
    this output are removed."""
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
        probe = Path(tempfile.mkdtemp(prefix=_my_prefix(directory), dir=where))
        probe.rmdir()
    except OSError as e:
        raise PermissionError(f"cannot write into {where} ({e.strerror}): choose an output "
                              "directory you can write to") from None
    if directory.parent.is_dir():
        for stale in directory.parent.iterdir():
            if stale.name.startswith(partial_name(directory)) and _writer_gone(stale.name):
                _remove(stale)
    return directory


@contextlib.contextmanager
def atomic_directory(directory: str | Path) -> Iterator[Path]:
    """Yield a fresh work directory to fill; on success it replaces ``directory``, on any failure
    it is removed."""
    directory = check_writable(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_my_prefix(directory), dir=directory.parent))
    try:
        # mkdtemp makes 0700; the results are a normal folder: the old one's mode, else the umask's
        os.chmod(tmp, directory.stat().st_mode & 0o7777 if directory.is_dir()
                 else 0o777 & ~_umask())
        yield tmp
        old = None
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=_my_prefix(directory), dir=directory.parent))
            directory.rename(old / directory.name)
        tmp.rename(directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _named(e, directory) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a work path (same suffix) to write; on success it replaces ``path``, on any failure
    it is removed and ``path`` is left as it was."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=_my_prefix(path), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _named(e, path) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _named(error: OSError, path: Path) -> OSError:
    """A write error that names no file (a full disk mid-write) names the output it was for."""
    if error.filename or type(error) is not OSError:
        return error
    named = OSError(error.errno, error.strerror, str(path))
    named.__cause__ = error
    return named


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` whole or not at all (an in-place update keeps the old file on a
    full disk or a kill)."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def write_json(path: str | Path, data: Any, indent: int | None = 1) -> Path:
    return write_atomic(path, json.dumps(data, indent=indent))


def read_json_state(path: str | Path, fix: str) -> Any:
    """A JSON state file's content; a file that is cut or not text is refused in one line naming
    it and ``fix`` (what the user should do)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{path} is not valid JSON (cut by a kill?): {fix}") from None


def require(data: Any, key: str, kind: type | tuple[type, ...], where: str | Path) -> Any:
    """``data[a][b]…`` for ``key`` = "a.b…", refused in one line naming ``where`` and the key when
    a part is missing or the value is not a ``kind``."""
    value = data
    for i, part in enumerate(key.split(".")):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"{where} has no {'.'.join(key.split('.')[:i + 1])!r}: pass a file "
                             "written by this mvjax command")
        value = value[part]
    if not isinstance(value, kind):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ValueError(f"{where}: {key!r} is a {type(value).__name__}, not a {names}: pass a "
                         "file written by this mvjax command")
    return value


def append_line(f: TextIO, line: str) -> None:
    """Append one whole line to an open log, or nothing: a failed write (a full disk) is cut back."""
    f.flush()
    start = f.tell()
    try:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
    except OSError:
        with contextlib.suppress(OSError):
            f.truncate(start)
        raise


def repair_jsonl(path: str | Path) -> None:
    """Drop a cut last line (a kill mid-append) before appending more, with a warning."""
    path = Path(path)
    if not path.is_file():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    warnings.warn(f"{path}: dropped a cut last line ({len(data) - keep} bytes, a kill mid-write)",
                  stacklevel=2)
    with open(path, "r+b") as f:
        f.truncate(keep)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSONL log; a cut last line is dropped with a warning naming the file, any
    other bad line is refused in one line naming the file and the line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start}): pass the log a run "
                         "wrote") from None
    numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    records = []
    for n, (i, line) in enumerate(numbered):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(numbered) - 1:
                warnings.warn(f"{path}: dropped a cut last line (line {i}, a kill mid-write)",
                              stacklevel=2)
                break
            raise ValueError(f"{path}:{i} is not valid JSON: delete that line or rerun the "
                             "training") from None
    return records


def check_own_dir(directory: str | Path, own: Collection[str], what: str) -> Path:
    """An output directory a command writes into in place: new, empty, or holding only its own
    outputs (``own``). A model directory or a folder of someone else's files is refused in one
    line before any work."""
    directory = check_writable(directory)
    if directory.exists():
        if not directory.is_dir():
            raise FileExistsError(f"{directory} is a file: choose a directory for the {what}")
        if (directory / "config.json").is_file() and (directory / "params").is_dir():
            raise FileExistsError(f"{directory} is a model directory: choose another --out")
        foreign = sorted(p.name for p in directory.iterdir()
                         if p.name not in own and not (PARTIAL in p.name and p.name[0] == "."))
        if foreign:
            raise FileExistsError(f"{directory} holds files that are not {what} "
                                  f"({', '.join(foreign[:3])}{', …' if len(foreign) > 3 else ''}): "
                                  "choose a new or empty --out")
    return directory


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


@contextlib.contextmanager
def lock_dir(directory: str | Path) -> Iterator[Path]:
    """Hold ``DIR/.mvjax.lock`` while a run writes into ``directory``: a second run on it is
    refused in one line naming the lock and the holder's pid (the lock dies with its process, so
    a kill -9 leaves nothing to remove)."""
    lock = Path(directory) / LOCK_FILE
    f = open(lock, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "unknown"
        f.close()
        raise FileExistsError(f"{directory} is in use by another mvjax run (lock {lock}, pid "
                              f"{pid}): wait for it to finish or choose another --out") from None
    try:
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        yield lock
    finally:
        f.close()


def disk_full(error: BaseException) -> bool:
    """True when ``error`` or its cause is a full disk (ENOSPC), however a library wrapped it."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(error) or "ENOSPC" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def os_error_line(error: OSError) -> str:
    """One line for an OS error: what, where, the errno name and, for a full disk, the fix."""
    name = errno.errorcode.get(error.errno or 0, "")
    where = f" ({error.filename})" if error.filename else ""
    line = f"{error.strerror or error}{where}" + (f" [{name}]" if name else "")
    if error.errno == errno.ENOSPC:
        line += ": free some space, then rerun (with --resume where the command has it)"
    return line
