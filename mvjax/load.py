"""The one resolver from "what the user typed" to a ready model: every command and analysis that takes
a model argument calls ``load_pretrained`` so all of them accept the same things.

Accepted, in the order tried:
  ``smollm2``              SmolLM2-135M-Instruct (Q4_1 GGUF, fetched once, converted model cached)
  ``gemma3``               Gemma 3 270M base (Q4_K_M GGUF, fetched once, converted model cached)
  ``qwen2.5-coder-0.5b``   Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, sha256 checked on every use)
  ``qwen2.5-coder-1.5b``   Qwen2.5-Coder-1.5B-Instruct (likewise)
  an mvjax model dir       config.json + params/ (``mvjax.checkpoint.save_model``)
  an HF dir                config.json + *.safetensors (LLaMA, Gemma 3 text, Qwen2)
  a ``.gguf`` file         LLaMA-, Qwen2- or Gemma 3-architecture GGUF
"""

from __future__ import annotations

from pathlib import Path

from mvjax.convert.gguf import load_gguf
from mvjax.convert.hf import load_hf
from mvjax.convert.weights import load_named, named_dir
from mvjax.tokenizers import load_tokenizer

NAMED = ("smollm2", "gemma3", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
KINDS = ("named", "mvjax", "hf", "gguf")


def detect_kind(path_or_name: str | Path) -> str:
    """Which of ``KINDS`` a model argument is, in the order the module docstring lists."""
    from mvjax.checkpoint import is_model_dir  # local: orbax, flax; `mvjax --help` imports this module

    key = str(path_or_name)
    path = Path(key).expanduser()
    if key.lower() in NAMED:
        return "named"
    if is_model_dir(path):
        return "mvjax"
    if path.is_dir() and (path / "config.json").is_file():
        return "hf"
    if path.is_file() and path.suffix == ".gguf":
        return "gguf"
    raise FileNotFoundError(
        f"cannot load model {key!r}: expected one of {list(NAMED)}, an mvjax model directory "
        "(config.json + params/), an HF LLaMA directory (config.json + *.safetensors) or a .gguf file")


def load_layerwise(path_or_name: str | Path):
    """(LayerWeights, Tokenizer | None) for the same arguments as ``load_pretrained``, for passes
    that run one layer at a time (``mvjax.probe.collect_stats``). Model directories (and the cached
    conversion of a named model) are read one layer at a time; HF dirs and GGUF files are loaded
    whole (convert them with ``mvjax convert`` to stream them)."""
    from mvjax.layerwise import CheckpointWeights, ModelWeights  # local: flax; `mvjax --help` imports us

    kind = detect_kind(path_or_name)
    if kind in ("named", "mvjax"):
        key = str(path_or_name)
        directory = named_dir(key.lower()) if kind == "named" else Path(key).expanduser()
        return CheckpointWeights(directory), _tokenizer_of(directory)
    model, tok = load_pretrained(path_or_name, kind=kind)
    return ModelWeights(model), tok


def load_pretrained(path_or_name: str | Path, kind: str = "auto", layout: str = "half"):
    """(Transformer, Tokenizer | None) for a named model, a model dir, an HF dir or a GGUF file.
    ``kind`` (one of ``KINDS``) skips detection; ``layout`` is the RoPE pair layout a GGUF's q/k
    are imported in (``mvjax.convert.gguf``)."""
    if kind not in ("auto", *KINDS):
        raise ValueError(f"kind={kind!r} is invalid: use auto or one of {list(KINDS)}")
    kind = detect_kind(path_or_name) if kind == "auto" else kind
    key = str(path_or_name)
    path = Path(key).expanduser()
    if kind == "named":
        if key.lower() not in NAMED:
            raise FileNotFoundError(f"{key!r} is not a named model: use one of {list(NAMED)}")
        return load_named(key.lower())
    if kind == "mvjax":
        from mvjax.checkpoint import load_model  # local: orbax, flax; `mvjax --help` imports this module

        return load_model(path), _tokenizer_of(path)
    if kind == "hf":
        return load_hf(path)
    return load_gguf(path, layout=layout)


def _tokenizer_of(directory: Path):
    """The tokenizer saved in a model directory, or None."""
    try:
        return load_tokenizer(directory)
    except FileNotFoundError:
        return None
