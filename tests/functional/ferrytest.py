# SPDX-License-Identifier: GPL-2.0-or-later
"""Real processes for the functional tests: sanlock daemons, ferry-agents,
storage on a temporary folder. Readiness is checked, never slept for; every
process is killed in teardown whatever happened."""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import urllib.request
import time
import uuid

from stompclient import Client, RpcError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(os.environ.get("FERRY_BUILD_DIR", os.path.join(REPO, "build")))
AGENT_BIN = os.path.join(BUILD, "src", "agent", "ferry-agent")
IO_TIMEOUT = 2
SANITIZER_EXIT = 99   # what Agent.stop() returns when the agent printed a sanitizer report
MiB = 1024 * 1024


def wait_for(predicate, timeout, what, interval=0.05):
    """Polls predicate until it returns a true value; fails with `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def new_uuid():
    return str(uuid.uuid4())


def free_port():
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sanlock:
    """One sanlock daemon = one simulated host's lease manager."""

    def __init__(self, workdir, name):
        self.name = name
        self.run_dir = os.path.join(workdir, f"sanlock-{name}")
        os.makedirs(self.run_dir, exist_ok=True)
        self.env = dict(os.environ, SANLOCK_PRIVILEGED="0", SANLOCK_RUN_DIR=self.run_dir)
        self.log = open(os.path.join(workdir, f"sanlock-{name}.log"), "wb")
        self.proc = subprocess.Popen(
            ["sanlock", "daemon", "-D", "-w", "0", "-l", "0", "-h", "0",
             "-U", "root", "-G", "root", "-e", name],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._ready, 10, f"sanlock daemon {name}")

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"sanlock daemon {self.name} exited with {self.proc.returncode}")
        r = subprocess.run(["sanlock", "client", "status"], env=self.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return r.returncode == 0

    def stop(self):
        if self.proc.poll() is None:
            subprocess.run(["sanlock", "client", "shutdown", "-f", "1"], env=self.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class Agent:
    """A ferry-agent process from the build tree, on a port it picks itself."""

    def __init__(self, workdir, name, sanlock, storage_root, netns=None, **options):
        self.workdir = workdir
        self.name = name
        self.sanlock = sanlock
        self.storage_root = storage_root
        # netns: a netns.HostNet; the agent runs inside its namespace and
        # listens on its address (the sanlock daemon stays reachable by its
        # unix socket, storage by its path).
        self.netns = netns
        if netns is not None:
            options.setdefault("listen_address", netns.addr)
        self.address = options.get("listen_address", "127.0.0.1")
        self.options = options
        self.proc = None
        self.port = None
        self.log_path = os.path.join(workdir, f"agent-{name}.log")
        self.start()

    def argv(self):
        args = [*(self.netns.prefix() if self.netns else []), AGENT_BIN, f"--port={self.options.get('port', 0)}", f"--storage-root={self.storage_root}",
                f"--sanlock-run-dir={self.sanlock.run_dir}", f"--io-timeout={IO_TIMEOUT}",
                f"--host-name={self.name}", "--log-level=debug",
                f"--transfer-port={self.options.get('transfer_port', 0)}"]
        if "insecure" not in self.options:
            args.append("--insecure=true")
        for key, value in self.options.items():
            if key in ("port", "transfer_port"):
                continue
            args.append(f"--{key.replace('_', '-')}={value}")
        return args

    def start(self):
        self.log = open(self.log_path, "ab")
        self._log_offset = self.log.tell()
        self.proc = subprocess.Popen(self.argv(), stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.port = wait_for(self._listening, 10, f"agent {self.name} to listen")

    def _listening(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"agent {self.name} exited with {self.proc.returncode}: {self.log_tail()}")
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            m = re.search(rb"listening on [0-9.]+:(\d+)", f.read())
        return int(m.group(1)) if m else None

    def log_tail(self, n=4000):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-n:]

    def client(self, **kw):
        return Client(self.address, self.port, **kw)

    @property
    def metrics_url(self):
        """http://…/metrics when started with metrics_port (and insecure), else None."""
        port = self.options.get("metrics_port")
        return f"http://{self.address}:{port}/metrics" if port else None

    def scrape(self):
        """The text of one GET /metrics."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
            return r.read().decode("utf-8")

    def kill(self):
        """SIGKILL, as a crash: no cleanup runs in the agent."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
        # Anything the agent started (qemu-img) must not outlive it.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.sanitizer_report():
            return SANITIZER_EXIT
        return self.proc.returncode

    def sanitizer_report(self):
        """The first lines of an ASan/LSan/UBSan report in the agent's log, if any."""
        with open(self.log_path, "rb") as f:
            text = f.read().decode(errors="replace")
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            i = text.find(marker)
            if i >= 0:
                return text[max(0, i - 200):i + 2000]
        return None

    def restart(self):
        self.stop()
        self.start()

    def start_same_port(self):
        """Starts again on the port it had, as a host that comes back would."""
        self.options["port"] = self.port
        self.start()


def wait_job(client, job_id, timeout=120, statuses=("done", "failed", "aborted")):
    def finished():
        jobs = client.call("Host.getJobs", {"job_ids": [job_id]})
        job = jobs.get(job_id)
        if job is None:
            raise AssertionError(f"job {job_id} vanished")
        return job if job["status"] in statuses else None
    return wait_for(finished, timeout, f"job {job_id} to reach {statuses}", interval=0.1)


def run_job(client, method, params, timeout=120):
    """Runs an SPM verb that returns a job id, waits for it, returns the job."""
    job_id = client.call(method, params)
    return wait_job(client, job_id, timeout)


def endpoint(sd, img, vol, generation=None):
    ep = {"endpoint_type": "div", "sd_id": sd, "img_id": img, "vol_id": vol}
    if generation is not None:
        ep["generation"] = generation
    return ep


def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def write_random_extents(path, extents, seed=1):
    """Writes pseudo-random data at (offset, length) pairs, leaving holes between."""
    import random
    rng = random.Random(seed)
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset, length in extents:
            done = 0
            while done < length:
                n = min(4 * MiB, length - done)
                os.pwrite(fd, rng.randbytes(n), offset + done)
                done += n
        os.fsync(fd)
    finally:
        os.close(fd)


def qemu_io_write(path, fmt, pattern, offset, length):
    subprocess.run(["qemu-io", "-f", fmt, "-c", f"write -P {pattern} {offset} {length}", path],
                   check=True, stdout=subprocess.DEVNULL)


def qemu_img_compare(a, b):
    return subprocess.run(["qemu-img", "compare", a, b], capture_output=True, text=True)


def qemu_img_map(path):
    out = subprocess.run(["qemu-img", "map", "--output=json", path], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)
