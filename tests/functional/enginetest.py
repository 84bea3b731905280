# SPDX-License-Identifier: GPL-2.0-or-later
"""A real engine with real agents and sanlock daemons, for the engine tests.
Everything speaks TLS with certificates from `ferry pki`, as an installation
does: the REST API is HTTPS, the engine talks mutual TLS to the agents.

FERRY_TEST_DB=postgresql: every engine keeps its inventory in PostgreSQL
instead of a SQLite file, in a database of its own on one PostgreSQL 15
cluster per test process (pytest-xdist worker), started on first use by
scripts/pg-test-cluster in a temp folder and stopped when the process exits."""

import atexit
import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from ferrytest import BUILD, FERRY, Agent, Pki, Sanlock, tls_client_env, wait_for, write_random_extents

ENGINE_BIN = os.path.join(BUILD, "src", "engine", "ferry-engine")
PG_CLUSTER = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "pg-test-cluster")
PSQL = os.path.join(os.environ.get("FERRY_PG_BINDIR", "/usr/lib/postgresql/15/bin"), "psql")
TEST_DB = os.environ.get("FERRY_TEST_DB", "sqlite")
if TEST_DB not in ("sqlite", "postgresql"):
    raise RuntimeError(f"FERRY_TEST_DB={TEST_DB}: give sqlite or postgresql")


class PostgresCluster:
    """A throwaway PostgreSQL cluster (unix socket in its own temp folder, so
    nothing is shared with other tests or workers)."""

    def __init__(self):
        # Directly under the temp dir: as root the server runs as another user, who must reach the folder.
        self.dir = tempfile.mkdtemp(prefix="ferry-pg-")
        self.names = itertools.count(1)
        # With our pid: the cluster goes when this process goes, even killed (atexit does not run then).
        self.admin = self._run("start", str(os.getpid())).strip()
        atexit.register(self.stop)

    def _run(self, *args):
        r = subprocess.run([PG_CLUSTER, args[0], self.dir, *args[1:]], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"pg-test-cluster {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def new_database(self):
        """The libpq connection string of a new, empty database."""
        return self._run("createdb", f"engine_{os.getpid()}_{next(self.names)}").strip()

    def restart(self):
        self._run("restart")

    def stop(self):
        if self.dir:
            subprocess.run([PG_CLUSTER, "stop", self.dir], capture_output=True, timeout=60)
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


_postgres = None


def postgres():
    """This process's PostgreSQL cluster, started on first use."""
    global _postgres
    if _postgres is None:
        _postgres = PostgresCluster()
    return _postgres


class HttpError(Exception):
    def __init__(self, status, body):
        super().__init__(status, body)
        self.status = status
        self.body = body


class Engine:
    """pki: a ferrytest.Pki whose engine certificate it serves and presents to
    agents (default: one made in workdir/pki). insecure=True: plain HTTP and
    plain TCP to agents, for the test about insecure mode only."""

    ADMIN = "admin"

    def __init__(self, workdir, *extra, pki=None, insecure=False, port=0, db=None):
        self.workdir = workdir
        self.listen_port = port        # 0: a free one, new at every start
        # The engine's --db: a SQLite file in workdir, or a PostgreSQL database of its own (FERRY_TEST_DB);
        # db: that one (engines sharing a database, test_failover.py).
        self.db = db or (postgres().new_database() if TEST_DB == "postgresql" else os.path.join(workdir, "engine.db"))
        self.log_path = os.path.join(workdir, "engine.log")
        self.extra = extra
        self.insecure = insecure
        self.pki = None if insecure else (pki or Pki(os.path.join(workdir, "pki")))
        self.ca_file = None if insecure else self.pki.ca
        self.ssl = None if insecure else ssl.create_default_context(cafile=self.ca_file)
        self.proc = None
        # The first admin, made by the engine at its first start; every request logs in as it.
        self.admin_password_file = os.path.join(workdir, "admin.password")
        if not os.path.exists(self.admin_password_file):
            fd = os.open(self.admin_password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(18) + "\n")
        with open(self.admin_password_file) as f:
            self.admin_password = f.read().strip()
        self.token = None
        self.cli_logged_in = False
        self.start()

    def start(self):
        self.log = open(self.log_path, "ab")
        offset = self.log.tell()
        security = ["--insecure=true", "--agent-insecure=true"] if self.insecure else self.pki.engine_args()
        self.proc = subprocess.Popen(
            [ENGINE_BIN, f"--port={self.listen_port}", f"--db={self.db}", *security, "--poll-interval=200",
             "--host-timeout=3000", "--log-level=debug", f"--create-admin={self.ADMIN}",
             f"--admin-password-file={self.admin_password_file}", *self.extra],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env=None if self.insecure else tls_client_env())

        def listening():
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited with {self.proc.returncode}")
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                m = re.search(rb"listening on (https?)://[0-9.]+:(\d+)", f.read())
            return (m.group(1).decode(), int(m.group(2))) if m else None
        scheme, self.port = wait_for(listening, 10, "the engine to listen")
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        # The port changes with every start: the CLI keeps its token per URL.
        self.cli_logged_in = False
        if self.token is None:
            self.token = self.login(self.ADMIN, self.admin_password)

    def login(self, user, password, timeout=60):
        """A token from POST /sso/oauth/token (oVirt's form)."""
        form = urllib.parse.urlencode({"grant_type": "password", "username": user, "password": password,
                                       "scope": "ovirt-app-api"}).encode()
        status, body = self.request("POST", "/sso/oauth/token", raw=form, auth=False, timeout=timeout,
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert body["token_type"] == "bearer" and body["expires_in"] > 0
        return body["access_token"]

    def cli_env(self, env=None):
        """Environment for the `ferry` CLI to reach this engine and trust its CA."""
        env = tls_client_env(env)
        env["FERRY_ENGINE_URL"] = self.url
        if self.ca_file:
            env["FERRY_CA_FILE"] = self.ca_file
        else:
            env.pop("FERRY_CA_FILE", None)
        # The CLI's token lives here: logged in once with `ferry login`, as a user would.
        env["XDG_CONFIG_HOME"] = os.path.join(self.workdir, "cli-config")
        if not self.cli_logged_in:
            r = subprocess.run([FERRY, "login", "--user", self.ADMIN, "--password-file", self.admin_password_file],
                               env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
            assert r.returncode == 0, r.stderr
            self.cli_logged_in = True
        return env

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

    def request(self, method, path, body=None, raw=None, headers=None, timeout=30, auth=True, token=None):
        """auth=False: no Authorization header; token: that token instead of the admin's."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth and (token or self.token):
            req.add_header("Authorization", f"Bearer {token or self.token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        # A PostgreSQL leader whose lease renewal is late (a loaded machine) answers writes 503 with
        # Retry-After and runs nothing; like the CLI, the harness waits that out (bounded).
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(req, timeout=timeout, context=self.ssl) as r:
                    return r.status, json.loads(r.read() or b"null")
            except urllib.error.HTTPError as e:
                payload = e.read()
                try:
                    payload = json.loads(payload)
                except ValueError:
                    pass
                unconfirmed = (e.code == 503 and "leadership is not confirmed" in str(payload)
                               and e.headers.get("Retry-After"))
                if not unconfirmed or time.monotonic() > deadline:
                    raise HttpError(e.code, payload) from None
                time.sleep(1)

    def get(self, path):
        return self.request("GET", path)[1]

    def sql(self, statement, params=()):
        """Runs one SQL statement on the engine's inventory, whichever the
        backend, for the tests that must reach under the REST API (rows a
        newer engine could have written, what a sweep left). `?` marks a
        parameter (str or int). Returns the rows as tuples of strings (NULL:
        None) on both backends, so a test reads them the same way."""
        if TEST_DB == "sqlite":
            with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as c, c:
                return [tuple(None if v is None else str(v) for v in row)
                        for row in c.execute(statement, params).fetchall()]
        parts = statement.split("?")
        assert len(parts) == len(params) + 1, "one parameter per ?"
        literals = [str(p) if isinstance(p, int) else "'" + p.replace("'", "''") + "'" for p in params]
        text = parts[0] + "".join(lit + part for lit, part in zip(literals, parts[1:]))
        # Unit separator between fields and a marker for NULL: neither is in any value a test compares.
        r = subprocess.run([PSQL, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-F", "\x1f", "-P", "null=\x1e",
                            "-d", self.db, "-c", text], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"psql: {r.stderr.strip()}")
        return [tuple(None if v == "\x1e" else v for v in line.split("\x1f")) for line in r.stdout.splitlines()]

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

    def __init__(self, workdir, hosts=3, domains=2, engine_args=(), agent_options=None, net=None, storage=None,
                 insecure=False, engine_port=0, engine_db=None):
        """engine_args: extra engine options; agent_options: agent options for
        every host (copy_rate_limit defaults to 128M; None: not on the command line); net: a netns.Network
        with a namespace per host, the agents then run inside them and are
        added by their namespace address; storage: the shared storage root
        (default: <workdir>/storage). Every host gets a certificate from
        workdir/pki for its name and address; insecure=True: none, plain
        text everywhere (the insecure-mode test only). engine_port: the engine's
        port, fixed across restarts (the web UI's origin); 0: a free one."""
        self.workdir = workdir
        self.storage = storage or os.path.join(workdir, "storage")
        os.makedirs(self.storage, exist_ok=True)
        self.net = net
        # An option given as None is left off the command line (so a config file can set it, and a reload change it).
        opts = {k: v for k, v in dict({"copy_rate_limit": "128M"}, **(agent_options or {})).items() if v is not None}
        self.sanlocks = []
        self.agents = []
        self.engine = None
        self.pki = None if insecure else Pki(os.path.join(workdir, "pki"))
        try:
            self.sanlocks = [Sanlock(workdir, f"host{i + 1}") for i in range(hosts)]
            for i, s in enumerate(self.sanlocks):
                name = f"host{i + 1}"
                tls = {"insecure": "true"} if insecure else \
                    self.pki.agent_options(name, net.hosts[i].addr if net else "127.0.0.1")
                self.agents.append(Agent(workdir, name, s, self.storage,
                                         netns=net.hosts[i] if net else None, **dict(tls, **opts)))
                if not insecure:
                    self.agents[-1].client_tls = self.pki.client_tls()
            self.engine = Engine(workdir, *engine_args, pki=self.pki, insecure=insecure, port=engine_port, db=engine_db)
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

    def data_disk(self, name, size, sd=0, seed=13):
        """A raw sparse disk on domain sds[sd], made through the API and then
        filled with size bytes of random data (so copies of it take time)."""
        r = self.engine.post("/api/disks", {"name": name, "provisioned_size": size, "format": "raw", "sparse": True,
                                            "storage_domain": {"id": self.sds[sd]["id"]}})
        assert self.engine.wait_job(r["job"]["id"], 60)["status"] == "finished"
        disk = self.engine.get(f"/api/disks/{r['disk']['id']}")
        write_random_extents(os.path.join(self.storage, self.sds[sd]["id"], "images", disk["id"],
                                          disk["volumes"][0]["id"]), [(0, size)], seed=seed)
        return disk

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
