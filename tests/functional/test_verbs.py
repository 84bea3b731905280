# SPDX-License-Identifier: GPL-2.0-or-later
"""SDM.merge (with StoragePool.prepareMerge/finalizeMerge), SDM.sparsify_volume,
SDM.amend_volume and Volume.measure on real agents, sanlock and qemu-img."""

import glob
import json
import os
import subprocess
import time

import pytest

from ferrytest import (MiB, RpcError, file_digest, new_uuid, qemu_io_write, run_job, wait_for,
                       wait_job, write_random_extents)

GiB = 1024 * MiB


def guest_view(path, workdir, name):
    """What a guest reads from the volume at path: its whole chain as raw bytes."""
    out = os.path.join(workdir, name)
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", path, out], check=True)
    digest = file_digest(out)
    os.unlink(out)
    return digest


def subchain(cluster, img, top, base, gen=None):
    info = {"sd_id": cluster.sd1, "img_id": img, "top_id": top, "base_id": base}
    if gen is not None:
        info["base_generation"] = gen
    return info


def start_merge(agent, sc, job_id=None):
    job_id = job_id or new_uuid()
    with agent.client() as c:
        assert c.call("SDM.merge", {"job_id": job_id, "subchain_info": sc}) is True
    return job_id


def run_merge(agent, sc):
    job_id = start_merge(agent, sc)
    with agent.client() as c:
        return wait_job(c, job_id)


def spm_step(cluster, method, sc):
    with cluster.a.client() as c:
        return run_job(c, method, {"storagepoolID": cluster.pool, "subchainInfo": sc})


def delete_volume(cluster, img, vol):
    with cluster.a.client() as c:
        job = run_job(c, "Volume.delete", {"storagepoolID": cluster.pool, "storagedomainID": cluster.sd1,
                                           "imageID": img, "volumeID": vol})
    assert job["status"] == "done", job


def remove_snapshot(cluster, img, top, base):
    """The engine's cold merge: prepare on the SPM, merge on B, finalize on the SPM, delete top."""
    gen = cluster.volume_info(cluster.sd1, img, base)["generation"]
    job = spm_step(cluster, "StoragePool.prepareMerge", subchain(cluster, img, top, base, gen))
    assert job["status"] == "done", job
    assert cluster.volume_info(cluster.sd1, img, base)["legality"] == "ILLEGAL"
    job = run_merge(cluster.b, subchain(cluster, img, top, base, gen))
    assert job["status"] == "done", job
    assert job["progress"] == 100
    info = cluster.volume_info(cluster.sd1, img, base)
    assert info["legality"] == "LEGAL" and info["generation"] == gen + 1
    assert info["lease"]["owners"] == []
    job = spm_step(cluster, "StoragePool.finalizeMerge", subchain(cluster, img, top, base, gen + 1))
    assert job["status"] == "done", job
    assert cluster.volume_info(cluster.sd1, img, top)["legality"] == "ILLEGAL"
    # Re-runnable: a finalize whose answer was lost is sent again and finds nothing left to do.
    job = spm_step(cluster, "StoragePool.finalizeMerge", subchain(cluster, img, top, base, gen + 1))
    assert job["status"] == "done", job
    delete_volume(cluster, img, top)


def volume_files(cluster, img):
    """Digest of the image's data and metadata files (sanlock writes its lease areas on every acquire)."""
    return {os.path.basename(p): file_digest(p) for p in sorted(glob.glob(cluster.path(cluster.sd1, img, "*")))
            if not p.endswith(".lease")}


def make_chain(cluster, img, n, size=64 * MiB):
    vols = [new_uuid() for _ in range(n)]
    for i, vol in enumerate(vols):
        cluster.create_volume(cluster.sd1, img, vol, size, fmt="COW", parent=vols[i - 1] if i else None)
    return vols


def test_remove_internal_base_and_newest_snapshot(cluster, img, tmp_path):
    v0, v1, v2, v3 = make_chain(cluster, img, 4)
    path = lambda v: cluster.path(cluster.sd1, img, v)  # noqa: E731
    # Overlapping writes: each layer hides part of the one below it.
    qemu_io_write(path(v0), "qcow2", "0x11", 0, 8 * MiB)
    qemu_io_write(path(v1), "qcow2", "0x22", 4 * MiB, 8 * MiB)
    qemu_io_write(path(v2), "qcow2", "0x33", 10 * MiB, 4 * MiB)
    qemu_io_write(path(v2), "qcow2", "0x00", 0, 1 * MiB)   # zeros over base data must stay zeros
    qemu_io_write(path(v3), "qcow2", "0x44", 12 * MiB, 8 * MiB)
    before = guest_view(path(v3), tmp_path, "ref")

    # Internal: v2 into v1; the leaf v3 now sits on v1.
    remove_snapshot(cluster, img, v2, v1)
    assert not os.path.exists(path(v2))
    info = cluster.volume_info(cluster.sd1, img, v3)
    assert info["parent"] == v1 and info["legality"] == "LEGAL"
    assert json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-f", "qcow2", path(v3)],
                                     capture_output=True, check=True).stdout)["backing-filename"] == v1
    assert guest_view(path(v3), tmp_path, "internal") == before

    # Base: v1 into v0.
    remove_snapshot(cluster, img, v1, v0)
    assert cluster.volume_info(cluster.sd1, img, v3)["parent"] == v0
    assert guest_view(path(v3), tmp_path, "base") == before

    # Newest: the leaf v3 into v0, which becomes the leaf.
    remove_snapshot(cluster, img, v3, v0)
    info = cluster.volume_info(cluster.sd1, img, v0)
    assert info["voltype"] == "LEAF" and info["legality"] == "LEGAL"
    assert guest_view(path(v0), tmp_path, "newest") == before
    assert sorted(os.listdir(cluster.path(cluster.sd1, img))) == sorted([v0, v0 + ".meta", v0 + ".lease"])


def test_raw_base_smaller_than_top_refused_then_prepared(cluster, img, tmp_path):
    base, top = new_uuid(), new_uuid()
    cluster.create_volume(cluster.sd1, img, base, 16 * MiB)
    cluster.create_volume(cluster.sd1, img, top, 32 * MiB, fmt="COW", parent=base)
    write_random_extents(cluster.path(cluster.sd1, img, base), [(0, 4 * MiB)], seed=21)
    qemu_io_write(cluster.path(cluster.sd1, img, top), "qcow2", "0x55", 20 * MiB, 4 * MiB)
    before = guest_view(cluster.path(cluster.sd1, img, top), tmp_path, "ref")
    files = volume_files(cluster, img)

    # Without prepareMerge the raw base cannot hold top: refused before anything is written.
    job = run_merge(cluster.b, subchain(cluster, img, top, base, 0))
    assert job["status"] == "failed" and job["error"]["code"] == 252, job
    assert "smaller" in job["error"]["message"]
    assert volume_files(cluster, img) == files

    remove_snapshot(cluster, img, top, base)
    info = cluster.volume_info(cluster.sd1, img, base)
    assert info["capacity"] == 32 * MiB and info["format"] == "RAW" and info["voltype"] == "LEAF"
    out = os.path.join(tmp_path, "after")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", cluster.path(cluster.sd1, img, base), out],
                   check=True)
    assert file_digest(out) == before


def test_killed_merge_fenced_and_retried_elsewhere(cluster, img, tmp_path):
    base, top, leaf = make_chain(cluster, img, 3, size=1 * GiB)
    path = lambda v: cluster.path(cluster.sd1, img, v)  # noqa: E731
    qemu_io_write(path(base), "qcow2", "0x11", 0, 16 * MiB)
    # B merges at 64 MiB/s: 256 MiB of top data keep it busy for seconds.
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x66 0 256M", path(top)], check=True,
                   stdout=subprocess.DEVNULL)
    qemu_io_write(path(leaf), "qcow2", "0x77", 100 * MiB, 1 * MiB)
    before = guest_view(path(leaf), tmp_path, "ref")
    gen = cluster.volume_info(cluster.sd1, img, base)["generation"]
    assert spm_step(cluster, "StoragePool.prepareMerge", subchain(cluster, img, top, base, gen))["status"] == "done"

    job_id = start_merge(cluster.b, subchain(cluster, img, top, base, gen))
    with cluster.b.client() as c:
        wait_for(lambda: c.call("Host.getJobs", {"job_ids": [job_id]})[job_id]["progress"] > 0,
                 30, "the merge to make progress")
    assert cluster.volume_info(cluster.sd1, img, base)["lease"]["owners"] == [2]

    cluster.b.kill()
    try:
        wait_for(lambda: cluster.volume_info(cluster.sd1, img, base)["lease"]["owners"] == [], 10,
                 "sanlock to free the dead agent's lease")
        info = cluster.volume_info(cluster.sd1, img, base)
        assert info["legality"] == "ILLEGAL" and info["generation"] == gen
        wait_for(lambda: path(top) not in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                                        text=True).stdout,
                 10, "qemu-img to die with its agent")
        # Finalize refuses while the base is ILLEGAL: top's data is not all in it.
        job = spm_step(cluster, "StoragePool.finalizeMerge", subchain(cluster, img, top, base, gen))
        assert job["status"] == "failed" and job["error"]["code"] == 252, job
        # Fence: the generation moves on, so the dead host's merge can never be taken for done.
        fence = new_uuid()
        with cluster.a.client() as c:
            c.call("SDM.update_volume", {"job_id": fence,
                                         "vol_info": {"sd_id": cluster.sd1, "img_id": img, "vol_id": base,
                                                      "generation": gen},
                                         "vol_attr": {"generation": gen + 3}})
            assert wait_job(c, fence)["status"] == "done"
        # The old generation is refused; the fenced one merges on A.
        job = run_merge(cluster.a, subchain(cluster, img, top, base, gen))
        assert job["status"] == "failed" and job["error"]["code"] == 911, job
        job = run_merge(cluster.a, subchain(cluster, img, top, base, gen + 3))
        assert job["status"] == "done", job
        info = cluster.volume_info(cluster.sd1, img, base)
        assert info["legality"] == "LEGAL" and info["generation"] == gen + 4
        job = spm_step(cluster, "StoragePool.finalizeMerge", subchain(cluster, img, top, base, gen + 4))
        assert job["status"] == "done", job
        delete_volume(cluster, img, top)
        assert cluster.volume_info(cluster.sd1, img, leaf)["parent"] == base
        assert guest_view(path(leaf), tmp_path, "after") == before
        for vol in (base, leaf):
            assert cluster.volume_info(cluster.sd1, img, vol)["legality"] == "LEGAL"
    finally:
        cluster.b.start()
        cluster.connect(cluster.b)


def test_aborted_merge_leaves_base_illegal_and_runs_again(cluster, img, tmp_path):
    base, top = make_chain(cluster, img, 2, size=512 * MiB)
    path = lambda v: cluster.path(cluster.sd1, img, v)  # noqa: E731
    qemu_io_write(path(base), "qcow2", "0x11", 0, 64 * MiB)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x66 32M 192M", path(top)], check=True,
                   stdout=subprocess.DEVNULL)
    before = guest_view(path(top), tmp_path, "ref")
    gen = cluster.volume_info(cluster.sd1, img, base)["generation"]
    job_id = start_merge(cluster.b, subchain(cluster, img, top, base, gen))
    with cluster.b.client() as c:
        wait_for(lambda: c.call("Host.getJobs", {"job_ids": [job_id]})[job_id]["progress"] > 0,
                 30, "the merge to make progress")
        assert c.call("Job.abort", {"job_id": job_id}) is True
        job = wait_job(c, job_id, timeout=10)
    assert job["status"] == "aborted", job
    info = cluster.volume_info(cluster.sd1, img, base)
    assert info["legality"] == "ILLEGAL" and info["generation"] == gen and info["lease"]["owners"] == []
    # Top was left as it was: the same merge runs again and completes.
    job = run_merge(cluster.b, subchain(cluster, img, top, base, gen))
    assert job["status"] == "done", job
    assert cluster.volume_info(cluster.sd1, img, base)["generation"] == gen + 1
    job = spm_step(cluster, "StoragePool.finalizeMerge", subchain(cluster, img, top, base, gen + 1))
    assert job["status"] == "done", job
    delete_volume(cluster, img, top)
    assert guest_view(path(base), tmp_path, "after") == before


def test_merge_of_a_corrupt_top_is_refused_everywhere(cluster, img):
    """qemu-img commit blames the image (top marked corrupt in its qcow2 header): 252, which the engine does not
    retry on another host, unlike a failure of the host (100: killed, I/O error; test_snapshots)."""
    base, top = make_chain(cluster, img, 2, size=16 * MiB)
    qemu_io_write(cluster.path(cluster.sd1, img, top), "qcow2", "0x21", 0, MiB)
    with open(cluster.path(cluster.sd1, img, top), "r+b") as f:      # incompatible_features bit 1: corrupt
        f.seek(72)
        f.write((2).to_bytes(8, "big"))
    gen = cluster.volume_info(cluster.sd1, img, base)["generation"]
    job = run_merge(cluster.b, subchain(cluster, img, top, base, gen))
    assert job["status"] == "failed" and job["error"]["code"] == 252, job
    assert "corrupt" in job["error"]["message"], job


def run_sparsify(agent, vol_info):
    job_id = new_uuid()
    with agent.client() as c:
        assert c.call("SDM.sparsify_volume", {"job_id": job_id, "vol_info": vol_info}) is True
        return wait_job(c, job_id)


def allocated(path):
    return os.stat(path).st_blocks * 512


def test_sparsify_raw_gives_back_zeroed_space(cluster, img):
    vol = new_uuid()
    cluster.create_volume(cluster.sd1, img, vol, 64 * MiB)
    p = cluster.path(cluster.sd1, img, vol)
    write_random_extents(p, [(0, 4 * MiB), (30 * MiB, 2 * MiB + 4096)], seed=31)
    with open(p, "r+b") as f:       # zeros written by a guest: allocated, but nothing in them
        f.seek(8 * MiB)
        f.write(bytes(16 * MiB))
        f.seek(40 * MiB)
        f.write(bytes(3 * MiB) + b"x" + bytes(MiB))
        os.fsync(f.fileno())
    digest, used = file_digest(p), allocated(p)
    gen = cluster.volume_info(cluster.sd1, img, vol)["generation"]

    job = run_sparsify(cluster.b, {"sd_id": cluster.sd1, "img_id": img, "vol_id": vol, "generation": gen})
    assert job["status"] == "done", job
    assert job["progress"] == 100
    assert file_digest(p) == digest
    assert allocated(p) <= used - 19 * MiB, (used, allocated(p))
    info = cluster.volume_info(cluster.sd1, img, vol)
    assert info["legality"] == "LEGAL" and info["generation"] == gen + 1


def test_sparsify_failure_leaves_volume_legal(cluster, img):
    """A sparsify that storage refuses (the volume file bind-mounted read-only: EROFS) changes no data, so the
    volume is LEGAL again at its generation, and the same request runs once the storage allows it."""
    vol = new_uuid()
    cluster.create_volume(cluster.sd1, img, vol, 16 * MiB)
    p = cluster.path(cluster.sd1, img, vol)
    write_random_extents(p, [(0, 2 * MiB)], seed=32)
    with open(p, "r+b") as f:
        f.seek(4 * MiB)
        f.write(bytes(8 * MiB))
        os.fsync(f.fileno())
    digest, used = file_digest(p), allocated(p)
    gen = cluster.volume_info(cluster.sd1, img, vol)["generation"]
    vol_info = {"sd_id": cluster.sd1, "img_id": img, "vol_id": vol, "generation": gen}
    subprocess.run(["mount", "--bind", p, p], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", p], check=True)
        job = run_sparsify(cluster.b, vol_info)
        assert job["status"] == "failed" and "Read-only file system" in job["error"]["message"], job
    finally:
        subprocess.run(["umount", p], check=True)
    info = cluster.volume_info(cluster.sd1, img, vol)
    assert info["legality"] == "LEGAL" and info["generation"] == gen and info["lease"]["owners"] == [], info
    assert file_digest(p) == digest and allocated(p) == used
    job = run_sparsify(cluster.b, vol_info)
    assert job["status"] == "done", job
    assert file_digest(p) == digest and allocated(p) <= used - 7 * MiB
    assert cluster.volume_info(cluster.sd1, img, vol)["generation"] == gen + 1


def test_sparsify_and_amend_refuse_an_illegal_volume(cluster, img):
    """An ILLEGAL volume (a copy or merge into it cut short) is refused by sparsify and amend with 227 and nothing
    changed: neither may end by marking it LEGAL over data that may be incomplete."""
    base, top = make_chain(cluster, img, 2, size=16 * MiB)
    gen = cluster.volume_info(cluster.sd1, img, top)["generation"]
    with cluster.a.client() as c:
        job_id = new_uuid()
        c.call("SDM.update_volume", {"job_id": job_id, "vol_info": {"sd_id": cluster.sd1, "img_id": img, "vol_id": top},
                                     "vol_attr": {"legality": "ILLEGAL"}})
        assert wait_job(c, job_id)["status"] == "done"
    vol_info = {"sd_id": cluster.sd1, "img_id": img, "vol_id": top, "generation": gen}
    for job in (run_sparsify(cluster.b, vol_info), run_amend(cluster.b, vol_info)):
        assert job["status"] == "failed" and job["error"]["code"] == 227 and "ILLEGAL" in job["error"]["message"], job
    info = cluster.volume_info(cluster.sd1, img, top)
    assert info["legality"] == "ILLEGAL" and info["generation"] == gen and info["lease"]["owners"] == [], info


def test_stale_metadata_temp_files_removed_when_pool_connected(cluster, img):
    """An agent killed between a .meta temp write and its rename leaves <vol>.meta.tmp.<random>; the next
    agent to connect the pool removes those older than its start (logged), and nothing else."""
    vol = new_uuid()
    cluster.create_volume(cluster.sd1, img, vol, 8 * MiB)
    meta = cluster.path(cluster.sd1, img, vol) + ".meta"
    stale, newer, other = meta + ".tmp.0123456789abcdef", meta + ".tmp.fedcba9876543210", meta + ".tmp.notatemp"
    for p in (stale, newer, other):
        with open(p, "w") as f:
            f.write("half a metadata write")
    now = time.time()
    os.utime(stale, (now - 60, now - 60))
    os.utime(other, (now - 60, now - 60))
    os.utime(newer, (now + 3600, now + 3600))       # changed after the agent starts: a write in progress elsewhere
    try:
        cluster.b.stop()
        cluster.b.start()
        cluster.connect(cluster.b)
        assert not os.path.exists(stale)
        assert os.path.exists(newer) and os.path.exists(other)
        with open(cluster.b.log_path, errors="replace") as f:
            assert f"removed stale metadata temp file {stale}" in f.read()
        assert cluster.volume_info(cluster.sd1, img, vol)["legality"] == "LEGAL"
    finally:
        for p in (stale, newer, other):
            if os.path.exists(p):
                os.unlink(p)


def test_sparsify_qcow2_discards_zero_clusters(cluster, img, tmp_path):
    base, top = make_chain(cluster, img, 2)
    pt = cluster.path(cluster.sd1, img, top)
    qemu_io_write(cluster.path(cluster.sd1, img, base), "qcow2", "0x11", 0, 16 * MiB)
    qemu_io_write(pt, "qcow2", "0x00", 0, 8 * MiB)       # zero data over the base's: must stay zeros
    qemu_io_write(pt, "qcow2", "0x22", 20 * MiB, 2 * MiB)
    before, used = guest_view(pt, tmp_path, "ref"), allocated(pt)
    job = run_sparsify(cluster.b, {"sd_id": cluster.sd1, "img_id": img, "vol_id": top})
    assert job["status"] == "done", job
    assert allocated(pt) <= used - 7 * MiB, (used, allocated(pt))
    assert guest_view(pt, tmp_path, "after") == before
    check = subprocess.run(["qemu-img", "check", "-f", "qcow2", pt], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_sparsify_preallocated_refused(cluster, img):
    vol = new_uuid()
    cluster.create_volume(cluster.sd1, img, vol, 8 * MiB, alloc="PREALLOCATED")
    files = volume_files(cluster, img)
    job = run_sparsify(cluster.b, {"sd_id": cluster.sd1, "img_id": img, "vol_id": vol})
    assert job["status"] == "failed" and job["error"]["code"] == 2009, job
    assert volume_files(cluster, img) == files


def qcow2_compat(path):
    out = subprocess.run(["qemu-img", "info", "--output=json", "-f", "qcow2", path], capture_output=True,
                         check=True).stdout
    return json.loads(out)["format-specific"]["data"]["compat"]


def run_amend(agent, vol_info, compat="1.1"):
    job_id = new_uuid()
    with agent.client() as c:
        assert c.call("SDM.amend_volume", {"job_id": job_id, "vol_info": vol_info,
                                           "qcow2_attr": {"compat": compat}}) is True
        return wait_job(c, job_id)


def test_amend_compat_keeps_data(cluster, img, tmp_path):
    base, top = make_chain(cluster, img, 2)
    pt = cluster.path(cluster.sd1, img, top)
    qemu_io_write(cluster.path(cluster.sd1, img, base), "qcow2", "0x11", 0, 4 * MiB)
    qemu_io_write(pt, "qcow2", "0x22", 2 * MiB, 4 * MiB)
    # A volume from an older system: compat 0.10.
    subprocess.run(["qemu-img", "amend", "-f", "qcow2", "-o", "compat=0.10", pt], check=True)
    assert qcow2_compat(pt) == "0.10"
    before = guest_view(pt, tmp_path, "ref")
    gen = cluster.volume_info(cluster.sd1, img, top)["generation"]
    job = run_amend(cluster.b, {"sd_id": cluster.sd1, "img_id": img, "vol_id": top, "generation": gen})
    assert job["status"] == "done", job
    assert qcow2_compat(pt) == "1.1"
    assert guest_view(pt, tmp_path, "after") == before
    info = cluster.volume_info(cluster.sd1, img, top)
    assert info["legality"] == "LEGAL" and info["generation"] == gen + 1


def measure(cluster, img, vol, fmt, **kw):
    with cluster.b.client() as c:
        return c.call("Volume.measure", {"storagepoolID": cluster.pool, "storagedomainID": cluster.sd1,
                                         "imageID": img, "volumeID": vol, "dstVolFormat": fmt, **kw})


def test_measure_sizes(cluster, img):
    base, top = make_chain(cluster, img, 2, size=256 * MiB)
    qemu_io_write(cluster.path(cluster.sd1, img, base), "qcow2", "0x11", 0, 24 * MiB)
    qemu_io_write(cluster.path(cluster.sd1, img, top), "qcow2", "0x22", 100 * MiB, 8 * MiB)
    chain = measure(cluster, img, top, "COW")
    alone = measure(cluster, img, top, "COW", backing_chain=False)
    sub = measure(cluster, img, top, "COW", baseID=base)
    raw = measure(cluster, img, top, "RAW")
    # A collapsed copy holds both layers' 32 MiB; the top alone its 8 MiB; plus qcow2 metadata (< 1 MiB here).
    assert 32 * MiB <= chain["required"] < 33 * MiB, chain
    assert 8 * MiB <= alone["required"] < 9 * MiB, alone
    assert sub["required"] == chain["required"]          # base is the bottom: the subchain is the chain
    assert raw["required"] == 256 * MiB
    assert chain["fully-allocated"] > 256 * MiB
    with pytest.raises(RpcError) as e:
        measure(cluster, img, base, "COW", baseID=top)
    assert e.value.code == 2009


def test_bad_input_refused_nothing_changed(cluster, img):
    v0, v1, v2 = make_chain(cluster, img, 3, size=16 * MiB)
    other_img = new_uuid()
    other = make_chain(cluster, other_img, 1, size=16 * MiB)[0]
    qemu_io_write(cluster.path(cluster.sd1, img, v1), "qcow2", "0x22", 0, 2 * MiB)
    files = volume_files(cluster, img)
    gen = cluster.volume_info(cluster.sd1, img, v0)["generation"]

    for sc, code in (
            (subchain(cluster, img, v1, v0, gen + 1), 911),           # wrong generation
            (subchain(cluster, img, v2, v0, gen), 921),               # v0 is not the parent of v2
            (subchain(cluster, img, new_uuid(), v0, gen), 920),       # no such top in the image
            (subchain(cluster, img, other, v0, gen), 920),            # top of another image
            (subchain(cluster, img, v0, v1, gen), 921)):              # base and top swapped
        job = run_merge(cluster.b, sc)
        assert job["status"] == "failed" and job["error"]["code"] == code, (sc, job)
        job = spm_step(cluster, "StoragePool.prepareMerge", sc)
        assert job["status"] == "failed" and job["error"]["code"] == code, (sc, job)
    # finalize refuses a merge that never ran (generation) and a wrong subchain.
    for sc, code in ((subchain(cluster, img, v1, v0, gen + 1), 911), (subchain(cluster, img, v2, v0, gen), 921)):
        job = spm_step(cluster, "StoragePool.finalizeMerge", sc)
        assert job["status"] == "failed" and job["error"]["code"] == code, (sc, job)
    vol_info = {"sd_id": cluster.sd1, "img_id": img, "vol_id": v1, "generation": gen + 7}
    assert run_sparsify(cluster.b, vol_info)["error"]["code"] == 911
    assert run_amend(cluster.b, vol_info)["error"]["code"] == 911

    # Refused at the call: paths in ids, bad attributes, a finalize that does not name the merged generation.
    with cluster.b.client() as c:
        for method, params in (
                ("SDM.merge", {"job_id": new_uuid(), "subchain_info": {**subchain(cluster, img, v1, v0), "top_id": "../" + v1}}),
                ("SDM.merge", {"job_id": new_uuid(), "subchain_info": {**subchain(cluster, img, v1, v0), "img_id": "../../etc"}}),
                ("SDM.merge", {"job_id": new_uuid(), "subchain_info": subchain(cluster, img, v1, v1)}),
                ("SDM.merge", {"job_id": new_uuid(), "subchain_info": subchain(cluster, img, v1, v0),
                               "merge_bitmaps": True}),
                ("SDM.sparsify_volume", {"job_id": new_uuid(), "vol_info": {"sd_id": cluster.sd1, "img_id": img,
                                                                            "vol_id": "../x"}}),
                ("SDM.amend_volume", {"job_id": new_uuid(), "vol_info": {"sd_id": cluster.sd1, "img_id": img,
                                                                         "vol_id": v1},
                                      "qcow2_attr": {"compat": "2.0"}}),
                ("Volume.measure", {"storagedomainID": cluster.sd1, "imageID": img, "volumeID": "..",
                                    "dstVolFormat": "COW"})):
            with pytest.raises(RpcError) as e:
                c.call(method, params)
            assert e.value.code == -32602, (method, e.value)
    with cluster.a.client() as c:
        with pytest.raises(RpcError) as e:
            c.call("StoragePool.finalizeMerge", {"storagepoolID": cluster.pool,
                                                 "subchainInfo": subchain(cluster, img, v1, v0)})
        assert e.value.code == -32602
    with cluster.b.client() as c:
        with pytest.raises(RpcError) as e:
            c.call("StoragePool.prepareMerge", {"storagepoolID": cluster.pool,
                                                "subchainInfo": subchain(cluster, img, v1, v0)})
        assert e.value.code == 654

    assert volume_files(cluster, img) == files
    for vol in (v0, v1, v2):
        info = cluster.volume_info(cluster.sd1, img, vol)
        assert info["legality"] == "LEGAL" and info["lease"]["owners"] == []
    assert cluster.volume_info(cluster.sd1, img, v0)["generation"] == gen
