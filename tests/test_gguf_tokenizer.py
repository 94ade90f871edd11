"""The GGUF tokenizer built from metadata with ``tokenizers`` alone equals transformers' own GGUF
tokenizer (ids, decoding, special and user-defined tokens), and unsupported vocabularies are refused
in one line instead of being split some other way."""

from __future__ import annotations

import pytest

from conftest import SPECIAL_TOKENS, TOKENIZER_TEXT, USER_TOKEN, write_tokenizer_gguf
from mvjax.convert.gguf import gguf_tokenizer, open_gguf
from mvjax.convert.gguf_tokenizer import build_gguf_tokenizer, byte_alphabet

TEXTS = [TOKENIZER_TEXT[:200], "Paris 1234567 2025\n\n   x\ty", "<|im_start|>user\nhi<|im_end|>",
         f"a {USER_TOKEN} b <|endoftext|>", "naïve café 東京 🙂", "", "it's WE'LL I'M"]


def test_byte_alphabet_is_a_bijection_onto_printables():
    table = byte_alphabet()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert table[ord("A")] == "A" and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"
    assert all(ch.isprintable() and not ch.isspace() for ch in table.values())


@pytest.mark.parametrize("pre", ["smollm", "llama-bpe", "qwen2"])
def test_equals_transformers_gguf_tokenizer(tmp_path, pre):
    pytest.importorskip("torch")  # transformers' GGUF loading path is the reference, test-only
    from transformers import PreTrainedTokenizerFast

    tokens = write_tokenizer_gguf(tmp_path / "t.gguf", pre=pre)
    mine = gguf_tokenizer(tmp_path / "t.gguf")
    ref = PreTrainedTokenizerFast.from_pretrained(str(tmp_path), gguf_file="t.gguf")
    assert mine.vocab_size == len(ref) == len(tokens)
    assert (mine.bos_id, mine.eos_id) == (ref.bos_token_id, ref.eos_token_id)
    for text in TEXTS:
        ids = mine.encode(text)
        assert ids == ref.encode(text, add_special_tokens=False), text
        assert mine.decode(ids) == ref.decode(ids) == text
    special = [mine.tok.token_to_id(t) for t in (*SPECIAL_TOKENS, USER_TOKEN)]
    assert all(mine.encode(t) == [i] for t, i in zip((*SPECIAL_TOKENS, USER_TOKEN), special))
    assert mine.tok.get_added_tokens_decoder() == ref.backend_tokenizer.get_added_tokens_decoder()


def test_splits_differ_by_pre_tokenizer(tmp_path):
    """The split is really taken from ``tokenizer.ggml.pre``: Llama 3's groups digits by three,
    Qwen2's keeps each digit alone."""
    texts = {}
    for pre in ("llama-bpe", "qwen2"):
        write_tokenizer_gguf(tmp_path / f"{pre}.gguf", pre=pre)
        tok = gguf_tokenizer(tmp_path / f"{pre}.gguf")
        texts[pre] = [tok.decode([i]) for i in tok.encode("1234567")]
    assert all(len(piece) == 1 for piece in texts["qwen2"])
    assert any(len(piece) > 1 for piece in texts["llama-bpe"])


@pytest.mark.parametrize("kwargs,match", [
    (dict(model="llama"), "tokenizer.ggml.model='llama'.*HF directory"),
    (dict(pre="made-up"), "tokenizer.ggml.pre='made-up'.*PRE_TOKENIZER_SPLITS"),
])
def test_unsupported_vocabularies_are_refused(tmp_path, kwargs, match):
    write_tokenizer_gguf(tmp_path / "t.gguf", **kwargs)
    with pytest.raises(ValueError, match=match):
        build_gguf_tokenizer(open_gguf(tmp_path / "t.gguf"))
