#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Load and soak benchmark of the engine's REST API (issue 18, item 7).

Starts a local cluster (`ferry cluster up`), then runs, one phase after the
other: SEQ sequential CLI-style keep-alive clients (each a new connection,
two requests, then a close), CONC concurrent clients, SLOW slow clients
(headers trickled, one byte a second) while a probe measures latency, and
MOVES concurrent disk moves repeated ROUNDS times. A probe thread measures
the latency of GET /api/hosts on a new connection every 100 ms throughout.
It reports resets and other errors, kernel listen overflows, the engine's
descriptors and resident memory before, after each phase and at the end,
and latency percentiles per phase. See bench/README.md for figures.
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def listen_overflows():
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for head, vals in zip(lines[::2], lines[1::2]):
        if head.startswith("TcpExt:"):
            return int(dict(zip(head.split()[1:], vals.split()[1:]))["ListenOverflows"])
    return 0


class Engine:
    def __init__(self, url, pid):
        self.host, port = url.split("//")[1].split(":")
        self.port = int(port.rstrip("/"))
        self.pid = pid

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def conn(self, timeout=60):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def call(self, method, path, body=None, conn=None):
        c = conn or self.conn()
        try:
            data = json.dumps(body).encode() if body is not None else None
            c.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            r = c.getresponse()
            payload = r.read()
            return r.status, json.loads(payload) if payload else None
        finally:
            if conn is None:
                c.close()


class Errors:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}

    def add(self, what):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def total(self):
        return sum(self.counts.values())


def classify(exc):
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "closed"
    return type(exc).__name__


class Probe(threading.Thread):
    """GET /api/hosts on a new connection every 100 ms; latencies per phase."""

    def __init__(self, engine, errors):
        super().__init__(daemon=True)
        self.engine = engine
        self.errors = errors
        self.phase = "baseline"
        self.lat = {}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                status, _ = self.engine.call("GET", "/api/hosts")
                if status != 200:
                    self.errors.add(f"probe {status}")
            except OSError as e:
                self.errors.add("probe " + classify(e))
            self.lat.setdefault(self.phase, []).append(time.monotonic() - t0)
            self.stop.wait(0.1)


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def phase_seq(engine, n, errors):
    for _ in range(n):
        try:
            c = engine.conn()
            for path in ("/api/hosts", "/api/disks"):
                status, _ = engine.call("GET", path, conn=c)
                if status != 200:
                    errors.add(f"HTTP {status}")
            c.close()
        except OSError as e:
            errors.add(classify(e))


def phase_conc(engine, n, errors):
    barrier = threading.Barrier(n)

    def one():
        try:
            c = engine.conn()
            barrier.wait()
            for path in ("/api/hosts", "/api/storagedomains", "/api/disks"):
                status, _ = engine.call("GET", path, conn=c)
                if status != 200:
                    errors.add(f"HTTP {status}")
            c.close()
        except (OSError, threading.BrokenBarrierError) as e:
            errors.add(classify(e))
    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def phase_slow(engine, n, seconds, errors):
    """n clients trickle a request's headers, a byte a second, for `seconds`."""
    socks = []
    for _ in range(n):
        try:
            s = socket.create_connection((engine.host, engine.port))
            s.setblocking(False)
            socks.append(s)
        except OSError as e:
            errors.add("slow " + classify(e))
    line = b"GET /api/hosts HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        for s in socks:
            try:
                s.send(line[i % len(line):i % len(line) + 1])
            except BlockingIOError:
                pass
            except OSError:
                pass        # cut by the engine's request_timeout: what it should do
        i += 1
        time.sleep(1)
    for s in socks:
        s.close()


def phase_moves(engine, disks, sds, rounds, errors, deadline_s=300):
    durations = []
    for r in range(rounds):
        dest = sds[(r + 1) % 2]
        t0 = time.monotonic()
        jobs = []
        lock = threading.Lock()

        def move(disk_id):
            try:
                status, body = engine.call("POST", f"/api/disks/{disk_id}/move", {"storage_domain": {"id": dest}})
                if status != 202:
                    errors.add(f"move HTTP {status}")
                    return
                with lock:
                    jobs.append(body["job"]["id"])
            except OSError as e:
                errors.add("move " + classify(e))
        threads = [threading.Thread(target=move, args=(d,)) for d in disks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        end = time.monotonic() + deadline_s
        pending = set(jobs)
        while pending and time.monotonic() < end:
            for j in list(pending):
                try:
                    status, job = engine.call("GET", f"/api/jobs/{j}")
                except OSError as e:
                    errors.add("poll " + classify(e))
                    continue
                if job and job["status"] in ("finished", "failed", "aborted"):
                    if job["status"] != "finished":
                        errors.add(f"move {job['status']}")
                    pending.discard(j)
            time.sleep(0.5)
        if pending:
            errors.add("move not finished")
        durations.append(time.monotonic() - t0)
        print(f"   round {r + 1}/{rounds}: {len(jobs)} moves in {durations[-1]:.1f} s", flush=True)
    return durations


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--seq", type=int, default=10000)
    ap.add_argument("--conc", type=int, default=500)
    ap.add_argument("--slow", type=int, default=100)
    ap.add_argument("--slow-seconds", type=int, default=20)
    ap.add_argument("--moves", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = ap.parse_args()

    ferry = os.path.join(args.build, "src", "cli", "ferry")
    d = tempfile.mkdtemp(prefix="ferry-load-")
    print(f"cluster in {d}", flush=True)
    subprocess.run([ferry, "cluster", "up", "--dir", d, "--hosts", str(args.hosts), "--domains", "2"],
                   check=True, stdout=subprocess.DEVNULL)
    try:
        with open(os.path.join(d, "cluster.json")) as f:
            cj = json.load(f)
        engine = Engine(cj["engine_url"], cj["engine_pid"])
        errors = Errors()
        sds = [s["id"] for s in engine.call("GET", "/api/storagedomains")[1]["storagedomains"]]
        disks = []
        for i in range(args.moves):
            status, body = engine.call("POST", "/api/disks", {"name": f"load{i}", "provisioned_size": 1 << 20,
                                                               "storage_domain": {"id": sds[0]}})
            disks.append(body["disk"]["id"])
        while any(x["status"] != "ok" for x in engine.call("GET", "/api/disks")[1]["disks"]):
            time.sleep(0.5)

        probe = Probe(engine, errors)
        probe.start()
        time.sleep(3)
        rows = []

        def snap(name, t=None):
            rows.append((name, engine.fds(), engine.rss_kib(), listen_overflows(), t))
            print(f"{name:>28}: fds {rows[-1][1]}, RSS {rows[-1][2] / 1024:.1f} MiB, errors {errors.counts}", flush=True)
        snap("baseline")
        base_overflows = rows[0][3]

        for name, fn in (
                (f"{args.seq} sequential clients", lambda: phase_seq(engine, args.seq, errors)),
                (f"{args.conc} concurrent clients", lambda: phase_conc(engine, args.conc, errors)),
                (f"{args.slow} slow clients", lambda: phase_slow(engine, args.slow, args.slow_seconds, errors)),
                (f"{args.moves} moves x {args.rounds}", lambda: phase_moves(engine, disks, sds, args.rounds, errors))):
            probe.phase = name
            t0 = time.monotonic()
            fn()
            snap(name, time.monotonic() - t0)
        probe.phase = "after"
        time.sleep(5)
        snap("after (5 s idle)")
        probe.stop.set()
        probe.join()

        base_fds, base_rss = rows[0][1], rows[0][2]
        print("\n| phase | time | fds | RSS MiB | listen overflows | probe p50 / p99 / max ms |")
        print("|---|---|---|---|---|---|")
        for name, fds, rss, ovf, t in rows:
            lat = probe.lat.get(name if name != "after (5 s idle)" else "after", [])
            print(f"| {name} | {'' if t is None else f'{t:.1f} s'} | {fds} | {rss / 1024:.1f} | {ovf - base_overflows} | "
                  f"{pct(lat, 50) * 1000:.1f} / {pct(lat, 99) * 1000:.1f} / {max(lat or [float('nan')]) * 1000:.1f} |")
        end_fds, end_rss = rows[-1][1], rows[-1][2]
        print(f"\nerrors: {errors.counts or 'none'}")
        print(f"fds {base_fds} → {end_fds} ({(end_fds - base_fds) / base_fds * 100:+.0f} %), "
              f"RSS {base_rss / 1024:.1f} → {end_rss / 1024:.1f} MiB ({(end_rss - base_rss) / base_rss * 100:+.0f} %)")
        slow = probe.lat.get(f"{args.slow} slow clients", [])
        ok = (errors.counts.get("reset", 0) == 0 and end_fds <= base_fds * 1.1 and end_rss <= base_rss * 1.1
              and (max(slow) if slow else 0) < 1.0)
        print("targets (0 resets, fds and RSS within 10 %, no probe over 1 s with slow clients):",
              "met" if ok else "NOT met")
        return 0 if ok else 1
    finally:
        if not args.keep:
            subprocess.run([ferry, "cluster", "down", "--dir", d], stdout=subprocess.DEVNULL)
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
