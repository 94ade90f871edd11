"""The first run on a lent accelerator: SmolLM2 ``disrupt --quick`` with the mesh and compute
dtype of the experiments, timed, with the device's peak memory. Prints one JSON line.

Why a ready script: a lent GPU comes for minutes; this measures on the first try instead of porting.

    python benchmarks/accelerator_disrupt.py                         # SmolLM2 from the mvjax cache
    python benchmarks/accelerator_disrupt.py --weights random        # SmolLM2's shape, random weights
    python benchmarks/accelerator_disrupt.py --mesh data=1,model=1 --dtype bfloat16 --timeout 480

``--weights random`` needs no file (a device machine that reaches no network, where the cached
model is too large to carry): the same shapes and so the same time and memory; its accuracies
mean nothing. ``--timeout``: the run stops itself (SIGALRM) and still prints what it measured.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

# SmolLM2-135M (HuggingFaceTB/SmolLM2-135M config.json): tied embeddings, RoPE θ = 1e5
SMOLLM2_SHAPE = dict(vocab_size=49152, hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3,
                     mlp_hidden=1536, max_seq_len=2048, norm_eps=1e-5, tie_embeddings=True)


def random_smollm2(where: Path) -> Path:
    """A SmolLM2-shaped model dir with random weights and a byte tokenizer (prompts come out
    longer in bytes than in SmolLM2's tokens: a conservative time)."""
    from mvjax.checkpoint import save_model
    from mvjax.config import ModelConfig, PositionalConfig
    from mvjax.model import init_model
    from mvjax.tokenizers import ByteTokenizer

    cfg = ModelConfig(**SMOLLM2_SHAPE, bos_id=256, init_std=0.02,
                      positional=PositionalConfig(scheme="rope", theta=100000.0))
    return save_model(where / "smollm2-random", init_model(cfg, 0), ByteTokenizer())


def device_memory() -> dict:
    import jax

    out = {}
    for d in jax.local_devices():
        stats = d.memory_stats() or {}
        out[str(d)] = {k: stats.get(k) for k in ("peak_bytes_in_use", "bytes_in_use", "bytes_limit")}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", choices=("smollm2", "random"), default="smollm2")
    ap.add_argument("--mesh", default=None, help="as the experiments' --mesh (default one device)")
    ap.add_argument("--dtype", default="auto", help="auto (bfloat16 on an accelerator) | float32 | bfloat16")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--timeout", type=int, default=0, help="seconds, then stop and report (0: none)")
    ap.add_argument("--out", default=None, help="results dir (default: a temporary one)")
    args = ap.parse_args()

    import jax

    from mvjax.cli import main as mvjax_main

    record: dict = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
                    "weights": args.weights, "mesh": args.mesh or "data=1,model=1", "dtype": args.dtype}

    def stop(signum, frame):
        raise TimeoutError(f"stopped after --timeout {args.timeout} s")

    if args.timeout:
        signal.signal(signal.SIGALRM, stop)
        signal.alarm(args.timeout)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        model = "smollm2" if args.weights == "smollm2" else str(random_smollm2(Path(tmp)))
        record["setup_s"] = round(time.time() - t0, 1)
        out = args.out or str(Path(tmp) / "disrupt")
        argv = ["experiment", "disrupt", "--model", model, "--out", out, "--quick",
                "--batch-size", str(args.batch_size), "--dtype", args.dtype]
        argv += ["--mesh", args.mesh] if args.mesh else []
        t1 = time.time()
        try:
            record["rc"] = mvjax_main(argv)
        except TimeoutError as e:
            record["rc"], record["stopped"] = None, str(e)
        record["disrupt_s"] = round(time.time() - t1, 1)
        results = Path(out) / "results.json"
        if results.is_file():
            r = json.loads(results.read_text())
            record["conditions"] = len(r["conditions"])
            record["original_perplexity"] = r["conditions"]["original"].get("perplexity")
    record["device_memory"] = device_memory()
    print(json.dumps(record))
    return 0 if record.get("rc") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
