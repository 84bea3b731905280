# SPDX-License-Identifier: GPL-2.0-or-later
"""Recovery from faults during data operations, on real processes: three
hosts, each in its own network namespace (netns.py), with copies capped at
32 MiB/s so a copy lasts seconds; an engine in the root namespace. Faults:
network cuts, killed agents, a killed engine, a dead host (agent and sanlock
daemon), a killed SPM, a full destination domain, a cancel. After each one
assert_invariant() checks inventory and storage (invariant.py).

The dead-host scenario runs last: that host does not come back."""

import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import make_workdir
from enginetest import EngineCluster, HttpError
from ferrytest import BUILD, MiB, wait_for
from invariant import (assert_invariant, create_disk, disk_digest, fill_disk, read_meta, vol_path,
                       wait_job_end)
from netns import Network

RATE = 32 * MiB                 # --copy-rate-limit of every host
HOST_LOST_TIMEOUT = 60          # the engine's default, which the spec's bounds are stated for
SANLOCK_TAKEOVER = 8 * 2 + 60   # sanlock: a host is dead 8 * io_timeout + 60 s after its last renewal
# A host stops answering: non_responsive after 2 failed polls of 1.5 s.
ENGINE_ARGS = ("--host-timeout=1500", "--host-failures=2", "--sweep-interval=15")


@pytest.fixture(scope="module")
def rc():
    d = make_workdir()
    net = Network(3)
    try:
        c = EngineCluster(d, net=net, engine_args=ENGINE_ARGS, agent_options={"copy_rate_limit": f"{RATE // MiB}M"})
        c.dead = set()
        try:
            # Ready means every host in every lockspace, as the engine reported.
            c.wait_lockspaces(10)
        except BaseException:
            c.stop()
            raise
        try:
            yield c
        finally:
            codes = c.stop()
        bad = {k: v for k, v in codes.items() if v != 0 and k not in c.dead}
        assert not bad, codes
    finally:
        net.close()
        if not os.environ.get("FERRY_KEEP_TMP"):
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def scratch(rc):
    return tempfile.mkdtemp(prefix="scratch-", dir=rc.workdir)


def start(ec, disk, action="move", sd=1, **body):
    r = ec.engine.post(f"/api/disks/{disk['id']}/{action}", dict(body, storage_domain={"id": ec.sds[sd]["id"]}))
    return r["job"]["id"], r.get("disk", {}).get("id")


def copying_step(ec, job_id, timeout=60):
    """The copy_data step once bytes flow, with its host."""
    def running():
        for s in ec.engine.get(f"/api/jobs/{job_id}/steps")["steps"]:
            if s["type"] == "copy_data" and s["status"] == "started" and s["execution_host"] and s["progress"] > 0:
                return s
        job = ec.engine.get(f"/api/jobs/{job_id}")
        assert job["status"] == "started", f"job ended before its copy was seen running: {job}"
        return None
    return wait_for(running, timeout, "the copy to run", interval=0.1)


def ferry_cli(ec, *args):
    return subprocess.run([os.path.join(BUILD, "src", "cli", "ferry"), *args], capture_output=True, text=True,
                          env=ec.engine.cli_env(), timeout=60)


def host_status(ec, name):
    return next(h for h in ec.engine.get("/api/hosts")["hosts"] if h["name"] == name)["status"]


def big_disk(ec, name, data=384 * MiB, seed=1, size=512 * MiB):
    """A raw disk whose copy takes data / RATE seconds (12 s by default)."""
    disk = create_disk(ec, name, size)
    fill_disk(ec, disk, data, seed)
    return disk


def dest_meta(ec, disk, sd=1):
    return read_meta(vol_path(ec, ec.sds[sd]["id"], disk["id"], disk["volumes"][0]["id"]) + ".meta")


def events_of(ec, since_id=0):
    return [e for e in ec.engine.get("/api/events")["events"] if e["id"] > since_id]


def last_event_id(ec):
    events = ec.engine.get("/api/events")["events"]
    return events[0]["id"] if events else 0


def moved_ok(ec, disk, job):
    assert job["status"] == "finished", job
    d = ec.engine.get(f"/api/disks/{disk['id']}")
    assert d["status"] == "ok" and d["storage_domains"] == [{"id": ec.sds[1]["id"]}], d


def test_invariant_sees_violations(rc, scratch):
    """The check itself: an orphan image, an ILLEGAL volume, a stray file and
    changed content are each reported; removed again, it holds."""
    from invariant import structure_problems
    disk = create_disk(rc, "probe", 4 * MiB)
    before = disk_digest(rc, disk["id"], scratch)
    sd1, sd2 = rc.sds[0]["id"], rc.sds[1]["id"]
    vol = disk["volumes"][0]["id"]
    src = vol_path(rc, sd1, disk["id"], vol)
    orphan = os.path.join(rc.storage, sd2, "images", disk["id"])
    os.makedirs(orphan)
    shutil.copy(src + ".meta", os.path.join(orphan, vol + ".meta"))
    with open(src + ".meta") as f:
        meta = f.read()
    stray = os.path.join(os.path.dirname(src), "leftover.tmp")
    try:
        open(stray, "w").close()
        with open(src + ".meta", "w") as f:
            f.write(meta.replace("LEGALITY=LEGAL", "LEGALITY=ILLEGAL"))
        problems = "\n".join(structure_problems(rc))
        assert f"orphan image {disk['id']} on storage domain {sd2}" in problems, problems
        assert "LEGALITY=ILLEGAL" in problems and "stray file leftover.tmp" in problems, problems
        with pytest.raises(AssertionError):
            assert_invariant(rc, scratch, settle=0)
    finally:
        shutil.rmtree(orphan)
        os.unlink(stray)
        with open(src + ".meta", "w") as f:
            f.write(meta)
    assert_invariant(rc, scratch, {disk["id"]: before}, settle=0)
    with open(src, "r+b") as f:
        f.write(b"x")
    with pytest.raises(AssertionError, match="content changed"):
        assert_invariant(rc, scratch, {disk["id"]: before}, settle=0)
    rc.engine.request("DELETE", f"/api/disks/{disk['id']}")
    wait_for(lambda: disk["id"] not in {d["id"] for d in rc.engine.get("/api/disks")["disks"]}, 30,
             "the probe disk removed")


def test_a_network_cut_restored_before_copy_ends(rc, scratch):
    disk = big_disk(rc, "cut-a", seed=11)
    before = disk_digest(rc, disk["id"], scratch)
    job_id, _ = start(rc, disk)
    host = copying_step(rc, job_id)["execution_host"]["name"]
    gen = dest_meta(rc, disk)["GEN"]
    hn = rc.agent(host).netns
    hn.cut()
    try:
        # Long enough for the engine to see the host gone, short of the copy's end.
        wait_for(lambda: host_status(rc, host) == "non_responsive", 20, f"{host} non_responsive")
        time.sleep(1)
        meta = dest_meta(rc, disk)
        assert meta["LEGALITY"] == "ILLEGAL" and meta["GEN"] == gen, \
            f"the copy ended while cut ({meta}): this scenario needs a longer copy"
    finally:
        hn.restore()
    moved_ok(rc, disk, wait_job_end(rc, job_id, 120))
    wait_for(lambda: host_status(rc, host) == "up", 30, f"{host} up again")
    assert_invariant(rc, scratch, {disk["id"]: before})


def test_b_network_cut_restored_after_copy_ended(rc, scratch):
    # 8 s at RATE: under ASan with parallel workers a 5 s copy ended before
    # the test had seen it running.
    disk = big_disk(rc, "cut-b", data=256 * MiB, seed=12)
    before = disk_digest(rc, disk["id"], scratch)
    job_id, _ = start(rc, disk)
    host = copying_step(rc, job_id)["execution_host"]["name"]
    gen = int(dest_meta(rc, disk)["GEN"])
    hn = rc.agent(host).netns
    hn.cut()
    try:
        # The host finishes the copy on storage while the engine cannot ask it.
        wait_for(lambda: dest_meta(rc, disk)["LEGALITY"] == "LEGAL", 60, "the cut host to finish the copy")
        assert int(dest_meta(rc, disk)["GEN"]) == (gen + 1) % 1000
        wait_for(lambda: host_status(rc, host) == "non_responsive", 20, f"{host} non_responsive")
        time.sleep(3)
    finally:
        hn.restore()
    moved_ok(rc, disk, wait_job_end(rc, job_id, 120))
    wait_for(lambda: host_status(rc, host) == "up", 30, f"{host} up again")
    assert_invariant(rc, scratch, {disk["id"]: before})


def test_d_engine_killed_mid_move(rc, scratch):
    disk = big_disk(rc, "engine-kill", data=256 * MiB, seed=14)
    before = disk_digest(rc, disk["id"], scratch)
    job_id, _ = start(rc, disk)
    copying_step(rc, job_id)
    rc.engine.stop(signal.SIGKILL)
    time.sleep(1)
    rc.engine.start()
    moved_ok(rc, disk, wait_job_end(rc, job_id, 120))
    assert_invariant(rc, scratch, {disk["id"]: before})


def test_e_copying_agent_killed_and_restarted(rc, scratch):
    disk = big_disk(rc, "agent-kill", data=256 * MiB, seed=15)
    before = disk_digest(rc, disk["id"], scratch)
    job_id, _ = start(rc, disk)
    host = copying_step(rc, job_id)["execution_host"]["name"]
    agent = rc.agent(host)
    agent.kill()
    time.sleep(1)
    agent.start_same_port()
    job = wait_job_end(rc, job_id, 180)
    print(f"\nagent killed mid-copy: the move {job['status']}")
    d = rc.engine.get(f"/api/disks/{disk['id']}")
    # Retried (on any host) and done, or failed cleanly with the source where it was.
    expected_sd = rc.sds[1]["id"] if job["status"] == "finished" else rc.sds[0]["id"]
    assert job["status"] in ("finished", "failed"), job
    assert d["storage_domains"] == [{"id": expected_sd}], (job, d)
    wait_for(lambda: host_status(rc, host) == "up", 30, f"{host} up again")
    assert_invariant(rc, scratch, {disk["id"]: before})


def test_f_spm_killed_during_structure_creation(rc, scratch):
    disk = create_disk(rc, "spm-kill", 64 * MiB, fmt="cow", volumes=16)
    fill_disk(rc, disk, 32 * MiB, seed=16)
    before = disk_digest(rc, disk["id"], scratch)
    old = rc.spm_name()
    agent = rc.agent(old)
    job_id, _ = start(rc, disk)
    wait_for(lambda: any(s["type"] == "create_volume" and s["status"] == "started"
                         for s in rc.engine.get(f"/api/jobs/{job_id}/steps")["steps"]), 30,
             "structure creation to start")
    agent.kill()
    try:
        wait_for(lambda: (rc.engine.get("/api/datacenters")["datacenters"][0]["spm"] or {}).get("name")
                 not in (None, old), 60, "a new SPM")
        job = wait_job_end(rc, job_id, 180)
        print(f"\nSPM killed during structure creation: the move {job['status']}")
        assert job["status"] in ("finished", "failed"), job
        d = rc.engine.get(f"/api/disks/{disk['id']}")
        expected_sd = rc.sds[1]["id"] if job["status"] == "finished" else rc.sds[0]["id"]
        assert d["storage_domains"] == [{"id": expected_sd}], (job, d)
    finally:
        agent.start_same_port()
    wait_for(lambda: next(h for h in rc.engine.get("/api/hosts")["hosts"] if h["name"] == old)["pool_connected"]
             and host_status(rc, old) == "up", 60, "the old SPM back up")
    assert_invariant(rc, scratch, {disk["id"]: before})


def test_h_cancel_mid_copy(rc, scratch):
    disk = big_disk(rc, "cancel", data=256 * MiB, seed=18)
    before = disk_digest(rc, disk["id"], scratch)
    job_id, _ = start(rc, disk)
    copying_step(rc, job_id)
    # As an operator would: the CLI, which posts /api/jobs/{id}/cancel.
    r = ferry_cli(rc, "job", "cancel", job_id)
    assert r.returncode == 0 and "cancel requested" in r.stdout, r.stdout + r.stderr
    t0 = time.monotonic()
    job = wait_job_end(rc, job_id, 60)
    took = time.monotonic() - t0
    assert job["status"] in ("failed", "aborted", "cancelled"), job
    d = rc.engine.get(f"/api/disks/{disk['id']}")
    assert d["status"] == "ok" and d["storage_domains"] == [{"id": rc.sds[0]["id"]}], d
    assert not os.path.exists(os.path.join(rc.storage, rc.sds[1]["id"], "images", disk["id"])), \
        "destination left behind after cancel"
    # The copy was aborted, not waited for: it had ~8 s to go at RATE.
    assert took < 6, f"cancel took {took:.1f} s"
    with pytest.raises(HttpError) as e:
        rc.engine.request("POST", f"/api/jobs/{job_id}/cancel", {})
    assert e.value.status == 409 and e.value.body["fault"]["detail"], e.value.body
    r = ferry_cli(rc, "job", "cancel", job_id)
    assert r.returncode != 0 and r.stderr.strip(), r.stdout + r.stderr
    with pytest.raises(HttpError) as e:
        rc.engine.request("POST", "/api/jobs/00000000-0000-0000-0000-000000000001/cancel", {})
    assert e.value.status == 404, e.value.body
    assert_invariant(rc, scratch, {disk["id"]: before})


# ---- g: the destination domain fills up during the copy -------------------

class LoopFs:
    """A small ext4 filesystem on a loop device, mounted at `mountpoint`."""

    def __init__(self, workdir, size="600M"):
        self.image = os.path.join(workdir, "loopfs.img")
        self.mountpoint = os.path.join(workdir, "storage")
        self.dev = None
        self.mounted = False
        os.makedirs(self.mountpoint)
        subprocess.run(["truncate", "-s", size, self.image], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", self.image], check=True)
        try:
            self.dev = subprocess.run(["losetup", "-f", "--show", self.image], check=True, capture_output=True,
                                      text=True).stdout.strip()
            subprocess.run(["mount", self.dev, self.mountpoint], check=True, capture_output=True, text=True)
            self.mounted = True
        except BaseException:
            self.close()
            raise

    def free_bytes(self):
        st = os.statvfs(self.mountpoint)
        return st.f_bfree * st.f_frsize           # root may use the reserved blocks too

    def close(self):
        if self.mounted:
            subprocess.run(["umount", self.mountpoint], check=True)
            self.mounted = False
        if self.dev:
            subprocess.run(["losetup", "-d", self.dev], check=True)
            self.dev = None
        if os.path.exists(self.image):
            os.unlink(self.image)


@pytest.fixture
def small():
    """Two hosts whose shared storage is a 600 MiB filesystem."""
    d = make_workdir()
    fs = LoopFs(d)
    try:
        c = EngineCluster(d, hosts=2, storage=fs.mountpoint, engine_args=ENGINE_ARGS,
                          agent_options={"copy_rate_limit": f"{RATE // MiB}M"})
        c.fs = fs
        try:
            c.wait_lockspaces(10)
        except BaseException:
            c.stop()
            raise
        try:
            yield c
        finally:
            codes = c.stop()
        assert all(v == 0 for v in codes.values()), codes
    finally:
        fs.close()
        if not os.environ.get("FERRY_KEEP_TMP"):
            shutil.rmtree(d, ignore_errors=True)


def test_g_destination_fills_up(small):
    ec = small
    scratch = tempfile.mkdtemp(prefix="scratch-", dir=ec.workdir)
    disk = create_disk(ec, "fills", 256 * MiB)
    fill_disk(ec, disk, 200 * MiB, seed=17)
    before = disk_digest(ec, disk["id"], scratch)
    mark = last_event_id(ec)
    job_id, _ = start(ec, disk)
    copying_step(ec, job_id)
    # Leave the copy 8 MiB: it runs into ENOSPC long before its 200 MiB.
    filler = os.path.join(ec.storage, "filler")
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        size = ec.fs.free_bytes() - 8 * MiB
        while True:
            try:
                os.posix_fallocate(fd, 0, size)
                break
            except OSError:
                size -= 4 * MiB          # the copy took some meanwhile
        os.close(fd)
        fd = -1
        job = wait_job_end(ec, job_id, 120)
        assert job["status"] == "failed", job
        d = ec.engine.get(f"/api/disks/{disk['id']}")
        assert d["status"] == "ok" and d["storage_domains"] == [{"id": ec.sds[0]["id"]}], d
        messages = [e["message"] for e in events_of(ec, mark)]
        assert any("No space left" in m for m in messages), messages
        # The domain is still full: the failed destination must go anyway.
        assert_invariant(ec, scratch, {disk["id"]: before})
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(filler)


def test_c_dead_host_is_fenced(rc, scratch):
    """Runs last in this module: the copying host dies for good (network,
    agent and sanlock daemon); its volume lease stays held on storage until
    sanlock declares it dead. With one copy attempt the move must fail
    cleanly: fenced, destination removed, source intact."""
    rc.engine.stop()
    rc.engine.extra = (*ENGINE_ARGS, "--copy-attempts=1", f"--host-lost-timeout={HOST_LOST_TIMEOUT}")
    rc.engine.start()
    rc.wait_ready()
    disk = big_disk(rc, "dead-host", data=384 * MiB, seed=13)
    before = disk_digest(rc, disk["id"], scratch)
    mark = last_event_id(rc)
    job_id, _ = start(rc, disk)
    host = copying_step(rc, job_id)["execution_host"]["name"]
    agent = rc.agent(host)
    sanlock = next(s for s in rc.sanlocks if s.name == agent.sanlock.name)
    agent.netns.cut()
    # The lease manager first, so the agent's leases are not released on its death.
    os.killpg(sanlock.proc.pid, signal.SIGKILL)
    sanlock.proc.wait()
    agent.kill()
    t0 = time.monotonic()
    rc.dead.add(host)
    job = wait_job_end(rc, job_id, SANLOCK_TAKEOVER + 60)
    took = time.monotonic() - t0
    print(f"\ndead host: the move ended {job['status']} {took:.0f} s after the host died")
    assert job["status"] == "failed", job
    d = rc.engine.get(f"/api/disks/{disk['id']}")
    assert d["status"] == "ok" and d["storage_domains"] == [{"id": rc.sds[0]["id"]}], d
    messages = [e["message"] for e in events_of(rc, mark)]
    assert any("fenc" in m for m in messages), messages
    assert_invariant(rc, scratch, {disk["id"]: before})
