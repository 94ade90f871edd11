"""Training data: load documents (local files or hub datasets), tokenize, pack into fixed-length
rows with BOS sinks, and iterate them deterministically with a tiny resumable state.

    stream, eval_tokens, tok = build_data(DataConfig(source="tinyshakespeare", seq_len=256))
    batch = stream.next_batch()          # int32 (batch_size, seq_len + 1)
    inputs, targets = batch[:, :-1], batch[:, 1:]
"""

from __future__ import annotations

from mvjax.data.bpe import build_tokenizer, train_bpe
from mvjax.data.mixture import MixtureConfig, MixtureStream
from mvjax.data.packing import PACKINGS, TokenStream, pack_rows, tokenize_documents
from mvjax.data.pipeline import DataConfig, build_data, eval_rows, split_documents
from mvjax.data.sources import load_texts, resolve_source

__all__ = ["DataConfig", "MixtureConfig", "MixtureStream", "PACKINGS", "TokenStream", "build_data",
           "build_tokenizer", "eval_rows", "load_texts", "pack_rows", "resolve_source",
           "split_documents", "tokenize_documents", "train_bpe"]
