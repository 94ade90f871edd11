"""GGUF (llama.cpp) files of LLaMA-, Qwen2- and Gemma 3-architecture models → mvjax models.

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

Gemma 3 (``general.architecture = gemma3``). llama.cpp leaves its q/k rows in HF order (it permutes
only LLaMA-type archs) and stores every RMSNorm weight as 1 + w; we subtract the 1 again, as
transformers' GGUF loader does, so tensors equal the HF checkpoint's and the model scales by
(1 + w). What the metadata does not say is llama.cpp's fixed Gemma 3 layout, which transformers'
``Gemma3TextConfig`` defaults to as well: every 6th layer global (RoPE θ = ``rope.freq_base``), the
others local (``attention.sliding_window``, θ = 10,000), queries scaled by head_dim^-½.

Qwen2 (``general.architecture = qwen2``) is LLaMA plus q/k/v biases (``attn_q.bias`` …), which
``ModelConfig.qkv_bias`` switches on. llama.cpp does not permute its q/k rows either (``half``
already); the biases follow their rows when ``layout="interleaved"`` asks for a permutation.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mvjax.config import ModelConfig, PositionalConfig, RopeScaling
from mvjax.convert.gguf_tokenizer import field_value, tokenizer_from_reader
from mvjax.convert.hf import half_to_interleaved, interleaved_to_half, model_from_hf_tensors

_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight",
           "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
_PROJECTIONS = {"attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
                "attn_v.weight": "self_attn.v_proj.weight",
                "attn_output.weight": "self_attn.o_proj.weight", "ffn_gate.weight": "mlp.gate_proj.weight",
                "ffn_up.weight": "mlp.up_proj.weight", "ffn_down.weight": "mlp.down_proj.weight"}
_LAYER = {**_PROJECTIONS, "attn_norm.weight": "input_layernorm.weight",
          "ffn_norm.weight": "post_attention_layernorm.weight"}
_GEMMA3_LAYER = {**_PROJECTIONS, "attn_norm.weight": "input_layernorm.weight",
                 "post_attention_norm.weight": "post_attention_layernorm.weight",
                 "ffn_norm.weight": "pre_feedforward_layernorm.weight",
                 "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
                 "attn_q_norm.weight": "self_attn.q_norm.weight",
                 "attn_k_norm.weight": "self_attn.k_norm.weight"}
_QWEN2_LAYER = {**_LAYER, "attn_q.bias": "self_attn.q_proj.bias",
                "attn_k.bias": "self_attn.k_proj.bias", "attn_v.bias": "self_attn.v_proj.bias"}
# Per architecture: layer tensor names, the pair layout of the file's q/k rows, and what the file
# adds to every norm weight.
ARCHITECTURES = {"llama": (_LAYER, "interleaved", 0.0), "gemma3": (_GEMMA3_LAYER, "half", 1.0),
                 "qwen2": (_QWEN2_LAYER, "half", 0.0)}
_QK_ROWS = ("q_proj.weight", "k_proj.weight", "q_proj.bias", "k_proj.bias")  # permuted by layout
GEMMA3_LOCAL_THETA = 10000.0  # llama.cpp's and transformers' fixed RoPE base of local layers
GEMMA3_GLOBAL_EVERY = 6  # layers 5, 11, 17, … attend globally


def gguf_to_hf_name(name: str, arch: str = "llama") -> str | None:
    """HF tensor name of a llama.cpp tensor name (None when mvjax's model has no such tensor)."""
    layer = ARCHITECTURES[arch][0]
    if name in _GLOBAL:
        return _GLOBAL[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in layer:
        return f"model.layers.{parts[1]}.{layer[parts[2]]}"
    return None


def gguf_architecture(reader) -> str:
    """``general.architecture`` when mvjax imports it; else a one-line error naming it."""
    arch = field_value(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(f"GGUF general.architecture={arch!r} is not supported: mvjax imports "
                         f"{sorted(ARCHITECTURES)} GGUF files")
    return arch


def open_gguf(path: str | Path):
    """A ``GGUFReader`` over ``path``; a missing, foreign or truncated file is a one-line error."""
    from gguf import GGUFReader  # local: gguf loads only to read a file, not for `mvjax --help`

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
    """ModelConfig from ``general.architecture`` and its ``<arch>.*`` metadata (refuses what
    differs from the architecture mvjax implements)."""
    arch = gguf_architecture(reader)
    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        raise ValueError("GGUF holds rope_freqs.weight (per-frequency RoPE factors, e.g. Llama 3.1 "
                         "scaling) which is not supported: convert the HF checkpoint instead")
    if (field_value(reader, f"{arch}.expert_count") or 0) > 0:
        raise ValueError(f"GGUF {arch}.expert_count > 0 (mixture of experts) is not supported")

    def meta(key: str, default: Any = None) -> Any:
        return field_value(reader, f"{arch}.{key}", default)

    def need(key: str) -> int:
        v = meta(key)
        if v is None:
            raise ValueError(f"GGUF lacks metadata {arch}.{key}: the file is incomplete")
        return int(v)

    hidden, heads = need("embedding_length"), need("attention.head_count")
    head_dim = int(meta("attention.key_length", hidden // heads))
    rope_dims = int(meta("rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise ValueError(f"GGUF {arch}.rope.dimension_count={rope_dims} differs from head_dim="
                         f"{head_dim}: partial rotary GGUFs are not supported")
    scaling = None
    kind = meta("rope.scaling.type", "none")
    if kind == "linear":
        scaling = RopeScaling(type="linear", factor=float(meta("rope.scaling.factor")))
    elif kind not in ("none", None):
        raise ValueError(f"GGUF {arch}.rope.scaling.type={kind!r} is not supported: use none or linear")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    emb = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    vocab = meta("vocab_size") or (len(tokens.data) if tokens is not None else None)
    if vocab is None and emb is not None:
        vocab = int(emb.shape[-1])
    if vocab is None:
        raise ValueError(f"GGUF has neither {arch}.vocab_size nor token_embd.weight: file incomplete")
    vocab = int(vocab)

    def token_id(key: str) -> int | None:
        v = field_value(reader, key)
        return int(v) if v is not None and 0 <= int(v) < vocab else None

    layers = need("block_count")
    rope = PositionalConfig(scheme="rope", theta=float(meta("rope.freq_base", 10000.0)),
                            layout=layout, scaling=scaling)
    extra: dict[str, Any] = {"positional": rope}
    if arch == "gemma3":
        extra = _gemma3_fields(rope, layers, int(need("attention.sliding_window")), head_dim)
    elif arch == "qwen2":
        extra["qkv_bias"] = True
    return ModelConfig(
        vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
        num_kv_heads=int(meta("attention.head_count_kv", heads)), head_dim=head_dim,
        mlp_hidden=need("feed_forward_length"),
        norm_eps=float(meta("attention.layer_norm_rms_epsilon", 1e-5)),
        tie_embeddings="output.weight" not in names,
        max_seq_len=int(meta("context_length", 2048)),
        bos_id=token_id("tokenizer.ggml.bos_token_id"), eos_id=token_id("tokenizer.ggml.eos_token_id"),
        **extra)


def _gemma3_fields(rope: PositionalConfig, layers: int, window: int, head_dim: int) -> dict[str, Any]:
    """The Gemma 3 options of ``ModelConfig`` (module docstring: the layout llama.cpp fixes)."""
    local = dataclasses.replace(rope, theta=GEMMA3_LOCAL_THETA, scaling=None)
    is_global = [(i + 1) % GEMMA3_GLOBAL_EVERY == 0 for i in range(layers)]
    return dict(positional=tuple(rope if g else local for g in is_global),
                sliding_window=tuple(None if g else window for g in is_global),
                qk_norm=True, norm_weight_offset=1.0, post_norms=True, mlp_activation="gelu_tanh",
                scale_embeddings=True, query_pre_attn_scalar=float(head_dim))


def gguf_tensors(reader, cfg: ModelConfig, layout: str = "half") -> dict[str, np.ndarray]:
    """Dequantized float32 tensors under HF names (out×in); q/k rows in ``layout``."""
    arch = gguf_architecture(reader)
    _, file_layout, norm_offset = ARCHITECTURES[arch]
    out: dict[str, np.ndarray] = {}
    for t in tqdm(reader.tensors, desc="dequantize GGUF", unit="tensor", leave=False,
                  disable=len(reader.tensors) < 50):
        name = gguf_to_hf_name(t.name, arch)
        if name is None:
            raise ValueError(f"GGUF tensor {t.name!r} has no place in mvjax's {arch} model: the "
                             f"file is not a plain {arch} model")
        arr = dequantized(t)
        if norm_offset and name.endswith("norm.weight"):
            arr = arr - np.float32(norm_offset)
        if layout != file_layout and name.endswith(_QK_ROWS):
            heads = cfg.num_heads if ".q_proj." in name else cfg.num_kv_heads
            if arr.ndim != (2 if name.endswith("weight") else 1) or arr.shape[0] != heads * cfg.head_dim:
                raise ValueError(f"GGUF tensor {t.name!r} has shape {arr.shape}; metadata implies "
                                 f"{heads * cfg.head_dim} rows: metadata and tensors disagree")
            arr = (interleaved_to_half if layout == "half" else half_to_interleaved)(arr, heads)
        out[name] = arr
    return out


def dequantized(t) -> np.ndarray:
    """One GGUF tensor as float32 in HF shape (rows first); a quantization the gguf package
    cannot decode is a one-line error naming it."""
    from gguf.quants import dequantize  # local: as GGUFReader in open_gguf

    try:
        arr = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
    except (NotImplementedError, KeyError, ValueError) as e:
        kind = getattr(t.tensor_type, "name", t.tensor_type)
        raise ValueError(f"GGUF tensor {t.name!r} uses tensor type {kind} which the gguf package "
                         "cannot dequantize: requantize the file (e.g. to Q8_0)") from e
    rows = [int(x) for x in reversed(t.shape)]  # GGUF lists dims innermost first
    return arr.reshape(rows) if arr.size == int(np.prod(rows)) else arr


def load_gguf(path: str | Path, layout: str = "half", tokenizer: bool = True):
    """(Transformer, Tokenizer | None) from a LLaMA, Qwen2 or Gemma 3 GGUF; see the module docstring for
    ``layout``."""
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
