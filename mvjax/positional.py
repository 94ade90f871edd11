"""Positional encodings as pure functions, and the registry the model uses to pick one per layer.

Shapes are in the names: ``x_BxTxHxD`` is batch × tokens × heads × head_dim. Positions are always
explicit integer arrays, so a KV-cache decode step, a shifted window and a packed batch all use the
same code. Frequencies are computed in float64 NumPy (they are constants), rotation in float32.

Pair layouts for the R rotated dims of a head (R = rotary_dims ≤ head_dim):
- ``half`` (HF / GPT-NeoX rotate-half): dim i pairs with i + R/2, pair index i mod R/2.
- ``interleaved`` (Meta / GPT-J / GGUF): dim 2i pairs with 2i+1, pair index ⌊d/2⌋.
Pair i rotates at θ_i = base^(−2i/R): **high i = low frequency**, the band where massive values live.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp
import numpy as np

Array = jnp.ndarray


class Positional(Protocol):
    """What a scheme reads of one layer's ``mvjax.config.PositionalConfig``. Named here rather than
    imported: the config imports this module (to validate scheme names), never the reverse."""

    scheme: str
    theta: float
    layout: str
    rotary_fraction: float
    scaling: Any  # a mvjax.config.RopeScaling or None
    options: Any  # the scheme's own Options, or None


class LayeredConfig(Protocol):
    """What the frequency maps read of a ``mvjax.config.ModelConfig``."""

    head_dim: int

    def layer_positional(self, layer: int) -> Positional: ...


# ------------------------------------------------------------------------------------------ RoPE
def rope_frequencies(rotary_dims: int, theta: float, scaling: Any = None) -> np.ndarray:
    """Angular frequency (radians per token) of each of the rotary_dims/2 pairs, after
    ``scaling`` (a ``mvjax.config.RopeScaling``, or None)."""
    inv_freq = 1.0 / theta ** (np.arange(0, rotary_dims, 2, dtype=np.float64) / rotary_dims)
    if scaling is None:
        return inv_freq
    if scaling.type == "linear":
        return inv_freq / scaling.factor
    # llama3: long wavelengths slowed by `factor`, short ones kept, a smooth ramp between.
    old_ctx = scaling.original_max_position_embeddings
    wavelen = 2 * math.pi / inv_freq
    low_wl, high_wl = old_ctx / scaling.low_freq_factor, old_ctx / scaling.high_freq_factor
    smooth = (old_ctx / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor)
    smoothed = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
    out = np.where(wavelen > low_wl, inv_freq / scaling.factor, inv_freq)
    medium = (wavelen >= high_wl) & (wavelen <= low_wl)
    return np.where(medium, smoothed, out)


def apply_rope(x_BxTxHxD: Array, positions_BxT: Array, inv_freq: np.ndarray,
               layout: str = "half") -> Array:
    """Rotate the first 2·len(inv_freq) dims of every head by position; the rest pass through."""
    rot = 2 * len(inv_freq)
    angle_BxTxP = positions_BxT.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)
    # The barrier materializes the B×T×P tables once: left to itself XLA fuses cos/sin into every
    # consumer and evaluates them per element of B×T×H×D, in the backward too (107 cosines in the
    # cpu-512 benchmark's step, ~10% of its time).
    cos, sin = jax.lax.optimization_barrier((jnp.cos(angle_BxTxP), jnp.sin(angle_BxTxP)))
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    xr = x_BxTxHxD[..., :rot].astype(jnp.float32)
    if layout == "half":
        x1, x2 = xr[..., : rot // 2], xr[..., rot // 2:]
        out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    elif layout == "interleaved":
        x1, x2 = xr[..., 0::2], xr[..., 1::2]
        out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(xr.shape)
    else:
        raise ValueError(f"layout={layout!r} is invalid: use 'half' or 'interleaved'")
    out = out.astype(x_BxTxHxD.dtype)
    if rot == x_BxTxHxD.shape[-1]:
        return out
    return jnp.concatenate([out, x_BxTxHxD[..., rot:]], axis=-1)


def pair_index(head_dim: int, rotary_dims: int, layout: str) -> list[int | None]:
    """For every head dim, the index of the RoPE pair it belongs to (None if it does not rotate)."""
    half = rotary_dims // 2
    if layout == "half":
        return [d % half if d < rotary_dims else None for d in range(head_dim)]
    return [d // 2 if d < rotary_dims else None for d in range(head_dim)]


def dim_to_frequency(config: LayeredConfig, layer: int = 0) -> list[float | None]:
    """Angular frequency (rad/token) of every head dim at ``layer``; None where the dim does not
    rotate (non-rotary layers, the pass-through part of partial rotary) — the layer's scheme's own
    map. ``np.array(.., float)`` turns None into NaN for sorting; wavelength = 2π / frequency."""
    pos = config.layer_positional(layer)
    return scheme_class(pos.scheme).dim_frequencies(pos, config.head_dim)


def dim_to_wavelength(config: LayeredConfig, layer: int = 0) -> list[float | None]:
    """Tokens per full turn of every head dim (None where it does not rotate)."""
    return [None if f is None else 2 * math.pi / f for f in dim_to_frequency(config, layer)]


# ----------------------------------------------------------------------------------------- ALiBi
def alibi_slopes(num_heads: int) -> np.ndarray:
    """Head slopes from the ALiBi paper: geometric 2^(−8/n)…; for non-powers of two, the slopes of
    the nearest lower power of two followed by every other slope of the next power of two."""
    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        return np.array(power_of_two(num_heads))
    low = 2 ** math.floor(math.log2(num_heads))
    return np.array(power_of_two(low) + power_of_two(2 * low)[0::2][: num_heads - low])


def alibi_bias(slopes: np.ndarray, q_positions_BxT: Array, k_positions_BxS: Array) -> Array:
    """Additive logit bias slope_h · (j − i) for query position i, key position j: B×H×T×S."""
    rel_BxTxS = (k_positions_BxS[:, None, :] - q_positions_BxT[:, :, None]).astype(jnp.float32)
    return jnp.asarray(slopes, jnp.float32)[None, :, None, None] * rel_BxTxS[:, None]


# -------------------------------------------------------------------------------------- registry
class Scheme:
    """One layer's positional scheme: what attention asks of it, and what analysis asks about it.

    A scheme is one class registered with ``@register_scheme``; the config validates
    ``positional.scheme`` against this registry, so a new scheme is one file (see
    ``tests/test_scheme_plugin.py`` for xPos, whose q and k transforms differ, and a bias with learned
    parameters). What a scheme may own:

    - ``Options``: a frozen dataclass of its own settings, given as ``positional.options`` (the
      config builds and validates it; ``None`` means the scheme takes none).
    - ``rotary = True``: it reads the rotary fields of ``PositionalConfig`` (theta, layout,
      rotary_fraction, scaling) and labels dims with RoPE pairs and frequencies — analysis reads its
      frequency map through ``dim_frequencies``.
    - ``rotate_q`` / ``rotate_k``: transforms of the queries and keys (the ``q_rot`` / ``k_rot``
      sites); the same by default.
    - ``bias``: an additive B×H×T×S logit bias, or None.
    - ``learned = True``: a scheme that is also an ``nnx.Module`` holding ``nnx.Param``s (e.g. a
      FIRE-style learned bias). Its bias is traced, so attention takes the dense path, whose
      gradient reaches the parameters (the memory-light causal kernel treats the bias as a constant).

    Static schemes compare and hash by their inputs, so two models with equal configs share one
    compiled function (jit caches on the static module structure, which holds the scheme).
    """

    name: ClassVar[str] = ""
    rotary: ClassVar[bool] = False
    learned: ClassVar[bool] = False
    Options: ClassVar[type | None] = None

    def __init__(self, pos: Positional, head_dim: int, num_heads: int):
        self.pos, self.head_dim, self.num_heads = pos, head_dim, num_heads
        self._key = (pos, head_dim, num_heads)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._key == other._key

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key))

    # ------------------------------------------------------------- what analysis asks
    @classmethod
    def rotary_dims(cls, pos: Positional, head_dim: int) -> int:
        """Number of each head's dims that rotate (even; the first ones); 0 for non-rotary."""
        return int(head_dim * pos.rotary_fraction) // 2 * 2 if cls.rotary else 0

    @classmethod
    def dim_pairs(cls, pos: Positional, head_dim: int) -> list[int | None]:
        """For every head dim, the rotation pair it belongs to (None if it does not rotate)."""
        return pair_index(head_dim, cls.rotary_dims(pos, head_dim), pos.layout)

    @classmethod
    def dim_frequencies(cls, pos: Positional, head_dim: int) -> list[float | None]:
        """Angular frequency (rad/token) of every head dim; None where it does not rotate."""
        rot = cls.rotary_dims(pos, head_dim)
        if rot == 0:
            return [None] * head_dim
        freq = rope_frequencies(rot, pos.theta, pos.scaling)
        return [None if i is None else float(freq[i]) for i in cls.dim_pairs(pos, head_dim)]

    # ------------------------------------------------------------- what attention asks
    def rotate_q(self, x_BxTxHxD: Array, positions_BxT: Array) -> Array:
        """The queries' positional transform (identity unless overridden)."""
        return self.rotate(x_BxTxHxD, positions_BxT)

    def rotate_k(self, x_BxTxKxD: Array, positions_BxT: Array) -> Array:
        """The keys' positional transform (the queries' unless overridden)."""
        return self.rotate(x_BxTxKxD, positions_BxT)

    def rotate(self, x_BxTxHxD: Array, positions_BxT: Array) -> Array:
        """The transform shared by q and k, for schemes that treat them alike."""
        return x_BxTxHxD

    def bias(self, q_positions_BxT: Array, k_positions_BxS: Array) -> Array | None:
        """Additive attention-logit bias B×H×T×S, or None."""
        return None


SCHEME_REGISTRY: dict[str, type[Scheme]] = {}


def register_scheme(cls: type[Scheme]) -> type[Scheme]:
    """Class decorator: make ``cls`` the scheme named ``cls.name`` (re-registering the same class,
    e.g. a re-imported test module, is allowed; another class under a taken name is not)."""
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__} has no name: set `name = \"myscheme\"` on the class")
    opts = getattr(cls, "Options", None)
    if opts is not None and not (dataclasses.is_dataclass(opts) and opts.__dataclass_params__.frozen):
        raise ValueError(f"{cls.__name__}.Options must be a frozen dataclass (configs are hashed "
                         "and compared): decorate it with @dataclasses.dataclass(frozen=True)")
    old = SCHEME_REGISTRY.get(name)
    if old is not None and old.__qualname__ != cls.__qualname__:
        raise ValueError(f"positional scheme {name!r} is already registered ({old.__qualname__}): "
                         "choose another name")
    SCHEME_REGISTRY[name] = cls
    return cls


def scheme_class(name: str) -> type[Scheme]:
    """The registered class of scheme ``name``; an unknown name is a one-line error."""
    try:
        return SCHEME_REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"positional.scheme={name!r} is invalid: use one of {sorted(SCHEME_REGISTRY)} "
                         "or register a new one with mvjax.positional.register_scheme") from None


def build_scheme(pos: Positional, head_dim: int, num_heads: int, rngs=None) -> Scheme:
    """The scheme object for one layer (a learned scheme draws its initial parameters from the
    model's ``nnx.Rngs``)."""
    cls = scheme_class(pos.scheme)
    if cls.learned:
        if rngs is None:
            raise ValueError(f"positional.scheme={pos.scheme!r} has learned parameters: build it "
                             "inside a model (pass rngs)")
        return cls(pos, head_dim, num_heads, rngs=rngs)
    return cls(pos, head_dim, num_heads)


@register_scheme
class RoPE(Scheme):
    """Rotary position embedding: q and k rotate alike, so their dot product sees only i − j."""

    name, rotary = "rope", True

    def __init__(self, pos: Positional, head_dim: int, num_heads: int):
        super().__init__(pos, head_dim, num_heads)
        self.inv_freq = rope_frequencies(self.rotary_dims(pos, head_dim), pos.theta, pos.scaling)

    def rotate(self, x_BxTxHxD, positions_BxT):
        return apply_rope(x_BxTxHxD, positions_BxT, self.inv_freq, self.pos.layout)


@register_scheme
class ALiBi(Scheme):
    """A per-head linear distance penalty on the logits; q and k untouched."""

    name = "alibi"

    def __init__(self, pos: Positional, head_dim: int, num_heads: int):
        super().__init__(pos, head_dim, num_heads)
        self.slopes = alibi_slopes(num_heads)

    def bias(self, q_positions_BxT, k_positions_BxS):
        return alibi_bias(self.slopes, q_positions_BxT, k_positions_BxS)


@register_scheme
class NoPE(Scheme):
    """Position enters only through the causal mask."""

    name = "nope"
