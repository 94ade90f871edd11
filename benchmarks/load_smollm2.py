"""Seconds from SmolLM2-135M weights on disk to a ready mvjax model (parameters on device).

Paths timed: the Q4_1 GGUF (cold: read, dequantize, un-permute, build; the embedded tokenizer
separately, as transformers builds it), an HF dir exported from it (safetensors float32), and the
cached mvjax model dir (orbax). The first (eager) forward pass is timed apart: it is the model's
compile cost, not loading. Prints JSON.
Usage: python benchmarks/load_smollm2.py [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _ready(model) -> None:
    import jax
    from flax import nnx

    jax.block_until_ready(nnx.state(model, nnx.Param))


def _forward(model) -> None:
    import jax
    import jax.numpy as jnp

    jax.block_until_ready(model(jnp.zeros((1, 8), jnp.int32)).logits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out-dir", default=None, help="where to write the HF / mvjax dirs (default: temp)")
    args = ap.parse_args()

    from mvjax.convert.weights import fetch_smollm2

    gguf_path = fetch_smollm2()
    if args.out_dir is None:  # ~1 GB of float32 copies: never leave them behind in /tmp
        with tempfile.TemporaryDirectory(prefix="mvjax-bench-") as tmp:
            return _run(gguf_path, Path(tmp))
    return _run(gguf_path, Path(args.out_dir))


def _run(gguf_path: Path, out: Path) -> None:
    import jax

    from mvjax.checkpoint import load_model, save_model
    from mvjax.convert.gguf import gguf_tokenizer, load_gguf
    from mvjax.convert.hf import load_hf, save_hf
    from mvjax.tokenizers import load_tokenizer

    result = {"device": jax.devices()[0].device_kind, "gguf": str(gguf_path)}

    t = time.perf_counter()
    model, tok = load_gguf(gguf_path, tokenizer=False)
    _ready(model)
    result["gguf_weights_s"] = time.perf_counter() - t
    t = time.perf_counter()
    tok = gguf_tokenizer(gguf_path)
    result["gguf_tokenizer_s"] = time.perf_counter() - t
    result["gguf_to_ready_s"] = result["gguf_weights_s"] + result["gguf_tokenizer_s"]
    t = time.perf_counter()
    _forward(model)
    result["first_eager_forward_s"] = time.perf_counter() - t

    save_hf(out / "hf", model, tok)
    save_model(out / "mvjax", model, tok)
    del model

    t = time.perf_counter()
    m, _ = load_hf(out / "hf")
    _ready(m)
    result["hf_dir_to_ready_s"] = time.perf_counter() - t
    del m

    t = time.perf_counter()
    m = load_model(out / "mvjax")
    load_tokenizer(out / "mvjax")
    _ready(m)
    result["mvjax_dir_to_ready_s"] = time.perf_counter() - t
    result["target_s"] = 10.0
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
