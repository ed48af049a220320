#!/usr/bin/env bash
# The long profile of the crash-safety harness (tests/chaos.rs): several seeded runs of
# a 100,000-recipient campaign with several faults each, on both profiles, through the
# public gRPC API, counted at a recording sink. Prints one report line per run.
#
#   scripts/chaos.sh [runs] [faults] [recipients]     (defaults: 10 5 100000)
#
# Seeds are 1..runs, so a run is reproduced with MAILY_CHAOS_SEED=<n>. The short
# profile runs with the test suite (scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10}"
faults="${2:-5}"
recipients="${3:-100000}"

scripts/services.sh
scripts/kafka.sh install >/dev/null
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/maily/target}"
out="${MAILY_CHAOS_OUT:-chaos-$(date +%Y%m%d-%H%M%S).log}"
for seed in $(seq 1 "$runs"); do
  for test in production_one_process_killed_and_restarted_delivers_everything \
              embedded_process_killed_and_restarted_delivers_everything; do
    MAILY_CHAOS_SEED="$seed" MAILY_CHAOS_FAULTS="$faults" \
    MAILY_CHAOS_RECIPIENTS="$recipients" MAILY_CHAOS_SETTLE_SECS=600 \
      cargo nextest run --release --test chaos --no-capture -E "test(=$test)" 2>&1 \
      | grep -E "^chaos (plan|report)|^  (fault|all final)|PASS|FAIL" | tee -a "$out"
  done
done
echo "reports in $out"
