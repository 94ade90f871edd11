#!/usr/bin/env bash
# The band-vs-context sweep (issue 24): the scale runs' RoPE recipe (4 layers, hidden 128, 2 heads of
# head_dim 64, bytes, tinyshakespeare, lr 3e-3 constant, no weight decay) at contexts 128 / 256 / 512 for
# theta 1e4 and 1e6, the same 4,096 tokens per step and 800 steps (3.3M tokens) per run, seed 0.
# STOP (default 600, 2.5M tokens) ends each run there: the schedule is constant after warmup, so a run
# stopped at STOP is the same run as one of STOP steps, and a later call with a larger STOP continues it.
# Resumable: a run is skipped only when its summary.json says it reached STOP or finished its 800 steps
# (final model saved), or it holds the checkpoint of step STOP; any other started run (stopped by a
# smaller STOP, by SIGTERM, or killed) resumes from its last checkpoint.
# Usage: bash docs/rope-band/sweep.sh RUNS_DIR [STOP]   (then: mvjax experiment band RUNS_DIR/* --out docs/rope-band)
# THETAS / CTXS (space-separated) pick a subset, so two cores can share the sweep: a run another call is
# training is refused by its lock and skipped here.
set -euo pipefail
runs="${1:-runs/band}"
stop="${2:-600}"
mkdir -p "$runs"

# reached RUN_DIR STOP: exit 0 when the run's summary.json says it trained to step STOP or finished its
# schedule (``train`` writes a summary on --stop-at and on SIGTERM too, so its presence means nothing).
reached() {
  python3 - "$1" "$2" <<'PY'
import json, sys
from pathlib import Path
out, stop = Path(sys.argv[1]), int(sys.argv[2])
try:
    summary = json.loads((out / "summary.json").read_text())
    step = int(summary["step"])
except (OSError, ValueError, TypeError, KeyError):
    sys.exit(1)  # no summary, or one cut by a kill: resume (train refuses a broken run in one line)
finished = bool(summary.get("model_dir")) and (out / "model").is_dir()
sys.exit(0 if finished or step >= stop else 1)
PY
}

for theta in ${THETAS:-10000.0 1000000.0}; do
  for ctx in ${CTXS:-128 256 512}; do
    out="$runs/theta$theta-ctx$ctx"
    { reached "$out" "$stop" || [ -d "$out/checkpoints/$stop" ]; } && continue
    resume=(); [ -d "$out" ] && resume=(--resume)
    mvjax train --config configs/tiny-rope.yaml --override model.num_heads=2 \
      --override model.max_seq_len=$ctx --override data.seq_len=$ctx \
      --override data.batch_size=$((4096 / ctx)) --override train.steps=800 \
      --override "model.positional={scheme: rope, theta: $theta, layout: half, rotary_fraction: 1.0}" \
      --override train.optim.weight_decay=0.0 --override train.optim.schedule=constant \
      --override train.concentration_every=100 --override train.checkpoint_every=100 \
      --override train.eval_every=200 --out "$out" --stop-at "$stop" "${resume[@]}" || echo "sweep: $out not finished here (locked by another call, or failed)" >&2
  done
done
