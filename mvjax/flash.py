"""Causal self-attention that never materializes B×H×T×T: a memory-light forward and backward.

Why: autodiff through the plain attention core keeps every layer's B×H×T×T probabilities alive
for the backward pass and streams them through DRAM several times. Here the batch is processed one
sequence at a time (a ``lax.map``), and within a sequence the queries in blocks that read only the
keys up to the block's last row (the masked upper triangle is never computed), so each block's
H×t×s scores fit in cache. The backward pass is written by hand (``custom_vjp``): it saves only
q, k, v, the output and the per-row log-sum-exp, and recomputes the probabilities block by block.
Measured on the ``cpu-512`` benchmark config (2-core CPU): the same step time as the plain blocked
core, with peak RSS 4.1 → 3.2 GB, and a heap that stays bounded under ``mvjax.host_memory``'s
allocator settings (the plain core grew it to 9.9 GB).

Same math as ``mvjax.model.attend`` (float32 logits and softmax; ``bias_fn`` adds e.g. ALiBi per
block); padding is a key-validity mask. Query rows with no valid key (padding at the front) give
zeros, where the plain path gives the mean of the values; such rows are padding and carry no loss.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array
BiasFn = Callable[[Array, Array], Array | None]  # (q positions 1×t, k positions 1×s) -> 1×H×t×s
_NEG = -1e30  # masked logit: exp underflows to exactly 0, and no inf - inf NaNs


def _blocks(T: int, block: int) -> list[tuple[int, int]]:
    return [(a, min(a + block, T)) for a in range(0, T, block)]


def _scores(q_KxGxtxD, k_KxsxD, pos_t, pos_s, valid_s, a, bias_fn, window=None):
    """Masked float32 logits of one query block [a, a+t) against keys [0, s): KV×G×t×s (query
    head k·G + g reads kv head k). ``window``: a key more than window - 1 positions back is masked."""
    K, G, t, D = q_KxGxtxD.shape
    s = k_KxsxD.shape[1]
    # the G query heads of a kv head share its keys: one GEMM of G·t rows (GQA), not G of t rows
    logits = jnp.einsum("kxd,ksd->kxs", q_KxGxtxD.reshape(K, G * t, D), k_KxsxD).reshape(K, G, t, s)
    logits = logits * D ** -0.5
    if bias_fn is not None:
        bias = bias_fn(pos_t[None], pos_s[None])
        if bias is not None:
            logits = logits + bias.reshape(K, G, t, s)
    keep = (jnp.arange(s)[None, :] <= a + jnp.arange(t)[:, None]) & valid_s[None, :]
    if window is not None:
        keep &= pos_t[:, None] - pos_s[None, :] < window
    return jnp.where(keep, logits, _NEG), keep


def _grouped(q_HxTxD: Array, kv_heads: int) -> Array:
    H, T, D = q_HxTxD.shape
    return q_HxTxD.reshape(kv_heads, H // kv_heads, T, D)


def _forward_one(q, k, v, valid, pos, bias_fn, block, window=None):
    """One sequence: q H×T×D, k/v KV×T×D -> (out H×T×D, lse H×T float32)."""
    dtype = q.dtype
    q, k, v = (x.astype(jnp.float32) for x in (q, k, v))  # XLA:CPU has no bf16×bf16→f32 batched dot
    q = _grouped(q, k.shape[0])
    outs, lses = [], []
    for a, e in _blocks(q.shape[2], block):
        logits, keep = _scores(q[:, :, a:e], k[:, :e], pos[a:e], pos[:e], valid[:e], a, bias_fn,
                               window)
        m = jnp.max(logits, axis=-1, keepdims=True)
        p = jnp.where(keep, jnp.exp(logits - m), 0.0)
        denom = jnp.sum(p, axis=-1, keepdims=True)
        o = jnp.einsum("kgts,ksd->kgtd", p, v[:, :e])
        safe = jnp.maximum(denom, jnp.finfo(jnp.float32).tiny)
        outs.append((o / safe).astype(dtype))
        lses.append((m + jnp.log(safe))[..., 0])
    H, T = q.shape[0] * q.shape[1], q.shape[2]
    return (jnp.concatenate(outs, axis=2).reshape(H, T, -1),
            jnp.concatenate(lses, axis=2).reshape(H, T))


def _backward_one(q, k, v, valid, pos, out, lse, d_out, bias_fn, block, window=None):
    """One sequence's gradients (dq, dk, dv), recomputing probabilities block by block."""
    f32 = jnp.float32
    dtypes = (q.dtype, k.dtype, v.dtype)
    KV = k.shape[0]
    q, out, d_out = (_grouped(x.astype(f32), KV) for x in (q, out, d_out))
    k, v = k.astype(f32), v.astype(f32)
    lse = lse.reshape(q.shape[:3])
    delta = jnp.sum(d_out * out, axis=-1)  # KV×G×T: rowsum(dO ∘ O)
    scale = q.shape[-1] ** -0.5
    dq_blocks = []
    dk = jnp.zeros(k.shape, f32)
    dv = jnp.zeros(v.shape, f32)
    for a, e in _blocks(q.shape[2], block):
        logits, keep = _scores(q[:, :, a:e], k[:, :e], pos[a:e], pos[:e], valid[:e], a, bias_fn,
                               window)
        p = jnp.where(keep, jnp.exp(logits - lse[:, :, a:e, None]), 0.0)  # KV×G×t×s
        do = d_out[:, :, a:e]
        dv = dv.at[:, :e].add(jnp.einsum("kgts,kgtd->ksd", p, do))
        ds = p * (jnp.einsum("kgtd,ksd->kgts", do, v[:, :e]) - delta[:, :, a:e, None]) * scale
        dq_blocks.append(jnp.einsum("kgts,ksd->kgtd", ds, k[:, :e]))
        dk = dk.at[:, :e].add(jnp.einsum("kgts,kgtd->ksd", ds, q[:, :, a:e]))
    dq = jnp.concatenate(dq_blocks, axis=2).reshape(-1, *q.shape[2:])
    return tuple(g.astype(t) for g, t in zip((dq, dk, dv), dtypes))


@partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def causal_attention(q_BxHxTxD: Array, k_BxKxTxD: Array, v_BxKxTxD: Array, valid_BxT: Array,
                     positions_BxT: Array, bias_fn: BiasFn | None = None, block: int = 128,
                     window: int | None = None) -> Array:
    """Causal softmax attention over a sequence's own tokens (keys = queries' tokens). K kv heads
    serve H = G·K query heads (GQA; K = H is plain multi-head): query head h reads kv head h // G,
    without repeating k and v. ``valid_BxT`` masks padded keys; ``window`` (sliding-window
    attention) masks keys ``window`` or more positions before their query. Returns B×H×T×D."""
    H, K = q_BxHxTxD.shape[1], k_BxKxTxD.shape[1]
    if H % K or v_BxKxTxD.shape[1] != K:
        raise ValueError(f"{H} query heads cannot share {K} key / {v_BxKxTxD.shape[1]} value heads: "
                         "the kv head count must divide the query head count")
    return _causal_fwd(q_BxHxTxD, k_BxKxTxD, v_BxKxTxD, valid_BxT, positions_BxT, bias_fn, block,
                       window)[0]


def _causal_fwd(q, k, v, valid, pos, bias_fn, block, window=None):
    # one sequence per iteration: its H×block×T scores stay in cache
    out, lse = jax.lax.map(lambda a: _forward_one(*a, bias_fn, block, window), (q, k, v, valid, pos))
    return out, (q, k, v, valid, pos, out, lse)


def _causal_bwd(bias_fn, block, window, res, d_out):
    q, k, v, valid, pos, out, lse = res
    dq, dk, dv = jax.lax.map(lambda a: _backward_one(*a, bias_fn, block, window),
                             (q, k, v, valid, pos, out, lse, d_out))
    return dq, dk, dv, None, None


causal_attention.defvjp(_causal_fwd, _causal_bwd)
