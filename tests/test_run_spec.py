"""The typed run spec of ``mvjax experiment disrupt|quantize`` (``analysis.experiments.spec``):
every flag is a declared field, planned or not; the plan's flags and the older resume key are
derived from the declarations and equal what plan.json and the fingerprint recorded before the
spec (so resume folders written then still resume); the registry is what the CLI offers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mvjax.analysis.experiments.common import run_plan
from mvjax.analysis.experiments.registry import EXPERIMENTS, FRAMED
from mvjax.analysis.experiments.spec import RunSpec, legacy_vars, plan_flags
from mvjax.cli import build_parser

PARSER = build_parser()


def _spec(*argv: str) -> RunSpec:
    args = PARSER.parse_args(["experiment", *argv])
    return RunSpec.from_args(args, FRAMED[args.experiment])


def _experiments() -> dict:
    """``mvjax experiment``'s subparsers, by name, in help order."""
    experiment = next(a for a in PARSER._subparsers._group_actions if a.dest == "command").choices["experiment"]
    return dict(experiment._subparsers._group_actions[0].choices)


def _subparser(name: str):
    return _experiments()[name]


@pytest.mark.parametrize("name", list(FRAMED))
def test_every_flag_is_a_declared_field_and_defaults_agree(name):
    """A new flag must be declared in the spec (planned or not): from_args would drop it."""
    experiment = FRAMED[name]
    dests = {a.dest for a in _subparser(name)._actions if a.dest != "help"}
    fields = {f.name for kind in (RunSpec, experiment.flags) for f in dataclasses.fields(kind)}
    assert dests <= fields, dests - fields
    assert all("planned" in f.metadata for kind in (RunSpec, experiment.flags)
               for f in dataclasses.fields(kind) if f.name != "options")
    parsed = _spec(name, "--out", "o")
    assert parsed == RunSpec(options=experiment.flags(), out="o", experiment=name)


def test_plan_flags_and_the_older_key_are_as_recorded_before_the_spec():
    """The keys (flag names, argparse's subcommand dests among them) and values plan.json held."""
    spec = _spec("disrupt", "--out", "o", "--quick", "--lambda", "3", "--top-k", "2", "--conditions",
                 "table", "--batch-size", "3", "--mesh", "data=1", "--only", "a", "--dtype", "float32",
                 "--tasks", "x.jsonl", "--seeds", "1,2", "--seed-from", "r.json", "--distributed")
    assert list(plan_flags(spec).items()) == [
        ("--command", "experiment"), ("--dtype", "float32"), ("--experiment", "disrupt"),
        ("--lambda", 3.0), ("--layers", None), ("--method", "mean"), ("--n", None),
        ("--phases", "prefill"), ("--quick", True), ("--ranking", "sum"), ("--seed", 0),
        ("--seeds", "1,2"), ("--selection", "topk"), ("--sites", "q_rot,k_rot"),
        ("--statistics", "pooled"), ("--top-k", 2)]
    assert legacy_vars(spec) == {k.removeprefix("--").replace("-", "_"): v
                                 for k, v in plan_flags(spec).items() if k != "--lambda"} | {
        "lam": 3.0, "batch_size": 3, "model": "smollm2", "tasks": ["x.jsonl"]}
    confounds = _spec("quantize", "--out", "o", "--preset", "confounds", "--bins", "64,128")
    assert plan_flags(confounds) == {"--bins": "64,128", "--command": "experiment", "--dtype": "auto",
                                     "--experiment": "quantize", "--n": None, "--preset": "confounds",
                                     "--quick": False, "--seed": 0, "--top-k": 1}
    assert "--preset" not in plan_flags(_spec("quantize", "--out", "o"))  # runs from before --preset


def test_run_plan_orders_its_keys_as_plan_json_did():
    class Model:
        class cfg:
            to_dict = staticmethod(lambda: {"x": 1})
    spec = _spec("quantize", "--out", "o", "--model", "tiny")
    plan = run_plan("quantize", spec, Model, [], np.zeros((1, 2), np.int32))
    assert list(plan)[:2] == ["experiment", "--command"]
    assert list(plan)[-4:] == ["--model", "model config", "tasks", "held-out rows"]
    assert plan["--model"] == "tiny"


def test_the_cli_offers_every_registered_experiment_and_nothing_else():
    assert list(_experiments()) == list(EXPERIMENTS)
    assert list(EXPERIMENTS) == ["disrupt", "quantize", "rope-cause", "rope-cause-seeds", "emergence", "band"]
