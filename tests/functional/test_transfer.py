# SPDX-License-Identifier: GPL-2.0-or-later
"""Image transfers (upload/download) on a real 3-host cluster: the engine adds
tickets on a host it picks, the CLI moves the bytes over the host's HTTPS
endpoint (certificates from `ferry pki`), the agent verifies an upload before
the volume becomes LEGAL."""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException, HTTPSConnection

import pytest

from conftest import make_workdir
from enginetest import EngineCluster, HttpError
from invariant import read_meta
from ferrytest import BUILD, MiB, Pki, new_uuid, qemu_img_compare, qemu_io_write, wait_for, write_random_extents

FERRY = os.path.join(BUILD, "src", "cli", "ferry")
# The client side of the hosts' HTTPS: trusts the cluster's CA (set by the ec fixture).
TLS = {"ctx": None}


@pytest.fixture(scope="module")
def ec():
    d = make_workdir()
    c = EngineCluster(d)
    TLS["ctx"] = ssl.create_default_context(cafile=c.engine.ca_file)
    # A pool connect reports before sanlock has joined every lockspace; a move
    # started before that fails to take its destination's lease.
    try:
        c.wait_lockspaces()
    except BaseException:
        c.stop()
        raise
    yield c
    codes = c.stop()
    if not os.environ.get("FERRY_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)
    assert all(code == 0 for code in codes.values()), codes


@pytest.fixture
def scratch(ec):
    return tempfile.mkdtemp(prefix="scratch-", dir=ec.workdir)


def ferry(ec, *args, check=True, ca=True):
    """ca=False: without the cluster's CA (no FERRY_CA_FILE)."""
    env = ec.engine.cli_env()
    if not ca:
        del env["FERRY_CA_FILE"]
    r = subprocess.run([FERRY, *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def http(method, url, data=None, headers=None):
    """(status, body) of one request to a host's transfer endpoint, errors included."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30, context=TLS["ctx"]) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def open_socket(u, rcvbuf=None):
    """A TLS connection to a host's transfer endpoint, for requests written by hand."""
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect((u.hostname, u.port))
    return TLS["ctx"].wrap_socket(s, server_hostname=u.hostname)


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
    # Agents name a ticket by its first 8 characters: the whole uuid is the ticket's secret.
    logs = "".join(a.log_tail(1 << 22) for a in ec.agents)
    assert re.search(r"ticket [0-9a-f]{8} added", logs), "no ticket logged"
    assert not re.search(r"ticket [0-9a-f]{8}-[0-9a-f]{4}-", logs), "a whole ticket uuid in an agent's log"


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
    # A qcow2 whose header is sound but whose refcounts are gone: qemu-img check (bounded, qemuimg.c) refuses it.
    damaged = os.path.join(scratch, "damaged.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", damaged, str(16 * MiB)], check=True)
    qemu_io_write(damaged, "qcow2", "0x42", MiB, MiB)
    with open(damaged, "r+b") as f:
        f.seek(48)
        (rc_table,) = struct.unpack(">Q", f.read(8))
        f.seek(rc_table)
        (rc_block,) = struct.unpack(">Q", f.read(8))
        f.seek(rc_block)
        f.write(bytes(512))
    data = open(damaged, "rb").read()
    t = start_transfer(ec, disk, "upload", size=len(data))
    assert http("PUT", t["transfer_url"], data, {"Content-Range": f"bytes 0-{len(data) - 1}/*"})[0] == 200
    assert ec.engine.request("POST", f"/api/imagetransfers/{t['id']}/finalize", {})[0] == 202
    ended = wait_transfer(ec, t)
    assert ended["phase"] == "finished_failure" and "damaged" in ended["error"], ended
    assert "errors were found" in ended["error"], ended
    assert ec.engine.get(f"/api/disks/{disk['id']}")["volumes"][0]["legality"] == "ILLEGAL"
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
    assert again["phase"] == "transferring"
    # The ticket is shown once, to the client that created the transfer: never in a GET or a listing.
    assert "transfer_url" not in again and t["transfer_url"].rsplit("/", 1)[1] not in json.dumps(again)
    listed = ec.engine.get("/api/imagetransfers")["imagetransfers"]
    assert listed and all("transfer_url" not in x for x in listed)
    assert t["transfer_url"].rsplit("/", 1)[1] not in json.dumps(listed)
    assert http("PUT", t["transfer_url"], second, {"Content-Range": f"bytes {4 * MiB}-{5 * MiB - 1}/*"})[0] == 200
    ec.engine.request("POST", f"/api/imagetransfers/{t['id']}/finalize", {})
    assert wait_transfer(ec, t)["phase"] == "finished_success"
    after = ec.engine.get(f"/api/disks/{disk['id']}")
    assert after["status"] == "ok" and after["volumes"][0]["legality"] == "LEGAL"
    with open(vol_path(ec, after), "rb") as f:
        data = f.read()
    assert data[:MiB] == first and data[4 * MiB:5 * MiB] == second and data[MiB:4 * MiB] == bytes(3 * MiB)


def test_finalize_whose_host_is_lost_across_engine_restart(ec, scratch):
    """The upload's finalize is a leaf on the engine's job runtime: host,
    agent job and generation are recorded before Host.finalize_image_ticket.
    Its host freezes with the call unread, the engine restarts, the host dies
    and comes back without the job: the restarted engine decides from the
    volume (still at the recorded generation, no lease holder), fences it
    (+3) so the lost finalize can never mark it LEGAL, and fails the transfer.
    The disk stays illegal until an upload succeeds."""
    disk = create_disk(ec, "lost-finalize", 4 * MiB)
    t = start_transfer(ec, disk, "upload")
    assert http("PUT", t["transfer_url"], os.urandom(MiB), {"Content-Range": f"bytes 0-{MiB - 1}/*"})[0] == 200
    recorded = ec.engine.get(f"/api/disks/{disk['id']}")["volumes"][0]["generation"]
    agent = ec.agent(t["host"]["name"])
    mark = max([e["id"] for e in ec.engine.get("/api/events")["events"]], default=0)
    os.kill(agent.proc.pid, signal.SIGSTOP)
    try:
        assert ec.engine.request("POST", f"/api/imagetransfers/{t['id']}/finalize", {})[0] == 202
        # Recorded and sent (the event comes between the two): the frozen agent never reads it.
        wait_for(lambda: any(e["id"] > mark and "verifying the upload" in e["message"]
                             for e in ec.engine.get("/api/events")["events"]), 30, "the finalize to be sent")
        ec.engine.restart()
    finally:
        agent.kill()        # SIGKILL reaches a stopped process: the queued finalize dies unread
    agent.start_same_port()
    ended = wait_transfer(ec, t, timeout=120)
    assert ended["phase"] == "finished_failure" and "fenced" in ended["error"], ended
    after = ec.engine.get(f"/api/disks/{disk['id']}")
    assert after["status"] == "illegal" and after["volumes"][0]["legality"] == "ILLEGAL", after
    meta = read_meta(vol_path(ec, after) + ".meta")
    assert meta["LEGALITY"] == "ILLEGAL" and int(meta["GEN"]) == (recorded + 3) % 1000, (recorded, meta)
    ec.wait_ready()
    ec.wait_lockspaces()
    # Usable again: a new upload succeeds (from the fenced generation).
    good = os.path.join(scratch, "good.raw")
    with open(good, "wb") as f:
        f.write(os.urandom(4 * MiB))
    ferry(ec, "disk", "upload", good, "--disk", disk["id"])
    after = ec.engine.get(f"/api/disks/{disk['id']}")
    assert after["status"] == "ok" and after["volumes"][0]["legality"] == "LEGAL", after
    assert open(vol_path(ec, after), "rb").read() == open(good, "rb").read()


# ---- the endpoint's parsers, failures mid-request, concurrency (plain HTTP) ----

def ticket_of(ec, t):
    """(agent client factory, ticket uuid) of a transfer, to ask its host directly."""
    return ec.agent(t["host"]["name"]), t["transfer_url"].rsplit("/", 1)[1]


def ticket_status(ec, t):
    agent, uuid = ticket_of(ec, t)
    with agent.client() as c:
        return c.call("Host.get_image_ticket", {"uuid": uuid})


def raw_request(url, head, body_part, how):
    """Sends a request's head and part of its body on a raw socket, then drops
    the connection: "close" (FIN) or "reset" (RST). Returns nothing: there is
    no answer to wait for."""
    u = urllib.parse.urlsplit(url)
    s = open_socket(u)
    try:
        s.sendall(head.format(path=u.path, host=u.netloc).encode() + body_part)
        if how == "reset":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        s.close()


def repeated_header(url, method, name, values, body=b""):
    """(status, body) of a request that carries header `name` once per value."""
    u = urllib.parse.urlsplit(url)
    conn = HTTPSConnection(u.hostname, u.port, timeout=30, context=TLS["ctx"])
    try:
        conn.putrequest(method, u.path)
        for v in values:
            conn.putheader(name, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_endpoint_refuses_malformed_requests(ec, scratch):
    """Every parser's refusal reaches the client as 400/413/416 with the reason,
    and none of them writes a byte."""
    size = 4 * MiB
    disk = create_disk(ec, "malformed", size)
    vol = vol_path(ec, disk)
    t = start_transfer(ec, disk, "upload")
    url = t["transfer_url"]
    base = b"\x5a" * 4096
    assert http("PUT", url, base, {"Content-Range": "bytes 0-4095/*"})[0] == 200

    def put(body, cr, query=""):
        return http("PUT", url + query, body, {"Content-Range": cr} if cr is not None else {})

    def patch(body):
        return http("PATCH", url, body if isinstance(body, bytes) else json.dumps(body).encode(),
                    {"Content-Type": "application/json"})

    refused = [
        (put(b"x" * 10, "bytes 0-9/5"), 400, b"END is not below the size after /"),
        (put(b"x" * 10, "bytes 0-10/*"), 400, b"names 11 bytes but the body has 10"),
        (put(b"x" * 10, "bytes 0-9"), 400, b"is not \"bytes START-END/*\""),
        (put(b"x" * 10, "bytes -1-8/*"), 400, b"START and END must be numbers"),
        (put(b"x" * 10, "bytes 9223372036854775808-9223372036854775817/*"), 400, b"at most 9223372036854775807"),
        (put(b"x" * 10, "bytes 18446744073709551615-8/*"), 400, b"START and END must be numbers"),
        (put(b"x" * 10, "bytes 0-9/*x"), 400, b"the size after / must be *"),
        (put(b"x" * 10, "bytes 0-9/*", "?flush=maybe"), 400, b"use flush=y or flush=n"),
        (put(b"x" * 10, "bytes " + "0" * 300 + "-9/*"), 400, b"longer than 256 bytes"),
        (put(b"x" * 10, f"bytes {size - 5}-{size + 4}/*"), 416, b"do not fit in the ticket"),
        (put(b"x" * 10, "bytes 9223372036854775798-9223372036854775807/*"), 416, b"do not fit in the ticket"),
        (patch({"op": "zero", "offset": 0, "length": 4096}), 400, b"unknown key \"length\""),
        (patch({"op": "zero", "offset": 0}), 400, b"op zero needs \"size\""),
        (patch({"op": "zero", "offset": -1, "size": 1}), 400, b"\"offset\" must be an integer"),
        (patch({"op": "zero", "offset": 0, "size": 4096.0}), 400, b"\"size\" must be an integer"),
        (patch(b'{"op": "zero", "offset": 9223372036854775808, "size": 1}'), 400, b"too big integer"),
        (patch(b'{"op": "zero", "offset": 0, "size": 1, "size": 2}'), 400, b"duplicate object key"),
        (patch({"op": "trim"}), 400, b"unknown op \"trim\""),
        (patch({"op": "flush", "offset": 0}), 400, b"op flush takes no other key"),
        (patch(b"[]"), 400, b"must be a JSON object"),
        (patch(b"{\"op\": \"flush\"} trailing"), 400, b"end of file expected"),
        (patch(b""), 400, b"the PATCH body is empty"),
        (patch(b" " * 4097), 413, b"exceeds the limit of 4096 bytes"),
        (patch({"op": "zero", "offset": 9223372036854775807, "size": 9223372036854775807}), 416,
         b"do not fit in the ticket"),
    ]
    refused.append((repeated_header(url, "PUT", "Content-Range", ("bytes 0-1/*", "bytes 2-3/*"), b"xy"), 400,
                    b"the size after / must be *"))
    for (status, body), want_status, want_text in refused:
        assert status == want_status and want_text in body, (status, body, want_status, want_text)
    with open(vol, "rb") as f:
        assert f.read(4096) == base and f.read() == bytes(size - 4096), "a refused request changed the volume"
    assert os.path.getsize(vol) == size

    # Accepted forms: Content-Range with the total, flush=n, a zero with flush.
    assert put(b"\1" * 10, f"bytes 100-109/{size}", "?flush=n")[0] == 200
    assert patch({"op": "zero", "offset": 0, "size": 50, "flush": True})[0] == 200
    status, body = http("GET", url, headers={"Range": "bytes=0-127"})
    assert status == 206 and body == bytes(50) + b"\x5a" * 50 + b"\1" * 10 + b"\x5a" * 18
    ec.engine.request("POST", f"/api/imagetransfers/{t['id']}/cancel", {})
    assert wait_transfer(ec, t)["phase"] == "cancelled"


def test_get_ranges_and_past_the_end(ec):
    size = 4 * MiB
    disk = create_disk(ec, "ranges", size)
    t = start_transfer(ec, disk, "download")
    url = t["transfer_url"]

    def get(rng):
        req = urllib.request.Request(url, method="GET", headers={"Range": rng})
        try:
            with urllib.request.urlopen(req, timeout=30, context=TLS["ctx"]) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    for rng in (f"bytes={size}-", f"bytes={size}-{size + 10}", "bytes=9223372036854775807-", "bytes=-0",
                "bytes=0-1,5-9"):
        status, headers, body = get(rng)
        assert status == 416, (rng, status, body)
        assert headers["Content-Range"] == f"bytes */{size}", (rng, headers)
    for rng, why in (("bytes=x-", b"the first byte must be a number"), ("bytes=5-4", b"comes before the first"),
                     ("bytes=0-18446744073709551616", b"at most 9223372036854775807"), ("lines=0-1", None)):
        status, _, body = get(rng)
        assert status == (416 if why is None else 400) and (why is None or why in body), (rng, status, body)
    # A repeated Range header is several ranges, not one of them picked.
    assert repeated_header(url, "GET", "Range", ("bytes=0-1", "bytes=2-3"))[0] == 416
    # The last byte, a suffix, and an end past the image cut to it (RFC 9110).
    status, headers, body = get(f"bytes={size - 1}-")
    assert status == 206 and body == b"\0" and headers["Content-Range"] == f"bytes {size - 1}-{size - 1}/{size}"
    status, headers, body = get("bytes=-10")
    assert status == 206 and len(body) == 10 and headers["Content-Range"] == f"bytes {size - 10}-{size - 1}/{size}"
    status, headers, body = get(f"bytes=0-{2 * size}")
    assert status == 206 and len(body) == size and headers["Content-Range"] == f"bytes 0-{size - 1}/{size}"
    ec.engine.request("POST", f"/api/imagetransfers/{t['id']}/finalize", {})
    assert wait_transfer(ec, t)["phase"] == "finished_success"


@pytest.mark.parametrize("how", ["close", "reset"])
def test_put_dropped_mid_body_leaves_ticket_usable(ec, how):
    """A client that goes away in the middle of a PUT body: nothing of it is
    written, the ticket counts no request in progress, later requests work,
    and finalize (which waits for requests in progress) ends at once and
    releases the lease: a new transfer of the same disk can start."""
    size = 8 * MiB
    disk = create_disk(ec, f"dropped-{how}", size)
    t = start_transfer(ec, disk, "upload")
    url = t["transfer_url"]
    head = ("PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {4 * MiB}\r\nContent-Range: bytes {4 * MiB}-{8 * MiB - 1}/*\r\n\r\n")
    raw_request(url, head, b"\xaa" * MiB, how)
    # The same with only the head sent.
    raw_request(url, head, b"", how)
    wait_for(lambda: ticket_status(ec, t)["connections"] == 0, 10, "no request in progress on the ticket")
    status = ticket_status(ec, t)
    assert status["phase"] == "ready" and status["transferred"] == 0, status

    data = os.urandom(MiB)
    assert http("PUT", url, data, {"Content-Range": f"bytes 0-{MiB - 1}/*"})[0] == 200
    started = time.monotonic()
    ec.engine.request("POST", f"/api/imagetransfers/{t['id']}/finalize", {})
    assert wait_transfer(ec, t, timeout=60)["phase"] == "finished_success"
    assert time.monotonic() - started < 30, "finalize waited for a request that had gone"
    after = ec.engine.get(f"/api/disks/{disk['id']}")
    assert after["status"] == "ok" and after["volumes"][0]["legality"] == "LEGAL"
    with open(vol_path(ec, after), "rb") as f:
        content = f.read()
    assert content[:MiB] == data and content[MiB:] == bytes(size - MiB), "bytes of the dropped PUT landed"

    # Nothing stayed locked: the volume can be transferred again (lease and image lock free).
    d = start_transfer(ec, after, "download")
    status, body = http("GET", d["transfer_url"])
    assert status == 200 and body == content
    ec.engine.request("POST", f"/api/imagetransfers/{d['id']}/finalize", {})
    assert wait_transfer(ec, d)["phase"] == "finished_success"


def test_get_dropped_mid_stream_releases_the_request(ec):
    size = 16 * MiB
    disk = create_disk(ec, "dropped-get", size)
    t = start_transfer(ec, disk, "download")
    u = urllib.parse.urlsplit(t["transfer_url"])
    for how in ("close", "reset"):
        s = open_socket(u)
        s.sendall(f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode())
        got = s.recv(65536)
        assert got.startswith(b"HTTP/1.1 200"), got[:100]
        if how == "reset":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        wait_for(lambda: ticket_status(ec, t)["connections"] == 0, 10, "the dropped GET to end")
    assert http("GET", t["transfer_url"], headers={"Range": "bytes=0-4095"}) == (206, bytes(4096))
    ec.engine.request("POST", f"/api/imagetransfers/{t['id']}/finalize", {})
    assert wait_transfer(ec, t)["phase"] == "finished_success"
    assert ec.engine.get(f"/api/disks/{disk['id']}")["status"] == "ok"


def test_concurrent_puts_to_different_ranges_all_land(ec):
    size, parts = 16 * MiB, 8
    disk = create_disk(ec, "concurrent", size)
    t = start_transfer(ec, disk, "upload")
    url = t["transfer_url"]
    step = size // parts
    chunks = [os.urandom(step) for _ in range(parts)]
    barrier = threading.Barrier(parts)
    results = [None] * parts

    def put(i):
        barrier.wait(10)
        results[i] = http("PUT", url, chunks[i], {"Content-Range": f"bytes {i * step}-{(i + 1) * step - 1}/*"})

    threads = [threading.Thread(target=put, args=(i,)) for i in range(parts)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert [r[0] for r in results] == [200] * parts, results
    assert ticket_status(ec, t)["transferred"] == size
    status, body = http("GET", url)
    assert status == 200 and body == b"".join(chunks)
    ec.engine.request("POST", f"/api/imagetransfers/{t['id']}/finalize", {})
    assert wait_transfer(ec, t)["phase"] == "finished_success"
    with open(vol_path(ec, disk), "rb") as f:
        assert f.read() == b"".join(chunks)


# ---- bodies refused before they are read, downloads that stop reading, limits ----

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def refused_before_body(url, method, path, headers, body_len):
    """Sends a request head announcing a body, reads the answer *before*
    sending any of it, then pushes up to body_len bytes until the agent stops
    taking them. Returns (status, head text, bytes the agent took)."""
    u = urllib.parse.urlsplit(url)
    s = open_socket(u)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: {u.netloc}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        s.sendall(head.encode() + b"\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(4096)     # times out (test fails) if the agent waits for the body
            assert chunk, "the agent closed without an answer"
            answer += chunk
        text = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        sent, piece = 0, b"\0" * MiB
        s.settimeout(2)
        try:
            while sent < body_len:
                sent += s.send(piece)
        except OSError:
            pass
        return int(text.split()[1]), text, sent
    finally:
        s.close()


def test_bodies_refused_before_they_are_read(ec):
    """Only a PUT/PATCH within the limit on a write ticket may send a body;
    everything else that announces one is answered before it is read, with
    Connection: close, whatever the method and path, and the agent's memory
    stays flat however much the client pushes."""
    disk = create_disk(ec, "bodies", 8 * MiB)
    t = start_transfer(ec, disk, "upload")
    url = t["transfer_url"]
    ticket = urllib.parse.urlsplit(url).path
    agent = ec.agent(t["host"]["name"])
    big = 256 * MiB
    cl = {"Content-Length": str(big)}
    chunked = {"Transfer-Encoding": "chunked"}
    cases = [
        ("POST", ticket, cl, 413), ("POST", "/images/whatever", cl, 413), ("POST", "/", cl, 413),
        ("PUT", "/foo", cl, 413), ("PUT", "/foo", {"Content-Length": "512"}, 404),
        ("PUT", "/images/" + new_uuid(), {"Content-Length": "512"}, 403),
        ("PUT", ticket + "/extents", {"Content-Length": "512"}, 405),
        ("GET", ticket, cl, 413), ("GET", "/images/" + new_uuid(), cl, 413), ("OPTIONS", ticket, cl, 413),
        ("DELETE", ticket, cl, 413), ("PATCH", ticket, cl, 413), ("PUT", ticket, cl, 413),
        ("POST", ticket, chunked, 411), ("PUT", ticket, chunked, 411), ("GET", "/x", chunked, 411),
    ]
    before = rss_kib(agent.proc.pid)
    for method, path, headers, want in cases:
        status, head, sent = refused_before_body(url, method, path, headers, big)
        assert status == want, (method, path, headers, head)
        assert "connection: close" in head.lower(), (method, path, head)
        assert sent < 64 * MiB, (method, path, f"the agent took {sent >> 20} MiB of a refused body")
    grown = rss_kib(agent.proc.pid) - before
    assert grown < 64 * 1024, f"the agent grew by {grown >> 10} MiB while refusing bodies"

    # What is allowed still works, and a body-less GET/OPTIONS is answered as before.
    assert http("PUT", url, b"\7" * 4096, {"Content-Range": "bytes 0-4095/*"})[0] == 200
    assert http("GET", url, headers={"Range": "bytes=0-4095"}) == (206, b"\7" * 4096)
    assert http("OPTIONS", url)[0] == 200
    ec.engine.request("POST", f"/api/imagetransfers/{t['id']}/cancel", {})
    assert wait_transfer(ec, t)["phase"] == "cancelled"


def stalled_get(url, rng=None):
    """A GET whose client never reads: a small receive buffer, nothing read."""
    u = urllib.parse.urlsplit(url)
    s = open_socket(u, rcvbuf=4096)
    s.sendall(f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n".encode() +
              (f"Range: {rng}\r\n".encode() if rng else b"") + b"\r\n")
    return s


def test_download_that_stops_reading_does_not_pin_the_ticket(ec):
    """A GET whose client stops reading must not keep the ticket, its lease
    and locks: cancelling ends the transfer at once, the agent drops the
    ticket and the lease, and the disk can be transferred again."""
    size = 64 * MiB
    disk = create_disk(ec, "stalled-get", size)
    t = start_transfer(ec, disk, "upload")
    url = t["transfer_url"]
    assert http("PUT", url, os.urandom(MiB), {"Content-Range": f"bytes 0-{MiB - 1}/*"})[0] == 200
    s = stalled_get(url)
    try:
        wait_for(lambda: ticket_status(ec, t)["connections"] >= 1, 10, "the GET to start")
        started = time.monotonic()
        ec.engine.request("POST", f"/api/imagetransfers/{t['id']}/cancel", {})
        assert wait_transfer(ec, t, timeout=30)["phase"] == "cancelled"
        assert time.monotonic() - started < 15, "the cancel waited for the stalled download"
        agent, uuid = ticket_of(ec, t)
        with agent.client() as c:
            with pytest.raises(Exception) as e:
                c.call("Host.get_image_ticket", {"uuid": uuid})
            assert "482" in str(e.value) or "no ticket" in str(e.value), e.value
            info = c.call("Volume.getInfo", {"storagedomainID": disk["storage_domains"][0]["id"],
                                             "imageID": disk["id"], "volumeID": disk["volumes"][0]["id"]})
        assert info["lease"]["owners"] == [], info["lease"]
        after = ec.engine.get(f"/api/disks/{disk['id']}")
        assert after["status"] == "illegal"
    finally:
        s.close()
    # Lease and image lock are free: a new upload takes them and completes.
    t2 = start_transfer(ec, after, "upload")
    data = os.urandom(MiB)
    assert http("PUT", t2["transfer_url"], data, {"Content-Range": f"bytes 0-{MiB - 1}/*"})[0] == 200
    ec.engine.request("POST", f"/api/imagetransfers/{t2['id']}/finalize", {})
    assert wait_transfer(ec, t2)["phase"] == "finished_success"
    with open(vol_path(ec, after), "rb") as f:
        assert f.read(MiB) == data


def test_stalled_downloads_are_cut_and_readers_are_limited(ec):
    """Per ticket at most max_readers GETs at once (503 + Retry-After beyond),
    and a GET whose client reads nothing is cut after a few seconds, so
    neither holds the ticket: afterwards the ticket serves again."""
    size = 64 * MiB
    disk = create_disk(ec, "readers", size)
    t = start_transfer(ec, disk, "download")
    url = t["transfer_url"]
    status, body = http("OPTIONS", url)
    limit = json.loads(body)["max_readers"]
    socks = []
    try:
        for _ in range(limit):
            socks.append(stalled_get(url))
        wait_for(lambda: ticket_status(ec, t)["connections"] == limit, 10, "every GET to start")
        req = urllib.request.Request(url, method="GET", headers={"Range": "bytes=0-511"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10, context=TLS["ctx"])
        assert e.value.code == 503 and e.value.headers["Retry-After"], e.value.headers
        # Nobody reads: the agent cuts them (STALL_S = 10 s) instead of waiting forever.
        wait_for(lambda: ticket_status(ec, t)["connections"] == 0, 30, "the stalled GETs to be cut")
        for s in socks:
            s.settimeout(10)
            got = b""
            while True:     # what was queued, then the end of the connection
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                got += chunk
            assert len(got) < size, "a stalled GET was sent whole"
    finally:
        for s in socks:
            s.close()
    assert http("GET", url, headers={"Range": "bytes=0-4095"}) == (206, bytes(4096))
    ec.engine.request("POST", f"/api/imagetransfers/{t['id']}/finalize", {})
    assert wait_transfer(ec, t)["phase"] == "finished_success"
    assert ec.engine.get(f"/api/disks/{disk['id']}")["status"] == "ok"


def test_cli_upload_into_larger_raw_disk_and_format_warning(ec, scratch):
    """An upload into an existing larger raw disk leaves no old byte past the
    file; a qcow2 header found without --format is announced with a way out,
    and --format raw uploads such a file as the raw bytes it is."""
    old = os.path.join(scratch, "old.raw")
    with open(old, "wb") as f:
        f.write(b"\xaa" * (16 * MiB))
    ferry(ec, "disk", "upload", old, "--sd", "sd1", "--name", "shrinking")
    disk = disk_by_name(ec, "shrinking")
    new = os.path.join(scratch, "new.raw")
    with open(new, "wb") as f:
        f.truncate(8 * MiB)
    write_random_extents(new, [(0, MiB), (5 * MiB, MiB)], seed=3)
    r = ferry(ec, "disk", "upload", new, "--disk", "shrinking")
    assert "warning" not in r.stderr, r.stderr
    after = ec.engine.get(f"/api/disks/{disk['id']}")
    assert after["status"] == "ok" and after["provisioned_size"] == 16 * MiB
    with open(vol_path(ec, after), "rb") as f:
        data = f.read()
    assert len(data) == 16 * MiB
    assert data[:8 * MiB] == open(new, "rb").read(), "the new bytes did not land"
    assert data[8 * MiB:] == bytes(8 * MiB), "bytes of the old image survived past the new file"

    # A raw guest image that starts with a qcow2 header.
    tricky = os.path.join(scratch, "tricky.img")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", tricky, str(4 * MiB)], check=True)
    with open(tricky, "r+b") as f:
        f.truncate(4 * MiB)
    r = ferry(ec, "disk", "upload", tricky, "--sd", "sd1", "--name", "tricky-cow")
    assert "warning" in r.stderr and "qcow2" in r.stderr and "--format raw" in r.stderr, r.stderr
    assert disk_by_name(ec, "tricky-cow")["format"] == "cow"
    r = ferry(ec, "disk", "upload", tricky, "--sd", "sd1", "--name", "tricky-raw", "--format", "raw")
    assert "warning" not in r.stderr, r.stderr
    raw = disk_by_name(ec, "tricky-raw")
    assert raw["format"] == "raw" and raw["status"] == "ok"
    assert open(vol_path(ec, raw), "rb").read() == open(tricky, "rb").read()


# ---- HTTPS: the CA decides who is trusted ----

def https(url, ctx, method="GET", body=None, headers=None):
    u = urllib.parse.urlsplit(url)
    conn = HTTPSConnection(u.hostname, u.port, context=ctx, timeout=30)
    try:
        conn.request(method, u.path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_https_upload_download_and_untrusted_clients(ec, scratch):
    ca = ec.engine.ca_file
    rogue = Pki(os.path.join(ec.workdir, "rogue-pki"))
    src = os.path.join(scratch, "src.raw")
    with open(src, "wb") as f:
        f.truncate(16 * MiB)
    write_random_extents(src, [(0, MiB), (9 * MiB, 2 * MiB)], seed=11)

    r = ferry(ec, "disk", "upload", src, "--sd", "sd1", "--name", "tls-up", "--ca-file", ca)
    assert "verified" in r.stdout, r.stdout
    disk = disk_by_name(ec, "tls-up")
    assert disk["status"] == "ok" and disk["volumes"][0]["legality"] == "LEGAL"
    t = last_transfer(ec, disk["id"])
    assert "transfer_url" not in t      # a listing never shows the ticket
    assert open(vol_path(ec, disk), "rb").read() == open(src, "rb").read()
    out = os.path.join(scratch, "down.raw")
    ferry(ec, "disk", "download", "tls-up", out, "--ca-file", ca)
    assert subprocess.run(["cmp", src, out]).returncode == 0
    assert data_extents(out) == data_extents(src)

    # Straight to the endpoint: https only, the agent's certificate checked against the CA.
    t = start_transfer(ec, disk, "download")
    url = t["transfer_url"]
    assert url.startswith("https://127.0.0.1:"), url
    trusted = ssl.create_default_context(cafile=ca)
    status, body = https(url, trusted, headers={"Range": "bytes=0-4095"})
    assert status == 206 and body == open(src, "rb").read(4096)
    status, body = https(url, trusted, headers={"Range": f"bytes={16 * MiB}-"})
    assert status == 416, body
    # A client that does not trust the CA fails the handshake: the system CAs, another CA.
    with pytest.raises(ssl.SSLCertVerificationError):
        https(url, ssl.create_default_context())
    with pytest.raises(ssl.SSLCertVerificationError):
        https(url, ssl.create_default_context(cafile=rogue.ca))
    # Plain HTTP on the HTTPS port gets no image bytes.
    plain = "http://" + url.split("://", 1)[1]
    try:
        status, body = http("GET", plain)
    except (OSError, HTTPException):
        status, body = None, b""
    assert status != 200 and open(src, "rb").read(4096) not in body
    ec.engine.request("POST", f"/api/imagetransfers/{t['id']}/finalize", {})
    assert wait_transfer(ec, t)["phase"] == "finished_success"
    # The CLI trusting another CA refuses the engine itself: no transfer is even started.
    r = ferry(ec, "disk", "download", "tls-up", os.path.join(scratch, "no-ca.raw"), "--ca-file", rogue.ca,
              check=False)
    assert r.returncode == 1 and "does not verify" in r.stderr and "--ca-file" in r.stderr, r.stderr
    assert last_transfer(ec, disk["id"])["id"] == t["id"]
    assert not os.path.exists(os.path.join(scratch, "no-ca.raw"))

    # An https upload straight to the endpoint, then verified and LEGAL.
    other = create_disk(ec, "tls-direct", 4 * MiB)
    t = start_transfer(ec, other, "upload")
    data = os.urandom(MiB)
    status, body = https(t["transfer_url"], trusted, "PUT", data, {"Content-Range": f"bytes {MiB}-{2 * MiB - 1}/*"})
    assert status == 200, body
    status, body = https(t["transfer_url"], trusted, "PATCH", b'{"op": "flush"}', {"Content-Type": "application/json"})
    assert status == 200, body
    ec.engine.request("POST", f"/api/imagetransfers/{t['id']}/finalize", {})
    assert wait_transfer(ec, t)["phase"] == "finished_success"
    with open(vol_path(ec, ec.engine.get(f"/api/disks/{other['id']}")), "rb") as f:
        assert f.read() == bytes(MiB) + data + bytes(2 * MiB)
