#!/usr/bin/env bash
# The noisy-neighbour figure of docs/security.md: one tenant's delivery time through
# gRPC to the recording sink, alone and then beside another tenant's fuel-exhausting
# template campaigns (one per core), in one embedded `maily serve`. Prints both times
# and their ratio.
#
#   scripts/noisy-neighbour.sh [recipients] [--release]     (default 5000, debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
recipients="${1:-5000}"
profile=()
[[ "${2:-}" == "--release" ]] && profile=(--release)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/maily/target}"
MAILY_NOISY_RECIPIENTS="$recipients" \
  cargo nextest run "${profile[@]}" --test security --no-capture \
  -E 'test(=costly_campaigns_stop_rendering_and_a_neighbours_mail_flows_beside_them)' 2>&1 | grep -E "^noisy neighbour|PASS|FAIL"
