#!/usr/bin/env bash
# Starts the local Postgres (127.0.0.1:5432) and Redis (127.0.0.1:6379) if they are
# installed but not running. Missing services are reported, not fatal: only the
# suites of the Postgres and Redis adapters need them.
set -uo pipefail

if command -v pg_isready >/dev/null 2>&1; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "starting postgres" >&2
    for v in $(ls /etc/postgresql 2>/dev/null); do
      pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    done
  fi
else
  echo "postgres is not installed; its adapter tests will not be able to run" >&2
fi

if command -v redis-server >/dev/null 2>&1; then
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting redis" >&2
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
else
  echo "redis is not installed; its adapter tests will not be able to run" >&2
fi
exit 0
