#!/usr/bin/env bash
# What an idle engine costs the broker: a `maily serve` on the production profile
# (config/production.toml), with nothing to send, attached to a tansu broker of its
# own; prints the broker's CPU seconds per 10 s with the engine attached and, for
# comparison, before it started. Postgres and Redis are the local ones (a fresh
# schema and key prefix). The figure is in docs/kafka.md.
#
#   scripts/idle-broker.sh [fetch_wait]      (default: the configured 500ms)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/maily/target}"
cargo build --release -p maily --bin maily --quiet
maily="$CARGO_TARGET_DIR/release/maily"
tansu="${MAILY_TANSU:-$HOME/.cache/maily/tools/bin/tansu}"
[ -x "$tansu" ] || { echo "no tansu at $tansu (scripts/kafka.sh start installs it)" >&2; exit 1; }

run=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
grpc=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(cd "$run" && exec "$tansu" broker --listener-url "tcp://127.0.0.1:$port" \
  --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine sqlite://broker.db \
  >broker.log 2>&1) &
broker=$!
serve=""
cleanup() {
  [ -n "$serve" ] && kill "$serve" 2>/dev/null && wait "$serve" 2>/dev/null
  kill "$broker" 2>/dev/null; wait "$broker" 2>/dev/null
  psql -q -h 127.0.0.1 -U postgres test -c "DROP SCHEMA IF EXISTS idle_$$ CASCADE" \
    >/dev/null 2>&1 || true
  rm -rf "$run"
}
trap cleanup EXIT
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.1; done

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks=$(getconf CLK_TCK)
measure() {
  local a b
  a=$(cpu "$broker"); sleep 10; b=$(cpu "$broker")
  awk -v d=$((b - a)) -v t="$ticks" 'BEGIN { printf "%.2f", d / t }'
}

echo "broker CPU s per 10 s, no client:       $(measure)"
prefix="idle-$$."
MAILY__LOG__KAFKA__BROKERS="127.0.0.1:$port" \
MAILY__LOG__KAFKA__TOPIC_PREFIX="$prefix" MAILY__LOG__KAFKA__GROUP_PREFIX="$prefix" \
MAILY__LOG__KAFKA__FETCH_WAIT="${1:-500ms}" \
MAILY__STORE__POSTGRES__URL="${MAILY_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}" \
MAILY__STORE__POSTGRES__SCHEMA="idle_$$" MAILY__HOT__REDIS__KEY_PREFIX="$prefix" \
MAILY__GRPC__ENABLED=true MAILY__GRPC__BIND="127.0.0.1:$grpc" MAILY__ADMIN__ENABLED=false \
MAILY__METRICS__ENABLED=false MAILY__INBOUND__ENABLED=false RUST_LOG=warn \
  "$maily" serve --config config/production.toml >"$run/serve.log" 2>&1 &
serve=$!
# Started once it answers on the gRPC port; then a few seconds to settle.
until (exec 3<>"/dev/tcp/127.0.0.1/$grpc") 2>/dev/null; do
  kill -0 "$serve" 2>/dev/null || { cat "$run/serve.log" >&2; exit 1; }
  sleep 0.2
done
sleep 5
echo "broker CPU s per 10 s, idle engine (fetch_wait ${1:-500ms}): $(measure)"
echo "engine CPU s over the same kind of 10 s: $(a=$(cpu "$serve"); sleep 10; b=$(cpu "$serve"); awk -v d=$((b - a)) -v t="$ticks" 'BEGIN { printf "%.2f", d / t }')"
