"""Real weights: SmolLM2-135M-Instruct (Q4_1 GGUF) through mvjax vs transformers' own GGUF loader
(which dequantizes to float32, so both run the same numbers). Slow: ~100 MB file, 135M params."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hf_reference import hf_logits, mv_logits  # noqa: E402

import jax.numpy as jnp  # noqa: E402
from conftest import gguf_or_skip, gguf_with_reference  # noqa: E402

from mvjax.tokenizers import encode_prompt  # noqa: E402
from mvjax.generate import generate  # noqa: E402

LOGIT_TOL = 1e-3
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def gguf_path():
    return gguf_or_skip("smollm2")


@pytest.fixture(scope="module")
def both(gguf_path):
    return gguf_with_reference(gguf_path)


def _prompt(hf_tok) -> str:
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    return hf_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def test_config_and_tokenizer_match(both):
    model, tok, hf, hf_tok = both
    c = hf.config
    assert (model.cfg.num_layers, model.cfg.hidden_size, model.cfg.num_heads, model.cfg.num_kv_heads,
            model.cfg.mlp_hidden, model.cfg.vocab_size) == (
        c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
        c.intermediate_size, c.vocab_size)
    # mvjax builds the tokenizer without transformers: the same as AutoTokenizer's in every part but
    # the post-processor, which in AutoTokenizer's adds no special tokens (mvjax places BOS itself)
    mine, ref = json.loads(tok.tok.to_str()), json.loads(hf_tok.backend_tokenizer.to_str())
    assert ref.pop("post_processor")["special_tokens"] == {} and mine.pop("post_processor") is None
    assert mine == ref
    text = _prompt(hf_tok)
    assert encode_prompt(tok, text) == hf_tok(text)["input_ids"]


def test_logits_and_greedy_generation_match(both):
    model, tok, hf, hf_tok = both
    ids = hf_tok(_prompt(hf_tok))["input_ids"]
    hl, ml = hf_logits(hf, [ids])[0], mv_logits(model, [ids])[0]
    diff = float(np.abs(hl - ml).max())
    hf.generation_config.eos_token_id = None  # run all 32 steps, as mvjax's generate does
    with torch.no_grad():
        hg = hf.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                         pad_token_id=hf_tok.eos_token_id)[0, len(ids):].tolist()
    mg = np.asarray(generate(model, jnp.asarray([ids]), NEW_TOKENS).tokens[0, len(ids):]).tolist()
    print(json.dumps({"smollm2_logits_max_abs_diff": diff, "prompt_tokens": len(ids),
                      "hf_tokens": len(hg), "continuation": tok.decode(mg)}))
    assert diff <= LOGIT_TOL
    assert len(hg) == len(mg) == NEW_TOKENS
    assert mg == hg


def test_cached_model_dir_is_faithful(both):
    """`load_pretrained("smollm2")` (converted once, cached as an mvjax dir) = the fresh conversion."""
    from mvjax.load import load_pretrained

    model, tok, _, hf_tok = both
    cached, cached_tok = load_pretrained("smollm2")
    ids = hf_tok(_prompt(hf_tok))["input_ids"]
    assert encode_prompt(cached_tok, _prompt(hf_tok)) == ids
    a = np.asarray(model(jnp.asarray([ids])).logits)
    b = np.asarray(cached(jnp.asarray([ids])).logits)
    assert np.array_equal(a, b)
