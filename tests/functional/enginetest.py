# SPDX-License-Identifier: GPL-2.0-or-later
"""A real engine with real agents and sanlock daemons, for the engine tests."""

import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request

from ferrytest import BUILD, Agent, Sanlock, wait_for

ENGINE_BIN = os.path.join(BUILD, "src", "engine", "ferry-engine")


class HttpError(Exception):
    def __init__(self, status, body):
        super().__init__(status, body)
        self.status = status
        self.body = body


class Engine:
    def __init__(self, workdir, *extra):
        self.workdir = workdir
        self.db = os.path.join(workdir, "engine.db")
        self.log_path = os.path.join(workdir, "engine.log")
        self.extra = extra
        self.proc = None
        self.start()

    def start(self):
        self.log = open(self.log_path, "ab")
        offset = self.log.tell()
        self.proc = subprocess.Popen(
            [ENGINE_BIN, "--port=0", f"--db={self.db}", "--agent-insecure=true", "--poll-interval=200",
             "--host-timeout=3000", "--log-level=debug", *self.extra],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

        def listening():
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited with {self.proc.returncode}")
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                m = re.search(rb"listening on http://[0-9.]+:(\d+)", f.read())
            return int(m.group(1)) if m else None
        self.port = wait_for(listening, 10, "the engine to listen")
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
        return self.proc.returncode

    def restart(self):
        self.stop()
        self.start()

    def request(self, method, path, body=None, raw=None, headers=None, timeout=30):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                payload = json.loads(payload)
            except ValueError:
                pass
            raise HttpError(e.code, payload) from None

    def get(self, path):
        return self.request("GET", path)[1]

    def post(self, path, body):
        return self.request("POST", path, body)[1]

    def wait_job(self, job_id, timeout=180, seen=None):
        def finished():
            job = self.get(f"/api/jobs/{job_id}")
            if seen is not None:
                seen.append(job)
            return job if job["status"] in ("finished", "failed", "aborted") else None
        return wait_for(finished, timeout, f"job {job_id}", interval=0.1)


class EngineCluster:
    """N hosts (sanlock daemon + agent each) and an engine that manages them."""

    def __init__(self, workdir, hosts=3, domains=2, engine_args=(), agent_options=None, net=None, storage=None):
        """engine_args: extra engine options; agent_options: agent options for
        every host (copy_rate_limit defaults to 128M); net: a netns.Network
        with a namespace per host, the agents then run inside them and are
        added by their namespace address; storage: the shared storage root
        (default: <workdir>/storage)."""
        self.workdir = workdir
        self.storage = storage or os.path.join(workdir, "storage")
        os.makedirs(self.storage, exist_ok=True)
        self.net = net
        opts = dict({"copy_rate_limit": "128M"}, **(agent_options or {}))
        self.sanlocks = []
        self.agents = []
        self.engine = None
        try:
            self.sanlocks = [Sanlock(workdir, f"host{i + 1}") for i in range(hosts)]
            for i, s in enumerate(self.sanlocks):
                self.agents.append(Agent(workdir, f"host{i + 1}", s, self.storage,
                                         netns=net.hosts[i] if net else None, **opts))
            self.engine = Engine(workdir, *engine_args)
            self.hosts = {}
            for a in self.agents:
                h = self.engine.post("/api/hosts", {"name": a.name, "address": a.address, "port": a.port})
                self.hosts[a.name] = h
            wait_for(lambda: all(h["status"] == "up" for h in self.engine.get("/api/hosts")["hosts"]), 30, "hosts up")
            self.sds = [self.engine.post("/api/storagedomains", {"name": f"sd{i + 1}"}) for i in range(domains)]
            self.wait_ready()
        except BaseException:
            # Nobody else would stop what started: the caller never gets the object.
            self.stop()
            raise

    def wait_ready(self, timeout=90):
        def ready():
            hosts = self.engine.get("/api/hosts")["hosts"]
            dc = self.engine.get("/api/datacenters")["datacenters"][0]
            return dc["spm"] and all(h["status"] == "up" and h["pool_connected"] for h in hosts)
        wait_for(ready, timeout, "hosts connected and an SPM elected", interval=0.2)

    def wait_lockspaces(self, timeout=60):
        """Until every host's sanlock daemon has joined every domain's lockspace
        (what wait_ready's pool_connected should already mean)."""
        def joined(s):
            out = subprocess.run(["sanlock", "client", "status"], env=s.env, capture_output=True, text=True).stdout
            have = {line.split()[1].split(":")[0] for line in out.splitlines()
                    if line.startswith("s ") and not line.rstrip().endswith("ADD")}
            return all(sd["id"] in have for sd in self.sds)
        wait_for(lambda: all(joined(s) for s in self.sanlocks), timeout, "every host in every lockspace", interval=0.2)

    def spm_name(self):
        return self.engine.get("/api/datacenters")["datacenters"][0]["spm"]["name"]

    def sd_path(self, sd_id):
        return os.path.join(self.storage, sd_id)

    def agent(self, name):
        return next(a for a in self.agents if a.name == name)

    def stop(self):
        codes = {"engine": self.engine.stop()} if self.engine else {}
        for a in self.agents:
            codes[a.name] = a.stop()
        for s in self.sanlocks:
            s.stop()
        return codes
