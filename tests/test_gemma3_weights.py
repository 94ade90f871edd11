"""Real weights: Gemma 3 270M (base, Q4_K_M GGUF) through mvjax vs transformers' own GGUF loader
(which dequantizes to float32, so both run the same numbers). Slow: a 253 MB file whose vocabulary
(262,144 tokens) takes the gguf reader about a minute to parse on one core."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hf_reference import hf_logits, mv_logits  # noqa: E402

import jax.numpy as jnp  # noqa: E402
from conftest import gguf_or_skip, gguf_with_reference  # noqa: E402

from mvjax.generate import generate  # noqa: E402
from mvjax.tokenizers import encode_prompt  # noqa: E402

REL_TOL = 1e-4
WINDOW = 512
PROMPTS = ["The capital of France is",
           "def fibonacci(n):\n    if n < 2:\n        return n\n",
           "Photosynthesis converts light energy into chemical energy. In plants, it takes place in",
           # longer than the 512-token window: local layers must forget the start
           " ".join(f"Item {i}: the {['red', 'green', 'blue'][i % 3]} box holds {i * 7 % 13} stones."
                    for i in range(60))]
TEXTS = ["The capital of France is", "  leading spaces,\ttabs\n\nand  double   spaces ",
         "naïve café 東京 🙂 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \x00\x07 مرحبا עברית ज़िन्दगी",
         "<start_of_turn>user\nHi<end_of_turn>\n<bos>x<eos><mask>[multimodal]",
         "def f(x):\n    return x**2  # comment\n\n\n",
         "1234567890 3.14159 -2e10 ½ ™ … “quotes”",
         "http://example.com/path?q=1&r=2", "\n\n\n\n   \t \n", "a" * 50]


@pytest.fixture(scope="module")
def gguf_path():
    return gguf_or_skip("gemma3")


@pytest.fixture(scope="module")
def both(gguf_path):
    return gguf_with_reference(gguf_path)


def test_config_matches_transformers(both):
    model, _, hf, _ = both
    c, m = hf.config, model.cfg
    assert (m.num_layers, m.hidden_size, m.num_heads, m.num_kv_heads, m.head_dim, m.mlp_hidden,
            m.vocab_size) == (c.num_hidden_layers, c.hidden_size, c.num_attention_heads,
                              c.num_key_value_heads, c.head_dim, c.intermediate_size, c.vocab_size)
    assert [w is not None for w in m.sliding_window] == [t == "sliding_attention" for t in c.layer_types]
    assert {w for w in m.sliding_window if w} == {c.sliding_window} == {WINDOW}
    assert [p.theta for p in m.positional] == [
        c.rope_parameters[t]["rope_theta"] for t in c.layer_types]
    assert m.query_pre_attn_scalar == c.query_pre_attn_scalar


def test_tokenizer_matches_transformers(both):
    _, tok, _, hf_tok = both
    for text in TEXTS + PROMPTS:
        ids = encode_prompt(tok, text)
        assert ids == hf_tok(text)["input_ids"], text
        assert tok.decode(ids[1:]) == hf_tok.decode(ids[1:])


@pytest.mark.parametrize("prompt", range(len(PROMPTS)))
def test_logits_match_transformers(both, prompt):
    model, tok, hf, _ = both
    ids = encode_prompt(tok, PROMPTS[prompt])
    if prompt == len(PROMPTS) - 1:
        assert len(ids) > WINDOW + 64
    want, got = hf_logits(hf, [ids])[0], mv_logits(model, [ids])[0]
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err < REL_TOL, err


def test_greedy_continuation_matches_transformers_and_the_issue(both):
    model, tok, hf, _ = both
    ids = encode_prompt(tok, "The capital of France is")
    with torch.no_grad():
        want = hf.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids):]
    got = np.asarray(generate(model, jnp.asarray([ids]), 12).tokens[0, len(ids):])
    assert got.tolist() == want.tolist()
    assert tok.decode(got.tolist()) == " the capital of the country of France. It is the largest"


def test_cached_decoding_past_the_window_matches_transformers(both):
    """Greedy decoding that starts 500 tokens in and crosses the 512-token window."""
    model, tok, hf, _ = both
    ids = encode_prompt(tok, PROMPTS[-1])[:500]
    with torch.no_grad():
        want = hf.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)[0, len(ids):]
    got = np.asarray(generate(model, jnp.asarray([ids]), 24).tokens[0, len(ids):])
    assert got.tolist() == want.tolist()
