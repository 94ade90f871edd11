"""An HF export that other tools read: a chat model converted from GGUF keeps its chat template, pad
and special tokens through mvjax into the HF directory, which transformers loads and chats with."""

from __future__ import annotations

import json

import pytest

from conftest import SPECIAL_TOKENS, write_llama_gguf
from mvjax.cli import main

TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_chat_template_and_special_tokens_survive_export(tmp_path):
    transformers = pytest.importorskip("transformers")
    tokens = write_llama_gguf(tmp_path / "chat.gguf", chat_template=TEMPLATE,
                              pad_token_id=2)  # <|im_end|>
    assert main(["convert", str(tmp_path / "chat.gguf"), str(tmp_path / "m")]) == 0
    assert main(["convert", str(tmp_path / "m"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert config["chat_template"] == TEMPLATE and config["pad_token"] == tokens[2] == SPECIAL_TOKENS[2]
    assert config["model_input_names"] == ["input_ids", "attention_mask"]

    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                   tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text)["input_ids"]
    assert ids.count(tokens.index("<|im_start|>")) == 2  # special tokens stay whole
    assert tok.pad_token == "<|im_end|>" and "token_type_ids" not in tok(text)

    # and back: HF → mvjax keeps them too
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "again")]) == 0
    meta = json.loads((tmp_path / "again" / "tokenizer_meta.json").read_text())
    assert meta["chat_template"] == TEMPLATE and meta["pad_id"] == 2
