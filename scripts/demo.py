#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Local two-host demo of Ferry's agent: the SPM (host A) creates the volume
containers, host B copies the bytes, and the copy's progress is shown live."""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "functional"))

from ferrytest import Agent, Sanlock, endpoint, new_uuid, wait_for, write_random_extents  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB


def log(msg):
    print(f"ferry-demo: {msg}", flush=True)


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def down(d):
    state_path = os.path.join(d, "cluster.json")
    if not os.path.exists(state_path):
        log(f"nothing running in {d}")
        return
    with open(state_path) as f:
        state = json.load(f)
    for h in state["hosts"]:
        if alive(h["pid"]):
            os.kill(h["pid"], signal.SIGTERM)
    for h in state["hosts"]:
        deadline = time.monotonic() + 15
        while alive(h["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(h["pid"]):
            os.kill(h["pid"], signal.SIGKILL)
        env = dict(os.environ, SANLOCK_RUN_DIR=h["sanlock_run_dir"])
        subprocess.run(["sanlock", "client", "shutdown", "-f", "1"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while alive(h["sanlock_pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(h["sanlock_pid"]):
            os.killpg(h["sanlock_pid"], signal.SIGKILL)
    os.unlink(state_path)
    log(f"stopped the agents and sanlock daemons of {d}")


def progress_bar(done, width=40):
    n = int(width * done / 100)
    return "[" + "#" * n + "." * (width - n) + f"] {done:5.1f}%"


def up(d, data_mib):
    down(d)
    shutil.rmtree(os.path.join(d, "storage"), ignore_errors=True)
    os.makedirs(os.path.join(d, "storage"), exist_ok=True)
    storage = os.path.join(d, "storage")

    log("starting two hosts: a sanlock daemon and a ferry-agent each")
    sl_a, sl_b = Sanlock(d, "hostA"), Sanlock(d, "hostB")
    # The copy rate is capped so the progress of a local copy stays visible.
    a = Agent(d, "A", sl_a, storage, host_id=1, copy_rate_limit="256M")
    b = Agent(d, "B", sl_b, storage, host_id=2, copy_rate_limit="256M")
    state = {"storage": storage, "hosts": [
        {"name": h.name, "port": h.port, "pid": h.proc.pid, "sanlock_pid": s.proc.pid,
         "sanlock_run_dir": s.run_dir, "log": h.log_path} for h, s in ((a, sl_a), (b, sl_b))]}
    with open(os.path.join(d, "cluster.json"), "w") as f:
        json.dump(state, f, indent=2)
    log(f"host A: agent on 127.0.0.1:{a.port}, host B: agent on 127.0.0.1:{b.port}")

    pool, sd1, sd2 = new_uuid(), new_uuid(), new_uuid()
    img, vol = new_uuid(), new_uuid()
    ca, cb = a.client(timeout=60), b.client(timeout=60)
    ca.call("StorageDomain.create", {"storagedomainID": sd1, "name": "demo-sd1"})
    ca.call("StorageDomain.create", {"storagedomainID": sd2, "name": "demo-sd2"})
    log(f"created storage domains sd1={sd1} and sd2={sd2} under {storage}")
    log("joining the domains' sanlock lockspaces on both hosts (takes a few seconds)...")
    params = {"storagepoolID": pool, "masterSdUUID": sd1, "domainDict": {sd1: "active", sd2: "active"}}
    import threading
    t = threading.Thread(target=lambda: cb.call("StoragePool.connect", dict(params, hostID=2), timeout=60))
    t.start()
    ca.call("StoragePool.connect", dict(params, hostID=1), timeout=60)
    t.join()
    spm = ca.call("StoragePool.spmStart", {"storagepoolID": pool})
    log(f"host A is the SPM (host id {spm['spmId']}); host B is not: "
        f"{cb.call('StoragePool.getSpmStatus', {'storagepoolID': pool})['spmStatus']}")

    for sd in (sd1, sd2):
        job = ca.call("Volume.create", {"storagepoolID": pool, "storagedomainID": sd, "imageID": img,
                                        "volumeID": vol, "size": str(2 * GiB + data_mib * MiB), "volFormat": "RAW",
                                        "preallocate": "SPARSE", "desc": "demo disk"})
        wait_for(lambda: ca.call("Host.getJobs", {"job_ids": [job]})[job]["status"] == "done", 30,
                 "Volume.create")
    log(f"SPM created a sparse raw volume {vol} in both domains")
    src_path = os.path.join(storage, sd1, "images", img, vol)
    write_random_extents(src_path, [(i * 512 * MiB, data_mib * MiB // 4) for i in range(4)])
    log(f"wrote {data_mib} MiB of data in 4 extents into the source (the rest stays holes)")

    gen = ca.call("Volume.getInfo", {"storagepoolID": pool, "storagedomainID": sd2, "imageID": img,
                                     "volumeID": vol})["generation"]
    job_id = new_uuid()
    log(f"host B runs SDM.copy_data sd1 -> sd2 (job {job_id}, destination generation {gen})")
    cb.call("SDM.copy_data", {"job_id": job_id, "source": endpoint(sd1, img, vol),
                              "destination": endpoint(sd2, img, vol, gen)})
    tty = sys.stdout.isatty()
    last_line = None
    owners_seen = None
    while True:
        job = cb.call("Host.getJobs", {"job_ids": [job_id]})[job_id]
        if owners_seen is None and job["status"] == "running" and job["progress"] > 0:
            info = ca.call("Volume.getInfo", {"storagepoolID": pool, "storagedomainID": sd2,
                                              "imageID": img, "volumeID": vol})
            owners_seen = info["lease"]["owners"]
        line = f"copy {progress_bar(job['progress'])} {job['status']}"
        if tty:
            print("\r" + line, end="", flush=True)
        elif line != last_line:
            print(line, flush=True)
        last_line = line
        if job["status"] in ("done", "failed", "aborted"):
            break
        time.sleep(0.2 if tty else 1.0)
    if tty:
        print()
    if job["status"] != "done":
        log(f"copy {job['status']}: {job.get('error')}")
        return 1
    info = ca.call("Volume.getInfo", {"storagepoolID": pool, "storagedomainID": sd2, "imageID": img,
                                      "volumeID": vol})
    log(f"while copying, host A saw the destination lease owned by host id(s) {owners_seen}")
    log(f"destination is now {info['legality']}, generation {info['generation']} (was {gen}), "
        f"{info['truesize'] // MiB} MiB allocated of {info['capacity'] // MiB} MiB")
    r = subprocess.run(["qemu-img", "compare", src_path, os.path.join(storage, sd2, "images", img, vol)],
                       capture_output=True, text=True)
    log(f"qemu-img compare: {r.stdout.strip() or r.stderr.strip()}")
    stats = cb.call("Host.getStats")
    log(f"host B copied {stats['bytes_copied'] // MiB} MiB so far")
    log(f"the hosts keep running; talk to them with "
        f"'python3 tests/functional/stompclient.py -p {b.port} Host getJobs', stop them with 'scripts/demo down'")
    ca.close()
    cb.close()
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("command", nargs="?", default="up", choices=["up", "down"])
    p.add_argument("--dir", default=os.path.join(REPO, "demo"), help="working folder (default ./demo)")
    p.add_argument("--data-mib", type=int, default=1024, help="MiB of data to copy (default 1024)")
    args = p.parse_args()
    d = os.path.abspath(args.dir)
    os.makedirs(d, exist_ok=True)
    if args.command == "down":
        down(d)
        return 0
    return up(d, args.data_mib)


if __name__ == "__main__":
    sys.exit(main())
