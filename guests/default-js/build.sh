#!/usr/bin/env bash
# Builds the TypeScript default routing into a component:
#   bash guests/default-js/build.sh [OUT.wasm]   (default: target/default-js.wasm)
# Installs the SDK's npm dependencies first when they are missing or stale.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
sdk="$here/../../sdk-js"
out="${1:-$here/../../target/default-js.wasm}"
if [ ! -f "$sdk/node_modules/.package-lock.json" ] \
  || [ "$sdk/package-lock.json" -nt "$sdk/node_modules/.package-lock.json" ]; then
  (cd "$sdk" && npm ci --no-audit --no-fund)
fi
node "$sdk/bin/wisp-js.mjs" build "$here/route.ts" -o "$out"
