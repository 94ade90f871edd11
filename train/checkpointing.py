"""Training checkpoints: params, optimizer state, step, data-iterator state, PRNG and the experiment
config, through one orbax CheckpointManager (keep-last-N, atomic: a step directory appears only once
fully written).

Why the fallbacks: a run killed mid-save, or a disk that lost a file, must not lose the run; resume
takes the newest step that restores, warning about each one it skips. Why the config check: resuming
someone else's model into this run's optimizer would silently train a different experiment, so a
differing model config is refused with the differing fields named.
"""

from __future__ import annotations

import errno
import logging
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from mvjax.atomic import disk_full
from mvjax.config import ModelConfig

CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "checkpoints_corrupt"


def corrupt_steps(run_dir: str | Path) -> list[int]:
    """Steps earlier resumes found unreadable and moved aside (``CORRUPT_DIR``)."""
    aside = Path(run_dir) / CORRUPT_DIR
    return sorted(int(p.name) for p in aside.iterdir() if p.name.isdigit()) if aside.is_dir() else []


class Checkpointer:
    """Save and restore ``{"params", "opt"}`` state plus a JSON ``meta`` record per step."""

    def __init__(self, run_dir: str | Path, keep: int):
        self.directory = Path(run_dir).absolute() / CHECKPOINT_DIR
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=False,
                                               cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "meta"))
        self.failed: list[int] = []  # steps a full disk stopped

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: dict, meta: dict[str, Any]) -> None:
        """Save ``step``; on a full disk, remove orbax's half-written tmp dir and raise one OSError
        naming ENOSPC and the checkpoint (the older checkpoints stay complete)."""
        quiet = _DropDiskFull()  # orbax's threads each log the full disk with a traceback
        logging.getLogger("absl").addFilter(quiet)
        try:
            self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                            meta=ocp.args.JsonSave(meta)), force=True)
            self.manager.wait_until_finished()
        except Exception as e:
            if not disk_full(e):
                raise
            self.failed.append(step)  # its tmp dir goes once orbax's writes have settled (close)
            sys.excepthook = _skip_closed_loop(sys.excepthook)  # those writes fail noisily
            raise OSError(errno.ENOSPC, "no space left on device saving checkpoint",
                          str(self.directory / str(step))) from None
        finally:
            logging.getLogger("absl").removeFilter(quiet)

    def restore_latest(self, abstract_state: dict, model_cfg: ModelConfig
                       ) -> tuple[int, dict, dict[str, Any]] | None:
        """(step, state, meta) of the newest checkpoint that restores, or None when there is none.
        Raises ValueError if it was written for a different model config. Unreadable newer steps
        are moved to ``checkpoints_corrupt/`` (kept for inspection, out of the way of new saves)."""
        bad: list[int] = []
        for step in reversed(self.steps()):
            try:
                meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            except Exception as e:  # orbax raises many types for truncated directories
                warnings.warn(f"checkpoint step {step} in {self.directory} is unreadable "
                              f"({type(e).__name__}); falling back to an older one", stacklevel=2)
                bad.append(step)
                continue
            check_model_config(meta, model_cfg, self.directory / str(step))
            try:
                state = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state)))["state"]
            except Exception as e:
                warnings.warn(f"checkpoint step {step} in {self.directory} is truncated or corrupt "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''});"
                              " falling back to an older one", stacklevel=2)
                bad.append(step)
                continue
            self._quarantine(bad)
            return step, state, meta
        self._quarantine(bad)
        return None

    def _quarantine(self, steps: list[int]) -> None:
        if not steps:
            return
        aside = self.directory.parent / CORRUPT_DIR
        aside.mkdir(exist_ok=True)
        for step in steps:
            shutil.rmtree(aside / str(step), ignore_errors=True)
            (self.directory / str(step)).rename(aside / str(step))
        self.manager.reload()

    def close(self) -> None:
        self.manager.close()
        for step in self.failed:
            for tmp in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(tmp, ignore_errors=True)


def _skip_closed_loop(hook):
    """``sys.excepthook`` minus the "Event loop is closed" errors of orbax writes abandoned on a
    full disk (printed by tensorstore's threads, one traceback each)."""
    def quiet(kind, value, tb):
        if not (kind is RuntimeError and "Event loop is closed" in str(value)):
            hook(kind, value, tb)
    return quiet


class _DropDiskFull(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No space left on device" not in record.getMessage()


def check_model_config(meta: dict[str, Any], model_cfg: ModelConfig, where: Path) -> None:
    saved = ModelConfig.from_dict(meta["config"]["model"])
    diff = saved.diff(model_cfg)
    if diff:
        fields = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, a, b in
                           ((k, *v) for k, v in diff.items()))
        raise ValueError(f"checkpoint {where} was written for a different model ({fields}): resume "
                         "with the original model config or train into a new --out directory")


def abstract_like(state: Any) -> Any:
    """ShapeDtypeStructs (with shardings) that orbax restores into."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
