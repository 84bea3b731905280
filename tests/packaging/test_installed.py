# SPDX-License-Identifier: GPL-2.0-or-later
"""The installed packages at work. scripts/test-packages builds the .debs,
extracts them into a throwaway root and runs this module with FERRY_ROOT set
to it: the installed ferry-engine and two installed ferry-agents (each with
its own unprivileged sanlock daemon) run from that root, configured through
the packaged /etc/ferry files plus drop-ins under a temporary etc/ferry, and
the installed `ferry` CLI adds the hosts and moves a disk end to end. TLS
everywhere, with certificates from the installed `ferry pki`. Also: sd_notify
readiness and watchdog pings, and SIGHUP reloads of drop-ins."""

import base64
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import urllib.request

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "functional"))
from ferrytest import Sanlock, qemu_io_write, wait_for  # noqa: E402

ROOT = os.environ.get("FERRY_ROOT")
if not ROOT:
    raise pytest.UsageError("FERRY_ROOT (the extracted packages) is not set: run scripts/test-packages")
BIN = os.path.join(ROOT, "usr", "bin")
MiB = 1024 * 1024


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def etc_from_package(workdir, name, conf):
    """workdir/etc-NAME/ferry/CONF: the packaged file, untouched, and its empty .d folder."""
    etc = os.path.join(workdir, f"etc-{name}", "ferry")
    os.makedirs(os.path.join(etc, conf + ".d"))
    shutil.copy(os.path.join(ROOT, "etc", "ferry", conf), os.path.join(etc, conf))
    return os.path.join(etc, conf)


class NotifySocket:
    """What systemd listens on for a Type=notify service: a datagram socket,
    read all the time as systemd does (a full queue would block the sender)."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while self.running:
            try:
                m = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            with self.lock:
                self.messages.append(m)

    def count(self, line):
        with self.lock:
            return sum(line in m.split("\n") for m in self.messages)

    def stop(self):
        self.running = False
        self.thread.join()
        self.sock.close()


class Daemon:
    """An installed daemon started with --config; readiness from its log."""

    def __init__(self, workdir, name, argv, env=None):
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=dict(os.environ, **(env or {})))
        self.name = name

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, pattern, timeout=20):
        def found():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.text()[-3000:]}")
            return re.search(pattern, self.text())
        return wait_for(found, timeout, f"{self.name} to log {pattern!r}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # qemu-img children, if any
        except ProcessLookupError:
            pass
        self.log.close()
        return self.proc.returncode


def pki(workdir):
    """The installation's CA, the engine's certificate and one per host, as docs/deploy.md makes them."""
    d = os.path.join(workdir, "pki")
    run = [os.path.join(BIN, "ferry"), "pki"]
    subprocess.run([*run, "init", "--dir", d, "--name", "engine", "--address", "127.0.0.1"], check=True,
                   capture_output=True)
    for i in (1, 2):
        subprocess.run([*run, "issue", "--dir", d, "--host", f"host{i}", "--address", "127.0.0.1"], check=True,
                       capture_output=True)
    return d


@pytest.fixture
def installed(tmp_path):
    workdir = str(tmp_path)
    storage = os.path.join(workdir, "storage")
    os.makedirs(storage)
    ca = pki(workdir)
    started = []
    try:
        notify = NotifySocket(os.path.join(workdir, "notify.sock"))
        started.append(notify)
        conf = etc_from_package(workdir, "engine", "engine.conf")
        write(conf + ".d/50-test.conf",
              f"[engine]\nport = 0\ndb = {workdir}/engine.db\ntls_cert = {ca}/engine.pem\n"
              f"tls_key = {ca}/engine.key\ntls_ca = {ca}/ca.pem\n"
              "poll_interval = 200\nhost_timeout = 3000\nlog_level = info\n"
              f"create_admin = admin\nadmin_password_file = {workdir}/admin.password\n")
        # The first admin, from the configuration at the first start (as an installation does it).
        write(os.path.join(workdir, "admin.password"), "installed-admin-pw\n")
        os.chmod(os.path.join(workdir, "admin.password"), 0o600)
        write(conf + ".d/10-overridden.conf", "[engine]\nport = 1\nlog_level = debug\n")
        engine = Daemon(workdir, "engine", [os.path.join(BIN, "ferry-engine"), "--config", conf],
                        env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
        started.append(engine)
        port = int(engine.wait_log(r"listening on https://127\.0\.0\.1:(\d+)").group(1))
        agents = []
        for i in (1, 2):
            sanlock = Sanlock(workdir, f"host{i}")
            started.append(sanlock)
            conf = etc_from_package(workdir, f"host{i}", "agent.conf")
            write(conf + ".d/50-test.conf",
                  f"[agent]\nlisten_address = 127.0.0.1\nport = 0\ntransfer_port = 0\n"
                  f"tls_cert = {ca}/hosts/host{i}.pem\ntls_key = {ca}/hosts/host{i}.key\ntls_ca = {ca}/ca.pem\n"
                  f"storage_root = {storage}\nsanlock_run_dir = {sanlock.run_dir}\nio_timeout = 2\n"
                  f"host_name = host{i}\ncopy_rate_limit = 256M\n")
            agent_notify = NotifySocket(os.path.join(workdir, f"notify-agent{i}.sock"))
            started.append(agent_notify)
            agent = Daemon(workdir, f"agent{i}", [os.path.join(BIN, "ferry-agent"), "--config", conf],
                           env={"NOTIFY_SOCKET": agent_notify.path})
            agent.notify = agent_notify
            started.append(agent)
            agent.port = int(agent.wait_log(r"listening on 127\.0\.0\.1:(\d+)").group(1))
            agent.conf = conf
            agents.append(agent)
        yield {"workdir": workdir, "engine": engine, "url": f"https://127.0.0.1:{port}", "agents": agents,
               "storage": storage, "notify": notify, "ca": os.path.join(ca, "ca.pem")}
    finally:
        for d in reversed(started):
            d.stop()


def ferry(installed, *args, timeout=180):
    env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(installed["workdir"], "cli-config"))
    base = [os.path.join(BIN, "ferry"), "--engine", installed["url"], "--ca-file", installed["ca"]]
    tokens = os.path.join(env["XDG_CONFIG_HOME"], "ferry", "tokens.json")
    # The CLI keeps a token per engine URL: a second engine (the restored one) needs its own login.
    if not os.path.exists(tokens) or installed["url"] not in open(tokens).read():
        r = subprocess.run([*base, "login", "--user", "admin", "--password-file",
                            os.path.join(installed["workdir"], "admin.password")],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=env)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([*base, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                       env=env)
    assert r.returncode == 0, f"ferry {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def ferry_json(installed, *args):
    return json.loads(ferry(installed, "--json", *args))


def test_installed_move_disk(installed):
    url, engine, notify = installed["url"], installed["engine"], installed["notify"]

    # Type=notify: READY=1 once it serves, then watchdog pings from the main loop (every 200 ms here).
    wait_for(lambda: notify.count("READY=1"), 10, "READY=1 from the engine")
    wait_for(lambda: notify.count("WATCHDOG=1") >= 3, 10, "watchdog pings from the engine")
    for agent in installed["agents"]:
        wait_for(lambda: agent.notify.count("READY=1"), 10, "READY=1 from an agent")
        assert agent.notify.count("WATCHDOG=1") == 0    # no WATCHDOG_USEC: no pings
    # Drop-ins are read in lexical order: 50-test.conf (port 0, info) over 10-overridden.conf (port 1, debug).
    assert url != "https://127.0.0.1:1" and "DEBUG " not in engine.text()

    for i, agent in enumerate(installed["agents"], 1):
        out = ferry(installed, "host", "add", "--address", "127.0.0.1", "--port", str(agent.port),
                    "--name", f"host{i}", "--wait")
        assert f"host host{i} is up" in out
    for sd in ("sd1", "sd2"):
        # No CLI verb creates a domain: the REST API does.
        req = urllib.request.Request(f"{url}/api/storagedomains", data=json.dumps({"name": sd}).encode(),
                                     headers={"Content-Type": "application/json",
                                              "Authorization": "Basic " + base64.b64encode(
                                                  b"admin:installed-admin-pw").decode()}, method="POST")
        tls = ssl.create_default_context(cafile=installed["ca"])
        with urllib.request.urlopen(req, timeout=30, context=tls) as answer:
            assert answer.status == 201

    def ready():
        hosts = ferry_json(installed, "host", "list")["hosts"]
        return len(hosts) == 2 and all(h["status"] == "up" and h["pool_connected"] for h in hosts)
    wait_for(ready, 90, "both hosts connected to the pool", interval=0.3)

    ferry(installed, "disk", "create", "--name", "d1", "--size", "64M", "--sd", "sd1", "--format", "cow",
          "--volumes", "2", "--wait")
    disk = ferry_json(installed, "disk", "show", "d1")
    sds = {s["name"]: s["id"] for s in ferry_json(installed, "sd", "list")["storagedomains"]}
    top = disk["volumes"][-1]["id"]
    src = os.path.join(installed["storage"], sds["sd1"], "images", disk["id"], top)
    qemu_io_write(src, "qcow2", "0x5a", 0, 8 * MiB)

    out = ferry(installed, "disk", "move", "d1", "--sd", "sd2", "--wait")
    moved = ferry_json(installed, "disk", "show", "d1")
    assert [s["id"] for s in moved["storage_domains"]] == [sds["sd2"]], out
    assert moved["status"] == "ok"
    dst = os.path.join(installed["storage"], sds["sd2"], "images", disk["id"], top)
    assert not os.path.exists(src)
    r = subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"read -P 0x5a 0 {8 * MiB}", dst],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout

    # docs/deploy.md §8: an online backup (SQLite's backup API, what `sqlite3 .backup` uses) while the
    # engine runs, then a restore: an engine started on the copy knows the moved disk.
    workdir = installed["workdir"]
    backup = os.path.join(workdir, "engine-backup.db")
    with sqlite3.connect(os.path.join(workdir, "engine.db")) as live, sqlite3.connect(backup) as copy:
        live.backup(copy)
    with sqlite3.connect(backup) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert engine.stop() == 0
    conf = os.path.join(workdir, "etc-engine", "ferry", "engine.conf")
    write(conf + ".d/90-restore.conf", f"[engine]\ndb = {backup}\nsweep_interval = 0\n")
    restored = Daemon(workdir, "engine-restored", [os.path.join(BIN, "ferry-engine"), "--config", conf])
    try:
        port = int(restored.wait_log(r"listening on https://127\.0\.0\.1:(\d+)").group(1))
        again = dict(installed, url=f"https://127.0.0.1:{port}")
        disk = ferry_json(again, "disk", "show", "d1")
        assert [s["id"] for s in disk["storage_domains"]] == [sds["sd2"]]
        assert disk["status"] == "ok"
    finally:
        assert restored.stop() == 0


def test_installed_sighup_reload(installed):
    engine = installed["engine"]
    agent = installed["agents"][0]
    ferry(installed, "host", "add", "--address", "127.0.0.1", "--port", str(agent.port), "--name", "host1", "--wait")

    def stats():
        h = ferry_json(installed, "host", "list")["hosts"][0]
        return h["stats"] if isinstance(h.get("stats"), dict) else None
    before = wait_for(stats, 20, "host stats")
    assert before["job_limit"] == 2 and before["copy_rate_limit"] == 256 * MiB

    # Agent: a later drop-in changes two live options and one that needs a restart.
    write(agent.conf + ".d/90-reload.conf", "[agent]\nmax_jobs = 5\ncopy_rate_limit = 32M\nmax_frame = 8192\n")
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_log(r"reload: max_jobs: 2 -> 5")
    agent.wait_log(r"reload: copy_rate_limit: 268435456 -> 33554432")
    agent.wait_log(r"max_frame changed \(4194304 -> 8192\) but takes effect only at the next start")
    wait_for(lambda: (s := stats()) and s["job_limit"] == 5 and s["copy_rate_limit"] == 32 * MiB, 20,
             "the engine to see the reloaded limits")

    # A broken drop-in: logged, nothing changes, the agent keeps serving.
    write(agent.conf + ".d/95-bad.conf", "[agent]\nmax_jobs = lots\n")
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_log(r"reload failed, configuration unchanged: .*95-bad\.conf")
    assert stats()["job_limit"] == 5
    assert agent.proc.poll() is None

    # Engine: log_level from info to warning, at once: adding the second host logs nothing now.
    assert "host host1 (127.0.0.1" in engine.text()
    write(os.path.join(installed["workdir"], "etc-engine", "ferry", "engine.conf.d", "60-quiet.conf"),
          "[engine]\nlog_level = warning\n")
    engine.proc.send_signal(signal.SIGHUP)
    engine.wait_log(r"reload: log_level: info -> warning")
    wait_for(lambda: installed["notify"].count("RELOADING=1"), 10, "RELOADING=1 from the engine")
    second = installed["agents"][1]
    ferry(installed, "host", "add", "--address", "127.0.0.1", "--port", str(second.port), "--name", "host2", "--wait")
    assert "host host2 (127.0.0.1" not in engine.text()
