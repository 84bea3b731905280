# SPDX-License-Identifier: GPL-2.0-or-later
"""Real processes for the functional tests: sanlock daemons, ferry-agents,
storage on a temporary folder. Readiness is checked, never slept for; every
process is killed in teardown whatever happened."""

import atexit
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
import uuid

from stompclient import Client, RpcError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(os.environ.get("FERRY_BUILD_DIR", os.path.join(REPO, "build")))
AGENT_BIN = os.path.join(BUILD, "src", "agent", "ferry-agent")
FERRY = os.path.join(BUILD, "src", "cli", "ferry")
IO_TIMEOUT = 2
SANITIZER_EXIT = 99   # what Agent.stop() returns when the agent printed a sanitizer report


def _sanitized():
    try:
        with open(os.path.join(BUILD, "meson-info", "intro-buildoptions.json")) as f:
            return any(o["name"] == "b_sanitize" and o["value"] not in ("none", "") for o in json.load(f))
    except (OSError, ValueError):
        return False


# The binaries under test carry AddressSanitizer/UBSan (scripts/test's second
# pass). Their memory figures include ASan's redzones and its quarantine of
# freed blocks, and every call is several times slower: the few tests that
# assert an RSS or latency bound use a wider one there (each says which).
SANITIZED = _sanitized()
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


def tls_client_env(env=None):
    """The environment for a short-lived TLS client (ferry, ferry-rpc, an engine).
    Under ASan, LeakSanitizer's tracer crashes (SIGSEGV in its stop-the-world)
    when a process exits while glib-networking's TLS threads are still up; the
    leak check is off for TLS clients only. The agents, TLS servers, keep it."""
    env = dict(os.environ if env is None else env)
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    return env


class Pki:
    """A CA and its certificates, made by `ferry pki` (GnuTLS) as an operator would."""

    def __init__(self, d, engine_addresses=("127.0.0.1", "::1", "localhost")):
        self.dir = d
        args = [a for addr in engine_addresses for a in ("--address", addr)]
        if not os.path.exists(os.path.join(d, "ca.pem")):     # an engine restarted in the same folder keeps it
            self._ferry("pki", "init", "--dir", d, "--name", "engine", *args)
        self.ca = os.path.join(d, "ca.pem")
        self.engine_cert = os.path.join(d, "engine.pem")
        self.engine_key = os.path.join(d, "engine.key")

    @staticmethod
    def _ferry(*args):
        r = subprocess.run([FERRY, *args], capture_output=True, text=True, timeout=60, env=tls_client_env())
        if r.returncode != 0:
            raise RuntimeError(f"ferry {' '.join(args)} failed: {r.stderr}")
        return r

    def issue(self, name, *addresses):
        """An agent's certificate: (cert, key) paths."""
        args = [a for addr in addresses for a in ("--address", addr)]
        self._ferry("pki", "issue", "--dir", self.dir, "--host", name, *args)
        return os.path.join(self.dir, "hosts", f"{name}.pem"), os.path.join(self.dir, "hosts", f"{name}.key")

    def agent_options(self, name, address="127.0.0.1"):
        cert, key = self.issue(name, address)
        return {"insecure": "false", "tls_cert": cert, "tls_key": key, "tls_ca": self.ca}

    def engine_args(self):
        return [f"--tls-cert={self.engine_cert}", f"--tls-key={self.engine_key}", f"--tls-ca={self.ca}"]

    def client_tls(self):
        """What the engine presents to agents, for the Python STOMP client."""
        return {"cert": self.engine_cert, "key": self.engine_key, "ca": self.ca}


def make_pki(d):
    """d/ca.pem; server.pem/.key: an agent's certificate for 127.0.0.1; client.pem/.key:
    the engine's; rogue.pem/.key: a certificate for the same name and address from
    another CA."""
    pki = Pki(os.path.join(d, "ca"))
    rogue = Pki(os.path.join(d, "rogue-ca"))
    files = {"ca.pem": pki.ca, "client.pem": pki.engine_cert, "client.key": pki.engine_key}
    files["server.pem"], files["server.key"] = pki.issue("server", "127.0.0.1")
    files["rogue.pem"], files["rogue.key"] = rogue.issue("server", "127.0.0.1")
    for name, path in files.items():
        shutil.copy(path, os.path.join(d, name))
    return pki


_SESSION_PKI = []


def session_pki():
    """The CA of every agent a test starts without certificates of its own."""
    if not _SESSION_PKI:
        d = tempfile.mkdtemp(prefix="ferry-test-pki-", dir=os.environ.get("FERRY_TEST_TMP"))
        atexit.register(shutil.rmtree, d, True)
        _SESSION_PKI.append(Pki(os.path.join(d, "pki")))
    return _SESSION_PKI[0]


def tls_wrap(sock, client_tls):
    """A client socket speaking TLS with client_tls (as for stompclient.Client)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_cert_chain(client_tls["cert"], client_tls["key"])
    ctx.load_verify_locations(client_tls["ca"])
    return ctx.wrap_socket(sock)


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
        # What a STOMP client presents to a TLS agent: set by whoever gave it its certificate.
        self.client_tls = None
        if "insecure" not in options:
            # Mutual TLS, as in production, with the session's CA; the client side is the engine's certificate.
            pki = session_pki()
            options.update(pki.agent_options(name, self.address))
            self.client_tls = pki.client_tls()
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
        m = re.search(r"listening on [0-9.]+:(\d+)", self.log_this_life())
        return int(m.group(1)) if m else None

    def log_tail(self, n=4000):
        """The log's last n characters, whichever lives of the agent wrote them (the file is appended to)."""
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-n:]

    def log_this_life(self):
        """What the process last started wrote: a restarted agent's earlier lives are left out."""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            return f.read().decode(errors="replace")

    def raw_socket(self, tls=True, timeout=10):
        """A connection to the STOMP port for frames written by hand; TLS as client() does unless tls=False."""
        s = socket.create_connection((self.address, self.port), timeout=timeout)
        return tls_wrap(s, self.client_tls) if tls and self.client_tls else s

    def client(self, **kw):
        kw.setdefault("tls", self.client_tls)
        return Client(self.address, self.port, **kw)

    @property
    def tls(self):
        return str(self.options.get("insecure", "false")).lower() != "true"

    @property
    def metrics_url(self):
        """https://…/metrics (http:// with insecure) when started with metrics_port, else None."""
        port = self.options.get("metrics_port")
        return f"{'https' if self.tls else 'http'}://{self.address}:{port}/metrics" if port else None

    def scrape(self):
        """The text of one GET /metrics, the agent's certificate checked against its CA."""
        context = ssl.create_default_context(cafile=self.options["tls_ca"]) if self.tls else None
        with urllib.request.urlopen(self.metrics_url, timeout=10, context=context) as r:
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


def blkhash(path, block_size=4 * MiB):
    """ovirt-imageio's checksum, written out: blake2b-256 over the blake2b-256 of each block."""
    outer = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(block_size), b""):
            outer.update(hashlib.blake2b(block, digest_size=32).digest())
    return outer.hexdigest()


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
