# SPDX-License-Identifier: GPL-2.0-or-later
"""The `ferry` command-line tool: usage errors, an unreachable engine, the
engine's faults and --wait against a small scripted HTTP server, and (once
the engine is built) a whole local cluster: up, disk create/move, down."""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ferrytest import BUILD, tls_client_env, wait_for

FERRY = os.path.join(BUILD, "src", "cli", "ferry")
ENGINE_BIN = os.path.join(BUILD, "src", "engine", "ferry-engine")


def ferry(*args, env=None, cwd=None, timeout=60):
    if not os.access(FERRY, os.X_OK):
        pytest.fail(f"{FERRY} is missing: build first")
    full_env = tls_client_env()
    full_env.pop("FERRY_ENGINE_URL", None)
    full_env.pop("FERRY_CA_FILE", None)
    full_env.update(env or {})
    return subprocess.run([FERRY, *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd or tempfile.gettempdir(), timeout=timeout, stdin=subprocess.DEVNULL)


def free_port():
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tmpdir_ferry():
    d = tempfile.mkdtemp(prefix="ferry-test-cli-", dir=os.environ.get("FERRY_TEST_TMP"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ---- what needs no engine ----

def test_help():
    r = ferry("--help")
    assert r.returncode == 0
    for word in ("ferry disk move DISK --sd SD", "ferry cluster up", "--engine URL", "--json"):
        assert word in r.stdout


def test_command_help():
    r = ferry("disk", "create", "--help")
    assert r.returncode == 0
    assert "--size" in r.stdout and "--preallocated" in r.stdout


@pytest.mark.parametrize("args, message", [
    ([], "Usage: ferry"),
    (["frob"], "unknown command 'frob'"),
    (["disk"], "'disk' needs a command"),
    (["disk", "frob"], "unknown command 'disk frob'"),
    (["host", "list", "extra"], "unexpected argument"),
    (["--bogus", "host", "list"], "Unknown option --bogus"),
    (["disk", "show"], "missing DISK"),
    (["disk", "move", "d1"], "--sd is required"),
    (["disk", "create", "--name", "d"], "--name, --size and --sd are required"),
    (["disk", "create", "--name", "d", "--size", "1Q", "--sd", "sd1"], "invalid size '1Q'"),
    (["disk", "create", "--name", "d", "--size", "1000", "--sd", "sd1"], "not a multiple of 512"),
    (["disk", "create", "--name", "d", "--size", "65T", "--sd", "sd1"], "between 1 byte and 64 TiB"),
    (["disk", "create", "--name", "d", "--size", "0", "--sd", "sd1"], "between 1 byte and 64 TiB"),
    (["disk", "create", "--name", "x" * 65, "--size", "1G", "--sd", "sd1"], "1 to 64 characters"),
    (["disk", "create", "--name", "", "--size", "1G", "--sd", "sd1"], "1 to 64 characters"),
    (["disk", "create", "--name", "a\tb", "--size", "1G", "--sd", "sd1"], "control character"),
    (["disk", "create", "--name", "d", "--size", "1G", "--sd", "sd1", "--format", "vmdk"], "raw or cow"),
    (["disk", "create", "--name", "d", "--size", "1G", "--sd", "sd1", "--sparse", "--preallocated"],
     "exclude each other"),
    (["disk", "create", "--name", "d", "--size", "1G", "--sd", "sd1", "--volumes", "17"], "1 and 16"),
    (["job", "show", "not-a-uuid"], "is not a UUID"),
    (["config", "get", "../../etc"], "invalid option name"),
    (["config", "set", "DataOperationsByHSM"], "missing NAME and VALUE"),
    (["--engine", "ftp://example", "host", "list"], "invalid engine URL"),
    (["cluster", "up", "--hosts", "0"], "--hosts must be 1 to"),
    (["host", "add"], "--address is required"),
    (["host", "add", "--address", "h1", "--port", "70000"], "--port must be 1-65535"),
    (["host", "add", "--address", "a\tb"], "control character"),
    (["host", "add", "--address", "h1", "extra"], "unexpected argument"),
    (["pki", "init"], "--dir is required"),
    (["pki", "issue", "--dir", "/nonexistent-ferry-pki", "--host", "h1"], "--dir, --host and --address are required"),
    (["pki", "init", "--dir", "/nonexistent-ferry-pki", "--name", "a b"], "name 'a b' must be"),
    (["pki", "issue", "--dir", "/nonexistent-ferry-pki", "--host", "h1", "--address", "10.0.0.1/8"],
     "neither an IP address nor a DNS name"),
    (["pki", "init", "--dir", "/nonexistent-ferry-pki", "--days", "-1"], "--days must be 1 to"),
    (["--ca-file", "/nonexistent/ca.pem", "host", "list"], "cannot use the CA file"),
])
def test_usage_errors(args, message):
    # An engine that would answer nothing: usage errors must be caught first.
    r = ferry(*args, env={"FERRY_ENGINE_URL": f"http://127.0.0.1:{free_port()}"})
    assert r.returncode == 2, r
    assert message in r.stderr, r.stderr
    assert "cannot reach" not in r.stderr


def test_unreachable_engine(tmpdir_ferry):
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    r = ferry("--engine", url, "host", "list")
    assert r.returncode == 2
    assert r.stderr.startswith(f"ferry: cannot reach the engine at {url}: "), r.stderr

    # The global options are accepted after the command words as well.
    r = ferry("disk", "list", "--engine", url)
    assert r.returncode == 2 and url in r.stderr

    r = ferry("job", "list", env={"FERRY_ENGINE_URL": url})
    assert r.returncode == 2 and url in r.stderr

    # Else ./ferry-cluster/cluster.json names the engine.
    os.makedirs(os.path.join(tmpdir_ferry, "ferry-cluster"))
    with open(os.path.join(tmpdir_ferry, "ferry-cluster", "cluster.json"), "w") as f:
        json.dump({"engine_url": url}, f)
    r = ferry("sd", "list", cwd=tmpdir_ferry)
    assert r.returncode == 2 and url in r.stderr


def test_cluster_down_without_cluster(tmpdir_ferry):
    r = ferry("cluster", "down", "--dir", tmpdir_ferry)
    assert r.returncode == 0, r
    assert "nothing to stop" in r.stdout

    r = ferry("cluster", "status", "--dir", tmpdir_ferry)
    assert r.returncode == 1
    assert "no cluster" in r.stderr


def test_cluster_down_ignores_reused_pids(tmpdir_ferry):
    """cluster.json naming pids that are not the cluster's processes: nothing is signalled."""
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        with open(os.path.join(tmpdir_ferry, "cluster.json"), "w") as f:
            json.dump({"engine_url": "http://127.0.0.1:1", "engine_pid": bystander.pid, "dir": tmpdir_ferry,
                       "hosts": [{"name": "host1", "pid": bystander.pid, "sanlock_pid": bystander.pid,
                                  "sanlock_run_dir": os.path.join(tmpdir_ferry, "run", "host1")}],
                       "storage_domains": []}, f)
        r = ferry("cluster", "down", "--dir", tmpdir_ferry)
        assert r.returncode == 0, r
        assert bystander.poll() is None, "ferry cluster down killed a process it did not start"
        assert not os.path.exists(os.path.join(tmpdir_ferry, "cluster.json"))
    finally:
        bystander.kill()
        bystander.wait()


# ---- a scripted engine: faults, limits, --wait ----

class FakeEngine:
    """Answers the few REST calls a test scripts; records the requests."""

    def __init__(self):
        self.routes = {}
        self.requests = []
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                engine.requests.append((self.command, self.path, body))
                route = engine.routes.get((self.command, self.path))
                if route is None:
                    status, payload = 404, {"fault": {"reason": "Not found", "detail": self.path}}
                else:
                    status, payload = route(body) if callable(route) else route
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    e = FakeEngine()
    yield e
    e.stop()


SD1 = "11111111-1111-4111-8111-111111111111"
SD2 = "22222222-2222-4222-8222-222222222222"
DISK = "33333333-3333-4333-8333-333333333333"
JOB = "44444444-4444-4444-8444-444444444444"
HOST3 = {"id": "55555555-5555-4555-8555-555555555555", "name": "host3"}


def test_engine_fault(fake):
    fake.routes[("GET", "/api/hosts")] = (503, {"fault": {"reason": "Unavailable", "detail": "no SPM yet"}})
    r = ferry("--engine", fake.url, "host", "list")
    assert r.returncode == 1
    assert r.stderr == "ferry: Unavailable: no SPM yet\n"


def test_engine_text_is_made_printable(fake):
    fake.routes[("GET", "/api/hosts")] = (200, {"hosts": [
        {"id": HOST3["id"], "name": "evil\x1b[2J\rname", "status": "up", "address": "127.0.0.1", "port": 1}]})
    r = ferry("--engine", fake.url, "host", "list")
    assert r.returncode == 0, r
    assert "\x1b" not in r.stdout and "evil?[2J?name" in r.stdout


def test_oversized_answer(fake):
    fake.routes[("GET", "/api/jobs")] = (200, b'{"jobs": [' + b" " * (17 * 1024 * 1024) + b"]}")
    r = ferry("--engine", fake.url, "job", "list")
    assert r.returncode == 1
    assert "larger than 16 MiB" in r.stderr


def test_not_json(fake):
    fake.routes[("GET", "/api/disks")] = (200, b"<html>")
    r = ferry("--engine", fake.url, "disk", "list")
    assert r.returncode == 1
    assert "not JSON" in r.stderr


def test_config_set_sends_typed_value(fake):
    fake.routes[("PUT", "/api/options/DataOperationsByHSM")] = lambda body: (
        200, {"name": "DataOperationsByHSM", "value": body["value"]})
    r = ferry("--engine", fake.url, "config", "set", "DataOperationsByHSM", "false")
    assert r.returncode == 0, r
    assert r.stdout == "DataOperationsByHSM = false\n"
    assert fake.requests[-1][2] == {"value": False}


def _script_move(fake, final_status, stalled_polls=()):
    """A move whose job runs for a few polls, then ends with final_status; its copy
    step is "stalled" at the polls in stalled_polls."""
    polls = {"n": 0}
    fake.routes[("GET", "/api/disks?search=name%3Dd1")] = (200, {"disks": [
        {"id": DISK, "name": "d1", "status": "ok", "storage_domains": [{"id": SD1}]}]})
    fake.routes[("GET", "/api/storagedomains")] = (200, {"storagedomains": [
        {"id": SD1, "name": "sd1"}, {"id": SD2, "name": "sd2"}]})
    fake.routes[("POST", f"/api/disks/{DISK}/move")] = (202, {"job": {"id": JOB}})
    fake.routes[("GET", f"/api/disks/{DISK}")] = (200, {"id": DISK, "name": "d1", "status": "locked"})

    def job(_):
        polls["n"] += 1
        n = polls["n"]
        status = "started" if n < 6 else final_status
        body = {"id": JOB, "status": status, "progress": min(100, n * 20), "description": "Moving disk d1"}
        if status == "started":
            # Unknown at first (null), then the engine's estimate.
            body["eta_seconds"] = None if n < 2 else [None, None, 125, 65, 5][n - 1]
        return 200, body

    def steps(_):
        n = polls["n"]
        copy = {"id": "s2", "type": "copy_data", "status": "started" if n < 6 else final_status,
                "progress": min(100, n * 20), "execution_host": HOST3, "description": "Copying volume v1"}
        if final_status == "failed" and n >= 6:
            copy["error"] = {"reason": "CopyFailed", "detail": "disk full"}
        if n in stalled_polls:
            copy["status_detail"] = "stalled"
        return 200, {"steps": [{"id": "s1", "type": "create_volume", "status": "finished", "progress": 100,
                                "execution_host": {"id": "x", "name": "host1"}, "description": "Creating"},
                               copy]}

    fake.routes[("GET", f"/api/jobs/{JOB}")] = job
    fake.routes[("GET", f"/api/jobs/{JOB}/steps")] = steps


def test_name_is_resolved_by_search(fake):
    """A name is looked up with one ?search=name=NAME (escaped), never by listing the whole
    collection; no match and several matches keep their errors."""
    other = "66666666-6666-4666-8666-666666666666"
    fake.routes[("GET", "/api/disks?search=name%3Da%20b%3Dc%2B")] = (200, {"disks": [
        {"id": DISK, "name": "a b=c+", "status": "ok"}]})
    fake.routes[("GET", f"/api/disks/{DISK}")] = (200, {"id": DISK, "name": "a b=c+", "status": "ok",
                                                       "volumes": []})
    fake.routes[("GET", "/api/disks?search=name%3Dtwin")] = (200, {"disks": [
        {"id": DISK, "name": "twin"}, {"id": other, "name": "twin"}]})
    fake.routes[("GET", "/api/disks?search=name%3Dnone")] = (200, {"disks": []})
    r = ferry("--engine", fake.url, "--json", "disk", "show", "a b=c+")
    assert r.returncode == 0, r
    assert json.loads(r.stdout)["id"] == DISK
    r = ferry("--engine", fake.url, "disk", "show", "twin")
    assert r.returncode == 1 and "2 disks are named 'twin': give the id" in r.stderr, r
    r = ferry("--engine", fake.url, "disk", "show", "none")
    assert r.returncode == 1 and "no disk 'none'" in r.stderr, r
    assert not [p for m, p, _ in fake.requests if p == "/api/disks"]


def test_hung_engine_times_out_to_the_next(fake):
    """An engine that takes the connection and never answers (a SIGSTOPped one: the kernel still
    queues the request) costs one timeout: a read then goes to the next engine listed; a write,
    already sent, is not sent again and says its outcome is unknown."""
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    try:
        engines = f"http://127.0.0.1:{hung.getsockname()[1]},{fake.url}"
        env = {"FERRY_HTTP_TIMEOUT": "1", "FERRY_ENGINE_WAIT": "0"}
        fake.routes[("GET", "/api/jobs")] = (200, {"jobs": []})
        r = ferry("--engine", engines, "job", "list", env=env)
        assert r.returncode == 0, r
        assert [p for _, p, _ in fake.requests] == ["/api/jobs"]
        fake.routes[("POST", f"/api/jobs/{JOB}/cancel")] = (200, {})
        r = ferry("--engine", engines, "job", "cancel", JOB, env=env)
        assert r.returncode != 0, r
        assert "may or may not have been done" in r.stderr, r
        assert [p for _, p, _ in fake.requests] == ["/api/jobs"]
    finally:
        hung.close()


def test_wait_move_finished(fake):
    _script_move(fake, "finished")
    r = ferry("--engine", fake.url, "disk", "move", "d1", "--sd", "sd2", "--wait")
    assert r.returncode == 0, r
    assert fake.requests[[m for m, *_ in fake.requests].index("POST")][2] == {"storage_domain": {"id": SD2}}
    lines = r.stdout.splitlines()
    assert lines[0] == f"moving disk d1 to sd2: job {JOB}"
    # Not a terminal: one line per >= 5 % or step change, no carriage returns.
    assert "\r" not in r.stdout
    assert " 20%  copy_data on host3" in lines
    assert " 60%  copy_data on host3, ETA 2m05s" in lines
    assert " 80%  copy_data on host3, ETA 1m05s" in lines
    assert "100%  finished" in lines
    assert "copy_data ran on host3 (finished): Copying volume v1" in lines
    assert lines[-1].startswith(f"job {JOB} finished in ")


def test_wait_move_shows_stalled_instead_of_an_eta(fake):
    _script_move(fake, "finished", stalled_polls=(4,))
    r = ferry("--engine", fake.url, "disk", "move", "d1", "--sd", "sd2", "--wait")
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert " 60%  copy_data on host3, ETA 2m05s" in lines
    # The job still carries an estimate at that poll: the stalled step wins.
    assert " 80%  copy_data on host3, stalled" in lines, lines
    assert not any("80%" in line and "ETA" in line for line in lines), lines


def test_wait_move_failed(fake):
    _script_move(fake, "failed")
    r = ferry("--engine", fake.url, "disk", "move", DISK, "--sd", SD2, "--wait")
    assert r.returncode == 1, r
    assert "ferry: step copy_data failed on host3: Copying volume v1" in r.stderr
    assert "disk full" in r.stderr
    assert f"ferry: job {JOB} failed" in r.stderr


def test_wait_move_cancelled(fake):
    _script_move(fake, "aborted")
    r = ferry("--engine", fake.url, "disk", "move", DISK, "--sd", SD2, "--wait")
    assert r.returncode == 1, r
    assert f"ferry: job {JOB} was cancelled" in r.stderr


def test_job_cancel_and_events(fake):
    fake.routes[("POST", f"/api/jobs/{JOB}/cancel")] = (202, {"job": {"id": JOB, "status": "cancelling"}})
    r = ferry("--engine", fake.url, "job", "cancel", JOB)
    assert r.returncode == 0, r
    assert ("POST", f"/api/jobs/{JOB}/cancel", None) in fake.requests
    assert "cancel requested" in r.stdout
    fake.routes[("POST", f"/api/jobs/{DISK}/cancel")] = (409, {"fault": {"reason": "Conflict",
                                                                          "detail": "job is finished"}})
    r = ferry("--engine", fake.url, "job", "cancel", DISK)
    assert r.returncode == 1 and "Conflict: job is finished" in r.stderr
    r = ferry("--engine", fake.url, "job", "cancel", "not-a-uuid")
    assert r.returncode != 0 and "job id" in r.stderr
    fake.routes[("GET", "/api/events")] = (200, {"events": [
        {"id": 2, "time": 1700000100, "severity": "warning", "message": "fencing copy job X"},
        {"id": 1, "time": 1700000000, "severity": "normal", "message": "copying volume V"}]})
    r = ferry("--engine", fake.url, "event", "list")
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert "copying volume V" in lines[1] and "fencing copy job X" in lines[2], lines   # oldest first


def test_wait_json(fake):
    _script_move(fake, "finished")
    r = ferry("--engine", fake.url, "--json", "disk", "move", "d1", "--sd", "sd2", "--wait")
    assert r.returncode == 0, r
    job = json.loads(r.stdout)
    assert job["status"] == "finished" and job["steps"][1]["execution_host"]["name"] == "host3"


# ---- a whole cluster from the build tree ----

def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _cluster_pids(info):
    pids = [info["engine_pid"]]
    for h in info["hosts"]:
        pids += [h["pid"], h["sanlock_pid"]]
    return [p for p in pids if p]


def test_cluster_up_two_engines_on_postgresql(tmpdir_ferry):
    """cluster up --engines 2 --postgresql: its own PostgreSQL, two engines (one active) in cluster.json's
    engines list; the CLI in the folder works through either; down stops all of it."""
    d = os.path.join(tmpdir_ferry, "ferry-cluster")
    cluster_json = os.path.join(d, "cluster.json")
    info = None
    try:
        r = ferry("cluster", "up", "--dir", d, "--hosts", "1", "--domains", "1", "--engines", "2", "--postgresql",
                  timeout=240)
        assert r.returncode == 0, r.stdout + r.stderr
        with open(cluster_json) as f:
            info = json.load(f)
        engines = info["engines"]
        assert len(engines) == 2 and engines[0]["url"] == info["engine_url"], engines
        assert all(e["url"].startswith("https://127.0.0.1:") and _alive(e["pid"]) for e in engines), engines
        assert info["engine_db"].startswith("host=") and os.path.exists(os.path.join(d, "postgresql"))
        ctx = ssl.create_default_context(cafile=info["ca_file"])
        roles = []
        for e in engines:
            with open(info["admin_password_file"]) as f:
                form = urllib.parse.urlencode({"grant_type": "password", "username": "admin",
                                               "password": f.read().strip(), "scope": "ovirt-app-api"}).encode()
            with urllib.request.urlopen(e["url"] + "/sso/oauth/token", form, timeout=30, context=ctx) as resp:
                token = json.load(resp)["access_token"]
            req = urllib.request.Request(e["url"] + "/api/engine", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
                roles.append(json.load(resp)["role"])
        assert roles == ["active", "standby"], roles
        # From the folder, through the standby first: its 307 is followed to the active engine.
        env = {"FERRY_ENGINE_URL": f"{engines[1]['url']},{engines[0]['url']}", "FERRY_CA_FILE": info["ca_file"],
               "XDG_CONFIG_HOME": os.path.join(tmpdir_ferry, "config")}
        r = ferry("login", "--user", "admin", "--password-file", info["admin_password_file"], env=env)
        assert r.returncode == 0, r.stderr
        r = ferry("disk", "create", "--name", "pg-disk", "--size", "1M", "--sd", "sd1", "--wait", env=env)
        assert r.returncode == 0 and "is ok" in r.stdout, r.stdout + r.stderr

        # status: every engine, each as it answers itself.
        def engine_rows(out):
            """{index: [url, pid, process, role]} of the ENGINE table."""
            rows = (re.match(r"(\d+)\s+(https://\S+)\s+(\d+) (running|NOT RUNNING)\s+(.*)$", line)
                    for line in out.splitlines())
            return {m.group(1): list(m.groups()[1:]) for m in rows if m}
        r = ferry("cluster", "status", "--dir", d)
        assert r.returncode == 0, r.stdout + r.stderr
        rows = engine_rows(r.stdout)
        assert rows["1"][:3] == [engines[0]["url"], str(engines[0]["pid"]), "running"] and \
            rows["1"][3].startswith("active (epoch "), r.stdout
        assert len(rows) == 2, r.stdout
        assert rows["2"] == [engines[1]["url"], str(engines[1]["pid"]), "running", "standby"], r.stdout
        # The active one dies: shown dead, the standby that took over active; the cluster is not healthy.
        os.kill(engines[0]["pid"], signal.SIGKILL)

        def took_over():
            r = ferry("cluster", "status", "--dir", d)
            rows = engine_rows(r.stdout)
            return r.returncode == 1 and rows["2"][3].startswith("active") and (r, rows)
        r, rows = wait_for(took_over, 30, "the standby to show active", interval=0.5)
        assert rows["1"][2] == "NOT RUNNING" and "cannot reach" in rows["1"][3], r.stdout
        assert "the cluster is not healthy" in r.stderr and "host1" in r.stdout, r.stdout + r.stderr

        r = ferry("cluster", "down", "--dir", d, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "postgresql" in r.stdout and "engine 2" in r.stdout, r.stdout
        pids = _cluster_pids(info) + [e["pid"] for e in engines]
        wait_for(lambda: not any(_alive(p) for p in pids), 10, "cluster processes to exit")
        assert not _procs_mentioning(info["postgresql_dir"])
    finally:
        if os.path.exists(cluster_json):
            ferry("cluster", "down", "--dir", d, timeout=120)
        if info:
            for pid in _cluster_pids(info) + [e["pid"] for e in info.get("engines", [])]:
                if _alive(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


def _procs_mentioning(text):
    """Pids of live processes whose command line or environment mentions text."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                blob = f.read()
            with open(f"/proc/{pid}/environ", "rb") as f:
                blob += f.read()
        except OSError:
            continue
        if text.encode() in blob and _alive(int(pid)):
            found.append(int(pid))
    return found


def test_cluster_up_interrupted_leaves_nothing_running(tmpdir_ferry):
    """Ctrl-C while `cluster up` starts the daemons (which run in their own
    sessions) stops what it started: no sanlock daemon or agent outlives it."""
    d = os.path.realpath(os.path.join(tmpdir_ferry, "cluster"))
    env = dict(os.environ)
    env.pop("FERRY_ENGINE_URL", None)
    proc = subprocess.Popen([FERRY, "cluster", "up", "--dir", d, "--hosts", "3", "--domains", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL)
    try:
        def some_started():
            try:
                with open(os.path.join(d, "cluster.json")) as f:
                    return any(h.get("sanlock_pid") for h in json.load(f)["hosts"])
            except (OSError, ValueError, KeyError):
                return False
        wait_for(some_started, 30, "cluster up to start a sanlock daemon", interval=0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, (out, err)
    assert "interrupted by signal 2" in err and "stopping what was started" in err, err
    wait_for(lambda: not _procs_mentioning(d), 10, "the started daemons to exit")
    assert not os.path.exists(os.path.join(d, "cluster.json"))


@pytest.mark.skipif(not os.path.exists(ENGINE_BIN), reason="engine not built yet")
def test_cluster_up_move(tmpdir_ferry):
    # ./ferry-cluster: the CLI run from tmpdir_ferry finds the engine and its CA without being told.
    d = os.path.join(tmpdir_ferry, "ferry-cluster")
    cluster_json = os.path.join(d, "cluster.json")
    info = None
    try:
        r = ferry("cluster", "up", "--dir", d, "--hosts", "3", "--domains", "2", timeout=240)
        assert r.returncode == 0, r.stdout + r.stderr
        with open(cluster_json) as f:
            info = json.load(f)
        assert info["dir"] == os.path.realpath(d)
        assert info["engine_url"].startswith("https://127.0.0.1:")
        pki = os.path.join(info["dir"], "pki")
        assert info["ca_file"] == os.path.join(pki, "ca.pem")
        for key in ("ca.key", "engine.key", "hosts/host1.key", "hosts/host3.key"):
            assert os.stat(os.path.join(pki, key)).st_mode & 0o777 == 0o600, key
        assert [h["name"] for h in info["hosts"]] == ["host1", "host2", "host3"]
        for h in info["hosts"]:
            assert h["address"] == "127.0.0.1" and 0 < h["port"] < 65536
            assert h["id"] and h["sanlock_run_dir"] == os.path.join(info["dir"], "run", h["name"])
            assert os.path.exists(h["log"])
            # Each agent serves Prometheus metrics; cluster.json says where.
            # HTTPS with the host's certificate, which the cluster's CA signed.
            assert re.fullmatch(r"https://127\.0\.0\.1:\d+/metrics", h["metrics_url"]), h
            with urllib.request.urlopen(h["metrics_url"], timeout=10,
                                        context=ssl.create_default_context(cafile=info["ca_file"])) as resp:
                text = resp.read().decode()
            assert f'ferry_agent_info{{host="{h["name"]}",' in text, text
        assert [sd["name"] for sd in info["storage_domains"]] == ["sd1", "sd2"]
        for sd in info["storage_domains"]:
            assert sd["path"] == os.path.join(info["dir"], "storage", sd["id"])
            assert os.path.isdir(sd["path"])
        assert all(_alive(p) for p in _cluster_pids(info))

        env = {"FERRY_ENGINE_URL": info["engine_url"], "FERRY_CA_FILE": info["ca_file"]}

        # Every agent and its transfer endpoint, and the engine, speak TLS only.
        for h in info["hosts"]:
            with open(h["log"]) as f:
                log = f.read()
            assert "(TLS)" in log and "image transfers served on https://" in log, log[-2000:]
        r = ferry("host", "list", cwd=tmpdir_ferry)
        assert r.returncode == 0 and r.stdout.count(" up ") == 3, r.stdout + r.stderr
        # The first admin: its password 0600, named in cluster.json; a CLI with no token of its own,
        # run in the cluster's parent folder, logs in as it; elsewhere it is told how to log in.
        assert info["admin_user"] == "admin"
        assert os.stat(info["admin_password_file"]).st_mode & 0o777 == 0o600
        fresh = os.path.join(tmpdir_ferry, "fresh-config")
        r = ferry("user", "list", cwd=tmpdir_ferry, env={"XDG_CONFIG_HOME": fresh})
        assert r.returncode == 0 and "admin" in r.stdout, r.stdout + r.stderr
        r = ferry("host", "list", env=dict(env, XDG_CONFIG_HOME=os.path.join(tmpdir_ferry, "other-config")))
        assert r.returncode == 1 and "ferry login" in r.stderr, r.stderr
        r = ferry("login", "--user", "admin", "--password-file", info["admin_password_file"],
                  env=dict(env, XDG_CONFIG_HOME=os.path.join(tmpdir_ferry, "other-config")))
        assert r.returncode == 0, r.stderr
        r = ferry("host", "list", env={"FERRY_ENGINE_URL": info["engine_url"]})
        assert r.returncode == 1 and "does not verify" in r.stderr, r.stderr

        # A second `up` on a live cluster is refused.
        r = ferry("cluster", "up", "--dir", d)
        assert r.returncode == 1 and "cluster down" in r.stderr

        r = ferry("cluster", "status", "--dir", d)
        assert r.returncode == 0, r.stdout + r.stderr

        r = ferry("host", "list", env=env)
        assert r.returncode == 0, r
        assert r.stdout.count(" up ") == 3 and "SPM" in r.stdout
        hosts = json.loads(ferry("host", "list", "--json", env=env).stdout)["hosts"]
        assert sorted(h["name"] for h in hosts) == ["host1", "host2", "host3"]

        r = ferry("disk", "create", "--name", "clidisk", "--size", "64M", "--sd", "sd1", "--wait",
                  env=env, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr

        r = ferry("disk", "move", "clidisk", "--sd", "sd2", "--wait", env=env, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "copy_data ran on host" in r.stdout

        disk = json.loads(ferry("disk", "show", "clidisk", "--json", env=env).stdout)
        sd2 = info["storage_domains"][1]["id"]
        assert disk["status"] == "ok"
        assert [sd["id"] for sd in disk["storage_domains"]] == [sd2]

        r = ferry("job", "list", env=env)
        assert r.returncode == 0 and "finished" in r.stdout

        r = ferry("cluster", "down", "--dir", d, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert not os.path.exists(cluster_json)
        wait_for(lambda: not any(_alive(p) for p in _cluster_pids(info)), 10, "cluster processes to exit")
    finally:
        # Whatever failed above: nothing may outlive the test.
        if os.path.exists(cluster_json):
            ferry("cluster", "down", "--dir", d, timeout=120)
        if info:
            for pid in _cluster_pids(info):
                if _alive(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


def test_host_add_unreachable_agent(tmp_path):
    """host add registers a host of another machine; --wait fails with a hint when its agent never answers."""
    from enginetest import Engine
    engine = Engine(str(tmp_path))
    try:
        env = engine.cli_env()
        port = free_port()
        r = ferry("host", "add", "--address", "127.0.0.1", "--port", str(port), "--name", "far",
                  "--wait", "--timeout", "2", env=env)
        assert r.returncode == 1, r
        assert "host far added" in r.stdout
        assert "certificate" in r.stderr and "ferry pki issue" in r.stderr, r.stderr
        hosts = engine.get("/api/hosts")["hosts"]
        assert [(h["name"], h["address"], h["port"]) for h in hosts] == [("far", "127.0.0.1", port)]
        # The same name again: the engine's refusal reaches the user.
        r = ferry("host", "add", "--address", "127.0.0.2", "--name", "far", env=env)
        assert r.returncode == 1 and "far" in r.stderr, r
    finally:
        engine.stop()
