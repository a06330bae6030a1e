#!/usr/bin/env python3
"""Runs an instrumented wisp (built with -Cprofile-generate) under the
benchmark's SIPp loads, so that it writes the execution profile production
builds are optimized with: registrations with digest authentication, then
calls (INVITE, 180, 200, ACK, BYE), each at 1000/s for 10 s on the bundled
routing, as bench/bench.py runs them. Called by pgo/train.sh.

usage: train.py WISP_BINARY"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
os.environ["BENCH_WISP_BIN"] = os.path.abspath(sys.argv[1])
import bench  # noqa: E402  (reads BENCH_WISP_BIN on import)

RATE, SECONDS = 1000, 10


def main():
    workdir = tempfile.mkdtemp(prefix="wisp-pgo-")
    for kind in ("register", "call"):
        proxy = bench.Wisp(kind, tempfile.mkdtemp(prefix=f"{kind}-", dir=workdir), None)
        proxy.prepare()
        proxy.start()
        load = bench.Load(kind, RATE, SECONDS, proxy.workdir, None)
        try:
            load.start_callee()
            load.start_caller()
            outcome = load.wait_caller()
        finally:
            load.stop()
            # SIGTERM: wisp exits cleanly and writes its profile on exit.
            proxy.stop()
        print(f"pgo: {kind}: {outcome['successful']}/{load.calls} succeeded")
        if outcome["successful"] < load.calls * 0.99:
            sys.exit(f"pgo: the {kind} load failed ({outcome}); see {proxy.workdir}")


if __name__ == "__main__":
    main()
