"""The jitted training step: loss with chunked cross-entropy, gradient accumulation, clipping and
AdamW, applied only when the loss and gradients are finite.

Why chunked: the B×T×V logits are the largest activation at a real vocabulary; computing the output
projection and the log-sum-exp one chunk of tokens at a time (rematerialized in the backward pass)
keeps only chunk×V logits alive. Why the finite guard: a NaN step must leave the state as it was so the
loop can stop with the last good parameters in memory and on disk.

Parameters are float32 master weights (a pure dict); the model casts them to ``model.dtype`` for its
matmuls, so bfloat16 compute needs no second copy.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mvjax.config import ModelConfig

Array = jax.Array


def head_weight(params: dict, cfg: ModelConfig) -> Array:
    """The d×V output projection: the embedding table transposed when tied."""
    if cfg.tie_embeddings:
        return params["embed"]["embedding"].T
    return params["lm_head"]["kernel"]


def chunked_cross_entropy(hidden_BxTxD: Array, head_DxV: Array, targets_BxT: Array, chunk: int,
                          dtype: jnp.dtype) -> tuple[Array, Array]:
    """Sum of next-token negative log-likelihoods and the token count, computing logits ``chunk``
    tokens at a time (0: all at once). Logits accumulate in float32."""
    B, T, D = hidden_BxTxD.shape
    n = B * T
    h_NxD = hidden_BxTxD.reshape(n, D).astype(dtype)
    y_N = targets_BxT.reshape(n)
    w_DxV = head_DxV.astype(dtype)

    def nll_sum(h: Array, y: Array, valid: Array) -> Array:
        logits = jnp.dot(h, w_DxV, preferred_element_type=jnp.float32)
        lse = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
        return jnp.sum((lse - picked) * valid)

    if chunk <= 0 or chunk >= n:
        return nll_sum(h_NxD, y_N, jnp.ones((n,), jnp.float32)), jnp.float32(n)
    pad = (-n) % chunk
    valid = jnp.pad(jnp.ones((n,), jnp.float32), (0, pad))
    h = jnp.pad(h_NxD, ((0, pad), (0, 0))).reshape(-1, chunk, D)
    y = jnp.pad(y_N, (0, pad)).reshape(-1, chunk)
    body = jax.checkpoint(lambda carry, xs: (carry + nll_sum(*xs), None))
    total, _ = jax.lax.scan(body, jnp.float32(0.0), (h, y, valid.reshape(-1, chunk)))
    return total, jnp.float32(n)


def make_loss_fn(graphdef: nnx.GraphDef, cfg: ModelConfig, chunk: int
                 ) -> Callable[[dict, Array], tuple[Array, Array]]:
    """(params, tokens B×(T+1)) -> (sum of NLL, token count); inputs are [:, :-1], targets [:, 1:]."""
    def loss_sums(params: dict, tokens: Array) -> tuple[Array, Array]:
        model = nnx.merge(graphdef, params)
        out = model(tokens[:, :-1], logits=False)
        return chunked_cross_entropy(out.hidden, head_weight(params, cfg), tokens[:, 1:], chunk,
                                     jnp.dtype(cfg.dtype))
    return loss_sums


def make_train_step(graphdef: nnx.GraphDef, cfg: ModelConfig, tx: optax.GradientTransformation,
                    grad_accum: int, chunk: int, state_sharding: Any = None,
                    batch_sharding: Any = None) -> Callable:
    """``step(state, tokens) -> (state, metrics)`` jitted with the state donated.

    state: {"params": pure dict, "opt": optax state}. metrics: loss (mean NLL), grad_norm (before
    clipping), ok (loss and gradients finite; when False the returned state equals the input)."""
    loss_sums = make_loss_fn(graphdef, cfg, chunk)

    def mean_loss(params: dict, tokens: Array) -> Array:
        total, count = loss_sums(params, tokens)
        return total / count

    grad_fn = jax.value_and_grad(mean_loss)

    def step(state: dict, tokens: Array) -> tuple[dict, dict]:
        params, opt = state["params"], state["opt"]
        if grad_accum == 1:
            loss, grads = grad_fn(params, tokens)
        else:
            micro = tokens.reshape(grad_accum, tokens.shape[0] // grad_accum, tokens.shape[1])

            def body(carry, mb):
                l, g = grad_fn(params, mb)
                return jax.tree.map(jnp.add, carry, (l, g)), None

            zero = (jnp.float32(0.0), jax.tree.map(jnp.zeros_like, params))
            (loss, grads), _ = jax.lax.scan(body, zero, micro)
            loss, grads = jax.tree.map(lambda x: x / grad_accum, (loss, grads))
        grad_norm = optax.tree.norm(grads)
        updates, new_opt = tx.update(grads, opt, params)
        new_params = optax.apply_updates(params, updates)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old),
                                 {"params": new_params, "opt": new_opt}, state)
        return new_state, {"loss": loss, "grad_norm": grad_norm, "ok": ok}

    kwargs = {}
    if state_sharding is not None:
        kwargs = dict(in_shardings=(state_sharding, batch_sharding), out_shardings=(state_sharding, None))
    return jax.jit(step, donate_argnums=0, **kwargs)


def make_eval_fn(graphdef: nnx.GraphDef, cfg: ModelConfig, chunk: int) -> Callable:
    """``eval(params, tokens) -> (sum of NLL, token count)`` jitted."""
    return jax.jit(make_loss_fn(graphdef, cfg, chunk))
