"""Weights from elsewhere: HF LLaMA safetensors (import and export) and GGUF (import).

Both importers produce the same thing — an ``HF-named tensor dict`` in the HF ``half`` pair layout —
and hand it to one builder (``hf.model_from_hf_tensors``), so the name map, the transposes and the
shape checks live in exactly one place.
"""

from mvjax.convert.gguf import load_gguf
from mvjax.convert.hf import hf_to_model_config, load_hf, model_config_to_hf, save_hf

__all__ = ["load_hf", "save_hf", "load_gguf", "hf_to_model_config", "model_config_to_hf"]
