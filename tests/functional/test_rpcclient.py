# SPDX-License-Identifier: GPL-2.0-or-later
"""libferry's JSON-RPC client (src/lib/rpcclient.c) through its command line
tool ferry-rpc, against real agents, a TLS agent and two fake servers."""

import json
import os
import socket
import subprocess
import threading

import pytest

from ferrytest import BUILD, Agent, MiB, endpoint, new_uuid, wait_for, wait_job, write_random_extents
from ferrytest import make_pki, session_pki, tls_client_env

FERRY_RPC = os.path.join(BUILD, "src", "cli", "ferry-rpc")
# e.g. FERRY_RPC_WRAPPER="valgrind -q --leak-check=full --error-exitcode=97" reruns every case under valgrind.
WRAPPER = os.environ.get("FERRY_RPC_WRAPPER", "").split()
# Every run gets --timeout: a hang fails the test within seconds, not at the suite's end.
TIMEOUT = 10


def session_tls():
    """ferry-rpc's TLS options for the agents of the session's CA, as the engine would connect."""
    pki = session_pki()
    return ["--tls-cert", pki.engine_cert, "--tls-key", pki.engine_key, "--tls-ca", pki.ca]


def ferry_rpc(port, *args, timeout=TIMEOUT, extra=None, address="127.0.0.1"):
    """extra: ferry-rpc options; None: TLS as the engine (the session CA); () plain TCP (fake servers)."""
    extra = session_tls() if extra is None else extra
    argv = [*WRAPPER, FERRY_RPC, "-a", address, "-p", str(port), "--timeout", str(timeout), *extra, *args]
    env = tls_client_env() if "--tls-ca" in extra else None
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 20, env=env)


def call(port, *args, **kw):
    r = ferry_rpc(port, *args, **kw)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module", autouse=True)
def built():
    if not os.access(FERRY_RPC, os.X_OK):
        pytest.fail(f"{FERRY_RPC} is missing: build first")


def test_ping_and_capabilities(cluster):
    assert call(cluster.a.port, "Host", "ping2") is True
    caps = call(cluster.b.port, "Host", "getCapabilities")
    assert caps["software_name"] == "ferry-agent"
    assert caps["host_id"] == 2
    r = ferry_rpc(cluster.a.port, "Host", "getCapabilities")
    assert r.stdout.startswith("{\n    "), "result is printed as indented JSON"


def test_rpc_error_exits_1_with_code(cluster):
    r = ferry_rpc(cluster.a.port, "Volume", "getInfo", f"storagepoolID={cluster.pool}",
                  f"storagedomainID={new_uuid()}", f"imageID={new_uuid()}", f"volumeID={new_uuid()}")
    assert r.returncode == 1, r
    assert r.stdout == ""
    assert r.stderr.startswith("ferry-rpc: ") and "(code 358)" in r.stderr, r.stderr
    r = ferry_rpc(cluster.a.port, "Host", "noSuchVerb")
    assert r.returncode == 1 and "(code -32601)" in r.stderr, r.stderr


def test_sequence_of_calls(cluster, img):
    """Values parse as JSON when they can (numbers, lists), else stay strings."""
    port = cluster.a.port
    assert call(port, "StorageDomain", "getInfo", f"storagedomainID={cluster.sd1}")["uuid"] == cluster.sd1
    vol, job_id = new_uuid(), new_uuid()
    assert call(port, "Volume", "create", f"storagepoolID={cluster.pool}", f"storagedomainID={cluster.sd1}",
                f"imageID={img}", f"volumeID={vol}", f"size={16 * MiB}", "volFormat=RAW",
                "preallocate=SPARSE", "diskType=DATA", "desc=made by ferry-rpc", f"job_id={job_id}") == job_id

    def done():
        jobs = call(port, "Host", "getJobs", f'job_ids=["{job_id}"]')
        return jobs[job_id]["status"] in ("done", "failed") and jobs[job_id]

    assert wait_for(done, 30, "Volume.create")["status"] == "done"
    info = call(port, "Volume", "getInfo", f"storagepoolID={cluster.pool}", f"storagedomainID={cluster.sd1}",
                f"imageID={img}", f"volumeID={vol}")
    assert int(info["capacity"]) == 16 * MiB
    assert info["description"] == "made by ferry-rpc"


def test_events_while_a_copy_runs(cluster, img):
    vol = new_uuid()
    cluster.create_volume(cluster.sd1, img, vol, 256 * MiB)
    cluster.create_volume(cluster.sd2, img, vol, 256 * MiB)
    # B copies at 64 MiB/s: ~2 s, so progress events come while we watch.
    write_random_extents(cluster.path(cluster.sd1, img, vol), [(0, 128 * MiB)], seed=11)
    job_id = new_uuid()
    src = json.dumps(endpoint(cluster.sd1, img, vol))
    dst = json.dumps(endpoint(cluster.sd2, img, vol))
    r = ferry_rpc(cluster.b.port, "SDM", "copy_data", f"job_id={job_id}", f"source={src}",
                  f"destination={dst}", extra=session_tls() + ["--events", "4"])
    assert r.returncode == 0, r.stderr
    # Events print as they come, the "pending" one usually before the reply.
    lines = r.stdout.splitlines()
    assert [line for line in lines if not line.startswith('{"method":')] == ["true"], r.stdout
    events = [json.loads(line) for line in lines if line != "true"]
    ours = [e for e in events if e["method"] == f"|jobs|status|{job_id}"]
    assert ours, r.stdout
    # VDSM's shape: the params are the job's info itself, plus notify_time.
    assert all(e["params"]["id"] == job_id and "notify_time" in e["params"] for e in ours), ours
    statuses = [e["params"]["status"] for e in ours]
    assert "running" in statuses, statuses
    with cluster.b.client() as c:
        assert wait_job(c, job_id)["status"] == "done"


def test_flow_id_reaches_the_agent_log(cluster):
    # As vdsm-client --flow-id: the client library sends the caller's correlation id with the call.
    flow = f"rpc-{new_uuid()}"
    r = ferry_rpc(cluster.b.port, "Host", "ping2", extra=session_tls() + ["--flow-id", flow])
    assert r.returncode == 0, r.stderr
    log = cluster.b.log_tail(200000)
    assert f"START Host.ping2 flow_id={flow}" in log and f"FINISH Host.ping2 flow_id={flow}" in log, log[-2000:]
    # An id the agent would refuse is refused before anything is sent.
    r = ferry_rpc(cluster.b.port, "Host", "ping2", "--flow-id", "bad id\nforged")
    assert r.returncode == 2 and "--flow-id must be" in r.stderr, r.stderr


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_connection_refused_exits_2(cluster):
    port = closed_port()
    r = ferry_rpc(port, "Host", "ping2")
    assert r.returncode == 2, r
    assert f"127.0.0.1:{port}" in r.stderr and "refused" in r.stderr, r.stderr


def test_usage_errors_exit_2():
    for args in ([], ["Host"], ["Host", "ping2", "novalue"], ["Host", "ping2", "a=1", "a=2"]):
        r = subprocess.run([*WRAPPER, FERRY_RPC, "-p", "1", *args], capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and r.stderr.startswith("ferry-rpc: "), (args, r.stderr)


class FakeServer:
    """Accepts one connection, reads what comes, answers `reply` once CONNECT arrived (None: never)."""

    def __init__(self, reply):
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        conn, _ = self.sock.accept()
        conn.settimeout(TIMEOUT)
        try:
            while b"\0" not in self.received:
                data = conn.recv(65536)
                if not data:
                    return
                self.received += data
            if self.reply is not None:
                conn.sendall(self.reply)
            while conn.recv(65536):
                pass
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.sock.close()
        self.thread.join(TIMEOUT)


def test_stomp_error_frame_fails_the_call():
    server = FakeServer(b"ERROR\nmessage:go away\ncontent-type:text/plain\n\ngo away\0")
    try:
        r = ferry_rpc(server.port, "Host", "ping2", extra=())
    finally:
        server.close()
    assert server.received.startswith(b"CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0")
    assert r.returncode == 2 and "STOMP ERROR: go away" in r.stderr, r.stderr


def test_silent_server_times_out():
    server = FakeServer(None)
    try:
        r = ferry_rpc(server.port, "Host", "ping2", timeout=1, extra=())
    finally:
        server.close()
    assert r.returncode == 2 and "within 1000 ms" in r.stderr, r.stderr


def test_tls(cluster, workdir):
    d = os.path.join(workdir, "pki-rpcclient")
    os.makedirs(d)
    make_pki(d)
    p = lambda n: os.path.join(d, n)  # noqa: E731
    agent = Agent(workdir, "tls-rpcclient", cluster.sanlocks[0], cluster.storage, insecure="false",
                  tls_cert=p("server.pem"), tls_key=p("server.key"), tls_ca=p("ca.pem"))
    tls = lambda cert, ca="ca.pem": ["--tls-cert", p(f"{cert}.pem"), "--tls-key", p(f"{cert}.key"),  # noqa: E731
                                     "--tls-ca", p(ca)]
    try:
        assert call(agent.port, "Host", "ping2", extra=tls("client")) is True
        # The certificate names "server" and 127.0.0.1: reached as localhost, it is refused...
        r = ferry_rpc(agent.port, "Host", "ping2", extra=tls("client"), address="localhost")
        assert r.returncode == 2 and "issued to another host" in r.stderr and "localhost" in r.stderr, r.stderr
        # ...unless one of the names it carries is accepted too (the engine passes the host's registered name).
        assert call(agent.port, "Host", "ping2", extra=tls("client") + ["--tls-name", "server"],
                    address="localhost") is True
        r = ferry_rpc(agent.port, "Host", "ping2", extra=tls("client") + ["--tls-name", "other"], address="localhost")
        assert r.returncode == 2 and "issued to another host" in r.stderr, r.stderr
        info = call(agent.port, "StorageDomain", "getInfo", f"storagedomainID={cluster.sd1}", extra=tls("client"))
        assert info["uuid"] == cluster.sd1

        # A server certificate from another CA is refused by the client.
        r = ferry_rpc(agent.port, "Host", "ping2", extra=tls("client", ca="rogue.pem"))
        assert r.returncode == 2 and "TLS handshake" in r.stderr and "not issued by the CA" in r.stderr, r.stderr
        # A client certificate from another CA is refused by the agent.
        r = ferry_rpc(agent.port, "Host", "ping2", extra=tls("rogue"), timeout=5)
        assert r.returncode == 2 and r.stderr.startswith("ferry-rpc: "), r.stderr
        # A host's certificate, from the right CA, is no client: one host cannot drive another.
        r = ferry_rpc(agent.port, "Host", "ping2", extra=tls("server"), timeout=5)
        assert r.returncode == 2 and r.stderr.startswith("ferry-rpc: "), r.stderr
        assert "client certificate refused: the client certificate is not the engine's" in agent.log_tail(50000)
        # Plain text on the TLS port gets nowhere either.
        r = ferry_rpc(agent.port, "Host", "ping2", timeout=3, extra=())
        assert r.returncode == 2 and r.stdout == "", r
        # Missing files are reported as such.
        r = ferry_rpc(agent.port, "Host", "ping2", extra=tls("nonexistent"))
        assert r.returncode == 2 and "tls_cert" in r.stderr, r.stderr
    finally:
        assert agent.stop() == 0
