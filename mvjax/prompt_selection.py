"""Per-prompt disruption — the authors' protocol: each prompt picks its own dims to edit from its
own statistics, inside the jitted forward.

At every edited (layer, site) of the prefill pass, for each batch row separately:
  1. statistics: M[h, d] = sqrt(Σ_t x[t, h, d]²) over the row's valid tokens (BOS included), and
     the energy a mean replacement removes, Σ_t (x − row mean)² (Σ_t x² for zeroing);
  2. selection, by ``rule``:
       massive  the top-k dims per head by M (``selection="topk"``), or those above λ × the mean
                of M over the head (``"lambda"``; then the controls take as many dims per head);
       lowest   as many of the smallest-M dims per head (the authors' control);
       random   as many random non-massive dims per head (a fixed random order per seed: ``scores``);
       energy   random non-massive dims, visited in the ``scores`` order, joining while the sum of
                their removable energy stays ≤ (1 + tol) × the massive dims' until it reaches
                (1 − tol) × it; if that fails, the single free dim closest to it;
  3. the edit: every valid token (position 0 too, unless ``keep_first``) of the selected dims
     gets the row's mean (or 0).

Everything that varies between conditions — the rule, k, the edited layers, which of Q / K is
edited, ``keep_first``, the random order — is a traced leaf, so one compiled forward serves every
condition (and every top-k of a sweep). Decode-phase tokens are edited only with
``phases="all"``, with the prompt's mean and selection handed over as ``SiteContext.state``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mvjax.config import ModelConfig
from mvjax.interventions import PHASE_RULES, prompt_mean, site_heads
from mvjax.model import SiteContext
from mvjax.probe import first_token_mass

RULES = ("massive", "lowest", "random", "energy")
SELECTIONS = ("topk", "lambda")
ENERGY_TOL = 0.05


def ranks(score_xD: jax.Array) -> jax.Array:
    """Rank of each entry along the last axis, 0 = largest (ties: lower index first)."""
    order = jnp.argsort(-score_xD, axis=-1, stable=True)
    return jnp.argsort(order, axis=-1, stable=True)


def energy_matched_rows(E_BxHxD: jax.Array, massive: jax.Array, order_score_HxD: jax.Array,
                        tol: float = ENERGY_TOL) -> jax.Array:
    """B×H×D bool: per row and head, free dims taken in ``order_score`` order (highest first)
    while the summed energy stays ≤ (1 + tol) × target, until it reaches (1 − tol) × target
    (target = the massive dims' energy); if none joins, the one free dim closest to the target
    (``analysis.dims.energy_matched``, per prompt and traced)."""
    target = jnp.sum(jnp.where(massive, E_BxHxD, 0.0), axis=-1)
    lo, hi = (1 - tol) * target, (1 + tol) * target
    score = jnp.where(massive, -jnp.inf, jnp.broadcast_to(order_score_HxD, E_BxHxD.shape))
    order = jnp.argsort(-score, axis=-1, stable=True)
    e_sorted = jnp.take_along_axis(E_BxHxD, order, axis=-1)
    free_sorted = ~jnp.take_along_axis(massive, order, axis=-1)

    def step(carry, inp):
        total, done = carry
        e, free = inp
        join = free & ~done & (total + e <= hi)
        total = total + jnp.where(join, e, 0.0)
        return (total, done | (total >= lo)), join

    init = (jnp.zeros_like(target), lo <= 0)
    _, joined = jax.lax.scan(step, init, (jnp.moveaxis(e_sorted, -1, 0),
                                                  jnp.moveaxis(free_sorted, -1, 0)))
    joined = jnp.take_along_axis(jnp.moveaxis(joined, 0, -1), jnp.argsort(order, axis=-1), axis=-1)
    gap = jnp.where(massive, jnp.inf, jnp.abs(E_BxHxD - target[..., None]))
    closest = jax.nn.one_hot(jnp.argmin(gap, axis=-1), E_BxHxD.shape[-1], dtype=bool)
    return jnp.where(jnp.any(joined, axis=-1, keepdims=True), joined, closest)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class PromptSelected:
    """Edit dims each prompt selects from its own statistics (module docstring).

    Leaves (traced; change them without recompiling): ``rule`` (index into ``RULES``), ``top_k``,
    ``lam``, ``layers`` (L bool: layers edited), ``edit_site`` ({site: bool}), ``keep_first`` and
    ``scores`` ({site: L×H×D float}, the random order of the random / energy-matched controls).
    """

    rule: Any
    top_k: Any
    lam: Any
    layers: Any
    edit_site: Mapping[str, Any]
    keep_first: Any
    scores: Mapping[str, Any]
    method: str = dataclasses.field(default="mean", metadata=dict(static=True))
    selection: str = dataclasses.field(default="topk", metadata=dict(static=True))
    removable: str = dataclasses.field(default="centered", metadata=dict(static=True))
    phases: str = dataclasses.field(default="prefill", metadata=dict(static=True))
    sink: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @property
    def sites(self) -> frozenset[str]:
        return frozenset(self.edit_site) | ({"attn"} if self.sink else frozenset())

    def select(self, site: str, layer: int, x: jax.Array, valid_BxT: jax.Array) -> jax.Array:
        """B×H×D bool: this prompt's dims under this condition's rule."""
        xf = jnp.where(valid_BxT[:, :, None, None], x.astype(jnp.float32), 0.0)
        sumsq = jnp.sum(xf * xf, axis=1)
        M = jnp.sqrt(sumsq)
        if self.selection == "topk":
            massive = ranks(M) < self.top_k
        else:
            massive = M > self.lam * jnp.mean(M, axis=-1, keepdims=True)
        count = jnp.sum(massive, axis=-1, keepdims=True)
        lowest = ranks(-M) < count
        score = jnp.asarray(self.scores[site][layer], jnp.float32)
        random = ranks(jnp.where(massive, -jnp.inf, score[None])) < count
        E = sumsq
        if self.removable == "centered":
            n = jnp.maximum(jnp.sum(valid_BxT, axis=1), 1).astype(jnp.float32)[:, None, None]
            E = sumsq - jnp.sum(xf, axis=1) ** 2 / n
        energy = energy_matched_rows(E, massive, score)
        sel = jnp.stack([massive, lowest, random, energy])[self.rule]
        on = jnp.asarray(self.layers, bool)[layer] & jnp.asarray(self.edit_site[site], bool)
        return sel & on

    def __call__(self, site: str, layer: int, x: jax.Array, ctx: SiteContext) -> tuple[jax.Array, Any]:
        if site == "attn":
            return x, first_token_mass(x, ctx.valid_BxT)
        if ctx.phase == "decode" and self.phases == "prefill":
            return x, None
        if ctx.phase == "prefill":
            sel, mean = self.select(site, layer, x, ctx.valid_BxT), prompt_mean(x, ctx.valid_BxT)
        else:
            sel, mean = ctx.state[site][layer]
        tok = ctx.valid_BxT & ~(jnp.asarray(self.keep_first, bool) & (ctx.positions_BxT == 0))
        where = sel[:, None] & tok[:, :, None, None]
        value = jnp.zeros((), x.dtype) if self.method == "zero" else mean[:, None].astype(x.dtype)
        out = jnp.where(where, value, x)
        keep = self.phases == "all" and ctx.phase == "prefill"
        return out, ((sel, mean) if keep else None)


def random_scores(cfg: ModelConfig, sites, seed: int) -> dict[str, np.ndarray]:
    """{site: L×H×D} uniform random order of the dims, one per seed (sites get distinct streams)."""
    return {s: np.random.default_rng([seed, i]).random((cfg.num_layers, site_heads(cfg, s),
                                                        cfg.head_dim)).astype(np.float32)
            for i, s in enumerate(sorted(sites))}


def prompt_selected(cfg: ModelConfig, sites: tuple[str, str], rule: str, *, top_k: int = 1,
                    lam: float = 5.0, layers=None, edit=(True, True), keep_first: bool = False,
                    seed: int = 0, method: str = "mean", selection: str = "topk",
                    phases: str = "prefill", sink: bool = False) -> PromptSelected:
    """A checked ``PromptSelected`` for ``cfg``: ``sites`` = (q site, k site), ``edit`` says
    which of the two is edited, ``layers`` the edited layer indices (None: all)."""
    if rule not in RULES:
        raise ValueError(f"rule={rule!r} is invalid: use one of {RULES}")
    if selection not in SELECTIONS:
        raise ValueError(f"selection={selection!r} is invalid: use one of {SELECTIONS}")
    if phases not in PHASE_RULES:
        raise ValueError(f"phases={phases!r} is invalid: use one of {PHASE_RULES}")
    if not 1 <= top_k <= cfg.head_dim:
        raise ValueError(f"top-k={top_k} is invalid: use 1..head_dim={cfg.head_dim}")
    on = np.zeros(cfg.num_layers, bool)
    on[list(range(cfg.num_layers)) if layers is None else list(layers)] = True
    return PromptSelected(np.int32(RULES.index(rule)), np.int32(top_k), np.float32(lam), on,
                          {s: np.bool_(e) for s, e in zip(sites, edit)}, np.bool_(keep_first),
                          random_scores(cfg, sites, seed), method, selection,
                          "centered" if method == "mean" else "sumsq", phases, sink)
