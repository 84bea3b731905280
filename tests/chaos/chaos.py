#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Chaos run: random disk operations on a real 3-host cluster (each host in
its own network namespace) while random faults hit it, checking after every
round that nothing was lost or left behind (tests/functional/invariant.py).

Operations: move a disk to the other domain, copy it there, clone a VM
from a template (when the engine has the VM/template API: the pool then
holds a VM's disk and a template made from it), remove a copy or a cloned
VM with its disk.
Faults, injected while a round's operations run (mostly once a copy is
moving bytes, at 32 MiB/s per host): a host's network cut and
restored 1-15 s later (longer than the engine's --host-lost-timeout of 10 s
now and then, so a live host's copy gets fenced), an agent killed (SIGKILL)
and restarted 0-3 s later, the engine killed (SIGKILL) or stopped (SIGTERM)
and restarted. A round runs up to 2 operations at once on distinct disks.

Counts at the end: operations, faults, successes, clean failures,
violations. Exit 0 only when there were no violations (a broken invariant,
an operation that did not end in time, a copy that failed but left its disk
behind). Seeded: the same --seed draws the same operations and faults; the
timing of real processes still varies, and an operation that fails instead
of succeeding changes the disk pool and so what is drawn next.

Run time is bounded: every wait has a limit, and no new round starts after
--time-limit seconds (default 1500); with the defaults a run takes about
10-15 minutes on 2 vCPUs.

    tests/chaos/chaos.py [--build DIR] [--seed N] [--ops 50] [--time-limit S] [--keep]
"""

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FUNCTIONAL = os.path.join(REPO, "tests", "functional")
MiB = 1024 * 1024

OP_TIMEOUT = 240          # one operation, faults included (fencing a live host's copy waits for it)
SETTLE = 90               # for the cluster to be whole again and the invariant to hold


class Stats:
    def __init__(self):
        self.operations = 0
        self.by_kind = {}
        self.faults = {}
        self.faults_mid_copy = 0
        self.successes = 0
        self.clean_failures = 0
        self.failures_with_violations = 0
        self.violations = []

    def fault(self, kind):
        self.faults[kind] = self.faults.get(kind, 0) + 1

    def report(self, seed, elapsed):
        lines = [f"chaos seed={seed}: {elapsed:.0f} s",
                 f"  operations:     {self.operations} "
                 + " ".join(f"{k}={v}" for k, v in sorted(self.by_kind.items())),
                 f"  faults:         {sum(self.faults.values())} "
                 + " ".join(f"{k}={v}" for k, v in sorted(self.faults.items()))
                 + f" ({self.faults_mid_copy} while a copy ran)",
                 f"  successes:      {self.successes}",
                 f"  clean failures: {self.clean_failures}",
                 f"  unclean failures: {self.failures_with_violations}",
                 f"  violations:     {len(self.violations)}"]
        lines += [f"    - {v}" for v in self.violations]
        return "\n".join(lines)


class Chaos:
    def __init__(self, seed, ops, time_limit, keep, log=print):
        from enginetest import EngineCluster
        from netns import Network

        self.rng = random.Random(seed)
        self.seed = seed
        self.ops = ops
        self.time_limit = time_limit
        self.keep = keep
        self.log = log
        self.stats = Stats()
        self.disks = {}            # disk id -> {"digest", "name", "copy": bool}
        self.workdir = tempfile.mkdtemp(prefix="ferry-chaos-", dir=os.environ.get("FERRY_TEST_TMP"))
        self.scratch = os.path.join(self.workdir, "scratch")
        os.makedirs(self.scratch)
        self.net = Network(3)
        self.ec = None
        try:
            self.ec = EngineCluster(self.workdir, net=self.net, agent_options={"copy_rate_limit": "32M"},
                                    engine_args=("--host-timeout=1500", "--host-failures=2",
                                                 "--host-lost-timeout=10", "--sweep-interval=15"))
            self.ec.wait_lockspaces(10)
        except BaseException:
            self.close()
            raise

    def close(self):
        if self.ec:
            # Nothing may be left cut, stopped or half-started.
            for h in self.net.hosts:
                h.restore()
            self.ec.stop()
            self.ec = None
        self.net.close()
        if self.keep:
            self.log(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- the disk pool -------------------------------------------------------

    def make_pool(self, n=6):
        """n disks with random data; then, the VM/template API permitting, a
        VM holding the first disk and a template made from it (clone source)."""
        from invariant import create_disk, disk_digest, fill_disk, wait_job_end
        for i in range(n):
            if i % 2 == 0:
                disk = create_disk(self.ec, f"chaos-raw-{i}", 256 * MiB, sd_id=self.ec.sds[i % 2]["id"])
                fill_disk(self.ec, disk, self.rng.choice([64, 128, 192]) * MiB, seed=self.seed * 100 + i)
            else:
                vols = self.rng.randint(2, 4)
                disk = create_disk(self.ec, f"chaos-cow-{i}", 128 * MiB, fmt="cow", volumes=vols,
                                   sd_id=self.ec.sds[i % 2]["id"])
                fill_disk(self.ec, disk, self.rng.choice([32, 64, 96]) * MiB, seed=self.seed * 100 + i)
            self.disks[disk["id"]] = {"digest": disk_digest(self.ec, disk["id"], self.scratch),
                                      "name": disk["name"], "role": "base"}
        self.template = None
        if not self.has_templates():
            self.log("no VM/template API in this engine: no clones")
            return
        first = next(iter(self.disks))
        vm = self.ec.engine.post("/api/vms", {"name": "chaos-vm"})
        self.ec.engine.post(f"/api/vms/{vm['id']}/diskattachments", {"disk": {"id": first}})
        self.disks[first]["role"] = "vmdisk"
        r = self.ec.engine.post("/api/templates", {"name": "chaos-template", "vm": {"id": vm["id"]}})
        job = wait_job_end(self.ec, r["job"]["id"], 180)
        assert job["status"] == "finished", job
        self.template = r["template"]["id"]
        t = self.ec.engine.get(f"/api/templates/{self.template}")
        tdisk = t["disk_attachments"][0]["disk"]["id"]
        self.disks[tdisk] = {"digest": self.disks[first]["digest"], "name": "chaos-template-disk",
                             "role": "template"}

    def has_templates(self):
        from enginetest import HttpError
        try:
            self.ec.engine.get("/api/templates")
            return True
        except HttpError as e:
            if e.status == 404:
                return False
            raise

    def other_sd(self, disk_id):
        d = self.ec.engine.get(f"/api/disks/{disk_id}")
        cur = d["storage_domains"][0]["id"]
        return next(s["id"] for s in self.ec.sds if s["id"] != cur)

    # ---- operations --------------------------------------------------------

    def start_op(self, n):
        """Starts one random operation; returns its record or None if the engine refused it."""
        from enginetest import HttpError
        removable = [d for d, v in self.disks.items() if v["role"] in ("copy", "clone")]
        kinds = ["move"] * 5 + ["copy"] * 3 + (["clone"] * 2 if self.template else []) + \
            (["remove"] * 2 if len(removable) > 3 else [])
        kind = self.rng.choice(kinds)
        if kind == "remove":
            pool = removable
        elif kind == "move":
            pool = [d for d, v in self.disks.items() if v["role"] != "template"]   # templates never move
        elif kind == "clone":
            pool = [d for d, v in self.disks.items() if v["role"] == "template"]
        else:
            pool = list(self.disks)
        pool = [d for d in pool if d not in self.busy]
        if not pool:
            return None
        disk_id = self.rng.choice(sorted(pool))
        info = self.disks[disk_id]
        op = {"n": n, "kind": kind, "disk": disk_id, "new": None, "vm": None}
        try:
            if kind == "remove" and info["role"] == "clone":
                status, r = self.ec.engine.request("DELETE", f"/api/vms/{info['vm']}")
            elif kind == "remove":
                status, r = self.ec.engine.request("DELETE", f"/api/disks/{disk_id}")
            elif kind == "clone":
                r = self.ec.engine.post("/api/vms", {"name": f"chaos-clone-{n}", "template": {"id": self.template},
                                                     "clone": True})
                op["vm"] = r["vm"]["id"]
            else:
                body = {"storage_domain": {"id": self.other_sd(disk_id)}}
                if kind == "copy":
                    body["name"] = f"chaos-copy-{n}"
                r = self.ec.engine.post(f"/api/disks/{disk_id}/{kind}", body)
                op["new"] = (r.get("disk") or {}).get("id")
        except HttpError as e:
            # 503 while a host or the SPM is away is an answer, not a violation.
            if e.status in (409, 503, 507):
                self.log(f"  op {n}: {kind} {info['name']} refused: {e.status}")
                return None
            raise
        op["job"] = r["job"]["id"]
        self.busy.add(disk_id)
        self.stats.operations += 1
        self.stats.by_kind[kind] = self.stats.by_kind.get(kind, 0) + 1
        self.log(f"  op {n}: {kind} {info['name']} job {op['job']}")
        return op

    def engine_call(self, fn, timeout=60):
        """fn() against the engine, riding out an engine restart."""
        from ferrytest import wait_for
        last = []

        def attempt():
            try:
                return (fn(),)
            except (OSError, ConnectionError) as e:
                last[:] = [e]
                return None
        return wait_for(attempt, timeout, f"the engine to answer ({last})", interval=0.5)[0]

    def finish_op(self, op, deadline):
        from ferrytest import wait_for
        from invariant import TERMINAL

        def ended():
            try:
                job = self.ec.engine.get(f"/api/jobs/{op['job']}")
            except (OSError, ConnectionError):
                return None         # the engine is restarting
            return job if job["status"] in TERMINAL else None
        try:
            job = wait_for(ended, max(1, deadline - time.monotonic()), f"job {op['job']}", interval=0.3)
        except TimeoutError:
            self.stats.violations.append(f"op {op['n']} ({op['kind']} {op['disk']}): did not end within "
                                         f"{OP_TIMEOUT} s")
            return
        self.busy.discard(op["disk"])
        ok = job["status"] == "finished"
        self.log(f"  op {op['n']}: {op['kind']} {job['status']}")
        src = self.disks[op["disk"]]
        if ok:
            self.stats.successes += 1
            if op["kind"] == "copy":
                self.disks[op["new"]] = {"digest": src["digest"], "name": f"chaos-copy-{op['n']}", "role": "copy"}
            elif op["kind"] == "clone":
                vm = self.engine_call(lambda: self.ec.engine.get(f"/api/vms/{op['vm']}"))
                for att in vm["disk_attachments"]:
                    self.disks[att["disk"]["id"]] = {"digest": src["digest"], "name": f"chaos-clone-{op['n']}",
                                                     "role": "clone", "vm": op["vm"]}
            elif op["kind"] == "remove":
                del self.disks[op["disk"]]
        else:
            # Clean once the invariant holds after the round.
            self.round_failures += 1
            if op["kind"] == "copy" and op["new"]:
                listed = {d["id"] for d in self.engine_call(lambda: self.ec.engine.get("/api/disks"))["disks"]}
                if op["new"] in listed:
                    self.stats.violations.append(f"op {op['n']}: the failed copy's disk {op['new']} is still listed")
            if op["kind"] == "clone":
                vms = {v["id"] for v in self.engine_call(lambda: self.ec.engine.get("/api/vms"))["vms"]}
                if op["vm"] in vms:
                    self.stats.violations.append(f"op {op['n']}: the failed clone's VM {op['vm']} is still listed")

    # ---- faults ------------------------------------------------------------

    def copying_host(self, ops):
        for op in ops:
            try:
                steps = self.ec.engine.get(f"/api/jobs/{op['job']}/steps")["steps"]
            except Exception:  # noqa: BLE001 - best effort: any host will do
                return None
            for s in steps:
                if s["type"] == "copy_data" and s["status"] == "started" and s["execution_host"]:
                    return s["execution_host"]["name"]
        return None

    def inject(self, ops):
        """One random fault while `ops` run; returns when the fault is over (host back, engine up)."""
        # Mostly while bytes flow (that is where recovery is hard), sometimes anywhere in the flow.
        kind = self.rng.choice(["cut", "cut", "agent", "agent", "engine"])
        aim = self.rng.random() < 0.8
        delay = self.rng.uniform(0, 1.5) if aim else self.rng.uniform(0, 3)
        deadline = time.monotonic() + 15
        target = None
        while aim and target is None and time.monotonic() < deadline:
            target = self.copying_host(ops)
            time.sleep(0.1)
        time.sleep(delay)
        if self.copying_host(ops):
            self.stats.faults_mid_copy += 1
        agents = self.ec.agents
        fallback = self.rng.choice(agents)      # drawn always, so timing does not shift the sequence
        agent = next((a for a in agents if a.name == target), None) or fallback
        self.stats.fault(kind)
        if kind == "cut":
            hold = self.rng.uniform(1, 15)
            self.log(f"  fault: cut {agent.name} for {hold:.1f} s")
            agent.netns.cut()
            try:
                time.sleep(hold)
            finally:
                agent.netns.restore()
        elif kind == "agent":
            down = self.rng.uniform(0, 3)
            self.log(f"  fault: kill agent {agent.name}, back after {down:.1f} s")
            agent.kill()
            time.sleep(down)
            agent.start_same_port()
        else:
            sig = self.rng.choice([signal.SIGKILL, signal.SIGTERM])
            self.log(f"  fault: engine {signal.Signals(sig).name}")
            self.ec.engine.stop(sig)
            time.sleep(self.rng.uniform(0, 2))
            self.ec.engine.start()

    # ---- checks ------------------------------------------------------------

    def settle(self):
        """Waits for every host up and an SPM, then checks the invariant."""
        from invariant import disk_digest, structure_problems
        try:
            self.ec.wait_ready(SETTLE)
        except TimeoutError as e:
            self.stats.violations.append(f"cluster did not recover: {e}")
            return False
        deadline = time.monotonic() + SETTLE
        while True:
            problems = structure_problems(self.ec)
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(1)
        self.stats.violations += problems
        if problems:
            return False
        for disk_id, info in self.disks.items():
            try:
                got = disk_digest(self.ec, disk_id, self.scratch)
            except Exception as e:  # noqa: BLE001 - a missing disk is a violation, reported
                self.stats.violations.append(f"disk {info['name']} unreadable: {e}")
                continue
            if got != info["digest"]:
                self.stats.violations.append(f"disk {info['name']} ({disk_id}): content changed")
        if self.template:
            for v in self.ec.engine.get("/api/vms")["vms"] + self.ec.engine.get("/api/templates")["templates"]:
                if v["status"] != "ok":
                    self.stats.violations.append(f"{v['name']} ({v['id']}) is {v['status']}")
        listed = {d["id"] for d in self.ec.engine.get("/api/disks")["disks"]}
        for disk_id in set(self.disks) - listed:
            self.stats.violations.append(f"disk {self.disks[disk_id]['name']} ({disk_id}) vanished")
        return True

    def run(self):
        t0 = time.monotonic()
        self.busy = set()
        self.round_failures = 0
        self.make_pool()
        self.log(f"pool: {len(self.disks)} disks; {self.ops} operations, seed {self.seed}")
        n = 0
        rnd = 0
        while n < self.ops and time.monotonic() - t0 < self.time_limit:
            rnd += 1
            width = min(self.rng.choice([1, 2, 2]), self.ops - n)
            ops = []
            for _ in range(width):
                n += 1
                op = self.start_op(n)
                if op:
                    ops.append(op)
            self.log(f"round {rnd}: {len(ops)} operations")
            if ops and self.rng.random() < 0.7:
                try:
                    self.inject(ops)
                except Exception:  # noqa: BLE001 - the cluster is in an unknown state: stop here
                    self.stats.violations.append("fault injection failed: " + traceback.format_exc())
                    break
            deadline = time.monotonic() + OP_TIMEOUT
            for op in ops:
                self.finish_op(op, deadline)
            if self.busy:
                break          # a stuck operation: checking further rounds would only pile up
            failures, self.round_failures = self.round_failures, 0
            if not self.settle():
                self.stats.failures_with_violations += failures
                break
            self.stats.clean_failures += failures
        return time.monotonic() - t0


def run(seed=1, ops=50, time_limit=1500, keep=False, build=None, log=print):
    """Runs a chaos session; returns (Stats, report text)."""
    if build:
        os.environ["FERRY_BUILD_DIR"] = os.path.abspath(build)
    if FUNCTIONAL not in sys.path:
        sys.path.insert(0, FUNCTIONAL)
    from netns import available
    why = available()
    if why:
        raise RuntimeError(f"chaos needs network namespaces: {why}")
    c = Chaos(seed, ops, time_limit, keep, log)
    elapsed = 0
    try:
        elapsed = c.run()
    except Exception:  # noqa: BLE001 - any crash of the driver is a violation, with its trace
        c.stats.violations.append("chaos driver error: " + traceback.format_exc())
    finally:
        c.close()
    return c.stats, c.stats.report(seed, elapsed)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.environ.get("FERRY_BUILD_DIR", os.path.join(REPO, "build")))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ops", type=int, default=50)
    p.add_argument("--time-limit", type=int, default=1500, help="no new round after this many seconds")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs of every process)")
    args = p.parse_args()
    stats, report = run(args.seed, args.ops, args.time_limit, args.keep, args.build,
                        log=lambda m: print(m, flush=True))
    print(report)
    return 1 if stats.violations else 0


if __name__ == "__main__":
    sys.exit(main())
