"""``mvjax tokenizer train`` (byte-level BPE on a corpus) and ``mvjax data stats`` (what a data
config yields: documents, tokens, rows, a decoded sample row)."""

from __future__ import annotations

import argparse
import json

from mvjax.data.bpe import save_tokenizer, train_bpe
from mvjax.data.pipeline import DataConfig, build_data
from mvjax.data.sources import load_texts


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="tinyshakespeare",
                   help="named corpus, .txt/.json/.jsonl/.parquet file, directory, or hub dataset name")
    p.add_argument("--text-field", default="text", help="text column of json/parquet/hub data")
    p.add_argument("--split", default="train", help="hub dataset split")
    p.add_argument("--doc-separator", default="\n\n",
                   help="splits a .txt file into documents (default: blank lines)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="train a tokenizer on a corpus")
    tsub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    t = tsub.add_parser("train", help="train a byte-level BPE (BOS special token) and save "
                        "tokenizer.json into --out")
    _add_source_args(t)
    t.add_argument("--vocab-size", type=int, required=True, help="e.g. 512, 4096, 32000")
    t.add_argument("--min-frequency", type=int, default=2, help="rarest pair that may be merged")
    t.add_argument("--out", required=True, help="directory to save tokenizer.json into")
    t.add_argument("--force", action="store_true", help="overwrite a tokenizer already in --out")
    t.set_defaults(func=_train)

    p = sub.add_parser("data", help="inspect training data")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    s = dsub.add_parser("stats", help="documents, tokens, train/eval rows and a sample row of a "
                        "data config")
    _add_source_args(s)
    s.add_argument("--tokenizer", default="byte", help="'byte', 'bpe:N', tokenizer.json or its dir")
    s.add_argument("--seq-len", type=int, default=256)
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--holdout-fraction", type=float, default=0.05)
    s.add_argument("--packing", default="bos_first", choices=("bos_first", "concat"))
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_stats)


def _train(args: argparse.Namespace) -> int:
    texts = load_texts(args.data, text_field=args.text_field, split=args.split,
                       doc_separator=args.doc_separator)
    tok = train_bpe(texts, args.vocab_size, min_frequency=args.min_frequency)
    out = save_tokenizer(tok, args.out, force=args.force)
    print(json.dumps({"out": str(out), "vocab_size": tok.vocab_size, "bos_id": tok.bos_id,
                      "documents": len(texts)}, indent=2))
    return 0


def _stats(args: argparse.Namespace) -> int:
    cfg = DataConfig(source=args.data, tokenizer=args.tokenizer, seq_len=args.seq_len,
                     batch_size=args.batch_size, seed=args.seed,
                     holdout_fraction=args.holdout_fraction, packing=args.packing,
                     text_field=args.text_field, split=args.split, doc_separator=args.doc_separator)
    stream, evals, tok = build_data(cfg)
    print(json.dumps({"config": cfg.to_dict(), "vocab_size": tok.vocab_size, "bos_id": tok.bos_id,
                      "train_tokens": int(len(stream.tokens)), "train_rows_per_epoch": stream.n_windows,
                      "eval_rows": int(evals.shape[0]), "fingerprint": stream.fingerprint,
                      "sample_row": tok.decode(stream.next_batch()[0])}, indent=2))
    return 0
