"""Training throughput: the mvjax jitted train step against ``transformers`` LlamaForCausalLM +
torch.optim.AdamW (eager, CPU), on the same model shapes.

    .venv/bin/python benchmarks/train_throughput.py --configs cpu-256,cpu-512 --rounds 3 --steps 3

Every runner lives in its own worker process (so no runner's heap or caches touch another's),
built once, then driven in alternating rounds (``run N`` over a pipe) so that host-speed drift hits
all alike. Runners:
  ``mvjax`` — the train step, started with ``mvjax.host_memory``'s allocator tunables, as the
  ``mvjax train`` command runs;
  ``torch`` — PyTorch with the same tunables (they help it too: the conservative comparison);
  ``torch-stock`` / ``mvjax-stock`` — both with the stock allocator (``--stock``): what a PyTorch
  user runs, and what the tunables buy mvjax.
Extra mvjax runners come from ``--variants`` (``chunkN``: cross-entropy over N tokens at a time),
``--xla-flag-sets`` (one runner per ';'-separated XLA_FLAGS value) and ``--checkouts`` (one runner
per other mvjax checkout, e.g. ``git worktree add /tmp/base HEAD~1``: A/B a code change).

Prints one JSON object: per config, tokens/s per runner (median over rounds), each mvjax runner's
ratio to ``torch`` (and ``torch-stock``), and MFU against an fp32 matmul peak measured inside the
mvjax worker (a 2048³ jitted jnp matmul, timed after every round; the best seen counts).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

CONFIGS = {
    "cpu-256": dict(hidden=256, layers=4, heads=4, mlp=688, vocab=8192, seq=256, batch=8),
    "cpu-512": dict(hidden=512, layers=8, heads=8, mlp=1376, vocab=8192, seq=512, batch=8),
}


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """Best fp32 FLOP/s of an n×n×n jitted matmul on this machine right now."""
    import jax
    import jax.numpy as jnp

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


def model_config(c: dict):
    from mvjax.config import ModelConfig

    return ModelConfig(vocab_size=c["vocab"], hidden_size=c["hidden"], num_layers=c["layers"],
                       num_heads=c["heads"], mlp_hidden=c["mlp"], max_seq_len=c["seq"],
                       tie_embeddings=False)


def mvjax_runner(c: dict, chunk: int):
    """(config, run(n) -> seconds for n train steps), compiled and warmed up."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from mvjax.model import init_model
    from mvjax.train.config import OptimConfig
    from mvjax.train.optim import build_optimizer
    from mvjax.train.step import make_train_step

    cfg = model_config(c)
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
    run(1)  # first use of the step's buffers
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

    run(2)  # warm up the allocator
    return run


def worker(kind: str, config: str, chunk: int) -> None:
    """Build one runner, then answer ``run N`` (seconds) and ``peak`` (FLOP/s) lines on stdin."""
    c = CONFIGS[config]
    if kind == "torch":
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
        run = torch_runner(c)
    else:
        if kind == "mvjax-no-attention":  # a measurement stand-in (attention_share.py), never a mode
            import mvjax.model as model_module
            model_module.causal_attention = lambda q, k, v, *_, **__: v + 1e-3 * (q + k)
        run = mvjax_runner(c, chunk)[1]
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "run":
            print(run(int(cmd[1])), flush=True)
        elif cmd[0] == "peak":
            print(matmul_peak(), flush=True)


class Worker:
    def __init__(self, kind: str, config: str, chunk: int, env: dict[str, str]):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, "--configs", config, "--chunk", str(chunk)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self._expect("ready")

    def _expect(self, what: str | None = None) -> str:
        line = self.proc.stdout.readline().strip()
        if not line or (what and line != what):
            raise RuntimeError(f"benchmark worker died (exit {self.proc.poll()}): see its stderr above")
        return line

    def ask(self, cmd: str) -> float:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return float(self._expect())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def runner_specs(args: argparse.Namespace) -> dict[str, tuple[str, int, dict[str, str]]]:
    """name -> (kind, chunk, environment) for every runner this invocation compares."""
    from mvjax.host_memory import tuned_environment, untuned_environment

    tuned = tuned_environment()
    specs = {}
    for v in args.variants.split(","):
        chunk = int(v.removeprefix("chunk"))
        name = "mvjax" if v == "chunk0" else f"mvjax-{v}"
        specs[name] = ("mvjax", chunk, tuned)
        if args.stock:
            specs[f"{name}-stock"] = ("mvjax", chunk, untuned_environment())
        for i, flags in enumerate(args.xla_flag_sets.split(";") if args.xla_flag_sets else []):
            specs[f"{name}-xla{i}"] = ("mvjax", chunk, dict(tuned, XLA_FLAGS=flags))
        for checkout in args.checkouts.split(",") if args.checkouts else []:
            path = os.path.abspath(checkout)
            if not os.path.isfile(os.path.join(path, "mvjax", "model.py")):
                raise SystemExit(f"--checkouts {checkout}: no mvjax/model.py there; pass the root "
                                 "of another mvjax checkout (e.g. a `git worktree add` of a commit)")
            specs[f"{name}@{os.path.basename(path)}"] = ("mvjax", chunk, dict(tuned, PYTHONPATH=path))
    if not args.no_torch:
        specs["torch"] = ("torch", 0, tuned)
        if args.stock:
            specs["torch-stock"] = ("torch", 0, untuned_environment())
    return specs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="cpu-256,cpu-512")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round and runner")
    ap.add_argument("--variants", default="chunk0", help="mvjax runners: chunk0 (full logits), chunkN")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--stock", action="store_true",
                    help="also run mvjax and PyTorch with the stock allocator")
    ap.add_argument("--xla-flag-sets", default=None,
                    help="';'-separated XLA_FLAGS values: one extra mvjax runner per value")
    ap.add_argument("--checkouts", default=None,
                    help="comma-separated roots of other mvjax checkouts: one more mvjax runner "
                    "each, importing mvjax from there (A/B a change against a commit)")
    ap.add_argument("--worker", choices=("mvjax", "mvjax-no-attention", "torch"), help=argparse.SUPPRESS)
    ap.add_argument("--chunk", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.configs, args.chunk)

    specs = runner_specs(args)
    from mvjax.train.metrics import flops_per_token

    report = {"threads": os.cpu_count(), "runners": {k: {"kind": s[0], "chunk": s[1],
                                                           "XLA_FLAGS": s[2].get("XLA_FLAGS", ""),
                                                           "GLIBC_TUNABLES": s[2].get("GLIBC_TUNABLES", "")}
                                                       for k, s in specs.items()},
              "configs": {}}
    for name in args.configs.split(","):
        c = CONFIGS[name]
        tokens = c["batch"] * c["seq"]
        workers = {k: Worker(kind, name, chunk, env) for k, (kind, chunk, env) in specs.items()}
        prober = next(w for k, w in workers.items() if specs[k][0] == "mvjax")
        try:
            peaks = [prober.ask("peak")]
            times: dict[str, list[float]] = {k: [] for k in workers}
            for r in range(args.rounds):
                for k in (list(workers) if r % 2 == 0 else list(reversed(workers))):
                    times[k].append(args.steps * tokens / workers[k].ask(f"run {args.steps}"))
                peaks.append(prober.ask("peak"))
        finally:
            for w in workers.values():
                w.close()
        peak = max(peaks)
        fpt = flops_per_token(model_config(c), c["seq"])
        res = {"tokens_per_step": tokens, "flops_per_token": fpt, "matmul_peak_flops": peak}
        for k, tps in times.items():
            res[k] = {"tokens_per_s": statistics.median(tps), "rounds": tps,
                      "mfu": fpt * statistics.median(tps) / peak}
        for k in times:
            if specs[k][0] == "mvjax":
                for ref in ("torch", "torch-stock"):
                    if ref in res:
                        res[k][f"vs_{ref}"] = res[k]["tokens_per_s"] / res[ref]["tokens_per_s"]
        report["configs"][name] = res
        print(json.dumps({name: res}), file=sys.stderr, flush=True)
    report["targets"] = {"vs_torch": ">= 1.1 (cpu-256 and cpu-512)", "mfu_cpu-512": ">= 0.75"}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
