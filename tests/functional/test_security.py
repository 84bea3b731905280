# SPDX-License-Identifier: GPL-2.0-or-later
"""Transport security with certificates from `ferry pki`: the engine refuses an
agent whose certificate another CA signed or that names another host; clients
refuse an engine whose certificate another CA signed; REST refusals are JSON
faults and responses carry the security headers. Insecure mode (plain HTTP,
plain TCP to agents) is tested here and only here."""

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import make_workdir
from enginetest import ENGINE_BIN, Engine, EngineCluster, HttpError
from ferrytest import AGENT_BIN, FERRY, Agent, Pki, tls_client_env, wait_for


@pytest.fixture(scope="module")
def ec():
    d = make_workdir()
    c = EngineCluster(d, hosts=1, domains=1)
    c.rogue = Pki(os.path.join(d, "rogue-pki"))
    c.extra_agents = []
    yield c
    codes = c.stop()
    for a in c.extra_agents:
        codes[a.name] = a.stop()
    if not os.environ.get("FERRY_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)
    assert all(code == 0 for code in codes.values()), codes


def ferry(*args, env=None):
    return subprocess.run([FERRY, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env=tls_client_env(env), cwd=os.path.dirname(FERRY))


def host_named(ec, name):
    return next(h for h in ec.engine.get("/api/hosts")["hosts"] if h["name"] == name)


def events_about(ec, name):
    return [e["message"] for e in ec.engine.get("/api/events")["events"] if f"host {name} " in e["message"]]


def start_agent(ec, name, tls):
    """Another agent on the first host's sanlock daemon (it never gets as far as using it)."""
    a = Agent(ec.workdir, name, ec.sanlocks[0], ec.storage, **tls)
    ec.extra_agents.append(a)
    return a


def test_engine_refuses_agent_of_another_ca(ec):
    # Same name, same address, a valid certificate: only the signer differs.
    a = start_agent(ec, "rogue1", ec.rogue.agent_options("rogue1", "127.0.0.1"))
    ec.engine.post("/api/hosts", {"name": "rogue1", "address": "127.0.0.1", "port": a.port})
    wait_for(lambda: host_named(ec, "rogue1")["status"] == "non_responsive", 60, "the rogue host to be refused")
    assert any("not issued by the CA" in m for m in events_about(ec, "rogue1")), events_about(ec, "rogue1")
    # The engine hung up during every handshake: no connection got as far as STOMP.
    log = a.log_tail(200000)
    closed = log.count(" closed")
    opened = log.count("] connection ") - closed
    failed = log.count("closed: TLS handshake failed")
    assert failed >= 1 and closed == failed and opened - closed <= 1, log[-3000:]


def test_engine_refuses_agent_certified_for_another_host(ec):
    # The installation's CA, but issued to another name and address than the host is registered with.
    tls = ec.pki.agent_options("elsewhere", "10.9.9.9")
    a = start_agent(ec, "misnamed", tls)
    ec.engine.post("/api/hosts", {"name": "misnamed", "address": "127.0.0.1", "port": a.port})
    wait_for(lambda: host_named(ec, "misnamed")["status"] == "non_responsive", 60, "the misnamed host to be refused")
    msgs = events_about(ec, "misnamed")
    assert any("issued to another host" in m and "127.0.0.1" in m and "misnamed" in m for m in msgs), msgs


def test_engine_accepts_agent_by_registered_name(ec):
    # The certificate names the host but not the address the engine reaches it by (NAT, a second NIC).
    tls = ec.pki.agent_options("byname", "10.9.9.8")
    a = start_agent(ec, "byname", tls)
    ec.engine.post("/api/hosts", {"name": "byname", "address": "127.0.0.1", "port": a.port})
    wait_for(lambda: host_named(ec, "byname")["status"] == "up", 60, "the host to be up")


def test_agent_refuses_engine_of_another_ca(ec):
    """An engine with a certificate from another CA gets nothing from an agent,
    even one that trusts the agents' CA (ca.pem is public: anyone can have it)."""
    d = make_workdir()
    rogue_engine = Engine(d, f"--agent-tls-ca={ec.pki.ca}", pki=ec.rogue)
    try:
        agent = ec.agents[0]
        rogue_engine.post("/api/hosts", {"name": "host1", "address": "127.0.0.1", "port": agent.port})
        wait_for(lambda: rogue_engine.get("/api/hosts")["hosts"][0]["status"] == "non_responsive", 60,
                 "the rogue engine to be refused")
        assert "client certificate refused" in agent.log_tail(50000)
    finally:
        assert rogue_engine.stop() == 0
        shutil.rmtree(d, ignore_errors=True)


def test_clients_refuse_engine_of_another_ca(ec):
    url = ec.engine.url
    assert url.startswith("https://127.0.0.1:")
    # Python: our CA verifies it; another CA or the system's do not.
    with urllib.request.urlopen(authed(ec.engine, url + "/api/hosts"),
                                context=ssl.create_default_context(cafile=ec.engine.ca_file)) as r:
        assert r.status == 200
    for ctx in (ssl.create_default_context(cafile=ec.rogue.ca), ssl.create_default_context()):
        with pytest.raises(urllib.error.URLError) as e:
            urllib.request.urlopen(url + "/api/hosts", context=ctx, timeout=10)
        assert isinstance(e.value.reason, ssl.SSLCertVerificationError), e.value
    # The CLI: the CA from --ca-file or $FERRY_CA_FILE; another CA is refused with a hint.
    env = {k: v for k, v in ec.engine.cli_env().items() if k not in ("FERRY_ENGINE_URL", "FERRY_CA_FILE")}
    r = ferry("--engine", url, "--ca-file", ec.engine.ca_file, "host", "list", env=env)
    assert r.returncode == 0 and "host1" in r.stdout, r.stderr
    r = ferry("--engine", url, "host", "list", env=dict(env, FERRY_CA_FILE=ec.engine.ca_file))
    assert r.returncode == 0 and "host1" in r.stdout, r.stderr
    for extra in (["--ca-file", ec.rogue.ca], []):
        r = ferry("--engine", url, *extra, "host", "list", env=env)
        assert r.returncode == 1 and "does not verify" in r.stderr and "--ca-file" in r.stderr, r.stderr
    r = ferry("--engine", url, "--ca-file", "/nonexistent/ca.pem", "host", "list", env=env)
    assert r.returncode == 2 and "CA file" in r.stderr, r.stderr


def test_rogue_engine_refused_by_cli(ec):
    """An engine posing as ours with another CA's certificate is refused by a CLI that trusts our CA."""
    d = make_workdir()
    rogue_engine = Engine(d, pki=ec.rogue)
    try:
        r = ferry("--engine", rogue_engine.url, "--ca-file", ec.engine.ca_file, "disk", "list")
        assert r.returncode == 1 and "does not verify" in r.stderr, r.stderr
    finally:
        assert rogue_engine.stop() == 0
        shutil.rmtree(d, ignore_errors=True)


def authed(engine, url):
    return urllib.request.Request(url, headers={"Authorization": f"Bearer {engine.token}"})


def raw_https(ec, method, path):
    u = urllib.parse.urlsplit(ec.engine.url)
    conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=30, context=ec.engine.ssl)
    try:
        conn.request(method, path, body=b"{}", headers={"Content-Type": "application/json",
                                                        "Authorization": f"Bearer {ec.engine.token}"})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def test_refusals_are_json_faults_with_security_headers(ec):
    # libsoup refuses a path that decodes to ".." before any handler: still a JSON fault.
    for path in ("/api/disks/..%2F..%2Fetc/move", "/api/..%2f..%2fetc/passwd"):
        status, headers, body = raw_https(ec, "POST", path)
        assert status == 400, (path, status, body)
        fault = json.loads(body)["fault"]
        assert fault["reason"] == "Bad request" and ".." in fault["detail"], fault
        assert headers["Content-Type"] == "application/json"
    for method, path, expected in (("GET", "/api/hosts", 200), ("GET", "/api/nothing", 404),
                                   ("POST", "/api/disks/..%2F..%2Fetc/move", 400), ("GET", "/", 200),
                                   ("GET", "/nothing", 404)):
        status, headers, _ = raw_https(ec, method, path)
        assert status == expected, (path, status)
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["Strict-Transport-Security"].startswith("max-age=")
        if path.startswith("/api"):
            assert headers["Cache-Control"] == "no-store"
    # Plain HTTP on the HTTPS port gets no API answer.
    u = urllib.parse.urlsplit(ec.engine.url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(b"GET /api/hosts HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            got = s.recv(65536)
        except OSError:
            got = b""
    assert b"host1" not in got and not got.startswith(b"HTTP/1.1 200")


def test_engine_needs_a_certificate_unless_insecure():
    d = make_workdir()
    try:
        r = subprocess.run([ENGINE_BIN, "--port=0", f"--db={d}/e.db"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "HTTPS needs tls_cert and tls_key" in r.stderr and "ferry pki init" in r.stderr
        r = subprocess.run([ENGINE_BIN, "--port=0", f"--db={d}/e.db", "--insecure=true"], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 2 and "talking TLS to agents needs tls_cert, tls_key and tls_ca" in r.stderr, r.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_insecure_mode_is_plain_and_warned():
    """--insecure=true / --agent-insecure=true: plain HTTP and plain TCP to
    agents, for development; the engine says so in its log."""
    d = make_workdir()
    c = EngineCluster(d, hosts=1, domains=1, insecure=True)
    try:
        assert c.engine.url.startswith("http://")
        assert c.engine.get("/api/hosts")["hosts"][0]["status"] == "up"
        with open(c.engine.log_path) as f:
            log = f.read()
        assert "insecure=true: the REST API is served over plain HTTP" in log
        assert "agent_insecure=true" in log
        assert "insecure=true: the engine's connection and image transfers are plain TCP" in c.agents[0].log_tail()
        assert "(plain TCP, insecure)" in c.agents[0].log_tail() and "image transfers served on http://" in c.agents[0].log_tail()
        status, _ = c.engine.request("GET", "/api/datacenters")
        assert status == 200
        with pytest.raises(HttpError) as e:
            c.engine.request("POST", "/api/disks/..%2F..%2Fetc/move", {})
        assert e.value.status == 400 and e.value.body["fault"]["reason"] == "Bad request"
        with urllib.request.urlopen(authed(c.engine, c.engine.url + "/api/hosts")) as r:
            assert "Strict-Transport-Security" not in r.headers and r.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        codes = c.stop()
        shutil.rmtree(d, ignore_errors=True)
    assert all(code == 0 for code in codes.values()), codes


def test_agent_refuses_relative_tls_paths(ec, tmp_path):
    """Relative TLS files would be read against whatever directory the agent runs in: refused at start."""
    os.symlink(ec.pki.ca, tmp_path / "ca.pem")
    cert, key = ec.pki.issue("relhost", "127.0.0.1")
    conf = tmp_path / "agent.conf"
    conf.write_text(f"[agent]\nport = 0\ntls_cert = {cert}\ntls_key = {key}\ntls_ca = ca.pem\n")
    r = subprocess.run([AGENT_BIN, "-c", str(conf), "--show-config"], capture_output=True, text=True, timeout=10,
                       cwd=tmp_path)
    assert r.returncode == 2 and "tls_ca 'ca.pem' is a relative path; give an absolute one" in r.stderr, r.stderr
