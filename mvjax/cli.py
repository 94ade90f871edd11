"""The one door: ``mvjax <command>``. Each command lives in its own module exposing
``register(subparsers)``; heavy imports (jax, transformers) happen inside the handlers so
``mvjax --help`` stays instant."""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

# Modules that contribute subcommands, in help order.
COMMAND_MODULES = (
    "mvjax.commands.basic",
    "train.cli",
    "analysis.cli",
    "mvjax.data.cli",
    "mvjax.convert.cli",
    "mvjax.commands.generate",
    "mvjax.commands.experiment",
    "analysis.compare",
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["mvjax", *argv])  # recorded in results (mvjax.provenance)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as e:
        print(f"mvjax {args.command}: error: {e}", file=sys.stderr)
        return 2


def entry() -> None:
    """The ``mvjax`` console script: restart once with the host-allocator tunables
    (``mvjax.host_memory``: XLA:CPU reuses its buffers instead of page-faulting them in every
    step), say so, then run the command."""
    from mvjax.host_memory import NOTICE, reexec_tuned, restarted_tuned
    reexec_tuned()
    if restarted_tuned():
        print(NOTICE, file=sys.stderr)
    sys.exit(main())


if __name__ == "__main__":
    entry()
