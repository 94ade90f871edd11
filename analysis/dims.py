"""Which dims to disrupt: the massive ones and the controls, as L×H×D masks per site.

The statistics come from the prompts being scored (``PromptEnergy``, a probe run in the unmodified
pass): per (layer, head, dim) the pooled energy Σx² — whose square root is M, the norm the
massive-value definition ranks (``analysis.massive``) — and the energy a mean replacement removes,
Σ over prompts of Σ_t (x − prompt mean)². Selection is then fixed for every condition.

Controls keep the massive selection's count per (layer, head):
  lowest-norm     the heads' smallest-M dims (the authors' control)
  random          random non-massive dims (one mask per seed): ``analysis.controls``'s pair-aware
                  draw, or the first draw (``random_dims``, uniform per head and site) for
                  reproducing results made with it
  energy-matched  random non-massive dims added until they hold the same removable energy as the
                  massive dims of that head (within 5% where the head has enough; the achieved
                  ratio is reported)
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mvjax.analysis.massive import MassiveDefinition, massive_mask, topk_mask
from mvjax.model import SiteContext
from mvjax.probe import masked_float32, sum_squares

SELECTIONS = ("topk", "lambda")
ENERGY_TOL = 0.05


class Energy(NamedTuple):
    count: Any
    sumsq: Any  # H×D Σx² over valid tokens
    centered: Any  # H×D Σ over rows of Σ_t (x − row mean)²
    top1: Any = 0  # H×D: prompts whose own largest-M dim of the head is d (per-prompt selection)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PromptEnergy:
    """Records ``Energy`` at ``sites`` without editing anything (a pytree with no leaves, so it
    passes through ``analysis.evaluate``'s jitted passes like an intervention)."""

    sites: frozenset[str] = dataclasses.field(default=frozenset({"q_rot", "k_rot"}),
                                              metadata=dict(static=True))

    def __call__(self, site: str, layer: int, x, ctx: SiteContext):
        if ctx.phase == "decode":
            return x, None
        xf = masked_float32(x, ctx.valid_BxT)
        n_B = jnp.maximum(jnp.sum(ctx.valid_BxT, axis=1), 1).astype(jnp.float32)
        s_BxHxD = jnp.sum(xf, axis=1)
        sumsq = sum_squares(xf)
        centered = sumsq - jnp.sum(s_BxHxD ** 2 / n_B[:, None, None], axis=0)
        row_top = jax.nn.one_hot(jnp.argmax(jnp.sum(xf * xf, axis=1), axis=-1), x.shape[-1])
        top1 = jnp.sum(row_top * jnp.any(ctx.valid_BxT, axis=1)[:, None, None], axis=0)
        return x, Energy(jnp.sum(ctx.valid_BxT, dtype=jnp.int32), sumsq, centered, top1)


def add_energy(acc: dict | None, records: dict) -> dict:
    """Accumulate {site: {layer: Energy}} (float64 on the host)."""
    out = {} if acc is None else acc
    for site, per in records.items():
        for layer, e in per.items():
            e = Energy(int(e.count), *(np.asarray(f, np.float64) for f in e[1:]))
            old = out.setdefault(site, {}).get(layer)
            out[site][layer] = e if old is None else Energy(*(a + b for a, b in zip(old, e)))
    return out


def stacked(energy: dict, site: str, field: str) -> np.ndarray:
    """L×H×D array of one Energy field at one site."""
    per = energy[site]
    return np.stack([getattr(per[l], field) for l in sorted(per)])


def select_massive(M_LxHxD: np.ndarray, selection: str = "topk", k: int = 1,
                   definition: MassiveDefinition | None = None) -> np.ndarray:
    """Bool L×H×D: top-k dims per head by M, or the λ rule's massive entries."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection={selection!r} is invalid: use one of {SELECTIONS}")
    D = M_LxHxD.shape[-1]
    if selection == "topk":
        if not (isinstance(k, int) and 1 <= k <= D):
            raise ValueError(f"top-k={k} is invalid: use 1..head_dim={D}")
        return np.stack([topk_mask(M, k) for M in M_LxHxD])
    definition = definition or MassiveDefinition()
    return np.stack([massive_mask(M, definition) for M in M_LxHxD])


def lowest_norm(M_LxHxD: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """Per (layer, head), as many of the smallest-M dims as ``sel`` has there."""
    out = np.zeros(sel.shape, bool)
    order = np.argsort(M_LxHxD, axis=-1, kind="stable")
    for l, h in np.ndindex(sel.shape[:2]):
        out[l, h, order[l, h, : int(sel[l, h].sum())]] = True
    return out


def random_dims(sel: np.ndarray, seed: int) -> np.ndarray:
    """Per (layer, head), as many uniformly random dims outside ``sel`` as ``sel`` has there."""
    rng = np.random.default_rng(seed)
    out = np.zeros(sel.shape, bool)
    for l, h in np.ndindex(sel.shape[:2]):
        free = np.flatnonzero(~sel[l, h])
        out[l, h, rng.choice(free, min(int(sel[l, h].sum()), len(free)), replace=False)] = True
    return out


def energy_matched(E_LxHxD: np.ndarray, sel: np.ndarray, seed: int,
                   tol: float = ENERGY_TOL, excluded: np.ndarray | None = None) -> np.ndarray:
    """Per (layer, head) with a selection, random dims outside it whose summed energy is within
    ``tol`` of the selection's: the free dims are visited in random order and each joins if it
    does not push the sum past (1 + tol) × target, until the sum reaches (1 − tol) × target. If
    even that fails (e.g. every free dim is larger than the band), the single free dim closest to
    the target is taken; the achieved ratio is reported by ``energy_ratio``. ``excluded`` (default:
    the selection) are dims never drawn (``analysis.controls.excluded_dims``: partners, marked dims)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(sel.shape, bool)
    for l, h in np.ndindex(sel.shape[:2]):
        if not sel[l, h].any():
            continue
        e = E_LxHxD[l, h]
        target = float(e[sel[l, h]].sum())
        free = rng.permutation(np.flatnonzero(~(sel[l, h] | (False if excluded is None else excluded[l, h]))))
        taken, total = [], 0.0
        for d in free:
            if total >= (1 - tol) * target:
                break
            if total + e[d] <= (1 + tol) * target:
                taken.append(int(d))
                total += float(e[d])
        if not taken and len(free):
            taken = [int(free[np.argmin(np.abs(e[free] - target))])]
        out[l, h, taken] = True
    return out


def energy_ratio(E_LxHxD: np.ndarray, mask: np.ndarray, reference: np.ndarray) -> float:
    """Energy held by ``mask`` over the energy held by ``reference`` (whole model)."""
    ref = float(E_LxHxD[reference].sum())
    return float(E_LxHxD[mask].sum()) / ref if ref > 0 else float("nan")


def restrict_layers(mask: np.ndarray, layers) -> np.ndarray:
    out = np.zeros_like(mask)
    idx = list(layers)
    out[idx] = mask[idx]
    return out


def massive_layers(M_LxHxD: np.ndarray, definition: MassiveDefinition) -> list[int]:
    """Layers with at least one λ-massive entry."""
    return [l for l, M in enumerate(M_LxHxD) if massive_mask(M, definition).any()]


def as_entries(mask: np.ndarray) -> dict[str, list[list[int]]]:
    """{layer: [[head, dim], ...]} of a mask (JSON-friendly)."""
    return {str(l): [[int(h), int(d)] for h, d in zip(*np.nonzero(mask[l]))] for l in range(len(mask))
            if mask[l].any()}

