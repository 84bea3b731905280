# SPDX-License-Identifier: GPL-2.0-or-later
"""The wire: STOMP framing, JSON-RPC, bad input, heart-beats, TLS, config."""

import os
import ssl
import subprocess
import time

import pytest

from ferrytest import AGENT_BIN, Agent, MiB, RpcError, make_pki, new_uuid, wait_for
from stompclient import Client, FrameParser, encode_frame

CONNECT = b"CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0"


def raw_socket(agent, tls=True):
    return agent.raw_socket(tls=tls)


def read_until_closed(s, limit=1 << 20):
    data = b""
    while len(data) < limit:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError("server kept talking")


def raw_rpc(agent, body):
    """Sends body verbatim as one SEND and returns the parsed JSON reply."""
    import json
    q = "q-" + new_uuid()
    s = raw_socket(agent)
    s.sendall(CONNECT + encode_frame("SUBSCRIBE", [("destination", q), ("id", "s1"), ("ack", "auto")])
              + encode_frame("SEND", [("destination", "jms.topic.vdsm_requests"), ("reply-to", q)], body))
    parser = FrameParser()
    try:
        while True:
            frame = parser.next_frame()
            if frame is None:
                chunk = s.recv(65536)
                assert chunk, "connection closed before the reply"
                parser.feed(chunk)
                continue
            if frame.command == "MESSAGE":
                assert frame.header("subscription") == "s1"
                return json.loads(frame.body)
            assert frame.command == "CONNECTED", frame
    finally:
        s.close()


def assert_still_serving(agent):
    with agent.client() as c:
        assert c.call("Host.ping2") is True
    assert agent.proc.poll() is None


def test_capabilities_and_stats(cluster):
    with cluster.b.client() as c:
        caps = c.call("Host.getCapabilities")
        assert caps["hostname"] == "B" and caps["host_id"] == 2 and caps["max_jobs"] == 1
        stats = c.call("Host.getStats")
        for key in ("jobs_running", "jobs_pending", "free_slots", "bytes_copied", "copy_rate", "cpuLoad"):
            assert key in stats
        sd = c.call("StorageDomain.getInfo", {"storagedomainID": cluster.sd1})
        assert sd["uuid"] == cluster.sd1 and sd["version"] == "5" and sd["name"] == "sd1"
        st = c.call("StorageDomain.getStats", {"storagedomainID": cluster.sd2})
        assert 0 < st["diskfree"] <= st["disktotal"]


def test_batch_gets_array_reply(cluster):
    with cluster.a.client() as c:
        replies = c.batch([("Host.ping2", {}), ("No.such", {}), ("Host.getStats", {})])
    assert replies[0]["result"] is True
    assert replies[1]["error"]["code"] == -32601
    assert "jobs_running" in replies[2]["result"]


@pytest.mark.parametrize("body, code", [
    (b"{not json", -32700),
    (b"[]", -32600),
    (b'{"jsonrpc": "2.0", "id": 1}', -32600),
    (b'{"jsonrpc": "1.0", "method": "Host.ping2", "id": 1}', -32600),
    (b'{"jsonrpc": "2.0", "method": "Host.ping2", "params": [1, 2], "id": 1}', -32602),
    (b'{"jsonrpc": "2.0", "method": "Nope.nope", "id": 1}', -32601),
    (b"[" + b",".join([b'{"jsonrpc":"2.0","method":"Host.ping2","id":1}'] * 101) + b"]", -32600),
], ids=["not-json", "empty-batch", "no-method", "wrong-version", "positional-params", "unknown-method",
        "batch-over-limit"])
def test_malformed_json_rpc_gets_error(cluster, body, code):
    reply = raw_rpc(cluster.a, body)
    err = reply[0]["error"] if isinstance(reply, list) else reply["error"]
    assert err["code"] == code, reply
    assert_still_serving(cluster.a)


@pytest.mark.parametrize("method, params", [
    ("Volume.getInfo", {"storagedomainID": "../../etc", "imageID": new_uuid(), "volumeID": new_uuid()}),
    ("Volume.getInfo", {"storagedomainID": 42, "imageID": new_uuid(), "volumeID": new_uuid()}),
    ("Volume.getInfo", {"storagedomainID": new_uuid(), "imageID": "x/../../y", "volumeID": new_uuid()}),
    ("StorageDomain.create", {"storagedomainID": "..", "name": "evil"}),
    ("StorageDomain.create", {"storagedomainID": new_uuid(), "name": "a\nb"}),
    ("SDM.copy_data", {"job_id": "not-a-uuid", "source": {}, "destination": {}}),
    ("SDM.copy_data", {"job_id": new_uuid(), "source": "x", "destination": {}}),
    ("SDM.copy_data", {"job_id": new_uuid(),
                       "source": {"endpoint_type": "div", "sd_id": new_uuid(), "img_id": "../..", "vol_id": new_uuid()},
                       "destination": {"endpoint_type": "div", "sd_id": new_uuid(), "img_id": new_uuid(),
                                       "vol_id": new_uuid()}}),
    ("SDM.copy_data", {"job_id": new_uuid(),
                       "source": {"endpoint_type": "div", "sd_id": new_uuid(), "img_id": new_uuid(), "vol_id": new_uuid()},
                       "destination": {"endpoint_type": "div", "sd_id": new_uuid(), "img_id": new_uuid(),
                                       "vol_id": new_uuid(), "generation": 1000}}),
    ("Host.getJobs", {"job_ids": "all"}),
    ("Job.abort", {"job_id": None}),
    ("StoragePool.connect", {"storagepoolID": new_uuid(), "hostID": 5000, "masterSdUUID": new_uuid(),
                             "domainDict": {}}),
])
def test_bad_parameters_get_invalid_params(cluster, method, params):
    with cluster.a.client() as c:
        with pytest.raises(RpcError) as e:
            c.call(method, params)
    assert e.value.code == -32602, e.value
    assert e.value.message
    assert_still_serving(cluster.a)
    # Nothing was created outside the storage root.
    assert not os.path.exists(os.path.join(cluster.storage, "..", "evil"))


def test_unknown_domain_is_a_clear_error(cluster):
    with cluster.a.client() as c:
        with pytest.raises(RpcError) as e:
            c.call("StorageDomain.getInfo", {"storagedomainID": new_uuid()})
    assert e.value.code == 358 and "does not exist" in e.value.message


@pytest.mark.parametrize("data", [
    b"HELLO\n\n\0",                                               # not a STOMP command
    b"SEND\ndestination:jms.topic.vdsm_requests\n\n{}\0",         # before CONNECT
    CONNECT + b"SEND\ncontent-length:99999999999\n\n",           # oversize content-length
    CONNECT + b"SEND\ncontent-length:12x\n\n",                    # malformed content-length
    CONNECT + b"SEND\n" + b"x" * 70000 + b":y\n\n\0",             # header line over the limit
    CONNECT + b"SEND\n" + b"".join(b"h%d:v\n" % i for i in range(100)) + b"\n\0",  # too many headers
    CONNECT + b"SEND\nbad\\qescape:1\n\n\0",                       # undefined escape
    CONNECT + b"SUBSCRIBE\nid:1\n\n\0",                           # no destination
    CONNECT + b"SEND\ndestination:elsewhere\n\n{}\0",             # wrong destination
    CONNECT + b"send\n\n\0",                                       # lower-case command
], ids=["garbage", "send-before-connect", "huge-content-length", "bad-content-length", "long-header",
        "many-headers", "bad-escape", "subscribe-no-destination", "wrong-destination", "lower-case"])
def test_malformed_stomp_closes_connection(cluster, data):
    other = cluster.a.client()  # a bystander that must stay served
    try:
        s = raw_socket(cluster.a)
        s.sendall(data)
        reply = read_until_closed(s)
        s.close()
        assert b"ERROR" in reply, reply[:200]
        assert other.call("Host.ping2") is True
    finally:
        other.close()
    assert_still_serving(cluster.a)


def test_oversize_body_is_refused_without_buffering(cluster):
    s = raw_socket(cluster.a)
    s.sendall(CONNECT + b"SEND\ndestination:jms.topic.vdsm_requests\n\n")
    sent = 0
    try:
        while sent < 64 * MiB:   # far above max_frame (4 MiB); the agent must hang up
            s.sendall(b"x" * 65536)
            sent += 65536
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass
    s.close()
    assert sent < 64 * MiB, "agent accepted 64 MiB in one frame"
    assert_still_serving(cluster.a)


def test_byte_by_byte_and_pipelined_frames(cluster):
    s = raw_socket(cluster.a)
    q = "q-" + new_uuid()
    req = b'{"jsonrpc":"2.0","method":"Host.ping2","id":"p1"}'
    data = (CONNECT + encode_frame("SUBSCRIBE", [("destination", q), ("id", "s1"), ("ack", "auto")])
            + b"\n\n"  # heart-beats between frames
            + encode_frame("SEND", [("destination", "jms.topic.vdsm_requests"), ("reply-to", q)], req)
            + encode_frame("SEND", [("destination", "jms.topic.vdsm_requests"), ("reply-to", q)],
                           req.replace(b"p1", b"p2")))
    for i in range(len(data)):
        s.sendall(data[i:i + 1])
    got = b""
    deadline = time.monotonic() + 10
    while got.count(b"MESSAGE") < 2 and time.monotonic() < deadline:
        got += s.recv(65536)
    s.close()
    assert b"CONNECTED" in got and b'"p1"' in got and b'"p2"' in got
    assert b"subscription:s1" in got


def test_heartbeats_sent_when_asked(cluster):
    with cluster.a.client(heartbeat_ms=1000) as c:
        wait_for(lambda: c.heartbeats_received >= 2, 10, "two heart-beats")


def test_many_clients_concurrently(cluster):
    clients = [cluster.a.client() for _ in range(20)]
    try:
        for c in clients:
            assert c.call("Host.ping2") is True
    finally:
        for c in clients:
            c.close()


def test_tls_requires_client_certificate(cluster, workdir):
    d = os.path.join(workdir, "pki")
    os.makedirs(d)
    make_pki(d)
    p = lambda n: os.path.join(d, n)  # noqa: E731
    agent = Agent(workdir, "tls", cluster.sanlocks[0], cluster.storage, insecure="false",
                  tls_cert=p("server.pem"), tls_key=p("server.key"), tls_ca=p("ca.pem"))
    try:
        with Client("127.0.0.1", agent.port, tls={"cert": p("client.pem"), "key": p("client.key"),
                                                   "ca": p("ca.pem")}) as c:
            assert c.call("Host.ping2") is True
            assert c.call("StorageDomain.getInfo", {"storagedomainID": cluster.sd1})["uuid"] == cluster.sd1
        for cert in ("rogue", None):
            tls = {"ca": p("ca.pem")}
            if cert:
                tls.update(cert=p(f"{cert}.pem"), key=p(f"{cert}.key"))
            with pytest.raises((OSError, ConnectionError, TimeoutError)):
                with Client("127.0.0.1", agent.port, tls=tls, timeout=5) as c:
                    c.call("Host.ping2", timeout=5)
        # Plain text on the TLS port gets nowhere either.
        s = raw_socket(agent, tls=False)
        s.sendall(CONNECT)
        s.settimeout(5)
        assert b"CONNECTED" not in read_until_closed(s)
        s.close()
    finally:
        assert agent.stop() == 0


@pytest.mark.parametrize("args, message", [
    (["--insecure=true", "--port=70000"], "port must be a whole number from 0 to 65535"),
    (["--insecure=true", "--max-jobs=0"], "max_jobs"),
    (["--insecure=true", "--log-level=loud"], "log_level"),
    (["--port=1"], "TLS needs tls_cert"),
    (["--insecure=true", "extra"], "unexpected argument"),
])
def test_bad_config_exits_with_message(args, message):
    r = subprocess.run([AGENT_BIN] + args, capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert message in r.stderr


def test_config_file_and_overrides(workdir):
    import pathlib
    conf = pathlib.Path(workdir) / "agent.conf"
    conf.write_text("[agent]\ninsecure = true\nmax_jobs = 7\nport = 1234\ncopy_rate_limit = 50M\n")
    r = subprocess.run([AGENT_BIN, "-c", str(conf), "--port=4321", "--show-config"],
                       capture_output=True, text=True, timeout=10, check=True)
    assert "max_jobs = 7" in r.stdout and "port = 4321" in r.stdout
    assert f"copy_rate_limit = {50 * MiB}" in r.stdout
    conf.write_text("[agent]\ninsecure = true\nno_such_option = 1\n")
    r = subprocess.run([AGENT_BIN, "-c", str(conf)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "unknown option 'no_such_option'" in r.stderr
    r = subprocess.run([AGENT_BIN, "--help"], capture_output=True, text=True, timeout=10, check=True)
    for opt in ("--listen-address", "--port", "--tls-cert", "--tls-key", "--tls-ca", "--host-id",
                "--storage-root", "--sanlock-run-dir", "--max-jobs", "--job-autodelete", "--log-level",
                "--copy-rate-limit"):
        assert opt in r.stdout
