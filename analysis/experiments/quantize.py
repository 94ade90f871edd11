"""``mvjax experiment quantize``: fake-quantized Q/K activations (int8/int4; per tensor / token /
channel; before or after RoPE) and round-to-nearest W_q/W_k, each with and without the massive
dims kept in full precision; same tasks and perplexity as ``disrupt``."""

from __future__ import annotations

import argparse

QUICK = {"bits": (4,), "granularities": ("token", "channel"), "sides": ("post",), "weight_bits": (4,)}


def register(sub: argparse._SubParsersAction) -> None:
    from mvjax.analysis.experiments.common import add_common_args

    p = sub.add_parser("quantize", help="quantize Q/K activations (KV cache) and W_q/W_k with and "
                       "without keeping the massive dims in full precision; tasks + perplexity")
    add_common_args(p)
    p.add_argument("--top-k", type=int, default=1, help="massive dims per head kept in full precision")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mvjax.analysis.quantize import QuantizeConfig

    from mvjax.analysis.experiments.common import preset_name

    small = args.quick or preset_name(args) == "confounds"  # confounds: int4 only (RULES.md)
    config = QuantizeConfig(top_k=args.top_k, batch_size=args.batch_size, **(QUICK if small else {}))
    from mvjax.analysis.experiments.common import run_experiment
    from mvjax.analysis.quantize import quantize
    from mvjax.analysis.quantize_report import quantize_claims, quantize_notes, write_quantize_report

    return run_experiment(
        args, "quantize", config.top_k,
        lambda model, tok, tasks, rows, ck: quantize(model, tok, tasks, config, rows, checkpoint=ck),
        quantize_claims,
        lambda result, out: write_quantize_report(result, out, f"Quantizing Q/K and W_q/W_k — {args.model}"),
        notes=quantize_notes, config=config)
