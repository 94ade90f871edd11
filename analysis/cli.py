"""``mvjax analyze``: massive values in Q/K/V over a dataset → JSON, figures, report.

Sequences are fixed windows of the tokenized text (documents joined by a blank line), each starting
with BOS when the tokenizer has one: attention sinks and massive values depend on the first token,
so every window must look like the start of a context.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mvjax.sites import STAT_SITES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="find massive values in Q/K/V (streaming statistics over a "
                       "dataset) and write massive_values.json, figures and report.md")
    p.add_argument("--model", default="smollm2",
                   help="model name known to mvjax.load (e.g. smollm2), .gguf, HF or mvjax model dir")
    p.add_argument("--data", default=None,
                   help="text file / .jsonl / .parquet / hub dataset (default: embedded sample)")
    p.add_argument("--text-field", default="text")
    p.add_argument("--tokens", type=int, default=16384, help="tokens to read at most")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lambda", dest="lam", type=float, default=5.0,
                   help="massive iff M > lambda * mean (default 5)")
    p.add_argument("--mean-over", choices=("head", "global"), default="head")
    p.add_argument("--top-k", type=int, default=1, help="top dims per head to report (1 for Llama)")
    p.add_argument("--sites", default=",".join(STAT_SITES),
                   help=f"comma-separated sites (default {','.join(STAT_SITES)})")
    p.add_argument("--bar-layer", type=int, default=None,
                   help="layer for the 3-D bar figure (default: the layer whose pre-RoPE K has "
                   "the highest median max/mean ratio)")
    p.add_argument("--no-figures", action="store_true", help="write only the JSON")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def load_data(source: str | None, text_field: str) -> tuple[list[str], str]:
    """(texts, description); None → the embedded sample."""
    if source is None:
        from analysis.sample import DESCRIPTION, sample_texts

        return sample_texts(), DESCRIPTION
    from mvjax.data import load_texts

    texts = load_texts(source, text_field=text_field)
    return list(texts), str(source)


def make_sequences(tokenizer, texts: list[str], seq_len: int, max_tokens: int):
    """N×seq_len token windows, BOS first when the tokenizer has one; at most max_tokens tokens
    (but at least one window)."""
    from mvjax.data.packing import bos_windows

    sep = tokenizer.encode("\n\n")
    stream: list[int] = []
    for i, t in enumerate(texts):
        if i:
            stream += sep
        stream += tokenizer.encode(t)
    if not stream:
        raise ValueError("the dataset is empty: pass a file or dataset with text in it")
    rows = bos_windows(stream, seq_len, tokenizer.bos_id, max(1, max_tokens // seq_len))
    if not len(rows):
        raise ValueError(f"--seq-len {seq_len} is longer than the data ({len(stream)} tokens): "
                         "lower --seq-len or pass more text")
    return rows


def batches(rows, batch_size: int):
    """(tokens, mask) batches of fixed shape; the last one padded with masked rows."""
    import numpy as np

    for i in range(0, len(rows), batch_size):
        chunk = rows[i: i + batch_size]
        mask = np.ones(chunk.shape, bool)
        if len(chunk) < batch_size:
            pad = batch_size - len(chunk)
            chunk = np.concatenate([chunk, np.zeros((pad, chunk.shape[1]), chunk.dtype)])
            mask = np.concatenate([mask, np.zeros((pad, mask.shape[1]), bool)])
        yield chunk, mask


def _check_args(args: argparse.Namespace) -> tuple[str, ...]:
    sites = tuple(s.strip() for s in args.sites.split(",") if s.strip())
    unknown = [s for s in sites if s not in STAT_SITES]
    if unknown or not sites:
        raise ValueError(f"unknown site(s) {unknown or '(none)'}: choose from {list(STAT_SITES)}")
    for name in ("tokens", "seq_len", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)} is invalid: "
                             "use a positive integer")
    if args.seq_len < 2:
        raise ValueError(f"--seq-len {args.seq_len} is too short: use at least 2")
    return sites


RESULTS_FILE = "massive_values.json"


def run(args: argparse.Namespace) -> int:
    from mvjax.atomic import atomic_directory, check_results_dir

    sites = _check_args(args)
    out = check_results_dir(args.out, RESULTS_FILE)  # before any work
    from analysis.massive import MassiveDefinition, analyze

    definition = MassiveDefinition(lam=args.lam, mean_over=args.mean_over, top_k=args.top_k)
    from mvjax.load import load_layerwise

    weights, tok = load_layerwise(args.model)  # one layer's weights in memory at a time
    if tok is None:
        raise ValueError(f"model {args.model} has no tokenizer: save one into the model directory")
    n_layers = weights.cfg.num_layers
    if args.bar_layer is not None and not 0 <= args.bar_layer < n_layers:
        raise ValueError(f"--bar-layer {args.bar_layer} is out of range: the model has {n_layers} "
                         "layers")
    from mvjax.tokenizers import check_vocab

    check_vocab(tok, weights.cfg.vocab_size)
    texts, description = load_data(args.data, args.text_field)
    if not any(t.strip() for t in texts):
        raise ValueError("the dataset is empty: pass a file or dataset with text in it")
    rows = make_sequences(tok, texts, args.seq_len, args.tokens)
    if args.seq_len > weights.cfg.max_seq_len:
        raise ValueError(f"--seq-len {args.seq_len} exceeds the model's max_seq_len "
                         f"{weights.cfg.max_seq_len}: lower it")

    from mvjax.probe import collect_stats

    n_batches = -(-len(rows) // args.batch_size)
    records = collect_stats(weights, batches(rows, args.batch_size), sites, total=n_batches)
    result = analyze(records, weights.cfg, definition)
    pos = weights.cfg.layer_positional(0)
    from mvjax.provenance import provenance

    result = {
        "definition": result.pop("definition"),
        "provenance": provenance(getattr(args, "command_line", None), args.model),
        "model": {"name": str(args.model), "config": weights.cfg.to_dict(),
                  "layout": pos.layout if pos.rotary_dims(weights.cfg.head_dim) else pos.scheme},
        "data": {"source": args.data or "embedded", "description": description,
                 "n_sequences": int(len(rows)), "seq_len": int(args.seq_len),
                 "n_tokens": int(rows.size), "bos": tok.bos_id is not None,
                 "bos_id": tok.bos_id, "doc_separator": "\\n\\n"},
        **result,
    }
    with atomic_directory(out) as tmp:  # the whole set replaces any earlier one, or nothing does
        (tmp / RESULTS_FILE).write_text(json.dumps(result, indent=1))
        if not args.no_figures:
            from analysis.plots import all_figures
            from analysis.report import write_report

            figures = all_figures(result, tmp, _bar_layer(result, args.bar_layer),
                                  Path(args.model).name)
            write_report(result, figures, tmp)
    print(json.dumps({"out": str(out), **_headline(result)}, indent=1))
    return 0


def _bar_layer(result: dict[str, Any], requested: int | None) -> int:
    if requested is not None:
        return requested
    site = next((s for s in ("k", "q", "k_rot", "q_rot", "v") if s in result["sites"]))
    layers = result["sites"][site]
    return max(layers, key=lambda m: m["max_mean_ratio_median"])["layer"]


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    return {s: {k: v[k] for k in ("n_massive", "massive_low_freq_share", "first_massive_layer")}
            for s, v in result["summary"].items() if isinstance(v, dict)} | {
        "first_qk_concentration_layer": result["summary"]["first_qk_concentration_layer"]}
