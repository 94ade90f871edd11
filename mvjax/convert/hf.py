"""HF LLaMA checkpoints (config.json + safetensors) ⇄ mvjax models, without torch; Gemma 3 text
(``model_type: gemma3_text``) and Qwen2 (``qwen2``: LLaMA plus q/k/v biases) checkpoints import too.

Why this shape: the HF format is the lingua franca of released LLaMA weights, and the paper's
figures index head dims the way HF stores them. Import reads tensors with the safetensors NumPy API
(sharded ``model.safetensors.index.json`` included), maps names with one table, transposes kernels
(HF stores out×in, mvjax in×out) and fills an abstractly built model — no random init is computed.

Anything in ``config.json`` that changes the math and that mvjax does not implement (biases, other
activations, yarn/dynamic RoPE, tensor-parallel splitting, another ``model_type``) is refused with a
one-line ``ValueError`` naming the field, never silently ignored.

HF uses the ``half`` RoPE pair layout. The one pair-layout permutation of the codebase
(``half_to_interleaved`` / ``interleaved_to_half``) lives here; GGUF import and the export of an
``interleaved`` mvjax model both use it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from pathlib import Path
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from mvjax.atomic import atomic_directory
from mvjax.config import ModelConfig, PositionalConfig, RopeScaling
from mvjax.tokenizers import HFTokenizer

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
WEIGHTS_FILE = "model.safetensors"

# HF tensor name ↔ mvjax parameter path, and whether the kernel is transposed (out×in ↔ in×out).
_GLOBAL = {
    "model.embed_tokens.weight": (("embed", "embedding"), False),
    "model.norm.weight": (("norm", "weight"), False),
    "lm_head.weight": (("lm_head", "kernel"), True),
}
_LAYER = {
    "self_attn.q_proj.weight": (("attn", "q_proj", "kernel"), True),
    "self_attn.k_proj.weight": (("attn", "k_proj", "kernel"), True),
    "self_attn.v_proj.weight": (("attn", "v_proj", "kernel"), True),
    "self_attn.o_proj.weight": (("attn", "o_proj", "kernel"), True),
    "mlp.gate_proj.weight": (("mlp", "gate_proj", "kernel"), True),
    "mlp.up_proj.weight": (("mlp", "up_proj", "kernel"), True),
    "mlp.down_proj.weight": (("mlp", "down_proj", "kernel"), True),
    "input_layernorm.weight": (("input_norm", "weight"), False),
    "post_attention_layernorm.weight": (("post_attn_norm", "weight"), False),
}
# Gemma's block has four norms and QK-norm; its post_attention_layernorm norms the attention
# *output*, while LLaMA's (mvjax's ``post_attn_norm``) is the norm before the MLP.
_GEMMA_NORMS = {
    "input_layernorm.weight": (("input_norm", "weight"), False),
    "post_attention_layernorm.weight": (("attn_out_norm", "weight"), False),
    "pre_feedforward_layernorm.weight": (("post_attn_norm", "weight"), False),
    "post_feedforward_layernorm.weight": (("mlp_out_norm", "weight"), False),
}
_QKV_BIASES = {  # Qwen2 (``qkv_bias``); HF LLaMA's attention_bias would also bias o_proj
    "self_attn.q_proj.bias": (("attn", "q_proj", "bias"), False),
    "self_attn.k_proj.bias": (("attn", "k_proj", "bias"), False),
    "self_attn.v_proj.bias": (("attn", "v_proj", "bias"), False),
}
_QK_NORMS = {
    "self_attn.q_norm.weight": (("attn", "q_norm", "weight"), False),
    "self_attn.k_norm.weight": (("attn", "k_norm", "weight"), False),
}
# ModelConfig fields with which HF LLaMA cannot represent a model (their LLaMA values).
_NOT_LLAMA = {"sliding_window": None, "qk_norm": False, "norm_weight_offset": 0.0,
              "post_norms": False, "mlp_activation": "silu", "scale_embeddings": False,
              "query_pre_attn_scalar": None, "qkv_bias": False}
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some old checkpoints saved; recomputed here


# ----------------------------------------------------------------------------------- config map
def hf_to_model_config(hf: Mapping[str, Any]) -> ModelConfig:
    """ModelConfig of an HF LLaMA ``config.json`` dict; refuses math-changing fields it lacks."""
    def refuse(field: str, value: Any, fix: str) -> None:
        raise ValueError(f"HF config {field}={value!r} is not supported: {fix}")

    model_type = hf.get("model_type", "llama")
    if model_type == "gemma3_text":
        return _gemma3_config(hf, refuse)
    if model_type == "qwen2":
        return _qwen2_config(hf, refuse)
    if model_type != "llama":
        refuse("model_type", model_type, "only LLaMA (model_type 'llama'), Gemma 3 text "
               "('gemma3_text') and Qwen2 ('qwen2') checkpoints convert; mvjax implements no other block")
    checks = {"hidden_act": ("silu", "mvjax's MLP is SwiGLU with SiLU"),
              "attention_bias": (False, "mvjax projections have no biases"),
              "mlp_bias": (False, "mvjax projections have no biases"),
              "pretraining_tp": (1, "set it to 1 (it only emulates tensor-parallel rounding)")}
    for field, (ok, why) in checks.items():
        if field in hf and hf[field] is not None and hf[field] != ok:
            refuse(field, hf[field], why)
    for field in ("sliding_window", "attn_logit_softcapping", "final_logit_softcapping"):
        if hf.get(field) is not None:
            refuse(field, hf[field], "LLaMA attention has no such term; drop it or use another tool")
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads"):
        if field not in hf:
            raise ValueError(f"HF config lacks {field}: is this a LLaMA config.json?")

    theta, scaling = _hf_rope(hf)
    eos = hf.get("eos_token_id")
    if isinstance(eos, (list, tuple)):  # Llama 3 lists several stop tokens; the first ends a turn
        eos = eos[0] if eos else None
    vocab = int(hf["vocab_size"])

    return ModelConfig(
        vocab_size=vocab,
        hidden_size=int(hf["hidden_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=int(hf["num_attention_heads"]),
        num_kv_heads=int(hf.get("num_key_value_heads") or hf["num_attention_heads"]),
        head_dim=int(hf["head_dim"]) if hf.get("head_dim") else None,
        mlp_hidden=int(hf["intermediate_size"]),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_seq_len=int(hf.get("max_position_embeddings", 2048)),
        bos_id=_token_id(hf.get("bos_token_id"), vocab),
        eos_id=_token_id(eos, vocab),
        positional=PositionalConfig(scheme="rope", theta=theta, layout="half", scaling=scaling),
    )


def _qwen2_config(hf: Mapping[str, Any], refuse) -> ModelConfig:
    """ModelConfig of an HF ``Qwen2Config`` dict: a LLaMA config plus q/k/v biases. Its
    ``sliding_window`` / ``max_window_layers`` only act with ``use_sliding_window`` (off in every
    released Qwen2.5), so they are dropped unless it is on, which is refused."""
    if hf.get("use_sliding_window"):
        refuse("use_sliding_window", hf["use_sliding_window"], "mvjax does not implement Qwen2's "
               "per-layer sliding window; set it to false only if the model was trained without it")
    types = hf.get("layer_types")
    if types and set(types) != {"full_attention"}:
        refuse("layer_types", sorted(set(types)), "mvjax's Qwen2 attends to every earlier token "
               "(full_attention in every layer)")
    qwen_only = ("use_sliding_window", "sliding_window", "max_window_layers", "layer_types")
    llama = {**{k: v for k, v in hf.items() if k not in qwen_only}, "model_type": "llama"}
    return dataclasses.replace(hf_to_model_config(llama), qkv_bias=True)


def _gemma3_config(hf: Mapping[str, Any], refuse) -> ModelConfig:
    """ModelConfig of an HF ``Gemma3TextConfig`` dict: per-layer windows and RoPE bases from
    ``layer_types`` and ``rope_parameters`` (transformers 5) or ``rope_theta`` /
    ``rope_local_base_freq`` (older files)."""
    checks = {"hidden_activation": ("gelu_pytorch_tanh", "mvjax's Gemma MLP is GeGLU with tanh GELU"),
              "attention_bias": (False, "mvjax projections have no biases"),
              "attn_logit_softcapping": (None, "mvjax has no logit soft-capping"),
              "final_logit_softcapping": (None, "mvjax has no logit soft-capping"),
              "use_bidirectional_attention": (False, "mvjax attention is causal")}
    for field, (ok, why) in checks.items():
        if hf.get(field) not in (ok, None) and not (ok is False and not hf.get(field)):
            refuse(field, hf[field], why)
    n = int(hf["num_hidden_layers"])
    types = hf.get("layer_types") or ["full_attention" if (i + 1) % int(
        hf.get("sliding_window_pattern", 6)) == 0 else "sliding_attention" for i in range(n)]
    if len(types) != n or set(types) - {"sliding_attention", "full_attention"}:
        refuse("layer_types", types, f"give {n} entries of sliding_attention / full_attention")
    params = dict(hf.get("rope_parameters") or {})
    legacy = {"sliding_attention": {"rope_theta": hf.get("rope_local_base_freq", 10000.0)},
              "full_attention": {"rope_theta": hf.get("rope_theta", 1e6),
                                 **(hf.get("rope_scaling") or {})}}
    rope = {kind: _hf_rope(params.get(kind) or legacy[kind]) for kind in legacy}
    window = int(hf.get("sliding_window") or 4096)
    vocab = int(hf["vocab_size"])
    eos = hf.get("eos_token_id", 1)
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    heads = int(hf["num_attention_heads"])
    return ModelConfig(
        vocab_size=vocab, hidden_size=int(hf["hidden_size"]), num_layers=n, num_heads=heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=int(hf.get("head_dim") or 256), mlp_hidden=int(hf["intermediate_size"]),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        max_seq_len=int(hf.get("max_position_embeddings", 131072)),
        bos_id=_token_id(hf.get("bos_token_id", 2), vocab), eos_id=_token_id(eos, vocab),
        positional=tuple(PositionalConfig(scheme="rope", theta=rope[t][0], layout="half",
                                          scaling=rope[t][1]) for t in types),
        sliding_window=tuple(window if t == "sliding_attention" else None for t in types),
        qk_norm=True, norm_weight_offset=1.0, post_norms=True, mlp_activation="gelu_tanh",
        scale_embeddings=True, query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)))


def _token_id(v: Any, vocab: int) -> int | None:
    return int(v) if v is not None and 0 <= int(v) < vocab else None


def _hf_rope(hf: Mapping[str, Any]) -> tuple[float, RopeScaling | None]:
    """RoPE base and scaling from either transformers-5 ``rope_parameters`` or the older
    top-level ``rope_theta`` + ``rope_scaling``."""
    params = dict(hf.get("rope_parameters") or {})
    legacy = {**({"rope_theta": hf["rope_theta"]} if "rope_theta" in hf else {}),
              **(hf.get("rope_scaling") or {})}
    if params and legacy:  # both present (an export for old readers): only if they agree
        kinds = [d.get("rope_type", d.get("type")) for d in (params, legacy)]
        clash = sorted(k for k in params.keys() & legacy.keys() - {"type", "rope_type"}
                       if params[k] != legacy[k])
        if clash or None not in kinds and kinds[0] != kinds[1] or (
                kinds[1] not in (None, "default") and kinds[0] in (None, "default")):
            raise ValueError(f"HF config has rope_parameters {params} and legacy rope_theta/"
                             f"rope_scaling {legacy} that disagree: keep one of them in config.json")
    merged = {**legacy, **params}
    theta = float(merged.get("rope_theta", hf.get("rope_theta", 10000.0)))
    kind = merged.get("rope_type", merged.get("type", "default")) or "default"
    frac = merged.get("partial_rotary_factor", hf.get("partial_rotary_factor"))
    if frac is not None and float(frac) != 1.0:
        raise ValueError(f"HF config partial_rotary_factor={frac!r} is not supported: LLaMA "
                         "rotates the whole head")
    if kind == "default":
        return theta, None
    if kind == "linear":
        return theta, RopeScaling(type="linear", factor=float(merged["factor"]))
    if kind == "llama3":
        return theta, RopeScaling(
            type="llama3", factor=float(merged["factor"]),
            low_freq_factor=float(merged["low_freq_factor"]),
            high_freq_factor=float(merged["high_freq_factor"]),
            original_max_position_embeddings=int(merged["original_max_position_embeddings"]))
    raise ValueError(f"HF config rope_type={kind!r} is not supported: mvjax implements "
                     "'default', 'linear' and 'llama3' RoPE scaling")


def model_config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """The HF ``LlamaConfig`` dict of a model that HF LLaMA can represent (refuses others)."""
    for field, llama in _NOT_LLAMA.items():
        if getattr(cfg, field) != llama:
            raise ValueError(f"{field}={getattr(cfg, field)!r} cannot be exported: HF LLaMA has no "
                             "such option (export is for LLaMA-shaped models)")
    pos = cfg.positional
    if isinstance(pos, tuple):
        if len(set(pos)) != 1:
            raise ValueError("positional differs per layer: HF LLaMA has one RoPE for all layers; "
                             "export only uniform-RoPE models")
        pos = pos[0]
    if pos.scheme != "rope":
        raise ValueError(f"positional.scheme={pos.scheme!r} cannot be exported: HF LLaMA is RoPE only")
    if pos.rotary_dims(cfg.head_dim) != cfg.head_dim:
        raise ValueError(f"positional.rotary_fraction={pos.rotary_fraction} cannot be exported: "
                         "HF LLaMA rotates the whole head")
    rope: dict[str, Any] = {"rope_theta": pos.theta, "rope_type": "default"}
    if pos.scaling is not None:
        s = pos.scaling
        rope.update(rope_type=s.type, factor=s.factor)
        if s.type == "llama3":
            rope.update(low_freq_factor=s.low_freq_factor, high_freq_factor=s.high_freq_factor,
                        original_max_position_embeddings=s.original_max_position_embeddings)
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.mlp_hidden, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim, "hidden_act": "silu", "rms_norm_eps": cfg.norm_eps,
        "max_position_embeddings": cfg.max_seq_len, "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": cfg.bos_id, "eos_token_id": cfg.eos_id,
        "attention_bias": False, "mlp_bias": False, "pretraining_tp": 1,
        "rope_parameters": rope, "dtype": "float32",
        # read by transformers < 5, which ignores rope_parameters (θ would silently be 10,000)
        "rope_theta": pos.theta,
        **({"rope_scaling": {k: v for k, v in rope.items() if k != "rope_theta"}}
           if pos.scaling is not None else {}),
    }


# ---------------------------------------------------------------------------- pair-layout permute
def half_to_interleaved(w_out_x_in: np.ndarray, num_heads: int) -> np.ndarray:
    """Reorder the rows of an HF q/k weight (heads × head_dim rows) from the ``half`` pairing
    (i ↔ i + D/2) to ``interleaved`` (2i ↔ 2i+1) — what llama.cpp's converter does."""
    rows = w_out_x_in.shape[0]
    d = rows // num_heads
    return (w_out_x_in.reshape(num_heads, 2, d // 2, *w_out_x_in.shape[1:])
            .swapaxes(1, 2).reshape(w_out_x_in.shape))


def interleaved_to_half(w_out_x_in: np.ndarray, num_heads: int) -> np.ndarray:
    """Inverse of ``half_to_interleaved``."""
    rows = w_out_x_in.shape[0]
    d = rows // num_heads
    return (w_out_x_in.reshape(num_heads, d // 2, 2, *w_out_x_in.shape[1:])
            .swapaxes(1, 2).reshape(w_out_x_in.shape))


# ------------------------------------------------------------------------------------- tensors
def _expected_hf_names(cfg: ModelConfig) -> dict[str, tuple[tuple, bool]]:
    names = {k: v for k, v in _GLOBAL.items() if k != "lm_head.weight" or not cfg.tie_embeddings}
    layer = dict(_LAYER)
    if cfg.post_norms:
        del layer["post_attention_layernorm.weight"]
        layer.update(_GEMMA_NORMS)
    if cfg.qk_norm:
        layer.update(_QK_NORMS)
    if cfg.qkv_bias:
        layer.update(_QKV_BIASES)
    for i in range(cfg.num_layers):
        for suffix, (path, transpose) in layer.items():
            names[f"model.layers.{i}.{suffix}"] = (("layers", i) + path, transpose)
    return names


def model_from_hf_tensors(cfg: ModelConfig, tensors: Mapping[str, np.ndarray],
                          where: str = "checkpoint"):
    """Build a Transformer whose parameters are ``tensors`` (HF names, HF half layout, out×in).

    The model is built abstractly (``nnx.eval_shape``) and every parameter is filled from a tensor
    whose shape is checked first, so no random init is computed and nothing is left unfilled."""
    from flax import nnx  # local: flax takes seconds; `mvjax --help` imports this module

    from mvjax.model import init_model  # local: flax, as above

    expected = _expected_hf_names(cfg)
    unknown = sorted(n for n in tensors if n not in expected
                     and not n.endswith(_IGNORED_SUFFIXES) and n != "lm_head.weight")
    if unknown:
        raise ValueError(f"{where} holds tensor(s) mvjax's LLaMA has no place for, e.g. {unknown[0]!r} "
                         f"({len(unknown)} in all): biases or another architecture are not supported")
    missing = sorted(n for n in expected if n not in tensors)
    if missing:
        raise ValueError(f"{where} lacks tensor {missing[0]!r} ({len(missing)} missing in all): the "
                         "weights are incomplete or config.json describes another model")
    if cfg.tie_embeddings and "lm_head.weight" in tensors and not np.array_equal(
            np.asarray(tensors["lm_head.weight"]), np.asarray(tensors["model.embed_tokens.weight"])):
        raise ValueError(f"{where}: tie_word_embeddings is true but lm_head.weight differs from "
                         "embed_tokens: set tie_word_embeddings=false in config.json")
    abstract = nnx.eval_shape(lambda: init_model(cfg))
    graphdef, state = nnx.split(abstract)
    params = {path: var for path, var in nnx.to_flat_state(state)}
    for name, (path, transpose) in expected.items():
        arr = np.asarray(tensors[name])
        arr = arr.T if transpose else arr
        var = params[path]
        want = tuple(var.get_value().shape)
        if arr.shape != want:
            shown = arr.T.shape if transpose else arr.shape
            raise ValueError(f"{where}: tensor {name!r} has shape {tuple(shown)} but config implies "
                             f"{tuple(reversed(want)) if transpose else want}: config.json and the "
                             "weights describe different models")
        var.set_value(jnp.asarray(arr, dtype=jnp.float32))
    filled = {path for path, _ in expected.values()}
    unfilled = [p for p in params if p not in filled]
    if unfilled:  # e.g. a new state variable in model.py that no checkpoint carries
        raise ValueError(f"mvjax model state {'.'.join(map(str, unfilled[0]))} has no HF tensor: "
                         "teach mvjax.convert.hf its name map before converting")
    return nnx.merge(graphdef, state)


def hf_tensors_from_model(model) -> dict[str, np.ndarray]:
    """The model's parameters as HF-named float32 tensors (out×in, half layout)."""
    from flax import nnx  # local: as in model_from_hf_tensors

    cfg = model.cfg
    values = {path: np.asarray(var.get_value())
              for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    out = {}
    for name, (path, transpose) in _expected_hf_names(cfg).items():
        arr = values[path]
        out[name] = np.ascontiguousarray(arr.T if transpose else arr, dtype=np.float32)
    layouts = {cfg.layer_positional(i).layout for i in range(cfg.num_layers)}
    if layouts == {"interleaved"}:
        for i in range(cfg.num_layers):
            for (proj, heads), kind in itertools.product(
                    (("q_proj", cfg.num_heads), ("k_proj", cfg.num_kv_heads)), ("weight", "bias")):
                name = f"model.layers.{i}.self_attn.{proj}.{kind}"
                if name in out:  # biases (``qkv_bias``) rotate with their rows
                    out[name] = np.ascontiguousarray(interleaved_to_half(out[name], heads))
    elif layouts != {"half"}:
        raise ValueError("positional.layout differs per layer: export only uniform-layout models")
    return out


# ------------------------------------------------------------------------------------ directories
def read_hf_config(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"HF model directory {directory} does not exist: pass a directory "
                                "holding config.json and *.safetensors")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {CONFIG_FILE}: an HF model directory needs "
                                "config.json beside its *.safetensors")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}): fix or "
                         "re-download it") from e


def read_safetensors(directory: str | Path) -> dict[str, np.ndarray]:
    """All tensors of an HF dir as NumPy arrays (single file, sharded index, or any *.safetensors)."""
    directory = Path(directory)
    index = directory / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = sorted({directory / f for f in weight_map.values()})
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise FileNotFoundError(f"{INDEX_FILE} in {directory} names shard {absent[0]} which is "
                                    "missing: download every shard")
    else:
        files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {directory}: mvjax reads safetensors only "
                                "(convert .bin/.pth checkpoints with transformers first)")
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="np") as st:
                for name in st.keys():
                    if st.get_slice(name).get_dtype() == "BF16":  # NumPy has no bfloat16
                        tensors[name] = _read_bf16_as_f32(f, name)
                    else:
                        tensors[name] = st.get_tensor(name)
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise ValueError(f"cannot read {f} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else 'no detail'}): the file "
                             "is corrupt or truncated; re-download it") from e
    return tensors


def _read_bf16_as_f32(path: Path, name: str) -> np.ndarray:
    """A bfloat16 tensor widened exactly to float32 (bf16 is the top half of an f32's bits),
    read from the safetensors layout: u64 header length, JSON header, then raw little-endian data."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        info = json.loads(fh.read(n))[name]
    begin, end = info["data_offsets"]
    raw = np.fromfile(path, dtype="<u2", count=(end - begin) // 2, offset=8 + n + begin)
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])


def load_hf(directory: str | Path):
    """(Transformer, Tokenizer | None) from an HF LLaMA directory."""
    directory = Path(directory)
    cfg = hf_to_model_config(read_hf_config(directory))
    model = model_from_hf_tensors(cfg, read_safetensors(directory), where=str(directory))
    tok = None
    if (directory / "tokenizer.json").is_file():
        tok = HFTokenizer.from_file(directory / "tokenizer.json", cfg.bos_id, cfg.eos_id)
        tc_file = directory / "tokenizer_config.json"
        tc = json.loads(tc_file.read_text()) if tc_file.is_file() else {}
        pad = tc.get("pad_token")
        tok.pad_id = tok.tok.token_to_id(pad if isinstance(pad, str) else (pad or {}).get("content", ""))
        tok.chat_template = tc.get("chat_template") or tok.chat_template
    return model, tok


def save_hf(directory: str | Path, model, tokenizer=None) -> Path:
    """Write config.json + model.safetensors (+ tokenizer.json) that ``LlamaForCausalLM`` loads.
    Written under a temporary name and renamed, so a failure leaves nothing half-written."""
    hf_cfg = model_config_to_hf(model.cfg)  # refuse before touching the disk
    tensors = hf_tensors_from_model(model)
    with atomic_directory(directory) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(hf_cfg, indent=2))
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        if tokenizer is not None and hasattr(tokenizer, "tok"):  # an HF tokenizers.Tokenizer
            tokenizer.tok.save(str(tmp / "tokenizer.json"))
            # model_input_names: without it transformers < 5 also feeds token_type_ids to LLaMA
            tc = {"tokenizer_class": "PreTrainedTokenizerFast",
                  "model_input_names": ["input_ids", "attention_mask"]}
            for key, tid in (("bos_token", tokenizer.bos_id), ("eos_token", tokenizer.eos_id),
                             ("pad_token", getattr(tokenizer, "pad_id", None))):
                if tid is not None:
                    tc[key] = tokenizer.tok.id_to_token(int(tid))
            if getattr(tokenizer, "chat_template", None):
                tc["chat_template"] = tokenizer.chat_template
            (tmp / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
    return Path(directory).absolute()
