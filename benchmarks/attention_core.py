"""The causal attention core (``mvjax.flash``) alone, GQA shapes: k/v passed with their own KV heads
(each kv head's G query heads share one GEMM) against k/v repeated to H heads first (one GEMM per
query head, as the core was called before it grouped heads). Forward, and forward + backward.

    python benchmarks/attention_core.py [--batch 4 --heads 9 --kv-heads 3 --seq 512 --head-dim 64]

Defaults are SmolLM2-135M's attention on the analysis benchmark's 4×512-token batches. Variants
alternate within each round; prints one JSON object with the best milliseconds per call.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from mvjax.flash import causal_attention


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=9)
    ap.add_argument("--kv-heads", type=int, default=3)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=10)
    args = ap.parse_args()
    B, H, K, T, D = args.batch, args.heads, args.kv_heads, args.seq, args.head_dim
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (B, H, T, D))
    k, v = (jax.random.normal(kk, (B, K, T, D)) for kk in keys[1:])
    valid = jnp.ones((B, T), bool)
    pos = jnp.broadcast_to(jnp.arange(T), (B, T))

    def grouped(q, k, v):
        return causal_attention(q, k, v, valid, pos)

    def repeated(q, k, v):
        return causal_attention(q, jnp.repeat(k, H // K, 1), jnp.repeat(v, H // K, 1), valid, pos)

    fns = {}
    for name, f in (("grouped", grouped), ("repeated", repeated)):
        fns[f"{name}_forward"] = jax.jit(f)
        fns[f"{name}_forward_backward"] = jax.jit(jax.grad(lambda *a, f=f: jnp.sum(f(*a) ** 2),
                                                           argnums=(0, 1, 2)))
    best = {n: float("inf") for n in fns}
    for f in fns.values():
        jax.block_until_ready(f(q, k, v))  # compile
    for _ in range(args.rounds):
        for name, f in fns.items():
            t = time.perf_counter()
            for _ in range(args.calls):
                out = f(q, k, v)
            jax.block_until_ready(out)
            best[name] = min(best[name], (time.perf_counter() - t) / args.calls * 1e3)
    print(json.dumps({"benchmark": "attention_core", "shape": dict(batch=B, heads=H, kv_heads=K,
                                                                    seq=T, head_dim=D),
                      "ms_per_call": {n: round(x, 2) for n, x in best.items()}}, indent=1))


if __name__ == "__main__":
    main()
