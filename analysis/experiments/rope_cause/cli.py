"""``mvjax experiment rope-cause``'s flags → a ``Preset`` (``analysis.experiments.rope_cause.presets``)
and the run (``analysis.experiments.rope_cause.run``); ``ROPE_CAUSE`` is its registry entry."""

from __future__ import annotations

import argparse
import dataclasses
import json

from mvjax.analysis.experiments.rope_cause.presets import PRESETS
from mvjax.analysis.experiments.rope_cause.run import run
from mvjax.analysis.experiments.spec import Command, add_mesh_arg


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=[n for n in PRESETS], default="quick",
                   help="scale: test (seconds, CI), quick (<= 10 min on 2 CPU cores), cpu (about "
                   "an hour per arm), gpu")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    p.add_argument("--reference", default=None,
                   help="pretrained model measured the same way (any name or path `mvjax analyze` "
                   "accepts; default: smollm2 except for the test preset; 'none' skips it)")
    p.add_argument("--arms", default=None,
                   help="comma-separated subset of the preset's arms to run (default: all, in the "
                   "preset's order); a resume may name other arms of the same preset")
    p.add_argument("--seed", type=int, default=0,
                   help="training and data seed of every arm (init, data order, the mixture's "
                   "episodes and facts; default 0); seeds are the units of replication")
    p.add_argument("--train-only", action="store_true",
                   help="train the arms and stop (a later --resume analyzes them)")
    p.add_argument("--stop-at", type=int, default=None,
                   help="end each arm's training invocation after this step (checkpointed)")
    add_mesh_arg(p)


def run_from_args(args: argparse.Namespace) -> int:
    preset = PRESETS[args.preset]
    if args.arms is not None:
        wanted = [a.strip() for a in args.arms.split(",") if a.strip()]
        if not wanted or any(a not in preset.arms for a in wanted):
            raise ValueError(f"--arms {args.arms!r}: use a comma-separated subset of the preset's "
                             f"arms {list(preset.arms)}")
        preset = dataclasses.replace(preset, arms=tuple(a for a in preset.arms if a in wanted))
    if args.seed < 0:
        raise ValueError(f"--seed {args.seed}: use a non-negative integer")
    preset = dataclasses.replace(preset, seed=args.seed)
    reference = preset.reference if args.reference is None else args.reference
    if reference is not None and reference.lower() == "none":
        reference = None
    results = run(preset, args.out, resume=args.resume, reference=reference, stop_at=args.stop_at,
                  train_only=args.train_only, mesh=args.mesh)
    if results is None:
        print(json.dumps({"out": args.out, "finished": False,
                          "note": "stopped early: continue with --resume"}))
        return 0
    print(json.dumps({"out": args.out, "finished": True, "claims": {
        k: c.verdict for k, c in results.claims.items()}}, indent=1))
    return 0


ROPE_CAUSE = Command(
    name="rope-cause",
    help="train matched RoPE / NoPE / ALiBi / partial-RoPE / θ arms from scratch and measure where "
    "massive values emerge",
    add_flags=add_flags, run=run_from_args)
