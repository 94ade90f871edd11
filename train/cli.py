"""``mvjax train --config configs/X.yaml [--override k=v ...] --out DIR [--resume]``."""

from __future__ import annotations

import argparse
import json
import sys

from mvjax.cli import Interrupted
from mvjax.train.config import ExperimentConfig
from mvjax.train.loop import TrainingDiverged, train


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from scratch (or resume) from an experiment config")
    p.add_argument("--config", required=True, help="experiment YAML with model/data/train sections")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="set a dotted config field, e.g. train.steps=100 (repeatable)")
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics, final model)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest good checkpoint in --out")
    p.add_argument("--stop-at", type=int, default=None,
                   help="end this invocation after this step (checkpointed; schedule unchanged)")
    p.add_argument("--start-over", action="store_true",
                   help="with --resume: if every checkpoint is unreadable, train again from step 0")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    exp = ExperimentConfig.load(args.config, args.override)
    try:
        summary = train(exp, args.out, resume=args.resume, stop_at=args.stop_at,
                        start_over=args.start_over)
    except TrainingDiverged as e:
        print(f"mvjax train: error: {e}", file=sys.stderr)
        return 3
    print(json.dumps(summary))
    if summary["interrupted_by_signal"] is not None:  # checkpointed: exit 128 + signal, say how to resume
        raise Interrupted(summary["interrupted_by_signal"])
    return 0
