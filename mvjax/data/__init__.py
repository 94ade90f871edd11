"""Training data: load documents (local files or hub datasets), tokenize, pack into fixed-length
rows with BOS sinks, and iterate them deterministically with a tiny resumable state.

    stream, eval_tokens, tok = build_data(DataConfig(source="tinyshakespeare", seq_len=256))
    batch = stream.next_batch()          # int32 (batch_size, seq_len + 1)
    inputs, targets = batch[:, :-1], batch[:, 1:]

Names are imported on first use so that ``mvjax --help`` (which imports ``mvjax.data.cli``) does
not pay for numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DataConfig": "pipeline", "build_data": "pipeline", "eval_rows": "pipeline",
    "split_documents": "pipeline",
    "PACKINGS": "packing", "TokenStream": "packing", "pack_rows": "packing",
    "tokenize_documents": "packing",
    "build_tokenizer": "bpe", "train_bpe": "bpe",
    "load_texts": "sources", "resolve_source": "sources",
    "MixtureConfig": "mixture", "MixtureStream": "mixture",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from mvjax.data.bpe import build_tokenizer, train_bpe
    from mvjax.data.mixture import MixtureConfig, MixtureStream
    from mvjax.data.packing import PACKINGS, TokenStream, pack_rows, tokenize_documents
    from mvjax.data.pipeline import DataConfig, build_data, eval_rows, split_documents
    from mvjax.data.sources import load_texts, resolve_source


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mvjax.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mvjax.data.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
