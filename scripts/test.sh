#!/usr/bin/env bash
# Runs Maily's whole test suite: starts the local services the tests use if they are
# down, installs cargo-nextest if it is missing, then runs every crate's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
scripts/kafka.sh start
# Two EVM chains (ganache: ethereum, chain id 1337; polygon, 80002) for the chain tests.
scripts/evm-node.sh start >/dev/null
# Real peers for the tests: Postfix's smtp-sink, dkimpy as the independent DKIM
# verifier, openapi-spec-validator for the admin API's OpenAPI document.
scripts/postfix-tools.sh >/dev/null
scripts/python-tools.sh

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi

# The backends are cargo features: the engine must also build with none but the
# embedded ones (SQLite, file and memory logs, memory hot state).
cargo check -p maily --no-default-features --quiet

# Failures print their panic message without a backtrace (set MAILY_TEST_BACKTRACE=1 for
# one), so a failing run's report stays readable; nextest repeats them at the end.
export RUST_BACKTRACE="${MAILY_TEST_BACKTRACE:-0}"
cargo nextest run --workspace --no-fail-fast --failure-output immediate-final "$@"
