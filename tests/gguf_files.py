"""GGUF files written in tests the way llama.cpp's converter lays them out (tensor names, metadata),
so each GGUF reader is checked against a file whose weights the test knows. The architectures differ
only in their layer-name table, extra metadata and how a tensor is stored; the writing is shared."""

from __future__ import annotations

from collections.abc import Iterable

import gguf
import numpy as np

LLAMA_LAYER = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
               "post_attention_layernorm": "ffn_norm"}
# Gemma 3 norms around both sublayers: HF's post-attention norm is not llama's pre-MLP one
GEMMA3_LAYER = {**LLAMA_LAYER, "post_attention_layernorm": "post_attention_norm",
                "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
                "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}
GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
          "lm_head.weight": "output.weight"}


def tensor_name(hf_name: str, layer: dict[str, str] = LLAMA_LAYER) -> str:
    """llama.cpp's name of an HF tensor (``model.layers.3.self_attn.q_proj.bias`` → ``blk.3.attn_q.bias``)."""
    if hf_name in GLOBAL:
        return GLOBAL[hf_name]
    _, _, i, rest = hf_name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{i}.{layer[module]}.{kind}"


def write_gguf_file(path, arch: str, config, rope_theta: float, tensors: Iterable[tuple[str, np.ndarray]],
                    layer: dict[str, str] = LLAMA_LAYER, quant=None, **metadata) -> None:
    """Write ``tensors`` (HF name, fp32 array as it is to be stored) under ``arch`` with the header
    every architecture shares from the HF ``config``; ``metadata`` adds ``GGUFWriter.add_<key>(value)``
    calls (token ids, head sizes, ...). Matrices are quantized to ``quant`` when given."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(config.num_hidden_layers)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_rope_freq_base(rope_theta)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_vocab_size(config.vocab_size)
    for key, value in metadata.items():
        getattr(w, f"add_{key}")(value)
    for name, arr in tensors:
        if quant is not None and arr.ndim == 2:
            w.add_tensor(tensor_name(name, layer), gguf.quants.quantize(arr, quant), raw_dtype=quant)
        else:
            w.add_tensor(tensor_name(name, layer), arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
