#!/usr/bin/env bash
# Compiles the Solidity contracts of chain/contracts into the committed artifacts
# (chain/contracts/artifacts/<Name>.json: contract, compiler, abi, bytecode,
# deployedBytecode). solc is the npm `solc` package (solc-js, no native binary) at one
# pinned version, installed into a cache folder on first use.
#
#   scripts/contracts.sh build    regenerate the artifacts from the sources
#   scripts/contracts.sh check    compile into a temporary folder and fail if the
#                                 committed artifacts differ from the sources
#   scripts/contracts.sh install  only install solc; prints the package's path
#
# Compiler settings (optimizer runs, evmVersion) live in scripts/compile-contracts.mjs
# and are recorded in every artifact. Needs node (18 or later) and npm.
#
# Environment: MAILY_TOOLS_DIR (cache folder, ~/.cache/maily/tools).
set -euo pipefail

version="0.8.28"
tools="${MAILY_TOOLS_DIR:-$HOME/.cache/maily/tools}"
prefix="$tools/solc-$version"
solc="$prefix/node_modules/solc"
repo="$(cd "$(dirname "$0")/.." && pwd)"
artifacts="$repo/chain/contracts/artifacts"

install() {
  if [ ! -f "$solc/soljson.js" ]; then
    echo "installing solc $version into $prefix (first run only)" >&2
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-save --no-audit --no-fund --ignore-scripts --loglevel=error \
      "solc@$version" >&2
  fi
}

compile() {
  install
  node "$repo/scripts/compile-contracts.mjs" --solc "$solc" --version "$version" --out "$1"
}

shorten() {
  awk '{ if (length($0) > 160) print substr($0, 1, 70) " ... " substr($0, length($0) - 69); else print }'
}

# Compiles into a temporary folder first, so a failed build leaves the artifacts as
# they were, and an artifact whose source is gone is removed.
build() {
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  compile "$tmp"
  mkdir -p "$artifacts"
  rm -f "$artifacts"/*.json
  cp "$tmp"/*.json "$artifacts"/
  echo "artifacts written to chain/contracts/artifacts" >&2
}

check() {
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  compile "$tmp"
  if diff -rq "$artifacts" "$tmp" >/dev/null 2>&1; then
    echo "contract artifacts match the sources" >&2
    return 0
  fi
  {
    echo "chain/contracts/artifacts does not match the sources; run scripts/contracts.sh build"
    diff -rq "$artifacts" "$tmp" | sed "s#$tmp#<compiled>#g; s#$repo/##g" || true
    # Bytecode lines are long: show their start and end (the metadata hash) only.
    for f in "$tmp"/*.json; do
      local name committed
      name="$(basename "$f")"
      committed="$artifacts/$name"
      if [ -f "$committed" ] && ! cmp -s "$committed" "$f"; then
        diff -u --label "committed/$name" --label "compiled/$name" \
          <(shorten <"$committed") <(shorten <"$f") || true
      fi
    done
  } >&2
  return 1
}

case "${1:-}" in
  build) build ;;
  check) check ;;
  install) install; echo "$solc" ;;
  *) echo "usage: $0 build|check|install" >&2; exit 2 ;;
esac
