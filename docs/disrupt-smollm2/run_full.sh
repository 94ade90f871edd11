#!/usr/bin/env bash
# The full presets on SmolLM2-135M-Instruct, one after the other, pinned to core 0 and niced so
# other work keeps priority. Resumable: run this script again after a kill and each experiment
# continues from its last finished condition (kept in /work/runs/.NAME.resume/).
#   nohup bash docs/disrupt-smollm2/run_full.sh > /work/runs/full.log 2>&1 &
set -u
RUNS=${RUNS:-/work/runs}
mkdir -p "$RUNS"
run() {  # name, then the mvjax arguments
  local name=$1; shift
  /usr/bin/time -v -o "$RUNS/$name.time" taskset -c 0 nice -n 10 \
    mvjax experiment "$@" --model smollm2 --out "$RUNS/$name" > "$RUNS/$name.log" 2>&1
  echo "$name exit $? at $(date -u +%H:%M:%S)"
}
run disrupt-full disrupt --statistics pooled
run disrupt-full-prompt disrupt --statistics prompt
run quantize-full quantize
