"""The one door: ``mvjax <command>``. Each command lives in its own module exposing
``register(subparsers)``; heavy imports (jax, transformers) happen inside the handlers so
``mvjax --help`` stays instant."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shlex
import signal
import sys
from collections.abc import Iterator

from mvjax.atomic import disk_full, os_error_line  # stdlib only, as is host_memory
from mvjax.host_memory import NOTICE, reexec_tuned, restarted_tuned

# Modules that contribute subcommands, in help order.
COMMAND_MODULES = (
    "mvjax.commands.basic",
    "mvjax.train.cli",
    "mvjax.analysis.cli",
    "mvjax.data.cli",
    "mvjax.convert.cli",
    "mvjax.commands.generate",
    "mvjax.commands.experiment",
    "mvjax.analysis.compare",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mvjax", description="Massive values in attention: train, convert and analyze "
        "RoPE / ALiBi / NoPE transformers in JAX.",
        epilog="Speed: the mvjax command restarts itself once with glibc malloc tunables "
        "(mvjax/host_memory.py) so XLA:CPU reuses its buffers instead of page-faulting them every "
        "step, and says so on stderr. MVJAX_HOST_MALLOC=default opts out; a Python script gets the "
        "same with mvjax.host_memory.reexec_tuned() as its first call.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal (SIGTERM, or SIGINT after its checkpoint): the command exits
    128 + ``signum`` with one line saying how to resume."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises ``Interrupted`` like Ctrl-C raises KeyboardInterrupt, so both unwind through
    the whole-or-nothing writers (``mvjax.atomic``) and end in one line."""
    def handle(signum, frame):
        raise Interrupted(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handle)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def resume_hint(args: argparse.Namespace) -> str:
    """How to continue an interrupted command: with --resume where it has one, else rerun it."""
    line = args.command_line
    if not hasattr(args, "resume"):
        return f"files are whole (old or new); rerun: {line}"
    return f"continue with: {line}" + ("" if args.resume else " --resume")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["mvjax", *argv])  # recorded in results (mvjax.provenance)
    say = lambda text: print(f"mvjax {args.command}: {text}", file=sys.stderr)  # noqa: E731
    _end_startup()
    try:
        with _sigterm_interrupts():
            return int(args.func(args) or 0)
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        say(f"interrupted by {signal.Signals(signum).name}; {resume_hint(args)}")
        return 128 + signum
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as e:
        say(f"error: {e}")
        return 2
    except OSError as e:
        say(f"error: {os_error_line(e)}")
        return 1
    except Exception as e:
        if not disk_full(e):
            raise
        say(f"error: no space left on device [ENOSPC] ({type(e).__name__}): free some space, then "
            "rerun (with --resume where the command has it)")
        return 1


def _starting_line(signum: int) -> str:
    name = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else ""
    return (f"mvjax{' ' + name if name else ''}: interrupted by {signal.Signals(signum).name} "
            "while starting; nothing was written")


def _exit_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C before the command runs: nothing is written yet, so end now, in one line. Raising
    KeyboardInterrupt there instead lands in jax's imports: a traceback, a C extension's
    ImportError, a crash, or a gc callback that swallows it and runs the command anyway."""
    sys.stderr.write(_starting_line(signum) + "\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def _end_startup() -> None:
    """From here on Ctrl-C raises KeyboardInterrupt again, which ``main`` turns into one line."""
    if signal.getsignal(signal.SIGINT) is _exit_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def entry() -> None:
    """The ``mvjax`` console script: restart once with the host-allocator tunables
    (``mvjax.host_memory``: XLA:CPU reuses its buffers instead of page-faulting them in every
    step), say so, then run the command. A Ctrl-C before ``main``'s own handler is in place (while
    the command modules import jax, or while argparse runs) ends in one line and exit 130 too."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when ignored
        signal.signal(signal.SIGINT, _exit_while_starting)
    try:
        reexec_tuned()
        if restarted_tuned():
            print(NOTICE, file=sys.stderr)
        code = main()
    except KeyboardInterrupt as e:  # main's handler covers the command: this is before it
        signum = getattr(e, "signum", signal.SIGINT)
        print(_starting_line(signum), file=sys.stderr)
        code = 128 + signum
    sys.exit(code)


if __name__ == "__main__":
    entry()
