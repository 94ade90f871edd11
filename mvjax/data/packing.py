"""Documents -> one flat token array -> fixed-length rows, shuffled and resumable.

The corpus is tokenized once into a flat int32 array with BOS before every document. A row is a
window of ``seq_len + 1`` tokens (inputs ``[:-1]``, targets ``[1:]``); window ``i`` starts at token
``i * seq_len`` so every token after the first is a target exactly once per epoch. Under
``bos_first`` position 0 of every row is forced to BOS: each row gets a real attention sink at
position 0, which is what massive-value analyses measure against.

Shuffling permutes whole windows with a generator seeded by ``(seed, epoch)``, so the iterator state
is three small numbers and a restore continues exactly, across epoch boundaries too.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from mvjax.tokenizers import ByteTokenizer, HFTokenizer, Tokenizer

PACKINGS = ("bos_first", "concat")
_BATCH = 1024  # documents per HF batch-encode call


def tokenize_documents(tokenizer: Tokenizer, texts: Sequence[str], *,
                       progress: bool = True) -> np.ndarray:
    """One flat int32 array: ``[BOS, doc0..., BOS, doc1..., ...]``."""
    bos = tokenizer.bos_id
    if bos is None:
        raise ValueError("tokenizer has no BOS id, and packing puts one before every document: use "
                         "tokenizer='byte', train one with `mvjax tokenizer train`, or add "
                         "bos_id to tokenizer_meta.json")
    bos_arr = np.asarray([bos], np.int32)
    parts: list[np.ndarray] = []
    if isinstance(tokenizer, ByteTokenizer):
        for t in texts:
            parts += [bos_arr, np.frombuffer(t.encode("utf-8"), np.uint8).astype(np.int32)]
    else:
        batched = isinstance(tokenizer, HFTokenizer)
        starts = range(0, len(texts), _BATCH)
        for s in tqdm(starts, desc="tokenizing", unit="batch", disable=not progress or len(starts) < 4,
                      leave=False):
            chunk = texts[s:s + _BATCH]
            if batched:
                ids = [e.ids for e in tokenizer.tok.encode_batch(list(chunk), add_special_tokens=False)]
            else:
                ids = [tokenizer.encode(t) for t in chunk]
            for i in ids:
                parts += [bos_arr, np.asarray(i, np.int32)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int32)


def num_windows(n_tokens: int, seq_len: int) -> int:
    """How many rows of ``seq_len + 1`` tokens (stride ``seq_len``) fit in ``n_tokens``."""
    return max(0, (n_tokens - 1) // seq_len)


def pack_rows(tokens: np.ndarray, indices: np.ndarray, seq_len: int, packing: str,
              bos_id: int | None) -> np.ndarray:
    """Rows ``indices`` of the packed corpus, int32 of shape ``(len(indices), seq_len + 1)``."""
    if packing not in PACKINGS:
        raise ValueError(f"packing={packing!r} is invalid: use one of {PACKINGS}")
    idx = np.asarray(indices, np.int64)
    rows = tokens[idx[:, None] * seq_len + np.arange(seq_len + 1)].astype(np.int32)
    if packing == "bos_first":
        rows[:, 0] = bos_id
    return rows


def bos_windows(ids, seq_len: int, bos_id: int | None, max_rows: int, *,
                from_end: bool = False) -> np.ndarray:
    """Up to ``max_rows`` consecutive windows of ``seq_len`` tokens read off a token stream: BOS,
    then the next ``seq_len − 1`` tokens (all ``seq_len`` from the stream when there is no BOS).

    This is how analysis and evaluation read text — every token once, each window with a real
    sink in front. Training's ``bos_first`` rows (``pack_rows``) overwrite their first token
    instead, so that a row's stride stays ``seq_len``. ``from_end`` takes the stream's last
    windows (held-out text at the end of a corpus). Returns int32 rows (possibly none)."""
    body = seq_len - (bos_id is not None)
    n = min(max_rows, len(ids) // body) if body > 0 else 0
    ids = np.asarray(ids[len(ids) - n * body:] if from_end else ids[: n * body], np.int32)
    rows = ids.reshape(n, body)
    if bos_id is not None:
        rows = np.concatenate([np.full((n, 1), bos_id, np.int32), rows], axis=1)
    return rows


def fingerprint(tokens: np.ndarray, **settings) -> str:
    """Short hash of the token array and the settings that give positions their meaning."""
    h = hashlib.sha256(np.ascontiguousarray(tokens, np.int32).tobytes())
    h.update(repr(sorted(settings.items())).encode())
    return h.hexdigest()[:16]


def too_short_error(split: str, n_tokens: int, seq_len: int) -> ValueError:
    fix = ("add data, or lower holdout_fraction" if split == "train" else
           "raise holdout_fraction, or set it to 0 to skip evaluation")
    return ValueError(f"seq_len={seq_len} is larger than the {split} split ({n_tokens} tokens, "
                      f"need at least {seq_len + 1}): lower seq_len, or {fix}")


class TokenStream:
    """Deterministic, seedable, resumable iterator of packed batches over one token array.

    ``next_batch()`` returns int32 ``(batch_size, seq_len + 1)``. ``state()`` is
    ``{"epoch", "position", "fingerprint"}`` (JSON-serializable); ``restore(state)`` continues
    exactly and refuses a state whose fingerprint (data, tokenizer, seq_len, packing, seed) differs.
    Batches may straddle an epoch boundary; ``epoch`` counts completed passes.
    """

    def __init__(self, tokens: np.ndarray, *, seq_len: int, batch_size: int, seed: int = 0,
                 packing: str = "bos_first", bos_id: int | None = None):
        if packing not in PACKINGS:
            raise ValueError(f"packing={packing!r} is invalid: use one of {PACKINGS}")
        if packing == "bos_first" and bos_id is None:
            raise ValueError("packing='bos_first' needs a bos_id: pass the tokenizer's BOS id")
        for name, v in (("seq_len", seq_len), ("batch_size", batch_size)):
            if not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"{name}={v!r} is invalid: must be a positive integer")
        self.tokens = np.ascontiguousarray(tokens, np.int32)
        self.seq_len, self.batch_size, self.seed = int(seq_len), int(batch_size), int(seed)
        self.packing, self.bos_id = packing, bos_id
        self.n_windows = num_windows(len(self.tokens), self.seq_len)
        if self.n_windows < 1:
            raise too_short_error("train", len(self.tokens), self.seq_len)
        self.fingerprint = fingerprint(self.tokens, seq_len=self.seq_len, packing=packing,
                                       seed=self.seed, bos_id=bos_id)
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)

    @property
    def tokens_per_epoch(self) -> int:
        return self.n_windows * self.seq_len

    def next_batch(self) -> np.ndarray:
        picked: list[np.ndarray] = []
        need = self.batch_size
        while need:
            take = self._order[self.position:self.position + need]
            picked.append(take)
            need -= len(take)
            self.position += len(take)
            if self.position == self.n_windows:
                self.epoch += 1
                self.position = 0
                self._order = self._permutation(self.epoch)
        return pack_rows(self.tokens, np.concatenate(picked), self.seq_len, self.packing, self.bos_id)

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        return self.next_batch()

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "fingerprint": self.fingerprint}

    def restore(self, state: dict) -> None:
        if not isinstance(state, dict) or not {"epoch", "position", "fingerprint"} <= set(state):
            raise ValueError(f"data state {state!r} is invalid: expected a mapping with epoch, "
                             "position and fingerprint, as written by TokenStream.state()")
        if state["fingerprint"] != self.fingerprint:
            raise ValueError(f"data state fingerprint {state['fingerprint']} does not match this "
                             f"stream's {self.fingerprint}: it was saved with a different dataset, "
                             "tokenizer, seq_len, packing or seed; resume with the same data config")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < self.n_windows:
            raise ValueError(f"data state epoch={epoch}, position={position} is out of range for "
                             f"{self.n_windows} windows per epoch")
        self.epoch, self.position = epoch, position
        self._order = self._permutation(epoch)
