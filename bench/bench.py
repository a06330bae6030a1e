#!/usr/bin/env python3
"""wisp against Kamailio under the same SIPp load, on this machine.

Run through bench/run.sh, which installs what is missing and builds wisp.
For each load (a record-routed call over UDP; a REGISTER with digest
auth) and each proxy, alternating wisp and Kamailio:

- a fixed-rate run (default 1000/s): proxy CPU-µs per call from
  /proc/PID/stat (utime + stime of every thread and process of the proxy)
  over a steady window, the response time (INVITE -> 200, or the
  authenticated REGISTER -> 200) from a loopback capture, the memory;
- a search for the highest rate sustained with fewer than 0.1% failed
  calls and no retransmission surge.

With `--proxies wisp,wisp-redis`, wisp with its state in Redis
(`[cluster]`, a redis-server started and stopped with it; CPU and memory
are wisp's and redis-server's together) against wisp with SQLite.

Every process started here is killed by its PID; every run is bounded in
time. Prints the figures and the ratios wisp/Kamailio; writes them as JSON
to target/bench/. Asserts nothing.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
# The binary measured: the production profile's (fat LTO), what the
# README's run command builds and runs.
WISP = os.environ.get("BENCH_WISP_BIN") or os.path.join(TARGET, "production", "wisp")
# The same wisp built with `--features count-allocations` (bench/run.sh
# builds it, in the release profile): run once more per load to count
# heap allocations.
WISP_ALLOCS = os.environ.get("BENCH_WISP_ALLOCS_BIN") or os.path.join(TARGET, "release", "wisp-count-allocations")
KAMAILIO_CFG = os.path.join(REPO, "bench", "kamailio", "kamailio.cfg")
UAC = os.path.join(REPO, "bench", "scenarios", "uac.xml")
UAS = os.path.join(REPO, "tests", "scenarios", "uas.xml")
REGISTER = os.path.join(REPO, "bench", "scenarios", "register.xml")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Loopback ports: the proxy, the caller (SIPp uac), the callee (SIPp uas).
PROXY_PORT = int(os.environ.get("BENCH_PROXY_PORT", "25060"))
UAC_PORT = PROXY_PORT + 10
UAS_PORT = PROXY_PORT + 30
# The counting build's admin API (TCP), for /metrics.
ADMIN_PORT = PROXY_PORT + 40
ADMIN_TOKEN = "bench"
# The redis-server of `wisp-redis` (wisp with [cluster]), TCP.
REDIS_PORT = PROXY_PORT + 50

# Socket buffers: the proxies ask for this much (the kernel caps it at
# net.core.rmem_max and reports twice the value it grants); SIPp too.
RCVBUF = 4 << 20
AUTH_USER, AUTH_PASSWORD = "bench", "bench-secret"
# Kamailio's memory manager: qm (its default, with a debugging free-list
# walk that dominates its profile under load), fm or tlsf.
# Kamailio's shared memory (-m, MiB): its transactions live there, and
# 256 MiB runs out above ~2000 calls/s ("could not allocate shared memory").
KAMAILIO_SHM_MB = os.environ.get("BENCH_KAMAILIO_SHM_MB", "1024")
# tlsf by default: the figures compare wisp with a Kamailio set up for speed.
KAMAILIO_MEM = os.environ.get("BENCH_KAMAILIO_MEM", "tlsf")

LOADS = {
    "call": "INVITE/180/200/ACK/BYE/200 over UDP, record-routed (bench/scenarios/uac.xml, tests/scenarios/uas.xml)",
    "register": "REGISTER / 401 / REGISTER with digest (MD5) / 200 over UDP (bench/scenarios/register.xml)",
}


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------- processes


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def children_of(pid):
    """PIDs of every descendant process of `pid` (not threads)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = stat_fields(entry)
        if fields:
            parent[int(entry)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found.extend(kids)
        frontier.extend(kids)
    return found


def stat_fields(pid):
    """The fields of /proc/PID/stat after the command name (state first),
    or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def cpu_ticks(pids):
    """utime + stime summed over `pids`, in clock ticks. A process's
    /proc/PID/stat counts all its threads. Only the sum: the kernel keeps
    it equal to the scheduler's exact run time, but splits it into user and
    system by tick samples and never lets either go back, so the split over
    a window is not to be trusted (0% kernel for Kamailio in some runs
    where perf samples say 38%)."""
    ticks = 0
    for pid in pids:
        fields = stat_fields(pid)
        if fields:
            ticks += int(fields[11]) + int(fields[12])
    return ticks


def context_switches(pids):
    """Voluntary + involuntary context switches of every thread of `pids`."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            total += int(line.split()[1])
            except OSError:
                continue
    return total


def memory_kib(pids):
    """(sum of PSS, sum of RSS) in KiB: PSS shares pages mapped by several
    processes (Kamailio's shared memory) among them, RSS counts them in
    every process."""
    pss = rss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
        except OSError:
            continue
    return pss, rss


def stop(proc, grace=5.0):
    """Ends a process we started, by its PID: SIGTERM, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


def taskset(cpus, argv):
    return ["taskset", "-c", cpus] + argv if cpus else argv


def udp_rcvbuf(port):
    """The receive buffer of the UDP socket bound to `port`, as `ss` shows
    it (skmem rb: what the kernel granted, twice what was asked)."""
    try:
        out = subprocess.run(
            ["ss", "-uamnH", f"sport = :{port}"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for token in out.replace("(", ",").replace(")", ",").split(","):
        if token.startswith("rb") and token[2:].isdigit():
            return int(token[2:])
    return None


def udp_drops():
    """Datagrams each local UDP port's socket dropped so far (its receive
    buffer full), from /proc/net/udp and udp6: {port: drops}."""
    drops = {}
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            try:
                port = int(fields[1].rsplit(":", 1)[1], 16)
                drops[port] = drops.get(port, 0) + int(fields[-1])
            except (IndexError, ValueError):
                continue
    return drops


def options_ping(port, timeout):
    """Waits until the proxy answers an OPTIONS to itself with 200."""
    deadline = time.monotonic() + timeout
    n = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.2)
        me = s.getsockname()[1]
        while time.monotonic() < deadline:
            n += 1
            msg = (
                f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKping{n}{os.getpid()};rport\r\n"
                f"Max-Forwards: 70\r\n"
                f"From: <sip:ping@127.0.0.1:{me}>;tag=p{n}\r\n"
                f"To: <sip:127.0.0.1:{port}>\r\n"
                f"Call-ID: ping-{n}-{os.getpid()}@127.0.0.1\r\n"
                f"CSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
            )
            try:
                s.sendto(msg.encode(), ("127.0.0.1", port))
                data, _ = s.recvfrom(65535)
                if data.startswith(b"SIP/2.0 200"):
                    return True
            except OSError:
                time.sleep(0.1)
    return False


# ------------------------------------------------------------------ proxies


class Proxy:
    """One proxy process (and its children), started for one run."""

    name = "?"

    def __init__(self, load, workdir, cpus, wrapper=()):
        self.load = load
        self.workdir = workdir
        self.cpus = cpus
        # A command the proxy runs under (valgrind, for --instructions).
        self.wrapper = list(wrapper)
        self.proc = None
        self.log_path = os.path.join(workdir, f"{self.name}.log")

    def argv(self):
        raise NotImplementedError

    def env(self):
        return dict(os.environ)

    def start(self):
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            taskset(self.cpus, self.wrapper + self.argv()),
            cwd=self.workdir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=self.log_file,
        )
        if not options_ping(PROXY_PORT, 60):
            self.stop()
            raise RuntimeError(f"{self.name} did not answer on 127.0.0.1:{PROXY_PORT}; see {self.log_path}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited; see {self.log_path}")
        # Kamailio forks its workers before it answers; wisp has threads.
        self.pids = [self.proc.pid] + children_of(self.proc.pid)

    def stop(self):
        pids = [p for p in getattr(self, "pids", []) if p != self.proc.pid]
        stop(self.proc)
        for pid in pids:  # children that outlived their parent
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.log_file.close()


class Wisp(Proxy):
    name = "wisp"

    def config(self):
        params = {"AUTH_ALGORITHMS": "MD5"}
        if self.load == "register":
            params["WITH_AUTH"] = "yes"
        params_toml = ", ".join(f'{k} = "{v}"' for k, v in params.items())
        return (
            f'[[listen]]\ntransport = "udp"\naddress = "127.0.0.1:{PROXY_PORT}"\n\n'
            f'[storage]\npath = "{self.workdir}/wisp.db"\n\n'
            f'[engine]\ncache_dir = "{TARGET}/bench/cache"\n\n'
            f'[[tenant]]\nname = "bench"\nparams = {{ {params_toml} }}\n'
            # More configuration for experiments, e.g. "[timers]\nj_ms = 5000".
            + os.environ.get("BENCH_WISP_CONFIG", "").replace("\\n", "\n")
        )

    def prepare(self):
        path = os.path.join(self.workdir, "wisp.toml")
        with open(path, "w") as f:
            f.write(self.config())
        self.config_path = path
        if self.load == "register":
            run_checked(
                [WISP, "user", "add", f"{AUTH_USER}@127.0.0.1", AUTH_PASSWORD, "--config", path],
                "wisp user add",
            )
        # Compiles the component into the cache, so that no run pays it.
        run_checked([WISP, "check", "--config", path], "wisp check")

    def argv(self):
        return [WISP, "--config", self.config_path]

    def env(self):
        env = dict(os.environ)
        # Accounting records are info-level log events; Kamailio writes none.
        env["WISP_LOG"] = "warn"
        return env


class WispRedis(Wisp):
    """wisp as one node of a cluster: `[cluster]` with a redis-server of
    its own, started and stopped with it (`--proxies wisp,wisp-redis`).
    Its figures are wisp's and redis-server's together: what the shared
    state costs per call."""

    name = "wisp-redis"

    def config(self):
        return super().config() + (
            f'\n[cluster]\nredis = "redis://127.0.0.1:{REDIS_PORT}"\nnode = "bench"\n'
        )

    def prepare(self):
        # Before `wisp user add`, which writes the subscriber to Redis.
        self.redis_log = open(os.path.join(self.workdir, "redis.log"), "ab")
        self.redis = subprocess.Popen(
            taskset(self.cpus, [shutil.which("redis-server") or "/usr/bin/redis-server",
                                "--bind", "127.0.0.1", "--port", str(REDIS_PORT),
                                "--save", "", "--appendonly", "no", "--dir", self.workdir]),
            stdin=subprocess.DEVNULL, stdout=self.redis_log, stderr=self.redis_log,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=1) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if self.redis.poll() is not None or time.monotonic() > deadline:
                stop(self.redis)
                raise RuntimeError(f"redis-server did not start on 127.0.0.1:{REDIS_PORT}; see {self.workdir}/redis.log")
            time.sleep(0.05)
        super().prepare()

    def start(self):
        super().start()
        self.pids.append(self.redis.pid)

    def stop(self):
        try:
            super().stop()
        finally:
            stop(self.redis)
            self.redis_log.close()


class WispCounting(Wisp):
    """The counting build (WISP_ALLOCS) with its admin API on, for
    `wisp_allocations_total`."""

    def config(self):
        return super().config() + (
            f'\n[admin]\naddress = "127.0.0.1:{ADMIN_PORT}"\ntoken = "{ADMIN_TOKEN}"\n'
        )

    def argv(self):
        return [WISP_ALLOCS, "--config", self.config_path]


def allocations_total():
    """wisp_allocations_total from the counting build's /metrics."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{ADMIN_PORT}/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("wisp_allocations_total "):
                return float(line.split()[1])
    raise RuntimeError("no wisp_allocations_total in /metrics: is it a count-allocations build?")


def allocations(kind, args, workdir):
    """Heap allocations per call (or registration) of wisp at the fixed
    rate, counted by the count-allocations build over the steady window."""
    proxy = WispCounting(kind, tempfile.mkdtemp(prefix="wisp-allocs-", dir=workdir), args.proxy_cpus)
    proxy.prepare()
    proxy.start()
    load = Load(kind, args.rate, args.seconds, proxy.workdir, args.sipp_cpus)
    try:
        load.start_callee()
        load.start_caller()
        warm, end = 2.0, args.seconds - 1.0
        time.sleep(max(0.0, load.started + warm - time.monotonic()))
        a0, t0 = allocations_total(), time.monotonic()
        time.sleep(max(0.0, load.started + end - time.monotonic()))
        a1, t1 = allocations_total(), time.monotonic()
        outcome = load.wait_caller()
    finally:
        load.stop()
        proxy.stop()
    return {"per_call": (a1 - a0) / (args.rate * (t1 - t0)), "outcome": outcome}


class Kamailio(Proxy):
    name = "kamailio"

    def prepare(self):
        self.modules = kamailio_modules()
        if self.load == "register":
            db = os.path.join(self.workdir, "db")
            os.makedirs(db, exist_ok=True)
            with open(os.path.join(db, "version"), "w") as f:
                f.write("table_name(string) table_version(int)\nsubscriber:7\n")
            with open(os.path.join(db, "subscriber"), "w") as f:
                f.write(
                    "id(int,auto) username(string) domain(string) password(string) "
                    "ha1(string,null) ha1b(string,null)\n"
                    f"1:{AUTH_USER}:127.0.0.1:{AUTH_PASSWORD}::\n"
                )
            self.db = db

    def argv(self):
        argv = [
            shutil.which("kamailio") or "/usr/sbin/kamailio",
            "-DD", "-E",
            "-f", KAMAILIO_CFG,
            "-L", self.modules,
            "-Y", self.workdir,
            "-l", f"udp:127.0.0.1:{PROXY_PORT}",
            "-m", KAMAILIO_SHM_MB, "-M", "8",
            "-A", f"MAXBUFFER={RCVBUF}",
        ]
        if KAMAILIO_MEM:
            # The memory manager of shared and private memory (-x, -X).
            argv += ["-x", KAMAILIO_MEM, "-X", KAMAILIO_MEM]
        if self.load == "register":
            argv += ["-A", "WITH_AUTH", "-A", f'DBURL="text://{self.db}"']
        return argv


PROXIES = [Wisp, Kamailio]
ALL_PROXIES = [Wisp, Kamailio, WispRedis]


def kamailio_modules():
    if os.environ.get("KAMAILIO_MODULES"):
        return os.environ["KAMAILIO_MODULES"]
    for path in [
        "/usr/lib/x86_64-linux-gnu/kamailio/modules",
        "/usr/lib/aarch64-linux-gnu/kamailio/modules",
        "/usr/lib/kamailio/modules",
        "/usr/local/lib64/kamailio/modules",
    ]:
        if os.path.exists(os.path.join(path, "tm.so")):
            return path
    raise RuntimeError("Kamailio's modules not found; set KAMAILIO_MODULES")


def run_checked(argv, what):
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed ({out.returncode}): {out.stderr.strip()}")


# --------------------------------------------------------------------- SIPp


def sipp_stats(path):
    """The last line of a SIPp -trace_stat file, as a dict of cumulative
    counters."""
    try:
        with open(path) as f:
            lines = [l for l in f.read().splitlines() if l.strip()]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    head = lines[0].split(";")
    last = lines[-1].split(";")
    return dict(zip(head, last))


def counter(stats, name):
    try:
        return int(stats.get(f"{name}(C)", "0"))
    except ValueError:
        return 0


def elapsed_s(stats):
    """ElapsedTime(C) is HH:MM:SS:micro."""
    try:
        h, m, s, us = stats["ElapsedTime(C)"].split(":")
        return int(h) * 3600 + int(m) * 60 + int(s) + int(us) / 1e6
    except (KeyError, ValueError):
        return None


class Load:
    """One SIPp run against the proxy: the callee (for calls) and the
    caller, at `rate` per second for `seconds`."""

    def __init__(self, kind, rate, seconds, workdir, cpus):
        self.kind = kind
        self.rate = rate
        self.calls = max(1, int(rate * seconds))
        self.seconds = seconds
        self.dir = tempfile.mkdtemp(prefix=f"sipp-{kind}-{rate}-", dir=workdir)
        self.cpus = cpus
        self.uas = None
        self.uac = None

    def sipp(self, role, argv):
        log_file = open(os.path.join(self.dir, f"{role}.out"), "wb")
        return subprocess.Popen(
            taskset(self.cpus, ["sipp"] + argv),
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )

    def common(self, role):
        return [
            "-t", "u1", "-i", "127.0.0.1",
            "-buff_size", str(RCVBUF),
            "-nostdin",
            "-trace_stat", "-stf", f"{role}.csv", "-fd", "1",
            "-trace_err", "-error_file", f"{role}-errors.log",
            "-timeout", f"{int(self.seconds + 15)}s",
        ]

    def start_callee(self):
        if self.kind != "call":
            return
        self.uas = self.sipp("uas", ["-sf", UAS, "-p", str(UAS_PORT)] + self.common("uas"))
        time.sleep(0.3)

    def start_caller(self):
        callers = os.path.join(self.dir, "callers.csv")
        with open(callers, "w") as f:
            f.write(f"SEQUENTIAL\n{AUTH_USER};\n")
        argv = [
            "-p", str(UAC_PORT),
            "-inf", callers,
            "-r", str(self.rate),
            "-m", str(self.calls),
            "-l", str(max(1000, self.rate * 4)),
            # A call that hears nothing for 5 s has failed: an overloaded
            # run ends in seconds, not after Timer B (32 s).
            "-recv_timeout", "5000",
            # Kamailio's two UDP workers may relay the callee's 180 and
            # 200 in either order; a 180 after the 200 is harmless, but
            # SIPp would abort the call on it by default.
            "-default_behaviors", "all,-abortunexp",
        ] + self.common("uac")
        if self.kind == "call":
            argv = [f"127.0.0.1:{UAS_PORT}", "-sf", UAC, "-rsa", f"127.0.0.1:{PROXY_PORT}"] + argv
        else:
            argv = [f"127.0.0.1:{PROXY_PORT}", "-sf", REGISTER, "-au", AUTH_USER, "-ap", AUTH_PASSWORD] + argv
        self.started = time.monotonic()
        self.uac = self.sipp("uac", argv)

    def wait_caller(self):
        """Waits for the caller to finish (bounded); returns its outcome."""
        limit = self.seconds + 20
        # Drops are counted per socket, and SIPp's sockets go when it
        # exits: sampled while it runs, the highest count of each kept.
        drops = {}
        timed_out = False
        while self.uac.poll() is None:
            for port, n in udp_drops().items():
                drops[port] = max(n, drops.get(port, 0))
            if time.monotonic() >= self.started + limit:
                timed_out = True
                stop(self.uac)
                break
            time.sleep(0.2)
        wall = time.monotonic() - self.started
        stop(self.uas)
        uac = sipp_stats(os.path.join(self.dir, "uac.csv"))
        uas = sipp_stats(os.path.join(self.dir, "uas.csv"))
        kinds = {
            key[len("Failed") : -len("(C)")]: int(value)
            for key, value in uac.items()
            if key.startswith("Failed") and key.endswith("(C)") and key != "FailedCall(C)"
            and value.isdigit() and int(value) > 0
        }
        return {
            "rate": self.rate,
            "calls": self.calls,
            "failures": kinds,
            "successful": counter(uac, "SuccessfulCall"),
            "failed": counter(uac, "FailedCall"),
            "retransmissions": counter(uac, "Retransmissions") + counter(uas, "Retransmissions"),
            "sipp_elapsed_s": elapsed_s(uac),
            "wall_s": round(wall, 2),
            "timed_out": timed_out,
            # Where datagrams were lost, when a run fails: the proxy's
            # socket (it fell behind) or SIPp's (SIPp did).
            "drops_proxy": drops.get(PROXY_PORT, 0),
            "drops_sipp": drops.get(UAC_PORT, 0) + drops.get(UAS_PORT, 0),
        }

    def stop(self):
        stop(self.uac)
        stop(self.uas)


def sustained(outcome, seconds):
    """Whether a run kept up: fewer than 0.1% failed calls (a call that did
    not end is failed), no retransmission surge (at most 1% of calls saw
    one), and SIPp not held back (the calls ended within 20% + 2 s of the
    planned duration)."""
    calls = outcome["calls"]
    failed = calls - outcome["successful"]
    elapsed = outcome["sipp_elapsed_s"] or outcome["wall_s"]
    reasons = []
    if outcome["timed_out"]:
        reasons.append("timed out")
    if failed > calls * 0.001:
        kinds = " ".join(f"{k}={v}" for k, v in outcome["failures"].items())
        reasons.append(f"{failed} failed ({100.0 * failed / calls:.2f}%{'; ' + kinds if kinds else ''})")
    if outcome["retransmissions"] > calls * 0.01:
        reasons.append(f"{outcome['retransmissions']} retransmissions")
    if elapsed > seconds * 1.2 + 2:
        reasons.append(f"took {elapsed:.1f} s")
    return not reasons, ", ".join(reasons)


# ---------------------------------------------------- latency from a capture


# What a Capture writes, in the proxy's work folder.
CAPTURE_FILE = "uac.pcap"


class Capture:
    """tcpdump of the caller's datagrams on loopback (of `ports`: the
    callee's too for `--hops`), for the response times (microsecond
    timestamps, where SIPp counts milliseconds)."""

    def __init__(self, workdir, ports=(UAC_PORT,)):
        self.path = os.path.join(workdir, CAPTURE_FILE)
        self.ports = ports
        self.proc = None

    def start(self):
        if not shutil.which("tcpdump"):
            return
        self.err = open(self.path + ".log", "wb")
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-nn", "-s", "2048", "-B", "16384", "-w", self.path,
             "udp and (" + " or ".join(f"port {p}" for p in self.ports) + ")"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.err,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with open(self.path + ".log", "rb") as f:
                if b"listening on" in f.read():
                    break
            time.sleep(0.05)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                stop(self.proc)
        self.err.close()

    def response_times(self, kind):
        """Milliseconds from a request leaving the caller to its final
        response reaching it: INVITE -> 200 for calls, the authenticated
        REGISTER (CSeq 2) -> 200 for registrations."""
        if self.proc is None or not os.path.exists(self.path):
            return []
        want = b"1 INVITE" if kind == "call" else b"2 REGISTER"
        sent, times = {}, []
        for ts, src_port, _, payload, call_id in packets_of(self.path, want):
            if src_port == UAC_PORT and not payload.startswith(b"SIP/2.0"):
                sent.setdefault(call_id, ts)
            elif payload.startswith(b"SIP/2.0 2") and call_id in sent:
                start = sent.pop(call_id)
                times.append((ts - start) * 1e3)
        return times


def header(payload, name):
    head = payload.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None


def packets_of(path, cseq):
    """(timestamp, source port, destination port, payload, Call-ID) of the
    packets of a capture whose CSeq is `cseq`."""
    for ts, src, dst, payload in read_pcap(path):
        value = header(payload, b"CSeq")
        if value is not None and value.upper() == cseq:
            yield ts, src, dst, payload, header(payload, b"Call-ID")


def read_pcap(path):
    """(timestamp, UDP source port, destination port, payload) of each
    IPv4 UDP packet of a classic pcap file (Ethernet or Linux cooked link
    type)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    link_len = {1: 14, 113: 16, 0: 4}.get(linktype, 14)
    at = 24
    while at + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", data[at : at + 16])
        pkt = data[at + 16 : at + 16 + incl]
        at += 16 + incl
        ip = pkt[link_len:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        src_port, dst_port = struct.unpack("!HH", ip[ihl : ihl + 4])
        yield sec + frac / (1e9 if nano else 1e6), src_port, dst_port, ip[ihl + 8 :]


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


# ------------------------------------------------------------------- phases


def fixed_rate(proxy_cls, kind, args, workdir):
    """One run at the fixed rate: CPU per call over the steady window,
    response times, memory, the socket's receive buffer."""
    proxy = proxy_cls(kind, tempfile.mkdtemp(prefix=f"{proxy_cls.name}-", dir=workdir), args.proxy_cpus)
    proxy.prepare()
    proxy.start()
    load = Load(kind, args.rate, args.seconds, proxy.workdir, args.sipp_cpus)
    capture = Capture(proxy.workdir)
    try:
        rcvbuf = udp_rcvbuf(PROXY_PORT)
        idle0 = cpu_ticks(proxy.pids)
        time.sleep(1.0)
        idle1 = cpu_ticks(proxy.pids)
        load.start_callee()
        capture.start()
        load.start_caller()
        # Steady window: from 2 s after the start to 1 s before the last call.
        warm, end = 2.0, args.seconds - 1.0
        time.sleep(max(0.0, load.started + warm - time.monotonic()))
        sipp_pids = [p.pid for p in (load.uac, load.uas) if p is not None]
        x0 = context_switches(proxy.pids)
        c0, s0, t0 = cpu_ticks(proxy.pids), cpu_ticks(sipp_pids), time.monotonic()
        time.sleep(max(0.0, load.started + end - time.monotonic()))
        c1, s1, t1 = cpu_ticks(proxy.pids), cpu_ticks(sipp_pids), time.monotonic()
        x1 = context_switches(proxy.pids)
        pss, rss = memory_kib(proxy.pids)
        outcome = load.wait_caller()
        capture.stop()
    finally:
        load.stop()
        capture.stop()
        proxy.stop()
    window = t1 - t0
    calls_in_window = args.rate * window
    cpu = (c1 - c0) / CLK_TCK
    times = capture.response_times(kind)
    ok, why = sustained(outcome, args.seconds)
    return {
        "outcome": outcome,
        "kept_up": ok,
        "why_not": why,
        "cpu_us_per_call": 1e6 * cpu / calls_in_window,
        "sipp_cpu_us_per_call": 1e6 * (s1 - s0) / CLK_TCK / calls_in_window,
        "switches_per_call": (x1 - x0) / calls_in_window,
        "cpu_share_of_a_core": cpu / window,
        "idle_cpu_share": (idle1 - idle0) / CLK_TCK,
        "p50_ms": percentile(times, 0.5),
        "p99_ms": percentile(times, 0.99),
        "timed": len(times),
        "pss_mib": pss / 1024,
        "rss_mib": rss / 1024,
        "processes": len(proxy.pids),
        "rcvbuf": rcvbuf,
    }


def merge_runs(runs):
    """The fixed-rate runs of one proxy as one: the median of each figure
    (the mean of two), the last run's outcome and socket facts."""
    merged = dict(runs[-1])
    for key in ("cpu_us_per_call", "sipp_cpu_us_per_call", "switches_per_call", "p50_ms", "p99_ms",
                "pss_mib", "rss_mib"):
        values = sorted(r[key] for r in runs if r[key] is not None)
        if values:
            mid = len(values) // 2
            merged[key] = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    merged["runs"] = runs
    merged["kept_up"] = all(r["kept_up"] for r in runs)
    return merged


def one_load(proxy_cls, kind, rate, seconds, workdir, proxy_cpus=None, sipp_cpus=None, capture_ports=()):
    """Starts a proxy in a folder of its own under `workdir`, runs one SIPp
    load against it at `rate` per second for `seconds` (with a capture of
    `capture_ports`, if any, into the proxy's folder's CAPTURE_FILE), and
    stops them all by their PIDs; returns the (stopped) proxy and the
    load's outcome."""
    proxy = proxy_cls(kind, tempfile.mkdtemp(prefix=f"{proxy_cls.name}-", dir=workdir), proxy_cpus)
    proxy.prepare()
    proxy.start()
    load = Load(kind, rate, seconds, proxy.workdir, sipp_cpus)
    capture = Capture(proxy.workdir, capture_ports) if capture_ports else None
    try:
        load.start_callee()
        if capture:
            capture.start()
        load.start_caller()
        outcome = load.wait_caller()
    finally:
        load.stop()
        if capture:
            capture.stop()
        proxy.stop()
    return proxy, outcome


def probe(proxy_cls, kind, rate, args, workdir):
    _, outcome = one_load(proxy_cls, kind, rate, args.probe_seconds, workdir, args.proxy_cpus, args.sipp_cpus)
    ok, why = sustained(outcome, args.probe_seconds)
    log(
        f"  {proxy_cls.name:<8} {kind:<8} {rate:>6}/s  "
        f"{'kept up' if ok else 'failed: ' + why}"
        f"  ({outcome['successful']}/{outcome['calls']} ok, {outcome['retransmissions']} retrans"
        + (f"; datagrams dropped: {outcome['drops_proxy']} by the proxy's socket, "
           f"{outcome['drops_sipp']} by SIPp's" if outcome["drops_proxy"] or outcome["drops_sipp"] else "")
        + ")"
    )
    return ok


def search(args):
    """A search per proxy: up by half (at most to `args.max_rate`) until a
    rate fails, then halving the gap, `args.probes` runs at most; wisp and
    Kamailio alternate."""

    def searcher():
        lo, hi, rate = 0, None, args.start_rate
        for _ in range(args.probes):
            ok = yield rate
            if ok:
                lo = rate
                # The last step up is to the ceiling itself, so that a
                # proxy keeping up at 22,700/s is tried above it.
                rate = min(int(rate * 1.5), args.max_rate) if hi is None else (lo + hi) // 2
            else:
                hi = rate
                rate = (lo + hi) // 2 if lo else rate // 2
            rate = max(50, (rate // 50) * 50)
            if hi is not None and (hi - lo) <= max(100, lo * 0.05):
                break
            if lo >= args.max_rate:
                break
        return lo

    return searcher


def max_rates(kind, args, workdir):
    runs = {}
    for cls in PROXIES:
        gen = search(args)()
        runs[cls] = [gen, next(gen), None]
    while any(state[0] is not None for state in runs.values()):
        for cls, state in runs.items():
            gen, rate, _ = state
            if gen is None:
                continue
            ok = probe(cls, kind, rate, args, workdir)
            try:
                state[1] = gen.send(ok)
            except StopIteration as done:
                state[0], state[2] = None, done.value
    return {cls.name: runs[cls][2] for cls in runs}


# ------------------------------------------------------------------ profile

# valgrind hides SHA-NI from the program: under --instructions wisp's
# HMAC-SHA-256 runs in software, at many times its cost on such a machine.
SHA_CATEGORY = "SHA-256 (HMAC: branches, Record-Route tags, nonces)"

CATEGORIES = [
    # (name, test on (dso, symbol)); the first that matches wins.
    (SHA_CATEGORY, lambda d, s: "sha2::" in s),
    ("kernel: UDP/IP send and receive", lambda d, s: d.startswith("[kernel") and any(
        w in s for w in ("udp", "ip_", "skb", "sock", "net_", "sendto", "recvfrom", "recvmsg",
                         "sendmsg", "dev_", "loopback", "napi", "__copy", "copy_", "csum", "nf_"))),
    ("kernel: wakeups, futex, scheduler", lambda d, s: d.startswith("[kernel") and any(
        w in s for w in ("futex", "sched", "switch", "pick_next", "enqueue", "dequeue", "wake",
                         "update_", "select_task", "_raw_spin", "idle", "hrtimer", "tick"))),
    ("kernel: epoll", lambda d, s: d.startswith("[kernel") and ("epoll" in s or s.startswith("ep_"))),
    ("kernel: other (syscall entry/exit, page faults, ...)", lambda d, s: d.startswith("[kernel")),
    ("SQLite (location, subscribers; SQL parsed and run per request)", lambda d, s: (
        "sqlite" in s.lower() or s.startswith(("yy_", "resolve", "walkExpr", "btree", "pager", "vdbe", "whereLoop"))
        or "rusqlite" in s)),
    ("wasm guest code (compiled component)", lambda d, s: d.endswith(".cwasm") or d.startswith("[JIT")
     or d.startswith("memfd") or d == "[unknown]"),
    ("transaction timers (binary heap)", lambda d, s: "binary_heap" in s),
    ("clocks (Instant::now, clock_gettime)", lambda d, s: "clock_gettime" in s or "Instant" in s),
    ("wasmtime: host calls, lifting/lowering, stores", lambda d, s: "wasmtime" in s or "cranelift" in s),
    ("wisp sip: parse, headers, URIs, serialize", lambda d, s: "wisp::sip" in s),
    ("wisp transaction layer", lambda d, s: "wisp::transaction" in s),
    ("wisp proxy core", lambda d, s: "wisp::proxy" in s or "wisp::transport" in s),
    ("wisp script host API", lambda d, s: "wisp::script" in s or "wisp::services" in s),
    ("allocation (malloc/free)", lambda d, s: any(
        w in s for w in ("malloc", "free", "realloc", "_int_", "drop_in_place", "alloc::alloc", "RawVec"))),
    ("memcpy/memmove/memchr", lambda d, s: any(w in s for w in ("memcpy", "memmove", "memset", "memchr", "memcmp"))),
    ("tokio runtime", lambda d, s: "tokio" in s or "mio" in s),
    ("hashing (transaction and worker keys)", lambda d, s: "hash" in s.lower()),
    ("formatting (core::fmt: building headers)", lambda d, s: "fmt" in s),
    ("string scanning (core::str, slices, iterators; mostly under parsing)", lambda d, s: any(
        w in s for w in ("core::str", "core::slice", "CharSearcher", "FromFn", "core::iter", "trim",
                         "is_token_char", "from_utf8", "eq_ignore_ascii_case"))),
    ("std channels, locks, threads", lambda d, s: "std::sync" in s or "mpmc" in s or "pthread" in s or "lll_" in s),
    ("kamailio core", lambda d, s: d == "kamailio"),
    ("kamailio modules", lambda d, s: d.endswith(".so") and not d.startswith("lib")),
    ("libc other", lambda d, s: d.startswith("libc")),
]


# Samples a second in `--profile` (cpu-clock).
PROFILE_HZ = 1999


# How a kernel stack was entered, by its frames' symbols: a system call's
# handler, or a fault's or interrupt's entry; and the name each is printed
# under (the prefix replaced by the tag).
SYSCALL_PREFIXES = ("__x64_sys_", "__do_sys_")
TRAP_PREFIXES = {"asm_exc_": "", "asm_sysvec_": "irq:", "asm_common_": "irq:"}
ENTRY_NAMES = [(p, "") for p in SYSCALL_PREFIXES] + list(TRAP_PREFIXES.items())


def kernel_entries(data):
    """The kernel's samples of a `perf record -g` grouped by how the kernel
    was entered (the outermost system call on the stack, else the fault or
    interrupt), and the count of user-space samples: which system calls
    a proxy's kernel time is spent in, where the categories above say
    only which kernel functions."""
    script = subprocess.run(
        ["perf", "script", "-i", data, "-F", "ip,sym,dso"],
        capture_output=True, text=True, timeout=600,
    ).stdout
    entries, user = {}, 0
    for sample in script.split("\n\n"):
        frames = [f.split() for f in sample.strip().splitlines()]
        frames = [f for f in frames if len(f) >= 2]
        if not frames:
            continue
        if "kernel.kallsyms" not in frames[0][-1]:
            user += 1
            continue
        syms = [f[1] for f in frames if "kernel.kallsyms" in f[-1]]
        # The outermost system call; a fault or interrupt only outside any.
        syscalls = [s for s in syms if s.startswith(SYSCALL_PREFIXES)]
        traps = [s for s in syms if s.startswith(tuple(TRAP_PREFIXES))]
        entry = (syscalls or traps or ["other"])[-1]
        entry = next((tag + entry[len(prefix):] for prefix, tag in ENTRY_NAMES if entry.startswith(prefix)), entry)
        entries[entry] = entries.get(entry, 0) + 1
    return entries, user


def profile(args, workdir):
    """Samples each proxy (perf, cpu-clock: this machine has no hardware
    counters) during a call load at the fixed rate; prints where the time
    goes by category, by thread, and the top symbols."""
    if not shutil.which("perf"):
        sys.exit("bench: perf is missing (Debian: linux-perf)")
    for kind, cls in [(k, c) for k in args.loads.split(",") for c in PROXIES]:
        proxy = cls(kind, tempfile.mkdtemp(prefix=f"{cls.name}-", dir=workdir), args.proxy_cpus)
        proxy.prepare()
        proxy.start()
        load = Load(kind, args.rate, args.seconds, proxy.workdir, args.sipp_cpus)
        data = os.path.join(proxy.workdir, "perf.data")
        recorded = max(1.0, args.seconds - 4)
        try:
            load.start_callee()
            load.start_caller()
            time.sleep(2.0)
            subprocess.run(
                ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(PROFILE_HZ), "-g", "-o", data,
                 "-p", ",".join(str(p) for p in proxy.pids), "--", "sleep", str(recorded)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=args.seconds + 30,
            )
            outcome = load.wait_caller()
        finally:
            load.stop()
            proxy.stop()
        report = subprocess.run(
            ["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "comm,dso,sym", "-g", "none"],
            capture_output=True, text=True, timeout=300,
        ).stdout
        rows = []
        for line in report.splitlines():
            line = line.strip()
            if not line or line.startswith("#") or "%" not in line:
                continue
            parts = line.split(None, 3)
            if len(parts) < 4:
                continue
            try:
                share = float(parts[0].rstrip("%"))
            except ValueError:
                continue
            comm, dso, rest = parts[1], parts[2], parts[3]
            sym = rest.split("] ", 1)[1] if "] " in rest else rest
            rows.append((share, comm, dso, sym))
        log(f"\n== profile: {cls.name}, {kind} load at {args.rate}/s "
            f"({outcome['successful']}/{outcome['calls']} ok; perf cpu-clock samples)")
        cats, comms = {}, {}
        for share, comm, dso, sym in rows:
            name = next((n for n, test in CATEGORIES if test(dso, sym)), "other")
            cats[name] = cats.get(name, 0.0) + share
            comm = comm.rstrip("0123456789-") or comm
            comms[comm] = comms.get(comm, 0.0) + share
        for name, share in sorted(cats.items(), key=lambda kv: -kv[1]):
            log(f"  {share:5.1f}%  {name}")
        if os.environ.get("BENCH_PROFILE_OTHER"):
            for share, _, dso, sym in sorted(rows, reverse=True):
                if next((n for n, test in CATEGORIES if test(dso, sym)), "other") == "other" and share >= 0.1:
                    log(f"    other: {share:5.2f}% {dso} {sym[:90]}")
        log("  by thread: " + ", ".join(f"{c} {v:.0f}%" for c, v in sorted(comms.items(), key=lambda kv: -kv[1])))
        ops = args.rate * recorded
        entries, user = kernel_entries(data)
        kernel = sum(entries.values())
        per_op = 1e6 / PROFILE_HZ / ops
        log(f"  per {kind} (sampled, perf's own cost included): user {user * per_op:.1f} µs, "
            f"kernel {kernel * per_op:.1f} µs, by entry: " + ", ".join(
                f"{name} {n * per_op:.1f}" for name, n in sorted(entries.items(), key=lambda kv: -kv[1])
                if n * per_op >= 0.1))
        log("  top symbols:")
        merged = {}
        for share, _, dso, sym in rows:
            merged[(dso, sym)] = merged.get((dso, sym), 0.0) + share
        for (dso, sym), share in sorted(merged.items(), key=lambda kv: -kv[1])[: args.top]:
            log(f"    {share:5.1f}%  {dso:<18.18} {sym[:100]}")


# "  1,234,567 ( 0.69%)  file:function [object]" in callgrind_annotate's list.
CALLGRIND_ROW = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.+)$")


def callgrind_functions(path):
    """(instructions, object, function) of each function in a callgrind
    output, as `callgrind_annotate` lists them (self cost). The object is
    the file name of the binary or library, "[unknown]" for code valgrind
    cannot name (wasm compiled at run time)."""
    report = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no", "--threshold=100", path],
                            capture_output=True, text=True, timeout=300).stdout
    rows, listing = [], False
    for line in report.splitlines():
        if line.rstrip().endswith("file:function"):
            listing = True
            continue
        row = CALLGRIND_ROW.match(line) if listing else None
        if not row:
            continue
        count, where = int(row[1].replace(",", "")), row[2].strip()
        dso = ""
        if where.endswith("]") and " [" in where:
            where, dso = where[:-1].rsplit(" [", 1)
            dso = os.path.basename(dso)
        sym = where.split(":", 1)[1] if ":" in where else where
        if where.startswith("???") and dso in ("", "???"):
            dso = "[unknown]"
        rows.append((count, dso, sym))
    return rows


# The hops of a call's INVITE -> 200, as the capture of both SIPp ports
# sees them: (name, packet that starts it, packet that ends it), a packet
# being (first bytes, the SIPp port it leaves or reaches, which of the two).
HOPS = (
    ("proxy forwards the INVITE", (b"INVITE", UAC_PORT, "src"), (b"INVITE", UAS_PORT, "dst")),
    ("callee sends its 180", (b"INVITE", UAS_PORT, "dst"), (b"SIP/2.0 180", UAS_PORT, "src")),
    ("proxy relays the 180", (b"SIP/2.0 180", UAS_PORT, "src"), (b"SIP/2.0 180", UAC_PORT, "dst")),
    ("callee sends its 200", (b"INVITE", UAS_PORT, "dst"), (b"SIP/2.0 200", UAS_PORT, "src")),
    ("proxy relays the 200", (b"SIP/2.0 200", UAS_PORT, "src"), (b"SIP/2.0 200", UAC_PORT, "dst")),
    ("INVITE->200", (b"INVITE", UAC_PORT, "src"), (b"SIP/2.0 200", UAC_PORT, "dst")),
)


def hop_times(path):
    """Milliseconds of each of HOPS, per call (CSeq 1 INVITE and its
    responses), from a capture of both SIPp ports."""
    seen = {}
    for ts, src, dst, payload, call_id in packets_of(path, b"1 INVITE"):
        call = seen.setdefault(call_id, {})
        for start in (b"INVITE", b"SIP/2.0 180", b"SIP/2.0 200"):
            if payload.startswith(start):
                call.setdefault((start, src, "src"), ts)
                call.setdefault((start, dst, "dst"), ts)
    times = {name: [] for name, _, _ in HOPS}
    for call in seen.values():
        for name, a, b in HOPS:
            if a in call and b in call:
                times[name].append((call[b] - call[a]) * 1e3)
    return times


def hops(args, workdir):
    """Where a call's INVITE -> 200 goes, hop by hop, for each proxy: the
    call load at the fixed rate, alternating, with a capture of both SIPp
    ports (so, of everything the proxy receives and sends)."""
    log(f"\n== INVITE->200 hop by hop, call load at {args.rate}/s for {args.seconds:.0f} s, "
        f"{args.repeat} runs each, alternating")
    times = {cls.name: {name: [] for name, _, _ in HOPS} for cls in PROXIES}
    for _ in range(args.repeat):
        for cls in PROXIES:
            proxy, outcome = one_load(cls, "call", args.rate, args.seconds, workdir, args.proxy_cpus,
                                      args.sipp_cpus, capture_ports=(UAC_PORT, UAS_PORT))
            run = hop_times(os.path.join(proxy.workdir, CAPTURE_FILE))
            log(f"  {cls.name:<8} {outcome.get('successful', 0)}/{outcome.get('calls', 0)} ok, "
                f"{len(run['INVITE->200'])} timed")
            for name in times[cls.name]:
                times[cls.name][name] += run[name]
    log(f"\n  {'ms, p50 / p99':<28}" + "".join(f"{cls.name:>20}" for cls in PROXIES))
    for name, _, _ in HOPS:
        cells = []
        for cls in PROXIES:
            v = times[cls.name][name]
            p50, p99 = percentile(v, 0.5), percentile(v, 0.99)
            cells.append(f"{p50:.3f} / {p99:.3f}" if v else "-")
        log(f"  {name:<28}" + "".join(f"{c:>20}" for c in cells))


def instructions(args, workdir):
    """Counts what each proxy executes per call (or registration) under
    valgrind's callgrind: every thread and process of the proxy, from
    after it answered its first OPTIONS to its exit, over the same SIPp
    loads at a low rate. Unlike CPU time, the count does not move with
    what else the machine runs (a hypervisor's steal, a neighbour), so
    two runs on a noisy machine can be compared; it says nothing of cache
    misses, system calls or waiting."""
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing (Debian: valgrind)")
    rate, calls = args.instructions_rate, args.instructions_calls
    log(f"\n== instructions per call (callgrind), {calls} at {rate}/s, each proxy alone")
    rows = []
    for kind in args.loads.split(","):
        for cls in PROXIES:
            proxy_dir = tempfile.mkdtemp(prefix=f"{cls.name}-", dir=workdir)
            out = os.path.join(proxy_dir, "callgrind.out")
            # --fair-sched: valgrind runs one thread at a time and by
            # default may leave one waiting long for its turn. A hook's
            # wall-clock time then counts the other thread's turns, and
            # wisp's tenant ran past its hook time budget (1000 ms a
            # second): 503 with Retry-After: 1 to up to 10% of the
            # registrations of LTO builds, which made the figure per
            # success too low. With it, all 400 succeeded in every run
            # of the ninth round (docs/performance.md).
            wrapper = ["valgrind", "--tool=callgrind", "--fair-sched=yes", "--trace-children=yes",
                       "--instr-atstart=no", "--separate-threads=no", f"--callgrind-out-file={out}.%p"]
            proxy = cls(kind, proxy_dir, args.proxy_cpus, wrapper)
            proxy.prepare()
            proxy.start()
            load = Load(kind, rate, calls / rate, proxy.workdir, args.sipp_cpus)
            try:
                for pid in proxy.pids:
                    run_checked(["callgrind_control", "--instr=on", str(pid)], "callgrind_control")
                load.start_callee()
                load.start_caller()
                outcome = load.wait_caller()
            finally:
                load.stop()
                # Every process writes its counts as it exits: give them
                # time before the SIGKILL of the leftovers.
                if proxy.proc.poll() is None:
                    proxy.proc.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + 60
                while (proxy.proc.poll() is None or any(alive(p) for p in proxy.pids[1:])) \
                        and time.monotonic() < deadline:
                    time.sleep(0.2)
                proxy.stop()
            files = [os.path.join(proxy_dir, f) for f in os.listdir(proxy_dir) if f.startswith("callgrind.out.")]
            done = outcome["successful"]
            if not done:
                log(f"  {cls.name} {kind}: no {kind} succeeded; see {proxy.workdir}")
                continue
            functions = [row for path in files for row in callgrind_functions(path)]
            total = sum(count for count, _, _ in functions)
            cats = {}
            for count, dso, sym in functions:
                name = next((n for n, test in CATEGORIES if test(dso, sym)), "other")
                cats[name] = cats.get(name, 0) + count
            sha = cats.get(SHA_CATEGORY, 0)
            rows.append((kind, cls.name, total / done, (total - sha) / done))
            log(f"  {cls.name:<9} {kind:<9} {total / done / 1000:8.1f} k instructions per {kind} "
                f"({(total - sha) / done / 1000:.1f} k without software SHA-256; {done}/{calls} ok"
                + (f"; failed: {outcome['failures']}, figures per success" if done < calls else "") + ")")
            for name, count in sorted(cats.items(), key=lambda kv: -kv[1]):
                if count >= total / 100:
                    log(f"    {count / done / 1000:7.1f} k  {name}")
    by = {(k, n): (t, w) for k, n, t, w in rows}
    for kind in args.loads.split(","):
        w, k = by.get((kind, "wisp")), by.get((kind, "kamailio"))
        if w and k:
            log(f"  {kind}: wisp/kamailio = {w[0] / k[0]:.2f}, without wisp's software SHA-256 {w[1] / k[0]:.2f}")


# ------------------------------------------------------------------- output


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def sysctl(name):
        try:
            with open("/proc/sys/" + name.replace(".", "/")) as f:
                return f.read().strip()
        except OSError:
            return "?"

    def version(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            text = (out.stdout + out.stderr).strip().splitlines()
            return next((l.strip() for l in text if l.strip()), "?")
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    rev = version(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    with open("/proc/meminfo") as f:
        mem = f.readline().split()[1]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "memory_gib": round(int(mem) / 1024 / 1024, 1),
        "rmem_max": sysctl("net.core.rmem_max"),
        "rmem_default": sysctl("net.core.rmem_default"),
        "wisp": f"{rev} ({os.path.relpath(WISP, REPO)})",
        "kamailio": version(["kamailio", "-v"]),
        "sipp": version(["sipp", "-v"]),
    }


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


def table(kind, fixed, maxes, args, allocs=None, one_core=None):
    empty = {"cpu_us_per_call": None, "sipp_cpu_us_per_call": None,
             "switches_per_call": None, "p50_ms": None, "p99_ms": None,
             "pss_mib": None, "rss_mib": None, "processes": 0, "rcvbuf": None}
    w, k = fixed.get("wisp", empty), fixed.get("kamailio", empty)
    unit = "call" if kind == "call" else "registration"
    what = "INVITE->200" if kind == "call" else "REGISTER(auth)->200"
    rows = [
        (f"max {unit}s/s sustained", maxes.get("wisp"), maxes.get("kamailio"), "d"),
        (f"CPU-us per {unit} @{args.rate}/s", w["cpu_us_per_call"], k["cpu_us_per_call"], ".0f"),
        (f"p50 {what} (ms)", w["p50_ms"], k["p50_ms"], ".3f"),
        (f"p99 {what} (ms)", w["p99_ms"], k["p99_ms"], ".3f"),
        (f"  ctx switches per {unit}", w["switches_per_call"], k["switches_per_call"], ".1f"),
        ("  SIPp CPU-us (uac+uas), same", w["sipp_cpu_us_per_call"], k["sipp_cpu_us_per_call"], ".0f"),
        (f"memory PSS (MiB) @{args.rate}/s", w["pss_mib"], k["pss_mib"], ".1f"),
        (f"memory RSS sum (MiB)", w["rss_mib"], k["rss_mib"], ".1f"),
    ]
    if allocs is not None:
        rows.append((f"  heap allocations per {unit}", allocs["per_call"], None, ".0f"))
    if one_core:
        w1, k1 = one_core.get("wisp", empty), one_core.get("kamailio", empty)
        rows += [
            (f"CPU-us per {unit}, 1 core", w1["cpu_us_per_call"], k1["cpu_us_per_call"], ".0f"),
            (f"p99 {what} (ms), 1 core", w1["p99_ms"], k1["p99_ms"], ".3f"),
        ]
    lines = [f"{'':<32} {'wisp':>10} {'kamailio':>10} {'wisp/kam':>9}"]
    for label, a, b, spec in rows:
        lines.append(f"{label:<32} {fmt(a, spec):>10} {fmt(b, spec):>10} {ratio(a, b):>9}")
    lines.append(
        f"{'processes / UDP rcvbuf (bytes)':<32} {w['processes']:>3} {fmt(w['rcvbuf'], 'd'):>6} "
        f"{k['processes']:>3} {fmt(k['rcvbuf'], 'd'):>6}"
    )
    for name, r in fixed.items():
        o = r["outcome"]
        if not r["kept_up"] or o["successful"] < o["calls"]:
            lines.append(
                f"  note: {name} at {args.rate}/s: {o['successful']}/{o['calls']} ok, "
                f"{o['failed']} failed {o['failures']}, {o['retransmissions']} retransmissions"
                + (f" ({r['why_not']})" if r["why_not"] else "")
            )
    return "\n".join(lines)


def cluster_table(kind, fixed, maxes, args):
    """wisp with its state in Redis ([cluster]; wisp's and redis-server's
    CPU) against wisp with SQLite, one node each."""
    r, w = fixed["wisp-redis"], fixed["wisp"]
    unit = "call" if kind == "call" else "registration"
    what = "INVITE->200" if kind == "call" else "REGISTER(auth)->200"
    rows = [
        (f"max {unit}s/s sustained", maxes.get("wisp-redis"), maxes.get("wisp"), "d"),
        (f"CPU-us per {unit} @{args.rate}/s", r["cpu_us_per_call"], w["cpu_us_per_call"], ".0f"),
        (f"p50 {what} (ms)", r["p50_ms"], w["p50_ms"], ".3f"),
        (f"p99 {what} (ms)", r["p99_ms"], w["p99_ms"], ".3f"),
        (f"  ctx switches per {unit}", r["switches_per_call"], w["switches_per_call"], ".1f"),
        (f"memory PSS (MiB) @{args.rate}/s", r["pss_mib"], w["pss_mib"], ".1f"),
    ]
    lines = [f"{'':<32} {'redis':>10} {'sqlite':>10} {'r/s':>9}   (wisp-redis: wisp + redis-server)"]
    for label, a, b, spec in rows:
        lines.append(f"{label:<32} {fmt(a, spec):>10} {fmt(b, spec):>10} {ratio(a, b):>9}")
    return "\n".join(lines)


def fixed_runs(kind, args, workdir, where):
    """`args.repeat` fixed-rate runs per proxy, alternating, each logged;
    the medians per proxy."""
    runs = {cls.name: [] for cls in PROXIES}
    for _ in range(args.repeat):
        for cls in PROXIES:
            r = fixed_rate(cls, kind, args, workdir)
            runs[cls.name].append(r)
            log(f"  {cls.name:<8} {r['cpu_us_per_call']:.0f} CPU-us/{kind}{where}, "
                f"{r['outcome']['successful']}/{r['outcome']['calls']} ok, "
                f"p50 {fmt(r['p50_ms'], '.3f')} ms, p99 {fmt(r['p99_ms'], '.3f')} ms over {r['timed']} timed")
    return {name: merge_runs(rs) for name, rs in runs.items()}


def one_core_args(args):
    """The arguments of the one-core runs: both proxies on the first CPU,
    SIPp on the others (on one, with the proxy, on a 1-CPU machine)."""
    one = argparse.Namespace(**vars(args))
    cpus = os.cpu_count() or 1
    one.proxy_cpus = "0"
    one.sipp_cpus = f"1-{cpus - 1}" if cpus > 1 else "0"
    return one


# Issue #15's targets: (load, figure, label, at most / at least, ratio).
TARGETS = [
    ("call", "cpu_us_per_call", "CPU per call", "<=", 1.0),
    ("call", "max", "max calls/s", ">=", 1.0),
    ("call", "pss_mib", "PSS @1000 calls/s", "<=", 1.0),
    ("call", "p99_ms", "p99 INVITE->200", "<=", 1.0),
    ("register", "cpu_us_per_call", "CPU per REGISTER", "<=", 1.0),
    ("register", "max", "max REGISTER/s", ">=", 1.0),
]


def targets(results):
    """One line per target whose figures this run has: wisp/Kamailio and
    whether the target is met."""
    lines = []
    for kind, key, label, op, bound in TARGETS:
        load = results["loads"].get(kind)
        if not load:
            continue
        if key == "max":
            w, k = load["max"].get("wisp"), load["max"].get("kamailio")
        else:
            w = load["fixed"].get("wisp", {}).get(key)
            k = load["fixed"].get("kamailio", {}).get(key)
        if not w or not k:
            continue
        r = w / k
        met = r <= bound if op == "<=" else r >= bound
        lines.append(f"{label:<20} wisp/kamailio = {r:.2f} (target {op} {bound:.2f}: {'met' if met else 'NOT met'})")
    return lines


def check_ready(tools, who, installer):
    """Exits, saying why, unless the `tools` are installed, the wisp binary
    is built and the benchmark's UDP ports are free (a proxy already on
    them would take the load)."""
    for tool in tools:
        if not shutil.which(tool):
            sys.exit(f"{who}: {tool} is missing ({installer} installs it)")
    if not os.path.exists(WISP):
        sys.exit(f"{who}: {WISP} is missing: cargo build --profile production -p wisp")
    for port in (PROXY_PORT, UAC_PORT, UAS_PORT):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError as err:
                sys.exit(f"{who}: UDP port {port} is taken ({err}): another benchmark running? "
                         "(BENCH_PROXY_PORT=N moves them: N, N+10, N+30)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=int(os.environ.get("BENCH_RATE", "1000")),
                        help="the fixed rate for CPU, latency and memory (per second)")
    parser.add_argument("--seconds", type=float, default=12.0, help="length of a fixed-rate run")
    parser.add_argument("--repeat", type=int, default=2,
                        help="fixed-rate runs per proxy and load, alternating; the table shows medians")
    parser.add_argument("--probe-seconds", type=float, default=5.0, help="length of a max-rate probe")
    parser.add_argument("--probes", type=int, default=10,
                        help="max-rate probes per proxy and load (the 7th is already at 22,700/s)")
    parser.add_argument("--start-rate", type=int, default=2000, help="first max-rate probe")
    parser.add_argument("--probe-rate", type=int, help="one max-rate probe at this rate per proxy (diagnosis)")
    parser.add_argument("--max-rate", type=int, default=30000)
    parser.add_argument("--loads", default="call,register")
    parser.add_argument("--no-max", action="store_true", help="skip the max-rate search")
    parser.add_argument("--one-core", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) > 1,
                        help="also the fixed-rate runs with both proxies on one core (CPU 0) and SIPp on the others")
    parser.add_argument("--no-allocations", action="store_true",
                        help="skip the allocation count (a run of the count-allocations build per load)")
    parser.add_argument("--proxies", default="wisp,kamailio",
                        help="which proxies to run: wisp, kamailio, wisp-redis (wisp with [cluster] and a "
                             "redis-server of its own; then a table of wisp-redis against wisp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, SIPp errors)")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the benchmark: where each proxy spends its CPU under each load (perf)")
    parser.add_argument("--top", type=int, default=25, help="symbols listed by --profile")
    parser.add_argument("--instructions", action="store_true",
                        help="instead of the benchmark: instructions per call and per registration of each "
                             "proxy under valgrind's callgrind (steady on a noisy machine)")
    parser.add_argument("--hops", action="store_true",
                        help="instead of the benchmark: a call's INVITE->200 hop by hop "
                             "(proxy, callee, proxy), p50 and p99, from a capture of both SIPp ports")
    parser.add_argument("--instructions-rate", type=int, default=40, help="the rate of --instructions runs")
    parser.add_argument("--instructions-calls", type=int, default=400, help="calls (registrations) per --instructions run")
    cpus = f"0-{os.cpu_count() - 1}" if os.cpu_count() and os.cpu_count() > 1 else "0"
    parser.add_argument("--proxy-cpus", default=os.environ.get("BENCH_PROXY_CPUS", cpus),
                        help="taskset CPU list of both proxies")
    parser.add_argument("--sipp-cpus", default=os.environ.get("BENCH_SIPP_CPUS", cpus),
                        help="taskset CPU list of SIPp")
    args = parser.parse_args()
    PROXIES[:] = [c for c in ALL_PROXIES if c.name in args.proxies.split(",")]
    # `timeout` (bench/run.sh) or Ctrl-C: end through the `finally`
    # blocks, which stop every process started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    check_ready(("sipp", "kamailio", "taskset", "ss") + (("redis-server",) if WispRedis in PROXIES else ()),
                "bench", "bench/run.sh")

    m = machine()
    m["load_before"] = loadavg()
    log("== machine")
    for key in ("date", "cpu", "cores", "kernel", "memory_gib", "wisp", "kamailio", "sipp"):
        log(f"  {key:<12} {m[key]}")
    log(f"  {'net.core':<12} rmem_max={m['rmem_max']} rmem_default={m['rmem_default']}; "
        f"both proxies and SIPp ask for {RCVBUF} bytes of UDP receive buffer")
    log(f"  {'pinning':<12} proxies: taskset -c {args.proxy_cpus}; SIPp: taskset -c {args.sipp_cpus}")
    log(f"  {'loadavg':<12} {m['load_before']} (before)")
    log("  wisp: bundled routing (guests/default), 1 tenant, UDP listener, log level warn, "
        "one receiving thread per core and UDP socket")
    log(f"  kamailio: bench/kamailio/kamailio.cfg, children=2, memory manager {KAMAILIO_MEM or 'default'} "
        f"(BENCH_KAMAILIO_MEM), -m {KAMAILIO_SHM_MB} (BENCH_KAMAILIO_SHM_MB) -M 8")

    workdir = tempfile.mkdtemp(prefix="wisp-bench-")
    # A diagnosis asked for runs instead of the benchmark (the first given).
    diagnoses = ((args.instructions, instructions), (args.hops, hops), (args.profile, profile))
    diagnosis = next((run for asked, run in diagnoses if asked), None)
    if diagnosis:
        try:
            diagnosis(args, workdir)
        finally:
            if args.keep:
                log(f"  work folder kept: {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        return
    results = {"machine": m, "args": vars(args), "loads": {}}
    started = time.monotonic()
    try:
        for kind in args.loads.split(","):
            log(f"\n== {kind}: {LOADS[kind]}")
            log(f"  fixed rate {args.rate}/s for {args.seconds:.0f} s, {args.repeat} runs each, alternating")
            fixed = fixed_runs(kind, args, workdir, "")
            maxes = {}
            if args.probe_rate:
                for cls in PROXIES:
                    probe(cls, kind, args.probe_rate, args, workdir)
            elif not args.no_max:
                log(f"  max rate: {args.probe_seconds:.0f} s probes, alternating")
                maxes = max_rates(kind, args, workdir)
            one_core = None
            if args.one_core:
                one = one_core_args(args)
                log(f"  on one core: proxies taskset -c {one.proxy_cpus}, SIPp taskset -c {one.sipp_cpus}, "
                    f"{args.rate}/s for {args.seconds:.0f} s, {args.repeat} runs each, alternating")
                one_core = fixed_runs(kind, one, workdir, " on 1 core")
            allocs = None
            if Wisp in PROXIES and os.path.exists(WISP_ALLOCS) and not args.no_allocations:
                allocs = allocations(kind, args, workdir)
                log(f"  wisp (count-allocations build) {allocs['per_call']:.0f} heap allocations per {kind}")
            results["loads"][kind] = {"fixed": fixed, "max": maxes, "one_core": one_core, "allocations": allocs}
            log("")
            log(table(kind, fixed, maxes, args, allocs, one_core))
            if "wisp-redis" in fixed and "wisp" in fixed:
                log("")
                log(cluster_table(kind, fixed, maxes, args))
    finally:
        if args.keep:
            log(f"  work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    m["load_after"] = loadavg()
    log(f"\n== summary ({m['date']}, {m['cpu']}, {m['cores']} cores, load {m['load_before']} -> {m['load_after']}, "
        f"{time.monotonic() - started:.0f} s)")
    for line in targets(results):
        log("  " + line)
    out_dir = os.path.join(TARGET, "bench")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "results-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ".json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2, default=str)
    log(f"  figures as JSON: {out}")


if __name__ == "__main__":
    main()
