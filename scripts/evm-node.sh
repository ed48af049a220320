#!/usr/bin/env bash
# Two local EVM nodes on loopback for tests and local development, standing in for
# the "ethereum" and "polygon" chains: ganache (npm), installed into a cache folder on
# first use (later runs reuse it).
#
#   scripts/evm-node.sh start     install if needed, start both nodes, wait until each
#                                 answers eth_chainId, print the funded accounts
#   scripts/evm-node.sh stop      stop the nodes this script started
#   scripts/evm-node.sh accounts  print the funded accounts and their private keys
#   scripts/evm-node.sh install   only install; prints the ganache binary's path
#   scripts/evm-node.sh run PORT CHAIN_ID
#                                 one more node in the foreground (a test's private
#                                 chain it may stop mining on); ends with its parent
#
#   name      chain id  RPC (HTTP and WebSocket)
#   ethereum  1337      http://127.0.0.1:8545
#   polygon   80002     http://127.0.0.1:8546
#
# Both nodes derive the same 10 accounts, 1000 ETH each, from the fixed mnemonic
#
#   test test test test test test test test test test test junk
#
# (path m/44'/60'/0'/0/i). It is a public test mnemonic: the keys are test keys only,
# known to everyone, and must never hold anything of value. Account 0 is
# 0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266 with private key
# 0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80. The accounts are
# also unlocked, so eth_sendTransaction works from them without signing.
#
# Blocks are mined every MAILY_EVM_BLOCK_TIME seconds (1 by default), also when empty,
# so "N confirmations" arrive by themselves after about N seconds and a transaction is
# pending for up to a second after it was sent. MAILY_EVM_BLOCK_TIME=0 mines each
# transaction at once instead (then only new transactions or evm_mine add blocks).
# Tests can also drive the chain through ganache's own methods: evm_mine,
# miner_stop / miner_start (hold transactions pending, e.g. to test fee bumps),
# evm_snapshot / evm_revert (roll back blocks, e.g. to simulate a reorg).
#
# The hardfork is shanghai (EIP-1559 fees, base fee starting at 1 gwei); the contracts
# are compiled for evmVersion paris, which runs on it. The state is kept in memory: a
# restart starts from an empty chain.
#
# Environment: MAILY_EVM_ETHEREUM_PORT (8545), MAILY_EVM_ETHEREUM_CHAIN_ID (1337),
# MAILY_EVM_POLYGON_PORT (8546), MAILY_EVM_POLYGON_CHAIN_ID (80002),
# MAILY_EVM_BLOCK_TIME (1), MAILY_EVM_RUN_DIR (run folder with pid files, logs and
# keys), MAILY_TOOLS_DIR (cache folder).
set -euo pipefail

version="7.9.2"
tools="${MAILY_TOOLS_DIR:-$HOME/.cache/maily/tools}"
prefix="$tools/ganache-$version"
ganache="$prefix/node_modules/.bin/ganache"
mnemonic="test test test test test test test test test test test junk"
hardfork="shanghai"
block_time="${MAILY_EVM_BLOCK_TIME:-1}"
run_dir="${MAILY_EVM_RUN_DIR:-${XDG_RUNTIME_DIR:-/tmp}/maily-evm}"

# name:chain id:port, one entry per node.
nodes=(
  "ethereum:${MAILY_EVM_ETHEREUM_CHAIN_ID:-1337}:${MAILY_EVM_ETHEREUM_PORT:-8545}"
  "polygon:${MAILY_EVM_POLYGON_CHAIN_ID:-80002}:${MAILY_EVM_POLYGON_PORT:-8546}"
)

install() {
  if [ ! -x "$ganache" ]; then
    echo "installing ganache $version into $prefix (first run only)" >&2
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-save --no-audit --no-fund --ignore-scripts --loglevel=error \
      "ganache@$version" >&2
  fi
}

# The chain id a node on port $1 answers, in decimal; fails if none answers.
chain_id() {
  local reply
  reply="$(curl -sf --max-time 2 -H 'content-type: application/json' \
    --data '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' \
    "http://127.0.0.1:$1/")" || return 1
  reply="${reply#*\"result\":\"}"
  reply="${reply%%\"*}"
  [ -n "$reply" ] && [ "${reply:0:2}" = "0x" ] || return 1
  echo $((reply))
}

# The flags every node runs with: loopback only, the chain id, the hardfork, the block
# time and the test mnemonic.
node_flags() {
  local port="$1" id="$2"
  flags=(
    --server.host 127.0.0.1
    --server.port "$port"
    --chain.chainId "$id"
    --chain.networkId "$id"
    --chain.hardfork "$hardfork"
    --miner.blockTime "$block_time"
    --wallet.mnemonic "$mnemonic"
  )
}

start_node() {
  local name="$1" id="$2" port="$3" running
  if running="$(chain_id "$port")"; then
    if [ "$running" = "$id" ]; then
      echo "$name: a node with chain id $id is already listening on 127.0.0.1:$port" >&2
      return 0
    fi
    echo "$name: port $port answers chain id $running, not $id; stop it first" >&2
    return 1
  fi
  rm -f "$run_dir/$name.keys.json"
  node_flags "$port" "$id"
  nohup "$ganache" "${flags[@]}" \
    --wallet.totalAccounts 10 \
    --wallet.defaultBalance 1000 \
    --wallet.accountKeysPath "$run_dir/$name.keys.json" \
    >"$run_dir/$name.log" 2>&1 &
  echo $! >"$run_dir/$name.pid"
}

wait_node() {
  local name="$1" id="$2" port="$3" pid
  pid="$(cat "$run_dir/$name.pid" 2>/dev/null || true)"
  for _ in $(seq 1 600); do
    if [ "$(chain_id "$port" 2>/dev/null)" = "$id" ]; then
      echo "$name: chain id $id on http://127.0.0.1:$port (log: $run_dir/$name.log)" >&2
      return 0
    fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  echo "$name: the node did not start; its log:" >&2
  cat "$run_dir/$name.log" >&2
  return 1
}

accounts() {
  local name="${nodes[0]%%:*}"
  local keys="$run_dir/$name.keys.json"
  if [ ! -f "$keys" ]; then
    echo "no key file at $keys; start the nodes first" >&2
    return 1
  fi
  echo "funded accounts (1000 ETH each on every node; test keys only):"
  node -e '
    const keys = require(process.argv[1]).private_keys;
    Object.entries(keys).forEach(([address, key], i) => console.log(`(${i}) ${address} ${key}`));
  ' "$keys"
}

start() {
  install
  mkdir -p "$run_dir"
  local entry
  for entry in "${nodes[@]}"; do
    IFS=: read -r name id port <<<"$entry"
    start_node "$name" "$id" "$port"
  done
  for entry in "${nodes[@]}"; do
    IFS=: read -r name id port <<<"$entry"
    wait_node "$name" "$id" "$port"
  done
  accounts
}

stop() {
  local entry pid
  for entry in "${nodes[@]}"; do
    local name="${entry%%:*}"
    if [ -f "$run_dir/$name.pid" ]; then
      pid="$(cat "$run_dir/$name.pid")"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      rm -f "$run_dir/$name.pid"
      echo "$name: stopped" >&2
    fi
  done
}

run() {
  install
  node_flags "$1" "$2"
  exec "$ganache" "${flags[@]}" --wallet.totalAccounts 2 --logging.quiet
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  accounts) accounts ;;
  install) install; echo "$ganache" ;;
  run) [ $# -eq 3 ] || { echo "usage: $0 run PORT CHAIN_ID" >&2; exit 2; }; run "$2" "$3" ;;
  *) echo "usage: $0 [start|stop|accounts|install|run PORT CHAIN_ID]" >&2; exit 2 ;;
esac
