"""``mvjax experiment NAME``: the named end-to-end experiments under one command.

The experiments of the shared frame (disrupt, quantize) are read from
``analysis.experiments.registry``: each is an ``Experiment`` whose flags join the common ones
(``analysis.experiments.spec``) and become a ``RunSpec``. The others are modules exposing
``register(subparsers)`` like the top-level commands, listed in ``EXPERIMENT_MODULES``; the help
lists the registry's first, then the modules, in order.
"""

from __future__ import annotations

import argparse
import functools
import importlib

from mvjax.analysis.experiments.common import run_from_args
from mvjax.analysis.experiments.registry import EXPERIMENTS
from mvjax.analysis.experiments.spec import Experiment, add_common_args

EXPERIMENT_MODULES: tuple[str, ...] = ("mvjax.analysis.experiments.rope_cause",
                                      "mvjax.analysis.experiments.rope_cause_seeds",
                                      "mvjax.analysis.experiments.emergence",
                                      "mvjax.analysis.experiments.band")


def add_experiment(names: argparse._SubParsersAction, experiment: Experiment) -> None:
    """``experiment``'s subcommand: the common flags, then its own."""
    p = names.add_parser(experiment.name, help=experiment.help)
    add_common_args(p)
    experiment.add_flags(p)
    p.set_defaults(func=functools.partial(run_from_args, experiment=experiment))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="run a named end-to-end experiment (results.json, "
                       "figures, report.md)")
    names = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    for experiment in EXPERIMENTS.values():
        add_experiment(names, experiment)
    for name in EXPERIMENT_MODULES:
        importlib.import_module(name).register(names)
