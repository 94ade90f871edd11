#!/usr/bin/env bash
# The band-vs-context sweep, second design (RULE-slope.md; issue 38): the scale runs' RoPE recipe (4
# layers, hidden 128, 2 heads of head_dim 64, bytes, tinyshakespeare, lr 3e-3 constant, no weight decay)
# at contexts 128 / 256 / 512 for theta 1e4 and 1e6 and seeds 0 1 2 (training and data seed), with the
# same ROWS rows per batch (default 16) at every context, each run trained on TOKENS tokens (default
# 6,000,000: past the first lambda=5 K entry of this recipe at about 4.5M), so a run has
# TOKENS / (ROWS x context) steps. The first design (RULE.md: 4,096 tokens per step, one seed, 2.5M
# tokens) is what the first table of docs/rope-band/README.md reports.
# STOP (optional, a step) ends each run there: the schedule is constant after warmup, so a stopped run is
# the same run as a shorter one, and a later call with a larger STOP (or none) continues it.
# Resumable: a run is skipped only when its summary.json says it reached STOP or finished its steps
# (final model saved), or it holds the checkpoint of step STOP; any other started run (stopped by a
# smaller STOP, by SIGTERM, or killed) resumes from its last checkpoint.
# Usage: bash docs/rope-band/sweep.sh RUNS_DIR [STOP]   (then: mvjax experiment band RUNS_DIR/* --out docs/rope-band/results)
# THETAS / CTXS / SEEDS (space-separated) pick a subset, so two cores can share the sweep (pin each:
# taskset -c 0 / -c 1): a run another call is training is refused by its lock and skipped here.
set -euo pipefail
runs="${1:-runs/band}"
stop="${2:-}"
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

rows="${ROWS:-16}"
tokens="${TOKENS:-6000000}"
for theta in ${THETAS:-10000.0 1000000.0}; do
  for ctx in ${CTXS:-128 256 512}; do
    for seed in ${SEEDS:-0 1 2}; do
      steps=$(( (tokens + rows * ctx - 1) / (rows * ctx) ))
      run_stop="${stop:-$steps}"
      out="$runs/theta$theta-ctx$ctx-s$seed"
      { reached "$out" "$run_stop" || [ -d "$out/checkpoints/$run_stop" ]; } && continue
      resume=(); [ -d "$out" ] && resume=(--resume)
      mvjax train --config configs/tiny-rope.yaml --override model.num_heads=2 \
        --override model.max_seq_len=$ctx --override data.seq_len=$ctx \
        --override data.batch_size=$rows --override train.steps=$steps \
        --override train.seed=$seed --override data.seed=$seed \
        --override "model.positional={scheme: rope, theta: $theta, layout: half, rotary_fraction: 1.0}" \
        --override train.optim.weight_decay=0.0 --override train.optim.schedule=constant \
        --override train.concentration_every=100 --override train.checkpoint_every=100 \
        --override train.eval_every=200 --out "$out" --stop-at "$run_stop" "${resume[@]}" \
        || echo "sweep: $out not finished here (locked by another call, or failed)" >&2
    done
  done
done
