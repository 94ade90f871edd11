"""The experiments of the shared frame (``analysis.experiments.common.run_experiment``), by name,
in help order: ``mvjax experiment NAME`` reads this. Add one by listing its ``Experiment`` here."""

from __future__ import annotations

from mvjax.analysis.experiments.disrupt.cli import DISRUPT
from mvjax.analysis.experiments.quantize.cli import QUANTIZE
from mvjax.analysis.experiments.spec import Experiment

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (DISRUPT, QUANTIZE)}
