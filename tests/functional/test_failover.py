# SPDX-License-Identifier: GPL-2.0-or-later
"""Two engines on one PostgreSQL database (issue 14, item 2): one active, one
standby; real PostgreSQL 15 (a cluster of this module's own, in a temp
folder: xdist workers share nothing), real agents and sanlock daemons.

The active engine is SIGKILLed, SIGSTOPped (and resumed after the takeover),
and PostgreSQL is restarted, each while a move copies, and the active engine
is SIGKILLed while it fences the copy of a dead host (the last test: ~90 s,
sanlock's lease expiry): the move finishes, its data intact, and exactly one
engine is active afterwards. Without
PostgreSQL installed the module fails (scripts/install-deps installs it)."""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

import pytest

import threading

from conftest import make_workdir
from enginetest import PSQL, Engine, EngineCluster, HttpError, PostgresCluster
from ferrytest import FERRY, MiB, wait_for
from invariant import (TERMINAL, assert_invariant, create_disk, disk_digest, fill_disk, read_meta, vol_path,
                       wait_job_end)

RATE = 32 * MiB                 # --copy-rate-limit: the 128 MiB copies below last 4 s
TAKEOVER_S = 10                 # the bound after the active engine's death
LEADER_LOCK = 1718774092         # the engines' advisory lock ("fryL", src/engine/store/leader.c)
HOST_LOST_S = 5                 # --host-lost-timeout (its minimum): fence a lost copy's host soon
# --leader-stall-timeout: the slow-leader test's 7 s block plus the 1 s stamp and 1 s check of the
# heartbeat is 9 s; 3 s more for a loaded machine. The stuck-leader test lasts about this plus 2 s.
STALL_S = 12
SANLOCK_EXPIRY = 8 * 2 + 60     # sanlock (io_timeout 2): a dead host's leases are free this long after its death
# Both engines: the same options, whichever leads.
ENGINE_ARGS = (f"--host-lost-timeout={HOST_LOST_S}", f"--leader-stall-timeout={STALL_S}")


class Pair:
    """The cluster (its .engine: whichever is active now) and both engines."""

    def __init__(self, cluster, engines):
        self.cluster = cluster
        self.engines = engines
        self.dead = set()       # hosts killed for good (their agents' exit codes are not checked)

    def role(self, engine):
        return engine.get("/api/engine")

    def active(self):
        return next(e for e in self.engines if self.role(e)["role"] == "active")

    def other(self, engine):
        return next(e for e in self.engines if e is not engine)


@pytest.fixture(scope="module")
def fc():
    d = make_workdir()
    pg = PostgresCluster()
    db = pg.new_database()
    c = EngineCluster(d, hosts=2, domains=2, engine_db=db, engine_args=ENGINE_ARGS,
                      agent_options={"copy_rate_limit": f"{RATE // MiB}M"})
    c.pg = pg
    engines = [c.engine]
    codes = {}
    pair = None
    try:
        d2 = os.path.join(d, "engine2")
        os.makedirs(d2)
        # The same admin (made by the first engine), the same certificates.
        shutil.copy(c.engine.admin_password_file, os.path.join(d2, "admin.password"))
        engines.append(Engine(d2, *ENGINE_ARGS, pki=c.pki, db=db))
        pair = Pair(c, engines)
        yield pair
    finally:
        codes = {f"engine{i + 1}": e.stop() for i, e in enumerate(engines)}
        c.engine = None
        codes.update({k: v for k, v in c.stop().items() if k not in (pair.dead if pair else ())})
        pg.stop()
        if not os.environ.get("FERRY_KEEP_TMP"):
            shutil.rmtree(d, ignore_errors=True)
    assert all(code == 0 for code in codes.values()), codes


@pytest.fixture
def scratch(fc):
    return tempfile.mkdtemp(prefix="scratch-", dir=fc.cluster.workdir)


def raw_request(engine, method, path, body=b"{}"):
    """(status, headers) without following anything."""
    u = urllib.parse.urlsplit(engine.url)
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=engine.ssl, timeout=30)
    try:
        conn.request(method, path, body=body if method != "GET" else None,
                     headers={"Authorization": f"Bearer {engine.token}", "Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        return r.status, dict(r.getheaders())
    finally:
        conn.close()


def start_move(fc, name, seed, data=128 * MiB):
    """A move whose copy (data / RATE seconds) is running, with the source's digest."""
    c = fc.cluster
    disk = create_disk(c, name, 256 * MiB)
    fill_disk(c, disk, data, seed)
    digest = disk_digest(c, disk["id"], tempfile.mkdtemp(prefix="scratch-", dir=c.workdir))
    job_id = c.engine.post(f"/api/disks/{disk['id']}/move", {"storage_domain": {"id": c.sds[1]["id"]}})["job"]["id"]

    def copying():
        steps = c.engine.get(f"/api/jobs/{job_id}/steps")["steps"]
        return any(s["type"] == "copy_data" and s["status"] == "started" and s["progress"] > 0 for s in steps)
    wait_for(copying, 60, "the copy to run", interval=0.1)
    return disk, digest, job_id


def wait_active(fc, engine, timeout):
    """Seconds until engine reports itself active; then it is the cluster's engine."""
    t0 = time.monotonic()

    def active():
        try:
            return fc.role(engine)["role"] == "active"
        except (OSError, http.client.HTTPException):
            return False
    wait_for(active, timeout, f"{engine.url} to become active", interval=0.1)
    fc.cluster.engine = engine
    return time.monotonic() - t0


def moved_intact(fc, disk, digest, job_id, scratch):
    c = fc.cluster
    job = wait_job_end(c, job_id, 120)
    assert job["status"] == "finished", job
    d = c.engine.get(f"/api/disks/{disk['id']}")
    assert d["status"] == "ok" and d["storage_domains"] == [{"id": c.sds[1]["id"]}], d
    assert disk_digest(c, disk["id"], scratch) == digest


def one_active(fc):
    roles = [fc.role(e)["role"] for e in fc.engines]
    assert sorted(roles) == ["active", "standby"], roles


def test_a_standby_reads_and_redirects_writes(fc):
    active = fc.active()
    standby = fc.other(active)
    one_active(fc)
    assert fc.role(standby)["active_url"] == active.url == fc.role(active)["active_url"]
    # Reads: the same inventory from either engine.
    def hosts(engine):
        return sorted((h["id"], h["name"], h["status"]) for h in engine.get("/api/hosts")["hosts"])
    assert hosts(standby) == hosts(active)
    assert raw_request(standby, "GET", "/api/storagedomains")[0] == 200
    # Writes: 307 to the active engine, same path and query, nothing done here.
    status, headers = raw_request(standby, "POST", "/api/storagedomains?x=1", b'{"name": "nope"}')
    assert status == 307 and headers["Location"] == active.url + "/api/storagedomains?x=1", (status, headers)
    assert "nope" not in [s["name"] for s in active.get("/api/storagedomains")["storagedomains"]]


def test_a_cli_follows_307_to_a_known_engine_and_skips_a_dead_one(fc):
    active = fc.active()
    standby = fc.other(active)
    env = standby.cli_env()     # logged in on the standby (a login is served there)

    def ferry(engines, *args):
        return subprocess.run([FERRY, *args], env=dict(env, FERRY_ENGINE_URL=",".join(engines)), capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
    sd = fc.cluster.sds[0]["name"]
    # A write sent to the standby: followed to the active engine, which is in the list.
    r = ferry([standby.url, active.url], "disk", "create", "--name", "via-standby", "--size", "1M", "--sd", sd, "--wait")
    assert r.returncode == 0 and "is ok" in r.stdout, r.stdout + r.stderr
    # Not in the list: refused, nothing sent there.
    r = ferry([standby.url], "disk", "create", "--name", "not-sent", "--size", "1M", "--sd", sd)
    assert r.returncode != 0 and "redirect (307)" in r.stderr, r.stderr
    assert "not-sent" not in [d["name"] for d in active.get("/api/disks")["disks"]]
    # The first engine listed cannot be reached: the next one takes the request (and the login).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"https://127.0.0.1:{s.getsockname()[1]}"        # bound, not listening: refused
        engines = [dead, standby.url, active.url]
        r = ferry(engines, "login", "--user", standby.ADMIN, "--password-file", standby.admin_password_file)
        assert r.returncode == 0, r.stderr
        r = ferry(engines, "disk", "list")
    assert r.returncode == 0 and "via-standby" in r.stdout, r.stdout + r.stderr


def set_leader_url(engine, url):
    """The active engine's URL as the standbys read it from the leader row (NULL: no engine leads)."""
    r = subprocess.run([PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", engine.db, "-c",
                        "UPDATE engine_leader SET url = %s WHERE id = 1" % ("NULL" if url is None else f"'{url}'")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_a_cli_waits_while_no_engine_is_active(fc):
    """What a standby says during a takeover, made to last by the leader row (the standby reads the
    active engine's URL there every second): no URL, a 503; a URL nobody listens at, a 307 that cannot
    be followed. Nobody takes over here: the CLI waits (saying so on stderr) for FERRY_ENGINE_WAIT
    seconds (0: fails at once), then fails with the standby's answer. A wait that ends in a real
    takeover: test_b_cli_waits_out_a_takeover."""
    active = fc.active()
    standby = fc.other(active)
    env = standby.cli_env()
    sd = fc.cluster.sds[0]["name"]

    def standby_sees(url):
        wait_for(lambda: fc.role(standby)["active_url"] == url, 10, f"the standby to read {url}", interval=0.1)

    def ferry(engines, *args, wait=None):
        e = dict(env, FERRY_ENGINE_URL=",".join(engines))
        if wait is not None:
            e["FERRY_ENGINE_WAIT"] = str(wait)
        t0 = time.monotonic()
        r = subprocess.run([FERRY, *args], env=e, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        return r, time.monotonic() - t0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"https://127.0.0.1:{s.getsockname()[1]}"        # bound, not listening: refused
        try:
            set_leader_url(active, None)
            standby_sees(None)
            # Nobody takes over: the standby's own answer once the wait is over; a read never waits.
            r, took = ferry([standby.url], "disk", "create", "--name", "never", "--size", "1M", "--sd", sd, wait=1)
            assert r.returncode == 1 and "trying again for up to 1 s" in r.stderr and "no engine is active yet" in \
                r.stderr.splitlines()[-1] and 1 <= took < 10, (took, r.stderr)
            r, took = ferry([standby.url], "disk", "create", "--name", "never", "--size", "1M", "--sd", sd, wait=0)
            assert r.returncode == 1 and "trying again" not in r.stderr and took < 5, (took, r.stderr)
            r, _ = ferry([standby.url], "disk", "list")
            assert r.returncode == 0 and "trying again" not in r.stderr, r.stderr
            # A standby names an engine that cannot be reached (the dead leader): waited for the same way.
            set_leader_url(active, dead)
            standby_sees(dead)
            r, took = ferry([standby.url, dead], "disk", "create", "--name", "never", "--size", "1M", "--sd", sd,
                            wait=1)
            assert r.returncode == 2 and 1 <= took < 10, (took, r.stderr)
            assert f"a standby names {dead} as the active engine, which cannot be reached" in r.stderr, r.stderr
            assert f"cannot reach the engine at {dead}" in r.stderr, r.stderr
            r, _ = ferry([standby.url], "disk", "list", wait="x")
            assert r.returncode == 2 and "FERRY_ENGINE_WAIT=x" in r.stderr, r.stderr
        finally:
            set_leader_url(active, active.url)
    standby_sees(active.url)
    assert "never" not in [d["name"] for d in active.get("/api/disks")["disks"]]


def test_a_slow_leader_keeps_leading(fc):
    """The leader's main loop blocked for longer than the 5 s lease by a real request (a list whose
    statement waits on a table lock another session holds): the lease is renewed off the main loop, so
    the standby does not end the leader's sessions, and the leader stays active in the same epoch."""
    leader = fc.active()
    standby = fc.other(leader)
    epoch = fc.role(leader)["epoch"]
    with open(leader.log_path, "rb") as f:
        mark = len(f.read())
    hold_s = 7                  # longer than the 5 s lease; below STALL_S by the 2 s of the heartbeat and 3 s more
    locker = subprocess.Popen([PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", leader.db, "-c",
                               f"BEGIN; LOCK TABLE disks IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep({hold_s}); COMMIT;"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def locked():
            r = subprocess.run([PSQL, "-X", "-A", "-t", "-d", leader.db, "-c",
                                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                                " WHERE c.relname = 'disks' AND l.mode = 'AccessExclusiveLock' AND l.granted"],
                               capture_output=True, text=True, timeout=30)
            return r.stdout.strip() == "1"
        wait_for(locked, 10, "the table lock", interval=0.05)
        t0 = time.monotonic()
        listed = {}
        t = threading.Thread(target=lambda: listed.update(r=raw_request(leader, "GET", "/api/disks")))
        t.start()
        t.join(hold_s + 30)
        stalled = time.monotonic() - t0
    finally:
        assert locker.wait(30) == 0, locker.stderr.read()
    assert listed["r"][0] == 200, listed
    assert stalled > 5, f"the main loop was blocked only {stalled:.1f} s: the test proves nothing"
    assert fc.role(leader) == {**fc.role(leader), "role": "active", "epoch": epoch}
    assert fc.role(standby)["role"] == "standby"
    with open(leader.log_path, "rb") as f:
        f.seek(mark)
        text = f.read().decode(errors="replace")
    assert "not renewed" not in text and "lost" not in text, text


def test_a_stuck_leader_loses_the_lead(fc):
    """The leader's main loop stuck for real: a session of the test holds the hosts table, which the
    leader writes every round (the hosts' stats), so its round's UPDATE waits, holding the leader row FOR
    KEY SHARE. Its renewal thread is well, but past leader_stall_timeout it gives the lead up: it ends
    the engine's other sessions, ends its term in the leader row (epoch + 1, no holder) and releases the
    lock; the standby takes over within a second. A
    write sent to the old leader while it is stuck is turned away once it runs again (503, or the
    connection goes as it executes itself again), and the old leader comes back as a standby."""
    old = fc.active()
    new = fc.other(old)
    epoch = fc.role(old)["epoch"]
    with open(old.log_path, "rb") as f:
        mark = len(f.read())

    def psql(sql):
        r = subprocess.run([PSQL, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", old.db, "-c", sql],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()
    # Its statements from a pipe, the transaction left open: the lock is held until stdin closes.
    holder = subprocess.Popen([PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", old.db], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    holder.stdin.write("BEGIN; LOCK TABLE hosts IN ACCESS EXCLUSIVE MODE;\n")
    holder.stdin.flush()
    late = {}

    def late_write():
        try:
            late["answer"] = old.request("POST", "/api/vms", {"name": "vm-of-a-stuck-leader"}, timeout=STALL_S + 30)
        except HttpError as e:
            late["answer"] = (e.status, e.body)
        except OSError as e:   # it executed itself again: the connection went with it
            late["answer"] = (None, str(e))
    writer = threading.Thread(target=late_write)
    released = False
    try:
        t0 = time.monotonic()
        # The old leader's main loop waits on the table lock (its session is the one waiting).
        wait_for(lambda: psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                              " AND application_name LIKE 'ferry-engine %'") != "0", 10,
                 "the leader's round to wait on the table lock", interval=0.05)
        writer.start()
        # The standby leads (the leader row names it; its own first round then waits on the lock too).
        wait_for(lambda: psql("SELECT url FROM engine_leader WHERE id = 1 AND epoch > %d" % epoch) == new.url,
                 STALL_S + 10, "the standby to take the lead", interval=0.1)
        took = time.monotonic() - t0
    finally:
        holder.stdin.close()
        released = holder.wait(30) == 0
    print(f"\ntakeover from a leader stuck on a lock: {took:.1f} s (leader_stall_timeout {STALL_S} s)")
    assert released, holder.stderr.read()
    assert STALL_S - 1 < took < STALL_S + 5, took
    wait_active(fc, new, 10)
    writer.join(STALL_S + 40)
    assert late["answer"][0] in (503, None), late
    assert "vm-of-a-stuck-leader" not in [v["name"] for v in new.get("/api/vms")["vms"]]

    def stepped_down():
        with open(old.log_path, "rb") as f:
            f.seek(mark)
            text = f.read().decode(errors="replace")
        return "leader_stall_timeout" in text and f"epoch {epoch} lost" in text and text
    wait_for(stepped_down, 15, "the old leader to step down")

    def standby():
        try:
            return fc.role(old)["role"] == "standby"
        except OSError:         # between its exec and its listening again
            return False
    wait_for(standby, 15, "the old leader to serve as a standby", interval=0.1)
    one_active(fc)
    assert fc.role(new)["epoch"] > epoch


def test_b_active_killed_mid_move(fc, scratch):
    """SIGKILL of the active engine while a move copies: the standby takes over within 10 s and finishes it."""
    victim = fc.active()
    standby = fc.other(victim)
    disk, digest, job_id = start_move(fc, "ha-kill", 21)
    victim.stop(signal.SIGKILL)
    took = wait_active(fc, standby, TAKEOVER_S + 5)
    print(f"\ntakeover after SIGKILL of the active engine: {took:.1f} s")
    assert took < TAKEOVER_S
    moved_intact(fc, disk, digest, job_id, scratch)
    # The killed one comes back as a standby.
    victim.start()
    one_active(fc)
    assert fc.role(victim)["role"] == "standby"


def test_b_cli_waits_out_a_takeover(fc):
    """A write sent while the active engine is dead and no standby leads yet (the leader lock held by a
    session of the test's meanwhile, so the window lasts): the CLI waits, and the standby that then
    takes over does the write."""
    victim = fc.active()
    standby = fc.other(victim)
    env = dict(standby.cli_env(), FERRY_ENGINE_URL=f"{victim.url},{standby.url}")
    # The CLI keeps its token for the first engine listed.
    r = subprocess.run([FERRY, "login", "--user", standby.ADMIN, "--password-file", standby.admin_password_file],
                       env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr

    def psql(sql):
        r = subprocess.run([PSQL, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", victim.db, "-c", sql],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()
    waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %d AND NOT granted" % LEADER_LOCK
    set_leader_url(victim, None)        # what a standby reads once the leader is gone: 503, not a 307
    wait_for(lambda: fc.role(standby)["active_url"] is None, 10, "the standby to read no leader", interval=0.1)
    # Its statements from a pipe: closed, psql ends the session at once (a pg_sleep would hold the lock on).
    holder = subprocess.Popen([PSQL, "-X", "-q", "-d", victim.db], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    holder.stdin.write(f"SELECT pg_advisory_lock({LEADER_LOCK});\n")
    holder.stdin.flush()
    cli = None
    try:
        wait_for(lambda: psql(waiting) == "1", 10, "the test's session to queue for the leader lock", interval=0.1)
        victim.stop(signal.SIGKILL)     # its lock goes to the queued session, not to the standby's next try
        wait_for(lambda: psql(waiting) == "0", 10, "the test's session to hold the leader lock", interval=0.1)
        assert fc.role(standby)["role"] == "standby"
        cli = subprocess.Popen([FERRY, "disk", "create", "--name", "in-takeover", "--size", "1M",
                                "--sd", fc.cluster.sds[0]["name"]], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        told = cli.stderr.readline()
        assert "no engine is active yet" in told and "trying again for up to 15 s" in told, told
    finally:
        holder.stdin.close()            # its session ends: the lock is free, the standby takes it
        assert holder.wait(30) == 0
    try:
        out, err = cli.communicate(timeout=30)
    finally:
        cli.kill()
    assert cli.returncode == 0 and "in-takeover" in out, told + out + err
    wait_active(fc, standby, TAKEOVER_S)
    assert "in-takeover" in [d["name"] for d in standby.get("/api/disks")["disks"]]
    victim.start()
    one_active(fc)


def test_c_stopped_leader_cannot_write(fc, scratch):
    """SIGSTOP of the active engine mid-move: the standby takes over (the stopped one's lease expires);
    SIGCONT: the old leader's writes are refused and it steps down to a standby; the move finishes."""
    old = fc.active()
    new = fc.other(old)
    epoch = fc.role(old)["epoch"]
    disk, digest, job_id = start_move(fc, "ha-stop", 22)
    with open(old.log_path, "rb") as f:
        mark = len(f.read())
    os.kill(old.proc.pid, signal.SIGSTOP)
    late = {}

    def late_write():
        # Sent while the old leader is stopped, read by it after SIGCONT: possibly before its leader round
        # learns of the takeover. It must be turned away (503, or 307 once a standby), never executed.
        try:
            late["answer"] = old.request("POST", "/api/vms", {"name": "vm-of-a-stopped-leader"})
        except HttpError as e:
            late["answer"] = (e.status, e.body)
        except OSError as e:   # it executed itself again meanwhile: the connection went with it
            late["answer"] = (None, str(e))
    # Started now: it connects while the old leader is stopped (the kernel queues it) and waits for SIGCONT.
    writer = threading.Thread(target=late_write)
    writer.start()
    try:
        took = wait_active(fc, new, 30)
    finally:
        os.kill(old.proc.pid, signal.SIGCONT)
    writer.join(60)
    print(f"\ntakeover from a stopped engine: {took:.1f} s; late write answered {late.get('answer')}")
    assert late["answer"][0] in (503, 307, None), late
    assert not [v for v in new.get("/api/vms")["vms"] if v["name"] == "vm-of-a-stopped-leader"]
    assert fc.role(new)["epoch"] > epoch

    def stepped_down():
        with open(old.log_path, "rb") as f:
            f.seek(mark)
            text = f.read().decode(errors="replace")
        return "lost" in text and "standby" in text and text
    text = wait_for(stepped_down, 15, "the old leader to step down")
    assert f"epoch {epoch} lost" in text, text
    # Back as a standby on the same URL (it executed itself again).
    def standby():
        try:
            return fc.role(old)["role"] == "standby"
        except OSError:         # between its exec and its listening again
            return False
    wait_for(standby, 15, "the old leader to serve as a standby", interval=0.1)
    moved_intact(fc, disk, digest, job_id, scratch)
    one_active(fc)


def test_d_postgresql_restart_mid_move(fc, scratch):
    """PostgreSQL restarts while a move copies: both engines reconnect, one leads, the move finishes."""
    disk, digest, job_id = start_move(fc, "ha-pgrestart", 23)
    fc.cluster.pg.restart()

    def leader():
        try:
            return fc.active()
        except Exception:       # noqa: BLE001 - while they reconnect: no answer, a 500 naming the database, or no leader
            return None
    fc.cluster.engine = wait_for(leader, 30, "an engine to lead again", interval=0.2)

    # Both engines lost their lock session with the restart; the first to
    # answer "active" may still be deposed by the other's take-over and
    # re-execute itself (a refused connection for a moment). A client then
    # asks the next engine, as the CLI does: so does this wait.
    def ended():
        e = leader()
        if e is None:
            return None
        try:
            job = e.get(f"/api/jobs/{job_id}")
        except Exception:       # noqa: BLE001 - as in leader(): refused, reset, or a 500 while it reconnects
            return None
        fc.cluster.engine = e
        return job if job["status"] in TERMINAL else None
    wait_for(ended, 120, f"job {job_id} to end", interval=0.2)
    moved_intact(fc, disk, digest, job_id, scratch)
    one_active(fc)


def events_since(engine, mark):
    """Messages of the events after id `mark`, oldest first."""
    return [e["message"] for e in reversed(engine.get("/api/events")["events"]) if e["id"] > mark]


def last_event_id(engine):
    events = engine.get("/api/events")["events"]
    return events[0]["id"] if events else 0


def test_e_active_killed_during_a_fence(fc, scratch):
    """Runs last: a host dies for good. The copying host of a move dies (agent and sanlock daemon, so its
    volume lease stays held on storage until sanlock's expiry); the active engine starts fencing the lost
    copy (its fence job on the live host waits for that lease) and is SIGKILLed then. The standby takes
    over, follows the fence to its end, copies again on the live host and finishes the move: the data intact,
    the destination LEGAL at its recorded generation + 4 (fenced +3, the retry's copy +1)."""
    c = fc.cluster
    victim = fc.active()
    standby = fc.other(victim)
    c.engine = victim
    mark = last_event_id(victim)
    # 8 s of copy: still running when the host is killed, even on a loaded machine.
    disk, digest, job_id = start_move(fc, "ha-fence", 24, data=256 * MiB)
    host = next(s["execution_host"]["name"] for s in victim.get(f"/api/jobs/{job_id}/steps")["steps"]
                if s["type"] == "copy_data" and s["status"] == "started")
    dest_meta = vol_path(c, c.sds[1]["id"], disk["id"], disk["volumes"][0]["id"]) + ".meta"
    recorded = read_meta(dest_meta)
    assert recorded["LEGALITY"] == "ILLEGAL", recorded
    agent = c.agent(host)
    # The lease manager first, so the agent's leases are not released on its death.
    os.killpg(agent.sanlock.proc.pid, signal.SIGKILL)
    agent.sanlock.proc.wait()
    agent.kill()
    fc.dead.add(host)
    t0 = time.monotonic()

    # In the fence: its event recorded and its job sent to the live host, where it waits for the dead
    # host's lease (sanlock's acquire blocks until that host's lease expires).
    def fencing():
        r = subprocess.run([PSQL, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", victim.db, "-c",
                            "SELECT data FROM commands WHERE type = 'copy_data' AND job_id = '%s'" % job_id],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return any(json.loads(row).get("fence_job") for row in r.stdout.splitlines() if row)
    wait_for(fencing, 60, "the active engine to send the fence", interval=0.2)
    text = "\n".join(events_since(victim, mark))
    host_id = c.hosts[host]["id"]
    assert "fencing copy_data job" in text and f"of host {host_id}" in text, text
    assert victim.get(f"/api/jobs/{job_id}")["status"] == "started"
    in_fence = time.monotonic() - t0
    assert in_fence < SANLOCK_EXPIRY - TAKEOVER_S, f"the fence began {in_fence:.0f} s after the host died"
    mark = last_event_id(victim)
    victim.stop(signal.SIGKILL)
    took = wait_active(fc, standby, TAKEOVER_S + 5)
    assert took < TAKEOVER_S, took
    moved_intact(fc, disk, digest, job_id, scratch)
    done = time.monotonic() - t0
    print(f"\nSIGKILL of the active engine while fencing ({in_fence:.0f} s after the host died): taken over in "
          f"{took:.1f} s, the move finished {done:.0f} s after the host died")
    # Fenced and retried by the new active engine (only it runs since `mark`).
    text = "\n".join(events_since(standby, mark))
    assert "fenced copy_data job" in text and f"of host {host_id}" in text, text
    steps = standby.get(f"/api/jobs/{job_id}/steps")["steps"]
    copies = [s for s in steps if s["type"] == "copy_data"]
    assert copies[-1]["status"] == "finished" and copies[-1]["execution_host"]["name"] != host, copies
    meta = read_meta(dest_meta)
    assert meta["LEGALITY"] == "LEGAL" and int(meta["GEN"]) == (int(recorded["GEN"]) + 4) % 1000, (recorded, meta)
    assert_invariant(c, scratch, {disk["id"]: digest}, settle=30)
    # The killed engine comes back as a standby.
    victim.start()
    one_active(fc)
