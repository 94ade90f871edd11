"""KV-cache decoding: one jitted prefill plus a ``lax.scan`` of single-token steps.

Positions continue across the cache (prompt 0..T-1, then T, T+1, …), so RoPE rotations and ALiBi
distances at decode equal those of a full recomputation. A probe given here is applied at prefill
and at every decode step: the prompt pass runs in phase ``"prefill"``, each step in phase
``"decode"`` with the prompt pass's probe records as ``SiteContext.state`` (what the probe does there
is its own documented rule; see ``mvjax.interventions`` for the KV-cache rule of the edits).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mvjax import mesh as mesh_lib
from mvjax.model import KVCache, Probe, Transformer


class Generation(NamedTuple):
    tokens: jax.Array  # B×(T+N): prompt followed by the N generated tokens
    logits: jax.Array | None  # B×N×V: the distribution each generated token was drawn from


def sample_token(logits_BxV: jax.Array, key: jax.Array | None, temperature: float,
                 top_k: int | None) -> jax.Array:
    """Greedy when temperature == 0, else softmax(logits / T) restricted to the top-k."""
    if temperature == 0.0:
        return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    logits_BxV = logits_BxV / temperature
    if top_k is not None:
        kth = jax.lax.top_k(logits_BxV, top_k)[0][:, -1:]
        logits_BxV = jnp.where(logits_BxV < kth, -jnp.inf, logits_BxV)
    return jax.random.categorical(key, logits_BxV, axis=-1).astype(jnp.int32)


def check_sampling(temperature: float, top_k: int | None) -> None:
    """Refuse a temperature that is negative or not a finite number (NaN would sample garbage
    silently) and a top-k below 1; before any model is loaded, when called from the CLI."""
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature={temperature} is invalid: use 0 (greedy) or a positive "
                         "finite value")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} is invalid: use a positive integer")


def generate(model: Transformer, prompt_BxT: jax.Array, max_new_tokens: int, *,
             key: jax.Array | None = None, temperature: float = 0.0, top_k: int | None = None,
             probe: Probe | None = None, return_logits: bool = False) -> Generation:
    """Continue every prompt in the batch by ``max_new_tokens`` tokens (prompts share a length).
    On a model placed on a mesh (``mvjax.mesh.place_model``) the result is a global array: read it
    with ``mvjax.mesh.fetch``."""
    prompt_BxT = np.asarray(prompt_BxT, np.int32)
    if prompt_BxT.ndim != 2 or prompt_BxT.shape[1] == 0:
        raise ValueError(f"prompt must be B×T token ids with T ≥ 1; got shape {prompt_BxT.shape}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} is invalid: ask for at least 1 token")
    check_sampling(temperature, top_k)
    if temperature > 0 and key is None:
        raise ValueError("sampling (temperature > 0) needs an explicit PRNG key: pass key=jax.random.key(seed)")
    if top_k is not None and not 1 <= top_k <= model.cfg.vocab_size:
        raise ValueError(f"top_k={top_k} is invalid: use 1..vocab_size={model.cfg.vocab_size}")
    total = prompt_BxT.shape[1] + max_new_tokens
    if total > model.cfg.max_seq_len:
        raise ValueError(f"prompt + max_new_tokens = {total} exceeds max_seq_len={model.cfg.max_seq_len}: "
                         "shorten the prompt or ask for fewer tokens")
    key = jax.random.key(0) if key is None else key
    graphdef, state = nnx.split(model)
    mesh = mesh_lib.mesh_of(state)  # a model placed by mvjax.mesh: prompts over data, cache heads over model
    with mesh_lib.active(mesh):
        return _generate(graphdef, state, mesh_lib.put_batch(prompt_BxT, mesh), key, max_new_tokens,
                         float(temperature), top_k, probe, return_logits)


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6, 7, 8))
def _generate(graphdef, state, prompt_BxT, key, max_new, temperature, top_k, probe, return_logits):
    model = nnx.merge(graphdef, state)
    B, T = prompt_BxT.shape
    keys = jax.random.split(key, max_new)
    out = model(prompt_BxT, cache=KVCache.empty(model.cfg, B, T + max_new), probe=probe)
    first_logits = out.logits[:, -1]
    prompt_records = out.records
    first = sample_token(first_logits, keys[0], temperature, top_k)

    def step(carry, step_key):
        cache, tok_B = carry
        o = model(tok_B[:, None], cache=cache, probe=probe, phase="decode", probe_state=prompt_records)
        logits_BxV = o.logits[:, -1]
        nxt = sample_token(logits_BxV, step_key, temperature, top_k)
        return (o.cache, nxt), (nxt, logits_BxV if return_logits else None)

    _, (rest_NxB, rest_logits) = jax.lax.scan(step, (out.cache, first), keys[1:])
    new_BxN = jnp.concatenate([first[:, None], rest_NxB.T], axis=1)
    logits = None
    if return_logits:
        logits = jnp.concatenate([first_logits[:, None], jnp.swapaxes(rest_logits, 0, 1)], axis=1)
    return Generation(jnp.concatenate([prompt_BxT, new_BxN], axis=1), logits)
