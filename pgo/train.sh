#!/usr/bin/env bash
# Records pgo/wisp.profdata, the execution profile that production builds
# are optimized with (profile-guided optimization; pgo/rustc-wrapper adds it
# to `cargo build --profile production`). Run it again when the code on the
# per-message path changes: a function whose code changed since the profile
# was recorded is compiled as without one. About 15 minutes on 2 cores.
#
#   bash pgo/train.sh
#
# Builds wisp instrumented (target/pgo-generate), runs it under the
# benchmark's SIPp loads (pgo/train.py), and merges what it wrote. Installs
# SIPp (sip-tester) and rustup's llvm-tools if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v sipp >/dev/null; then
  echo "== installing SIPp (sip-tester)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sip-tester
fi
rustup component add llvm-tools >/dev/null
profdata=$(ls "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-profdata)

raw="$PWD/target/pgo-raw"
# Either would send the profile elsewhere than $raw, or drop the flag.
unset LLVM_PROFILE_FILE CARGO_ENCODED_RUSTFLAGS
echo "== building wisp instrumented (target/pgo-generate)"
# RUSTFLAGS replaces any rustflags of a cargo config: a production build
# with flags of its own (say -Ctarget-cpu) must be given them here too.
RUSTFLAGS="-Cprofile-generate=$raw" CARGO_TARGET_DIR=target/pgo-generate \
  cargo build --profile production -p wisp
echo "== recording the profile under SIPp loads"
# Build scripts and proc macros, instrumented too, wrote theirs while
# the build ran; they go. What goes in is the wisp processes of the run:
# the servers under load, and `wisp user add` and `wisp check` setting up.
rm -rf "$raw"
python3 pgo/train.py target/pgo-generate/production/wisp
ls "$raw"/*.profraw >/dev/null 2>&1 \
  || { echo "pgo: no profile was written to $raw" >&2; exit 1; }
# Sparse: a function that never ran has no entry, and is optimized as
# without a profile rather than as cold.
"$profdata" merge -sparse -o pgo/wisp.profdata "$raw"/*.profraw
rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p' > pgo/llvm-major
# Cargo rebuilds wisp's own crates when the profile changes (rustc lists
# it among their inputs), not its dependencies: the next production
# build starts over, so that every crate is compiled with the new one.
cargo clean --profile production
echo "== pgo/wisp.profdata ($(du -h pgo/wisp.profdata | cut -f1)), for LLVM $(cat pgo/llvm-major) and newer;" \
  "the next production build (all of it) uses it"
