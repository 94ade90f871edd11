"""Q/K/V statistics for every layer of SmolLM2-135M: mvjax (jitted probe, no LM head) vs
``transformers`` with forward hooks on q_proj/k_proj/v_proj (the paper's method), fp32 on CPU.

Each side runs in its own subprocess, alternating, so peak RSS (the child's ``VmHWM``) is honest
and neither side warms the other's caches. Both sides read the same token rows
(BOS + text) and reduce Σx² per (head, dim) in a streaming way; the parent compares the M = sqrt(Σx²)
matrices of the pre-RoPE sites (un-permuting q/k dims if the mvjax import kept the interleaved
layout). Prints one JSON object.

    python benchmarks/analyze_throughput.py [--seqs 16 --seq-len 512 --batch-size 4 --repeats 2]
        [--hf-allocator stock|tuned]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SITES = ("q", "k", "v")


def _rss_mb() -> float:
    """This process's peak RSS since it started. Not ``getrusage``'s ru_maxrss: Linux carries that
    over from the parent across fork + exec, so a child would report the parent's peak."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 1024


def child_mvjax(rows: np.ndarray, batch_size: int) -> tuple[dict, dict]:
    from mvjax.load import load_layerwise
    from mvjax.probe import collect_stats

    model, _ = load_layerwise("smollm2")  # as `mvjax analyze` does: one layer in memory at a time
    batches = [rows[i: i + batch_size] for i in range(0, len(rows), batch_size)]
    t0 = time.perf_counter()
    collect_stats(model, batches[:1], SITES, progress=False)  # compile
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()  # timed: reading every layer's weights as well as the compute
    recs = collect_stats(model, batches, SITES, progress=False)
    dt = time.perf_counter() - t0
    M = {f"{s}_{l}": np.sqrt(st.sumsq) for s in SITES for l, st in recs[s].items()}
    pos = model.cfg.layer_positional(0)
    return M, {"seconds": dt, "warmup_seconds": warm, "layout": pos.layout,
               "head_dim": model.cfg.head_dim}


def child_hf(rows: np.ndarray, batch_size: int) -> tuple[dict, dict]:
    import torch
    from transformers import AutoModelForCausalLM

    from mvjax.convert.weights import fetch_smollm2

    torch.set_flush_denormal(True)
    gguf = fetch_smollm2(quiet=True)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 dtype=torch.float32).eval()
    cfg = model.config
    D = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    acc: dict[str, torch.Tensor] = {}

    def hook(name):
        def f(module, inputs, out):
            x = out.reshape(out.shape[0], out.shape[1], -1, D).double()
            acc[name] = acc.get(name, 0) + (x * x).sum((0, 1))
        return f

    for i, layer in enumerate(model.model.layers):
        for s in SITES:
            getattr(layer.self_attn, f"{s}_proj").register_forward_hook(hook(f"{s}_{i}"))
    batches = [torch.from_numpy(rows[i: i + batch_size]).long() for i in range(0, len(rows), batch_size)]
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(batches[0])  # warm-up, like the mvjax compile
        warm = time.perf_counter() - t0
        acc.clear()
        t0 = time.perf_counter()
        for b in batches:
            model(b)  # full forward incl. LM head, as the paper's hooks do
        dt = time.perf_counter() - t0
    return {k: np.sqrt(v.numpy()) for k, v in acc.items()}, {"seconds": dt, "warmup_seconds": warm,
                                                             "torch_threads": torch.get_num_threads()}


def run_child(side: str, rows_path: Path, out_path: Path, batch_size: int, tuned: bool) -> dict:
    """One side in a fresh process; ``tuned``: with mvjax.host_memory's allocator tunables (as the
    ``mvjax`` command runs), else with the stock allocator."""
    from mvjax.host_memory import tuned_environment, untuned_environment

    cmd = [sys.executable, __file__, "--child", side, "--rows", str(rows_path), "--out",
           str(out_path), "--batch-size", str(batch_size)]
    env = tuned_environment() if tuned else untuned_environment()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} child failed: {proc.stderr.strip().splitlines()[-3:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_rows(n: int, seq_len: int, source: str) -> np.ndarray:
    """``n`` BOS-first rows, built exactly as ``mvjax analyze`` builds them."""
    from mvjax.analysis.analyze import load_data, make_sequences
    from mvjax.load import load_layerwise

    _, tok = load_layerwise("smollm2")  # the tokenizer, without the weights
    texts, _ = load_data(None if source == "sample" else source, "text")
    rows = make_sequences(tok, texts, seq_len, n * seq_len)
    if len(rows) < n:
        raise ValueError(f"{source} gives {len(rows)} rows of {seq_len} tokens, need {n}: pass a "
                         "longer --text or fewer --seqs")
    return rows


def _to_hf_order(M_HxD: np.ndarray, layout: str) -> np.ndarray:
    """Pre-RoPE q/k dims of an interleaved-layout import in HF rotate-half order."""
    if layout != "interleaved":
        return M_HxD
    from mvjax.convert.hf import interleaved_to_half

    return interleaved_to_half(M_HxD.reshape(-1), M_HxD.shape[0]).reshape(M_HxD.shape)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqs", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--text", default="tinyshakespeare",
                    help="a text file, a named corpus (resolved by mvjax.data), or 'sample'")
    ap.add_argument("--hf-allocator", choices=("stock", "tuned"), default="stock",
                    help="run the HF side with the stock glibc allocator (as HF users do) or with "
                    "mvjax's tunables (mvjax always runs tuned, as the mvjax command does)")
    ap.add_argument("--child", choices=("mvjax", "hf"))
    ap.add_argument("--rows", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    if args.child:
        rows = np.load(args.rows)
        fn = child_mvjax if args.child == "mvjax" else child_hf
        M, info = fn(rows, args.batch_size)
        np.savez(args.out, **M)
        info.update(tokens=int(rows.size), tokens_per_s=rows.size / info["seconds"],
                    peak_rss_mb=_rss_mb())
        print(json.dumps(info))
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = make_rows(args.seqs, args.seq_len, args.text)
        np.save(tmp / "rows.npy", rows)
        runs: dict[str, list[dict]] = {"mvjax": [], "hf": []}
        for r in range(args.repeats):
            for side in ("mvjax", "hf") if r % 2 == 0 else ("hf", "mvjax"):
                tuned = side == "mvjax" or args.hf_allocator == "tuned"
                runs[side].append(run_child(side, tmp / "rows.npy", tmp / f"{side}.npz",
                                            args.batch_size, tuned))
        mv, hf = np.load(tmp / "mvjax.npz"), np.load(tmp / "hf.npz")
        layout = runs["mvjax"][0]["layout"]
        rel = {}
        for s in SITES:
            worst = 0.0
            for key in [k for k in hf.files if k.startswith(f"{s}_")]:
                a = mv[key] if s == "v" else _to_hf_order(mv[key], layout)
                b = hf[key]
                worst = max(worst, float(np.abs(a - b).max() / np.abs(b).max()))
            rel[s] = worst
    best = {s: max(x["tokens_per_s"] for x in runs[s]) for s in runs}
    rss = {s: max(x["peak_rss_mb"] for x in runs[s]) for s in runs}
    print(json.dumps({
        "benchmark": "analyze_throughput", "model": "SmolLM2-135M-Instruct (Q4_1 GGUF, fp32)",
        "sequences": args.seqs, "seq_len": args.seq_len, "batch_size": args.batch_size,
        "sites": list(SITES), "mvjax_layout": layout, "hf_allocator": args.hf_allocator,
        "runs": runs,
        "tokens_per_s": best, "speedup_mvjax_over_hf": best["mvjax"] / best["hf"],
        # host speed drifts between rounds; each round ran both sides back to back
        "speedup_per_round": [m["tokens_per_s"] / h["tokens_per_s"]
                              for m, h in zip(runs["mvjax"], runs["hf"])],
        "rss_ratio_per_round": [m["peak_rss_mb"] / h["peak_rss_mb"]
                                for m, h in zip(runs["mvjax"], runs["hf"])],
        "peak_rss_mb": rss, "rss_ratio_mvjax_over_hf": rss["mvjax"] / rss["hf"],
        "max_rel_diff_M": rel,
        "targets": {"speedup": ">= 1.8", "rss_ratio": "<= 0.33", "max_rel_diff_M": "<= 1e-4"},
    }, indent=1))


if __name__ == "__main__":
    main()
