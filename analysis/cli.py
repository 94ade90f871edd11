"""``mvjax analyze``: massive values in Q/K/V over a dataset → JSON, figures, report. The flags
become an ``analysis.analyze.AnalyzeConfig``; ``analysis.analyze`` does the work."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mvjax.analysis.analyze import AnalyzeConfig, analyze_to_dir
from mvjax.massive_rule import MassiveDefinition
from mvjax.sites import STAT_SITES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="find massive values in Q/K/V (streaming statistics over a "
                       "dataset), and each head's attention on the first token; write massive_values.json, "
                       "figures and report.md")
    p.add_argument("--model", default="smollm2",
                   help="model name known to mvjax.load (e.g. smollm2), .gguf, HF or mvjax model dir")
    p.add_argument("--data", default=None,
                   help="text file / .jsonl / .parquet / hub dataset (default: embedded sample)")
    p.add_argument("--text-field", default="text")
    p.add_argument("--tokens", type=int, default=16384, help="tokens to read at most")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lambda", dest="lam", type=float, default=5.0,
                   help="massive iff M > lambda * mean (default 5)")
    p.add_argument("--mean-over", choices=("head", "global"), default="head")
    p.add_argument("--top-k", type=int, default=1, help="top dims per head to report (1 for Llama)")
    p.add_argument("--sites", default=None,
                   help=f"comma-separated sites (default {','.join(STAT_SITES)}, and "
                   "q_normed,k_normed in a model with QK-norm)")
    p.add_argument("--bar-layer", type=int, default=None,
                   help="layer for the 3-D bar figure (default: the layer whose pre-RoPE K has "
                   "the highest median max/mean ratio)")
    p.add_argument("--no-figures", action="store_true", help="write only the JSON")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--mesh", default=None, metavar="data=N",
                   help="split each batch's windows over N devices (the layer-by-layer pass keeps "
                   "one layer's weights, replicated; default one device)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> "AnalyzeConfig":
    """The flags as an ``AnalyzeConfig`` (each one checked there)."""
    given = args.sites is not None
    sites = tuple(s.strip() for s in args.sites.split(",") if s.strip()) if given else ()
    if given and not sites:
        raise ValueError("--sites names no site: give some, e.g. q,k,v, or leave it out")
    definition = MassiveDefinition(lam=args.lam, mean_over=args.mean_over, top_k=args.top_k)
    return AnalyzeConfig(model=args.model, out=args.out, data=args.data, text_field=args.text_field,
                         tokens=args.tokens, seq_len=args.seq_len, batch_size=args.batch_size,
                         definition=definition, sites=sites, bar_layer=args.bar_layer,
                         figures=not args.no_figures, mesh=getattr(args, "mesh", None))


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    result = analyze_to_dir(config, getattr(args, "command_line", None))
    print(json.dumps({"out": str(Path(config.out)), **result.headline()}, indent=1))
    return 0
