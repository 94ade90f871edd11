"""``mvjax generate``: continue a prompt with any model ``mvjax.load`` resolves."""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from mvjax.analysis.experiments.common import add_mesh_arg
from mvjax.load import load_pretrained
from mvjax.mesh import fetch, parse_mesh, place_model
from mvjax.tokenizers import encode_prompt


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="continue a prompt with a pretrained or trained model")
    p.add_argument("--model", required=True, help="smollm2, mvjax model dir, HF dir or .gguf file")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    add_mesh_arg(p)
    p.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> int:
    from mvjax.generate import check_sampling, generate  # local: flax, kept out of `mvjax --help`

    check_sampling(args.temperature, args.top_k)  # before loading the model
    parse_mesh(args.mesh)
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens {args.max_new_tokens} is invalid: ask for at least 1")
    model, tok = load_pretrained(args.model)
    if tok is None:
        raise ValueError(f"model {args.model!r} carries no tokenizer: save one beside it "
                         "(tokenizer.json) to generate from text")
    place_model(model, args.mesh)
    ids = encode_prompt(tok, args.prompt)
    if not ids:
        raise ValueError("the prompt encodes to no tokens: give a non-empty --prompt")
    gen = generate(model, jnp.asarray([ids], jnp.int32), args.max_new_tokens,
                   key=jax.random.key(args.seed), temperature=args.temperature, top_k=args.top_k)
    new = [int(t) for t in np.asarray(fetch(gen.tokens))[0, len(ids):]]
    if tok.eos_id is not None and tok.eos_id in new:
        new = new[: new.index(tok.eos_id)]
    print(args.prompt + tok.decode(new))
    return 0
