"""``mvjax experiment quantize``: fake-quantized Q/K activations (int8/int4; per tensor / token /
channel; before or after RoPE) and round-to-nearest W_q/W_k, each with and without the massive
dims kept in full precision; same tasks and perplexity as ``disrupt``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

QUICK = {"bits": (4,), "granularities": ("token", "channel"), "sides": ("post",), "weight_bits": (4,)}


def register(sub: argparse._SubParsersAction) -> None:
    from analysis.experiments.common import add_common_args

    p = sub.add_parser("quantize", help="quantize Q/K activations (KV cache) and W_q/W_k with and "
                       "without keeping the massive dims in full precision; tasks + perplexity")
    add_common_args(p)
    p.add_argument("--top-k", type=int, default=1, help="massive dims per head kept in full precision")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from analysis.quantize import QuantizeConfig

    config = QuantizeConfig(top_k=args.top_k, batch_size=args.batch_size,
                            **(QUICK if args.quick else {}))
    from analysis.disrupt_report import condition_figure
    from analysis.experiments.common import load_model_and_tasks, ppl_rows, run_record
    from analysis.quantize import quant_table, quantize, quantize_claims

    t0 = time.time()
    model, tok, tasks, p = load_model_and_tasks(args)
    if not 1 <= config.top_k <= model.cfg.head_dim:
        raise ValueError(f"--top-k {config.top_k} is invalid: use 1..head_dim={model.cfg.head_dim}")
    rows = ppl_rows(tok, p["ppl_rows"], p["ppl_len"])
    result = {"experiment": "quantize", **run_record(args, model, p),
              **quantize(model, tok, tasks, config, rows)}
    result["seconds"] = round(time.time() - t0, 1)
    result["claims"] = quantize_claims(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    fig = condition_figure(result, out, f"Quantization — {args.model}")
    d = result["definition"]
    lines = [f"# Quantizing Q/K and W_q/W_k — {args.model}", "",
             "## Definition (fixed before the run)", ""] + [f"- {k}: {v}" for k, v in d.items()] + [
             f"- git SHA: `{result['git_sha']}`; config in results.json.", "",
             "## Accuracy (%) per condition (parametric tasks: items the unmodified model gets right)",
             "", quant_table(result), "", "## Claims", ""] + [f"- {c}" for c in result["claims"]] + [
             "", f"![{fig}]({fig})", ""]
    (out / "report.md").write_text("\n".join(lines))
    print(json.dumps({"out": str(out), "seconds": result["seconds"], "claims": result["claims"]}, indent=1))
    return 0
