"""Training throughput: the mvjax jitted train step against ``transformers`` LlamaForCausalLM +
torch.optim.AdamW (eager, CPU), on the same model shapes, in one process with alternating rounds so
that machine load hits both alike.

    .venv/bin/python benchmarks/train_throughput.py --configs tiny,small --rounds 3 --steps 4

Prints one JSON object: per config, tokens/s for each mvjax variant and for PyTorch (median over
rounds), the ratio, and MFU against an fp32 matmul peak measured here (a 2048³ jitted jnp matmul,
timed between rounds; the best seen counts, so a busy machine inflates MFU less).
Variants (``--variants``) are mvjax step settings compared A/B in the same run:
``chunk0`` (full logits) and ``chunkN`` (cross-entropy over N tokens at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

CONFIGS = {
    "tiny": dict(hidden=256, layers=4, heads=4, mlp=688, vocab=8192, seq=256, batch=8),
    "small": dict(hidden=512, layers=8, heads=8, mlp=1376, vocab=8192, seq=512, batch=8),
}


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """Best fp32 FLOP/s of an n×n×n jitted matmul on this machine right now."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def mvjax_runner(c: dict, chunk: int):
    from flax import nnx

    from mvjax.config import ModelConfig
    from mvjax.model import init_model
    from train.config import OptimConfig
    from train.optim import build_optimizer
    from train.step import make_train_step

    cfg = ModelConfig(vocab_size=c["vocab"], hidden_size=c["hidden"], num_layers=c["layers"],
                      num_heads=c["heads"], mlp_hidden=c["mlp"], max_seq_len=c["seq"],
                      tie_embeddings=False)
    graphdef, params = nnx.split(init_model(cfg, 0), nnx.Param)
    params = nnx.to_pure_dict(params)
    tx, _ = build_optimizer(OptimConfig(lr=1e-4, warmup_steps=0), 10 ** 6, params)
    step = make_train_step(graphdef, cfg, tx, 1, chunk)
    state = {"params": params, "opt": tx.init(params)}
    rng = np.random.default_rng(0)
    batch = jnp.asarray(rng.integers(0, c["vocab"], (c["batch"], c["seq"] + 1), dtype=np.int32))
    box = {"state": state}

    def run(n: int) -> float:
        s = box["state"]
        t = time.perf_counter()
        for _ in range(n):
            s, m = step(s, batch)
        jax.block_until_ready(m["loss"])
        box["state"] = s
        return time.perf_counter() - t

    run(1)  # compile
    return cfg, run


def torch_runner(c: dict):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    hf = LlamaConfig(vocab_size=c["vocab"], hidden_size=c["hidden"], intermediate_size=c["mlp"],
                     num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
                     num_key_value_heads=c["heads"], max_position_embeddings=c["seq"],
                     tie_word_embeddings=False, attn_implementation="sdpa")
    model = LlamaForCausalLM(hf)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.integers(0, c["vocab"], (c["batch"], c["seq"] + 1)).astype(np.int64))

    def run(n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            ids = batch[:, :-1]
            loss = model(input_ids=ids, labels=ids).loss  # HF shifts labels inside
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    run(1)  # warm up allocator
    return run


def compare_flag_sets(args: argparse.Namespace) -> None:
    import subprocess
    import sys
    flag_sets = args.xla_flag_sets.split(";")
    child = [sys.executable, __file__, "--configs", args.configs, "--rounds", "1", "--steps",
             str(args.steps), "--variants", args.variants] + (["--no-torch"] if args.no_torch else [])
    results: dict[str, list] = {f: [] for f in flag_sets}
    for r in range(args.rounds):
        for flags in (flag_sets if r % 2 == 0 else flag_sets[::-1]):
            env = dict(os.environ, XLA_FLAGS=flags)
            out = subprocess.run(child, env=env, capture_output=True, text=True, check=True).stdout
            results[flags].append(json.loads(out[out.index("\n{\n") + 1:]))
    summary = {}
    for flags, reports in results.items():
        summary[flags or "<none>"] = {
            name: {k: statistics.median(rep["configs"][name][k].get("vs_torch", rep["configs"][name][k]
                                                                     ["tokens_per_s"])
                                        for rep in reports)
                   for k in reports[0]["configs"][name] if k.startswith("mvjax")}
            for name in reports[0]["configs"]}
    print(json.dumps({"median_vs_torch_or_tokens_per_s": summary}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="tiny,small")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per round and runner")
    ap.add_argument("--variants", default="chunk2048,chunk0")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--xla-flag-sets", default=None,
                    help="';'-separated XLA_FLAGS values to compare: each runs in its own subprocess "
                    "(XLA reads flags once), alternating --rounds times; mvjax/torch ratios within "
                    "each subprocess are the contention-robust comparison")
    args = ap.parse_args()
    if args.xla_flag_sets is not None:
        return compare_flag_sets(args)

    import torch
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    from train.metrics import flops_per_token

    peaks = [matmul_peak()]
    report = {"matmul_peak_flops": None, "threads": threads, "jax": jax.__version__,
              "torch": torch.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
              "configs": {}}
    for name in args.configs.split(","):
        c = CONFIGS[name]
        tokens = c["batch"] * c["seq"]
        runners = {}
        cfg = None
        for v in args.variants.split(","):
            cfg, runners[f"mvjax-{v}"] = mvjax_runner(c, int(v.removeprefix("chunk")))
        if not args.no_torch:
            runners["torch"] = torch_runner(c)
        times: dict[str, list[float]] = {k: [] for k in runners}
        for r in range(args.rounds):
            order = list(runners) if r % 2 == 0 else list(reversed(runners))
            for k in order:
                times[k].append(args.steps * tokens / runners[k](args.steps))
            peaks.append(matmul_peak())  # the machine may be shared: keep the best seen
        peak = max(peaks)
        report["matmul_peak_flops"] = peak
        fpt = flops_per_token(cfg, c["seq"])
        res = {"tokens_per_step": tokens, "flops_per_token": fpt}
        for k, tps in times.items():
            med = statistics.median(tps)
            res[k] = {"tokens_per_s": med, "rounds": tps, "mfu": fpt * med / peak}
        if "torch" in res:
            for k in runners:
                if k != "torch":
                    res[k]["vs_torch"] = res[k]["tokens_per_s"] / res["torch"]["tokens_per_s"]
        report["configs"][name] = res
        print(json.dumps({name: res}), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
