"""Experiment configuration: ``ExperimentConfig{model, data, train}`` read from one YAML file, with
``--override a.b.c=value`` edits applied before validation.

Why one file: an experiment's identity (model, data, schedule) is recorded beside its checkpoints and
compared on resume; overrides let a test or a sweep shrink a named config without copying it.
Validation raises one-line ``ValueError``s naming the field and the fix, like ``mvjax.config``.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from mvjax.config import ModelConfig, from_mapping, invalid, parse_text, parse_value, to_plain
from mvjax.data import DataConfig

OPTIMIZERS = ("adamw",)
SCHEDULES = ("cosine", "constant", "wsd")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup then cosine decay to ``min_lr_ratio * lr``.

    decay_norms / decay_embeddings: whether weight decay also applies to RMSNorm weights and the
    embedding table (off by default: decaying them shrinks scales the model needs).
    grad_clip: global-norm clip (0 disables).
    """

    name: str = "adamw"
    lr: float = 3e-3
    warmup_steps: int = 50
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    decay_steps: int = 0  # wsd: constant, then linear to min_lr_ratio * lr over the last decay_steps
    decay_norms: bool = False
    decay_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            invalid("train.optim.name", self.name, f"use one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            invalid("train.optim.schedule", self.schedule, f"use one of {SCHEDULES}")
        if not self.lr > 0:
            invalid("train.optim.lr", self.lr, "use a positive learning rate, e.g. 3e-3")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            invalid("train.optim.warmup_steps", self.warmup_steps, "use a non-negative integer")
        if not isinstance(self.decay_steps, int) or self.decay_steps < 0:
            invalid("train.optim.decay_steps", self.decay_steps, "use a non-negative integer")
        if not 0 <= self.min_lr_ratio <= 1:
            invalid("train.optim.min_lr_ratio", self.min_lr_ratio, "must lie in [0, 1]")
        for name in ("b1", "b2"):
            if not 0 <= getattr(self, name) < 1:
                invalid(f"train.optim.{name}", getattr(self, name), "must lie in [0, 1)")
        if not self.eps > 0:
            invalid("train.optim.eps", self.eps, "must be positive, e.g. 1e-8")
        if self.weight_decay < 0:
            invalid("train.optim.weight_decay", self.weight_decay, "must be >= 0")
        if self.grad_clip < 0:
            invalid("train.optim.grad_clip", self.grad_clip, "must be >= 0 (0 disables clipping)")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How long and how to train, and what to record.

    grad_accum: micro-batches per step (data.batch_size must divide by it).
    loss_chunk: tokens per chunk of the output projection + cross-entropy, so the B×T×V logits are
      never held at once (0: one chunk).
    mesh_data / mesh_fsdp: device mesh shape (-1 on one axis: all remaining devices).
    peak_flops: per-device FLOP/s that MFU is measured against.
    concentration_every: every N steps, log per layer and site (q_rot/k_rot/v) the median over
      heads of max/mean of the per-(head,dim) L2 norms, and the λ=5 massive count, on one eval
      batch (0: never).
    max_loss_factor: a step whose loss exceeds this many times the larger of the run's first loss
      and the uniform-prediction loss ln(vocab) stops the run as diverged, like a NaN (0: never).
      Divergence can stay finite (lr 10: loss 10 → 7,744), and must not end in a saved model.
    """

    steps: int = 1000
    seed: int = 0
    grad_accum: int = 1
    loss_chunk: int = 2048
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 4
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    concentration_every: int = 0
    peak_flops: float = 150e9
    max_loss_factor: float = 2.0
    mesh_data: int = -1
    mesh_fsdp: int = 1
    distributed: bool = False
    progress: bool = True
    optim: OptimConfig = OptimConfig()

    def __post_init__(self) -> None:
        if isinstance(self.optim, dict):
            object.__setattr__(self, "optim", from_mapping(OptimConfig, self.optim, "train.optim"))
        for name in ("steps", "grad_accum", "log_every", "keep_checkpoints", "eval_batches"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                invalid(f"train.{name}", v, "must be a positive integer")
        for name in ("loss_chunk", "eval_every", "checkpoint_every", "concentration_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                invalid(f"train.{name}", v, "must be a non-negative integer (0 disables)")
        for name in ("mesh_data", "mesh_fsdp"):
            v = getattr(self, name)
            if not isinstance(v, int) or (v <= 0 and v != -1):
                invalid(f"train.{name}", v, "must be a positive integer or -1 (all remaining devices)")
        if self.mesh_data == -1 and self.mesh_fsdp == -1:
            invalid("train.mesh_fsdp", -1, "only one of mesh_data / mesh_fsdp may be -1")
        if not self.peak_flops > 0:
            invalid("train.peak_flops", self.peak_flops, "must be positive FLOP/s, e.g. 150e9")
        if not (self.max_loss_factor == 0 or self.max_loss_factor > 1):
            invalid("train.max_loss_factor", self.max_loss_factor, "must be > 1, or 0 to disable")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a training run. ``data`` is an ``mvjax.data.DataConfig``."""

    model: ModelConfig
    data: Any
    train: TrainConfig = TrainConfig()

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", ModelConfig.from_dict(self.model))
        if isinstance(self.data, dict):
            object.__setattr__(self, "data", DataConfig.from_dict(self.data))
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", from_mapping(TrainConfig, self.train, "train"))
        if self.data.batch_size % self.train.grad_accum:
            invalid("train.grad_accum", self.train.grad_accum,
                  f"must divide data.batch_size={self.data.batch_size}")
        if self.data.seq_len > self.model.max_seq_len:
            invalid("data.seq_len", self.data.seq_len,
                  f"exceeds model.max_seq_len={self.model.max_seq_len}; shorten it or raise max_seq_len")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "data": to_plain(self.data),
                "train": to_plain(self.train)}

    @classmethod
    def from_dict(cls, data: Any, overrides: list[str] | tuple[str, ...] = ()) -> "ExperimentConfig":
        if not isinstance(data, dict):
            raise ValueError(f"experiment config must be a mapping with model/data/train; got "
                             f"{type(data).__name__}")
        data = apply_overrides(data, overrides)
        unknown = sorted(set(data) - {"model", "data", "train"})
        if unknown:
            raise ValueError(f"experiment config: unknown section(s) {unknown}; use model, data, train")
        for section in ("model", "data"):
            if section not in data:
                raise ValueError(f"experiment config lacks a '{section}' section: add one")
        return cls(model=data["model"], data=data["data"], train=data.get("train", {}))

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> "ExperimentConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"experiment config {path} does not exist: pass a file from "
                                    "configs/, e.g. configs/tiny-rope.yaml")
        return cls.from_dict(parse_text(path.read_text(), f"experiment config {path}"), overrides)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Return a copy of ``data`` with each ``a.b.c=value`` applied (value parsed as JSON/YAML).
    The key's parent must exist, so a typo fails instead of adding a silent field."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is invalid: write it as key.path=value, "
                             "e.g. train.steps=100")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ValueError(f"override {item!r} has an empty key: write e.g. train.steps=100")
        node = data
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part) if isinstance(node, dict) else None
            if nxt is None and isinstance(node, dict) and len(parts) - i > 1:
                nxt = node.setdefault(part, {}) if part in ("train", "optim") else None
            if not isinstance(nxt, dict):
                raise ValueError(f"override {item!r}: '{'.'.join(parts[:i + 1])}' is not a section "
                                 "of the config; check the key")
            node = nxt
        node[parts[-1]] = parse_value(raw.strip())
    return data
