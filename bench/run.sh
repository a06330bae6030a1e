#!/usr/bin/env bash
# wisp against Kamailio under the same SIPp load, on this machine: one
# command from a fresh clone (Debian, Rust by rustup). Installs SIPp
# (sip-tester), Kamailio, tcpdump, valgrind and Python if missing, builds wisp
# with the production profile (and in release counting heap allocations), then runs
# bench/bench.py (about 9 minutes on 2 cores), which prints the machine, a
# table per load (on both cores, and on one), the ratios wisp/Kamailio and
# issue #15's targets, met or not.
#
#   bash bench/run.sh [bench.py options]     e.g. --rate 2000, --no-max
#   bash bench/run.sh --proxies wisp,wisp-redis   wisp with [cluster]
#                    (a redis-server of its own) against wisp with SQLite
#   bash bench/run.sh --instructions   instructions per call and per
#                    registration of each proxy under callgrind (a minute)
#
# Environment: BENCH_PROXY_CPUS / BENCH_SIPP_CPUS (taskset CPU lists, all
# cores by default), BENCH_WAIT_LOAD=SECONDS (wait that long at most for
# the load average to fall below BENCH_MAX_LOAD, 1.0, before starting).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=no
install() {
  if [ "$apt_updated" = no ]; then as_root apt-get update -qq; apt_updated=yes; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

command -v sipp >/dev/null || { echo "== installing SIPp (sip-tester)"; install sip-tester; }
if ! command -v kamailio >/dev/null; then
  echo "== installing Kamailio"
  install kamailio
  # The package may start a system service on 5060; the benchmark runs its own.
  as_root systemctl disable --now kamailio 2>/dev/null || true
fi
# For `--proxies wisp,wisp-redis`: wisp's state in Redis against SQLite.
if ! command -v redis-server >/dev/null; then
  echo "== installing redis-server"
  install redis-server
  as_root systemctl disable --now redis-server 2>/dev/null || true
fi
command -v tcpdump >/dev/null || { echo "== installing tcpdump (response times)"; install tcpdump; }
# For `--instructions`: instructions per call under callgrind.
command -v valgrind >/dev/null || { echo "== installing valgrind (--instructions)"; install valgrind; }
command -v python3 >/dev/null || { echo "== installing python3"; install python3; }
command -v ss >/dev/null || install iproute2
command -v taskset >/dev/null || install util-linux

echo "== building wisp (production profile, and release counting allocations)"
command -v rustup >/dev/null && rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
# First the build that counts heap allocations (allocations per call),
# kept under another name, in the release profile: the tests' build, so
# that after them it costs little, and without LTO, which would link the
# whole program once more for a count it does not change. Then the binary
# that is measured: the production profile, the README's run command.
target_dir=${CARGO_TARGET_DIR:-target}
cargo build --release -p wisp --features count-allocations
cp "$target_dir/release/wisp" "$target_dir/release/wisp-count-allocations"
cargo build --profile production -p wisp

wait_s=${BENCH_WAIT_LOAD:-0}
max_load=${BENCH_MAX_LOAD:-1.0}
while [ "$wait_s" -gt 0 ] && awk -v max="$max_load" '{ exit !($1 >= max) }' /proc/loadavg; do
  echo "== load average $(cut -d' ' -f1-3 /proc/loadavg) >= $max_load: waiting (${wait_s} s left)"
  sleep 15
  wait_s=$((wait_s - 15))
done

# Bounded: bench.py stops what it started when it is told to end.
exec timeout --signal=TERM --kill-after=30 1500 python3 bench/bench.py "$@"
