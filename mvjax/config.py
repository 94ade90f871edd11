"""Model configuration: frozen dataclasses that validate themselves and round-trip through YAML/JSON.

Why frozen dataclasses: a config is the identity of an experiment. It must be hashable (jit static
arguments), comparable (refuse to resume a checkpoint with a different model) and serializable
(recorded beside every result). Validation raises one-line ``ValueError``s naming the field and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import yaml

from mvjax.positional import scheme_class

LAYOUTS = ("half", "interleaved")
SCALING_TYPES = ("linear", "llama3")
DTYPES = ("float32", "bfloat16")
ACTIVATIONS = ("silu", "gelu_tanh")  # the MLP's gate: SwiGLU (LLaMA) or GeGLU with tanh GELU (Gemma)


def invalid(field: str, value: Any, fix: str) -> None:
    """Raise the one-line error every config uses: the field, its value, and the fix."""
    raise ValueError(f"{field}={value!r} is invalid: {fix}")


def _is_num(x: Any) -> bool:
    """A real number (bools and numeric-looking strings are not)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _optional(default: Any) -> Any:
    """A field left out of serialized configs while it holds ``default``."""
    return dataclasses.field(default=default, metadata={"optional": True})


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-5`` / ``5e5`` as floats (YAML 1.1 reads them as strings)."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling as in HF ``rope_scaling`` (``linear`` or Llama 3.x ``llama3``)."""

    type: str = "llama3"
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self) -> None:
        if self.type not in SCALING_TYPES:
            invalid("rope_scaling.type", self.type, f"use one of {SCALING_TYPES}")
        if not _is_num(self.factor) or not self.factor > 0:
            invalid("rope_scaling.factor", self.factor, "use a positive factor")
        if self.type == "llama3":
            if not (_is_num(self.low_freq_factor) and _is_num(self.high_freq_factor)
                    and 0 < self.low_freq_factor < self.high_freq_factor):
                invalid("rope_scaling.low_freq_factor", self.low_freq_factor,
                      "need 0 < low_freq_factor < high_freq_factor")
            if (not _is_int(self.original_max_position_embeddings)
                    or self.original_max_position_embeddings <= 0):
                invalid("rope_scaling.original_max_position_embeddings",
                      self.original_max_position_embeddings, "use a positive context length")


@dataclasses.dataclass(frozen=True)
class PositionalConfig:
    """How one attention layer encodes position.

    scheme: a name in ``mvjax.positional.SCHEME_REGISTRY`` (built in: ``rope``, ``alibi``, ``nope``).
      The rotary fields below are read by rotary schemes only.
    layout: RoPE pair layout — ``half`` (HF/NeoX: dim i pairs with i + R/2) or ``interleaved``
      (Meta/GGUF/GPT-J: 2i pairs with 2i+1), where R is the number of rotated dims.
    rotary_fraction: share of each head's dims that rotate (the first R = fraction·D, rounded down
      to even); the rest pass through unchanged (partial rotary, as in GPT-NeoX).
    options: the scheme's own settings (a mapping, built into the scheme's ``Options`` dataclass);
      omitted for schemes without any.
    """

    scheme: str = "rope"
    theta: float = 10000.0
    layout: str = "half"
    rotary_fraction: float = 1.0
    scaling: RopeScaling | None = None
    options: Any = dataclasses.field(default=None, metadata={"omit_none": True})

    def __post_init__(self) -> None:
        if self.scaling is not None:
            object.__setattr__(self, "scaling", from_mapping(RopeScaling, self.scaling, "rope_scaling"))
        cls = scheme_class(self.scheme)
        if cls.Options is not None:
            object.__setattr__(self, "options", from_mapping(cls.Options, self.options or {},
                                                             "positional.options"))
        elif self.options:
            invalid("positional.options", self.options, f"scheme {self.scheme!r} takes no options; "
                    "remove them")
        else:
            object.__setattr__(self, "options", None)
        if self.layout not in LAYOUTS:
            invalid("positional.layout", self.layout, f"use one of {LAYOUTS}")
        if not _is_num(self.theta) or not self.theta > 0:
            invalid("positional.theta", self.theta, "RoPE base must be positive, e.g. 10000.0")
        if not _is_num(self.rotary_fraction) or not 0 < self.rotary_fraction <= 1:
            invalid("positional.rotary_fraction", self.rotary_fraction, "must lie in (0, 1]")

    def rotary_dims(self, head_dim: int) -> int:
        """Number of dims that rotate (even); 0 for non-rotary schemes."""
        return scheme_class(self.scheme).rotary_dims(self, head_dim)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A LLaMA-style decoder. ``positional`` is one ``PositionalConfig`` for all layers, or a tuple
    with one entry per layer (mixed models, e.g. NoPE every 4th layer).

    The fields after ``positional`` describe Gemma-style blocks; their defaults are LLaMA, and a
    field at its default is left out of the serialized config (configs written before they
    existed read back unchanged):
      sliding_window: keys a query may see, itself included (None: all earlier tokens); one int
        for every layer or a tuple with one entry (int or None) per layer.
      qk_norm: RMSNorm over each q and k head before the positional transform.
      norm_weight_offset: RMSNorm scales by ``offset + w`` (Gemma stores w around 0: offset 1).
      post_norms: RMSNorm also on the attention and MLP outputs, before each residual add.
      mlp_activation: ``silu`` (SwiGLU) or ``gelu_tanh`` (GeGLU with tanh-approximated GELU).
      scale_embeddings: multiply the input embeddings by sqrt(hidden_size).
      query_pre_attn_scalar: attention logits scaled by this ** -0.5 (None: head_dim ** -0.5).
    ``qkv_bias`` (Qwen2) adds a learned bias to the q, k and v projections (not to o); it is
    serialized only when on, like the Gemma fields.
    """

    vocab_size: int = 256
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None  # None: = num_heads (MHA); 1: MQA; else GQA
    head_dim: int | None = None  # None: hidden_size // num_heads
    mlp_hidden: int = 688
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    dtype: str = "float32"  # compute dtype; parameters are always float32
    max_seq_len: int = 2048
    init_std: float = 0.02
    bos_id: int | None = None
    eos_id: int | None = None
    positional: PositionalConfig | tuple[PositionalConfig, ...] = PositionalConfig()
    sliding_window: int | tuple[int | None, ...] | None = _optional(None)
    qk_norm: bool = _optional(False)
    norm_weight_offset: float = _optional(0.0)
    post_norms: bool = _optional(False)
    mlp_activation: str = _optional("silu")
    scale_embeddings: bool = _optional(False)
    query_pre_attn_scalar: float | None = _optional(None)
    qkv_bias: bool = _optional(False)

    def __post_init__(self) -> None:
        pos = self.positional
        if isinstance(pos, (list, tuple)):
            pos = tuple(from_mapping(PositionalConfig, p, "positional") for p in pos)
        else:
            pos = from_mapping(PositionalConfig, pos, "positional")
        object.__setattr__(self, "positional", pos)
        if self.num_kv_heads is None:
            object.__setattr__(self, "num_kv_heads", self.num_heads)
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                     "mlp_hidden", "max_seq_len"):
            if not _is_int(getattr(self, name)) or getattr(self, name) <= 0:
                invalid(name, getattr(self, name), "must be a positive integer")
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                invalid("num_heads", self.num_heads,
                      f"must divide hidden_size={self.hidden_size} (or set head_dim explicitly)")
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if not _is_int(self.head_dim) or self.head_dim <= 0:
            invalid("head_dim", self.head_dim, "must be a positive integer")
        if self.num_heads % self.num_kv_heads:
            invalid("num_kv_heads", self.num_kv_heads, f"must divide num_heads={self.num_heads}")
        if self.dtype not in DTYPES:
            invalid("dtype", self.dtype, f"use one of {DTYPES}")
        if not _is_num(self.norm_eps) or not self.norm_eps > 0:
            invalid("norm_eps", self.norm_eps, "must be positive, e.g. 1e-5")
        if isinstance(pos, tuple):
            if len(pos) != self.num_layers:
                invalid("positional", f"<{len(pos)} entries>",
                      f"give one entry per layer (num_layers={self.num_layers}) or a single mapping")
            layer_pos = pos
        else:
            layer_pos = (pos,)
        for p in layer_pos:
            if scheme_class(p.scheme).rotary and p.rotary_dims(self.head_dim) == 0:
                invalid("positional.rotary_fraction", p.rotary_fraction,
                      f"rotates no dims at head_dim={self.head_dim}; raise it")
        for name in ("bos_id", "eos_id"):
            v = getattr(self, name)
            if v is not None and not (_is_int(v) and 0 <= v < self.vocab_size):
                invalid(name, v, f"must lie in [0, vocab_size={self.vocab_size})")
        self._check_gemma_fields()

    def _check_gemma_fields(self) -> None:
        win = self.sliding_window
        if isinstance(win, (list, tuple)):
            win = tuple(win)
            object.__setattr__(self, "sliding_window", win)
            if len(win) != self.num_layers:
                invalid("sliding_window", f"<{len(win)} entries>",
                        f"give one entry per layer (num_layers={self.num_layers}), or one int")
        for w in win if isinstance(win, tuple) else (win,):
            if w is not None and (not _is_int(w) or w < 1):
                invalid("sliding_window", w, "use a positive number of keys, or null for full attention")
        for name in ("qk_norm", "post_norms", "scale_embeddings", "qkv_bias"):
            if not isinstance(getattr(self, name), bool):
                invalid(name, getattr(self, name), "use true or false")
        if not _is_num(self.norm_weight_offset):
            invalid("norm_weight_offset", self.norm_weight_offset, "use 0.0 (LLaMA) or 1.0 (Gemma)")
        if self.mlp_activation not in ACTIVATIONS:
            invalid("mlp_activation", self.mlp_activation, f"use one of {ACTIVATIONS}")
        q = self.query_pre_attn_scalar
        if q is not None and (not _is_num(q) or not q > 0):
            invalid("query_pre_attn_scalar", q, "use a positive number, or null for head_dim")

    # ----------------------------------------------------------------- derived
    def layer_positional(self, layer: int) -> PositionalConfig:
        pos = self.positional
        return pos[layer] if isinstance(pos, tuple) else pos

    def layer_window(self, layer: int) -> int | None:
        """Keys a query of ``layer`` may see, itself included (None: every earlier token)."""
        win = self.sliding_window
        return win[layer] if isinstance(win, tuple) else win

    @property
    def attn_scale(self) -> float:
        """The factor on q·k logits."""
        return float(self.query_pre_attn_scalar or self.head_dim) ** -0.5

    @property
    def q_per_kv(self) -> int:
        return self.num_heads // self.num_kv_heads

    def num_params(self) -> int:
        """Parameter count (embeddings included)."""
        d, h, kv, hd = self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim
        attn = d * hd * (h + 2 * kv) + h * hd * d + (hd * (h + 2 * kv) if self.qkv_bias else 0)
        mlp = 3 * d * self.mlp_hidden
        block = attn + mlp + (4 if self.post_norms else 2) * d + (2 * hd if self.qk_norm else 0)
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return self.vocab_size * d + self.num_layers * block + d + head

    # ----------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        return from_mapping(cls, data, "model")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_text(cls, text: str) -> "ModelConfig":
        """Parse JSON or YAML; a file holding a whole experiment contributes its ``model`` part."""
        data = parse_text(text, "model config")
        if not isinstance(data, dict):
            raise ValueError("model config must be a mapping of field: value; got "
                             f"{type(data).__name__}")
        return cls.from_dict(data.get("model", data))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.write_text(self.to_json() if path.suffix == ".json" else self.to_yaml())

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model config {path} does not exist: pass a .yaml/.json config "
                                    "or a model directory")
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not a text config (.yaml/.json): pass a config file, a "
                             "model directory, or a .gguf file to `mvjax info`") from None
        return cls.from_text(text)

    def diff(self, other: "ModelConfig") -> dict[str, tuple[Any, Any]]:
        """Fields that differ, as {field: (self, other)} — used to refuse mismatched restores."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _load(text: str) -> Any:
    """JSON first, then YAML read with YAML 1.2 number rules (YAML 1.1 reads ``1e-05`` and
    ``3e-4`` as strings); raises ``yaml.YAMLError`` on text that is neither."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return yaml.load(text, Loader=_Yaml12Loader)


def parse_text(text: str, what: str) -> Any:
    """A config document (``_load``); malformed text is a one-line ValueError naming ``what``."""
    try:
        return _load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{what} is neither valid JSON nor YAML: "
                         + " ".join(str(e).split())) from None


def parse_value(text: str) -> Any:
    """One ``key=value`` override's value, read like a config document (``_load``); a string that
    Python reads as a number (``inf``) becomes a float; anything else stays the text itself."""
    try:
        value = _load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def to_plain(obj: Any) -> Any:
    """Dataclasses (nested) as plain dicts/lists, ready for JSON or YAML."""
    if dataclasses.is_dataclass(obj):  # fields marked omit_none / optional leave no trace while unset
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (f.metadata.get("omit_none") and getattr(obj, f.name) is None)
                and not (f.metadata.get("optional") and getattr(obj, f.name) == f.default)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(x) for x in obj]
    return obj


def from_mapping(cls: type, data: Any, where: str) -> Any:
    """Build a dataclass from a mapping, refusing unknown fields by name."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping of field: value; got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; known fields are {sorted(names)}")
    return cls(**data)
