"""How much of a training step the attention core costs: the mvjax step as is, the same step with
``mvjax.model.attend`` replaced by a stand-in that keeps the q/k/v projections and RoPE alive
(``v + 1e-3·(q + k)``), and PyTorch eager, alternating in one process.

    .venv/bin/python benchmarks/attention_share.py --config small --rounds 2

Prints JSON with seconds per step for each (median over rounds) and two ratios: mvjax vs torch,
and what mvjax vs torch would be with a free attention core (an upper bound for any attention
kernel). The stand-in changes the math, so this is a measurement tool, never a training mode.
"""

from __future__ import annotations

import argparse
import json
import statistics

import mvjax.model as model_module
from train_throughput import CONFIGS, mvjax_runner, torch_runner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small", choices=sorted(CONFIGS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per round and runner")
    args = ap.parse_args()
    c = CONFIGS[args.config]

    runners = {"mvjax": mvjax_runner(c, 0)[1]}
    attend = model_module.attend
    model_module.attend = lambda q, k, v, *_, **__: v + 1e-3 * (q + k)  # read at trace time
    try:
        runners["mvjax_without_attention_core"] = mvjax_runner(c, 0)[1]
    finally:
        model_module.attend = attend
    runners["torch"] = torch_runner(c)

    times: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(args.rounds):
        for k in (list(runners) if r % 2 == 0 else list(reversed(runners))):
            times[k].append(runners[k](args.steps) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "config": args.config, "seconds_per_step": med, "rounds": times,
        "attention_core_seconds": med["mvjax"] - med["mvjax_without_attention_core"],
        "mvjax_vs_torch": med["torch"] / med["mvjax"],
        "vs_torch_with_free_attention": med["torch"] / med["mvjax_without_attention_core"],
    }, indent=2))


if __name__ == "__main__":
    main()
