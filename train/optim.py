"""The optimizer: AdamW with warmup + cosine decay, global-norm clipping and a weight-decay mask.

Why a mask by parameter path: RMSNorm weights and the embedding table set scales (and, tied, the
output logits) that weight decay would pull toward zero for no regularization benefit; whether they
decay is configurable so the choice is recorded with the run.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from mvjax.sharding import leaf_path
from mvjax.train.config import OptimConfig


def is_norm(name: str) -> bool:
    return name.endswith("norm.weight")


def is_embedding(name: str) -> bool:
    return name.startswith("embed.")


def decay_mask(params: Any, cfg: OptimConfig) -> Any:
    """A pytree of bools: True where weight decay applies."""
    def decays(path: tuple, _: Any) -> bool:
        name = leaf_path(path)
        if is_norm(name):
            return cfg.decay_norms
        if is_embedding(name):
            return cfg.decay_embeddings
        return True
    return jax.tree_util.tree_map_with_path(decays, params)


def learning_rate(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to ``lr``, then cosine (or constant, or constant with a linear decay
    over the last ``decay_steps``: wsd) down to ``min_lr_ratio·lr``."""
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    if cfg.schedule == "constant":
        decay = optax.constant_schedule(cfg.lr)
    elif cfg.schedule == "wsd":  # warmup, stable, decay: the stable phase is the constant run's
        stable = max(total_steps - warmup - cfg.decay_steps, 0)
        decay = optax.join_schedules([optax.constant_schedule(cfg.lr), optax.linear_schedule(
            cfg.lr, cfg.min_lr_ratio * cfg.lr, max(cfg.decay_steps, 1))], [stable])
    else:
        decay = optax.cosine_decay_schedule(cfg.lr, max(total_steps - warmup, 1), alpha=cfg.min_lr_ratio)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), decay], [warmup])


def build_optimizer(cfg: OptimConfig, total_steps: int, params: Any
                    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax transformation for ``params`` (a pure dict) and its learning-rate schedule."""
    schedule = learning_rate(cfg, total_steps)
    parts = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
    parts.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                             weight_decay=cfg.weight_decay, mask=decay_mask(params, cfg)))
    return optax.chain(*parts), schedule
