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

import math
from typing import Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from mvjax.config import ModelConfig, PositionalConfig, RopeScaling

Array = jnp.ndarray


# ------------------------------------------------------------------------------------------ RoPE
def rope_frequencies(rotary_dims: int, theta: float,
                     scaling: RopeScaling | None = None) -> np.ndarray:
    """Angular frequency (radians per token) of each of the rotary_dims/2 pairs, after scaling."""
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


def dim_to_frequency(config: ModelConfig, layer: int = 0) -> list[float | None]:
    """Angular frequency (rad/token) of every head dim at ``layer``; None where the dim does not
    rotate (non-RoPE layers, the pass-through part of partial rotary). ``np.array(.., float)``
    turns None into NaN for sorting; wavelength = 2π / frequency."""
    pos = config.layer_positional(layer)
    rot = pos.rotary_dims(config.head_dim)
    if rot == 0:
        return [None] * config.head_dim
    freq = rope_frequencies(rot, pos.theta, pos.scaling)
    return [None if i is None else float(freq[i])
            for i in pair_index(config.head_dim, rot, pos.layout)]


def dim_to_wavelength(config: ModelConfig, layer: int = 0) -> list[float | None]:
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
class Scheme(Protocol):
    """What attention needs from a positional scheme."""

    def rotate(self, x_BxTxHxD: Array, positions_BxT: Array) -> Array:
        """Transform q or k (identity for additive / absent schemes)."""

    def bias(self, q_positions_BxT: Array, k_positions_BxS: Array) -> Array | None:
        """Additive attention-logit bias B×H×T×S, or None."""


class _SchemeBase:
    """Schemes compare and hash by their inputs, so two models with equal configs share one
    compiled function (jit caches on the static module structure, which holds the scheme)."""

    def __init__(self, pos: PositionalConfig, head_dim: int, num_heads: int):
        self._key = (pos, head_dim, num_heads)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._key == other._key

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key))


class RoPE(_SchemeBase):
    def __init__(self, pos: PositionalConfig, head_dim: int, num_heads: int):
        super().__init__(pos, head_dim, num_heads)
        self.inv_freq = rope_frequencies(pos.rotary_dims(head_dim), pos.theta, pos.scaling)
        self.layout = pos.layout

    def rotate(self, x_BxTxHxD, positions_BxT):
        return apply_rope(x_BxTxHxD, positions_BxT, self.inv_freq, self.layout)

    def bias(self, q_positions_BxT, k_positions_BxS):
        return None


class ALiBi(_SchemeBase):
    def __init__(self, pos: PositionalConfig, head_dim: int, num_heads: int):
        super().__init__(pos, head_dim, num_heads)
        self.slopes = alibi_slopes(num_heads)

    def rotate(self, x_BxTxHxD, positions_BxT):
        return x_BxTxHxD

    def bias(self, q_positions_BxT, k_positions_BxS):
        return alibi_bias(self.slopes, q_positions_BxT, k_positions_BxS)


class NoPE(_SchemeBase):
    """Position enters only through the causal mask."""

    def rotate(self, x_BxTxHxD, positions_BxT):
        return x_BxTxHxD

    def bias(self, q_positions_BxT, k_positions_BxS):
        return None


SCHEME_REGISTRY: dict[str, Callable[[PositionalConfig, int, int], Scheme]] = {
    "rope": RoPE, "alibi": ALiBi, "nope": NoPE,
}


def build_scheme(pos: PositionalConfig, head_dim: int, num_heads: int) -> Scheme:
    """The scheme object for one layer; new schemes register in ``SCHEME_REGISTRY``."""
    try:
        factory = SCHEME_REGISTRY[pos.scheme]
    except KeyError:
        raise ValueError(f"positional.scheme={pos.scheme!r} is unknown: register it in "
                         f"SCHEME_REGISTRY or use one of {sorted(SCHEME_REGISTRY)}") from None
    return factory(pos, head_dim, num_heads)
