"""Interventions: probes that edit chosen (layer, site, head, dim) entries of Q/K inside the jitted
forward — mean replacement (the paper's disruption), zeroing, and fake quantization.

An ``Intervention`` is frozen data: per edited site an L×H×D boolean mask of the entries it touches
(H = query heads at ``q``/``q_rot``, KV heads at ``k``/``k_rot``), the method, and the phase rule.
It is a JAX pytree whose masks (and ``keep_first``) are leaves, so a compiled forward can take
another intervention of the same kind without recompiling (every control of the disruption
experiment shares one compilation); it also hashes by content, so it can be a static argument
(``mvjax.generate``).

What the edits do, per batch row ("the prompt" = the valid tokens of the prefill pass):
  ``mean``   entry ← its mean over the prompt's tokens (position 0 included, as in the paper)
  ``zero``   entry ← 0
  ``quant``  entry ← symmetric round-to-nearest at ``QuantSpec.bits``; the scale is the absmax over
             the *edited* entries of a group (per ``tensor`` = the row's whole site tensor, per
             ``token`` = one head's D-vector of one token, per ``channel`` = one (head, dim) over the
             prompt's tokens); entries outside the mask stay in full precision and do not widen
             the scale — this is how massive dims are "kept in full precision".
``keep_first``: position 0 (the first real token, the attention sink) is never edited.

KV-cache rule — an entry is edited once, when its key is written. The prefill pass edits the
prompt's q/k before the keys enter the cache; cached keys are never edited again. Tokens after the
prompt (phase ``"decode"``, and the continuation tokens the experiments score) are edited only when
``phases="all"``: then each new token's entries get the *prompt's* statistics (its mean for
``mean``, its scale for per-tensor / per-channel ``quant``; per-token ``quant`` needs none), handed
from prefill to decode as ``SiteContext.state``. ``phases="prefill"`` (default; the authors' code)
leaves later tokens untouched.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mvjax.config import ModelConfig
from mvjax.model import SiteContext
from mvjax.probe import first_token_mass
from mvjax.sites import QK_SITES

EDIT_SITES = QK_SITES
METHODS = ("mean", "zero", "quant")
PHASE_RULES = ("prefill", "all")
GRANULARITIES = ("tensor", "token", "channel")
TRACED = "traced"  # the granularity is the leaf ``Intervention.gran``


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """Symmetric fake quantization: ``bits`` (2..16) and the group sharing one scale."""

    bits: int = 8
    granularity: str = "token"

    def __post_init__(self) -> None:
        if not (isinstance(self.bits, int) and 2 <= self.bits <= 16):
            raise ValueError(f"bits={self.bits!r} is invalid: use an integer in 2..16, e.g. 8 or 4")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity={self.granularity!r} is invalid: use one of {GRANULARITIES}")

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1


def site_heads(cfg: ModelConfig, site: str) -> int:
    """Heads an edit site has: query heads for q / q_rot, KV heads for k / k_rot."""
    check_site(site)
    return cfg.num_heads if site.startswith("q") else cfg.num_kv_heads


def check_site(site: str) -> None:
    if site not in EDIT_SITES:
        raise ValueError(f"unknown site {site!r}: interventions edit one of {list(EDIT_SITES)}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class Intervention:
    """Edit the entries named by ``masks`` ({site: L×H×D bool}); see the module docstring.

    sink: also observe the ``attn`` site and record, per layer, each head's attention mass on the
    first token (``mvjax.probe.first_token_mass``) — the attention-sink mass.
    """

    masks: Mapping[str, Any]
    keep_first: Any = False
    qmax: Any = 0.0  # largest quantization level, 2^(bits-1) - 1 (a leaf: bit widths share a compile)
    gran: Any = 0  # index into GRANULARITIES when granularity == "traced" (granularities share one too)
    method: str = dataclasses.field(default="mean", metadata=dict(static=True))
    phases: str = dataclasses.field(default="prefill", metadata=dict(static=True))
    granularity: str | None = dataclasses.field(default=None, metadata=dict(static=True))
    sink: bool = dataclasses.field(default=False, metadata=dict(static=True))

    def __post_init__(self) -> None:
        for site in self.masks:
            check_site(site)
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is invalid: use one of {METHODS}")
        if self.phases not in PHASE_RULES:
            raise ValueError(f"phases={self.phases!r} is invalid: use one of {PHASE_RULES}")
        if (self.method == "quant") != (self.granularity is not None):
            raise ValueError("give a QuantSpec exactly when method='quant'")
        if self.granularity not in (None, TRACED, *GRANULARITIES):
            raise ValueError(f"granularity={self.granularity!r} is invalid: use one of {GRANULARITIES}")

    @property
    def sites(self) -> frozenset[str]:
        return frozenset(self.masks) | ({"attn"} if self.sink else frozenset())

    def _key(self) -> tuple:
        masks = tuple((s, np.asarray(m, bool).shape, np.packbits(np.asarray(m, bool)).tobytes())
                      for s, m in sorted(self.masks.items()))
        return (masks, bool(np.asarray(self.keep_first)), float(np.asarray(self.qmax)),
                int(np.asarray(self.gran)), self.method, self.phases, self.granularity, self.sink)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Intervention) and self._key() == other._key()

    def __call__(self, site: str, layer: int, x: jax.Array, ctx: SiteContext) -> tuple[jax.Array, Any]:
        if site == "attn":
            return x, first_token_mass(x, ctx.valid_BxT)
        if ctx.phase == "decode" and self.phases == "prefill":
            return x, None  # keys already in the cache were edited when written; new tokens are not
        mask_HxD = jnp.asarray(self.masks[site][layer], bool)
        sel = edit_selection(mask_HxD, ctx.valid_BxT, ctx.positions_BxT, self.keep_first)
        state = None if ctx.phase == "prefill" else ctx.state[site][layer]
        if self.method == "zero":
            return jnp.where(sel, jnp.zeros((), x.dtype), x), None
        if self.method == "mean":
            mean = prompt_mean(x, ctx.valid_BxT) if state is None else state
            out = jnp.where(sel, mean[:, None].astype(x.dtype), x)
            return out, (mean if self.phases == "all" and state is None else None)
        if self.granularity == TRACED:
            out, scale = fake_quantize_traced(x, sel, self.gran, self.qmax, state)
        else:
            out, scale = fake_quantize(x, sel, self.granularity, self.qmax, state)
        return out, (scale if self.phases == "all" and state is None else None)


def edit_selection(mask_HxD: jax.Array, valid_BxT: jax.Array, positions_BxT: jax.Array,
                   keep_first: Any) -> jax.Array:
    """B×T×H×D bool: the entries an edit touches — named by the mask, on valid tokens, and not at
    position 0 when ``keep_first``."""
    tok_BxT = valid_BxT & ~(jnp.asarray(keep_first, bool) & (positions_BxT == 0))
    return mask_HxD[None, None] & tok_BxT[:, :, None, None]


def prompt_mean(x_BxTxHxD: jax.Array, valid_BxT: jax.Array) -> jax.Array:
    """B×H×D float32 mean over each row's valid tokens (0 for a row with none)."""
    w = valid_BxT[:, :, None, None]
    total = jnp.sum(jnp.where(w, x_BxTxHxD.astype(jnp.float32), 0.0), axis=1)
    return total / jnp.maximum(jnp.sum(valid_BxT, axis=1), 1)[:, None, None]


def fake_quantize(x_BxTxHxD: jax.Array, sel: jax.Array, granularity: str, qmax: Any,
                  scale: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Round the selected entries to the symmetric levels -qmax..qmax times a scale; returns
    (x', scale). The scale is the absmax of the selected entries of each group / qmax unless given
    (decode: the prompt's; per-token scales are always fresh)."""
    xf = x_BxTxHxD.astype(jnp.float32)
    qmax = jnp.asarray(qmax, jnp.float32)
    if scale is None or granularity == "token":
        a = jnp.where(sel, jnp.abs(xf), 0.0)
        axes = {"tensor": (1, 2, 3), "token": (3,), "channel": (1,)}[granularity]
        scale = jnp.max(a, axis=axes, keepdims=True) / qmax
    safe = jnp.where(scale > 0, scale, 1.0)
    q = jnp.clip(jnp.round(xf / safe), -qmax, qmax) * safe
    return jnp.where(sel & (scale > 0), q.astype(x_BxTxHxD.dtype), x_BxTxHxD), scale


def fake_quantize_traced(x_BxTxHxD: jax.Array, sel: jax.Array, gran: Any, qmax: Any,
                         scale_Bx1xHxD: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """``fake_quantize`` with the granularity a traced index into GRANULARITIES, so every
    granularity shares one compilation: the three scales are computed and one is picked. The
    returned (prompt) scale is B×1×H×D for every granularity (tensor and channel scales broadcast;
    per-token scales are always fresh), so the decode state has one shape."""
    xf = x_BxTxHxD.astype(jnp.float32)
    qmax = jnp.asarray(qmax, jnp.float32)
    a = jnp.where(sel, jnp.abs(xf), 0.0)
    shape = (x_BxTxHxD.shape[0], 1, *x_BxTxHxD.shape[2:])
    if scale_Bx1xHxD is None:
        per_tensor = jnp.broadcast_to(jnp.max(a, axis=(1, 2, 3), keepdims=True) / qmax, shape)
        per_channel = jnp.max(a, axis=1, keepdims=True) / qmax
        scale_Bx1xHxD = jnp.where(gran == 0, per_tensor, per_channel)
    per_token = jnp.max(a, axis=3, keepdims=True) / qmax
    scale = jnp.where(gran == 1, jnp.broadcast_to(per_token, x_BxTxHxD.shape),
                      jnp.broadcast_to(scale_Bx1xHxD, x_BxTxHxD.shape))
    safe = jnp.where(scale > 0, scale, 1.0)
    q = jnp.clip(jnp.round(xf / safe), -qmax, qmax) * safe
    return jnp.where(sel & (scale > 0), q.astype(x_BxTxHxD.dtype), x_BxTxHxD), scale_Bx1xHxD


def empty_masks(cfg: ModelConfig, sites: Iterable[str]) -> dict[str, np.ndarray]:
    """{site: all-False L×H×D} — an intervention that edits nothing."""
    return {s: np.zeros((cfg.num_layers, site_heads(cfg, s), cfg.head_dim), bool) for s in sites}


def masks_from_entries(cfg: ModelConfig, entries: Iterable[tuple[int, str, int, int]],
                       sites: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """{site: L×H×D bool} naming the (layer, site, head, dim) entries (plus empty masks for
    ``sites`` not otherwise named)."""
    masks = empty_masks(cfg, sites)
    for layer, site, head, dim in entries:
        check_site(site)
        heads = site_heads(cfg, site)
        if not 0 <= layer < cfg.num_layers:
            raise ValueError(f"layer {layer} is out of range: the model has {cfg.num_layers} layers")
        if not 0 <= head < heads:
            raise ValueError(f"head {head} is out of range: site {site} has {heads} heads")
        if not 0 <= dim < cfg.head_dim:
            raise ValueError(f"dim {dim} is out of range: head_dim is {cfg.head_dim}")
        masks.setdefault(site, empty_masks(cfg, [site])[site])[layer, head, dim] = True
    return masks


def check_masks(cfg: ModelConfig, masks: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Masks as bool arrays of the right shape per site, or a one-line error."""
    out = {}
    for site, m in masks.items():
        want = (cfg.num_layers, site_heads(cfg, site), cfg.head_dim)
        m = np.asarray(m, bool)
        if m.shape != want:
            raise ValueError(f"mask for site {site} has shape {m.shape}: expected layers×heads×dims {want}")
        out[site] = m
    return out


def intervention(cfg: ModelConfig, masks: Mapping[str, Any], method: str = "mean", *,
                 keep_first: bool = False, phases: str = "prefill", quant: QuantSpec | None = None,
                 sink: bool = False) -> Intervention:
    """A checked ``Intervention`` for ``cfg`` (mask shapes validated)."""
    if (method == "quant") != (quant is not None):
        raise ValueError("give a QuantSpec exactly when method='quant'")
    return Intervention(check_masks(cfg, masks), np.bool_(keep_first),
                        np.float32(quant.qmax if quant else 0),
                        np.int32(GRANULARITIES.index(quant.granularity) if quant else 0), method, phases,
                        TRACED if quant else None, sink)
