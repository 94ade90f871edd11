#!/usr/bin/env bash
# The full presets on SmolLM2-135M-Instruct, on a 2-core CPU: each process pinned to one core.
# Resumable: run this script again after a kill and every run continues from its last finished
# condition (kept in $RUNS/.NAME.resume/). One condition of the full task set (1,284 items, passkey
# to 1,024 tokens) takes 18-25 min of one core, so disrupt (20 passes) is ~7 h of one core and
# quantize (30 passes) ~10 h: the second core helps (--only) with the last conditions of each plan.
#   nohup bash docs/disrupt-smollm2/run_full.sh > /work/runs/full.log 2>&1 &
# The results so far, while a run goes on:
#   mvjax experiment disrupt --statistics pooled --model smollm2 --out $RUNS/disrupt-full --partial-to DIR
set -u
RUNS=${RUNS:-/work/runs}
mkdir -p "$RUNS"
run() {  # log name, core, then the mvjax experiment arguments
  local name=$1 core=$2; shift 2
  /usr/bin/time -a -v -o "$RUNS/$name.time" taskset -c "$core" \
    mvjax experiment "$@" --model smollm2 >> "$RUNS/$name.log" 2>&1
  echo "$name exit $? at $(date -u +%H:%M:%S)"
}
first_piece() {  # name, pid of its main run: 0 once it has a finished piece, 1 if it exited first
  until ls "$RUNS/.$1.resume/"*.pkl > /dev/null 2>&1; do
    if ! kill -0 "$2" 2> /dev/null; then
      echo "$1 exited before its first piece (see $RUNS/$1.log): its helper is not started"
      return 1
    fi
    sleep "${POLL_S:-30}"
  done
}

# core 0: pooled statistics (the default), every condition: the paper's table with 3 control seeds,
# the top-k and layer sweeps, the ablations
run disrupt-full 0 disrupt --statistics pooled --out "$RUNS/disrupt-full" &
# core 1: per-prompt statistics (the authors' protocol), the paper's table with one seed per seeded
# control; then the pooled run's last five conditions
( run disrupt-full-prompt 1 disrupt --statistics prompt --seeds 0 --conditions table --out "$RUNS/disrupt-full-prompt"
  run disrupt-full-helper 1 disrupt --statistics pooled --out "$RUNS/disrupt-full" \
    --only sweep_top2_lowest,sweep_top4_lowest,first_token_kept,q_only,k_only ) &
wait
# quantize: the main run on core 0 (original and every int4 setting), a helper on core 1 (int8),
# started once the main run has its unmodified pass
run quantize-full 0 quantize --out "$RUNS/quantize-full" &
if first_piece quantize-full $!; then
  INT8=$(for g in tensor token channel; do for s in pre post; do printf "act_int8_%s_%s,act_int8_%s_%s_keep_massive," $g $s $g $s; done; done)
  run quantize-full-helper 1 quantize --out "$RUNS/quantize-full" --only "${INT8}w_int8,w_int8_protect" &
fi
wait
