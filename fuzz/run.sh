#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, one after the other.
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
# New inputs go to fuzz/corpus/<target> (ignored by git); the committed seeds are read
# from fuzz/seeds/<target>. Crashes land in fuzz/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(smtp_reply dsn arf verp bounce sink_session)
# Keep fuzz builds away from the workspace's target directory.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/maily/fuzz-target}"
for t in "${targets[@]}"; do
    # SMTP replies and addresses are short; reports are not.
    case "$t" in
        smtp_reply) max_len=4096 ;;
        verp) max_len=1024 ;;
        *) max_len=65536 ;;
    esac
    mkdir -p "corpus/$t"
    echo "== $t (${seconds}s)"
    cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -max_len="$max_len" -print_final_stats=1
done
