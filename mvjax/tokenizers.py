"""One small tokenizer interface for everything mvjax reads or writes: training data, converted
weights, analysis prompts. Two implementations: a built-in byte-level tokenizer (no download, the
default for CPU experiments) and any HF ``tokenizers`` tokenizer (from a ``tokenizer.json``, a local
HF directory, a GGUF's embedded vocabulary, or one trained on a corpus).

A tokenizer saves itself into a model directory (``tokenizer.json`` or ``byte_tokenizer.json``) so a
checkpoint always travels with the tokenizer that made its data; ``load_tokenizer(dir)`` reads back
either kind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, Sequence

from tokenizers import Tokenizer as _Tok


class Tokenizer(Protocol):
    vocab_size: int
    bos_id: int | None
    eos_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def save(self, directory: str | Path) -> None: ...


class ByteTokenizer:
    """UTF-8 bytes are ids 0..255; with ``special_tokens=True`` id 256 is BOS and doubles as the
    document separator for packing (vocab 257). Without it the vocab is exactly 256."""

    FILENAME = "byte_tokenizer.json"

    def __init__(self, special_tokens: bool = True):
        self.special_tokens = special_tokens
        self.vocab_size = 257 if special_tokens else 256
        self.bos_id = 256 if special_tokens else None
        self.eos_id = self.bos_id

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def save(self, directory: str | Path) -> None:
        Path(directory, self.FILENAME).write_text(
            json.dumps({"type": "byte", "special_tokens": self.special_tokens}))


class HFTokenizer:
    """Wraps a ``tokenizers.Tokenizer`` (fast, no torch). ``encode`` adds no special tokens: callers
    decide where BOS goes (packing puts one at the start of each document)."""

    FILENAME = "tokenizer.json"
    META = "tokenizer_meta.json"

    def __init__(self, tok, bos_id: int | None = None, eos_id: int | None = None,
                 pad_id: int | None = None, chat_template: str | None = None):
        self.tok = tok
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.chat_template = chat_template  # a chat model's Jinja template, carried to exports

    @classmethod
    def from_file(cls, path: str | Path, bos_id: int | None = None,
                  eos_id: int | None = None) -> "HFTokenizer":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist: pass a tokenizer.json "
                                    "or a directory holding one")
        meta = path.with_name(cls.META)
        m = json.loads(meta.read_text()) if meta.is_file() else {}
        if bos_id is None and eos_id is None:
            bos_id, eos_id = m.get("bos_id"), m.get("eos_id")
        return cls(_Tok.from_file(str(path)), bos_id, eos_id, m.get("pad_id"), m.get("chat_template"))

    @classmethod
    def from_transformers(cls, hf_tokenizer) -> "HFTokenizer":
        """From a transformers fast tokenizer (e.g. ``AutoTokenizer.from_pretrained(dir, gguf_file=...)``)."""
        return cls(hf_tokenizer.backend_tokenizer, hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, directory: str | Path) -> None:
        self.tok.save(str(Path(directory, self.FILENAME)))
        Path(directory, self.META).write_text(json.dumps(
            {"bos_id": self.bos_id, "eos_id": self.eos_id, "pad_id": self.pad_id,
             "chat_template": self.chat_template}))


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """The tokenizer saved in a model directory (either kind)."""
    directory = Path(directory)
    byte = directory / ByteTokenizer.FILENAME
    if byte.is_file():
        return ByteTokenizer(json.loads(byte.read_text()).get("special_tokens", True))
    hf = directory / HFTokenizer.FILENAME
    if hf.is_file():
        return HFTokenizer.from_file(hf)
    raise FileNotFoundError(f"no tokenizer in {directory}: expected {HFTokenizer.FILENAME} or "
                            f"{ByteTokenizer.FILENAME}; save one with tokenizer.save(dir)")


def check_vocab(tokenizer: Tokenizer, vocab_size: int) -> None:
    """Refuse a tokenizer whose ids would index past the model's embedding table."""
    if tokenizer.vocab_size > vocab_size:
        raise ValueError(f"tokenizer vocab {tokenizer.vocab_size} > model vocab_size {vocab_size}: "
                         "use the tokenizer the model was trained/converted with, or enlarge vocab_size")


def encode_prompt(tok, text: str) -> list[int]:
    """Prompt ids as the model's own tokenizer would make them: an HF tokenizer applies its
    post-processor (adds BOS exactly when transformers would); the byte tokenizer prepends BOS."""
    if hasattr(tok, "tok"):
        return list(tok.tok.encode(text, add_special_tokens=True).ids)
    ids = tok.encode(text)
    return ([tok.bos_id] if tok.bos_id is not None else []) + ids
