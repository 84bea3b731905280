# SPDX-License-Identifier: GPL-2.0-or-later
"""Metadata safety of the agent against concurrent work on other hosts:
leases around SPM operations, legality of whole source chains, spmStop,
shutdown, and a main thread that never blocks on sanlock."""

import os
import shutil
import signal
import threading
import time

import pytest

from ferrytest import (MiB, RpcError, endpoint, new_uuid, qemu_io_write, run_job, wait_for,
                       wait_job, write_random_extents)

GiB = 1024 * MiB


def slow_copy_into(cluster, dst_sd, img, vol, data=192 * MiB):
    """A copy on B (64 MiB/s) from a fresh raw source into (dst_sd, img, vol); returns its job id once it runs."""
    src_img, src_vol = new_uuid(), new_uuid()
    cluster.create_volume(cluster.sd1, src_img, src_vol, 1 * GiB)
    write_random_extents(cluster.path(cluster.sd1, src_img, src_vol), [(0, data)], seed=21)
    job_id = new_uuid()
    with cluster.b.client() as c:
        c.call("SDM.copy_data", {"job_id": job_id, "source": endpoint(cluster.sd1, src_img, src_vol),
                                 "destination": endpoint(dst_sd, img, vol)})
        wait_for(lambda: c.call("Host.getJobs", {"job_ids": [job_id]})[job_id]["progress"] > 0,
                 30, "the copy to make progress")
    return job_id


def abort(cluster, job_id):
    with cluster.b.client() as c:
        try:
            c.call("Job.abort", {"job_id": job_id})
        except RpcError:
            pass
        return wait_job(c, job_id)


def spm_params(cluster, sd, img, vol=None, **extra):
    p = {"storagepoolID": cluster.pool, "storagedomainID": sd, "imageID": img}
    if vol:
        p["volumeID"] = vol
    p.update(extra)
    return p


def test_create_child_never_rewrites_a_leased_parent(cluster, img):
    """Volume.create rewrites its parent's VOLTYPE: only under the parent's lease."""
    parent = new_uuid()
    cluster.create_volume(cluster.sd2, img, parent, 1 * GiB)
    gen = cluster.volume_info(cluster.sd2, img, parent)["generation"]
    job_id = slow_copy_into(cluster, cluster.sd2, img, parent)
    try:
        child = new_uuid()
        with cluster.a.client() as c:
            job = run_job(c, "Volume.create", spm_params(
                cluster, cluster.sd2, img, child, size=str(1 * GiB), volFormat="COW", preallocate="SPARSE",
                diskType="DATA", desc="t", srcImgUUID=img, srcVolUUID=parent))
        assert job["status"] == "failed" and job["error"]["code"] == 651, job
        assert not os.path.exists(cluster.path(cluster.sd2, img, child) + ".meta")
    finally:
        fin = abort(cluster, job_id)
    assert fin["status"] == "aborted", fin
    info = cluster.volume_info(cluster.sd2, img, parent)
    assert info["legality"] == "ILLEGAL" and info["generation"] == gen and info["voltype"] == "LEAF"


def test_delete_child_never_rewrites_a_leased_parent(cluster, img):
    parent, child = new_uuid(), new_uuid()
    cluster.create_volume(cluster.sd2, img, parent, 1 * GiB)
    cluster.create_volume(cluster.sd2, img, child, 1 * GiB, fmt="COW", parent=parent)
    job_id = slow_copy_into(cluster, cluster.sd2, img, parent)
    try:
        with cluster.a.client() as c:
            job = run_job(c, "Volume.delete", spm_params(cluster, cluster.sd2, img, child))
        assert job["status"] == "failed" and job["error"]["code"] == 651, job
        # Nothing was touched: the child is still there and usable.
        assert cluster.volume_info(cluster.sd2, img, child)["legality"] == "LEGAL"
    finally:
        abort(cluster, job_id)
    assert cluster.volume_info(cluster.sd2, img, parent)["voltype"] == "INTERNAL"


def test_copy_refuses_source_chain_with_illegal_ancestor(cluster, img):
    base, top, dst = new_uuid(), new_uuid(), new_uuid()
    cluster.create_volume(cluster.sd1, img, base, 16 * MiB, fmt="COW")
    qemu_io_write(cluster.path(cluster.sd1, img, base), "qcow2", "0xaa", 0, 8 * MiB)
    cluster.create_volume(cluster.sd1, img, top, 16 * MiB, fmt="COW", parent=base)
    # The base is fenced, as a failed or running copy into it leaves it.
    with cluster.b.client() as c:
        j = new_uuid()
        c.call("SDM.update_volume", {"job_id": j, "vol_info": {"sd_id": cluster.sd1, "img_id": img, "vol_id": base},
                                     "vol_attr": {"legality": "ILLEGAL"}})
        assert wait_job(c, j)["status"] == "done"
    dimg = new_uuid()
    cluster.create_volume(cluster.sd2, dimg, dst, 16 * MiB, fmt="COW")
    before = cluster.volume_info(cluster.sd2, dimg, dst)
    with cluster.b.client() as c:
        j = new_uuid()
        c.call("SDM.copy_data", {"job_id": j, "source": endpoint(cluster.sd1, img, top),
                                 "destination": endpoint(cluster.sd2, dimg, dst)})
        job = wait_job(c, j)
    assert job["status"] == "failed" and job["error"]["code"] == 261, job
    assert base in job["error"]["message"]
    after = cluster.volume_info(cluster.sd2, dimg, dst)
    assert after["legality"] == before["legality"] == "LEGAL"
    assert after["generation"] == before["generation"]


def test_copy_refuses_destination_inside_source_chain(cluster, img):
    base, top = new_uuid(), new_uuid()
    cluster.create_volume(cluster.sd1, img, base, 16 * MiB, fmt="COW")
    cluster.create_volume(cluster.sd1, img, top, 16 * MiB, fmt="COW", parent=base)
    with cluster.b.client() as c:
        j = new_uuid()
        c.call("SDM.copy_data", {"job_id": j, "source": endpoint(cluster.sd1, img, top),
                                 "destination": endpoint(cluster.sd1, img, base)})
        job = wait_job(c, j)
    assert job["status"] == "failed" and job["error"]["code"] == -32602, job
    assert cluster.volume_info(cluster.sd1, img, base)["legality"] == "LEGAL"


def test_delete_of_leased_volume_refused(cluster, img):
    vol, other = new_uuid(), new_uuid()
    cluster.create_volume(cluster.sd2, img, vol, 1 * GiB)
    cluster.create_volume(cluster.sd2, img, other, 16 * MiB)
    job_id = slow_copy_into(cluster, cluster.sd2, img, vol)
    try:
        with cluster.a.client() as c:
            job = run_job(c, "Volume.delete", spm_params(cluster, cluster.sd2, img, vol))
            assert job["status"] == "failed" and job["error"]["code"] == 211, job
            job = run_job(c, "Image.delete", spm_params(cluster, cluster.sd2, img))
            assert job["status"] == "failed" and job["error"]["code"] == 211, job
        # Image.delete touched no volume: the free one is still LEGAL.
        assert cluster.volume_info(cluster.sd2, img, other)["legality"] == "LEGAL"
        assert os.path.exists(cluster.path(cluster.sd2, img, vol))
    finally:
        abort(cluster, job_id)


def test_delete_fails_closed_when_the_lease_cannot_be_read(cluster, img):
    vol, other = new_uuid(), new_uuid()
    cluster.create_volume(cluster.sd1, img, vol, 16 * MiB)
    cluster.create_volume(cluster.sd1, img, other, 16 * MiB)
    # The lease area holds another resource: nobody can tell who owns it.
    shutil.copyfile(cluster.path(cluster.sd1, img, other) + ".lease", cluster.path(cluster.sd1, img, vol) + ".lease")
    with cluster.a.client() as c:
        job = run_job(c, "Volume.delete", spm_params(cluster, cluster.sd1, img, vol))
    assert job["status"] == "failed" and job["error"]["code"] == 651, job
    assert cluster.volume_info(cluster.sd1, img, vol)["legality"] == "LEGAL"


def test_delete_of_half_created_volume(cluster, img):
    """A lease area never formatted (creation interrupted) does not block the delete."""
    vol = new_uuid()
    cluster.create_volume(cluster.sd1, img, vol, 16 * MiB)
    lease = cluster.path(cluster.sd1, img, vol) + ".lease"
    with open(lease, "r+b") as f:
        f.write(b"\0" * MiB)
    with cluster.a.client() as c:
        job = run_job(c, "Volume.delete", spm_params(cluster, cluster.sd1, img, vol))
    assert job["status"] == "done", job
    assert not os.path.exists(cluster.path(cluster.sd1, img))


def test_spm_stop_right_after_an_spm_job(cluster, img):
    cluster.create_volume(cluster.sd1, img, new_uuid(), 1 * MiB)
    with cluster.a.client() as c:
        try:
            assert c.call("StoragePool.spmStop", {"storagepoolID": cluster.pool}) is True
            assert c.call("StoragePool.getSpmStatus", {"storagepoolID": cluster.pool})["spmStatus"] != "SPM"
        finally:
            assert c.call("StoragePool.spmStart", {"storagepoolID": cluster.pool})["spmStatus"] == "SPM"


def test_volume_info_does_not_block_the_agent(cluster, img):
    """Volume.getInfo reads lease owners through sanlock; a stuck sanlock must not stall other calls."""
    vol = new_uuid()
    cluster.create_volume(cluster.sd1, img, vol, 1 * MiB)
    sanlock = cluster.sanlocks[1]
    result = {}

    def get_info():
        try:
            result["info"] = cluster.volume_info(cluster.sd1, img, vol, agent=cluster.b)
        except Exception as e:  # noqa: BLE001 - checked below
            result["error"] = e

    os.kill(sanlock.proc.pid, signal.SIGSTOP)
    try:
        t = threading.Thread(target=get_info)
        t.start()
        time.sleep(0.3)      # the call reaches sanlock; nothing to observe from outside
        with cluster.b.client(timeout=1) as c:
            assert c.call("Host.ping2", {}, timeout=1) is True
    finally:
        os.kill(sanlock.proc.pid, signal.SIGCONT)
    t.join(30)
    assert result.get("info", {}).get("legality") == "LEGAL", result


def job_log(agent, job_id):
    """The lines the agent logged for the job since it started."""
    return [line for line in agent.log_this_life().splitlines() if f"job_id={job_id}" in line]


def b_state(agent, lines=25):
    """Whether the agent still runs (its exit code if not) and the end of its log since it started."""
    tail = "\n".join(agent.log_this_life().splitlines()[-lines:])
    return f"agent {agent.name} exit code {agent.proc.poll()} (None: running); its log since it started ends:\n{tail}"


def test_no_new_jobs_while_shutting_down(cluster, img):
    vol = new_uuid()
    cluster.create_volume(cluster.sd1, img, vol, 1 * MiB)
    vol_info = {"sd_id": cluster.sd1, "img_id": img, "vol_id": vol}
    sanlock = cluster.sanlocks[1]
    try:
        with cluster.b.client() as c:
            # A job stuck in sanlock keeps B's shutdown waiting, with its connections still served.
            # B runs one job at a time: an earlier test's job still ending would leave this one
            # pending, and a shutdown drops pending jobs at once (then closes the connections).
            wait_for(lambda: c.call("Host.getStats", {})["jobs_running"] == 0, 30, "B to have no running job")
            os.kill(sanlock.proc.pid, signal.SIGSTOP)
            try:
                first = new_uuid()
                c.call("SDM.update_volume", {"job_id": first, "vol_info": vol_info,
                                             "vol_attr": {"description": "first"}})
                # "running" is set when its thread is made, not when it has run: a job cancelled
                # before its thread reaches sanlock ends at once (aborted), B's shutdown has nothing
                # to wait for and closes the connection. Past this line it is in the uncancellable
                # sanlock call.
                wait_for(lambda: any(f"acquiring lease {vol} " in line for line in job_log(cluster.b, first)),
                         10, "the first job to block in sanlock")
                cluster.b.proc.send_signal(signal.SIGTERM)
                # This life's line only: B's log file keeps the shutdowns of its earlier lives.
                wait_for(lambda: "signal received, shutting down" in cluster.b.log_this_life(), 5,
                         "B to start shutting down")
                try:
                    c.call("SDM.update_volume", {"job_id": new_uuid(), "vol_info": vol_info,
                                                 "vol_attr": {"description": "second"}})
                except RpcError as e:
                    assert "shutting down" in str(e), e
                except Exception as e:  # noqa: BLE001 - a dropped connection or a dead B: say which
                    pytest.fail(f"the refusal did not arrive: {e!r}; {b_state(cluster.b)}")
                else:
                    pytest.fail(f"B accepted a job while shutting down; {b_state(cluster.b)}")
            finally:
                os.kill(sanlock.proc.pid, signal.SIGCONT)
        assert cluster.b.proc.wait(15) == 0, b_state(cluster.b)
    finally:
        cluster.b.stop()
        cluster.b.start()
        cluster.connect(cluster.b)


def test_connection_without_connect_is_closed(cluster):
    """A plain-TCP peer that never sends CONNECT loses its connection slot after
    connect_timeout (agent B runs with 4 s; the default is 30 s)."""
    import socket
    with socket.create_connection(("127.0.0.1", cluster.b.port), timeout=20) as s:
        start = time.monotonic()
        assert s.recv(1) == b""          # EOF: the agent closed it
        assert 3 < time.monotonic() - start < 12
