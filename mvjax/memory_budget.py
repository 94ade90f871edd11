"""Refuse, in one line and before building anything, a model that cannot fit in memory.

Why: an override such as ``model.hidden_size=4000000`` used to fail only when XLA ran out of memory
(``RESOURCE_EXHAUSTED``, a long traceback after half a minute). The estimate here is a lower bound
(what the weights and their training state take, no activations), so it refuses only what cannot
run, never a model that would have fitted.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from mvjax.config import ModelConfig

# float32 parameters, their gradients and AdamW's two moments
TRAIN_BYTES_PER_PARAM = 16


def human_bytes(n: float) -> str:
    """``n`` bytes as B, KiB, … EiB with three significant figures."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024:
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"


def host_memory() -> tuple[int | None, str]:
    """(bytes, what they are): the machine's physical memory, or a smaller cgroup (container)
    limit; None where neither can be read."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = None
    where = "this machine's memory"
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):
            total, where = int(text), "this container's memory limit"
        break
    return total, where


def available_memory() -> tuple[int | None, str]:
    """(bytes, what they are) that a jax computation can use: the accelerators' memory summed over
    every device (the most a sharded run can use), or the host's on CPU."""
    devices = jax.local_devices()  # another process's devices have no statistics here
    if devices[0].platform != "cpu":
        limits = []
        for d in devices:
            try:
                stats = d.memory_stats() or {}
            except Exception:  # a backend without memory statistics
                stats = {}
            limits.append(stats.get("bytes_limit"))
        if all(isinstance(x, int) and x > 0 for x in limits):
            n = len(devices) * jax.process_count()  # hosts alike: each holds as many devices
            return sum(limits) * jax.process_count(), f"the memory of {n} {devices[0].platform} device(s)"
    return host_memory()


def _largest_part(cfg: ModelConfig) -> str:
    """The fields behind the large shares (a tenth or more) of the parameters, largest first,
    with their values: the overrides to lower."""
    d = cfg.hidden_size
    parts = {
        "embed": cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2),
        "mlp": cfg.num_layers * 3 * d * cfg.mlp_hidden,
        "attn": cfg.num_layers * 2 * d * cfg.head_dim * (cfg.num_heads + cfg.num_kv_heads),
    }
    field = {"embed": "vocab_size", "mlp": "mlp_hidden", "attn": "hidden_size"}
    large = [field[k] for k in sorted(parts, key=parts.get, reverse=True)
             if parts[k] >= 0.1 * sum(parts.values())]
    return " or ".join(f"model.{f} (now {getattr(cfg, f)})" for f in large)


def check_training_fits(cfg: ModelConfig) -> None:
    """Refuse a model whose parameters and AdamW state alone exceed the memory available,
    naming the estimate, the memory and the override to lower."""
    need = cfg.num_params() * TRAIN_BYTES_PER_PARAM
    have, where = available_memory()
    if have is None or need <= have:
        return
    raise ValueError(f"the model has {cfg.num_params():.3g} parameters: training needs at least "
                     f"{human_bytes(need)} ({TRAIN_BYTES_PER_PARAM} bytes a parameter: weights, "
                     f"gradients, AdamW moments), more than {where} ({human_bytes(have)}): lower "
                     f"{_largest_part(cfg)} with --override")
