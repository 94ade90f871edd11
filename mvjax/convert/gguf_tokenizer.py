"""The tokenizer a GGUF file describes, built with the ``tokenizers`` library alone.

A GGUF carries no ``tokenizer.json``: llama.cpp stores the vocabulary, the BPE merges, each token's
type and the special-token ids as ``tokenizer.ggml.*`` metadata. transformers can rebuild a fast
tokenizer from them, but its GGUF loader drags in torch, and mvjax must run (``weights``,
``analyze``, ``generate`` …) in a venv with no torch at all. So we read the metadata with the
``gguf`` reader and assemble the same byte-level BPE ourselves; a test holds the result equal to
transformers' own GGUF tokenizer (on a small written GGUF, and on SmolLM2 in the slow suite).

Supported: ``tokenizer.ggml.model = "gpt2"`` (byte-level BPE: SmolLM, Llama 3, Qwen2 …) with the
pre-tokenizer splits named in ``PRE_TOKENIZER_SPLITS``, and ``"llama"`` (SentencePiece-style BPE
with byte fallback) in Gemma files. Anything else is a one-line error that says what to do instead;
nothing falls back silently to a different split.

Gemma's SentencePiece vocabulary. The file lists tokens (spaces spelled ``▁``, except tokens made
only of whitespace, which keep real spaces) but no merges, and its scores do not rank them. The
rule transformers' GGUF loader uses, which we follow so that both give the same ids: a
whitespace-only token containing a space is re-spelled as that many ``▁``; every split of a token
into two vocabulary entries is a merge, ranked by the token's position in the file (earlier first),
then by the longer left piece.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from mvjax.tokenizers import HFTokenizer

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
    kind = field_value(reader, "tokenizer.ggml.model")
    arch = field_value(reader, "general.architecture")
    if kind == "llama" and str(arch).startswith("gemma"):
        return _gemma_sentencepiece(reader, where)
    if kind != "gpt2":
        raise ValueError(f"{where} has tokenizer.ggml.model={kind!r} (architecture {arch!r}); mvjax "
                         "builds byte-level BPE ('gpt2') and Gemma SentencePiece tokenizers from GGUF "
                         "metadata: convert the model's HF directory (with its tokenizer.json) instead")
    return _byte_level_bpe(reader, where)


def _vocabulary(reader, where: str) -> tuple[list[str], list[int]]:
    """The file's tokens in id order and their llama.cpp types."""
    tokens = list(field_value(reader, "tokenizer.ggml.tokens") or [])
    if not tokens:
        raise ValueError(f"{where} has no tokenizer.ggml.tokens: the file carries no vocabulary")
    return tokens, [int(t) for t in field_value(reader, "tokenizer.ggml.token_type") or []]


def _byte_level_bpe(reader, where: str):
    pre = field_value(reader, "tokenizer.ggml.pre")
    if pre not in PRE_TOKENIZER_SPLITS:
        raise ValueError(f"{where} has tokenizer.ggml.pre={pre!r}, a text split mvjax does not know "
                         f"(known: {sorted(k for k in PRE_TOKENIZER_SPLITS if k)}): add its pattern "
                         "to mvjax.convert.gguf_tokenizer.PRE_TOKENIZER_SPLITS, or convert the HF "
                         "directory instead")
    tokens, types = _vocabulary(reader, where)
    merges = [tuple(m.split(" ", 1)) for m in field_value(reader, "tokenizer.ggml.merges") or []]

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


def sentencepiece_merges(tokens: list[str]) -> list[tuple[str, str]]:
    """Merges implied by a vocabulary in rank order (module docstring): for each token, earliest
    id first, each split into two vocabulary entries, longer left piece first."""
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for token, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
        merges += [(token[:cut], token[cut:]) for cut in range(len(token) - 1, 0, -1)
                   if token[:cut] in vocab and token[cut:] in vocab]
    return merges


def _gemma_sentencepiece(reader, where: str):
    """Gemma's tokenizer: BPE over ``▁``-spelled text with byte fallback, no pre-split, BOS first
    when the file says ``add_bos_token``; control tokens special, user-defined ones matched whole."""
    tokens, types = _vocabulary(reader, where)
    spelled = ["\u2581" * len(t) if " " in t and not t.strip() else t for t in tokens]
    vocab = {t: i for i, t in enumerate(spelled)}
    unk = field_value(reader, "tokenizer.ggml.unknown_token_id")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=sentencepiece_merges(spelled), fuse_unk=True,
                               byte_fallback=True, unk_token=None if unk is None else spelled[int(unk)]))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                            for t, k in zip(tokens, types) if k == TOKEN_CONTROL])
    tok.add_tokens([AddedToken(t, normalized=False, special=False)
                    for t, k in zip(tokens, types) if k == TOKEN_USER_DEFINED and t in vocab])
    bos = field_value(reader, "tokenizer.ggml.bos_token_id")
    if bos is not None and field_value(reader, "tokenizer.ggml.add_bos_token", True):
        name = spelled[int(bos)]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{name}:0 $A:0", pair=f"{name}:0 $A:0 {name}:1 $B:1",
            special_tokens=[(name, int(bos))])
    return tok


def tokenizer_from_reader(reader, where: str = "the GGUF"):
    """The ``HFTokenizer`` a ``GGUFReader`` describes: BPE, its BOS/EOS/pad ids and (for a chat
    model) its chat template, so an HF export can still ``apply_chat_template``."""
    def token_id(key: str) -> int | None:
        v = field_value(reader, f"tokenizer.ggml.{key}")
        return None if v is None else int(v)

    return HFTokenizer(build_gguf_tokenizer(reader, where), token_id("bos_token_id"),
                       token_id("eos_token_id"), token_id("padding_token_id"),
                       field_value(reader, "tokenizer.chat_template"))
