"""The one resolver from "what the user typed" to a ready model: every command and analysis that takes
a model argument calls ``load_pretrained`` so all of them accept the same things.

Accepted, in the order tried:
  ``smollm2``              SmolLM2-135M-Instruct (Q4_1 GGUF, fetched once, converted model cached)
  an mvjax model dir       config.json + params/ (``mvjax.checkpoint.save_model``)
  an HF LLaMA dir          config.json + *.safetensors
  a ``.gguf`` file         LLaMA-architecture GGUF
"""

from __future__ import annotations

from pathlib import Path

NAMED = ("smollm2",)


def load_layerwise(path_or_name: str | Path):
    """(LayerWeights, Tokenizer | None) for the same arguments as ``load_pretrained``, for passes
    that run one layer at a time (``mvjax.probe.collect_stats``). Model directories (and the cached
    conversion of a named model) are read one layer at a time; HF dirs and GGUF files are loaded
    whole (convert them with ``mvjax convert`` to stream them)."""
    from mvjax.checkpoint import is_model_dir
    from mvjax.layerwise import CheckpointWeights, ModelWeights

    key = str(path_or_name)
    directory = Path(key).expanduser()
    if key.lower() in NAMED:
        from mvjax.convert.weights import smollm2_dir

        directory = smollm2_dir()  # converted once, then read from the cache
    if is_model_dir(directory):
        return CheckpointWeights(directory), _tokenizer_of(directory)
    model, tok = load_pretrained(path_or_name)
    return ModelWeights(model), tok


def load_pretrained(path_or_name: str | Path):
    """(Transformer, Tokenizer | None) for a named model, a model dir, an HF dir or a GGUF file."""
    from mvjax.checkpoint import is_model_dir, load_model

    key = str(path_or_name)
    if key.lower() in NAMED:
        from mvjax.convert.weights import load_smollm2

        return load_smollm2()
    path = Path(key).expanduser()
    if is_model_dir(path):
        return load_model(path), _tokenizer_of(path)
    if path.is_dir() and (path / "config.json").is_file():
        from mvjax.convert.hf import load_hf

        return load_hf(path)
    if path.is_file() and path.suffix == ".gguf":
        from mvjax.convert.gguf import load_gguf

        return load_gguf(path)
    raise FileNotFoundError(
        f"cannot load model {key!r}: expected one of {list(NAMED)}, an mvjax model directory "
        "(config.json + params/), an HF LLaMA directory (config.json + *.safetensors) or a .gguf file")


def _tokenizer_of(directory: Path):
    """The tokenizer saved in a model directory, or None."""
    from mvjax.tokenizers import load_tokenizer

    try:
        return load_tokenizer(directory)
    except FileNotFoundError:
        return None
