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


def load_pretrained(path_or_name: str | Path):
    """(Transformer, Tokenizer | None) for a named model, a model dir, an HF dir or a GGUF file."""
    from mvjax.checkpoint import is_model_dir, load_model
    from mvjax.tokenizers import load_tokenizer

    key = str(path_or_name)
    if key.lower() in NAMED:
        from mvjax.convert.weights import load_smollm2

        return load_smollm2()
    path = Path(key).expanduser()
    if is_model_dir(path):
        model = load_model(path)
        try:
            tok = load_tokenizer(path)
        except FileNotFoundError:
            tok = None
        return model, tok
    if path.is_dir() and (path / "config.json").is_file():
        from mvjax.convert.hf import load_hf

        return load_hf(path)
    if path.is_file() and path.suffix == ".gguf":
        from mvjax.convert.gguf import load_gguf

        return load_gguf(path)
    raise FileNotFoundError(
        f"cannot load model {key!r}: expected one of {list(NAMED)}, an mvjax model directory "
        "(config.json + params/), an HF LLaMA directory (config.json + *.safetensors) or a .gguf file")
