"""Model directories: an orbax checkpoint of the parameters beside the config (and tokenizer).

Layout of a model directory (what ``mvjax convert`` writes and ``load_model`` reads)::

    DIR/config.json        ModelConfig
    DIR/params/            orbax StandardCheckpointer tree of the nnx.Param state
    DIR/tokenizer.json     (or byte_tokenizer.json) the tokenizer, when known

Training checkpoints (optimizer state, data position, PRNG) live in train/ and are made loadable
here by pointing ``load_model`` at a training run directory's exported model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from mvjax.atomic import atomic_directory
from mvjax.config import ModelConfig
from mvjax.model import Transformer, abstract_state
from mvjax.sharding import leaf_path
from mvjax.tokenizers import Tokenizer

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
# Arrays are stored in chunks of at most this size, so a reader can fetch rows of a large table
# (the embedding) without decoding all of it: ``mvjax.layerwise.CheckpointWeights.embed``.
CHUNK_BYTES = 4 << 20


def save_model(directory: str | Path, model: Transformer, tokenizer: Tokenizer | None = None) -> Path:
    """Write config, parameters and tokenizer atomically."""
    with atomic_directory(directory) as tmp:
        model.cfg.save(tmp / CONFIG_FILE)
        state = nnx.state(model, nnx.Param)
        chunked = jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=CHUNK_BYTES), state)
        with ocp.StandardCheckpointer(multiprocessing_options=_this_process_only()) as ckpt:
            ckpt.save(tmp / PARAMS_DIR, state, save_args=chunked)
        if tokenizer is not None:
            tokenizer.save(tmp)
    return Path(directory).absolute()


def _this_process_only() -> ocp.options.MultiprocessingOptions:
    """A model directory is written by one process with host arrays (in a multi-process run, the
    lead process after gathering), so orbax must not wait for the others at its barriers."""
    me = jax.process_index()
    return ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})


def is_model_dir(directory: str | Path) -> bool:
    d = Path(directory)
    return (d / CONFIG_FILE).is_file() and (d / PARAMS_DIR).is_dir()


def stored_param_tree(params_dir: Path) -> dict[str, Any]:
    """The stored parameter tree's metadata (shapes, dtypes, storage), read without any array."""
    try:
        with ocp.PyTreeCheckpointer() as ckpt:
            return ckpt.metadata(params_dir).item_metadata.tree
    except Exception as e:  # orbax raises many types for a damaged directory
        raise ValueError(f"cannot read the checkpoint metadata in {params_dir} "
                         f"({type(e).__name__}): the model directory is corrupt; convert it again") from e


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """{"layers.0.attn.q_proj.kernel": shape} for a stored tree or an abstract nnx state."""
    # orbax stores each nnx.Variable as {"value": array}
    return {leaf_path(path).removesuffix(".value"): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_param_shapes(stored_tree: dict[str, Any], abstract: nnx.State, where: Path) -> None:
    """Refuse parameters that are not exactly the ones the config builds (a hand-edited or stale
    config.json would otherwise run on kernels of another shape), naming the first that differs."""
    stored, expected = _shapes(stored_tree), _shapes(nnx.to_pure_dict(abstract))
    for name in sorted(stored.keys() | expected.keys()):
        if stored.get(name) != expected.get(name):
            raise ValueError(f"{where}: parameter {name} is stored with shape "
                             f"{stored.get(name, '(missing)')} but {CONFIG_FILE} implies "
                             f"{expected.get(name, '(no such parameter)')}: {CONFIG_FILE} and "
                             f"{PARAMS_DIR}/ disagree; restore the config the model was saved with")


def load_model(directory: str | Path) -> Transformer:
    """Rebuild the model from a directory written by ``save_model``."""
    directory = Path(directory).absolute()
    if not is_model_dir(directory):
        raise FileNotFoundError(f"{directory} is not an mvjax model directory (needs {CONFIG_FILE} "
                                f"and {PARAMS_DIR}/): convert or train a model into it first")
    cfg = ModelConfig.load(directory / CONFIG_FILE)
    graphdef, abstract = abstract_state(cfg)
    check_param_shapes(stored_param_tree(directory / PARAMS_DIR), abstract, directory)
    # each leaf on this process's first device: without a target sharding, orbax in a
    # multi-process run compares the saved topology with the global one and refuses
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=local), abstract)
    try:
        # every process reads the whole model itself (a multi-process experiment places it on the
        # mesh afterwards, mvjax.mesh): no barrier with the others, who may be loading slower
        with ocp.StandardCheckpointer(multiprocessing_options=_this_process_only()) as ckpt:
            state = ckpt.restore(directory / PARAMS_DIR, abstract)
    except Exception as e:  # orbax raises many types for truncated / mismatched trees
        raise ValueError(f"cannot restore parameters from {directory / PARAMS_DIR} "
                         f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}): the checkpoint is "
                         "corrupt or was written for another config") from e
    return nnx.merge(graphdef, state)
