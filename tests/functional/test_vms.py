# SPDX-License-Identifier: GPL-2.0-or-later
"""VMs, snapshots, templates and VMs made from templates, on a real 3-host cluster with 2 domains."""

import json
import os
import shutil
import subprocess
import time
import uuid

import pytest

from conftest import make_workdir
from enginetest import EngineCluster, HttpError
from ferrytest import (BUILD, MiB, endpoint, qemu_img_compare, qemu_io_write, run_job, wait_for, wait_job,
                       write_random_extents)
from stompclient import RpcError

FERRY = os.path.join(BUILD, "src", "cli", "ferry")


def joined_all_domains(c):
    want = f"({len(c.sds)} domains)"
    for a in c.agents:
        with open(a.log_path, "rb") as f:
            if want.encode() not in f.read():
                return False
    return True


@pytest.fixture(scope="module")
def ec():
    d = make_workdir()
    c = EngineCluster(d, domains=1)
    try:
        # The second domain once the pool is up: the hosts' connect then names both domains
        # (one added while a connect is in flight is not joined until the next connect).
        c.sds.append(c.engine.post("/api/storagedomains", {"name": "sd2"}))
        wait_for(lambda: joined_all_domains(c), 60, "every host to join both domains", interval=0.2)
        c.wait_ready()
    except BaseException:
        c.stop()
        raise
    yield c
    codes = c.stop()
    if not os.environ.get("FERRY_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)
    assert all(code == 0 for code in codes.values()), codes


def create_disk(ec, name, size, fmt="raw", sd=0):
    r = ec.engine.post("/api/disks", {"name": name, "provisioned_size": size, "format": fmt,
                                      "storage_domain": {"id": ec.sds[sd]["id"]}})
    assert ec.engine.wait_job(r["job"]["id"], 60)["status"] == "finished"
    return ec.engine.get(f"/api/disks/{r['disk']['id']}")


def disk(ec, disk_id):
    return ec.engine.get(f"/api/disks/{disk_id}")


def vol_path(ec, d, vol_id=None):
    """Path of a volume of disk d (default: its leaf) on its domain."""
    vol_id = vol_id or d["volumes"][-1]["id"]
    return os.path.join(ec.storage, d["storage_domains"][0]["id"], "images", d["id"], vol_id)


def img_info(path):
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", path], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def read_meta(path):
    with open(path + ".meta") as f:
        return dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)


def steps_of(ec, job_id):
    return ec.engine.get(f"/api/jobs/{job_id}/steps")["steps"]


def wait_ok(ec, job_id):
    job = ec.engine.wait_job(job_id, 120)
    assert job["status"] == "finished", (job, steps_of(ec, job_id))
    return job


def fault(ec, method, path, body=None):
    with pytest.raises(HttpError) as e:
        ec.engine.request(method, path, body)
    assert isinstance(e.value.body, dict) and e.value.body["fault"]["detail"], e.value.body
    return e.value.status, e.value.body["fault"]["detail"]


def nothing_locked(ec):
    assert all(d["status"] != "locked" for d in ec.engine.get("/api/disks")["disks"])
    assert all(v["status"] == "ok" for v in ec.engine.get("/api/vms")["vms"])
    assert all(t["status"] == "ok" for t in ec.engine.get("/api/templates")["templates"])


def compare(a, b):
    r = qemu_img_compare(a, b)
    assert r.returncode == 0, r.stdout + r.stderr


def test_vm_snapshot_template_clone_and_thin(ec):
    spm = ec.spm_name()
    sd1, sd2 = ec.sds[0]["id"], ec.sds[1]["id"]
    raw = create_disk(ec, "vm1-raw", 64 * MiB, "raw")
    cow = create_disk(ec, "vm1-cow", 96 * MiB, "cow")
    write_random_extents(vol_path(ec, raw), [(0, 8 * MiB), (40 * MiB, 4 * MiB)], seed=11)
    qemu_io_write(vol_path(ec, cow), "qcow2", "0x21", 0, 16 * MiB)

    status, vm = ec.engine.request("POST", "/api/vms", {"name": "vm1", "description": "a test VM"})
    assert status == 201 and vm["status"] == "ok" and vm["template"] is None
    for d in (raw, cow):
        status, att = ec.engine.request("POST", f"/api/vms/{vm['id']}/diskattachments", {"disk": {"id": d["id"]}})
        assert status == 201 and att["disk"]["id"] == d["id"] and att["vm"]["id"] == vm["id"]
    atts = ec.engine.get(f"/api/vms/{vm['id']}/diskattachments")["disk_attachments"]
    assert [a["id"] for a in atts] == [raw["id"], cow["id"]]

    # Snapshot: a qcow2 leaf on every disk, made by the SPM; then the guest writes into the leaves.
    r = ec.engine.post(f"/api/vms/{vm['id']}/snapshots", {"description": "before the update"})
    assert ec.engine.get(f"/api/vms/{vm['id']}")["status"] == "locked"
    wait_ok(ec, r["job"]["id"])
    assert all(s["execution_host"]["name"] == spm for s in steps_of(ec, r["job"]["id"]))
    snaps = ec.engine.get(f"/api/vms/{vm['id']}/snapshots")["snapshots"]
    assert len(snaps) == 1 and snaps[0]["snapshot_status"] == "ok" and snaps[0]["description"] == "before the update"
    raw, cow = disk(ec, raw["id"]), disk(ec, cow["id"])
    for d in (raw, cow):
        assert d["status"] == "ok" and len(d["volumes"]) == 2 and d["format"] == "cow"
        assert d["volumes"][1]["parent"] == d["volumes"][0]["id"]
        assert all(v["legality"] == "LEGAL" for v in d["volumes"])
        info = img_info(vol_path(ec, d))
        assert info["format"] == "qcow2" and info["backing-filename"] == d["volumes"][0]["id"]
        assert read_meta(vol_path(ec, d, d["volumes"][0]["id"]))["VOLTYPE"] == "INTERNAL"
    assert {s["disk"]["id"]: s["volume"]["id"] for s in snaps[0]["disks"]} == \
        {raw["id"]: raw["volumes"][0]["id"], cow["id"]: cow["volumes"][0]["id"]}
    qemu_io_write(vol_path(ec, raw), "qcow2", "0x31", 4 * MiB, 8 * MiB)      # over old data and a hole
    qemu_io_write(vol_path(ec, cow), "qcow2", "0x32", 60 * MiB, 8 * MiB)

    # Template: each chain copied collapsed into one volume, on a non-SPM host, then sealed SHARED.
    r = ec.engine.post("/api/templates", {"name": "tmpl1", "vm": {"id": vm["id"]}, "disks": [
        {"id": raw["id"], "format": "raw", "sparse": True, "storage_domain": {"id": sd2}},
        {"id": cow["id"], "format": "cow", "sparse": True}]})
    tmpl_id, job_id = r["template"]["id"], r["job"]["id"]
    assert disk(ec, raw["id"])["status"] == "locked" and disk(ec, cow["id"])["status"] == "locked"
    wait_ok(ec, job_id)
    steps = steps_of(ec, job_id)
    copies = [s for s in steps if s["type"] == "copy_data"]
    assert len(copies) == 2 and all(s["execution_host"]["name"] != spm for s in copies), copies
    assert len([s for s in steps if s["type"] == "seal_template_volume"]) == 2
    assert abs(sum(s["weight"] for s in steps) - 100) < 0.01
    assert disk(ec, raw["id"])["status"] == "ok" and ec.engine.get(f"/api/vms/{vm['id']}")["status"] == "ok"
    tmpl = ec.engine.get(f"/api/templates/{tmpl_id}")
    assert tmpl["status"] == "ok" and tmpl["vm"]["id"] == vm["id"]
    t_raw, t_cow = (disk(ec, a["id"]) for a in tmpl["disk_attachments"])
    assert t_raw["storage_domains"] == [{"id": sd2}] and t_cow["storage_domains"] == [{"id": sd1}]
    for t, src, fmt in ((t_raw, raw, "raw"), (t_cow, cow, "qcow2")):
        assert t["status"] == "ok" and len(t["volumes"]) == 1 and t["volumes"][0]["parent"] is None
        info = img_info(vol_path(ec, t))
        assert info["format"] == fmt and "backing-filename" not in info      # collapsed
        meta = read_meta(vol_path(ec, t))
        assert meta["VOLTYPE"] == "SHARED" and meta["LEGALITY"] == "LEGAL" and meta["PUUID"] == "0" * 8 + "-0000-0000-0000-" + "0" * 12
        compare(vol_path(ec, src), vol_path(ec, t))                          # the whole chain, as the guest sees it
    assert os.stat(vol_path(ec, t_raw)).st_blocks * 512 < 32 * MiB           # raw sparse stays sparse
    # A template disk stays where thin VMs will find it, and goes only with its template.
    assert fault(ec, "POST", f"/api/disks/{t_raw['id']}/move", {"storage_domain": {"id": sd1}})[0] == 409
    assert fault(ec, "DELETE", f"/api/disks/{t_raw['id']}")[0] == 409

    # Clone: one collapsed copy per template disk, formats converted, preallocation kept.
    r = ec.engine.post("/api/vms", {"name": "clone1", "template": {"id": tmpl_id}, "clone": True, "disks": [
        {"id": t_raw["id"], "format": "cow", "sparse": True, "storage_domain": {"id": sd1}},
        {"id": t_cow["id"], "format": "raw", "sparse": False, "storage_domain": {"id": sd2}}]})
    clone_id, job_id = r["vm"]["id"], r["job"]["id"]
    progress = []
    while ec.engine.get(f"/api/jobs/{job_id}")["status"] == "started":
        for a in ec.engine.get(f"/api/vms/{clone_id}/diskattachments")["disk_attachments"]:
            d = disk(ec, a["id"])
            if d["status"] == "locked":
                progress.append(d["progress"])
        time.sleep(0.05)
    wait_ok(ec, job_id)
    assert progress and all(0 <= p <= 100 for p in progress)
    copies = [s for s in steps_of(ec, job_id) if s["type"] == "copy_data"]
    assert len(copies) == 2 and all(s["execution_host"]["name"] != spm for s in copies), copies
    clone = ec.engine.get(f"/api/vms/{clone_id}")
    assert clone["status"] == "ok" and clone["template"]["id"] == tmpl_id
    c_a, c_b = (disk(ec, a["id"]) for a in clone["disk_attachments"])
    assert c_a["format"] == "cow" and c_a["storage_domains"] == [{"id": sd1}]
    assert c_b["format"] == "raw" and not c_b["sparse"] and c_b["storage_domains"] == [{"id": sd2}]
    assert img_info(vol_path(ec, c_a))["format"] == "qcow2" and "backing-filename" not in img_info(vol_path(ec, c_a))
    assert img_info(vol_path(ec, c_b))["format"] == "raw"
    # qemu-img convert unmaps zeros: the agent allocates a PREALLOCATED destination again.
    assert os.stat(vol_path(ec, c_b)).st_blocks * 512 >= 96 * MiB
    compare(vol_path(ec, raw), vol_path(ec, c_a))
    compare(vol_path(ec, cow), vol_path(ec, c_b))

    # Thin: a qcow2 layer on each template volume, made by the SPM, no data copied.
    r = ec.engine.post("/api/vms", {"name": "thin1", "template": {"id": tmpl_id}})
    thin_id = r["vm"]["id"]
    wait_ok(ec, r["job"]["id"])
    creates = [s for s in steps_of(ec, r["job"]["id"]) if s["type"] == "create_thin_volume"]
    assert len(creates) == 2 and all(s["execution_host"]["name"] == spm for s in creates)
    thin = ec.engine.get(f"/api/vms/{thin_id}")
    thin_disks = [disk(ec, a["id"]) for a in thin["disk_attachments"]]
    for td, t, src in zip(thin_disks, (t_raw, t_cow), (raw, cow)):
        assert td["status"] == "ok" and td["storage_domains"] == t["storage_domains"] and td["format"] == "cow"
        assert len(td["volumes"]) == 1 and td["volumes"][0]["parent"] == t["volumes"][0]["id"]
        top = vol_path(ec, td)
        assert img_info(top)["backing-filename"] == t["volumes"][0]["id"]
        link = os.path.join(os.path.dirname(top), t["volumes"][0]["id"])
        for suffix in ("", ".meta", ".lease"):      # the template volume, hard-linked into the thin image
            assert os.path.samefile(link + suffix, vol_path(ec, t) + suffix)
        compare(top, vol_path(ec, t))               # the overlay reads the template's data
        compare(top, vol_path(ec, src))
        assert os.stat(top).st_blocks * 512 < 2 * MiB

    # A template with thin VMs stays; a thin VM goes with its links only.
    status, detail = fault(ec, "DELETE", f"/api/templates/{tmpl_id}")
    assert status == 409 and "thin1" in detail, detail
    assert ec.engine.get(f"/api/templates/{tmpl_id}")["status"] == "ok"
    status, r = ec.engine.request("DELETE", f"/api/vms/{thin_id}")
    assert status == 202
    wait_ok(ec, r["job"]["id"])
    assert fault(ec, "GET", f"/api/vms/{thin_id}")[0] == 404
    for td, t in zip(thin_disks, (t_raw, t_cow)):
        assert not os.path.exists(os.path.dirname(vol_path(ec, td)))
        assert read_meta(vol_path(ec, t))["LEGALITY"] == "LEGAL"
    compare(vol_path(ec, raw), vol_path(ec, t_raw))

    # Removing the template, the clone, and the VM (keeping its disks).
    status, r = ec.engine.request("DELETE", f"/api/templates/{tmpl_id}")
    assert status == 202
    wait_ok(ec, r["job"]["id"])
    assert not os.path.exists(os.path.dirname(vol_path(ec, t_raw)))
    assert fault(ec, "GET", f"/api/disks/{t_cow['id']}")[0] == 404
    status, r = ec.engine.request("DELETE", f"/api/vms/{clone_id}")
    wait_ok(ec, r["job"]["id"])
    assert not os.path.exists(os.path.dirname(vol_path(ec, c_b)))
    status, r = ec.engine.request("DELETE", f"/api/vms/{vm['id']}?detach_only=true")
    assert status == 200 and r["detached_disks"] == 2
    assert disk(ec, raw["id"])["status"] == "ok" and os.path.exists(vol_path(ec, raw))
    nothing_locked(ec)


def test_bad_input_is_refused_and_nothing_stays_locked(ec):
    missing = str(uuid.uuid4())
    sd1 = ec.sds[0]["id"]
    d1 = create_disk(ec, "bad-1", 16 * MiB)
    big = create_disk(ec, "bad-big", 512 * MiB)
    write_random_extents(vol_path(ec, big), [(0, 384 * MiB)], seed=3)    # ~3 s at the hosts' 128 MiB/s
    _, vm = ec.engine.request("POST", "/api/vms", {"name": "bad-vm"})
    _, other = ec.engine.request("POST", "/api/vms", {"name": "bad-other"})
    ec.engine.post(f"/api/vms/{vm['id']}/diskattachments", {"disk": {"id": d1["id"]}})
    ec.engine.post(f"/api/vms/{vm['id']}/diskattachments", {"disk": {"id": big["id"]}})

    assert fault(ec, "POST", "/api/vms", {"name": "x", "template": {"id": missing}, "clone": True})[0] == 404
    assert fault(ec, "POST", "/api/vms", {"name": "x", "template": {"id": "nope"}})[0] == 400
    assert fault(ec, "POST", "/api/vms", {"name": "x/y"})[0] == 400
    assert fault(ec, "POST", "/api/vms", {"name": "x", "description": "two\nlines"})[0] == 400
    assert fault(ec, "POST", "/api/vms", {"name": "x", "clone": True})[0] == 400
    assert fault(ec, "POST", "/api/vms", {"name": "bad-vm"})[0] == 409
    assert fault(ec, "POST", f"/api/vms/{missing}/snapshots", {"description": "x"})[0] == 404
    assert fault(ec, "POST", f"/api/vms/{other['id']}/snapshots", {})[0] == 409           # no disks
    assert fault(ec, "POST", f"/api/vms/{missing}/diskattachments", {"disk": {"id": d1["id"]}})[0] == 404
    assert fault(ec, "POST", f"/api/vms/{other['id']}/diskattachments", {"disk": {"id": missing}})[0] == 404
    status, detail = fault(ec, "POST", f"/api/vms/{other['id']}/diskattachments", {"disk": {"id": d1["id"]}})
    assert status == 409 and "bad-vm" in detail, detail
    assert fault(ec, "POST", f"/api/vms/{other['id']}/diskattachments",
                 {"disk": {"id": d1["id"]}, "interface": "floppy"})[0] == 400
    assert fault(ec, "DELETE", f"/api/vms/{other['id']}/diskattachments/{d1['id']}")[0] == 404
    assert fault(ec, "DELETE", f"/api/disks/{d1['id']}")[0] == 409                           # attached
    assert fault(ec, "DELETE", f"/api/vms/{vm['id']}?detach_only=maybe")[0] == 400
    assert fault(ec, "POST", "/api/templates", {"name": "t", "vm": {"id": missing}})[0] == 404
    assert fault(ec, "POST", "/api/templates", {"name": "t", "vm": {"id": vm["id"]},
                                                "disks": [{"id": missing}]})[0] == 400
    assert fault(ec, "POST", "/api/templates", {"name": "t", "vm": {"id": vm["id"]},
                                                "disks": [{"id": d1["id"], "format": "vmdk"}]})[0] == 400
    assert fault(ec, "POST", "/api/templates", {"name": "t", "vm": {"id": vm["id"]},
                                                "disks": [{"id": d1["id"], "storage_domain": {"id": missing}}]})[0] == 404

    # A disk of the VM is busy (a move): no template, no snapshot, no detach, nothing changes.
    r = ec.engine.post(f"/api/disks/{big['id']}/move", {"storage_domain": {"id": ec.sds[1]["id"]}})
    assert disk(ec, big["id"])["status"] == "locked"
    status, detail = fault(ec, "POST", "/api/templates", {"name": "t-busy", "vm": {"id": vm["id"]}})
    assert status == 409 and "bad-big" in detail, detail
    assert fault(ec, "POST", f"/api/vms/{vm['id']}/snapshots", {"description": "x"})[0] == 409
    assert fault(ec, "DELETE", f"/api/vms/{vm['id']}/diskattachments/{big['id']}")[0] == 409
    assert fault(ec, "DELETE", f"/api/vms/{vm['id']}")[0] == 409
    assert ec.engine.get("/api/templates")["templates"] == []
    assert disk(ec, d1["id"])["status"] == "ok" and ec.engine.get(f"/api/vms/{vm['id']}")["status"] == "ok"
    wait_ok(ec, r["job"]["id"])

    # A snapshot is removed by merging its volumes (test_snapshots.py covers it); a second removal finds nothing.
    r = ec.engine.post(f"/api/vms/{vm['id']}/snapshots", {"description": "s1"})
    wait_ok(ec, r["job"]["id"])
    status, out = ec.engine.request("DELETE", f"/api/vms/{vm['id']}/snapshots/{r['snapshot']['id']}")
    assert status == 202
    wait_ok(ec, out["job"]["id"])
    assert fault(ec, "DELETE", f"/api/vms/{vm['id']}/snapshots/{r['snapshot']['id']}")[0] == 404

    # A thin VM may not pick a format or a domain.
    r = ec.engine.post("/api/templates", {"name": "t-ok", "vm": {"id": vm["id"]},
                                          "disks": [{"id": big["id"], "storage_domain": {"id": sd1}}]})
    wait_ok(ec, r["job"]["id"])
    t_disk = ec.engine.get(f"/api/templates/{r['template']['id']}")["disk_attachments"][0]["id"]
    assert fault(ec, "POST", "/api/vms", {"name": "thin-raw", "template": {"id": r["template"]["id"]},
                                          "disks": [{"id": t_disk, "format": "raw"}]})[0] == 400
    assert fault(ec, "POST", f"/api/vms/{other['id']}/diskattachments", {"disk": {"id": t_disk}})[0] == 409
    nothing_locked(ec)

    # Cleanup through the API: VMs with their disks, the template.
    for path in (f"/api/vms/{vm['id']}", f"/api/vms/{other['id']}", f"/api/templates/{r['template']['id']}"):
        status, out = ec.engine.request("DELETE", path)
        if status == 202:
            wait_ok(ec, out["job"]["id"])
    assert fault(ec, "GET", f"/api/disks/{d1['id']}")[0] == 404
    nothing_locked(ec)


def cli(ec, *args):
    r = subprocess.run([FERRY, "--engine", ec.engine.url, *args], capture_output=True, text=True, timeout=180,
                       stdin=subprocess.DEVNULL, env=ec.engine.cli_env())
    return r


def cli_ok(ec, *args):
    r = cli(ec, *args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def test_cli_vm_and_template_commands(ec):
    d = create_disk(ec, "cli-disk", 32 * MiB, "cow")
    qemu_io_write(vol_path(ec, d), "qcow2", "0x44", 0, 4 * MiB)
    assert "created VM cli-vm" in cli_ok(ec, "vm", "create", "--name", "cli-vm")
    cli_ok(ec, "vm", "attach", "cli-vm", "cli-disk")
    r = cli(ec, "vm", "attach", "cli-vm", "cli-disk")
    assert r.returncode == 1 and "already" in r.stderr, r.stderr
    cli_ok(ec, "vm", "snapshot", "cli-vm", "--description", "from the CLI", "--wait")
    assert "from the CLI" in cli_ok(ec, "vm", "show", "cli-vm")
    cli_ok(ec, "template", "create", "--name", "cli-tmpl", "--vm", "cli-vm", "--sd", "sd2", "--format", "raw", "--wait")
    out = cli_ok(ec, "vm", "create", "--name", "cli-clone", "--template", "cli-tmpl", "--clone", "--format", "cow",
                 "--preallocated", "--wait")
    assert "copy" in out.lower(), out
    assert cli(ec, "vm", "create", "--name", "x", "--template", "cli-tmpl", "--format", "raw").returncode == 2
    cli_ok(ec, "vm", "create", "--name", "cli-thin", "--template", "cli-tmpl", "--wait")
    vms = json.loads(cli_ok(ec, "--json", "vm", "list"))["vms"]
    assert {v["name"] for v in vms} >= {"cli-vm", "cli-clone", "cli-thin"}
    assert "cli-tmpl" in cli_ok(ec, "template", "list")
    r = cli(ec, "template", "delete", "cli-tmpl")
    assert r.returncode == 1 and "cli-thin" in r.stderr, r.stderr
    for vm in ("cli-thin", "cli-clone", "cli-vm"):
        cli_ok(ec, "vm", "delete", vm, "--wait")
    cli_ok(ec, "template", "delete", "cli-tmpl", "--wait")
    assert json.loads(cli_ok(ec, "--json", "vm", "list"))["vms"] == []
    nothing_locked(ec)


def test_engine_restart_mid_template_then_thin_vm(ec):
    d = create_disk(ec, "restart-disk", 512 * MiB, "raw")
    write_random_extents(vol_path(ec, d), [(0, 384 * MiB)], seed=5)      # ~3 s at the hosts' 128 MiB/s
    _, vm = ec.engine.request("POST", "/api/vms", {"name": "restart-vm"})
    ec.engine.post(f"/api/vms/{vm['id']}/diskattachments", {"disk": {"id": d["id"]}})
    r = ec.engine.post("/api/templates", {"name": "restart-tmpl", "vm": {"id": vm["id"]}})
    wait_for(lambda: any(s["type"] == "copy_data" and s["status"] == "started" and s["progress"] > 0
                         for s in steps_of(ec, r["job"]["id"])), 30, "the copy to start")
    ec.engine.restart()
    wait_ok(ec, r["job"]["id"])
    tmpl = ec.engine.get(f"/api/templates/{r['template']['id']}")
    t = disk(ec, tmpl["disk_attachments"][0]["id"])
    assert tmpl["status"] == "ok" and read_meta(vol_path(ec, t))["VOLTYPE"] == "SHARED"
    compare(vol_path(ec, d), vol_path(ec, t))
    r = ec.engine.post("/api/vms", {"name": "restart-thin", "template": {"id": tmpl["id"]}})
    ec.engine.restart()                      # whatever the thin create had reached, it is learned again
    wait_ok(ec, r["job"]["id"])
    thin = disk(ec, ec.engine.get(f"/api/vms/{r['vm']['id']}")["disk_attachments"][0]["id"])
    compare(vol_path(ec, thin), vol_path(ec, d))
    for path in (f"/api/vms/{r['vm']['id']}", f"/api/templates/{tmpl['id']}", f"/api/vms/{vm['id']}"):
        status, out = ec.engine.request("DELETE", path)
        assert status == 202, out
        wait_ok(ec, out["job"]["id"])
    nothing_locked(ec)


def test_agent_template_volume_rules(ec):
    """SHARED is one-way and final; only a SHARED volume backs a volume of another image."""
    d = create_disk(ec, "rules", 16 * MiB, "cow")
    r = ec.engine.post("/api/disks", {"name": "rules-chain", "provisioned_size": 16 * MiB, "format": "cow",
                                      "volumes": 2, "storage_domain": {"id": ec.sds[0]["id"]}})
    wait_ok(ec, r["job"]["id"])
    chain = disk(ec, r["disk"]["id"])
    sd, pool = ec.sds[0]["id"], ec.engine.get("/api/datacenters")["datacenters"][0]["pool_id"]
    spm = ec.agent(ec.spm_name())

    def sdm(c, method, params):      # SDM verbs take the job id and return nothing
        job_id = str(uuid.uuid4())
        c.call(method, dict(params, job_id=job_id))
        return wait_job(c, job_id)

    def update(c, dsk, vol, attr):
        return sdm(c, "SDM.update_volume", {"vol_attr": attr,
                                            "vol_info": {"sd_id": sd, "img_id": dsk["id"], "vol_id": vol}})

    def thin_create(c, parent_disk, parent_vol):
        img = str(uuid.uuid4())
        job = run_job(c, "Volume.create", {
            "storagepoolID": pool, "storagedomainID": sd, "imageID": img, "volumeID": str(uuid.uuid4()),
            "size": str(16 * MiB), "volFormat": "COW", "preallocate": "SPARSE", "diskType": "DATA", "desc": "",
            "srcImgUUID": parent_disk["id"], "srcVolUUID": parent_vol})
        return job, os.path.join(ec.storage, sd, "images", img)

    with spm.client() as c:
        with pytest.raises(RpcError) as e:
            update(c, d, d["volumes"][0]["id"], {"type": "LEAF"})
        assert "SHARED" in str(e.value)
        job = update(c, chain, chain["volumes"][0]["id"], {"type": "SHARED"})     # INTERNAL: has a child
        assert job["status"] == "failed" and "LEAF" in job["error"]["message"], job
        job, img_dir = thin_create(c, d, d["volumes"][0]["id"])                   # a LEAF is not a template
        assert job["status"] == "failed" and "SHARED" in job["error"]["message"], job
        assert not os.path.exists(img_dir)
        assert update(c, d, d["volumes"][0]["id"], {"type": "SHARED"})["status"] == "done"
        assert update(c, d, d["volumes"][0]["id"], {"type": "SHARED"})["status"] == "done"   # idempotent
        job = sdm(c, "SDM.copy_data", {"source": endpoint(sd, chain["id"], chain["volumes"][1]["id"]),
                                        "destination": endpoint(sd, d["id"], d["volumes"][0]["id"])})
        assert job["status"] == "failed" and "never written" in job["error"]["message"], job
        job, img_dir = thin_create(c, d, d["volumes"][0]["id"])
        assert job["status"] == "done", job
        assert run_job(c, "Image.delete", {"storagepoolID": pool, "storagedomainID": sd,
                                           "imageID": os.path.basename(img_dir)})["status"] == "done"
        assert not os.path.exists(img_dir)
    assert read_meta(vol_path(ec, d))["LEGALITY"] == "LEGAL"
    for x in (d, chain):
        status, out = ec.engine.request("DELETE", f"/api/disks/{x['id']}")
        wait_ok(ec, out["job"]["id"])
