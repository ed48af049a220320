#!/usr/bin/env bash
# A Kafka-API broker on loopback for tests and local development: tansu, installed
# from crates.io into a cache folder on first use (later runs reuse it).
#
#   scripts/kafka.sh start    install if needed, start on 127.0.0.1:$MAILY_KAFKA_PORT
#   scripts/kafka.sh stop     stop the broker this script started
#   scripts/kafka.sh install  only install; prints the binary's path
#
# Storage is a SQLite file in the run folder (tansu's "lite" engine), started empty;
# set MAILY_KAFKA_KEEP=1 to keep the previous data. tansu's memory:// engine is not
# used: in 0.6 it only serves record batches that start at or after the requested
# offset, so a consumer resuming inside a batch never receives it.
#
# Environment: MAILY_KAFKA_PORT (9092), MAILY_KAFKA_STORAGE (sqlite://tansu.db,
# relative to the run folder), MAILY_TOOLS_DIR (cache folder).
set -euo pipefail

tools="${MAILY_TOOLS_DIR:-$HOME/.cache/maily/tools}"
tansu="$tools/bin/tansu"
version="0.6.0"
features="dynostore,postgres,libsql"
port="${MAILY_KAFKA_PORT:-9092}"
storage="${MAILY_KAFKA_STORAGE:-sqlite://tansu.db}"
run_dir="${XDG_RUNTIME_DIR:-/tmp}/maily-kafka-$port"

install() {
  # The features are part of the cache key: a binary built without the lite engine
  # is replaced.
  if [ ! -x "$tansu" ] || [ "$(cat "$tools/features" 2>/dev/null)" != "$version $features" ]; then
    echo "installing tansu $version ($features) into $tools (first run only)" >&2
    cargo install tansu --version "$version" --features "$features" --locked --force --root "$tools" >&2
    echo "$version $features" >"$tools/features"
  fi
}

listening() {
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

start() {
  install
  if listening; then
    echo "a broker is already listening on 127.0.0.1:$port" >&2
    return 0
  fi
  mkdir -p "$run_dir"
  if [ "${MAILY_KAFKA_KEEP:-0}" != 1 ]; then
    rm -f "$run_dir"/tansu.db*
  fi
  cd "$run_dir"
  nohup "$tansu" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "$storage" \
    >"$run_dir/broker.log" 2>&1 &
  echo $! >"$run_dir/pid"
  for _ in $(seq 1 100); do
    if listening; then
      echo "tansu listening on 127.0.0.1:$port (log: $run_dir/broker.log)" >&2
      return 0
    fi
    sleep 0.1
  done
  echo "tansu did not start; its log:" >&2
  cat "$run_dir/broker.log" >&2
  return 1
}

stop() {
  if [ -f "$run_dir/pid" ]; then
    kill "$(cat "$run_dir/pid")" 2>/dev/null || true
    rm -f "$run_dir/pid"
  fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  install) install; echo "$tansu" ;;
  *) echo "usage: $0 [start|stop|install]" >&2; exit 2 ;;
esac
