"""``mvjax experiment quantize``: fake-quantized Q/K activations (int8/int4; per tensor / token /
channel; before or after RoPE) and round-to-nearest W_q/W_k, each with and without the massive
dims kept in full precision; same tasks and perplexity as ``disrupt``."""

from __future__ import annotations

import argparse
import dataclasses

from mvjax.analysis.experiments.spec import Experiment, Report, RunSpec, planned
from mvjax.analysis.experiments.quantize.run import QuantizeConfig, quantize
from mvjax.analysis.experiments.quantize.report import quantize_claims, quantize_notes, write_quantize_report

QUICK = {"bits": (4,), "granularities": ("token", "channel"), "sides": ("post",), "weight_bits": (4,)}


@dataclasses.dataclass(frozen=True)
class QuantizeFlags:
    """quantize's own flags (argparse's dests)."""

    top_k: int = planned(1)


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--top-k", type=int, default=1, help="massive dims per head kept in full precision")


def quantize_config(spec: RunSpec) -> QuantizeConfig:
    small = spec.quick or spec.preset_name == "confounds"  # confounds: int4 only (RULES.md)
    return QuantizeConfig(top_k=spec.options.top_k, batch_size=spec.batch_size, **(QUICK if small else {}))


QUANTIZE = Experiment(
    name="quantize",
    help="quantize Q/K activations (KV cache) and W_q/W_k with and without keeping the massive "
    "dims in full precision; tasks + perplexity",
    flags=QuantizeFlags, add_flags=add_flags, config=quantize_config, compute=quantize,
    report=lambda spec: Report(quantize_claims, write_quantize_report, quantize_notes),
    title="Quantizing Q/K and W_q/W_k — {model}")
