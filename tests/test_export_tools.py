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


# The first transformers release whose LlamaConfig reads head_dim, which the export writes.
OLDEST = "4.45.2"
OLD_SCRIPT = r"""
import json, sys, torch, transformers
d, ids = sys.argv[1], json.loads(sys.argv[2])
model = transformers.LlamaForCausalLM.from_pretrained(d, torch_dtype=torch.float32).eval()
tok = transformers.AutoTokenizer.from_pretrained(d)
text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                               tokenize=False)
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0].tolist()
    gen = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
print(json.dumps({"version": transformers.__version__, "logits": logits, "text": text,
                  "keys": sorted(tok(text)), "generated": gen[0, len(ids):].tolist(),
                  "theta": model.config.rope_theta}))
"""


def _old_transformers_python() -> str:
    """A venv with the oldest supported transformers (made once, kept in the mvjax cache)."""
    import subprocess
    import sys

    from mvjax.convert.weights import cache_dir

    env = cache_dir() / "test-envs" / f"transformers-{OLDEST}"
    python = env / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0",
                               f"transformers=={OLDEST}", "numpy"], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot install transformers {OLDEST}: {proc.stderr.strip()[-300:]}")
    return str(python)


@pytest.mark.slow
def test_export_runs_in_the_oldest_transformers(tmp_path):
    """transformers 4.45 reads rope_theta (not rope_parameters) and, without model_input_names,
    feeds token_type_ids: the export must give it the same logits and generation as mvjax."""
    import subprocess

    import jax.numpy as jnp
    import numpy as np

    from mvjax.generate import generate
    from mvjax.load import load_pretrained

    python = _old_transformers_python()
    write_llama_gguf(tmp_path / "chat.gguf", theta=5e5, chat_template=TEMPLATE, pad_token_id=2)
    assert main(["convert", str(tmp_path / "chat.gguf"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    model, tok = load_pretrained(tmp_path / "hf")
    ids = tok.encode("The capital of France is Paris. 1234")
    proc = subprocess.run([python, "-c", OLD_SCRIPT, str(tmp_path / "hf"), json.dumps(ids)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    old = json.loads(proc.stdout.strip().splitlines()[-1])
    assert old["version"] == OLDEST and old["theta"] == 5e5
    mine = np.asarray(model(jnp.asarray([ids])).logits[0])
    np.testing.assert_allclose(np.asarray(old["logits"]), mine, atol=1e-4, rtol=0)
    assert old["generated"] == np.asarray(generate(model, jnp.asarray([ids]), 6).tokens[0, len(ids):]).tolist()
    assert old["keys"] == ["attention_mask", "input_ids"]
    assert old["text"] == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
