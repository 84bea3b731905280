# SPDX-License-Identifier: GPL-2.0-or-later
"""What must hold after any fault, read from the engine's inventory and from
storage itself (the files, not what an agent says about them):

- every disk is `ok` (none `locked` or `illegal`), every volume of it LEGAL
  and present on the domain the inventory names;
- the disks a scenario watches still have their original content;
- no `.meta` on storage says LEGALITY=ILLEGAL;
- no orphans: every image folder under every domain belongs to a disk the
  engine lists on that domain, and holds only that disk's volumes.

Shared by tests/functional/test_recovery.py and the chaos test."""

import hashlib
import os
import subprocess
import tempfile
import time

from ferrytest import MiB, wait_for, write_random_extents

TERMINAL = ("finished", "failed", "aborted", "cancelled")


def create_disk(ec, name, size, fmt="raw", volumes=1, sd_id=None, sparse=True, timeout=120):
    r = ec.engine.post("/api/disks", {"name": name, "provisioned_size": size, "format": fmt, "sparse": sparse,
                                      "volumes": volumes, "storage_domain": {"id": sd_id or ec.sds[0]["id"]}})
    job = wait_job_end(ec, r["job"]["id"], timeout)
    assert job["status"] == "finished", job
    disk = ec.engine.get(f"/api/disks/{r['disk']['id']}")
    assert disk["status"] == "ok" and len(disk["volumes"]) == volumes, disk
    return disk


def wait_job_end(ec, job_id, timeout):
    """The engine's job once it is no longer running, whatever its final status."""
    def ended():
        job = ec.engine.get(f"/api/jobs/{job_id}")
        return job if job["status"] in TERMINAL else None
    return wait_for(ended, timeout, f"job {job_id} to end", interval=0.2)


def vol_path(ec, sd_id, disk_id, vol_id):
    return os.path.join(ec.storage, sd_id, "images", disk_id, vol_id)


def read_meta(path):
    """KEY=VALUE lines of a volume's .meta file, as a dict."""
    with open(path, "r", errors="replace") as f:
        return dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)


def fill_disk(ec, disk, data, seed):
    """Random data in the first `data` bytes of the disk's base volume (raw),
    or in each volume of a qcow2 chain (a slice each, so every level counts)."""
    sd = disk["storage_domains"][0]["id"]
    vols = disk["volumes"]
    if disk["format"] == "raw":
        write_random_extents(vol_path(ec, sd, disk["id"], vols[0]["id"]), [(0, data)], seed=seed)
        return
    piece = max(MiB, (data // len(vols)) // MiB * MiB)
    for i, v in enumerate(vols):
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {(seed + i) % 255 + 1} {i * piece} {piece}",
                        vol_path(ec, sd, disk["id"], v["id"])], check=True, stdout=subprocess.DEVNULL)


def disk_digest(ec, disk_id, scratch):
    """sha256 of the guest-visible content of a disk where the inventory says it is."""
    disk = ec.engine.get(f"/api/disks/{disk_id}")
    sd = disk["storage_domains"][0]["id"]
    top = vol_path(ec, sd, disk_id, disk["volumes"][-1]["id"])
    if disk["format"] == "raw" and len(disk["volumes"]) == 1:
        return file_sha256(top)
    fd, flat = tempfile.mkstemp(prefix="flat-", dir=scratch)
    os.close(fd)
    try:
        subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", top, flat], check=True,
                       capture_output=True)
        return file_sha256(flat)
    finally:
        os.unlink(flat)


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def structure_problems(ec, sd_ids=None):
    """Everything wrong with inventory and storage, as sentences; [] if nothing."""
    problems = []
    disks = {}
    for d in ec.engine.get("/api/disks")["disks"]:
        disks[d["id"]] = ec.engine.get(f"/api/disks/{d['id']}")
    owned = {}          # (sd, img) -> set of volume ids
    for d in disks.values():
        if d["status"] != "ok":
            problems.append(f"disk {d['name']} ({d['id']}) is {d['status']}")
        for sd in d.get("storage_domains") or []:
            owned[(sd["id"], d["id"])] = {v["id"] for v in d.get("volumes") or []}
            for v in d.get("volumes") or []:
                if v.get("legality") != "LEGAL":
                    problems.append(f"disk {d['name']}: volume {v['id']} is {v.get('legality')} in the inventory")
                path = vol_path(ec, sd["id"], d["id"], v["id"])
                if not (os.path.exists(path) and os.path.exists(path + ".meta")):
                    problems.append(f"disk {d['name']}: volume {v['id']} is missing on storage domain {sd['id']}")
    for sd in sd_ids or [s["id"] for s in ec.sds]:
        images = os.path.join(ec.storage, sd, "images")
        for img in sorted(os.listdir(images)) if os.path.isdir(images) else []:
            folder = os.path.join(images, img)
            names = sorted(os.listdir(folder))
            if (sd, img) not in owned:
                problems.append(f"orphan image {img} on storage domain {sd}: {names} (no disk owns it there)")
                continue
            for name in names:
                vol = name.split(".", 1)[0]
                if vol not in owned[(sd, img)] or name not in (vol, vol + ".meta", vol + ".lease"):
                    problems.append(f"stray file {name} in image {img} on storage domain {sd}")
                if name.endswith(".meta"):
                    meta = read_meta(os.path.join(folder, name))
                    if meta.get("LEGALITY") != "LEGAL":
                        problems.append(f"{sd}/images/{img}/{name} says LEGALITY={meta.get('LEGALITY')}")
    return problems


def assert_invariant(ec, scratch, expect=None, settle=45, sd_ids=None):
    """Fails unless the invariant holds within `settle` seconds (cleanups
    are commands that may still be finishing). expect: {disk_id: sha256} of
    disks that must be ok with exactly that content."""
    deadline = time.monotonic() + settle
    while True:
        problems = structure_problems(ec, sd_ids)
        if not problems:
            break
        if time.monotonic() > deadline:
            raise AssertionError("invariant violated:\n  " + "\n  ".join(problems))
        time.sleep(1)
    for disk_id, digest in (expect or {}).items():
        got = disk_digest(ec, disk_id, scratch)
        assert got == digest, f"disk {disk_id}: content changed ({got} != {digest})"
