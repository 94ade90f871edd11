"""``DataConfig`` -> (train stream, fixed eval rows, tokenizer): the one call training makes.

The held-out split is chosen by document with a fixed generator (independent of the training seed)
so every run over the same data evaluates on the same text, whatever seed it trains with.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

import numpy as np

from mvjax.config import invalid, from_mapping, to_plain
from mvjax.data.bpe import build_tokenizer
from mvjax.data.mixture import MixtureConfig, MixtureStream
from mvjax.data.packing import (PACKINGS, TokenStream, num_windows, pack_rows, tokenize_documents,
                                too_short_error)
from mvjax.data.sources import load_texts
from mvjax.tokenizers import Tokenizer

HOLDOUT_SEED = 1234  # fixed: the eval split must not move with the training seed


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What a model trains on and how it is cut into rows.

    source: a named corpus (``tinyshakespeare``), a .txt/.json/.jsonl/.parquet file, a directory of
      them, or a hub dataset name. tokenizer: ``byte``, ``bpe:N`` (trained on the data now), a
      tokenizer.json, or a directory holding one. holdout_fraction: share of documents held out for
      eval (of the text, when the source is one document). packing: ``bos_first`` (every row starts
      with BOS) or ``concat`` (plain stream, BOS between documents). eval_rows: at most this many
      held-out rows, spread evenly over the held-out text. mixture: a ``MixtureConfig`` (or its
      mapping) mixing synthetic contextual and parametric rows into the text rows; eval rows stay
      natural text.
    """

    source: str = "tinyshakespeare"
    tokenizer: str = "byte"
    seq_len: int = 256
    batch_size: int = 8
    seed: int = 0
    holdout_fraction: float = 0.05
    packing: str = "bos_first"
    text_field: str = "text"
    split: str = "train"
    doc_separator: str = "\n\n"
    eval_rows: int = 64
    mixture: Any = None

    def __post_init__(self) -> None:
        if isinstance(self.mixture, dict):
            object.__setattr__(self, "mixture", from_mapping(MixtureConfig, self.mixture, "data.mixture"))
        for name in ("source", "tokenizer", "text_field", "split", "doc_separator"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                invalid(f"data.{name}", getattr(self, name), "must be a non-empty string")
        for name in ("seq_len", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                invalid(f"data.{name}", v, "must be a positive integer")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            invalid("data.seed", self.seed, "must be a non-negative integer")
        if not isinstance(self.eval_rows, int) or self.eval_rows < 0:
            invalid("data.eval_rows", self.eval_rows, "must be a non-negative integer")
        if not isinstance(self.holdout_fraction, (int, float)) or not 0 <= self.holdout_fraction < 1:
            invalid("data.holdout_fraction", self.holdout_fraction, "must lie in [0, 1), e.g. 0.05")
        if self.packing not in PACKINGS:
            invalid("data.packing", self.packing, f"use one of {PACKINGS}")

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DataConfig":
        return from_mapping(cls, data, "data")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def split_documents(texts: Sequence[str], holdout_fraction: float) -> tuple[list[str], list[str]]:
    """(train, held-out) documents. With one document, its last ``holdout_fraction`` of characters
    is held out; with several, whole documents (a fixed random choice, order kept) are."""
    texts = list(texts)
    if holdout_fraction <= 0:
        return texts, []
    if len(texts) == 1:
        cut = int(round(len(texts[0]) * (1 - holdout_fraction)))
        return [texts[0][:cut]], [texts[0][cut:]]
    n_hold = min(max(1, int(round(len(texts) * holdout_fraction))), len(texts) - 1)
    held = np.zeros(len(texts), bool)
    held[np.random.default_rng(HOLDOUT_SEED).choice(len(texts), n_hold, replace=False)] = True
    return ([t for t, h in zip(texts, held) if not h], [t for t, h in zip(texts, held) if h])


def eval_rows(tokens: np.ndarray, seq_len: int, packing: str, bos_id: int | None,
              max_rows: int) -> np.ndarray:
    """Up to ``max_rows`` held-out rows, evenly spaced over the held-out windows (no shuffling)."""
    n = num_windows(len(tokens), seq_len)
    if n < 1:
        raise too_short_error("held-out", len(tokens), seq_len)
    idx = np.unique(np.linspace(0, n - 1, min(n, max_rows)).round().astype(np.int64))
    return pack_rows(tokens, idx, seq_len, packing, bos_id)


def build_data(cfg: DataConfig, *, progress: bool = True
               ) -> tuple[TokenStream, np.ndarray, Tokenizer]:
    """The training stream, the eval rows (int32 ``(n, seq_len + 1)``; ``n = 0`` when
    ``holdout_fraction == 0``) and the tokenizer, all from ``cfg``."""
    texts = load_texts(cfg.source, text_field=cfg.text_field, split=cfg.split,
                       doc_separator=cfg.doc_separator)
    train_texts, held_texts = split_documents(texts, cfg.holdout_fraction)
    tok = build_tokenizer(cfg.tokenizer, train_texts)
    train_tokens = tokenize_documents(tok, train_texts, progress=progress)
    # a mixture draws its text rows one at a time, so none are skipped
    stream = TokenStream(train_tokens, seq_len=cfg.seq_len,
                         batch_size=cfg.batch_size if cfg.mixture is None else 1,
                         seed=cfg.seed, packing=cfg.packing, bos_id=tok.bos_id)
    if cfg.mixture is not None:
        stream = MixtureStream(stream, tok, cfg.mixture, cfg.batch_size)
    if held_texts and cfg.eval_rows > 0:
        held_tokens = tokenize_documents(tok, held_texts, progress=progress)
        evals = eval_rows(held_tokens, cfg.seq_len, cfg.packing, tok.bos_id, cfg.eval_rows)
    else:
        evals = np.zeros((0, cfg.seq_len + 1), np.int32)
    return stream, evals, tok
