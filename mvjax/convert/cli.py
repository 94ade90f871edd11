"""``mvjax convert`` and ``mvjax weights`` — the doors to converted weights."""

from __future__ import annotations

import argparse
import sys

from mvjax.atomic import check_writable
from mvjax.convert.hf import save_hf
from mvjax.convert.weights import NAMED_MODELS, fetch_named, named_dir
from mvjax.load import KINDS, load_pretrained


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert weights: HF dir / GGUF / mvjax dir → mvjax dir or HF dir")
    p.add_argument("src", help="HF LLaMA / Gemma 3 / Qwen2 dir, .gguf file, mvjax model dir, or a "
                   "name (smollm2, gemma3, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b)")
    p.add_argument("dst", help="output directory (written atomically)")
    p.add_argument("--from", dest="src_kind", choices=("auto", *KINDS), default="auto",
                   help="what SRC is (default: detect)")
    p.add_argument("--to", dest="dst_kind", choices=("mvjax", "hf"), default="mvjax",
                   help="mvjax model dir (config.json + orbax params/) or HF dir (safetensors)")
    p.add_argument("--layout", choices=("half", "interleaved"), default="half",
                   help="GGUF only: RoPE pair layout of the imported q/k (equal logits either way)")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=_convert)

    p = sub.add_parser("weights", help="fetch known weights for offline use and print their path")
    p.add_argument("name", choices=tuple(NAMED_MODELS),
                   help="; ".join(f"{k}: {v[3]}" for k, v in NAMED_MODELS.items()))
    p.add_argument("--convert", action="store_true",
                   help="also convert and cache the mvjax model (later loads are fast)")
    p.set_defaults(func=_weights)


def _convert(args: argparse.Namespace) -> int:
    dst = check_writable(args.dst)  # before reading (and dequantizing) the source
    if dst.exists() and not args.force:
        raise FileExistsError(f"{dst} exists: choose another output or pass --force to replace it")
    model, tok = load_pretrained(args.src, kind=args.src_kind, layout=args.layout)
    if args.dst_kind == "hf":
        out = save_hf(dst, model, tok)
    else:
        from mvjax.checkpoint import save_model  # local: orbax and flax, kept out of `mvjax --help`

        out = save_model(dst, model, tok)
    print(out)
    return 0


def _weights(args: argparse.Namespace) -> int:
    path = fetch_named(args.name)
    if args.convert:
        converted = named_dir(args.name)  # converts once; later loads read this directory
        print(f"# converted model cached in {converted}", file=sys.stderr)
    print(path)
    return 0
