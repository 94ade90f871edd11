"""``mvjax version``, ``mvjax info MODEL`` and ``mvjax demo`` (a tiny forward + generation)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mvjax
from mvjax.config import ModelConfig, PositionalConfig
from mvjax.convert.gguf import gguf_model_config, open_gguf
from mvjax.convert.hf import hf_to_model_config
from mvjax.load import detect_kind
from mvjax.positional import SCHEME_REGISTRY
from mvjax.tokenizers import ByteTokenizer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print the mvjax, jax and flax versions")
    p.set_defaults(func=_version)

    p = sub.add_parser("info", help="print the config of a model file or directory")
    p.add_argument("model", help="config .yaml/.json, a model directory holding config.json (mvjax "
                   "or HF), or a .gguf file")
    p.add_argument("--format", choices=("yaml", "json"), default="yaml")
    p.set_defaults(func=_info)

    p = sub.add_parser("demo", help="build a tiny random model per positional scheme, run a forward "
                       "pass and a KV-cache generation, and check they agree")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)


def _version(args: argparse.Namespace) -> int:
    import flax  # local: seconds to import, kept out of `mvjax --help`

    print(f"mvjax {mvjax.__version__}  jax {jax.__version__}  flax {flax.__version__}  "
          f"backend {jax.default_backend()} ({jax.device_count()} devices)")
    return 0


def _info(args: argparse.Namespace) -> int:
    from mvjax.checkpoint import CONFIG_FILE  # local: orbax and flax, kept out of `mvjax --help`

    path = Path(args.model)
    # a model file or directory is read the way mvjax.load resolves it; anything else is a config
    kind = detect_kind(path) if path.is_dir() or path.suffix == ".gguf" else "config"
    if kind == "gguf":
        cfg = gguf_model_config(open_gguf(path))
    elif kind == "hf":
        cfg = hf_to_model_config(json.loads((path / CONFIG_FILE).read_text()))
    else:
        cfg = ModelConfig.load(path / CONFIG_FILE if path.is_dir() else path)
    print(cfg.to_json() + "\n" if args.format == "json" else cfg.to_yaml(), end="")
    print(f"# parameters: {cfg.num_params():,}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mvjax.generate import generate  # local: flax, kept out of `mvjax --help`
    from mvjax.model import init_model  # local: flax, kept out of `mvjax --help`

    tok = ByteTokenizer()
    prompt = jnp.asarray([[tok.bos_id] + tok.encode("Massive values live in")])
    report = {}
    for scheme in SCHEME_REGISTRY:
        cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=64, num_layers=2, num_heads=4,
                          num_kv_heads=2, mlp_hidden=128, positional=PositionalConfig(scheme=scheme))
        model = init_model(cfg, seed=args.seed)
        gen = generate(model, prompt, 16, return_logits=True)
        full = model(gen.tokens[:, :-1]).logits[:, prompt.shape[1] - 1:]
        report[scheme] = {"params": cfg.num_params(),
                          "cache_vs_full_max_abs_diff": float(np.abs(full - gen.logits).max()),
                          "continuation": tok.decode(np.asarray(gen.tokens[0, prompt.shape[1]:]))}
    print(json.dumps(report, indent=2))
    return 0
