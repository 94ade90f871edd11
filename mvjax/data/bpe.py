"""Tokenizers for training data: pick one by a short spec, or train a byte-level BPE on a corpus.

Byte-level BPE (every byte is in the base alphabet) never meets an unknown character and decodes
back to the exact text, so a trained tokenizer loses nothing; its one special token is BOS, the
document separator that packing puts at the start of every row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from tokenizers import Tokenizer as _Tok
from tokenizers import decoders, models, pre_tokenizers, trainers

from mvjax.tokenizers import ByteTokenizer, HFTokenizer, Tokenizer, load_tokenizer

BOS_TOKEN = "<|bos|>"
# Tried in order when a tokenizer.json comes without tokenizer_meta.json (e.g. copied from a hub repo).
KNOWN_BOS_TOKENS = (BOS_TOKEN, "<|begin_of_text|>", "<s>", "<bos>", "<|endoftext|>")
MIN_VOCAB = 257  # 256 byte tokens + BOS


def train_bpe(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2,
              show_progress: bool = True) -> HFTokenizer:
    """A byte-level BPE with ``vocab_size`` entries at most (BOS is id 0), trained on ``texts``."""
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size={vocab_size!r} is invalid: byte-level BPE needs at least "
                         f"{MIN_VOCAB} (256 bytes + BOS); use e.g. 512 or more")
    tok = _Tok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=[BOS_TOKEN], show_progress=show_progress,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id(BOS_TOKEN)
    return HFTokenizer(tok, bos_id=bos, eos_id=bos)


def _with_bos(tok: HFTokenizer) -> HFTokenizer:
    """Fill in a missing BOS id from the tokenizer's own special tokens, when it has a known one."""
    if tok.bos_id is None:
        for name in KNOWN_BOS_TOKENS:
            idx = tok.tok.token_to_id(name)
            if idx is not None:
                tok.bos_id = idx
                tok.eos_id = idx if tok.eos_id is None else tok.eos_id
                break
    return tok


def build_tokenizer(spec: str, texts: Sequence[str] | None = None) -> Tokenizer:
    """``"byte"``: the built-in byte tokenizer (vocab 257, BOS 256). ``"bpe:N"``: a byte-level BPE of
    vocab N trained on ``texts`` now. A path: a ``tokenizer.json``, or a directory holding one (or a
    saved byte tokenizer)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"tokenizer={spec!r} is invalid: use 'byte', 'bpe:N', a tokenizer.json or "
                         "a directory holding one")
    if spec == "byte":
        return ByteTokenizer()
    if spec.startswith("bpe:"):
        try:
            vocab = int(spec[4:])
        except ValueError:
            raise ValueError(f"tokenizer={spec!r} is invalid: write bpe:N with an integer vocab "
                             "size, e.g. bpe:512") from None
        if texts is None:
            raise ValueError(f"tokenizer={spec!r} needs texts to train on: pass texts, or train "
                             "once with `mvjax tokenizer train` and pass the directory")
        return train_bpe(texts, vocab, show_progress=False)
    path = Path(spec).expanduser()
    if path.is_dir():
        tok = load_tokenizer(path)
    elif path.is_file():
        tok = HFTokenizer.from_file(path)
    else:
        raise FileNotFoundError(f"tokenizer {spec!r} not found: use 'byte', 'bpe:N', a "
                                "tokenizer.json or a directory holding one")
    return _with_bos(tok) if isinstance(tok, HFTokenizer) else tok


def save_tokenizer(tok: Tokenizer, out: str | Path, *, force: bool = False) -> Path:
    """Save into directory ``out`` (created); refuse to overwrite a saved tokenizer unless ``force``."""
    out = Path(out).expanduser()
    existing = [out / n for n in (HFTokenizer.FILENAME, ByteTokenizer.FILENAME) if (out / n).exists()]
    if existing and not force:
        raise FileExistsError(f"{existing[0]} already exists: choose another --out or pass --force")
    out.mkdir(parents=True, exist_ok=True)
    for stale in existing:
        stale.unlink()
    tok.save(out)
    return out
