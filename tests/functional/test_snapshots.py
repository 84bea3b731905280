# SPDX-License-Identifier: GPL-2.0-or-later
"""Removing snapshots (cold merge on any host), restoring them, sparsifying disks: the engine's
flows on a real 4-host cluster (one SPM, three hosts the scheduler gives merges to)."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import uuid

import pytest

from conftest import make_workdir
from enginetest import EngineCluster, HttpError
from ferrytest import BUILD, MiB, new_uuid, qemu_io_write, wait_for, wait_job, write_random_extents

FERRY = os.path.join(BUILD, "src", "cli", "ferry")
RATE = "32M"     # every host's copy_rate_limit, which merges share: a merge of 64 MiB takes ~2 s


@pytest.fixture(scope="module")
def ec():
    d = make_workdir()
    c = EngineCluster(d, hosts=4, domains=1, agent_options={"copy_rate_limit": RATE},
                      engine_args=("--host-timeout=1500", "--host-failures=2"))
    yield c
    codes = c.stop()
    if not os.environ.get("FERRY_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)
    assert all(code == 0 for code in codes.values()), codes


def create_disk(ec, name, size, fmt="raw"):
    r = ec.engine.post("/api/disks", {"name": name, "provisioned_size": size, "format": fmt,
                                      "storage_domain": {"id": ec.sds[0]["id"]}})
    assert ec.engine.wait_job(r["job"]["id"], 60)["status"] == "finished"
    return disk(ec, r["disk"]["id"])


def disk(ec, disk_id):
    return ec.engine.get(f"/api/disks/{disk_id}")


def vol_path(ec, d, vol_id=None):
    vol_id = vol_id or d["volumes"][-1]["id"]
    return os.path.join(ec.storage, d["storage_domains"][0]["id"], "images", d["id"], vol_id)


def read_meta(path):
    with open(path + ".meta") as f:
        return dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)


def guest_digest(ec, d, tmp):
    """What the guest sees: the leaf (with its backing chain) converted to raw, hashed."""
    d = disk(ec, d["id"])
    out = os.path.join(tmp, f"{d['id']}.raw")
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", vol_path(ec, d), out], check=True)
    h = hashlib.sha256()
    with open(out, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MiB), b""):
            h.update(chunk)
    os.unlink(out)
    return h.hexdigest()


def steps_of(ec, job_id):
    return ec.engine.get(f"/api/jobs/{job_id}/steps")["steps"]


def wait_ok(ec, job_id, timeout=180):
    job = ec.engine.wait_job(job_id, timeout)
    assert job["status"] == "finished", (job, steps_of(ec, job_id))
    return job


def new_vm(ec, name, disks):
    status, vm = ec.engine.request("POST", "/api/vms", {"name": name})
    assert status == 201
    for d in disks:
        ec.engine.post(f"/api/vms/{vm['id']}/diskattachments", {"disk": {"id": d["id"]}})
    return vm


def snapshot(ec, vm, description):
    r = ec.engine.post(f"/api/vms/{vm['id']}/snapshots", {"description": description})
    wait_ok(ec, r["job"]["id"])
    return r["snapshot"]["id"]


def snapshots(ec, vm):
    return {s["id"]: {x["disk"]["id"]: x["volume"]["id"] for x in s["disks"]}
            for s in ec.engine.get(f"/api/vms/{vm['id']}/snapshots")["snapshots"]}


def remove_snapshot(ec, vm, sid):
    status, r = ec.engine.request("DELETE", f"/api/vms/{vm['id']}/snapshots/{sid}")
    assert status == 202, r
    return r["job"]["id"]


def assert_chain_legal(ec, d):
    """Inventory and storage agree: a linear LEGAL chain, each volume's file present and LEGAL."""
    d = disk(ec, d["id"])
    assert d["status"] == "ok", d
    parent = None
    for i, v in enumerate(d["volumes"]):
        assert v["legality"] == "LEGAL", d
        assert (v["parent"] or None) == parent, d
        meta = read_meta(vol_path(ec, d, v["id"]))
        assert meta["LEGALITY"] == "LEGAL", (v, meta)
        assert meta["VOLTYPE"] == ("LEAF" if i == len(d["volumes"]) - 1 else "INTERNAL"), (v, meta)
        parent = v["id"]
    files = {f for f in os.listdir(os.path.dirname(vol_path(ec, d))) if not f.endswith((".meta", ".lease"))}
    assert files == {v["id"] for v in d["volumes"]}, (files, d["volumes"])
    return d


def assert_merge_steps(ec, job_id, spm):
    steps = steps_of(ec, job_id)
    kinds = {}
    for s in steps:
        assert s["status"] == "finished", steps
        kinds.setdefault(s["type"], []).append(s["execution_host"]["name"])
    assert set(kinds) == {"prepare_merge", "merge", "finalize_merge", "remove_volume"}, steps
    for k in ("prepare_merge", "finalize_merge", "remove_volume"):
        assert set(kinds[k]) == {spm}, steps
    assert spm not in kinds["merge"], steps       # the bytes never go through the SPM while others can
    return kinds["merge"]


def test_remove_base_internal_and_newest_of_four(ec, tmp_path):
    spm = ec.spm_name()
    d = create_disk(ec, "chain", 64 * MiB)
    write_random_extents(vol_path(ec, d), [(0, 6 * MiB), (40 * MiB, 2 * MiB)], seed=1)
    vm = new_vm(ec, "vm-chain", [d])
    sids = []
    for k in range(4):
        sids.append(snapshot(ec, vm, f"s{k + 1}"))
        d = disk(ec, d["id"])
        # Each layer overwrites old data and fills a hole of its own.
        qemu_io_write(vol_path(ec, d), "qcow2", hex(0x41 + k), (k + 1) * 2 * MiB, 4 * MiB)
        qemu_io_write(vol_path(ec, d), "qcow2", hex(0x51 + k), (48 + k) * MiB, MiB)
    d = disk(ec, d["id"])
    vols = [v["id"] for v in d["volumes"]]
    assert len(vols) == 5 and snapshots(ec, vm) == {sids[k]: {d["id"]: vols[k]} for k in range(4)}
    before = guest_digest(ec, d, tmp_path)

    # The base snapshot: volume 1 merged into the raw base, volume 1 gone, s2 now names the base.
    job = remove_snapshot(ec, vm, sids[0])
    assert ec.engine.get(f"/api/vms/{vm['id']}")["status"] == "locked"
    wait_ok(ec, job)
    assert_merge_steps(ec, job, spm)
    d = assert_chain_legal(ec, d)
    assert [v["id"] for v in d["volumes"]] == [vols[0], vols[2], vols[3], vols[4]]
    assert d["volumes"][0]["generation"] == 1 and d["format"] == "cow"
    assert snapshots(ec, vm) == {sids[1]: {d["id"]: vols[0]}, sids[2]: {d["id"]: vols[2]}, sids[3]: {d["id"]: vols[3]}}
    assert guest_digest(ec, d, tmp_path) == before

    # An internal one (s3: volume 3 into volume 2).
    wait_ok(ec, remove_snapshot(ec, vm, sids[2]))
    d = assert_chain_legal(ec, d)
    assert [v["id"] for v in d["volumes"]] == [vols[0], vols[2], vols[4]]
    assert snapshots(ec, vm) == {sids[1]: {d["id"]: vols[0]}, sids[3]: {d["id"]: vols[2]}}
    assert guest_digest(ec, d, tmp_path) == before

    # The newest (s4): the leaf merged into its parent, which is the leaf again.
    wait_ok(ec, remove_snapshot(ec, vm, sids[3]))
    d = assert_chain_legal(ec, d)
    assert [v["id"] for v in d["volumes"]] == [vols[0], vols[2]]
    assert snapshots(ec, vm) == {sids[1]: {d["id"]: vols[0]}}
    assert guest_digest(ec, d, tmp_path) == before

    # The last one: the raw base is the disk's only volume and active layer again.
    wait_ok(ec, remove_snapshot(ec, vm, sids[1]))
    d = assert_chain_legal(ec, d)
    assert [v["id"] for v in d["volumes"]] == [vols[0]] and d["format"] == "raw"
    assert snapshots(ec, vm) == {}
    assert guest_digest(ec, d, tmp_path) == before
    assert ec.engine.get(f"/api/vms/{vm['id']}")["status"] == "ok"


def test_three_disks_merge_on_three_hosts(ec, tmp_path):
    spm = ec.spm_name()
    disks = [create_disk(ec, f"par{i}", 96 * MiB) for i in range(3)]
    for i, d in enumerate(disks):
        write_random_extents(vol_path(ec, d), [(0, 8 * MiB)], seed=20 + i)
    vm = new_vm(ec, "vm-par", disks)
    sid = snapshot(ec, vm, "before")
    disks = [disk(ec, d["id"]) for d in disks]
    for i, d in enumerate(disks):
        qemu_io_write(vol_path(ec, d), "qcow2", hex(0x61 + i), 4 * MiB, 64 * MiB)   # 2 s each at 32 MiB/s
    before = [guest_digest(ec, d, tmp_path) for d in disks]
    job = remove_snapshot(ec, vm, sid)
    # All three merges run at once, each on a host of its own.
    wait_for(lambda: sum(s["type"] == "merge" and s["status"] == "started" for s in steps_of(ec, job)) == 3, 60,
             "three merges running at once", interval=0.1)
    wait_ok(ec, job)
    hosts = assert_merge_steps(ec, job, spm)
    assert len(set(hosts)) == 3, hosts
    for d, want in zip(disks, before):
        d = assert_chain_legal(ec, d)
        assert len(d["volumes"]) == 1 and guest_digest(ec, d, tmp_path) == want


def slow_merge_running(ec, tmp, name, size, seed, pattern, written):
    """A one-snapshot VM whose removal merges `written` bytes (32 MiB/s: written / 32 MiB seconds); returns
    (disk, base, guest digest, job, host) once the merge makes progress on host, which is not the SPM."""
    d = create_disk(ec, name, size)
    write_random_extents(vol_path(ec, d), [(0, 16 * MiB)], seed=seed)
    vm = new_vm(ec, "vm-" + name, [d])
    sid = snapshot(ec, vm, "before")
    d = disk(ec, d["id"])
    qemu_io_write(vol_path(ec, d), "qcow2", pattern, 8 * MiB, written)
    before = guest_digest(ec, d, tmp)
    job = remove_snapshot(ec, vm, sid)

    def merging():
        s = next((s for s in steps_of(ec, job) if s["type"] == "merge"), None)
        return s if s and s["status"] == "started" and s["progress"] > 0 and s["execution_host"] else None
    host = wait_for(merging, 60, "the merge to run", interval=0.1)["execution_host"]["name"]
    assert host != ec.spm_name()
    return d, d["volumes"][0]["id"], before, job, host


def test_merging_host_killed_is_fenced_and_retried_elsewhere(ec, tmp_path):
    spm = ec.spm_name()
    d, base, before, job, host = slow_merge_running(ec, tmp_path, "killed", 256 * MiB, 30, "0x71", 192 * MiB)
    agent = ec.agent(host)
    agent.kill()      # SIGKILL: its sanlock daemon frees the base's lease at once
    assert read_meta(vol_path(ec, d, base))["LEGALITY"] == "ILLEGAL"
    agent.start_same_port()
    try:
        wait_ok(ec, job)
    finally:
        wait_for(lambda: next(h for h in ec.engine.get("/api/hosts")["hosts"] if h["name"] == host)["status"] == "up",
                 60, f"{host} up again")
    merge = next(s for s in steps_of(ec, job) if s["type"] == "merge")
    assert merge["execution_host"]["name"] not in (host, spm), merge
    events = " ".join(e["message"] for e in ec.engine.get("/api/events")["events"])
    assert "fenc" in events, events
    d = assert_chain_legal(ec, d)
    assert [v["id"] for v in d["volumes"]] == [base]
    # Recorded G=0; fenced to 3; the retry left 4.
    assert d["volumes"][0]["generation"] == 4 and read_meta(vol_path(ec, d, base))["GEN"] == "4"
    assert guest_digest(ec, d, tmp_path) == before


def test_failed_top_delete_leaves_snapshot_broken_and_removal_again_completes(ec, tmp_path):
    """Finalize done, Volume.delete of top refused by storage (its file is a mount point: unlink gives EBUSY):
    the inventory already has top out of the chain, the snapshot is broken (no restore, 409 saying to retry the
    removal), and removing it again only deletes top."""
    d = create_disk(ec, "undeletable", 16 * MiB)
    write_random_extents(vol_path(ec, d), [(0, 4 * MiB)], seed=45)
    vm = new_vm(ec, "vm-undeletable", [d])
    s1 = snapshot(ec, vm, "s1")
    d = disk(ec, d["id"])
    base, top = [v["id"] for v in d["volumes"]]
    qemu_io_write(vol_path(ec, d), "qcow2", "0x5a", MiB, 2 * MiB)
    before = guest_digest(ec, d, tmp_path)
    top_path = vol_path(ec, d, top)
    subprocess.run(["mount", "--bind", top_path, top_path], check=True)
    try:
        job = ec.engine.wait_job(remove_snapshot(ec, vm, s1), 120)
        assert job["status"] == "failed", job
        steps = steps_of(ec, job["id"])
        assert [s["status"] for s in steps if s["type"] == "finalize_merge"] == ["finished"], steps
        assert [s["status"] for s in steps if s["type"] == "remove_volume"] == ["failed"] * 3, steps
        # The inventory followed finalize: top is out of the chain; base holds the data, LEGAL.
        d = disk(ec, d["id"])
        assert [v["id"] for v in d["volumes"]] == [base] and d["status"] == "ok", d
        assert read_meta(vol_path(ec, d, base))["LEGALITY"] == "LEGAL"
        assert guest_digest(ec, d, tmp_path) == before
        snap = ec.engine.get(f"/api/vms/{vm['id']}/snapshots/{s1}")
        assert snap["snapshot_status"] == "broken", snap
        with pytest.raises(HttpError) as e:
            ec.engine.request("POST", f"/api/vms/{vm['id']}/snapshots/{s1}/restore", {})
        assert e.value.status == 409 and "retry the removal" in e.value.body["fault"]["detail"], e.value.body
    finally:
        subprocess.run(["umount", top_path], check=True)
    assert os.path.exists(top_path)
    job = remove_snapshot(ec, vm, s1)
    wait_ok(ec, job)
    assert [s["type"] for s in steps_of(ec, job)] == ["remove_volume"]
    assert not os.path.exists(top_path)
    d = assert_chain_legal(ec, d)
    assert [v["id"] for v in d["volumes"]] == [base] and d["format"] == "raw"
    assert snapshots(ec, vm) == {}
    assert guest_digest(ec, d, tmp_path) == before


def agent_children(agent, word):
    """Pids of the agent's child processes whose command line contains word."""
    pids = []
    for task in os.listdir(f"/proc/{agent.proc.pid}/task"):
        with open(f"/proc/{agent.proc.pid}/task/{task}/children") as f:
            pids += [int(p) for p in f.read().split()]
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if word.encode() in f.read():
                    found.append(pid)
        except FileNotFoundError:
            pass
    return found


def test_merge_killed_on_its_host_is_retried_on_another(ec, tmp_path):
    """qemu-img commit killed on the merging host (as the OOM killer would): a failure of that host, not of
    the images, so the merge is retried on another host and the removal completes with the data intact."""
    spm = ec.spm_name()
    d, base, before, job, host = slow_merge_running(ec, tmp_path, "oom", 128 * MiB, 35, "0x4b", 96 * MiB)
    pids = wait_for(lambda: agent_children(ec.agent(host), "commit"), 30, "qemu-img commit on " + host, interval=0.05)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    wait_ok(ec, job)
    merge = next(s for s in steps_of(ec, job) if s["type"] == "merge")
    assert merge["execution_host"]["name"] not in (host, spm), merge
    events = " ".join(e["message"] for e in ec.engine.get("/api/events")["events"])
    assert "killed by a signal" in events and "on another host" in events, events
    d = assert_chain_legal(ec, d)
    assert [v["id"] for v in d["volumes"]] == [base]
    assert guest_digest(ec, d, tmp_path) == before


def test_restore_gives_back_the_snapshot(ec, tmp_path):
    spm = ec.spm_name()
    d = create_disk(ec, "restore", 64 * MiB)
    write_random_extents(vol_path(ec, d), [(0, 8 * MiB)], seed=40)
    vm = new_vm(ec, "vm-restore", [d])
    at_s1 = guest_digest(ec, d, tmp_path)
    s1 = snapshot(ec, vm, "s1")
    d = disk(ec, d["id"])
    qemu_io_write(vol_path(ec, d), "qcow2", "0x11", 0, 4 * MiB)
    s2 = snapshot(ec, vm, "s2")
    d = disk(ec, d["id"])
    qemu_io_write(vol_path(ec, d), "qcow2", "0x22", 2 * MiB, 4 * MiB)
    old = [v["id"] for v in d["volumes"]]
    assert guest_digest(ec, d, tmp_path) != at_s1

    r = ec.engine.post(f"/api/vms/{vm['id']}/snapshots/{s1}/restore", {})
    wait_ok(ec, r["job"]["id"])
    assert all(s["execution_host"]["name"] == spm for s in steps_of(ec, r["job"]["id"]))
    d = assert_chain_legal(ec, d)
    ids = [v["id"] for v in d["volumes"]]
    assert ids[0] == old[0] and len(ids) == 2 and ids[1] not in old, (ids, old)
    assert d["format"] == "cow"
    assert guest_digest(ec, d, tmp_path) == at_s1
    # s2 named a discarded volume: gone; s1 stays, and can be removed (merging the new leaf).
    assert snapshots(ec, vm) == {s1: {d["id"]: old[0]}}
    assert s2 not in snapshots(ec, vm)
    qemu_io_write(vol_path(ec, d), "qcow2", "0x33", 0, MiB)
    now = guest_digest(ec, d, tmp_path)
    wait_ok(ec, remove_snapshot(ec, vm, s1))
    d = assert_chain_legal(ec, d)
    assert len(d["volumes"]) == 1 and guest_digest(ec, d, tmp_path) == now


def update_volume(ec, d, vol, **attr):
    with ec.agent(ec.spm_name()).client() as c:
        job_id = new_uuid()
        c.call("SDM.update_volume", {"job_id": job_id, "vol_info": {"sd_id": d["storage_domains"][0]["id"],
                                                                    "img_id": d["id"], "vol_id": vol},
                                     "vol_attr": attr})
        assert wait_job(c, job_id)["status"] == "done"


def test_restore_checks_the_chain_on_storage_first(ec, tmp_path):
    """A snapshot volume ILLEGAL on storage, or at another generation than the inventory's: the restore fails at
    its first step (verify_chain) with nothing removed, and the disk stays usable."""
    d = create_disk(ec, "verify", 16 * MiB)
    write_random_extents(vol_path(ec, d), [(0, 2 * MiB)], seed=41)
    vm = new_vm(ec, "vm-verify", [d])
    s1 = snapshot(ec, vm, "s1")
    d = disk(ec, d["id"])
    qemu_io_write(vol_path(ec, d), "qcow2", "0x3c", 0, MiB)
    base, leaf = [v["id"] for v in d["volumes"]]
    now = guest_digest(ec, d, tmp_path)
    gen = d["volumes"][0]["generation"]

    def restore_fails(words):
        r = ec.engine.post(f"/api/vms/{vm['id']}/snapshots/{s1}/restore", {})
        job = ec.engine.wait_job(r["job"]["id"], 60)
        assert job["status"] == "failed", job
        steps = steps_of(ec, r["job"]["id"])
        assert [(s["type"], s["status"]) for s in steps] == [("verify_chain", "failed")], steps
        events = " ".join(e["message"] for e in ec.engine.get("/api/events")["events"])
        assert all(w in events for w in words), events
        got = disk(ec, d["id"])
        assert got["status"] == "ok" and [v["id"] for v in got["volumes"]] == [base, leaf], got
        assert os.path.exists(vol_path(ec, d, leaf)) and guest_digest(ec, d, tmp_path) == now

    update_volume(ec, d, base, legality="ILLEGAL")
    restore_fails([f"volume {base} of disk {d['id']} is ILLEGAL on storage", "retry the removal"])
    update_volume(ec, d, base, legality="LEGAL", generation=gen + 1)
    restore_fails([f"volume {base} of disk {d['id']} has generation {gen + 1} on storage"])
    update_volume(ec, d, base, generation=gen)
    r = ec.engine.post(f"/api/vms/{vm['id']}/snapshots/{s1}/restore", {})
    wait_ok(ec, r["job"]["id"])
    d = assert_chain_legal(ec, d)
    assert d["volumes"][0]["id"] == base and len(d["volumes"]) == 2


def test_sparsify_gives_back_zeroed_space(ec, tmp_path):
    d = create_disk(ec, "sparse", 64 * MiB)
    path = vol_path(ec, d)
    write_random_extents(path, [(0, 32 * MiB)], seed=50)
    with open(path, "r+b") as f:           # the guest zeroes 24 MiB: still allocated
        f.seek(4 * MiB)
        f.write(bytes(24 * MiB))
        os.fsync(f.fileno())
    before_blocks = os.stat(path).st_blocks * 512
    before = guest_digest(ec, d, tmp_path)
    assert before_blocks >= 32 * MiB
    r = ec.engine.post(f"/api/disks/{d['id']}/sparsify", {})
    job = wait_ok(ec, r["job"]["id"])
    steps = steps_of(ec, r["job"]["id"])
    assert [s["type"] for s in steps] == ["verify_chain", "sparsify_volume"], steps
    assert steps[1]["execution_host"]["name"] != ec.spm_name()
    assert job["progress"] == 100
    after_blocks = os.stat(path).st_blocks * 512
    assert after_blocks <= before_blocks - 20 * MiB, (before_blocks, after_blocks)
    assert guest_digest(ec, d, tmp_path) == before
    d = assert_chain_legal(ec, d)
    assert d["volumes"][0]["generation"] == 1
    wait_for(lambda: disk(ec, d["id"])["actual_size"] <= after_blocks + MiB, 30, "actual_size read again")


def test_sparsify_of_a_volume_illegal_on_storage_sends_nothing(ec, tmp_path):
    """The inventory says LEGAL, storage says ILLEGAL (a copy cut short behind the engine's back): the chain check
    fails, no volume is sparsified, the volume stays ILLEGAL and the disk usable."""
    d = create_disk(ec, "sparse-ill", 16 * MiB)
    write_random_extents(vol_path(ec, d), [(0, 2 * MiB)], seed=51)
    vol = d["volumes"][0]["id"]
    update_volume(ec, d, vol, legality="ILLEGAL")
    try:
        r = ec.engine.post(f"/api/disks/{d['id']}/sparsify", {})
        assert ec.engine.wait_job(r["job"]["id"], 60)["status"] == "failed"
        assert [(s["type"], s["status"]) for s in steps_of(ec, r["job"]["id"])] == [("verify_chain", "failed")]
        assert read_meta(vol_path(ec, d, vol))["LEGALITY"] == "ILLEGAL"
        assert disk(ec, d["id"])["status"] == "ok"
    finally:
        update_volume(ec, d, vol, legality="LEGAL")


def fault(ec, method, path, body=None):
    with pytest.raises(HttpError) as e:
        ec.engine.request(method, path, body)
    assert isinstance(e.value.body, dict) and e.value.body["fault"]["detail"], e.value.body
    return e.value.status


def test_bad_input_is_refused_with_nothing_changed(ec):
    d = create_disk(ec, "bad", 16 * MiB)
    vm = new_vm(ec, "vm-bad", [d])
    sid = snapshot(ec, vm, "s")
    missing = str(uuid.uuid4())
    chain = disk(ec, d["id"])["volumes"]
    assert fault(ec, "DELETE", f"/api/vms/{vm['id']}/snapshots/{missing}") == 404
    assert fault(ec, "DELETE", f"/api/vms/{missing}/snapshots/{sid}") == 404
    assert fault(ec, "DELETE", f"/api/vms/{vm['id']}/snapshots/..%2F..%2Fetc") in (400, 404)
    assert fault(ec, "POST", f"/api/vms/{vm['id']}/snapshots/{missing}/restore", {}) == 404
    assert fault(ec, "POST", f"/api/disks/{missing}/sparsify", {}) == 404
    assert fault(ec, "POST", "/api/disks/..%2Fx/sparsify", {}) in (400, 404)
    # A cow disk made preallocated has nothing to give back; a locked VM or disk refuses.
    r = ec.engine.post("/api/disks", {"name": "prealloc", "provisioned_size": 8 * MiB, "format": "raw",
                                      "sparse": False, "storage_domain": {"id": ec.sds[0]["id"]}})
    wait_ok(ec, r["job"]["id"])
    assert fault(ec, "POST", f"/api/disks/{r['disk']['id']}/sparsify", {}) == 409
    job = remove_snapshot(ec, vm, sid)
    assert fault(ec, "DELETE", f"/api/vms/{vm['id']}/snapshots/{sid}") == 409
    assert fault(ec, "POST", f"/api/vms/{vm['id']}/snapshots/{sid}/restore", {}) == 409
    assert fault(ec, "POST", f"/api/disks/{d['id']}/sparsify", {}) == 409
    wait_ok(ec, job)
    assert [v["id"] for v in disk(ec, d["id"])["volumes"]] == [chain[0]["id"]]


def cli_ok(ec, *args):
    r = subprocess.run([FERRY, "--engine", ec.engine.url, *args], capture_output=True, text=True, timeout=180,
                       stdin=subprocess.DEVNULL, env=ec.engine.cli_env())
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def test_cli_snapshot_delete_restore_and_sparsify(ec, tmp_path):
    d = create_disk(ec, "cli-snap", 16 * MiB)
    write_random_extents(vol_path(ec, d), [(0, 4 * MiB)], seed=60)
    cli_ok(ec, "vm", "create", "--name", "cli-snap-vm")
    cli_ok(ec, "vm", "attach", "cli-snap-vm", "cli-snap")
    cli_ok(ec, "vm", "snapshot", "cli-snap-vm", "--description", "one", "--wait")
    cli_ok(ec, "vm", "snapshot", "cli-snap-vm", "--description", "two", "--wait")
    shown = json.loads(cli_ok(ec, "--json", "vm", "show", "cli-snap-vm"))
    snaps = {s["description"]: s["id"] for s in shown["snapshots"]}
    assert set(snaps) == {"one", "two"}
    assert "one" in cli_ok(ec, "vm", "show", "cli-snap-vm")
    cli_ok(ec, "vm", "snapshot", "restore", "cli-snap-vm", snaps["one"], "--wait")
    cli_ok(ec, "vm", "snapshot", "delete", "cli-snap-vm", snaps["one"], "--wait")
    assert json.loads(cli_ok(ec, "--json", "vm", "show", "cli-snap-vm"))["snapshots"] == []
    cli_ok(ec, "disk", "sparsify", "cli-snap", "--wait")
    assert_chain_legal(ec, d)


def test_removal_again_after_a_finalize_cut_short(ec, tmp_path):
    d = create_disk(ec, "pfin", 16 * MiB)
    write_random_extents(vol_path(ec, d), [(0, 4 * MiB)], seed=7)
    vm = new_vm(ec, "vm-pfin", [d])
    s1 = snapshot(ec, vm, "s1")
    s2 = snapshot(ec, vm, "s2")
    d = disk(ec, d["id"])
    v1, v2 = d["volumes"][1]["id"], d["volumes"][2]["id"]
    qemu_io_write(vol_path(ec, d, v2), "qcow2", "0x5a", 8 * MiB, 2 * MiB)   # data only s2's top holds
    before = guest_digest(ec, d, tmp_path)
    child = vol_path(ec, d, v2)
    subprocess.run(["chattr", "+i", child], check=True)   # finalize's qemu-img rebase -u of top's child fails
    try:
        job = ec.engine.wait_job(remove_snapshot(ec, vm, s1), 120)
        assert job["status"] == "failed", job
        assert [(s["type"], s["status"]) for s in steps_of(ec, job["id"])][-1] == ("finalize_merge", "failed")
        assert read_meta(vol_path(ec, d, v1))["LEGALITY"] == "ILLEGAL"
    finally:
        subprocess.run(["chattr", "-i", child], check=True)
    # v1 (s1's top, s2's base) is ILLEGAL and still v2's parent: merging v2 into it would make it LEGAL again, and
    # s1's finalize would then drop v2's data. Refused until s1's removal is retried.
    chain = [(v["id"], v["generation"]) for v in disk(ec, d["id"])["volumes"]]
    with pytest.raises(HttpError) as e:
        ec.engine.request("DELETE", f"/api/vms/{vm['id']}/snapshots/{s2}")
    assert e.value.status == 409 and s1 in str(e.value.body) and "first" in str(e.value.body), e.value.body
    assert [(v["id"], v["generation"]) for v in disk(ec, d["id"])["volumes"]] == chain
    assert snapshot_status(ec, vm, s2) == "ok" and read_meta(vol_path(ec, d, v2))["LEGALITY"] == "LEGAL"
    job = ec.engine.wait_job(remove_snapshot(ec, vm, s1), 120)
    assert job["status"] == "finished", steps_of(ec, job["id"])
    assert guest_digest(ec, disk(ec, d["id"]), tmp_path) == before
    wait_ok(ec, remove_snapshot(ec, vm, s2))
    assert snapshots(ec, vm) == {}
    assert guest_digest(ec, disk(ec, d["id"]), tmp_path) == before
    assert_chain_legal(ec, d)


def test_restore_removes_nothing_on_any_disk_when_one_check_fails(ec, tmp_path):
    a = create_disk(ec, "pra", 16 * MiB)
    b = create_disk(ec, "prb", 16 * MiB)
    vm = new_vm(ec, "vm-pr", [a, b])
    s1 = snapshot(ec, vm, "s1")
    s2 = snapshot(ec, vm, "s2")
    a, b = disk(ec, a["id"]), disk(ec, b["id"])
    update_volume(ec, a, a["volumes"][0]["id"], legality="ILLEGAL")   # disk a's verify_chain fails
    r = ec.engine.post(f"/api/vms/{vm['id']}/snapshots/{s1}/restore", {})
    assert ec.engine.wait_job(r["job"]["id"], 120)["status"] == "failed"
    update_volume(ec, a, a["volumes"][0]["id"], legality="LEGAL")
    assert [v["id"] for v in disk(ec, b["id"])["volumes"]] == [v["id"] for v in b["volumes"]]
    try:
        ec.engine.request("DELETE", f"/api/vms/{vm['id']}/snapshots/{s2}")
    except HttpError as e:
        pytest.fail(f"snapshot s2 cannot be removed: {e.status} {e.body}")


def snapshot_status(ec, vm, sid):
    return ec.engine.get(f"/api/vms/{vm['id']}/snapshots/{sid}")["snapshot_status"]


def test_removal_refused_before_any_change_leaves_the_snapshot_ok(ec, tmp_path):
    """prepare refuses an ILLEGAL top (252): nothing changed on storage, so the snapshot stays "ok" (not broken) and
    the VM's snapshots can still be restored; the removal goes through once top is LEGAL again."""
    d = create_disk(ec, "pok", 16 * MiB)
    write_random_extents(vol_path(ec, d), [(0, 2 * MiB)], seed=17)
    vm = new_vm(ec, "vm-pok", [d])
    s1 = snapshot(ec, vm, "s1")
    d = disk(ec, d["id"])
    top = d["volumes"][1]["id"]
    before = guest_digest(ec, d, tmp_path)
    update_volume(ec, d, top, legality="ILLEGAL")
    try:
        job = ec.engine.wait_job(remove_snapshot(ec, vm, s1), 120)
        assert job["status"] == "failed", job
        assert [(s["type"], s["status"]) for s in steps_of(ec, job["id"])] == [("prepare_merge", "failed")]
        assert snapshot_status(ec, vm, s1) == "ok"
        assert read_meta(vol_path(ec, d, d["volumes"][0]["id"]))["LEGALITY"] == "LEGAL"
    finally:
        update_volume(ec, d, top, legality="LEGAL")
    wait_ok(ec, remove_snapshot(ec, vm, s1))
    assert snapshots(ec, vm) == {}
    assert guest_digest(ec, disk(ec, d["id"]), tmp_path) == before


def test_older_snapshot_restores_past_a_broken_one(ec, tmp_path):
    """A broken snapshot blocks the restore of itself and of newer snapshots, not of an older one: that restore
    discards the half-finalized volumes (after verify_chain read the kept chain LEGAL) and the broken snapshot."""
    d = create_disk(ec, "pold", 16 * MiB)
    write_random_extents(vol_path(ec, d), [(0, 2 * MiB)], seed=23)
    vm = new_vm(ec, "vm-pold", [d])
    s0 = snapshot(ec, vm, "s0")
    d = disk(ec, d["id"])
    at_s0 = guest_digest(ec, d, tmp_path)
    qemu_io_write(vol_path(ec, d), "qcow2", "0x5a", 0, MiB)
    s1 = snapshot(ec, vm, "s1")
    s2 = snapshot(ec, vm, "s2")
    d = disk(ec, d["id"])
    child = vol_path(ec, d, d["volumes"][3]["id"])
    subprocess.run(["chattr", "+i", child], check=True)   # s1's finalize cannot re-point top's child
    try:
        assert ec.engine.wait_job(remove_snapshot(ec, vm, s1), 120)["status"] == "failed"
    finally:
        subprocess.run(["chattr", "-i", child], check=True)
    assert snapshot_status(ec, vm, s1) == "broken"
    with pytest.raises(HttpError) as e:
        ec.engine.request("POST", f"/api/vms/{vm['id']}/snapshots/{s2}/restore", {})
    assert e.value.status == 409 and s1 in e.value.body["fault"]["detail"], e.value.body
    r = ec.engine.post(f"/api/vms/{vm['id']}/snapshots/{s0}/restore", {})
    wait_ok(ec, r["job"]["id"])
    assert list(snapshots(ec, vm)) == [s0]
    d = assert_chain_legal(ec, d)
    assert len(d["volumes"]) == 2 and guest_digest(ec, d, tmp_path) == at_s0
