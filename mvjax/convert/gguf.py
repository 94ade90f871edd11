"""GGUF (llama.cpp) files of LLaMA-architecture models → mvjax models.

Tensors are read with ``gguf.GGUFReader`` and dequantized to float32 with ``gguf.quants.dequantize``
(F32, F16, Q8_0, Q4_0, Q4_1, K-quants … whatever the gguf package supports), hyper-parameters come
from the ``llama.*`` metadata and the tokenizer from the file's embedded vocabulary
(``mvjax.convert.gguf_tokenizer``: the ``tokenizers`` library alone, no transformers or torch).

Pair layout. llama.cpp's converter permutes the rows of every Q and K projection from HF's ``half``
RoPE pairing (dim i ↔ i + D/2) to the ``interleaved`` one (2i ↔ 2i+1). By default we **un-permute
back to ``half``** (``hf.interleaved_to_half``): the converted model is then tensor-for-tensor the HF
checkpoint of the same model, so per-(head, dim) statistics line up with the paper's HF-indexed
figures and export to HF is a plain copy. ``layout="interleaved"`` instead keeps the GGUF rows and
sets ``PositionalConfig(layout="interleaved")``: the logits are identical (tested), but per-dim
analysis must then map dims to frequencies with ``positional.dim_to_frequency``, which knows both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mvjax.config import ModelConfig, PositionalConfig, RopeScaling
from mvjax.convert.gguf_tokenizer import field_value, tokenizer_from_reader
from mvjax.convert.hf import interleaved_to_half, model_from_hf_tensors

_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight",
           "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
_LAYER = {"attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
          "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
          "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
          "ffn_down.weight": "mlp.down_proj.weight", "attn_norm.weight": "input_layernorm.weight",
          "ffn_norm.weight": "post_attention_layernorm.weight"}


def gguf_to_hf_name(name: str) -> str | None:
    """HF tensor name of a llama.cpp tensor name (None when mvjax's LLaMA has no such tensor)."""
    if name in _GLOBAL:
        return _GLOBAL[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER:
        return f"model.layers.{parts[1]}.{_LAYER[parts[2]]}"
    return None


def open_gguf(path: str | Path):
    """A ``GGUFReader`` over ``path``; a missing, foreign or truncated file is a one-line error."""
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist: fetch one (e.g. `mvjax weights "
                                "smollm2`) or pass the path of a .gguf file")
    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # GGUFReader raises ValueError/IndexError/... on short or foreign files
        raise ValueError(f"cannot read GGUF file {path} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160] if str(e) else 'no detail'}): it is truncated "
                         "or not a GGUF file; re-download it") from e
    size = path.stat().st_size
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise ValueError(f"GGUF file {path} is truncated ({size} bytes, tensors need {end}): "
                         "re-download it")
    return reader


def gguf_model_config(reader, layout: str = "half") -> ModelConfig:
    """ModelConfig from ``general.architecture`` and ``llama.*`` metadata (refuses what differs)."""
    arch = field_value(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"GGUF general.architecture={arch!r} is not supported: only LLaMA-"
                         "architecture GGUF files convert")
    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        raise ValueError("GGUF holds rope_freqs.weight (per-frequency RoPE factors, e.g. Llama 3.1 "
                         "scaling) which is not supported: convert the HF checkpoint instead")
    if (field_value(reader, "llama.expert_count") or 0) > 0:
        raise ValueError("GGUF llama.expert_count > 0 (mixture of experts) is not supported")

    def need(key: str) -> int:
        v = field_value(reader, f"llama.{key}")
        if v is None:
            raise ValueError(f"GGUF lacks metadata llama.{key}: the file is incomplete")
        return int(v)

    hidden, heads = need("embedding_length"), need("attention.head_count")
    head_dim = int(field_value(reader, "llama.attention.key_length", hidden // heads))
    rope_dims = int(field_value(reader, "llama.rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise ValueError(f"GGUF llama.rope.dimension_count={rope_dims} differs from head_dim="
                         f"{head_dim}: partial rotary LLaMA GGUFs are not supported")
    scaling = None
    kind = field_value(reader, "llama.rope.scaling.type", "none")
    if kind == "linear":
        scaling = RopeScaling(type="linear", factor=float(field_value(reader, "llama.rope.scaling.factor")))
    elif kind not in ("none", None):
        raise ValueError(f"GGUF llama.rope.scaling.type={kind!r} is not supported: use none or linear")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    emb = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    vocab = field_value(reader, "llama.vocab_size") or (len(tokens.data) if tokens is not None else None)
    if vocab is None and emb is not None:
        vocab = int(emb.shape[-1])
    if vocab is None:
        raise ValueError("GGUF has neither llama.vocab_size nor token_embd.weight: file incomplete")
    vocab = int(vocab)

    def token_id(key: str) -> int | None:
        v = field_value(reader, key)
        return int(v) if v is not None and 0 <= int(v) < vocab else None

    return ModelConfig(
        vocab_size=vocab, hidden_size=hidden, num_layers=need("block_count"), num_heads=heads,
        num_kv_heads=int(field_value(reader, "llama.attention.head_count_kv", heads)), head_dim=head_dim,
        mlp_hidden=need("feed_forward_length"),
        norm_eps=float(field_value(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        tie_embeddings="output.weight" not in names,
        max_seq_len=int(field_value(reader, "llama.context_length", 2048)),
        bos_id=token_id("tokenizer.ggml.bos_token_id"), eos_id=token_id("tokenizer.ggml.eos_token_id"),
        positional=PositionalConfig(scheme="rope", theta=float(field_value(reader, "llama.rope.freq_base",
                                                                        10000.0)),
                                    layout=layout, scaling=scaling))


def gguf_tensors(reader, cfg: ModelConfig, layout: str = "half") -> dict[str, np.ndarray]:
    """Dequantized float32 tensors under HF names (out×in); q/k rows in ``layout``."""
    from gguf.quants import dequantize
    from tqdm import tqdm

    out: dict[str, np.ndarray] = {}
    for t in tqdm(reader.tensors, desc="dequantize GGUF", unit="tensor", leave=False,
                  disable=len(reader.tensors) < 50):
        name = gguf_to_hf_name(t.name)
        if name is None:
            raise ValueError(f"GGUF tensor {t.name!r} has no place in mvjax's LLaMA: the file is "
                             "not a plain LLaMA model")
        try:
            arr = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        except NotImplementedError as e:
            raise ValueError(f"GGUF tensor {t.name!r} uses quantization {t.tensor_type.name} which "
                             "the gguf package cannot dequantize: requantize the file") from e
        rows = [int(x) for x in reversed(t.shape)]  # GGUF lists dims innermost first
        arr = arr.reshape(rows) if arr.size == int(np.prod(rows)) else arr
        if layout == "half" and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = cfg.num_heads if name.endswith("q_proj.weight") else cfg.num_kv_heads
            if arr.ndim != 2 or arr.shape[0] != heads * cfg.head_dim:
                raise ValueError(f"GGUF tensor {t.name!r} has shape {arr.shape}; metadata implies "
                                 f"{heads * cfg.head_dim} rows: metadata and tensors disagree")
            arr = interleaved_to_half(arr, heads)
        out[name] = arr
    return out


def load_gguf(path: str | Path, layout: str = "half", tokenizer: bool = True):
    """(Transformer, Tokenizer | None) from a LLaMA GGUF; see the module docstring for ``layout``."""
    if layout not in ("half", "interleaved"):
        raise ValueError(f"layout={layout!r} is invalid: use 'half' or 'interleaved'")
    path = Path(path)
    reader = open_gguf(path)
    cfg = gguf_model_config(reader, layout)
    model = model_from_hf_tensors(cfg, gguf_tensors(reader, cfg, layout), where=str(path))
    tok = None
    if tokenizer and "tokenizer.ggml.model" in reader.fields:
        tok = tokenizer_from_reader(reader, where=str(path))
    return model, tok


def gguf_tokenizer(path: str | Path):
    """The tokenizer embedded in the GGUF at ``path`` (no transformers, no torch)."""
    return tokenizer_from_reader(open_gguf(path), where=str(path))
