"""Gemma 3 parity against transformers on tiny random models (needs torch): logits, greedy
decoding, the HF config map, GGUF import and the GGUF tokenizer."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from mvjax.generate import generate
TOL = 1e-4  # as the torch-free Gemma tests

# ------------------------------------------------------------------------------ transformers
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from hf_reference import hf_logits, mv_logits, randomize  # noqa: E402


def make_hf_gemma(seed=0, **overrides):
    """A tiny random Gemma3ForCausalLM (eager attention) with random norms too."""
    torch.manual_seed(seed)
    kw = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=4,
              layer_types=["sliding_attention", "full_attention", "sliding_attention"],
              query_pre_attn_scalar=24, max_position_embeddings=128, rms_norm_eps=1e-6,
              attn_implementation="eager", pad_token_id=0, bos_token_id=2, eos_token_id=1)
    kw.update(overrides)
    model = transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**kw)).float().eval()
    return randomize(model, norm_mean=0.0)  # Gemma stores its norms as offsets from 1


def _mv_from_hf(hf_model):
    from mvjax.convert.hf import hf_to_model_config, model_from_hf_tensors

    cfg = hf_to_model_config(hf_model.config.to_dict())
    tensors = {k: v.numpy() for k, v in hf_model.state_dict().items()}
    return model_from_hf_tensors(cfg, tensors, where="tiny gemma")


def test_hf_gemma3_config_maps_every_option():
    cfg = _mv_from_hf(make_hf_gemma()).cfg
    assert cfg.sliding_window == (4, None, 4)
    assert [p.theta for p in cfg.positional] == [1e4, 1e6, 1e4]
    assert (cfg.qk_norm, cfg.post_norms, cfg.scale_embeddings) == (True, True, True)
    assert (cfg.norm_weight_offset, cfg.mlp_activation, cfg.query_pre_attn_scalar) == (
        1.0, "gelu_tanh", 24.0)


@pytest.mark.parametrize("seq", [3, 12])
def test_logits_match_transformers_gemma3(seq):
    """Tiny random Gemma 3, sequences shorter and longer than the window: equal logits."""
    hf = make_hf_gemma()
    model = _mv_from_hf(hf)
    toks = np.random.default_rng(seq).integers(0, 64, (2, seq))
    want, got = hf_logits(hf, toks), mv_logits(model, toks)
    np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL * np.abs(want).max())


def test_greedy_continuation_matches_transformers_gemma3():
    hf = make_hf_gemma(seed=1)
    model = _mv_from_hf(hf)
    prompt = np.random.default_rng(5).integers(3, 64, (1, 6))
    with torch.no_grad():
        want = hf.generate(torch.tensor(prompt), max_new_tokens=10, do_sample=False,
                           min_new_tokens=10).numpy()
    got = np.asarray(generate(model, jnp.asarray(prompt), 10).tokens)
    assert got.tolist() == want.tolist()


# ------------------------------------------------------------------------------------ GGUF
gguf = pytest.importorskip("gguf")

from gguf_files import GEMMA3_LAYER, write_gguf_file  # noqa: E402


def write_gemma3_gguf(path, hf, quant=None, arch="gemma3") -> None:
    """``hf`` as llama.cpp writes a Gemma 3: norm weights stored as 1 + w, q/k rows not permuted."""
    c = hf.config
    tensors = ((name, t.numpy().astype(np.float32) + (1.0 if "norm" in name else 0.0))
               for name, t in hf.state_dict().items() if name != "lm_head.weight")
    write_gguf_file(path, arch, c, c.rope_parameters["full_attention"]["rope_theta"], tensors,
                    layer=GEMMA3_LAYER, quant=quant, key_length=c.head_dim, value_length=c.head_dim,
                    sliding_window=c.sliding_window, bos_token_id=2, eos_token_id=1)


def _six_layer_gemma(seed=0):
    """llama.cpp fixes Gemma 3's layout (every 6th layer global, local θ = 1e4): six layers."""
    rope = {kind: {"rope_type": "default", "rope_theta": theta}
            for kind, theta in (("sliding_attention", 1e4), ("full_attention", 1e6))}
    return make_hf_gemma(seed, num_hidden_layers=6, layer_types=None, sliding_window=5,
                         intermediate_size=64, query_pre_attn_scalar=16, rope_parameters=rope)


@pytest.mark.parametrize("quant", [None, "Q8_0"])
def test_gemma3_gguf_import_matches_transformers(tmp_path, quant):
    from mvjax.convert.gguf import load_gguf

    hf = _six_layer_gemma()
    qtype = None if quant is None else gguf.GGMLQuantizationType[quant]
    write_gemma3_gguf(tmp_path / "g.gguf", hf, qtype)
    if qtype is not None:  # the reference runs the same dequantized weights
        with torch.no_grad():
            for _name, p in hf.named_parameters():
                if p.ndim == 2:
                    p.copy_(torch.tensor(gguf.quants.dequantize(
                        gguf.quants.quantize(p.numpy(), qtype), qtype)).reshape(p.shape))
    model, tok = load_gguf(tmp_path / "g.gguf")
    assert tok is None and model.cfg.sliding_window == (5,) * 5 + (None,)
    toks = np.random.default_rng(4).integers(0, 64, (2, 14))
    want, got = hf_logits(hf, toks), mv_logits(model, toks)
    np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL * np.abs(want).max())


def test_gguf_unsupported_architecture_and_tensor_type_are_one_line_errors(tmp_path, capsys):
    from mvjax.cli import main

    write_gemma3_gguf(tmp_path / "g2.gguf", _six_layer_gemma(), arch="gemma2")
    assert main(["convert", str(tmp_path / "g2.gguf"), str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip()
    assert "general.architecture='gemma2'" in err and "\n" not in err

    class Fake:  # a tensor type the gguf package has no dequantizer for
        name, shape, data = "blk.0.attn_q.weight", (4, 4), np.zeros(8, np.uint8)
        tensor_type = gguf.GGMLQuantizationType.IQ2_XXS

    from mvjax.convert.gguf import dequantized

    try:
        gguf.quants.dequantize(Fake.data, Fake.tensor_type)
        pytest.skip("this gguf package dequantizes IQ2_XXS")
    except Exception:  # noqa: BLE001 - whatever it raises, ours must be one line
        pass
    with pytest.raises(ValueError, match="IQ2_XXS") as e:
        dequantized(Fake)
    assert "\n" not in str(e.value)


def write_gemma_tokenizer_gguf(path) -> list[str]:
    """A Gemma-shaped SentencePiece vocabulary (control tokens, whitespace-only and newline
    user-defined tokens, byte-fallback tokens, ``▁``-spelled pieces in a shuffled order)."""
    from conftest import TOKENIZER_TEXT

    words = [("\u2581" + w) for w in TOKENIZER_TEXT.replace("\n", " ").split(" ") if w]
    pieces = sorted({w[:k] for w in words for k in range(1, min(len(w), 6) + 1)}
                    | set(TOKENIZER_TEXT.replace(" ", "\u2581")) - {"\n"})
    np.random.default_rng(0).shuffle(pieces)
    special = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
    user = ["\n", "\n\n", "  ", "   ", "\t\t"]
    tokens = special + user + [f"<0x{b:02X}>" for b in range(256)] + pieces
    types = [3] * len(special) + [4] * len(user) + [6] * 256 + [1] * len(pieces)
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types(types)
    for key, value in (("bos_token_id", 2), ("eos_token_id", 1), ("unk_token_id", 3),
                       ("pad_token_id", 0), ("add_bos_token", True), ("add_eos_token", False),
                       ("add_space_prefix", False)):
        getattr(w, f"add_{key}")(value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tokens


def test_gemma_gguf_tokenizer_matches_transformers(tmp_path):
    from conftest import TOKENIZER_TEXT

    from mvjax.convert.gguf import gguf_tokenizer
    from mvjax.tokenizers import encode_prompt

    write_gemma_tokenizer_gguf(tmp_path / "t.gguf")
    mine = gguf_tokenizer(tmp_path / "t.gguf")
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="t.gguf")
    texts = [TOKENIZER_TEXT, "  leading and  double   spaces\t\tand tabs\n\n\nlines ",
             "<start_of_turn>user\nHi<end_of_turn><bos>x<eos>", "unseen: Zürich ☃ 🙂 ~", "\n \n"]
    for text in texts:
        ids = encode_prompt(mine, text)
        assert ids == ref(text)["input_ids"], text
        assert ids[0] == 2 and mine.decode(ids[1:]) == ref.decode(ids[1:])
    assert "<0xE2>" in ref.convert_ids_to_tokens(encode_prompt(mine, "☃"))  # byte fallback used
