"""How much of a training step the attention core costs: the mvjax step as is, the same step with
the causal attention core replaced by a stand-in that keeps the q/k/v projections and RoPE alive
(``v + 1e-3·(q + k)``), and PyTorch eager — each in its own worker process (allocator tunables on
all three), alternating.

    .venv/bin/python benchmarks/attention_share.py --config cpu-512 --rounds 2

Prints JSON with seconds per step for each (median over rounds) and two ratios: mvjax vs torch,
and what mvjax vs torch would be with a free attention core (an upper bound for any attention
kernel). The stand-in changes the math, so this is a measurement tool, never a training mode.
"""

from __future__ import annotations

import argparse
import json
import statistics

from mvjax.host_memory import tuned_environment
from train_throughput import CONFIGS, Worker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="cpu-512", choices=sorted(CONFIGS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per round and runner")
    args = ap.parse_args()

    env = tuned_environment()
    names = {"mvjax": "mvjax", "mvjax_without_attention_core": "mvjax-no-attention", "torch": "torch"}
    workers = {k: Worker(kind, args.config, 0, env) for k, kind in names.items()}
    times: dict[str, list[float]] = {k: [] for k in workers}
    try:
        for r in range(args.rounds):
            for k in (list(workers) if r % 2 == 0 else list(reversed(workers))):
                times[k].append(workers[k].ask(f"run {args.steps}") / args.steps)
    finally:
        for w in workers.values():
            w.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "config": args.config, "seconds_per_step": med, "rounds": times,
        "attention_core_seconds": med["mvjax"] - med["mvjax_without_attention_core"],
        "mvjax_vs_torch": med["torch"] / med["mvjax"],
        "vs_torch_with_free_attention": med["torch"] / med["mvjax_without_attention_core"],
    }, indent=2))


if __name__ == "__main__":
    main()
