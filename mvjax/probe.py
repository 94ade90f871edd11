"""Probes: what to observe (and, later, change) at the model's attention sites, as frozen data.

A probe is a frozen, hashable dataclass so it can be a jit static argument: the forward pass is
traced once per (model structure, probe) and the observation code is compiled into it.

Observation is a *streaming reduction*: ``CaptureStats`` turns each layer's B×T×H×D activation into
per-(head, dim) sums over the valid tokens inside the jitted forward, so a whole dataset is
summarized batch by batch with ``merge`` and no T×H×D tensor ever reaches the host. ``merge`` is
exact up to float rounding and associative, so how a dataset is split into batches does not matter.
``collect_stats`` runs the model one layer at a time over groups of batches (``mvjax.layerwise``),
so a model stored on disk never needs more than one layer's weights in memory.

Interventions (replace dims by their mean, zero them, quantize) are further frozen probes that
return an edited ``x`` from ``__call__``: ``mvjax.interventions``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from mvjax.layerwise import ModelWeights, block_kind, block_template
from mvjax.mesh import fetch, put_batch
from mvjax.model import SiteContext, Transformer
from mvjax.sharding import put_global
from mvjax.sites import ALL_STAT_SITES, ATTN_SITE, STAT_SITES  # noqa: F401 - STAT_SITES re-exported



class Stats(NamedTuple):
    """Per-(head, dim) token statistics of one site at one layer.

    count: number of valid tokens; sum / sumsq: Σx and Σx² over them (H×D); absmax: max |x| (H×D);
    values: per-token values of the chosen dims, valid tokens only (N×H×k), or None.
    Inside jit the arrays are float32 for one batch; on the host they are float64 and merged.
    """

    count: Any
    sum: Any
    sumsq: Any
    absmax: Any
    values: Any = None


class SinkMass(NamedTuple):
    """Per head, the attention probability on the first token summed over the counted queries (the
    valid queries after each row's first valid token, ``first_token_mass``), and their number:
    ``sum / count`` is ``first_token_mass`` over every merged batch, each query weighted once.

    count: number of counted queries; sum: H. float32 / int32 inside jit, float64 / int on the host.
    """

    count: Any
    sum: Any

    def mean(self) -> np.ndarray:
        """Per head: the mean first-token mass over every counted query (0 where none counted)."""
        return np.asarray(self.sum, np.float64) / max(int(self.count), 1)


@dataclasses.dataclass(frozen=True)
class CaptureStats:
    """Accumulate ``Stats`` at ``sites`` (a subset of ``ALL_STAT_SITES``) for every layer.

    norm_dims: head dims whose per-token values are also returned (e.g. the massive dims, to study
    their DC offset and the BOS exception); None keeps only the reductions.
    sink: also observe the ``attn`` site (added to ``sites``) and record each layer's ``SinkMass``;
    this runs the model's unfused attention path, which holds the B×H×T×T probabilities.
    """

    sites: frozenset[str] = frozenset({"q", "k", "v"})
    norm_dims: tuple[int, ...] | None = None
    sink: bool = False

    def __post_init__(self) -> None:
        sites = frozenset(self.sites) - ({ATTN_SITE} if self.sink else frozenset())
        unknown = sorted(sites - set(ALL_STAT_SITES))
        if unknown or not sites:
            raise ValueError(f"site(s) {unknown or '(none)'} cannot be captured: choose from "
                             f"{list(ALL_STAT_SITES)}")
        object.__setattr__(self, "sites", sites | ({ATTN_SITE} if self.sink else frozenset()))
        if self.norm_dims is not None:
            dims = tuple(int(d) for d in self.norm_dims)
            if not dims or min(dims) < 0:
                raise ValueError(f"norm_dims={self.norm_dims!r} is invalid: give non-negative "
                                 "head-dim indices, or None")
            object.__setattr__(self, "norm_dims", dims)

    def __call__(self, site: str, layer: int, x: jax.Array,
                 ctx: SiteContext) -> tuple[jax.Array, Stats | SinkMass]:
        if site == ATTN_SITE:
            return x, first_token_sums(x, ctx.valid_BxT)
        return x, batch_stats(x, ctx.valid_BxT, self.norm_dims)


def batch_stats(x_BxTxHxD: jax.Array, valid_BxT: jax.Array,
                norm_dims: tuple[int, ...] | None = None) -> Stats:
    """Stats of one batch; padding (valid=False) contributes nothing. Values of ``norm_dims`` stay
    B×T×H×k here (shapes must be static in jit); ``to_host`` drops the padded tokens."""
    if norm_dims is not None and max(norm_dims) >= x_BxTxHxD.shape[-1]:
        raise ValueError(f"norm_dims={norm_dims} exceed head_dim={x_BxTxHxD.shape[-1]}: "
                         "pick dims below it")
    xf = masked_float32(x_BxTxHxD, valid_BxT)
    values = None if norm_dims is None else xf[..., jnp.asarray(norm_dims)]
    return Stats(count=jnp.sum(valid_BxT, dtype=jnp.int32), sum=jnp.sum(xf, axis=(0, 1)),
                 sumsq=sum_squares(xf), absmax=jnp.max(jnp.abs(xf), axis=(0, 1)),
                 values=values)


def masked_float32(x_BxTxHxD: jax.Array, valid_BxT: jax.Array) -> jax.Array:
    """x in float32 with padded tokens (valid=False) set to 0, so sums over tokens skip them."""
    return jnp.where(valid_BxT[:, :, None, None], x_BxTxHxD.astype(jnp.float32), 0.0)


def sum_squares(xf_BxTxHxD: jax.Array) -> jax.Array:
    """H×D Σ over the batch and its tokens of x² (of ``masked_float32``'s output): M² per (head,
    dim) — the energy whose square root the massive-value definition ranks."""
    return jnp.sum(xf_BxTxHxD * xf_BxTxHxD, axis=(0, 1))


def first_token_mass(probs_BxHxTxS: jax.Array, valid_BxT: jax.Array) -> jax.Array:
    """Per head: the attention probability on each row's first valid token (BOS, the sink),
    averaged over the valid queries after it. Padding at either end is skipped, so a padded row
    counts as its unpadded self. For a prefill pass (keys = the queries' tokens, S = T)."""
    sums = first_token_sums(probs_BxHxTxS, valid_BxT)
    return sums.sum / jnp.maximum(sums.count, 1)


def first_token_sums(probs_BxHxTxS: jax.Array, valid_BxT: jax.Array) -> SinkMass:
    """``first_token_mass`` before its division: the per-head sum over the counted queries and
    their number, so batches merge into the mean over every counted query."""
    T = valid_BxT.shape[1]
    first_B = jnp.argmax(valid_BxT, axis=1)  # 0 for a row with no valid token (it counts nothing)
    p_BxHxT = jnp.take_along_axis(probs_BxHxTxS, first_B[:, None, None, None], axis=3)[..., 0]
    q_ok_BxT = valid_BxT & (jnp.arange(T)[None, :] > first_B[:, None])
    mass_H = jnp.sum(jnp.where(q_ok_BxT[:, None, :], p_BxHxT.astype(jnp.float32), 0.0), axis=(0, 2))
    return SinkMass(jnp.sum(q_ok_BxT, dtype=jnp.int32), mass_H)


def to_host(stats: Stats | SinkMass, valid_BxT: np.ndarray) -> Stats | SinkMass:
    """Device batch stats → float64 host stats (per-token values restricted to valid tokens)."""
    if isinstance(stats, SinkMass):
        return SinkMass(int(stats.count), np.asarray(stats.sum, np.float64))
    values = None
    if stats.values is not None:
        values = np.asarray(stats.values, np.float64)[np.asarray(valid_BxT, bool)]
    return Stats(int(stats.count), np.asarray(stats.sum, np.float64),
                 np.asarray(stats.sumsq, np.float64), np.asarray(stats.absmax, np.float64), values)


def merge(a: Stats | SinkMass, b: Stats | SinkMass) -> Stats | SinkMass:
    """Stats of the union of the token sets summarized by ``a`` and ``b`` (pure, associative)."""
    if isinstance(a, SinkMass) or isinstance(b, SinkMass):
        if not (isinstance(a, SinkMass) and isinstance(b, SinkMass)) or np.shape(a.sum) != np.shape(b.sum):
            raise ValueError("cannot merge a first-token mass with other stats, or over different "
                             "head counts: they come from different sites or models")
        return SinkMass(a.count + b.count, a.sum + b.sum)
    if np.shape(a.sumsq) != np.shape(b.sumsq):
        raise ValueError(f"cannot merge stats of shapes {np.shape(a.sumsq)} and {np.shape(b.sumsq)}: "
                         "they come from different sites or models")
    if (a.values is None) != (b.values is None):
        raise ValueError("cannot merge stats with and without per-token values: use one norm_dims")
    values = None if a.values is None else np.concatenate([a.values, b.values], axis=0)
    return Stats(a.count + b.count, a.sum + b.sum, a.sumsq + b.sumsq,
                 np.maximum(a.absmax, b.absmax), values)


Records = dict[str, dict[int, Stats]]  # with ``sink``: also {"attn": {layer: SinkMass}}


def merge_records(a: Records | None, b: Records) -> Records:
    """Merge {site: {layer: Stats}} mappings; ``a=None`` starts an accumulation."""
    if a is None:
        return b
    if set(a) != set(b) or any(set(a[s]) != set(b[s]) for s in a):
        raise ValueError("cannot merge records over different sites/layers: use one probe")
    return {s: {l: merge(a[s][l], b[s][l]) for l in a[s]} for s in a}


@functools.partial(jax.jit, static_argnames=("graphdef", "probe"), donate_argnames=("x_BxTxD",))
def _block_forward(graphdef, state, x_BxTxD, valid_BxT, probe):
    """One block on one batch: (its output, {site: Stats}). Positions are 0..T-1 per row, as in
    ``Transformer.__call__`` without a cache."""
    B, T = valid_BxT.shape
    ctx = SiteContext(valid_BxT, jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T)))
    records: dict[str, dict[int, Any]] = {}
    y, _ = nnx.merge(graphdef, state)(x_BxTxD, ctx, None, probe, records)
    return y, {site: next(iter(per.values())) for site, per in records.items()}


def collect_stats(model, batches: Iterable, sites: Iterable[str] = ("q", "k", "v"), *,
                  norm_dims: tuple[int, ...] | None = None, progress: bool = True,
                  total: int | None = None, max_hidden_mb: float = 256.0,
                  sink: bool = False, mesh: Mesh | None = None) -> Records:
    """Stats of every layer over ``batches``: {site: {layer: Stats}}. No LM head is run.
    ``sink``: also {"attn": {layer: SinkMass}} (each head's attention on the first token; the
    unfused attention path, whose B×H×T×T probabilities exist for one batch and layer at a time).

    model: a ``Transformer`` or any ``mvjax.layerwise.LayerWeights`` (e.g. ``CheckpointWeights``,
    which keeps only one layer's weights in memory). batches: token arrays B×T, or (tokens B×T,
    mask B×T) pairs (mask 1 = real token). The pass goes layer by layer: batches are gathered
    into groups whose hidden states fit ``max_hidden_mb``, and every batch of a group runs through
    layer 0, then layer 1, …; the next layer's weights load while the current one computes. Keep
    B×T fixed (pad the last batch with mask 0) so each block compiles once.
    ``mesh`` (``mvjax.mesh``, its ``data`` axis only): each batch's rows split over the devices,
    each layer's weights replicated; the statistics are reduced across them inside the jit.
    """
    if mesh is not None and mesh.shape["model"] > 1:
        raise ValueError("the layer-by-layer statistics split rows only: use --mesh data=N "
                         f"(got model={mesh.shape['model']})")
    weights = ModelWeights(model) if isinstance(model, Transformer) else model
    probe = CaptureStats(frozenset(sites), norm_dims, sink)
    cfg = weights.cfg
    bar = tqdm(total=None if total is None else total * cfg.num_layers, disable=not progress,
               desc="stats", unit="batch·layer")
    budget = max_hidden_mb * 2**20 / (cfg.hidden_size * np.dtype(cfg.dtype).itemsize)
    acc: Records | None = None
    group: list[tuple[np.ndarray, np.ndarray]] = []
    for batch in itertools.chain(batches, [None]):  # None: flush the last group
        if batch is not None:
            group.append(_checked_batch(batch))
        if group and (batch is None or sum(t.size for t, _ in group) >= budget):
            acc = merge_records(acc, _sweep_layers(weights, group, probe, bar, mesh))
            group = []
    bar.close()
    if acc is None:
        raise ValueError("no batches to summarize: the dataset is empty")
    return acc


def _checked_batch(batch) -> tuple[np.ndarray, np.ndarray]:
    tokens, mask = batch if isinstance(batch, (tuple, list)) else (batch, None)
    tokens = np.asarray(tokens)
    mask = np.ones(tokens.shape, bool) if mask is None else np.asarray(mask, bool)
    if tokens.ndim != 2 or mask.shape != tokens.shape:
        raise ValueError(f"a batch must be tokens B×T with an equal-shaped mask; got "
                         f"{tokens.shape} and {mask.shape}")
    return tokens, mask


def _sweep_layers(weights, group: list[tuple[np.ndarray, np.ndarray]], probe: CaptureStats,
                  bar, mesh: Mesh | None = None) -> Records:
    """Every batch of ``group`` through every layer, one layer's weights at a time (on ``mesh``:
    rows over ``data``, weights replicated)."""
    cfg = weights.cfg
    hidden = [put_batch(h, mesh) for h in weights.embed([t for t, _ in group])]
    valid = [put_batch(jnp.asarray(m), mesh) for _, m in group]
    templates: dict[Any, tuple] = {}  # blocks differ only by positional config and window
    acc: Records = {s: {} for s in probe.sites}
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(weights.block, 0)
        for layer in range(cfg.num_layers):
            params = pending.result()
            if layer + 1 < cfg.num_layers:
                pending = pool.submit(weights.block, layer + 1)
            key = block_kind(cfg, layer)
            if key not in templates:
                templates[key] = block_template(cfg, layer)
            graphdef, abstract = templates[key]
            state = jax.tree.map(lambda a: a, abstract)
            nnx.replace_by_pure_dict(state, params)
            if mesh is not None:
                state = put_global(state, jax.tree.map(lambda _: NamedSharding(mesh, P()), state))
            for j, (_, mask) in enumerate(group):
                hidden[j], recs = _block_forward(graphdef, state, hidden[j], valid[j], probe)
                for site, st in fetch(recs).items():
                    st = to_host(st, mask)
                    acc[site][layer] = merge(acc[site][layer], st) if layer in acc[site] else st
                bar.update()
            bar.set_postfix(layer=layer)
    return acc
