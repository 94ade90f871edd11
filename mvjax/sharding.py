"""One device mesh with ``data`` and ``fsdp`` axes, and a short table of partition rules.

Why this shape: the same training code runs on 1 CPU, 8 fake CPU devices, one GPU or a TPU slice;
only the mesh shape changes. Batches are split over both axes (every device sees different rows);
parameters and their optimizer moments are split over ``fsdp`` along the dim the rule names, and a dim
that does not divide evenly is replicated instead (so tiny test models still shard).

Launching:
  * one host, any number of local devices: nothing to do; ``make_mesh(data=-1)`` uses them all.
  * fake devices on CPU (tests): ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` set before
    jax is imported.
  * several processes (TPU pod slice, multi-node GPU, or several CPU processes on one machine):
    run the same command in every process with ``train.distributed=true``.
    ``initialize_distributed`` joins them through ``jax.distributed.initialize`` before any other
    jax call: with ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` set it uses those; otherwise jax detects the TPU/SLURM environment. Every
    process feeds its own rows of each batch; process 0 writes the logs and the final model. On
    CPU the processes talk over gloo (tested: 2 processes × 4 devices = 1 process, to 1e-5).
"""

from __future__ import annotations

import os
import re
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp")

# (regex searched in the dotted leaf path, partition of each dim). First match wins. Paths of
# optimizer moments end with the parameter's path, so the same rules shard them.
RULES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"embed\.embedding$", (None, "fsdp")),          # V×d: split the width (V is often odd)
    (r"lm_head\.kernel$", ("fsdp", None)),           # d×V
    (r"_proj\.kernel$", ("fsdp", None)),             # in×out attention and MLP kernels
    (r"_proj\.bias$", (None,)),                      # q/k/v biases (``qkv_bias``): replicate
    (r"norm\.weight$", (None,)),                     # tiny: replicate
    (r"attn\.scheme\.", ()),                          # a learned positional scheme's: replicate
)


ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize_distributed(enabled: bool) -> None:
    """Join a multi-process run (see the module docstring); a no-op when not enabled or joined."""
    if not enabled or jax.distributed.is_initialized():
        return
    given = [os.environ.get(k) for k in ENV]
    if any(given) and not all(given):
        raise ValueError(f"set all of {', '.join(ENV)} for a multi-process run, or none of them "
                         "(then jax detects a TPU/SLURM cluster)")
    if all(given):
        jax.distributed.initialize(given[0], int(given[1]), int(given[2]))
    else:
        jax.distributed.initialize()


def put_global(tree: Any, shardings: Any) -> Any:
    """Place host values that every process holds in full (same seed, same data) as global arrays;
    unlike ``jax.device_put`` this also works when the mesh spans other processes' devices."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    return jax.tree.map(lambda x, s: jax.make_array_from_callback(
        np.shape(x), s, lambda index: np.asarray(x)[index]), tree, shardings)


def fetch_global(tree: Any) -> Any:
    """Host copies of global arrays on every process (gathered when sharded across processes)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def make_mesh(data: int = -1, fsdp: int = 1, devices: list | None = None) -> Mesh:
    """A data × fsdp mesh over ``devices`` (default: all); one axis may be -1 (the rest)."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if data == -1:
        data = n // fsdp if fsdp > 0 and n % fsdp == 0 else 0
    elif fsdp == -1:
        fsdp = n // data if data > 0 and n % data == 0 else 0
    if data <= 0 or fsdp <= 0 or data * fsdp != n:
        raise ValueError(f"mesh data={data} x fsdp={fsdp} does not cover the {n} devices: choose "
                         f"train.mesh_data x train.mesh_fsdp = {n} (or -1 for one axis)")
    return Mesh(np.asarray(devices).reshape(data, fsdp), AXES)


def leaf_path(path: tuple) -> str:
    """Dotted name of a pytree leaf, e.g. ``layers.0.attn.q_proj.kernel``: what the partition rules
    and the optimizer's weight-decay mask match on."""
    return jax.tree_util.keystr(path, simple=True, separator=".")


def spec_for(name: str, shape: tuple[int, ...], mesh: Mesh, rules: tuple = RULES) -> P:
    """The PartitionSpec the rule table gives a leaf; uneven dims fall back to replication.
    ``rules``: training's table (default) or the experiments' (``mvjax.mesh.RULES``)."""
    if len(shape) == 0:
        return P()
    for pattern, dims in rules:
        if re.search(pattern, name):
            if not dims:  # any shape, replicated
                return P()
            if len(dims) != len(shape):
                raise ValueError(f"partition rule {pattern!r} has {len(dims)} dims but {name} has "
                                 f"shape {shape}: fix its RULES table (mvjax/sharding.py, mvjax/mesh.py)")
            return P(*(a if a is None or shape[i] % mesh.shape[a] == 0 else None
                       for i, a in enumerate(dims)))
    raise ValueError(f"no partition rule matches {name} (shape {shape}): add one to its RULES "
                     "table (mvjax/sharding.py, mvjax/mesh.py)")


def tree_shardings(tree: Any, mesh: Mesh) -> Any:
    """NamedShardings for every leaf of ``tree`` (arrays or ShapeDtypeStructs) by the rule table."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(mesh, spec_for(leaf_path(path), tuple(x.shape), mesh)), tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows split over every device (both axes), columns whole."""
    return NamedSharding(mesh, P(AXES))


def check_batch(batch_size: int, mesh: Mesh) -> None:
    if batch_size % mesh.size:
        raise ValueError(f"data.batch_size={batch_size} must be a multiple of the {mesh.size} "
                         "devices in the mesh: change the batch size or the mesh")
