"""``mvjax experiment NAME``: the named end-to-end experiments under one command, one subcommand
per entry of ``analysis.experiments.registry.EXPERIMENTS`` (each a ``Command``: name, help, its
flags, its run), in the registry's order."""

from __future__ import annotations

import argparse

from mvjax.analysis.experiments.registry import EXPERIMENTS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="run a named end-to-end experiment (results.json, "
                       "figures, report.md)")
    names = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    for command in EXPERIMENTS.values():
        e = names.add_parser(command.name, help=command.help)
        command.add_flags(e)
        e.set_defaults(func=command.run)
