"""Every experiment of ``mvjax experiment NAME``, by name, in help order: the CLI
(``mvjax.commands.experiment``) adds one subcommand per entry of ``EXPERIMENTS`` and nothing else.

Each experiment is a package ``analysis/experiments/<name>/`` of the same shape, with these
modules where they apply: ``cli`` (flags → typed config; its entry), ``run`` (the engine),
``results`` (typed records with ``from_json``/``to_json``; disrupt and quantize share
``analysis.records``), ``claims`` (rules as ``analysis.claims.Claim``) and ``report`` (tables,
figures, markdown), plus modules of its own (``plots``, ``presets``, ``measure``,
``confound_claims``).

The common protocol is ``analysis.experiments.spec.Command``: ``name``, ``help``,
``add_flags(parser)`` and ``run(args) -> exit code``. The experiments of the shared condition
runner (disrupt, quantize: ``analysis.experiments.common.run_experiment``) are ``Experiment``s
(``FRAMED``, which ``RunSpec.from_args`` reads) made into a ``Command`` by ``framed``: the common
flags, then their own, run through the frame. The others (rope-cause, rope-cause-seeds, emergence,
band) train, read training runs or decide across runs, which that frame does not fit; each
builds its ``Command`` in its ``cli``. Add an experiment by listing its entry here."""

from __future__ import annotations

import argparse
import functools

from mvjax.analysis.experiments.band.cli import BAND
from mvjax.analysis.experiments.common import run_from_args
from mvjax.analysis.experiments.disrupt.cli import DISRUPT
from mvjax.analysis.experiments.emergence.cli import EMERGENCE
from mvjax.analysis.experiments.quantize.cli import QUANTIZE
from mvjax.analysis.experiments.rope_cause.cli import ROPE_CAUSE
from mvjax.analysis.experiments.rope_cause_seeds.cli import ROPE_CAUSE_SEEDS
from mvjax.analysis.experiments.spec import Command, Experiment, add_common_args

FRAMED: dict[str, Experiment] = {e.name: e for e in (DISRUPT, QUANTIZE)}
"""The experiments of the shared frame: each writes ``results.json`` with its full config and
definitions, figures, and a Markdown report into one output directory."""


def _framed_flags(experiment: Experiment, p: argparse.ArgumentParser) -> None:
    add_common_args(p)
    experiment.add_flags(p)


def framed(experiment: Experiment) -> Command:
    """A shared-frame experiment as its subcommand: the common flags, then its own; run as a
    ``RunSpec`` through ``run_experiment``."""
    return Command(experiment.name, experiment.help, functools.partial(_framed_flags, experiment),
                   functools.partial(run_from_args, experiment=experiment))


EXPERIMENTS: dict[str, Command] = {c.name: c for c in (
    *(framed(e) for e in FRAMED.values()), ROPE_CAUSE, ROPE_CAUSE_SEEDS, EMERGENCE, BAND)}
"""Every named experiment (``mvjax experiment NAME``), in help order."""
