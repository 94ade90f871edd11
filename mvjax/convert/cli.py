"""``mvjax convert``, ``mvjax weights`` and ``mvjax generate`` — the doors to converted weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SOURCES = ("auto", "hf", "gguf", "mvjax")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert weights: HF dir / GGUF / mvjax dir → mvjax dir or HF dir")
    p.add_argument("src", help="HF LLaMA dir, .gguf file, mvjax model dir, or a name (smollm2)")
    p.add_argument("dst", help="output directory (written atomically)")
    p.add_argument("--from", dest="src_kind", choices=SOURCES, default="auto",
                   help="what SRC is (default: detect)")
    p.add_argument("--to", dest="dst_kind", choices=("mvjax", "hf"), default="mvjax",
                   help="mvjax model dir (config.json + orbax params/) or HF dir (safetensors)")
    p.add_argument("--layout", choices=("half", "interleaved"), default="half",
                   help="GGUF only: RoPE pair layout of the imported q/k (equal logits either way)")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=_convert)

    p = sub.add_parser("weights", help="fetch known weights for offline use and print their path")
    p.add_argument("name", choices=("smollm2",), help="smollm2: SmolLM2-135M-Instruct Q4_1 GGUF")
    p.add_argument("--convert", action="store_true",
                   help="also convert and cache the mvjax model (later loads are fast)")
    p.set_defaults(func=_weights)

    p = sub.add_parser("generate", help="continue a prompt with a pretrained or trained model")
    p.add_argument("--model", required=True, help="smollm2, mvjax model dir, HF dir or .gguf file")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_generate)


def _load_source(src: str, kind: str, layout: str):
    from mvjax.load import load_pretrained

    path = Path(src)
    if kind == "hf":
        from mvjax.convert.hf import load_hf

        return load_hf(path)
    if kind == "gguf":
        from mvjax.convert.gguf import load_gguf

        return load_gguf(path, layout=layout)
    if kind == "mvjax":
        from mvjax.checkpoint import is_model_dir

        if not is_model_dir(path):
            raise FileNotFoundError(f"{path} is not an mvjax model dir (config.json + params/)")
    elif path.suffix == ".gguf" and path.is_file():
        from mvjax.convert.gguf import load_gguf

        return load_gguf(path, layout=layout)
    return load_pretrained(src)


def _convert(args: argparse.Namespace) -> int:
    from mvjax.atomic import check_writable

    dst = check_writable(args.dst)  # before reading (and dequantizing) the source
    if dst.exists() and not args.force:
        raise FileExistsError(f"{dst} exists: choose another output or pass --force to replace it")
    model, tok = _load_source(args.src, args.src_kind, args.layout)
    if args.dst_kind == "hf":
        from mvjax.convert.hf import save_hf

        out = save_hf(dst, model, tok)
    else:
        from mvjax.checkpoint import save_model

        out = save_model(dst, model, tok)
    print(out)
    return 0


def _weights(args: argparse.Namespace) -> int:
    from mvjax.convert.weights import fetch_smollm2, smollm2_dir

    path = fetch_smollm2()
    if args.convert:
        print(f"# converted model cached in {smollm2_dir()}", file=sys.stderr)
    print(path)
    return 0


def encode_prompt(tok, text: str) -> list[int]:
    """Prompt ids as the model's own tokenizer would make them: an HF tokenizer applies its
    post-processor (adds BOS exactly when transformers would); the byte tokenizer prepends BOS."""
    if hasattr(tok, "tok"):
        return list(tok.tok.encode(text, add_special_tokens=True).ids)
    ids = tok.encode(text)
    return ([tok.bos_id] if tok.bos_id is not None else []) + ids


def _generate(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mvjax.generate import generate
    from mvjax.load import load_pretrained

    model, tok = load_pretrained(args.model)
    if tok is None:
        raise ValueError(f"model {args.model!r} carries no tokenizer: save one beside it "
                         "(tokenizer.json) to generate from text")
    ids = encode_prompt(tok, args.prompt)
    if not ids:
        raise ValueError("the prompt encodes to no tokens: give a non-empty --prompt")
    gen = generate(model, jnp.asarray([ids], jnp.int32), args.max_new_tokens,
                   key=jax.random.key(args.seed), temperature=args.temperature, top_k=args.top_k)
    new = [int(t) for t in np.asarray(gen.tokens[0, len(ids):])]
    if tok.eos_id is not None and tok.eos_id in new:
        new = new[: new.index(tok.eos_id)]
    print(args.prompt + tok.decode(new))
    return 0
