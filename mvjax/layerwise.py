"""Model weights one layer at a time, for passes that need no more than one layer in memory.

Why: statistics over a dataset (``mvjax.probe.collect_stats``) only ever need the weights of the
layer being run. Running every batch through layer 0, then every batch through layer 1, … keeps
one layer's weights (14 MB for SmolLM2-135M) plus the batches' hidden states resident, instead of
the whole model (540 MB) — and the embedding table is read once to gather the tokens' rows, then
dropped. A ``LayerWeights`` hands out exactly that: the embedded tokens, and each block's
parameters on demand.

Sources: ``ModelWeights`` (a model already in memory: no saving, same code path) and
``CheckpointWeights`` (an mvjax model directory, read tensor by tensor with orbax's partial
restore). ``mvjax.load.load_layerwise`` picks one for whatever the user typed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from flax import nnx

from mvjax.checkpoint import CONFIG_FILE, PARAMS_DIR, check_param_shapes, is_model_dir, stored_param_tree
from mvjax.config import ModelConfig
from mvjax.model import Block, Transformer, abstract_state, scale_embedded


class LayerWeights(Protocol):
    """Where a layer-at-a-time pass gets its parameters from."""

    cfg: ModelConfig

    def embed(self, batches: list[np.ndarray]) -> list[jax.Array]:
        """Each B×T token array → its B×T×hidden input embeddings (in ``cfg.dtype``)."""
        ...

    def block(self, layer: int) -> dict[str, Any]:
        """Pure-dict parameters of block ``layer`` (as ``nnx.to_pure_dict`` gives them)."""
        ...


def block_template(cfg: ModelConfig, layer: int) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, abstract state) of block ``layer`` without allocating or initializing it."""
    return nnx.split(nnx.eval_shape(lambda: Block(cfg, layer, nnx.Rngs(0))))


def block_kind(cfg: ModelConfig, layer: int) -> tuple:
    """What makes blocks differ in structure: layers with equal kinds share one template."""
    return cfg.layer_positional(layer), cfg.layer_window(layer)


def _embedded(rows: Any, cfg: ModelConfig) -> jax.Array:
    """Gathered embedding rows → the block input (``cfg.dtype``, scaled as the model scales)."""
    return scale_embedded(jnp.asarray(rows).astype(cfg.dtype), cfg)


def _gather(table: Any, batches: list[np.ndarray], cfg: ModelConfig) -> list[jax.Array]:
    """Rows of ``table`` for each batch, gathered where the table lives (a host table is never
    copied whole to the device)."""
    take = np.take if isinstance(table, np.ndarray) else jnp.take
    return [_embedded(take(table, tokens, axis=0), cfg) for tokens in batches]


class ModelWeights:
    """The layers of a model already in memory."""

    def __init__(self, model: Transformer):
        self.cfg = model.cfg
        self._state = nnx.to_pure_dict(nnx.state(model, nnx.Param))

    def embed(self, batches: list[np.ndarray]) -> list[jax.Array]:
        return _gather(self._state["embed"]["embedding"], batches, self.cfg)

    def block(self, layer: int) -> dict[str, Any]:
        return self._state["layers"][layer]


class CheckpointWeights:
    """The layers of an mvjax model directory (``mvjax.checkpoint.save_model``), each restored from
    the orbax checkpoint only when asked for, as host arrays."""

    def __init__(self, directory: str | Path):
        directory = Path(directory).absolute()
        if not is_model_dir(directory):
            raise FileNotFoundError(f"{directory} is not an mvjax model directory (needs "
                                    f"{CONFIG_FILE} and {PARAMS_DIR}/): convert or train a model into it first")
        self.cfg = ModelConfig.load(directory / CONFIG_FILE)
        self._params = directory / PARAMS_DIR
        self._tree = stored_param_tree(self._params)
        layers = self._tree.get("layers", {})
        if "embed" not in self._tree or len(layers) != self.cfg.num_layers:
            raise ValueError(f"{self._params} holds {len(layers)} layers, config.json says "
                             f"{self.cfg.num_layers}: the model directory is inconsistent; convert it again")
        check_param_shapes(self._tree, abstract_state(self.cfg)[1], directory)

    def _metadata(self, path: tuple[str, ...]) -> Any:
        """The checkpoint's metadata subtree at ``path`` (e.g. ("layers", "3"))."""
        sub = self._tree
        for key in path:
            sub = sub[key]
        return sub

    def _restore(self, path: tuple[str, ...]) -> dict[str, Any]:
        item = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), self._metadata(path))
        for key in reversed(path):
            item = {key: item}
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
        try:
            with ocp.PyTreeCheckpointer() as ckpt:
                out = ckpt.restore(self._params, args=ocp.args.PyTreeRestore(
                    item=item, restore_args=args, partial_restore=True))
        except Exception as e:
            raise ValueError(f"cannot restore {'/'.join(path)} from {self._params} "
                             f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}): the "
                             "checkpoint is corrupt; convert the model again") from e
        for key in path:
            out = out[key]
        return _strip_value(out)

    def embed(self, batches: list[np.ndarray]) -> list[jax.Array]:
        """Only the rows the batches use are read, when the table is stored in row chunks
        (``save_model`` writes ≤ 4 MB chunks: 1,536 rows of SmolLM2); a directory written as one
        chunk is restored whole (SmolLM2: +200 MB transient, against +80 MB chunked)."""
        ids = np.unique(np.concatenate([np.ravel(t) for t in batches]))
        rows = self._read_rows(("embed", "embedding"), ids)
        if rows is None:
            return _gather(self._restore(("embed",))["embedding"], batches, self.cfg)
        return [_embedded(rows[np.searchsorted(ids, t)], self.cfg) for t in batches]

    def _read_rows(self, path: tuple[str, ...], ids: np.ndarray) -> np.ndarray | None:
        """Rows ``ids`` of one stored array read straight from its TensorStore (zarr in orbax's
        OCDBT database), or None when the array is not stored in row chunks or cannot be opened
        that way (a format change in orbax): the caller then restores it whole."""
        meta = self._metadata(path)["value"]
        chunks = getattr(getattr(meta, "storage", None), "chunk_shape", None)
        if not chunks or chunks[0] >= meta.shape[0]:
            return None
        spec = {"driver": "zarr", "kvstore": {"driver": "ocdbt", "base": self._params.as_uri() + "/",
                                             "path": meta.name}}
        try:
            array = ts.open(spec, open=True, read=True).result()
            return np.asarray(array[ids].read().result())
        except Exception:  # noqa: BLE001 - any failure means: restore through orbax instead
            return None

    def block(self, layer: int) -> dict[str, Any]:
        return self._restore(("layers", str(layer)))


def _strip_value(tree: dict[str, Any]) -> dict[str, Any]:
    """orbax keeps each ``nnx.Variable`` as {"value": array}; pure dicts hold the array itself."""
    if set(tree) == {"value"} and not isinstance(tree["value"], dict):
        return tree["value"]
    return {k: _strip_value(v) if isinstance(v, dict) else v for k, v in tree.items()}
