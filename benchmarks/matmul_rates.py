"""XLA:CPU fp32 GEMM rates at the shapes the benchmarks run, and the step time they imply.

A floor for any speed target: the training step of ``train_throughput.py``'s config cannot be
faster than its matmuls (forward, input gradient, weight gradient) at their best isolated rates,
and SmolLM2's analysis forward cannot beat its 30 layers' projection and MLP GEMMs.

    .venv/bin/python benchmarks/matmul_rates.py

Prints JSON: GFLOP/s per shape and pass, the 2048³ peak, and the implied floors.
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp

from train_throughput import CONFIGS


def best_seconds(f, *args, reps: int = 7) -> float:
    jax.block_until_ready(f(*args))
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - t)
    return best


PASSES = {"forward": (lambda x, w: x @ w), "input_grad": (lambda dy, w: dy @ w.T),
          "weight_grad": (lambda x, dy: x.T @ dy)}


def gemm_seconds(m: int, k: int, n: int, passes=tuple(PASSES)) -> dict[str, float]:
    key = jax.random.key(0)
    x, w, dy = (jax.random.normal(key, s) for s in ((m, k), (k, n), (m, n)))
    args = {"forward": (x, w), "input_grad": (dy, w), "weight_grad": (x, dy)}
    return {p: best_seconds(jax.jit(PASSES[p]), *args[p]) for p in passes}


def main() -> None:
    n = 2048
    square = jax.jit(lambda a, b: a @ b)
    ones = jnp.ones((n, n))
    peaks = [2 * n ** 3 / best_seconds(square, ones, ones)]
    report: dict = {"gemms": {}}

    def record(name: str, m: int, k: int, n_: int, count: int, passes=tuple(PASSES)) -> float:
        secs = gemm_seconds(m, k, n_, passes)
        report["gemms"][name] = {p: 2 * m * k * n_ / s / 1e9 for p, s in secs.items()}
        return count * sum(secs.values())

    c = CONFIGS["cpu-512"]
    rows, d, f = c["batch"] * c["seq"], c["hidden"], c["mlp"]
    train = (record(f"cpu-512 {rows}x{d}x{d} (q,k,v,o)", rows, d, d, 4 * c["layers"])
             + record(f"cpu-512 {rows}x{d}x{f} (gate,up)", rows, d, f, 2 * c["layers"])
             + record(f"cpu-512 {rows}x{f}x{d} (down)", rows, f, d, c["layers"])
             + record(f"cpu-512 {rows}x{d}x{c['vocab']} (head)", rows, d, c["vocab"], 1))
    report["cpu-512_step_matmul_floor_s"] = train

    rows, d, kv, f, layers = 2048, 576, 192, 1536, 30  # SmolLM2-135M, 4×512 tokens per batch
    fwd = ("forward",)
    smol = (record(f"smollm2 {rows}x{d}x{d} (q,o)", rows, d, d, 2 * layers, fwd)
            + record(f"smollm2 {rows}x{d}x{kv} (k,v)", rows, d, kv, 2 * layers, fwd)
            + record(f"smollm2 {rows}x{d}x{f} (gate,up)", rows, d, f, 2 * layers, fwd)
            + record(f"smollm2 {rows}x{f}x{d} (down)", rows, f, d, layers, fwd))
    report["smollm2_forward_matmul_ceiling_tokens_per_s"] = rows / smol
    peaks.append(2 * n ** 3 / best_seconds(square, ones, ones))  # the best seen counts
    report["peak_2048_gflops"] = max(peaks) / 1e9
    from mvjax.config import ModelConfig
    from mvjax.train.metrics import flops_per_token
    cfg = ModelConfig(vocab_size=c["vocab"], hidden_size=c["hidden"], num_layers=c["layers"],
                      num_heads=c["heads"], mlp_hidden=c["mlp"], max_seq_len=c["seq"],
                      tie_embeddings=False)
    step_flops = flops_per_token(cfg, c["seq"]) * c["batch"] * c["seq"]
    report["cpu-512_mfu_if_step_were_only_its_matmuls"] = step_flops / train / max(peaks)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
