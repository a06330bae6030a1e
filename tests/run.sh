#!/usr/bin/env bash
# Runs every check and test of wisp on a fresh Debian machine with Rust
# (rustup): installs what the tests need, then lint, build, unit, corpus
# and end-to-end tests. Usage: bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

echo "== toolchain"
rustup target add wasm32-wasip2
rustup component add rustfmt clippy 2>/dev/null || true
if ! command -v sipp >/dev/null; then
  echo "== installing SIPp (Debian package sip-tester)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sip-tester
fi

if ! command -v openssl >/dev/null; then
  echo "== installing openssl (the TLS tests make their certificates with it)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl
fi

if ! command -v redis-server >/dev/null; then
  echo "== installing Redis (Debian package redis-server; the cluster tests start their own on loopback)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
  # The package may start a system service on 6379; the tests run their own.
  as_root systemctl disable --now redis-server 2>/dev/null || true
fi

if ! command -v kamailio >/dev/null || ! dpkg -s kamailio-tls-modules >/dev/null 2>&1; then
  echo "== installing Kamailio (Debian packages kamailio and kamailio-tls-modules; the interop tests' neighbour proxy, TLS too)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kamailio kamailio-tls-modules
  # The package may start a system service on 5060; the tests run their own.
  as_root systemctl disable --now kamailio 2>/dev/null || true
fi

if ! python3 -c 'import pjsua2' 2>/dev/null; then
  echo "== installing pjsua2 (PyPI pjsua2-python: PJSIP, the user agent of tests/pjsip.rs)"
  command -v python3 >/dev/null \
    || { echo "python3 is needed for tests/pjsua/ua.py (Debian: apt-get install python3 python3-pip)"; exit 1; }
  # Binary wheels (PJSIP 2.15.1 with its own OpenSSL) for CPython 3.11 and
  # 3.12 on x86_64 Linux.
  python3 -m pip install --quiet 'pjsua2-python==2.15.1.post1'
fi

if ! python3 -c 'import sipvicious' 2>/dev/null; then
  echo "== installing SIPVicious (PyPI sipvicious: svwar and svcrack, the attacker of tests/sipvicious.rs)"
  python3 -m pip install --quiet 'sipvicious==0.3.8'
fi

componentize_py=$(sed -n 's/^componentize-py==//p' sdk-python/requirements.txt)
if [ "$(componentize-py --version 2>/dev/null)" != "componentize-py $componentize_py" ]; then
  echo "== installing componentize-py $componentize_py (PyPI: builds sdk-python's routing components, tests/python_sdk.rs)"
  python3 -m pip install --quiet -r sdk-python/requirements.txt
fi

echo "== JavaScript SDK (npm ci in sdk-js: componentize-js, esbuild, typescript)"
command -v node >/dev/null && command -v npm >/dev/null \
  || { echo "node and npm are needed for sdk-js (Debian: apt-get install nodejs npm)"; exit 1; }
(cd sdk-js && npm ci --no-audit --no-fund)
(cd tests/jssip && npm ci --no-audit --no-fund)

echo "== format"
cargo fmt --all --check
cargo fmt --manifest-path guests/Cargo.toml --all --check

echo "== clippy"
cargo clippy --workspace --all-targets --release -- -D warnings
cargo clippy --manifest-path guests/Cargo.toml --target wasm32-wasip2 --release -- -D warnings

echo "== typescript (sdk-js and guests/default-js)"
(cd sdk-js && npx --no-install tsc -p tsconfig.json --noEmit)

echo "== build"
# Everything the tests need in one build, the wisp binary included: built
# alone (-p wisp) it resolves other features than the test build does, and
# wasmtime and its dependencies were compiled twice (minutes on 2 cores).
cargo build --release --workspace --all-targets

echo "== tests"
cargo test --release --workspace
