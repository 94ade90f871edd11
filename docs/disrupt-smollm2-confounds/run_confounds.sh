#!/usr/bin/env bash
# The confounds run on SmolLM2-135M-Instruct (RULES.md beside this script fixes its rules, n and
# conditions): disrupt with --preset confounds (31 conditions: original; massive, lowest-norm,
# 10 pair-aware random seeds and 3 energy-matched seeds, each with position 0 edited and kept),
# then quantize with --preset confounds (10 int4 conditions, keep-massive and keep-random).
# Two processes, each pinned to one core; the second helps (--only) with the end of each plan once
# the first has its unmodified pass. Resumable: run this script again after a kill and every run
# continues from its last finished condition (kept in $RUNS/.NAME.resume/).
#   nohup bash docs/disrupt-smollm2-confounds/run_confounds.sh > /work/runs/confounds.log 2>&1 &
# The results so far, while a run goes on (claims applied to the finished conditions only):
#   mvjax experiment disrupt --preset confounds --model smollm2 --out $RUNS/disrupt-confounds --partial-to DIR
# Across machines (a run folder does not outlive a session): commit such a partial set, and on the
# next machine start with SEED_FROM=that/results.json: its conditions are finished pieces there
# (refused if made with other settings), the unmodified pass is scored again, the rest continues.
#   SEED_FROM=path/to/committed/partial/results.json nohup bash docs/disrupt-smollm2-confounds/run_confounds.sh ...
# STAGES=quantize skips the disrupt stage (finished and committed under disrupt/); QSEED_FROM seeds
# the quantize stage from a committed partial quantize set as SEED_FROM does disrupt's.
set -u
RUNS=${RUNS:-/work/runs}
mkdir -p "$RUNS"
run() {  # log name, core, then the mvjax experiment arguments
  local name=$1 core=$2; shift 2
  /usr/bin/time -a -v -o "$RUNS/$name.time" taskset -c "$core" \
    mvjax experiment "$@" --preset confounds --model smollm2 >> "$RUNS/$name.log" 2>&1
  echo "$name exit $? at $(date -u +%H:%M:%S)"
}
# the helper waits for the main run's unmodified pass (its piece is named "baseline": the file is
# the name's sha256, 16 hex digits), not for any piece: a seeded run has finished pieces at once
baseline_piece() { until [ -f "$RUNS/.$1.resume/$(printf baseline | sha256sum | cut -c1-16).pkl" ]; do sleep 30; done; }

STAGES=" ${STAGES:-disrupt quantize} "
# disrupt: core 0 scores the plan in order (the baseline pass first); core 1, once the baseline is
# there, scores random seeds 5-9 and the energy-matched seeds, both position-0 variants (16 of 30)
if [[ $STAGES == *" disrupt "* ]]; then
  SEED=(); [ -n "${SEED_FROM:-}" ] && SEED=(--seed-from "$SEED_FROM")
  run disrupt-confounds 0 disrupt --out "$RUNS/disrupt-confounds" "${SEED[@]}" &
  baseline_piece disrupt-confounds
  HELP=$(for s in 5 6 7 8 9; do printf "random_s%s,keep0_random_s%s," $s $s; done
         for s in 0 1 2; do printf "energy_matched_s%s,keep0_energy_matched_s%s," $s $s; done)
  run disrupt-confounds-helper 1 disrupt --out "$RUNS/disrupt-confounds" --only "${HELP%,}" &
  wait  # the main process waits for the helper's conditions (or takes over a dead helper's), then writes
fi
# quantize: core 0 in order, core 1 the per-channel settings and the protected weights
if [[ $STAGES == *" quantize "* ]]; then
  QSEED=(); [ -n "${QSEED_FROM:-}" ] && QSEED=(--seed-from "$QSEED_FROM")
  run quantize-confounds 0 quantize --out "$RUNS/quantize-confounds" "${QSEED[@]}" &
  baseline_piece quantize-confounds
  run quantize-confounds-helper 1 quantize --out "$RUNS/quantize-confounds" \
    --only act_int4_channel_post,act_int4_channel_post_keep_massive,act_int4_channel_post_keep_random,w_int4_protect,w_int4_protect_random &
  wait
fi
