# SPDX-License-Identifier: GPL-2.0-or-later
"""Hostile and heavy clients (issue 18): connection lifecycle, body limits,
backlog and timeouts, on the engine's REST API and the agents' listeners.

Every check looks at the real processes: their descriptors in /proc/PID/fd,
their limits in /proc/PID/limits, their memory in /proc/PID/status, the
kernel's view of their listening sockets (ss)."""

import http.client
import json
import os
import re
import resource
import select
import socket
import ssl
import subprocess
import threading
import time
import uuid

import pytest

from enginetest import ENGINE_BIN, Engine, HttpError
from ferrytest import SANITIZED, Agent, Sanlock, free_port, session_pki, wait_for

MiB = 1024 * 1024


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def close_wait(port, state="08"):
    """Sockets of a local server port in CLOSE_WAIT (state 08 in /proc/net/tcp; 01: ESTABLISHED)."""
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(path) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
                    n += 1
    return n


# The engines' tokens by port: raw requests to an engine carry one in every
# request head ("Host: x"), since every /api route wants a role.
TOKENS = {}


def authed(port, data):
    token = TOKENS.get(port)
    if not token:
        return data
    return data.replace(b"\r\nHost: x\r\n", b"\r\nHost: x\r\nAuthorization: Bearer " + token.encode() + b"\r\n")


def bearer(e):
    return {"Authorization": f"Bearer {e.token}"}


def raw(port, data, wait=5.0, shut=False, host="127.0.0.1"):
    """Sends data on a fresh connection, returns everything read until the server closes (or wait passes)."""
    data = authed(port, data)
    s = socket.create_connection((host, port))
    try:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        s.settimeout(wait)
        out = b""
        while True:
            try:
                d = s.recv(65536)
            except socket.timeout:
                return out + b"<timeout>"
            except ConnectionResetError:
                return out + b"<reset>"
            if not d:
                return out
            out += d
    finally:
        s.close()


def call(e, method, path, body=None):
    """(status, body) of a REST call, errors included."""
    try:
        return e.request(method, path, body)
    except HttpError as err:
        return err.status, err.body


def status_of(answer):
    m = re.match(rb"HTTP/1\.1 (\d+) ", answer)
    return int(m.group(1)) if m else None


def json_fault(answer):
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/json" in head, answer[:300]
    return json.loads(body)["fault"]


@pytest.fixture
def engine(workdir):
    d = os.path.join(workdir, f"hard-{uuid.uuid4().hex[:8]}")
    os.makedirs(d)
    # Plain HTTP: these tests speak raw HTTP/1.1 on sockets (test_tls_engine_* covers HTTPS).
    e = Engine(d, "--idle-timeout=3", "--request-timeout=2", "--write-timeout=2", "--body-deadline=4",
               "--max-connections-per-address=60", insecure=True)
    TOKENS[e.port] = e.token
    yield e
    TOKENS.pop(e.port, None)
    assert e.stop() == 0


# ---- item 1: connection lifecycle ----

def test_closed_keepalive_clients_leave_no_socket(engine):
    pid = engine.proc.pid
    engine.get("/api/hosts")
    base = fds(pid)
    for _ in range(60):
        c = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=10)
        for path in ("/api/hosts", "/api/datacenters", "/api/jobs"):
            c.request("GET", path, headers=bearer(engine))
            r = c.getresponse()
            r.read()
            assert r.status == 200
        c.close()
    # Closed by the client: gone from the engine at once (not after the idle timeout of 3 s).
    wait_for(lambda: fds(pid) <= base and close_wait(engine.port) == 0, 2, "the closed connections to go")


def test_idle_keepalive_connection_times_out(engine):
    pid = engine.proc.pid
    # The fixture's own clients (the CLI's login) may still be closing: count from when they are gone.
    wait_for(lambda: close_wait(engine.port, "01") == 0 and close_wait(engine.port) == 0, 5, "earlier clients to go")
    base = fds(pid)
    s = socket.create_connection(("127.0.0.1", engine.port))
    s.sendall(authed(engine.port, b"GET /api/hosts HTTP/1.1\r\nHost: x\r\n\r\n"))
    s.settimeout(10)
    first = s.recv(65536)
    assert status_of(first) == 200
    assert fds(pid) == base + 1
    t0 = time.monotonic()
    rest = b""
    while True:
        d = s.recv(65536)       # the engine closes it after --idle-timeout=3
        if not d:
            break
        rest += d
    assert 2.5 < time.monotonic() - t0 < 8
    s.close()
    wait_for(lambda: fds(pid) <= base, 2, "the idle connection to be freed")


def test_pipelined_and_half_closed_requests_are_answered(engine):
    both = raw(engine.port, b"GET /api/hosts HTTP/1.1\r\nHost: x\r\n\r\n"
                            b"GET /api/datacenters HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert both.count(b"HTTP/1.1 200 OK") == 2
    # A client that sends its request and shuts its side (nc -N) still gets the answer, then a close.
    half = raw(engine.port, b"GET /api/hosts HTTP/1.1\r\nHost: x\r\n\r\n", shut=True)
    assert status_of(half) == 200 and not half.endswith(b"<timeout>")
    wait_for(lambda: close_wait(engine.port) == 0, 2, "no CLOSE_WAIT left")


def test_nofile_raised_to_hard_limit_at_start(workdir):
    d = os.path.join(workdir, "hard-nofile")
    os.makedirs(d)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        e = Engine(d)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        out = subprocess.run(["prlimit", "--pid", str(e.proc.pid), "--nofile", "--noheadings", "--raw",
                              "--output=SOFT,HARD"], capture_output=True, text=True, check=True).stdout.split()
        assert out[0] == out[1] == str(hard), out
    finally:
        assert e.stop() == 0


def test_engine_serves_again_after_its_fds_ran_out(engine):
    pid = engine.proc.pid
    with open(engine.log_path, "rb") as f:
        log_start = len(f.read())
    n = fds(pid)
    held = []
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    # Only the soft limit moves: raising a hard limit takes a privilege tests may not have.
    subprocess.run(["prlimit", "--pid", str(pid), f"--nofile={n + 5}:{hard}"], check=True)
    try:
        # 5 descriptors left: 20 clients exhaust them; the rest wait in the backlog.
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", engine.port))
            held.append(s)
        wait_for(lambda: fds(pid) >= n + 5, 5, "the engine to use up its descriptors")
        time.sleep(1.5)         # several accept retries while nothing is free
    finally:
        subprocess.run(["prlimit", "--pid", str(pid), f"--nofile={hard}:{hard}"], check=True)
    status, body = engine.request("GET", "/api/hosts", timeout=10)
    assert status == 200
    for s in held:
        s.close()
    with open(engine.log_path, "rb") as f:
        log = f.read()[log_start:].decode(errors="replace")
    # Logged once per pause, not once per try.
    assert log.count("cannot accept connections") == 1, log
    assert log.count("accepting connections on port") == 1, log
    wait_for(lambda: fds(pid) <= n, 10, "the held connections to be freed")


def transfer_port(agent):
    def port():
        m = re.search(r"image transfers served on https?://[0-9.]+:(\d+)/images/", agent.log_tail(100000))
        return int(m.group(1)) if m else None
    return wait_for(port, 10, "the transfer endpoint")


@pytest.fixture(scope="module")
def lone_agent(workdir):
    d = os.path.join(workdir, "hard-agent")
    os.makedirs(os.path.join(d, "storage"))
    sl = Sanlock(d, "hardA")
    a = Agent(d, "hardA", sl, os.path.join(d, "storage"), idle_timeout=30, request_timeout=3, insecure="true",
              metrics_port=free_port())
    yield a
    assert a.stop() == 0
    sl.stop()


def test_closed_transfer_clients_do_not_lock_the_endpoint(lone_agent):
    port = transfer_port(lone_agent)
    pid = lone_agent.proc.pid
    ticket = str(uuid.uuid4())
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", f"/images/{ticket}")
    c.getresponse().read()
    c.close()
    base = fds(pid)
    # More than the endpoint's 128 connections, each a keep-alive client that closes.
    for _ in range(150):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", f"/images/{ticket}")
        r = c.getresponse()
        r.read()
        assert r.status == 403, r.status       # no such ticket; never 503 "too many connections"
        c.close()
    wait_for(lambda: fds(pid) <= base and close_wait(port) == 0, 2, "the closed transfer connections to go")


def test_agent_metrics_listener_frees_closed_clients_and_cuts_slow_ones(lone_agent):
    port = lone_agent.options["metrics_port"]
    pid = lone_agent.proc.pid
    wait_for(lambda: f"metrics served on http://127.0.0.1:{port}/" in lone_agent.log_tail(100000), 10,
             "the metrics endpoint")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    c.getresponse().read()
    c.close()
    base = fds(pid)
    # More than its 64 connections, each a keep-alive scraper that closes: none is left behind.
    for _ in range(80):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/metrics")
        r = c.getresponse()
        assert b"ferry_" in r.read() and r.status == 200, r.status
        c.close()
    wait_for(lambda: fds(pid) <= base and close_wait(port) == 0, 2, "the closed metrics connections to go")
    # A slow client (headers never end) and a silent one are cut by the request timeout (3 s).
    t0 = time.monotonic()
    answer = raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n", wait=10)
    assert status_of(answer) == 408, answer[:300]
    answer = raw(port, b"", wait=10)
    assert not answer.endswith(b"<timeout>") and time.monotonic() - t0 < 12
    # A scrape with a body is refused from its headers, before the body is read.
    assert status_of(raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")) == 413
    wait_for(lambda: fds(pid) <= base, 5, "the refused connections to go")


def test_stomp_transfer_and_metrics_listeners_backlog(lone_agent):
    somaxconn = int(open("/proc/sys/net/core/somaxconn").read())
    for port in (lone_agent.port, transfer_port(lone_agent), lone_agent.options["metrics_port"]):
        out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
        assert int(out.split()[2]) == min(somaxconn, socket.SOMAXCONN), out


# ---- item 2: body limits ----

def send_until_closed(port, head, chunk, total):
    """Sends head then up to total bytes of chunk, stopping when the server closes; returns its answer."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(head)
    sent = 0
    s.settimeout(10)
    try:
        while sent < total:
            s.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    return out, sent


def test_oversized_bodies_are_refused_before_they_are_read(engine):
    pid = engine.proc.pid
    engine.get("/api/hosts")
    hwm = status_kib(pid, "VmHWM")
    answers = []

    def big(chunked):
        if chunked:
            chunk = b"%x\r\n" % (256 * 1024) + b"x" * (256 * 1024) + b"\r\n"
            head = b"POST /api/hosts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        else:
            chunk = b"x" * (256 * 1024)
            head = b"POST /api/hosts HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (300 * MiB)
        answers.append(send_until_closed(engine.port, head, chunk, 100 * MiB))
    threads = [threading.Thread(target=big, args=(i % 2 == 1,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for answer, sent in answers:
        assert status_of(answer) == 413, answer[:200]
        assert "limit" in json_fault(answer)["detail"]
        assert sent < 100 * MiB          # cut off, not read to the end
    # Nothing of those bodies was kept: the peak resident size grew by a few MiB at most.
    assert status_kib(pid, "VmHWM") - hwm < 8 * 1024, (hwm, status_kib(pid, "VmHWM"))
    assert engine.request("GET", "/api/hosts")[0] == 200


@pytest.mark.parametrize("headers, detail", [
    (b"Content-Length: 5\r\nContent-Length: 50\r\n", "one Content-Length"),
    (b"Content-Length: 5\r\nContent-Length: 5\r\n", "one Content-Length"),
    (b"Content-Length: +5\r\n", "decimal"),
    # Not "Content-Length: 0x5": libsoup refuses it itself, and leaks the request's path doing so
    # (ARCHITECTURE.md, HTTP connections), which fails the ASan pass.
    (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "not both"),
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "chunked"),
    # RFC 9112 §5.1: no whitespace between a field name and its colon (a proxy may read the length).
    (b"Content-Length : 5\r\n", "header name"),
    (b"Content-Length\t: 5\r\n", "header name"),
    (b"Transfer-Encoding : chunked\r\n", "header name"),
    (b" Content-Length: 5\r\n", "starts with whitespace"),
    (b"X-Ok: 1\r\n Content-Length: 5\r\n", "starts with whitespace"),
    (b"Content-Length\r\n", "no ':'"),
    (b"Content Length: 5\r\n", "header name"),
    # Control characters other than HTAB in a value, and bare LF line ends (review18b: both were served).
    (b"X-A: a\x01b\r\n", "control character"),
    (b"X-A: a\x7fb\r\n", "control character"),
    (b"X-A: a\x1b[2Jb\r\n", "control character"),
    (b"X-A: 1\nContent-Length: 5\r\n", "bare LF"),
])
def test_smuggling_framing_is_refused(engine, headers, detail):
    answer = raw(engine.port, b"POST /api/hosts HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n{}   0\r\n\r\n")
    assert status_of(answer) == 400, answer[:300]
    assert detail in json_fault(answer)["detail"]
    assert not answer.endswith(b"<timeout>")   # and the connection closed
    assert len(re.findall(rb"(?:^|\r\n)HTTP/1\.1 \d{3} ", answer)) == 1   # the rest was never read as a request


@pytest.mark.parametrize("what, head, chunk, total, detail", [
    ("a 2 MB header line", b"GET /api/hosts HTTP/1.1\r\nHost: x\r\nX-Big: ", b"a" * 65536, 2 * MiB, "64 KiB"),
    ("20,000 headers", b"GET /api/hosts HTTP/1.1\r\nHost: x\r\n", b"X-H: 1\r\n" * 1000, 20000 * 8,
     "100 header fields"),
])
def test_oversized_heads_get_431(engine, what, head, chunk, total, detail):
    """Answered 431 with a JSON fault before libsoup buffers them (it used to reset the connection)."""
    answer, _ = send_until_closed(engine.port, authed(engine.port, head), chunk, total)
    assert status_of(answer) == 431, (what, answer[:300])
    assert detail in json_fault(answer)["detail"]
    assert engine.get("/api/hosts") == {"hosts": []}


def test_transfer_endpoint_refuses_smuggling(lone_agent):
    port = transfer_port(lone_agent)
    answer = raw(port, b"PUT /images/%s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nabcde"
                 % str(uuid.uuid4()).encode())
    assert status_of(answer) == 400 and b"one Content-Length" in answer, answer[:300]


# ---- item 3: backlog, timeouts, per-address cap ----

def test_engine_listens_with_somaxconn_backlog(engine):
    somaxconn = int(open("/proc/sys/net/core/somaxconn").read())
    out = subprocess.run(["ss", "-ltnH", f"sport = :{engine.port}"], capture_output=True, text=True, check=True).stdout
    assert int(out.split()[2]) == min(somaxconn, socket.SOMAXCONN), out


def test_fifty_concurrent_requests_all_succeed(engine):
    barrier = threading.Barrier(50)
    results = []

    def one():
        c = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=30)
        barrier.wait()
        try:
            c.request("GET", "/api/hosts", headers=bearer(engine))
            r = c.getresponse()
            r.read()
            results.append(r.status)
        except OSError as e:
            results.append(repr(e))
        finally:
            c.close()
    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 50, results


def test_slow_clients_are_cut_after_the_timeout(engine):
    t0 = time.monotonic()
    answer = raw(engine.port, b"GET /api/hosts HTTP/1.1\r\nHost: x\r\n", wait=10)     # headers never end
    assert status_of(answer) == 408, answer[:300]
    assert "headers" in json_fault(answer)["detail"]
    assert 1.5 < time.monotonic() - t0 < 6
    t0 = time.monotonic()
    answer = raw(engine.port, b"POST /api/hosts HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{", wait=10)
    assert status_of(answer) == 408, answer[:300]
    assert 1.5 < time.monotonic() - t0 < 6
    # Connected and silent: cut too.
    t0 = time.monotonic()
    answer = raw(engine.port, b"", wait=10)
    assert not answer.endswith(b"<timeout>") and time.monotonic() - t0 < 6


def test_trickling_body_is_cut_by_the_body_deadline(engine):
    # A byte a second never pauses for the request timeout (2 s); the whole body gets 4 s (--body-deadline).
    s = socket.create_connection(("127.0.0.1", engine.port))
    try:
        s.sendall(authed(engine.port, b"POST /api/hosts HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n{"))
        t0 = time.monotonic()
        answer = b""
        s.settimeout(1)
        while time.monotonic() - t0 < 20 and not answer:
            try:
                s.send(b" ")
                answer = s.recv(65536)
            except socket.timeout:
                pass
            except (BrokenPipeError, ConnectionResetError):
                break
        elapsed = time.monotonic() - t0
    finally:
        s.close()
    assert status_of(answer) == 408, answer[:300]
    assert "in all" in json_fault(answer)["detail"]
    assert 3 < elapsed < 10, elapsed


def pipeline_without_reading(port, token, limit):
    """Pipelines GETs on one connection, never reading a byte, until the server stops taking them
    (stuck for a second) or limit bytes went. Returns (socket, bytes sent, local port).
    An API request alternates with one for the web UI's script (36 KB, no database): the write
    only stalls once the answers fill the engine's send buffer (up to tcp_wmem's 4 MiB), and small
    API answers alone took 42 s to fill it on the PostgreSQL backend on the loaded 2-core test
    machine (about 250 answers a second, each a few database round trips), 1 s with the script."""
    index = raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    script = re.search(rb'src="(/assets/app-[0-9a-f]+\.js)"', index).group(1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    req = ((f"GET /api/datacenters HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
            + b"GET " + script + b" HTTP/1.1\r\nHost: x\r\n\r\n") * 128)
    sent, stuck_since = 0, None
    while sent < limit:
        try:
            sent += s.send(req)
            stuck_since = None
        except BlockingIOError:
            stuck_since = stuck_since or time.monotonic()
            if time.monotonic() - stuck_since > 1:
                break
            select.select([], [s], [], 0.1)
    return s, sent, s.getsockname()[1]


def test_client_that_never_reads_its_responses_is_bounded_and_cut(engine):
    pid = engine.proc.pid
    engine.get("/api/hosts")
    rss0 = status_kib(pid, "VmRSS")
    # Up to 50 MiB of pipelined requests, nothing read: the engine reads ahead a bounded amount and stops
    # reading while its responses are not taken (back-pressure), so the client's sends stall.
    s, sent, lport = pipeline_without_reading(engine.port, engine.token, 50 * MiB)
    try:
        assert sent < 50 * MiB, "the engine took 50 MiB of requests from a client that reads nothing"
        grown = status_kib(pid, "VmRSS") - rss0
        # Under ASan freed blocks sit in its quarantine and count in RSS: a wider bound there, still
        # well under the 50 MiB an unbounded read-ahead takes (it took 153 MB for 150 MiB before).
        # Under ASan, RSS is mostly its allocator's quarantine of freed blocks (up to 256 MiB), not our
        # buffers: 30 to 167 MiB were seen there. The bound is checked on the normal build only; the
        # ASan pass still checks that the client's sends stall (sent < 50 MiB, above).
        if not SANITIZED:
            assert grown < 16 * 1024, f"engine RSS grew by {grown} KiB for {sent} bytes of unanswered requests"
        # The write timeout (2 s) closes it, and only it: the log names this connection and that timeout.
        mark = f"127.0.0.1:{lport}".encode()
        wait_for(lambda: any(mark in line and b"write timeout" in line
                             for line in open(engine.log_path, "rb")), 15, "the write timeout to close it")
        s.setblocking(True)
        s.settimeout(10)
        try:
            while s.recv(1 << 20):
                pass
        except ConnectionResetError:
            pass
    finally:
        s.close()
    assert engine.get("/api/hosts") == {"hosts": []}     # still serving


def test_per_address_connection_cap(engine):
    held = [socket.create_connection(("127.0.0.1", engine.port)) for _ in range(60)]
    try:
        for s in held[:5]:
            s.sendall(authed(engine.port, b"GET /api/hosts HTTP/1.1\r\nHost: x\r\n\r\n"))
        for _ in range(3):
            answer = raw(engine.port, b"GET /api/hosts HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status_of(answer) == 503, answer[:300]
            assert "too many connections from 127.0.0.1" in json_fault(answer)["detail"]
            assert b"Retry-After" in answer
        # Logged, naming the peer, but once per reason per 10 s however many are refused.
        with open(engine.log_path, "rb") as f:
            lines = [l for l in f if b"refused 127.0.0.1:" in l and b"too many connections from" in l]
        assert len(lines) == 1, lines
    finally:
        for s in held:
            s.close()
    wait_for(lambda: status_of(raw(engine.port, b"GET /api/hosts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == 200,
             5, "the cap to free up")


def test_tls_transfer_endpoint_handshake_timeout_and_closed_clients(workdir):
    d = os.path.join(workdir, "hard-tls")
    os.makedirs(os.path.join(d, "storage"))
    sl = Sanlock(d, "hardT")
    # TLS with the session CA; 5 s leaves a loaded machine (ASan pass) time for honest handshakes.
    a = Agent(d, "hardT", sl, os.path.join(d, "storage"), request_timeout=5)
    try:
        port = transfer_port(a)
        ctx = ssl.create_default_context(cafile=session_pki().ca)
        ctx.check_hostname = False
        closed_tls_clients_leave_nothing(a.proc.pid, port, ctx, f"/images/{uuid.uuid4()}", 403)
        handshake_cut(port)
    finally:
        assert a.stop() == 0
        sl.stop()


def closed_tls_clients_leave_nothing(pid, port, ctx, path, status, headers=None):
    headers = headers or {}
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    c.request("GET", path, headers=headers)
    c.getresponse().read()
    c.close()
    base = fds(pid)
    for i in range(30):
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        r.read()
        assert r.status == status
        if i % 2:
            c.sock.unwrap()     # close_notify, then the close
        c.close()
    wait_for(lambda: fds(pid) <= base and close_wait(port) == 0, 2, "closed TLS clients to go")


def handshake_cut(port):
    """A bare ClientHello start (or nothing at all) is cut after the handshake timeout (5 s here)."""
    t0 = time.monotonic()
    answer = raw(port, b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03", wait=20)
    assert not answer.endswith(b"<timeout>") and 4.5 < time.monotonic() - t0 < 15


def default_per_address_cap(e, cap=256):
    """The default per-address cap (256) is well under max_connections (4096): the (cap+1)th bare TCP
    connection from 127.0.0.1 is closed at once (TLS: nothing can be said before a handshake)."""
    base = fds(e.proc.pid)
    held = [socket.create_connection(("127.0.0.1", e.port)) for _ in range(cap)]
    try:
        s = socket.create_connection(("127.0.0.1", e.port))
        held.append(s)
        s.settimeout(4)     # under the handshake timeout (5 s): an accepted one would still be waiting
        assert s.recv(1) == b""
    finally:
        for s in held:
            s.close()
    wait_for(lambda: fds(e.proc.pid) <= base, 10, "the closed connections to be freed")


def idle_tls_connections_are_cheap(e, n=100, bound_kib=40 * 1024):
    """n handshaken idle TLS connections raise the engine's RSS by less than bound_kib in all (review18b:
    each used to cost 3.7 MiB, the system CA store copied into every connection's credentials)."""
    pid = e.proc.pid
    base = status_kib(pid, "VmRSS")
    held = []
    try:
        for _ in range(n):
            held.append(e.ssl.wrap_socket(socket.create_connection(("127.0.0.1", e.port)),
                                          server_hostname="127.0.0.1"))
        # Every handshake is done on our side, so the engine has its state for all of them.
        grown = status_kib(pid, "VmRSS") - base
        # Checked on the normal build only: under ASan every allocation carries redzones and freed ones
        # sit in its quarantine (452 KiB per connection there against ~39 KiB without it).
        if not SANITIZED:
            assert grown < bound_kib, f"{n} idle TLS connections: +{grown} KiB ({grown // n} KiB each)"
    finally:
        for s in held:
            s.close()


def test_tls_engine_closed_clients_and_handshake_timeout(workdir):
    d = os.path.join(workdir, "hard-tls-engine")
    os.makedirs(d)
    e = Engine(d, "--request-timeout=5")
    try:
        closed_tls_clients_leave_nothing(e.proc.pid, e.port, e.ssl, "/api/hosts", 200, bearer(e))
        handshake_cut(e.port)
        default_per_address_cap(e)
        idle_tls_connections_are_cheap(e)
    finally:
        assert e.stop() == 0


# ---- item 4: input, host removal, disk size vs the domain's filesystem ----

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [A-Z]+ \[")


@pytest.mark.parametrize("address", [
    "evil.example\n2026-01-01 00:00:00.000 INFO [ferry-engine] forged",
    "bad\u0007bell.example", "...", "a..b", "-lead.example", "trail-.example", "sp ace.example",
    "x" * 64 + ".example", "\u200bzero.example", "tab\t.example", "nul\u0000.example", "1.2.3.4.5:80",
])
def test_forged_host_addresses_are_refused(engine, address):
    with open(engine.log_path, "rb") as f:
        start = len(f.read())
    status, body = call(engine, "POST", "/api/hosts", {"name": "forged", "address": address, "port": 54321})
    assert status == 400, (status, body)
    # A NUL never gets past the JSON parser; the rest reaches the address check.
    assert "address" in body["fault"]["detail"] or "\\u0000" in body["fault"]["detail"]
    assert engine.get("/api/hosts")["hosts"] == []
    with open(engine.log_path, "rb") as f:
        lines = f.read()[start:].decode(errors="replace").splitlines()
    assert all(LOG_LINE.match(line) for line in lines), lines


def test_idn_address_is_stored_in_ascii_and_host_removal(engine):
    status, host = call(engine, "POST", "/api/hosts", {"name": "idn", "address": "Bücher.Example", "port": 54321})
    assert status == 201, host
    assert host["address"] == "xn--bcher-kva.example"
    status, ip = call(engine, "POST", "/api/hosts", {"name": "ip6", "address": "::1", "port": 54321})
    assert status == 201 and ip["address"] == "::1"
    # Another spelling of a registered address is that address: refused as the same host again.
    for same in ("0:0:0:0:0:0:0:1", "XN--BCHER-KVA.example"):
        status, body = call(engine, "POST", "/api/hosts", {"name": "again", "address": same, "port": 54321})
        assert status == 409, (same, status, body)
    status, v4 = call(engine, "POST", "/api/hosts", {"name": "v4", "address": "0x7f.1", "port": 54321})
    assert status == 201 and v4["address"] == "127.0.0.1", v4
    assert call(engine, "POST", "/api/hosts", {"name": "v4b", "address": "::ffff:127.0.0.1", "port": 54321})[0] == 409
    assert call(engine, "POST", f"/api/hosts/{v4['id']}/deactivate")[0] == 200
    assert call(engine, "DELETE", f"/api/hosts/{v4['id']}")[0] == 204
    # Removal: only in maintenance.
    status, body = call(engine, "DELETE", f"/api/hosts/{host['id']}")
    assert status == 409 and "maintenance" in body["fault"]["detail"], body
    assert call(engine, "POST", f"/api/hosts/{host['id']}/deactivate")[0] == 200
    status, body = call(engine, "DELETE", f"/api/hosts/{host['id']}")
    assert status == 204, body
    assert call(engine, "GET", f"/api/hosts/{host['id']}")[0] == 404
    assert call(engine, "DELETE", f"/api/hosts/{host['id']}")[0] == 404
    assert [h["name"] for h in engine.get("/api/hosts")["hosts"]] == ["ip6"]
    # Its address and port are free again.
    assert call(engine, "POST", "/api/hosts", {"name": "idn", "address": "bücher.example", "port": 54321})[0] == 201
    # The CLI removes by name.
    assert call(engine, "POST", f"/api/hosts/{ip['id']}/deactivate")[0] == 200
    cli = os.path.join(os.path.dirname(os.path.dirname(ENGINE_BIN)), "cli", "ferry")
    r = subprocess.run([cli, "--engine", engine.url, "host", "remove", "ip6"], capture_output=True, text=True, timeout=30,
                       env=engine.cli_env())
    assert r.returncode == 0 and "removed host ip6" in r.stdout, (r.stdout, r.stderr)
    assert [h["name"] for h in engine.get("/api/hosts")["hosts"]] == ["idn"]


def probe_max_file_size(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        lo, hi = 0, (1 << 63) - 1
        while lo < hi:
            mid = lo + (hi - lo) // 2 + 1
            try:
                os.lseek(fd, mid, os.SEEK_SET)
                lo = mid
            except OSError:
                hi = mid - 1
        return lo
    finally:
        os.close(fd)


def test_disk_larger_than_the_filesystem_allows_is_refused(workdir):
    from enginetest import EngineCluster
    ec = EngineCluster(os.path.join(workdir, "hard-fs"), hosts=1, domains=1)
    try:
        e = ec.engine
        sd = ec.sds[0]
        limit = probe_max_file_size(os.path.join(ec.storage, sd["id"], "dom_md", "ids"))

        def reported():
            got = [s for s in e.get("/api/storagedomains")["storagedomains"] if s["id"] == sd["id"]][0]
            return got.get("max_file_size")
        assert wait_for(reported, 30, "the domain's largest file size") == limit
        size = (limit // 512 + 1) * 512
        if size <= 64 * 1024 ** 4:
            # ext4 (16 TiB): a raw disk of 64 TiB would be accepted, then fail on the SPM.
            status, body = call(e, "POST", "/api/disks", {"name": "huge", "provisioned_size": 64 * 1024 ** 4,
                                                            "storage_domain": {"id": sd["id"]}})
            assert status == 400 and "does not fit" in body["fault"]["detail"], body
            status, body = call(e, "POST", "/api/disks", {"name": "huge", "provisioned_size": size, "format": "cow",
                                                            "storage_domain": {"id": sd["id"]}})
            assert status == 400 and "does not fit" in body["fault"]["detail"], body
        else:
            # XFS, btrfs, tmpfs: beyond the engine's 64 TiB limit anyway.
            status, body = call(e, "POST", "/api/disks", {"name": "huge", "provisioned_size": 64 * 1024 ** 4 + 512,
                                                            "storage_domain": {"id": sd["id"]}})
            assert status == 400, body
        assert e.get("/api/disks")["disks"] == []
        status, body = call(e, "POST", "/api/disks", {"name": "fits", "provisioned_size": 1024 ** 3,
                                                        "storage_domain": {"id": sd["id"]}})
        assert status == 202, body
    finally:
        ec.stop()


def test_agent_tls_connections_do_not_load_the_system_trust_store(workdir):
    """Each mutual-TLS STOMP connection gets the agent's CA database at construction.
    Built with the backend's default first (g_tls_server_connection_new, then
    set_database), every accepted connection loaded the system trust store and
    threw it away: 40 handshakes took 0.61 s of the agent's CPU, 0.09 s without."""
    d = os.path.join(workdir, "tls-agent")
    os.makedirs(os.path.join(d, "storage"))
    sl = Sanlock(d, "tlsA")
    a = Agent(d, "tlsA", sl, os.path.join(d, "storage"), idle_timeout=60)
    held = []
    try:
        assert a.tls
        pid = a.proc.pid
        warm = a.raw_socket()          # the first handshake's one-time costs (backend, CA parse)
        held.append(warm)
        rss0 = status_kib(pid, "VmRSS")
        cpu0 = _cpu_ticks(pid)
        for _ in range(40):
            held.append(a.raw_socket())
        grown = status_kib(pid, "VmRSS") - rss0
        cpu = _cpu_ticks(pid) - cpu0
        hz = os.sysconf("SC_CLK_TCK")
        if not SANITIZED:
            assert grown < 40 * 256, f"agent RSS grew by {grown} KiB for 40 TLS connections"
            assert cpu / hz < 0.3, f"40 TLS handshakes took {cpu / hz:.2f} s of the agent's CPU"
        with a.client() as c:           # still serving
            assert c.call("Host.ping2", {}) is not None
    finally:
        for s in held:
            s.close()
        assert a.stop() == 0
        sl.stop()


def _cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])     # utime + stime
