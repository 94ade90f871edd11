"""The tokenizer a GGUF file describes, built with the ``tokenizers`` library alone.

A GGUF carries no ``tokenizer.json``: llama.cpp stores the vocabulary, the BPE merges, each token's
type and the special-token ids as ``tokenizer.ggml.*`` metadata. transformers can rebuild a fast
tokenizer from them, but its GGUF loader drags in torch, and mvjax must run (``weights``,
``analyze``, ``generate`` …) in a venv with no torch at all. So we read the metadata with the
``gguf`` reader and assemble the same byte-level BPE ourselves; a test holds the result equal to
transformers' own GGUF tokenizer (on a small written GGUF, and on SmolLM2 in the slow suite).

Supported: ``tokenizer.ggml.model = "gpt2"`` (byte-level BPE: SmolLM, Llama 3, Qwen2 …) with the
pre-tokenizer splits named in ``PRE_TOKENIZER_SPLITS``. Anything else is a one-line error that says
what to do instead; nothing falls back silently to a different split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# llama.cpp token types (``tokenizer.ggml.token_type``).
TOKEN_CONTROL, TOKEN_USER_DEFINED = 3, 4

# Text splits before BPE, by ``tokenizer.ggml.pre``. ``None`` means GPT-2's own split, which
# ``ByteLevel(use_regex=True)`` applies; the others are the published split patterns of each family.
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZER_SPLITS: dict[str | None, str | None] = {
    None: None, "default": None, "gpt2": None, "gpt-2": None, "smollm": None,
    "llama3": _LLAMA3, "llama-v3": _LLAMA3, "llama-bpe": _LLAMA3, "smaug-bpe": _LLAMA3,
    "falcon3": _LLAMA3, "dbrx": _LLAMA3,
    "qwen2": _QWEN2, "deepseek-r1-qwen": _QWEN2,
}


def field_value(reader, key: str, default: Any = None) -> Any:
    """A GGUF metadata value (scalars as Python numbers), or ``default`` when the key is absent."""
    field = reader.fields.get(key)
    if field is None:
        return default
    value = field.contents()
    return value.item() if isinstance(value, np.generic) else value


def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte → printable character map: bytes that print as themselves keep their character;
    the other 68 (controls, space, …) are moved, in order, to code points 256 and up."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    moved = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + i) for i, b in enumerate(moved)})
    return table


def build_gguf_tokenizer(reader, where: str = "the GGUF"):
    """A ``tokenizers.Tokenizer`` from a ``GGUFReader``'s ``tokenizer.ggml.*`` metadata."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    kind = field_value(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"{where} has tokenizer.ggml.model={kind!r}; mvjax builds only byte-level "
                         "BPE ('gpt2') tokenizers from GGUF metadata: convert the model's HF "
                         "directory (with its tokenizer.json) instead")
    pre = field_value(reader, "tokenizer.ggml.pre")
    if pre not in PRE_TOKENIZER_SPLITS:
        raise ValueError(f"{where} has tokenizer.ggml.pre={pre!r}, a text split mvjax does not know "
                         f"(known: {sorted(k for k in PRE_TOKENIZER_SPLITS if k)}): add its pattern "
                         "to mvjax.convert.gguf_tokenizer.PRE_TOKENIZER_SPLITS, or convert the HF "
                         "directory instead")
    tokens = list(field_value(reader, "tokenizer.ggml.tokens") or [])
    if not tokens:
        raise ValueError(f"{where} has no tokenizer.ggml.tokens: the file carries no vocabulary")
    merges = [tuple(m.split(" ", 1)) for m in field_value(reader, "tokenizer.ggml.merges") or []]
    types = list(field_value(reader, "tokenizer.ggml.token_type") or [])

    # Tokens are stored in the byte alphabet; one written in raw text is re-spelled into it.
    table = byte_alphabet()
    alphabet = set(table.values())

    def spelled(token: str) -> str:
        return token if set(token) <= alphabet else "".join(table[b] for b in token.encode("utf-8"))

    vocab = {spelled(t): i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False,
                               continuing_subword_prefix="", end_of_word_suffix=""))
    split = PRE_TOKENIZER_SPLITS[pre]
    if split is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    # Control tokens (<|endoftext|>, <|im_start|> …) match whole and are special; user-defined ones
    # match whole too but are ordinary text. A control token outside the byte alphabet is a
    # mislabelled vocabulary entry and is left alone (adding it would grow the vocabulary).
    by_type = {TOKEN_CONTROL: [], TOKEN_USER_DEFINED: []}
    for token, kind_id in zip(tokens, types):
        if kind_id in by_type and set(token) <= alphabet:
            by_type[kind_id].append(token)
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                            for t in by_type[TOKEN_CONTROL]])
    tok.add_tokens([AddedToken(t, normalized=False, special=False)
                    for t in by_type[TOKEN_USER_DEFINED]])
    return tok


def tokenizer_from_reader(reader, where: str = "the GGUF"):
    """The ``HFTokenizer`` a ``GGUFReader`` describes: BPE, its BOS/EOS/pad ids and (for a chat
    model) its chat template, so an HF export can still ``apply_chat_template``."""
    from mvjax.tokenizers import HFTokenizer

    def token_id(key: str) -> int | None:
        v = field_value(reader, f"tokenizer.ggml.{key}")
        return None if v is None else int(v)

    return HFTokenizer(build_gguf_tokenizer(reader, where), token_id("bos_token_id"),
                       token_id("eos_token_id"), token_id("padding_token_id"),
                       field_value(reader, "tokenizer.chat_template"))
