"""Cost of an intervention inside the jitted forward: the plain model against the same model with
the paper's disruption (top-1 dim per head of Q and K after RoPE replaced by its prompt mean, every
layer) on the same batch. The intervention is a traced argument of the same jitted function, as in
the experiments; the two variants alternate within each round. Target: ≤ 1.15×.

    python benchmarks/intervention_overhead.py [--model smollm2 --batch 4 --seq 256 --rounds 5]

``--model tiny`` uses a random 4-layer model instead (no weights needed). Prints one JSON object:
best and median milliseconds per forward of each variant and their ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mvjax.interventions import intervention


def load(name: str):
    if name == "tiny":
        from mvjax.config import ModelConfig
        from mvjax.model import init_model

        return init_model(ModelConfig(vocab_size=512, hidden_size=256, num_layers=4, num_heads=4,
                                      num_kv_heads=2, mlp_hidden=688, head_dim=64, max_seq_len=1024))
    from mvjax.load import load_pretrained

    return load_pretrained(name)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=3)
    args = ap.parse_args()
    model = load(args.model)
    cfg = model.cfg
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (args.batch, args.seq)), jnp.int32)
    masks = {}
    for site, heads in (("q_rot", cfg.num_heads), ("k_rot", cfg.num_kv_heads)):
        m = np.zeros((cfg.num_layers, heads, cfg.head_dim), bool)  # one low-frequency dim per head
        for l in range(cfg.num_layers):
            m[l, np.arange(heads), rng.integers(cfg.head_dim // 2, cfg.head_dim, heads)] = True
        masks[site] = m
    probe = intervention(cfg, masks)

    @jax.jit
    def forward(state, tokens, probe):
        return nnx.merge(graphdef, state)(tokens, probe=probe, logits=False).hidden

    variants = {"plain": None, "intervened": probe}
    for p in variants.values():  # compile both
        forward(state, tokens, p).block_until_ready()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, p in variants.items():
            for _ in range(args.calls):
                t0 = time.perf_counter()
                forward(state, tokens, p).block_until_ready()
                times[name].append(1000 * (time.perf_counter() - t0))
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "model": args.model, "batch": args.batch, "seq": args.seq, "rounds": args.rounds,
        "calls_per_round": args.calls, "best_ms": best, "median_ms": med,
        "ratio_best": best["intervened"] / best["plain"],
        "ratio_median": med["intervened"] / med["plain"], "target": 1.15,
        "intervention": "mean replacement of the top-1 dim per head, q_rot and k_rot, every layer",
    }, indent=1))


if __name__ == "__main__":
    main()
