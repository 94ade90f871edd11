"""``mvjax experiment NAME``: the named end-to-end experiments under one command.

Each experiment module exposes ``register(subparsers)`` like the top-level commands; list it in
``EXPERIMENT_MODULES`` (help order) to add it.
"""

from __future__ import annotations

import argparse
import importlib

EXPERIMENT_MODULES: tuple[str, ...] = ("mvjax.analysis.experiments.disrupt", "mvjax.analysis.experiments.quantize",
                                      "mvjax.analysis.experiments.rope_cause",
                                      "mvjax.analysis.experiments.rope_cause_seeds",
                                      "mvjax.analysis.experiments.emergence",
                                      "mvjax.analysis.experiments.band")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="run a named end-to-end experiment (results.json, "
                       "figures, report.md)")
    names = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    for name in EXPERIMENT_MODULES:
        importlib.import_module(name).register(names)
