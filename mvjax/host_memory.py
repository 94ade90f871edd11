"""Keep freed host memory mapped, so XLA:CPU does not page-fault its buffers in on every step.

Why: XLA:CPU takes each executable's temporaries and outputs from ``malloc``. With glibc's defaults
every large block is a fresh ``mmap`` (or is handed back to the kernel when freed), so the next step
touches fresh pages and the kernel zero-fills them one 4 KiB fault at a time.

The fix is four glibc tunables: large blocks come from the heap (``mmap_max=0``), all threads share
the main heap (``arena_max=1``; per-thread heaps are unmapped whenever they empty), the heap is
never trimmed back (``trim_threshold``), and it is backed by transparent huge pages (``hugetlb=1``,
glibc ≥ 2.35; a no-op where THP is off). The cost: the process keeps its peak heap until it exits,
which is what a training or analysis process needs anyway.

Measured on this project's 2-core CPU, stock → tuned, each in its own process, alternating
(``python benchmarks/train_throughput.py --configs cpu-256,cpu-512 --rounds 3 --steps 3 --no-torch
--stock``): cpu-256 2,689 → 3,172 tok/s, cpu-512 592 → 634 tok/s (another run: 581 → 570, no gain;
a later one, with torch as well: cpu-256 2,820 → 3,361, cpu-512 486 → 595).
The gain was larger before ``mvjax.flash``, when every step wrote B×H×T×T buffers: a ``cpu-512``
step then took 8.35 s with 4.2M page faults stock and 6.4 s with 150k tuned.

glibc reads tunables only at process start, so the ``mvjax`` command re-executes itself once with
them set, and says so on stderr (``MVJAX_HOST_MALLOC=default`` opts out; a no-op off Linux/glibc).
Library code runs under whatever allocator its process started with; a script that wants the same
speed calls :func:`reexec_tuned` first thing (or starts Python with ``GLIBC_TUNABLES`` set to
:data:`TUNABLES`).
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLES = ("glibc.malloc.hugetlb=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776"
            ":glibc.malloc.arena_max=1")
_OPT_OUT = "MVJAX_HOST_MALLOC"
_RESTARTED = "MVJAX_HOST_MALLOC_RESTARTED"  # set in the re-executed process, for the notice
NOTICE = ("mvjax: running with the host-malloc tunables of mvjax.host_memory (restarted once; "
          "MVJAX_HOST_MALLOC=default opts out)")


def tuned_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default ``os.environ``) with :data:`TUNABLES` added to ``GLIBC_TUNABLES``."""
    env = dict(os.environ if env is None else env)
    current = env.get("GLIBC_TUNABLES", "")
    if TUNABLES not in current:
        env["GLIBC_TUNABLES"] = f"{current}:{TUNABLES}" if current else TUNABLES
    return env


def untuned_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default ``os.environ``) without :data:`TUNABLES`: the stock allocator, for A/B runs."""
    env = dict(os.environ if env is None else env)
    rest = env.get("GLIBC_TUNABLES", "").replace(TUNABLES, "").strip(":")
    env.pop("GLIBC_TUNABLES", None)
    if rest:
        env["GLIBC_TUNABLES"] = rest
    env[_OPT_OUT] = "default"
    return env


def is_tuned() -> bool:
    """True when this process started with the tunables (or is not on glibc, where they mean nothing)."""
    return not _applies() or TUNABLES in os.environ.get("GLIBC_TUNABLES", "")


def _applies() -> bool:
    return (sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
            and os.environ.get(_OPT_OUT, "").lower() != "default")


def reexec_tuned() -> None:
    """Replace this process by the same command line started with the tunables; returns only when
    nothing needs doing (already tuned, opted out, not glibc). Call it before any work starts: the
    one call a script needs for the ``mvjax`` command's speed."""
    if is_tuned():
        return
    env = tuned_environment()
    env[_OPT_OUT] = "default"  # whatever happens, never loop
    env[_RESTARTED] = "1"
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], env)


def restarted_tuned() -> bool:
    """True once in a process that ``reexec_tuned`` started (the marker is consumed)."""
    return os.environ.pop(_RESTARTED, None) == "1"
