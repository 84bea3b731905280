# SPDX-License-Identifier: GPL-2.0-or-later
"""Image transfers (upload/download) on a real 3-host cluster: the engine adds
tickets on a host it picks, the CLI moves the bytes over the host's HTTP
endpoint, the agent verifies an upload before the volume becomes LEGAL."""

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from conftest import make_workdir
from enginetest import EngineCluster, HttpError
from ferrytest import BUILD, MiB, new_uuid, qemu_img_compare, qemu_io_write, wait_for, write_random_extents

FERRY = os.path.join(BUILD, "src", "cli", "ferry")


@pytest.fixture(scope="module")
def ec():
    d = make_workdir()
    c = EngineCluster(d)
    yield c
    codes = c.stop()
    if not os.environ.get("FERRY_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)
    assert all(code == 0 for code in codes.values()), codes


@pytest.fixture
def scratch(ec):
    return tempfile.mkdtemp(prefix="scratch-", dir=ec.workdir)


def ferry(ec, *args, check=True):
    env = dict(os.environ, FERRY_ENGINE_URL=ec.engine.url)
    r = subprocess.run([FERRY, *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def http(method, url, data=None, headers=None):
    """(status, body) of one request to a host's transfer endpoint, errors included."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def data_extents(path):
    """[(start, end)] of the file's data, from SEEK_DATA/SEEK_HOLE."""
    out, pos = [], 0
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            out.append((data, hole))
            pos = hole
    finally:
        os.close(fd)
    return out


def allocated(path):
    return os.stat(path).st_blocks * 512


def disk_by_name(ec, name):
    disks = [d for d in ec.engine.get("/api/disks")["disks"] if d["name"] == name]
    assert len(disks) == 1, disks
    return ec.engine.get(f"/api/disks/{disks[0]['id']}")


def vol_path(ec, disk):
    return os.path.join(ec.storage, disk["storage_domains"][0]["id"], "images", disk["id"], disk["volumes"][0]["id"])


def create_disk(ec, name, size, fmt="raw", volumes=1):
    r = ec.engine.post("/api/disks", {"name": name, "provisioned_size": size, "format": fmt, "volumes": volumes,
                                      "storage_domain": {"id": ec.sds[0]["id"]}})
    assert ec.engine.wait_job(r["job"]["id"], 60)["status"] == "finished"
    return ec.engine.get(f"/api/disks/{r['disk']['id']}")


def start_transfer(ec, disk, direction, **extra):
    status, t = ec.engine.request("POST", "/api/imagetransfers",
                                  dict(extra, disk={"id": disk["id"]}, direction=direction))
    assert status == 201 and t["phase"] == "transferring", t
    return t


def wait_transfer(ec, t, phases=("finished_success", "finished_failure", "cancelled"), timeout=60):
    return wait_for(lambda: (lambda x: x if x["phase"] in phases else None)(
        ec.engine.get(f"/api/imagetransfers/{t['id']}")), timeout, f"transfer {t['id']} to end", interval=0.1)


def last_transfer(ec, disk_id):
    ts = [t for t in ec.engine.get("/api/imagetransfers")["imagetransfers"] if t["disk"]["id"] == disk_id]
    return ts[0]


def test_qcow2_upload_download_and_move(ec, scratch):
    src = os.path.join(scratch, "src.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", src, str(96 * MiB)], check=True)
    qemu_io_write(src, "qcow2", "0x5a", 0, 8 * MiB)
    qemu_io_write(src, "qcow2", "0xa5", 50 * MiB, 5 * MiB)
    qemu_io_write(src, "qcow2", "0x11", 95 * MiB, MiB)

    r = ferry(ec, "disk", "upload", src, "--sd", "sd1", "--name", "up-qcow2")
    assert "verified" in r.stdout
    disk = disk_by_name(ec, "up-qcow2")
    assert disk["status"] == "ok" and disk["format"] == "cow" and disk["provisioned_size"] == 96 * MiB
    assert disk["volumes"][0]["legality"] == "LEGAL" and disk["volumes"][0]["generation"] == 1
    t = last_transfer(ec, disk["id"])
    assert t["phase"] == "finished_success" and t["direction"] == "upload"
    assert t["host"]["name"] != ec.spm_name(), "the SPM served a transfer while other hosts could"
    # The volume file is the uploaded file, byte for byte.
    assert open(vol_path(ec, disk), "rb").read() == open(src, "rb").read()

    out = os.path.join(scratch, "down.qcow2")
    ferry(ec, "disk", "download", "up-qcow2", out)
    assert subprocess.run(["cmp", src, out]).returncode == 0
    assert allocated(out) <= allocated(src) + MiB
    assert ec.engine.get(f"/api/disks/{disk['id']}")["status"] == "ok"

    # Usable: the existing move copies it to the other domain, the guest data unchanged.
    move = ec.engine.post(f"/api/disks/{disk['id']}/move", {"storage_domain": {"id": ec.sds[1]["id"]}})
    assert ec.engine.wait_job(move["job"]["id"], 120)["status"] == "finished"
    moved = ec.engine.get(f"/api/disks/{disk['id']}")
    assert moved["storage_domains"][0]["id"] == ec.sds[1]["id"]
    cmp = qemu_img_compare(src, vol_path(ec, moved))
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr


def test_raw_upload_download_keeps_holes(ec, scratch):
    src = os.path.join(scratch, "src.raw")
    with open(src, "wb") as f:
        f.truncate(64 * MiB)
    write_random_extents(src, [(0, MiB), (10 * MiB, 3 * MiB), (63 * MiB, MiB)], seed=7)

    ferry(ec, "disk", "upload", src, "--sd", "sd1", "--name", "up-raw")
    disk = disk_by_name(ec, "up-raw")
    assert disk["status"] == "ok" and disk["format"] == "raw" and disk["provisioned_size"] == 64 * MiB
    vol = vol_path(ec, disk)
    assert open(vol, "rb").read() == open(src, "rb").read()
    assert data_extents(vol) == data_extents(src)

    out = os.path.join(scratch, "down.raw")
    r = ferry(ec, "disk", "download", disk["id"], out)
    assert "downloaded" in r.stdout
    assert subprocess.run(["cmp", src, out]).returncode == 0
    assert data_extents(out) == data_extents(src)
    assert allocated(out) <= allocated(src) + MiB


def test_tickets_refuse_forged_removed_and_out_of_range(ec, scratch):
    disk = create_disk(ec, "tickets", 8 * MiB)
    vol = vol_path(ec, disk)
    t = start_transfer(ec, disk, "upload")
    url = t["transfer_url"]
    assert ec.engine.get(f"/api/disks/{disk['id']}")["status"] == "locked"
    assert ec.engine.get(f"/api/disks/{disk['id']}")["volumes"][0]["legality"] == "ILLEGAL"

    forged = url.rsplit("/", 1)[0] + "/" + new_uuid()
    assert http("GET", forged)[0] == 403
    assert http("PUT", forged, b"x" * 512)[0] == 403
    assert http("GET", url.rsplit("/", 1)[0] + "/../../etc/passwd")[0] in (403, 404)

    assert http("PUT", url, b"\1" * 4096, {"Content-Range": "bytes 0-4095/*"})[0] == 200
    status, body = http("PUT", url, b"\2" * 1024, {"Content-Range": f"bytes {8 * MiB - 512}-{8 * MiB + 511}/*"})
    assert status == 416, body
    status, body = http("PATCH", url, json.dumps({"op": "zero", "offset": 8 * MiB, "size": 1}).encode(),
                        {"Content-Type": "application/json"})
    assert status == 416, body
    assert os.path.getsize(vol) == 8 * MiB, "a refused write extended the volume"
    status, body = http("PUT", url, b"\0" * (9 * MiB))
    assert status == 413, body
    status, body = http("GET", url, headers={"Range": "bytes=0-4095"})
    assert status == 206 and body == b"\1" * 4096

    # A second transfer of a locked disk is refused; cancelling removes the ticket.
    with pytest.raises(HttpError) as e:
        ec.engine.request("POST", "/api/imagetransfers", {"disk": {"id": disk["id"]}, "direction": "download"})
    assert e.value.status == 409
    ec.engine.request("POST", f"/api/imagetransfers/{t['id']}/cancel", {})
    assert wait_transfer(ec, t)["phase"] == "cancelled"
    assert http("GET", url)[0] == 403
    after = ec.engine.get(f"/api/disks/{disk['id']}")
    assert after["status"] == "illegal" and after["volumes"][0]["legality"] == "ILLEGAL"

    # A read ticket refuses writes.
    other = create_disk(ec, "readonly", 4 * MiB)
    d = start_transfer(ec, other, "download")
    assert http("PUT", d["transfer_url"], b"x" * 512)[0] == 403
    status, body = http("GET", d["transfer_url"] + "/extents")
    assert status == 200 and json.loads(body) == [{"start": 0, "length": 4 * MiB, "zero": True, "hole": True}]
    ec.engine.request("POST", f"/api/imagetransfers/{d['id']}/finalize", {})
    assert wait_transfer(ec, d)["phase"] == "finished_success"
    assert http("GET", d["transfer_url"])[0] == 403
    assert ec.engine.get(f"/api/disks/{other['id']}")["status"] == "ok"


def test_idle_transfer_expires_and_is_cancelled(ec):
    disk = create_disk(ec, "idle", 4 * MiB)
    t = start_transfer(ec, disk, "download", inactivity_timeout=10)
    assert http("GET", t["transfer_url"], headers={"Range": "bytes=0-511"})[0] == 206
    ended = wait_transfer(ec, t, timeout=40)
    assert ended["phase"] == "finished_failure" and ended["error"], ended
    assert http("GET", t["transfer_url"])[0] == 403
    assert ec.engine.get(f"/api/disks/{disk['id']}")["status"] == "ok"


def test_transfer_request_errors(ec, scratch):
    def post(body):
        with pytest.raises(HttpError) as e:
            ec.engine.request("POST", "/api/imagetransfers", body)
        return e.value.status, e.value.body["fault"]["detail"]

    assert post({"disk": {"id": new_uuid()}, "direction": "upload"})[0] == 404
    disk = create_disk(ec, "errs", 4 * MiB)
    assert post({"disk": {"id": disk["id"]}, "direction": "sideways"})[0] == 400
    chain = create_disk(ec, "errs-chain", 4 * MiB, fmt="cow", volumes=2)
    status, detail = post({"disk": {"id": chain["id"]}, "direction": "download"})
    assert status == 409 and "single-volume" in detail

    # The CLI refuses a qcow2 with a backing file before anything is created.
    base = os.path.join(scratch, "base.qcow2")
    top = os.path.join(scratch, "top.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base, str(4 * MiB)], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top], check=True)
    r = ferry(ec, "disk", "upload", top, "--sd", "sd1", "--name", "with-backing", check=False)
    assert r.returncode == 1 and "backing file" in r.stderr, r.stderr
    assert not [d for d in ec.engine.get("/api/disks")["disks"] if d["name"] == "with-backing"]

    # An image larger than the disk: a clear error, the disk untouched and not locked.
    big = os.path.join(scratch, "big.raw")
    with open(big, "wb") as f:
        f.truncate(8 * MiB)
    r = ferry(ec, "disk", "upload", big, "--disk", "errs", check=False)
    assert r.returncode == 1 and "larger than disk" in r.stderr, r.stderr
    after = ec.engine.get(f"/api/disks/{disk['id']}")
    assert after["status"] == "ok" and after["volumes"][0]["legality"] == "LEGAL"


def test_corrupt_qcow2_fails_finalize(ec, scratch):
    disk = create_disk(ec, "corrupt", 16 * MiB, fmt="cow")
    t = start_transfer(ec, disk, "upload", size=2 * MiB)
    junk = os.urandom(2 * MiB)
    assert http("PUT", t["transfer_url"], junk, {"Content-Range": f"bytes 0-{2 * MiB - 1}/*"})[0] == 200
    status, _ = ec.engine.request("POST", f"/api/imagetransfers/{t['id']}/finalize", {})
    assert status == 202
    ended = wait_transfer(ec, t)
    assert ended["phase"] == "finished_failure" and "qcow2" in ended["error"], ended
    after = ec.engine.get(f"/api/disks/{disk['id']}")
    assert after["status"] == "illegal" and after["volumes"][0]["legality"] == "ILLEGAL"
    assert http("GET", t["transfer_url"])[0] == 403
    # Not usable: a move of an illegal disk is refused.
    with pytest.raises(HttpError) as e:
        ec.engine.post(f"/api/disks/{disk['id']}/move", {"storage_domain": {"id": ec.sds[1]["id"]}})
    assert e.value.status == 409
    # It can be uploaded again, with a good image this time.
    good = os.path.join(scratch, "good.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", good, str(16 * MiB)], check=True)
    qemu_io_write(good, "qcow2", "0x42", MiB, MiB)
    ferry(ec, "disk", "upload", good, "--disk", disk["id"])
    after = ec.engine.get(f"/api/disks/{disk['id']}")
    assert after["status"] == "ok" and after["volumes"][0]["legality"] == "LEGAL"
    assert qemu_img_compare(good, vol_path(ec, after)).returncode == 0


def test_transfer_survives_engine_restart(ec, scratch):
    disk = create_disk(ec, "restart", 8 * MiB)
    t = start_transfer(ec, disk, "upload")
    first, second = os.urandom(MiB), os.urandom(MiB)
    assert http("PUT", t["transfer_url"], first, {"Content-Range": f"bytes 0-{MiB - 1}/*"})[0] == 200
    ec.engine.restart()
    wait_for(lambda: all(h["status"] == "up" for h in ec.engine.get("/api/hosts")["hosts"]), 30, "hosts up")
    again = ec.engine.get(f"/api/imagetransfers/{t['id']}")
    assert again["phase"] == "transferring" and again["transfer_url"] == t["transfer_url"]
    assert http("PUT", t["transfer_url"], second, {"Content-Range": f"bytes {4 * MiB}-{5 * MiB - 1}/*"})[0] == 200
    ec.engine.request("POST", f"/api/imagetransfers/{t['id']}/finalize", {})
    assert wait_transfer(ec, t)["phase"] == "finished_success"
    after = ec.engine.get(f"/api/disks/{disk['id']}")
    assert after["status"] == "ok" and after["volumes"][0]["legality"] == "LEGAL"
    with open(vol_path(ec, after), "rb") as f:
        data = f.read()
    assert data[:MiB] == first and data[4 * MiB:5 * MiB] == second and data[MiB:4 * MiB] == bytes(3 * MiB)
