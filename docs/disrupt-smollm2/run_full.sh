#!/usr/bin/env bash
# The full presets on SmolLM2-135M-Instruct, each pinned to one core. Resumable: run this script
# again after a kill and each experiment continues from its last finished condition (kept in
# $RUNS/.NAME.resume/). A condition of the full task set (1,284 items, passkey to 1,024 tokens)
# takes 15-20 min of one core on the 2-core CPU, so a whole disrupt run (20 passes) is 5-6 h.
#   nohup bash docs/disrupt-smollm2/run_full.sh > /work/runs/full.log 2>&1 &
# The results so far, while a run goes on (conditions in the order of the paper's table):
#   mvjax experiment disrupt --statistics pooled --model smollm2 --out $RUNS/disrupt-full --partial-to DIR
set -u
RUNS=${RUNS:-/work/runs}
mkdir -p "$RUNS"
run() {  # name, core, then the mvjax arguments
  local name=$1 core=$2; shift 2
  /usr/bin/time -v -o "$RUNS/$name.time" taskset -c "$core" \
    mvjax experiment "$@" --model smollm2 --out "$RUNS/$name" > "$RUNS/$name.log" 2>&1
  echo "$name exit $? at $(date -u +%H:%M:%S)"
}
# pooled (the default): every control seed, the ablations and both sweeps
run disrupt-full 0 disrupt --statistics pooled &
# per prompt (the authors' protocol): one seed per seeded control family, to fit the CPU
run disrupt-full-prompt 1 disrupt --statistics prompt --seeds 0 &
wait
run quantize-full 0 quantize
