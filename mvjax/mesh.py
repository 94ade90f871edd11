"""The device mesh of the experiments (``--mesh data=N,model=M``): items split over ``data``,
parameters split over ``model`` (attention heads and MLP columns, Megatron style), the KV cache
split over the same heads.

Why a second table beside ``mvjax.sharding``'s training rules: training splits every kernel over
``fsdp`` and gathers it per use (the optimizer state dominates); scoring holds no optimizer state,
so a model larger than one device is split the way its heads compute — each device holds 1/M of
the heads and MLP columns and only the attention output and MLP output are summed across
``model``. The partition machinery (``spec_for``: uneven dims replicate, ``put_global`` /
``fetch_global`` across processes) is the training code's.

A model placed with ``place_model`` carries its mesh in its parameters' shardings, so the scorer
(``analysis.evaluate``), perplexity and ``mvjax.generate`` find it there: nothing between the
command line and them has to pass it along. Every reduction over items (statistics, summed
log-likelihoods) is an ordinary sum in the jitted pass; XLA adds the cross-device sum, and padded
rows (a batch rounded up to a multiple of ``data``) are masked out as any padding is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from typing import Any, Iterator

import jax
import numpy as np
from jax._src import distributed
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mvjax import sharding as shd
from mvjax.memory_budget import human_bytes

AXES = ("data", "model")
FLAG = "--mesh"

# (regex on the dotted leaf path, partition per dim). in×out kernels: the projections into heads
# or MLP columns split their columns, the projections out of them split their rows.
RULES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"embed\.embedding$", (None, "model")),   # V×d: split the width, as training does
    (r"lm_head\.kernel$", (None, "model")),    # d×V: split the vocabulary
    (r"(q|k|v|gate|up)_proj\.kernel$", (None, "model")),
    (r"(o|down)_proj\.kernel$", ("model", None)),
    (r"norm\.weight$", (None,)),
    (r"_proj\.bias$", (None,)),                # q/k/v biases (``qkv_bias``): replicated
    (r"attn\.scheme\.", ()),
)
# kernels whose split must fall between heads, with the config field counting those heads
HEADS = ((r"(q|o)_proj\.kernel$", "num_heads"), (r"(k|v)_proj\.kernel$", "num_kv_heads"))


@dataclasses.dataclass(frozen=True)
class MeshShape:
    """``data`` × ``model`` devices; the default is one device."""

    data: int = 1
    model: int = 1

    @property
    def size(self) -> int:
        return self.data * self.model

    def __str__(self) -> str:
        return f"data={self.data},model={self.model}"


def parse_mesh(text: str | None) -> MeshShape:
    """``"data=8"``, ``"model=4"``, ``"data=2,model=4"`` (an axis left out is 1; ``data=-1``
    takes every device the model axis leaves)."""
    if text is None or not text.strip():
        return MeshShape()
    sizes = {"data": 1, "model": 1}
    for part in text.split(","):
        key, eq, value = part.strip().partition("=")
        try:
            n = int(value)
        except ValueError:
            n = 0
        if not eq or key.strip() not in sizes or not (n >= 1 or (key.strip() == "data" and n == -1)):
            raise ValueError(f"{FLAG} {text!r} is invalid: write data=N,model=M with positive "
                             "integers (data=-1: all remaining devices), e.g. --mesh data=2,model=4")
        sizes[key.strip()] = n
    if sizes["data"] == -1:
        n = jax.device_count()
        if n % sizes["model"]:
            raise ValueError(f"{FLAG} {text!r}: model={sizes['model']} does not divide the {n} "
                             "devices: choose a model axis that does")
        sizes["data"] = n // sizes["model"]
    return MeshShape(**sizes)


def build_mesh(shape: MeshShape) -> Mesh:
    """A data × model mesh over the first ``shape.size`` devices (all of them across processes,
    where every process must hold its part)."""
    devices = jax.devices()
    if shape.size > len(devices) or (jax.process_count() > 1 and shape.size != len(devices)):
        need = "exactly" if jax.process_count() > 1 else "at most"
        raise ValueError(f"{FLAG} {shape} asks for {shape.size} devices; use {need} the "
                         f"{len(devices)} there are (e.g. {FLAG} data={len(devices)})")
    return Mesh(np.asarray(devices[:shape.size]).reshape(shape.data, shape.model), AXES)


def param_spec(name: str, shape: tuple[int, ...], mesh: Mesh, cfg) -> P:
    """A parameter's partition: ``RULES``, replicated where the split would cut a head (or a dim
    does not divide)."""
    name = re.sub(r"\.value$", "", name)  # an nnx.Variable's array
    spec = shd.spec_for(name, shape, mesh, RULES)
    for pattern, field in HEADS:
        if re.search(pattern, name) and getattr(cfg, field) % mesh.shape["model"]:
            return P(*(None for _ in shape))
    return spec


def param_shardings(state: Any, mesh: Mesh, cfg) -> Any:
    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(mesh, param_spec(shd.leaf_path(path), tuple(x.shape), mesh, cfg)),
        state)


def per_device_bytes(state: Any, mesh: Mesh, cfg) -> int:
    """Bytes of parameters the most loaded device holds under ``param_shardings``."""
    total = 0
    for path, x in jax.tree_util.tree_leaves_with_path(state):
        spec = param_spec(shd.leaf_path(path), tuple(x.shape), mesh, cfg)
        parts = int(np.prod([mesh.shape[a] for a in spec if a is not None] or [1]))
        total += int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize // parts
    return total


def device_memory() -> tuple[int | None, str]:
    """(bytes one device may hold, where that number comes from): ``MVJAX_DEVICE_MEMORY`` (e.g.
    ``2GiB``, a cap for planning or for simulated CPU devices), else the accelerator's own limit,
    else None (a CPU device shares the host's memory; ``mvjax.memory_budget`` checks that)."""
    cap = os.environ.get("MVJAX_DEVICE_MEMORY")
    if cap:
        return parse_bytes(cap), "MVJAX_DEVICE_MEMORY"
    stats = getattr(jax.local_devices()[0], "memory_stats", lambda: None)()
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{jax.local_devices()[0].device_kind} memory"
    return None, ""


def parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]i?B?|B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"MVJAX_DEVICE_MEMORY={text!r} is invalid: give bytes, e.g. 512MiB or 2GiB")
    unit = (m.group(2) or "B").upper()[0]
    return int(float(m.group(1)) * 1024 ** "BKMGT".index(unit))


class _Plan:
    """A mesh's axis sizes only: enough for ``per_device_bytes`` of a mesh not built."""

    def __init__(self, shape: MeshShape):
        self.shape = {"data": shape.data, "model": shape.model}


def check_fits(state: Any, mesh: Mesh, cfg, shape: MeshShape) -> None:
    """Refuse, before any device holds a byte, parameters whose share on one device exceeds that
    device's memory, naming the ``--mesh`` that would split them finely enough (a lower bound: no
    activations or cache counted, so only what cannot run is refused)."""
    limit, where = device_memory()
    if limit is None:
        return
    need = per_device_bytes(state, mesh, cfg)
    if need <= limit:
        return
    fits = [m for m in range(shape.model + 1, cfg.num_heads + 1)
            if per_device_bytes(state, _Plan(MeshShape(shape.data, m)), cfg) <= limit]
    fix = (f"split them over devices with {FLAG} data={shape.data},model={fits[0]}" if fits else
           f"no {FLAG} model axis fits them (at most num_heads={cfg.num_heads}): use larger devices")
    raise ValueError(f"the model's parameters take {human_bytes(need)} on one device with "
                     f"{FLAG} {shape}, more than its {human_bytes(limit)} ({where}): {fix}")


def place_model(model, shape: MeshShape | str | None) -> Mesh:
    """Put ``model``'s parameters on the mesh ``shape`` (after ``check_fits``), in place; returns
    the mesh. Every process calls it with the same model (same weights, e.g. loaded from disk)."""
    from flax import nnx  # local: flax takes seconds and `mvjax --help` imports mvjax.mesh

    if shape is None and jax.process_count() > 1:
        shape = "data=-1"  # a multi-process run: every device, items split over them
    shape = parse_mesh(shape) if shape is None or isinstance(shape, str) else shape
    mesh = build_mesh(shape)
    state = nnx.state(model)
    check_fits(state, mesh, model.cfg, shape)
    nnx.update(model, shd.put_global(state, param_shardings(state, mesh, model.cfg)))
    meet("placed")
    return mesh


_MEETINGS = [0]
MEET_TIMEOUT_S = 4 * 3600  # a process may be a whole condition behind (tens of minutes on a CPU)


def meet(what: str) -> None:
    """Wait until every process of a multi-process run gets here (a no-op in one process). The
    wait is the coordination service's barrier, not a device collective: the collectives' own
    rendezvous (gloo on CPU) gives up after 30 s, which a process still compiling can exceed."""
    if jax.process_count() == 1:
        return
    _MEETINGS[0] += 1
    distributed.global_state.client.wait_at_barrier(f"mvjax-{_MEETINGS[0]}-{what}",
                                                    MEET_TIMEOUT_S * 1000)


def mesh_of(tree: Any) -> Mesh | None:
    """The mesh the arrays of ``tree`` are placed on by ``place_model`` (None: not placed)."""
    for leaf in jax.tree.leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding) and tuple(sharding.mesh.axis_names) == AXES:
            return sharding.mesh
    return None


def data_size(mesh: Mesh | None) -> int:
    return 1 if mesh is None else mesh.shape["data"]


def rows(batch: int, mesh: Mesh | None) -> int:
    """``batch`` rounded up to a multiple of the data axis (the extra rows are padding)."""
    d = data_size(mesh)
    return -(-batch // d) * d


def put_batch(x: Any, mesh: Mesh | None) -> Any:
    """Host arrays with items on axis 0 → split over ``data`` (replicated when the row count does
    not divide); unchanged without a mesh."""
    if mesh is None:
        return x
    return jax.tree.map(lambda a: shd.put_global(a, NamedSharding(
        mesh, P("data") if np.shape(a)[0] % mesh.shape["data"] == 0 else P())), x)


def put_like(value: np.ndarray, like: jax.Array) -> jax.Array:
    """``value`` placed as ``like`` is (so an edited copy of a sharded parameter stays sharded)."""
    sharding = getattr(like, "sharding", None)
    if isinstance(sharding, NamedSharding):
        return shd.put_global(np.asarray(value), sharding)
    return jax.numpy.asarray(value)


def fetch(tree: Any) -> Any:
    """Host copies of results, gathered from every process when the mesh spans several."""
    return shd.fetch_global(tree)


@contextlib.contextmanager
def active(mesh: Mesh | None) -> Iterator[None]:
    """Make ``mesh`` the one in-jit constraints (``constrain``) refer to."""
    if mesh is None:
        yield
        return
    with jax.set_mesh(mesh):
        yield


def constrain(x: jax.Array, *axes: str | None) -> jax.Array:
    """``x`` constrained to be split along ``axes`` on the active mesh (``active``); an axis that
    is not in the mesh or does not divide its dim is left whole. A no-op outside a mesh."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or tuple(mesh.axis_names) != AXES:
        return x
    spec = P(*(a if a is not None and x.shape[i] % mesh.shape[a] == 0 else None
               for i, a in enumerate(axes)))
    return jax.lax.with_sharding_constraint(x, spec)
