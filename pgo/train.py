#!/usr/bin/env python3
"""Runs an instrumented wisp (built with -Cprofile-generate) under the
benchmark's SIPp loads, so that it writes the execution profile production
builds are optimized with: registrations with digest authentication, then
calls (INVITE, 180, 200, ACK, BYE), each at 1000/s for 10 s on the bundled
routing, as bench/bench.py runs them. Called by pgo/train.sh.

usage: train.py WISP_BINARY"""
import os
import shutil
import signal
import sys
import tempfile

sys.dont_write_bytecode = True  # no bench/__pycache__ left in the checkout
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
os.environ["BENCH_WISP_BIN"] = os.path.abspath(sys.argv[1])
import bench  # noqa: E402  (reads BENCH_WISP_BIN on import)

RATE, SECONDS = 1000, 10


def main():
    # A TERM ends the run through the `finally`s below, which stop what
    # was started, by its PID.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench.check_ready(("sipp",), "pgo", "pgo/train.sh")
    workdir = tempfile.mkdtemp(prefix="wisp-pgo-")
    for kind in ("register", "call"):
        # Stopped with SIGTERM, wisp exits cleanly and writes its profile
        # on exit; one killed after the grace period writes none.
        proxy, outcome = bench.one_load(bench.Wisp, kind, RATE, SECONDS, workdir)
        print(f"pgo: {kind}: {outcome['successful']}/{outcome['calls']} succeeded")
        if outcome["successful"] < outcome["calls"] * 0.99:
            sys.exit(f"pgo: the {kind} load failed ({outcome}); see {proxy.workdir}")
        if proxy.proc.returncode != 0:
            sys.exit(f"pgo: wisp exited with {proxy.proc.returncode} after the {kind} load, "
                     f"so it wrote no profile; see {proxy.workdir}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
