# SPDX-License-Identifier: GPL-2.0-or-later
import os
import shutil
import subprocess
import tempfile
import threading

import pytest

from ferrytest import AGENT_BIN, Agent, Sanlock, free_port, new_uuid, run_job, MiB


def pytest_sessionstart(session):
    if not os.access(AGENT_BIN, os.X_OK):
        raise pytest.UsageError(f"{AGENT_BIN} is missing: build first (meson setup build && ninja -C build)")
    # The CLI keeps its tokens under $XDG_CONFIG_HOME: the tests' own, never the tester's.
    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="ferry-test-config-", dir=os.environ.get("FERRY_TEST_TMP"))


class Cluster:
    """Two hosts sharing one storage folder. A (host id 1) is the SPM; B (host
    id 2) copies, with a 64 MiB/s cap and one job slot so copies are slow
    enough to observe, abort and kill."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.storage = os.path.join(workdir, "storage")
        os.makedirs(self.storage)
        self.pool = new_uuid()
        self.sd1 = new_uuid()
        self.sd2 = new_uuid()
        self.sanlocks = [Sanlock(workdir, "hostA"), Sanlock(workdir, "hostB")]
        self.a = Agent(workdir, "A", self.sanlocks[0], self.storage, host_id=1, metrics_port=free_port())
        self.b = Agent(workdir, "B", self.sanlocks[1], self.storage, host_id=2,
                       copy_rate_limit="64M", max_jobs=1, connect_timeout=4, metrics_port=free_port())
        with self.a.client() as c:
            c.call("StorageDomain.create", {"storagedomainID": self.sd1, "name": "sd1"})
            c.call("StorageDomain.create", {"storagedomainID": self.sd2, "name": "sd2"})
        # Joining a lockspace takes seconds: both hosts join at once.
        errors = []
        threads = [threading.Thread(target=self._connect_safe, args=(agent, errors))
                   for agent in (self.a, self.b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        with self.a.client() as c:
            status = c.call("StoragePool.spmStart", {"storagepoolID": self.pool})
            assert status["spmStatus"] == "SPM"

    def _connect_safe(self, agent, errors):
        try:
            self.connect(agent)
        except Exception as e:  # noqa: BLE001 - re-raised in the main thread
            errors.append(e)

    def connect(self, agent):
        host_id = 1 if agent is self.a else 2
        with agent.client(timeout=60) as c:
            c.call("StoragePool.connect", {
                "storagepoolID": self.pool, "hostID": host_id, "masterSdUUID": self.sd1,
                "domainDict": {self.sd1: "active", self.sd2: "active"}}, timeout=60)

    def path(self, sd, img, vol=None):
        p = os.path.join(self.storage, sd, "images", img)
        return os.path.join(p, vol) if vol else p

    def create_volume(self, sd, img, vol, size, fmt="RAW", alloc="SPARSE", parent=None):
        params = {"storagepoolID": self.pool, "storagedomainID": sd, "imageID": img,
                  "volumeID": vol, "size": str(size), "volFormat": fmt, "preallocate": alloc,
                  "diskType": "DATA", "desc": "test"}
        if parent:
            params["srcImgUUID"] = img
            params["srcVolUUID"] = parent
        with self.a.client() as c:
            job = run_job(c, "Volume.create", params)
        assert job["status"] == "done", job
        return vol

    def volume_info(self, sd, img, vol, agent=None):
        with (agent or self.a).client() as c:
            return c.call("Volume.getInfo", {"storagepoolID": self.pool, "storagedomainID": sd,
                                             "imageID": img, "volumeID": vol})

    def stop(self):
        codes = {}
        for agent in (self.a, self.b):
            codes[agent.name] = agent.stop()
        for s in self.sanlocks:
            s.stop()
        return codes


WORKDIRS = []


def make_workdir():
    d = tempfile.mkdtemp(prefix="ferry-test-", dir=os.environ.get("FERRY_TEST_TMP"))
    WORKDIRS.append(d)
    return d


@pytest.fixture(scope="session")
def workdir():
    d = make_workdir()
    yield d
    if os.environ.get("FERRY_KEEP_TMP"):
        print(f"\nkept {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(workdir):
    c = Cluster(os.path.join(workdir, "cluster"))
    yield c
    reports = {a.name: a.sanitizer_report() for a in (c.a, c.b)}
    codes = c.stop()
    # A clean SIGTERM shutdown exits 0; anything else (a sanitizer report
    # included) is a bug worth failing on.
    assert all(code == 0 for code in codes.values()), (codes, reports)


@pytest.fixture
def img():
    return new_uuid()


def pytest_sessionfinish(session, exitstatus):
    """After every fixture is torn down: nothing the tests started may survive."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    # Only this run's folders: other test runs may be going on beside this one.
    leftovers = [line.strip() for line in out.splitlines()
                 if any(d in line for d in WORKDIRS)]
    if leftovers:
        print("\nFAILED: processes survived the tests:\n  " + "\n  ".join(leftovers))
        for line in leftovers:
            try:
                os.kill(int(line.split()[0]), 9)
            except (ProcessLookupError, ValueError):
                pass
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


__all__ = ["MiB"]
