# SPDX-License-Identifier: GPL-2.0-or-later
"""SDM.copy_data on a host that is not the SPM, with real sanlock leases."""

import os
import subprocess
import time

import pytest

from ferrytest import (MiB, RpcError, endpoint, file_digest, new_uuid, qemu_img_compare,
                       qemu_img_map, qemu_io_write, run_job, wait_for, wait_job,
                       write_random_extents)

GiB = 1024 * MiB


def copy(cluster, agent, src, dst, job_id=None):
    job_id = job_id or new_uuid()
    with agent.client() as c:
        assert c.call("SDM.copy_data", {"job_id": job_id, "source": src, "destination": dst}) is True
    return job_id


def start_slow_copy(cluster, img, data=192 * MiB):
    """A raw volume with `data` bytes of random data, and a copy of it on B
    (capped at 64 MiB/s, so it runs ~3 s). Returns (job_id, dst endpoint)."""
    vol = new_uuid()
    cluster.create_volume(cluster.sd1, img, vol, 1 * GiB)
    cluster.create_volume(cluster.sd2, img, vol, 1 * GiB)
    write_random_extents(cluster.path(cluster.sd1, img, vol), [(64 * MiB, data)], seed=7)
    gen = cluster.volume_info(cluster.sd2, img, vol)["generation"]
    dst = endpoint(cluster.sd2, img, vol, gen)
    job_id = copy(cluster, cluster.b, endpoint(cluster.sd1, img, vol), dst)
    with cluster.b.client() as c:
        wait_for(lambda: c.call("Host.getJobs", {"job_ids": [job_id]})[job_id]["progress"] > 0,
                 30, "the copy to make progress")
    return job_id, dst, vol


def test_raw_copy_on_non_spm_host(cluster, img):
    vol = new_uuid()
    cluster.create_volume(cluster.sd1, img, vol, 256 * MiB)
    cluster.create_volume(cluster.sd2, img, vol, 256 * MiB)
    src_path = cluster.path(cluster.sd1, img, vol)
    dst_path = cluster.path(cluster.sd2, img, vol)
    # Scattered extents, an unaligned one, and holes between them.
    write_random_extents(src_path, [(0, 3 * MiB), (50 * MiB, 5 * MiB + 4096 + 512), (200 * MiB, 1 * MiB)])
    # Stale data in the destination where the source has a hole must not survive.
    write_random_extents(dst_path, [(100 * MiB, 2 * MiB)], seed=99)

    with cluster.b.client() as c:
        assert c.call("StoragePool.getSpmStatus", {"storagepoolID": cluster.pool})["spmStatus"] != "SPM"
    before = cluster.volume_info(cluster.sd2, img, vol)
    assert before["legality"] == "LEGAL"
    job_id = copy(cluster, cluster.b, endpoint(cluster.sd1, img, vol),
                  endpoint(cluster.sd2, img, vol, before["generation"]))
    with cluster.b.client() as c:
        job = wait_job(c, job_id)
    assert job["status"] == "done", job
    assert job["progress"] == 100

    after = cluster.volume_info(cluster.sd2, img, vol)
    assert after["legality"] == "LEGAL"
    assert after["generation"] == before["generation"] + 1
    assert after["lease"]["owners"] == []
    assert file_digest(src_path) == file_digest(dst_path)
    assert qemu_img_compare(src_path, dst_path).returncode == 0
    # Sparse: roughly the 9 MiB of data, not the 256 MiB capacity.
    assert os.stat(dst_path).st_blocks * 512 < 16 * MiB


def test_qcow2_chain_copy_on_non_spm_host(cluster, img):
    base, mid, top = new_uuid(), new_uuid(), new_uuid()
    size = 64 * MiB
    for sd in (cluster.sd1, cluster.sd2):
        cluster.create_volume(sd, img, base, size, fmt="COW")
        cluster.create_volume(sd, img, mid, size, fmt="COW", parent=base)
        cluster.create_volume(sd, img, top, size, fmt="COW", parent=mid)
    src = lambda v: cluster.path(cluster.sd1, img, v)  # noqa: E731
    dst = lambda v: cluster.path(cluster.sd2, img, v)  # noqa: E731
    qemu_io_write(src(base), "qcow2", "0x11", 0, 4 * MiB)
    qemu_io_write(src(mid), "qcow2", "0x22", 2 * MiB, 4 * MiB)
    qemu_io_write(src(top), "qcow2", "0x33", 10 * MiB, 2 * MiB)

    info = {v: cluster.volume_info(cluster.sd1, img, v) for v in (base, mid, top)}
    assert info[base]["voltype"] == "INTERNAL" and info[top]["voltype"] == "LEAF"
    assert info[top]["parent"] == mid

    for vol in (base, mid, top):  # base first, as the engine orders them
        gen = cluster.volume_info(cluster.sd2, img, vol)["generation"]
        job_id = copy(cluster, cluster.b, endpoint(cluster.sd1, img, vol), endpoint(cluster.sd2, img, vol, gen))
        with cluster.b.client() as c:
            job = wait_job(c, job_id)
        assert job["status"] == "done", job
        after = cluster.volume_info(cluster.sd2, img, vol)
        assert after["legality"] == "LEGAL" and after["generation"] == gen + 1

    for vol in (base, mid, top):
        r = qemu_img_compare(src(vol), dst(vol))
        assert r.returncode == 0, r.stdout + r.stderr
    # Each destination layer holds only its own data: the top layer maps
    # just the 2 MiB written into it, the rest comes from its backing chain.
    own = [e for e in qemu_img_map(dst(top)) if e["depth"] == 0 and e["data"]]
    assert sum(e["length"] for e in own) == 2 * MiB


def test_raw_to_qcow2_and_back(cluster, img):
    raw, cow, raw2 = new_uuid(), new_uuid(), new_uuid()
    cluster.create_volume(cluster.sd1, img, raw, 32 * MiB)
    cluster.create_volume(cluster.sd2, img, cow, 32 * MiB, fmt="COW")
    cluster.create_volume(cluster.sd1, img, raw2, 32 * MiB, alloc="PREALLOCATED")
    write_random_extents(cluster.path(cluster.sd1, img, raw), [(1 * MiB, 5 * MiB)], seed=3)
    for s, d in (((cluster.sd1, raw), (cluster.sd2, cow)), ((cluster.sd2, cow), (cluster.sd1, raw2))):
        job_id = copy(cluster, cluster.b, endpoint(s[0], img, s[1]), endpoint(d[0], img, d[1]))
        with cluster.b.client() as c:
            assert wait_job(c, job_id)["status"] == "done"
    assert file_digest(cluster.path(cluster.sd1, img, raw)) == file_digest(cluster.path(cluster.sd1, img, raw2))


def test_generation_mismatch_touches_nothing(cluster, img):
    vol = new_uuid()
    cluster.create_volume(cluster.sd1, img, vol, 16 * MiB)
    cluster.create_volume(cluster.sd2, img, vol, 16 * MiB)
    write_random_extents(cluster.path(cluster.sd1, img, vol), [(0, 4 * MiB)])
    dst_path = cluster.path(cluster.sd2, img, vol)
    with open(dst_path + ".meta", "rb") as f:
        meta_before = f.read()
    data_before = file_digest(dst_path)
    gen = cluster.volume_info(cluster.sd2, img, vol)["generation"]

    job_id = copy(cluster, cluster.b, endpoint(cluster.sd1, img, vol), endpoint(cluster.sd2, img, vol, gen + 5))
    with cluster.b.client() as c:
        job = wait_job(c, job_id)
    assert job["status"] == "failed"
    assert job["error"]["code"] == 911
    with open(dst_path + ".meta", "rb") as f:
        assert f.read() == meta_before
    assert file_digest(dst_path) == data_before
    assert cluster.volume_info(cluster.sd2, img, vol)["lease"]["owners"] == []


def test_abort_mid_copy_leaves_destination_illegal(cluster, img):
    job_id, dst, vol = start_slow_copy(cluster, img)
    with cluster.b.client() as c:
        assert c.call("Job.abort", {"job_id": job_id}) is True
        job = wait_job(c, job_id, timeout=10)
    assert job["status"] == "aborted", job
    assert 0 < job["progress"] < 100
    info = cluster.volume_info(cluster.sd2, img, vol)
    assert info["legality"] == "ILLEGAL"
    assert info["generation"] == dst["generation"]
    assert info["lease"]["owners"] == []
    with cluster.b.client() as c:
        with pytest.raises(RpcError) as e:
            c.call("Job.abort", {"job_id": job_id})
        assert e.value.code == 84


def test_lease_owner_visible_and_second_copy_refused(cluster, img):
    job_id, dst, vol = start_slow_copy(cluster, img)
    # A sees B (host id 2) owning the destination's lease while B copies.
    info = cluster.volume_info(cluster.sd2, img, vol, agent=cluster.a)
    assert info["lease"]["owners"] == [2]
    assert info["legality"] == "ILLEGAL"
    # A copy into the same volume on A cannot take the lease: 651.
    other = copy(cluster, cluster.a, endpoint(cluster.sd1, img, vol), endpoint(cluster.sd2, img, vol))
    with cluster.a.client() as c:
        job = wait_job(c, other)
    assert job["status"] == "failed"
    assert job["error"]["code"] == 651, job
    # So does fencing through SDM.update_volume while the holder is alive.
    fence = new_uuid()
    with cluster.a.client() as c:
        c.call("SDM.update_volume", {"job_id": fence, "vol_info": {"sd_id": cluster.sd2, "img_id": img,
                                                                    "vol_id": vol, "generation": dst["generation"]},
                                     "vol_attr": {"generation": dst["generation"] + 3}})
        assert wait_job(c, fence)["error"]["code"] == 651
    with cluster.b.client() as c:
        assert wait_job(c, job_id)["status"] == "done"
    info = cluster.volume_info(cluster.sd2, img, vol)
    assert info["legality"] == "LEGAL" and info["generation"] == dst["generation"] + 1


def test_update_volume_fences_generation(cluster, img):
    vol = new_uuid()
    cluster.create_volume(cluster.sd2, img, vol, 16 * MiB)
    gen = cluster.volume_info(cluster.sd2, img, vol)["generation"]
    vol_info = {"sd_id": cluster.sd2, "img_id": img, "vol_id": vol, "generation": gen}
    with cluster.b.client() as c:
        job = run_update(c, vol_info, {"generation": gen + 3, "legality": "ILLEGAL"})
        assert job["status"] == "done", job
        # The recorded generation no longer matches: refused, nothing changes.
        job = run_update(c, vol_info, {"generation": gen + 6})
        assert job["status"] == "failed" and job["error"]["code"] == 911
    info = cluster.volume_info(cluster.sd2, img, vol)
    assert info["generation"] == gen + 3 and info["legality"] == "ILLEGAL"
    with cluster.b.client() as c:
        with pytest.raises(RpcError) as e:
            c.call("SDM.update_volume", {"job_id": new_uuid(), "vol_info": vol_info, "vol_attr": {}})
        assert e.value.code == -32602


def run_update(client, vol_info, vol_attr):
    job_id = new_uuid()
    client.call("SDM.update_volume", {"job_id": job_id, "vol_info": vol_info, "vol_attr": vol_attr})
    return wait_job(client, job_id)


def test_spm_verbs_refused_on_non_spm_host(cluster, img):
    with cluster.b.client() as c:
        for method, params in (
                ("Volume.create", {"storagepoolID": cluster.pool, "storagedomainID": cluster.sd1, "imageID": img,
                                   "volumeID": new_uuid(), "size": "1048576", "volFormat": "RAW",
                                   "preallocate": "SPARSE"}),
                ("Volume.delete", {"storagepoolID": cluster.pool, "storagedomainID": cluster.sd1, "imageID": img,
                                   "volumeID": new_uuid()}),
                ("Image.delete", {"storagepoolID": cluster.pool, "storagedomainID": cluster.sd1, "imageID": img})):
            with pytest.raises(RpcError) as e:
                c.call(method, params)
            assert e.value.code == 654, method
    assert not os.path.exists(cluster.path(cluster.sd1, img))


def test_job_limit_queues_and_pending_abort(cluster, img):
    # The small volumes exist before the slow copy starts: under a loaded
    # machine (ASan, parallel workers) two Volume.create jobs took longer than
    # the whole slow copy, which then read 'done' instead of 'running'.
    vol = new_uuid()
    cluster.create_volume(cluster.sd1, img, vol, 8 * MiB)
    cluster.create_volume(cluster.sd2, img, vol, 8 * MiB)
    first, _, _ = start_slow_copy(cluster, img, data=256 * MiB)
    second = copy(cluster, cluster.b, endpoint(cluster.sd1, img, vol), endpoint(cluster.sd2, img, vol))
    third = copy(cluster, cluster.b, endpoint(cluster.sd1, img, vol), endpoint(cluster.sd2, img, vol))
    with cluster.b.client() as c:
        jobs = c.call("Host.getJobs", {"job_ids": [first, second, third]})
        assert jobs[first]["status"] == "running"
        assert jobs[second]["status"] == "pending" and jobs[third]["status"] == "pending"
        stats = c.call("Host.getStats")
        assert stats["jobs_running"] == 1 and stats["jobs_pending"] == 2 and stats["free_slots"] == 0
        assert stats["copy_rate_limit"] == 64 * MiB
        c.call("Job.abort", {"job_id": third})
        assert c.call("Host.getJobs", {"job_ids": [third]})[third]["status"] == "aborted"
        with pytest.raises(RpcError) as e:
            c.call("Job.delete", {"job_id": second})
        assert e.value.code == 86
        assert wait_job(c, first)["status"] == "done"
        assert wait_job(c, second)["status"] == "done"
        # Duplicate job ids are refused, finished jobs can be deleted.
        with pytest.raises(RpcError) as e:
            copy(cluster, cluster.b, endpoint(cluster.sd1, img, vol), endpoint(cluster.sd2, img, vol), job_id=second)
        assert e.value.code == 85
        assert c.call("Job.delete", {"job_id": second}) is True
        with pytest.raises(RpcError) as e:
            c.call("Job.delete", {"job_id": second})
        assert e.value.code == 66


def test_events_report_job_progress(cluster, img):
    vol = new_uuid()
    cluster.create_volume(cluster.sd1, img, vol, 512 * MiB)
    cluster.create_volume(cluster.sd2, img, vol, 512 * MiB)
    write_random_extents(cluster.path(cluster.sd1, img, vol), [(0, 160 * MiB)], seed=5)
    with cluster.b.client() as c:
        c.subscribe_events()
        job_id = copy(cluster, cluster.b, endpoint(cluster.sd1, img, vol), endpoint(cluster.sd2, img, vol))
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ev = c.events.get(timeout=deadline - time.monotonic())
            if ev["method"] != f"|jobs|status|{job_id}":
                continue
            seen.append(ev["params"])
            if seen[-1]["status"] in ("done", "failed", "aborted"):
                break
    statuses = [s["status"] for s in seen]
    assert statuses[0] == "pending" and statuses[-1] == "done", statuses
    progress = [s["progress"] for s in seen if s["status"] == "running"]
    assert any(0 < p < 100 for p in progress), progress


def test_killed_agent_frees_lease_volume_stays_illegal(cluster, img):
    # A qcow2 copy, so a qemu-img child is running when the agent dies.
    vol = new_uuid()
    cluster.create_volume(cluster.sd1, img, vol, 1 * GiB)
    cluster.create_volume(cluster.sd2, img, vol, 1 * GiB, fmt="COW")
    write_random_extents(cluster.path(cluster.sd1, img, vol), [(0, 192 * MiB)], seed=11)
    gen = cluster.volume_info(cluster.sd2, img, vol)["generation"]
    job_id = copy(cluster, cluster.b, endpoint(cluster.sd1, img, vol), endpoint(cluster.sd2, img, vol, gen))
    with cluster.b.client() as c:
        wait_for(lambda: c.call("Host.getJobs", {"job_ids": [job_id]})[job_id]["progress"] > 0,
                 30, "the copy to make progress")
    assert cluster.volume_info(cluster.sd2, img, vol)["lease"]["owners"] == [2]

    cluster.b.kill()   # its sanlock daemon stays up
    try:
        wait_for(lambda: cluster.volume_info(cluster.sd2, img, vol)["lease"]["owners"] == [], 10,
                 "sanlock to free the dead agent's lease")
        info = cluster.volume_info(cluster.sd2, img, vol)
        assert info["legality"] == "ILLEGAL" and info["generation"] == gen
        dst_path = cluster.path(cluster.sd2, img, vol)
        wait_for(lambda: dst_path not in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                                        text=True).stdout,
                 10, "qemu-img to die with its agent")
        # The volume can be copied again by someone else once the holder is gone.
        job = copy(cluster, cluster.a, endpoint(cluster.sd1, img, vol), endpoint(cluster.sd2, img, vol, gen))
        with cluster.a.client() as c:
            assert wait_job(c, job)["status"] == "done"
        assert qemu_img_compare(cluster.path(cluster.sd1, img, vol), dst_path).returncode == 0
    finally:
        cluster.b.start()
        cluster.connect(cluster.b)


def test_delete_volume_and_image(cluster, img):
    base, leaf = new_uuid(), new_uuid()
    cluster.create_volume(cluster.sd1, img, base, 8 * MiB, fmt="COW")
    cluster.create_volume(cluster.sd1, img, leaf, 8 * MiB, fmt="COW", parent=base)
    with cluster.a.client() as c:
        job = run_job(c, "Volume.delete", {"storagepoolID": cluster.pool, "storagedomainID": cluster.sd1,
                                           "imageID": img, "volumeID": base})
        assert job["status"] == "failed" and job["error"]["code"] == 212
        job = run_job(c, "Volume.delete", {"storagepoolID": cluster.pool, "storagedomainID": cluster.sd1,
                                           "imageID": img, "volumeID": leaf})
        assert job["status"] == "done"
        assert cluster.volume_info(cluster.sd1, img, base)["voltype"] == "LEAF"
        job = run_job(c, "Image.delete", {"storagepoolID": cluster.pool, "storagedomainID": cluster.sd1,
                                          "imageID": img})
        assert job["status"] == "done"
    assert not os.path.exists(cluster.path(cluster.sd1, img))
