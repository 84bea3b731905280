"""Review 13b: a capped qemu-img copy whose coarse (1 %) progress stays flat for
several stall_timeouts while it writes is not flagged stalled (last round's blocker)."""
import os
import shutil
import subprocess
import time

from conftest import make_workdir
from enginetest import EngineCluster
from ferrytest import MiB, wait_for
from test_observability import engine_raw, sample

STALL_TIMEOUT = 3


def test_capped_copy_with_flat_progress_is_not_stalled():
    d = make_workdir()
    ec = EngineCluster(d, hosts=2, agent_options={"copy_rate_limit": "2M"},
                       engine_args=[f"--stall-timeout={STALL_TIMEOUT}", "--stall-action=retry"])
    try:
        r = ec.engine.post("/api/disks", {"name": "flat", "provisioned_size": 4096 * MiB, "format": "cow",
                                          "sparse": True, "storage_domain": {"id": ec.sds[0]["id"]}})
        assert ec.engine.wait_job(r["job"]["id"], 60)["status"] == "finished"
        disk = ec.engine.get(f"/api/disks/{r['disk']['id']}")
        src = os.path.join(ec.storage, ec.sds[0]["id"], "images", disk["id"], disk["volumes"][0]["id"])
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a 0 {16 * MiB}", src], check=True,
                       stdout=subprocess.DEVNULL)
        r = ec.engine.post(f"/api/disks/{disk['id']}/copy", {"name": "flat-copy",
                                                              "storage_domain": {"id": ec.sds[1]["id"]}})
        job_id = r["job"]["id"]
        t0 = time.monotonic()
        flagged, last_p, flat_since, longest_flat = [], None, time.monotonic(), 0.0
        while True:
            job = ec.engine.get(f"/api/jobs/{job_id}")
            for s in ec.engine.get(f"/api/jobs/{job_id}/steps")["steps"]:
                if s["type"] == "copy_data" and s["status"] == "started":
                    if s.get("status_detail") == "stalled":
                        flagged.append(s)
                        print("FLAGGED at", round(time.monotonic() - t0, 1), "progress", s["progress"])
                    elif int(time.monotonic() - t0) % 3 == 0:
                        print("t", round(time.monotonic() - t0, 1), "progress", s["progress"], "eta", s.get("eta_seconds"))
                    if s["progress"] != last_p:
                        last_p, flat_since = s["progress"], time.monotonic()
                    longest_flat = max(longest_flat, time.monotonic() - flat_since)
            if job["status"] != "started":
                break
            time.sleep(0.2)
        text = engine_raw(ec, "GET", "/metrics")[2].decode()
        print("longest flat progress", longest_flat, "flagged", len(flagged))
        for e in ec.engine.get("/api/events")["events"]:
            if "stall" in e["message"] or "moves again" in e["message"] or "abort" in e["message"] or "retry" in e["message"]:
                print("EVENT", e["message"])
        assert longest_flat > 2 * STALL_TIMEOUT, longest_flat     # the case is exercised
        assert not flagged, flagged[0]
        assert sample(text, "ferry_engine_stalls_total") == 0
        assert job["status"] == "finished", job
    finally:
        ec.stop()
        shutil.rmtree(d, ignore_errors=True)
