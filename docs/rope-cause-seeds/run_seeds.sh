#!/usr/bin/env bash
# Claim (5) across training seeds (RULE.md): one rope-cause run per (arm, seed), each in its own
# folder under RUNS, pinned to one core; each finished run's results (JSON, report, figures; never
# checkpoints) are copied to docs/rope-cause-seeds/<arm>/seed<s>/. Resumable: rerun the same
# command after a kill (a finished run is only re-collected).
#   docs/rope-cause-seeds/run_seeds.sh CORE RUNS ARM:SEED [ARM:SEED ...]
# e.g. docs/rope-cause-seeds/run_seeds.sh 0 runs/seeds rope:0 rope:1 rope:2
set -euo pipefail
core="$1"; runs="$2"; shift 2
here="$(cd "$(dirname "$0")" && pwd)"
for job in "$@"; do
  arm="${job%%:*}"; seed="${job##*:}"
  out="$runs/$arm-s$seed"
  resume=(); [ -f "$out/experiment.json" ] && resume=(--resume)
  taskset -c "$core" mvjax experiment rope-cause --preset retrieval --arms "$arm" --seed "$seed" \
    --reference none --out "$out" "${resume[@]}"
  dest="$here/$arm/seed$seed"
  mkdir -p "$dest"
  cp "$out/results.json" "$out/report.md" "$dest/"
  cp "$out/arms/$arm/disrupt.json" "$out/arms/$arm/tasks.json" "$dest/"
  rm -rf "$dest/figures"; cp -r "$out/figures" "$dest/figures"
done
