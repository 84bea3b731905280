# SPDX-License-Identifier: GPL-2.0-or-later
"""Observability of the agent and the engine: their Prometheus metrics
(checked by promtool and scraped by a real Prometheus server during a copy
and a move), job events in VDSM's shape, VDSM's flow id in the agent's log,
and a REST request's correlation id in the engine's and the agent's logs
and events."""

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import make_workdir
from enginetest import EngineCluster, HttpError
from ferrytest import BUILD, REPO, MiB, free_port, new_uuid, qemu_img_compare, wait_for, wait_job
from test_copy import copy, endpoint, start_slow_copy

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
BINDFS = shutil.which("bindfs")


def sample(text, name, /, **labels):
    """The value of one sample in exposition text; None when absent."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


def test_promtool_accepts_agent_metrics(cluster, img):
    assert PROMTOOL, "promtool is missing: scripts/install-deps installs Debian's prometheus"
    # A job that ended, so the duration histogram has a series.
    vol = new_uuid()
    cluster.create_volume(cluster.sd1, img, vol, 1 * MiB)
    text = cluster.a.scrape()
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    # promtool prints lint problems (naming, units, _total) and exits non-zero on them.
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (r.stdout, r.stderr, text)

    assert sample(text, "ferry_agent_info", host="A") == 1
    assert sample(text, "ferry_agent_spm") == 1
    assert sample(text, "ferry_agent_jobs_limit") == 2
    assert sample(text, "ferry_agent_jobs", state="running") is not None
    assert sample(text, "ferry_agent_job_duration_seconds_count", method="Volume.create", status="done") >= 1
    assert sample(text, "ferry_agent_lease_acquisitions_total") >= 1     # the SPM lease at least
    assert sample(text, "ferry_agent_rpc_calls_total", method="Volume.create", outcome="ok") >= 1
    for sd in (cluster.sd1, cluster.sd2):
        assert sample(text, "ferry_agent_storage_domain_size_bytes", sd=sd) > 0
        assert 0 < sample(text, "ferry_agent_storage_domain_free_bytes", sd=sd) <= \
            sample(text, "ferry_agent_storage_domain_size_bytes", sd=sd)
    b = cluster.b.scrape()
    assert sample(b, "ferry_agent_copy_rate_limit_bytes_per_second") == 64 * MiB
    assert sample(b, "ferry_agent_jobs_limit") == 1
    for sd in (cluster.sd1, cluster.sd2):
        assert sample(text, "ferry_agent_storage_domain_stat_stale", sd=sd) == 0
        assert sample(text, "ferry_agent_storage_domain_stat_success_timestamp_seconds", sd=sd) > time.time() - 60

    # A hung mount (a FUSE file system whose server is stopped: statvfs blocks in the kernel)
    # makes only its own domain's series stale; the scrape answers, the rest is fresh.
    assert BINDFS, "bindfs is missing: scripts/install-deps installs it"
    sd_dir = os.path.join(cluster.storage, cluster.sd2)
    size_before = sample(text, "ferry_agent_storage_domain_size_bytes", sd=cluster.sd2)
    fuse = subprocess.Popen([BINDFS, "-f", sd_dir, sd_dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.ismount(sd_dir), 10, "the bindfs mount", interval=0.02)
        os.kill(fuse.pid, signal.SIGSTOP)
        started = time.monotonic()
        hung = cluster.a.scrape()
        assert time.monotonic() - started < 5
        assert sample(hung, "ferry_agent_storage_domain_stat_stale", sd=cluster.sd2) == 1
        assert sample(hung, "ferry_agent_storage_domain_size_bytes", sd=cluster.sd2) == size_before  # the last read
        assert sample(hung, "ferry_agent_storage_domain_stat_stale", sd=cluster.sd1) == 0
        assert sample(hung, "ferry_agent_storage_domain_size_bytes", sd=cluster.sd1) > 0
        assert sample(hung, "ferry_agent_spm") == 1 and sample(hung, "ferry_agent_info", host="A") == 1
        # Still hung: the next scrape does not start a second reader, and answers as fast.
        assert sample(cluster.a.scrape(), "ferry_agent_storage_domain_stat_stale", sd=cluster.sd2) == 1
    finally:
        os.kill(fuse.pid, signal.SIGCONT)
        # Lazy: the agent may hold files it opened through the mount; then the server goes.
        subprocess.run(["fusermount", "-u", "-z", sd_dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        fuse.terminate()
        fuse.wait(10)
    wait_for(lambda: sample(cluster.a.scrape(), "ferry_agent_storage_domain_stat_stale", sd=cluster.sd2) == 0,
             10, "the domain's space to be read again", interval=0.1)


def test_metrics_endpoint_refuses_other_paths_and_methods(cluster):
    base = cluster.a.metrics_url.rsplit("/", 1)[0]
    context = ssl.create_default_context(cafile=cluster.a.options["tls_ca"]) if cluster.a.tls else None
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(base + "/other", timeout=10, context=context)
    assert e.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(cluster.a.metrics_url, data=b"x", method="POST"),
                               timeout=10, context=context)
    assert e.value.code == 405
    if cluster.a.tls:
        # HTTPS only: a plain HTTP request gets no metrics.
        with pytest.raises(OSError):
            urllib.request.urlopen(cluster.a.metrics_url.replace("https:", "http:"), timeout=10)


def dashboard_exprs(side, title=None):
    """The queries of contrib/grafana/ferry.json over the agents' metrics (side "agent":
    scrape job $job) or the engine's ("engine": $engine_job), of every panel or the one
    titled title. Every query belongs to exactly one side, by its variable and its names."""
    with open(os.path.join(REPO, "contrib", "grafana", "ferry.json")) as f:
        dashboard = json.load(f)
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "job", "engine_job"}
    exprs = []
    for p in dashboard["panels"]:
        if p["type"] == "row":
            assert not p.get("targets") and not p["panels"], p
            continue
        for t in p["targets"]:
            e = t["expr"]
            engine = "$engine_job" in e
            assert engine != bool(re.search(r"\$job\b", e)), e
            assert not re.search(r"\bferry_agent_" if engine else r"\bferry_engine_", e), e
            if engine == (side == "engine") and title in (None, p["title"]):
                exprs.append(e)
    return exprs


class Prometheus:
    """Debian's Prometheus server in a temp folder on a free port, scraping
    the given targets every second."""

    def __init__(self, workdir, targets, ca_file=None, job_name="ferry-agent", token=None):
        self.dir = tempfile.mkdtemp(prefix="prometheus-", dir=workdir)
        self.port = free_port()
        config = os.path.join(self.dir, "prometheus.yml")
        scrape_configs = [{
            "job_name": job_name,
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "static_configs": [{"targets": targets}],
        }]
        if ca_file:
            # The agents serve HTTPS with certificates of the cluster's CA.
            scrape_configs[0].update({"scheme": "https", "tls_config": {"ca_file": ca_file}})
        if token:
            # The engine's /metrics wants a token of any role: Prometheus reads it from a 0600 file.
            token_file = os.path.join(self.dir, "token")
            with open(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(token)
            scrape_configs[0]["authorization"] = {"type": "Bearer", "credentials_file": token_file}
        with open(config, "w") as f:
            # JSON is YAML.
            json.dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                       "scrape_configs": scrape_configs}, f)
        self.log = open(os.path.join(self.dir, "prometheus.log"), "wb")
        self.proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}",
                                      f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._ready, 60, "prometheus to be ready")

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.proc.returncode}: {self.log_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def log_text(self):
        with open(os.path.join(self.dir, "prometheus.log"), "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def query(self, promql, at=None):
        """The instant vector of a PromQL query, now or at unix time at: [(labels, value)].
        A query Prometheus cannot parse or run fails here (HTTP 400/422)."""
        return [(m, v) for m, _, v in self.query_timed(promql, at)]

    def query_timed(self, promql, at=None):
        """query() with the time each value was evaluated at: [(labels, time, value)]."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{promql}: HTTP {e.code}: {e.read().decode(errors='replace')}") from None
        assert body["status"] == "success", body
        return [(s["metric"], float(s["value"][0]), float(s["value"][1])) for s in body["data"]["result"]]

    def values(self, promql, at=None):
        """Only the values of query()."""
        return [v for _, v in self.query(promql, at)]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def prometheus(cluster, workdir):
    assert PROMETHEUS, "prometheus is missing: scripts/install-deps installs Debian's prometheus"
    p = Prometheus(workdir, [a.metrics_url.split("/")[2] for a in (cluster.a, cluster.b)],
                   cluster.a.options.get("tls_ca") if cluster.a.tls else None)
    yield p
    p.stop()


def test_prometheus_scrapes_the_copying_host(cluster, img, prometheus):
    b = f'instance="{cluster.b.metrics_url.split("/")[2]}"'
    # Both agents up as Prometheus sees them, before the copy.
    wait_for(lambda: sorted(m["host"] for m, v in prometheus.query(
                 'up{job="ferry-agent"} * on(instance) group_left(host) ferry_agent_info == 1')) == ["A", "B"],
             30, "prometheus to scrape both agents")
    before = sample(cluster.b.scrape(), "ferry_agent_copy_bytes_total")
    data = 192 * MiB
    job_id, _, _ = start_slow_copy(cluster, img, data=data)      # ~3 s at B's 64 MiB/s cap
    with cluster.b.client() as c:
        # What the engine judges stalls on: the phase, and the bytes moved (holes excluded), which
        # grow while the copy runs and end at the data it moved. At B's cap the copier sleeps in
        # its rate limiter between chunks, reported as rate_wait (not judged) while it sleeps.
        info = c.call("Host.getJobs", {"job_ids": [job_id]})[job_id]
        assert info["status"] != "running" or (info["phase"] in ("copying", "rate_wait")
                                               and 0 < info["bytes_done"] <= data), info
        grown = wait_for(lambda: (lambda i: i["status"] != "running" or i["bytes_done"] > info["bytes_done"])(
            c.call("Host.getJobs", {"job_ids": [job_id]})[job_id]), 30, "bytes_done to grow")
        assert grown
        assert wait_job(c, job_id)["status"] == "done"
        info = c.call("Host.getJobs", {"job_ids": [job_id]})[job_id]
        assert info["bytes_done"] == data and info["phase"] == "finishing", info
    after = sample(cluster.b.scrape(), "ferry_agent_copy_bytes_total")
    assert after - before == data

    # What PromQL says about B: the bytes the copy moved, and the job it ran meanwhile.
    def copied():
        r = prometheus.query(f'ferry_agent_copy_bytes_total{{{b}}} - ferry_agent_copy_bytes_total{{{b}}} offset 30s')
        # The window must reach back before the copy: when it does not yet, wait.
        return r and r[0][1] == data and r[0][1]
    got = wait_for(lambda: prometheus.query(f'ferry_agent_copy_bytes_total{{{b}}} == {after}') and copied(),
                   90, "prometheus to see the bytes B copied")
    assert got == data
    running = prometheus.query(f'max_over_time(ferry_agent_jobs{{{b},state="running"}}[5m])')
    assert [v for _, v in running] == [1], running
    limit = prometheus.query(f'ferry_agent_jobs_limit{{{b}}}')
    assert [v for _, v in limit] == [1], limit
    rate_seen = prometheus.query(f'max_over_time(ferry_agent_copy_rate_bytes_per_second{{{b}}}[5m])')
    # The 5 s window of the rate gauge spans the ~3 s copy: clearly above zero, never above the cap (+10 %).
    assert 0 < rate_seen[0][1] <= 64 * MiB * 1.1, rate_seen
    durations = prometheus.query(f'ferry_agent_job_duration_seconds_count{{{b},method="SDM.copy_data",status="done"}}')
    assert durations and durations[0][1] >= 1, durations

    # Every agent query of the Grafana dashboard is valid PromQL over these metrics, and only
    # names the agents export: each ferry_* name appears in a scrape.
    exported = cluster.a.scrape() + cluster.b.scrape()
    exprs = dashboard_exprs("agent")
    assert exprs
    for expr in exprs:
        for name in re.findall(r"\b(ferry_[a-z_]+)", expr):
            assert re.search(rf"^{name}(_bucket)?[{{ ]", exported, re.M), (name, expr)
        prometheus.query(expr.replace("$job", "ferry-agent"))
    throughput = prometheus.query(dashboard_exprs("agent", "Cluster copy throughput")[0].replace("$job", "ferry-agent"))
    assert throughput and throughput[0][1] > 0, throughput


def test_job_events_have_vdsm_shape(cluster, img):
    vol = new_uuid()
    cluster.create_volume(cluster.sd1, img, vol, 8 * MiB)
    cluster.create_volume(cluster.sd2, img, vol, 8 * MiB)
    with cluster.b.client() as c:
        c.subscribe_events()
        gen = cluster.volume_info(cluster.sd2, img, vol)["generation"]
        job_id = copy(cluster, cluster.b, endpoint(cluster.sd1, img, vol), endpoint(cluster.sd2, img, vol, gen))
        seen = []
        deadline = time.monotonic() + 60
        while not seen or seen[-1]["status"] not in ("done", "failed", "aborted"):
            ev = c.events.get(timeout=deadline - time.monotonic())
            if ev["method"] == f"|jobs|status|{job_id}":
                seen.append(ev["params"])
    for params in seen:
        # notify('|jobs|status|<id>', params=job.info()) plus the notifier's notify_time.
        assert {"id", "status", "description", "job_type", "progress", "notify_time"} <= set(params), params
        assert params["id"] == job_id and params["job_type"] == "storage", params
        assert isinstance(params["notify_time"], int)
        assert job_id not in params
    assert seen[0]["status"] == "pending" and seen[-1]["status"] == "done" and seen[-1]["progress"] == 100
    assert "error" not in seen[-1]


def test_flow_id_in_agent_log(cluster, img):
    vol = new_uuid()
    cluster.create_volume(cluster.sd1, img, vol, 8 * MiB)
    cluster.create_volume(cluster.sd2, img, vol, 8 * MiB)
    gen = cluster.volume_info(cluster.sd2, img, vol)["generation"]
    flow = f"move-{new_uuid()}"
    job_id = new_uuid()
    with cluster.b.client() as c:
        assert c.call("SDM.copy_data", {"job_id": job_id, "source": endpoint(cluster.sd1, img, vol),
                                        "destination": endpoint(cluster.sd2, img, vol, gen)},
                      flow_id=flow) is True
        assert wait_job(c, job_id)["status"] == "done"
    log = cluster.b.log_tail(400000).splitlines()
    # The request itself, and every line about its job: scheduled, running, what the job thread
    # logs, and its end.
    assert any("START SDM.copy_data" in line and f"flow_id={flow}" in line for line in log)
    job_lines = [line for line in log if job_id in line]
    assert len(job_lines) >= 3, job_lines
    assert all(f"flow_id={flow}" in line for line in job_lines), job_lines
    assert any(re.search(rf"job {job_id} .* done job_id={job_id} flow_id={flow}$", line) for line in job_lines)


def test_forged_flow_id_is_refused_and_cannot_forge_log_lines(cluster):
    forged = "x\n2026-01-01 00:00:00.000 INFO [ferry-agent] forged record"
    with cluster.b.client() as c:
        c.call("Host.ping2", {}, flow_id=forged)
    log = cluster.b.log_tail(200000)
    assert "\nforged" not in log and "\n2026-01-01 00:00:00.000 INFO [ferry-agent] forged" not in log
    assert "ignoring the request's flow id 'x\\n2026-01-01 00:00:00.000 INFO [ferry-agent] forged record'" in log


def read_journal_datagram(data):
    """Fields of one message of journald's native protocol (KEY=value lines, or
    KEY\\n<64-bit little-endian length><value>\\n for values with newlines)."""
    fields, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            fields[k.decode()] = v.decode()
            i = nl + 1
        else:
            n = int.from_bytes(data[nl + 1:nl + 9], "little")
            fields[line.decode()] = data[nl + 9:nl + 9 + n].decode()
            i = nl + 9 + n + 1
    return fields


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a private mount namespace (CI runs as root)")
def test_journald_fields_under_systemd(workdir):
    """An agent whose stderr is the stream $JOURNAL_STREAM names logs to the
    journal: a receiver on journald's socket path (bound into a private mount
    namespace, so the machine's /run is untouched) gets each record with
    FERRY_HOST, and FERRY_JOB_ID/FERRY_CORRELATION_ID on a job's records."""
    import socket as socketmod
    from ferrytest import AGENT_BIN, Sanlock, wait_for as wait

    d = tempfile.mkdtemp(prefix="journal-", dir=workdir)
    sock_dir = os.path.join(d, "journal")
    os.makedirs(sock_dir)
    receiver = socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_DGRAM)
    receiver.bind(os.path.join(sock_dir, "socket"))
    receiver.settimeout(0.2)
    sanlock = Sanlock(d, "hostJ")
    storage = os.path.join(d, "storage")
    os.makedirs(storage)
    stderr_path = os.path.join(d, "stderr")
    stderr = open(stderr_path, "wb")
    st = os.fstat(stderr.fileno())
    env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    # /run is a fresh tmpfs in the agent's mount namespace, with the receiver's folder as /run/systemd/journal.
    script = ('mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && '
              f'mount --bind {sock_dir} /run/systemd/journal && exec "$@"')
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", AGENT_BIN,
                             "--insecure=true", "--port=0", "--transfer-port=0", f"--storage-root={storage}",
                             f"--sanlock-run-dir={sanlock.run_dir}", "--host-name=hostJ", "--log-level=debug"],
                            env=env, stdout=stderr, stderr=stderr, start_new_session=True)
    records = []

    def receive(pred):
        try:
            records.append(read_journal_datagram(receiver.recv(1 << 20)))
        except socketmod.timeout:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited {proc.returncode}: {open(stderr_path).read()[-2000:]}")
        return next((r for r in records if pred(r)), None)
    try:
        listening = wait(lambda: receive(lambda r: "listening on" in r.get("MESSAGE", "")), 30, "the agent's journal")
        port = int(re.search(r"listening on [0-9.]+:(\d+)", listening["MESSAGE"]).group(1))
        assert listening["FERRY_HOST"] == "hostJ" and listening["SYSLOG_IDENTIFIER"] == "ferry-agent"
        assert listening["PRIORITY"] == "5"   # g_message: notice
        assert "FERRY_JOB_ID" not in listening and "FERRY_CORRELATION_ID" not in listening
        from stompclient import Client
        with Client("127.0.0.1", port) as c:
            c.call("Host.ping2", {}, flow_id="journal-flow-1")
        start = wait(lambda: receive(lambda r: r.get("MESSAGE") == "START Host.ping2"), 30, "START in the journal")
        assert start["FERRY_CORRELATION_ID"] == "journal-flow-1" and "FERRY_JOB_ID" not in start
        # A forged newline stays inside one escaped MESSAGE.
        with Client("127.0.0.1", port) as c:
            c.call("Host.ping2", {}, flow_id="x\nforged")
        warn = wait(lambda: receive(lambda r: "ignoring the request's flow id" in r.get("MESSAGE", "")), 30,
                    "the warning in the journal")
        assert "'x\\nforged'" in warn["MESSAGE"] and warn["PRIORITY"] == "4"
        # Nothing went to stderr while the journal took the records.
        assert "listening on" not in open(stderr_path).read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        stderr.close()
        receiver.close()
        sanlock.stop()


# ---- the engine ----

@pytest.fixture(scope="module")
def eng():
    """Two hosts (the SPM and one that copies), two domains, copies at 64 MiB/s."""
    d = make_workdir()
    c = EngineCluster(d, hosts=2, agent_options={"copy_rate_limit": "64M"})
    yield c
    codes = c.stop()
    if not os.environ.get("FERRY_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)
    assert all(code == 0 for code in codes.values()), codes


def engine_raw(ec, method, path, headers=None, body=None, token=None, auth=True):
    """(status, response headers, body bytes) of one REST request, with the admin's
    token unless another is given or auth is False."""
    req = urllib.request.Request(ec.engine.url + path, method=method, headers=headers or {},
                                 data=json.dumps(body).encode() if body is not None else None)
    if auth:
        req.add_header("Authorization", f"Bearer {token or ec.engine.token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30, context=ec.engine.ssl) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def viewer_token(ec):
    """A token of the weakest role: /metrics is readable with any."""
    ec.engine.post("/api/users", {"name": "metrics-viewer", "password": "viewer-password-1", "role": "viewer"})
    form = urllib.parse.urlencode({"grant_type": "password", "username": "metrics-viewer",
                                   "password": "viewer-password-1", "scope": "ovirt-app-api"}).encode()
    req = urllib.request.Request(ec.engine.url + "/sso/oauth/token", data=form, method="POST",
                                 headers={"Accept": "application/json",
                                          "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=30, context=ec.engine.ssl) as r:
        return json.load(r)["access_token"]


def test_engine_metrics_scraped_by_prometheus_during_a_move(eng):
    ec = eng
    assert engine_raw(ec, "GET", "/metrics", auth=False)[0] == 401
    token = viewer_token(ec)
    status, headers, text = engine_raw(ec, "GET", "/metrics", token=token)
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.decode(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (r.stdout, r.stderr, text)
    text = text.decode()
    spm = ec.spm_name()
    for name in ("host1", "host2"):
        assert sample(text, "ferry_engine_host_up", host=name) == 1
        assert sample(text, "ferry_engine_host_spm", host=name) == (1 if name == spm else 0)
        assert sample(text, "ferry_engine_host_jobs_limit", host=name) >= 1
        assert sample(text, "ferry_engine_host_copy_rate_limit_bytes_per_second", host=name) == 64 * MiB
    for sd in ec.sds:
        assert sample(text, "ferry_engine_storage_domain_size_bytes", sd=sd["id"], name=sd["name"]) > 0
    assert sample(text, "ferry_engine_main_loop_lag_seconds") >= 0
    assert sample(text, "ferry_engine_fences_total") == 0
    # Requests are counted under their route pattern, never the raw path (bounded labels).
    assert sample(text, "ferry_engine_http_request_duration_seconds_count", method="POST", route="/api/hosts",
                  status="201") == 2
    assert engine_raw(ec, "GET", "/api/nothing/" + new_uuid())[0] == 404
    assert engine_raw(ec, "POST", "/metrics")[0] == 405
    text = engine_raw(ec, "GET", "/metrics")[2].decode()
    assert sample(text, "ferry_engine_http_request_duration_seconds_count", method="GET", route="unmatched",
                  status="404") >= 1
    assert "/api/nothing" not in text

    prometheus = Prometheus(ec.workdir, [f"127.0.0.1:{ec.engine.port}"], ec.engine.ca_file, job_name="ferry-engine",
                            token=token)
    try:
        wait_for(lambda: prometheus.query('up{job="ferry-engine"} == 1'), 30, "prometheus to scrape the engine")
        disk = ec.data_disk("metrics", 512 * MiB)        # ~8 s at 64 MiB/s
        job_id = ec.engine.post(f"/api/disks/{disk['id']}/move", {"storage_domain": {"id": ec.sds[1]["id"]}})["job"]["id"]

        # While the move copies: the ETA gauge of its kind is the job's eta_seconds in REST
        # (the same estimate, read a moment apart), and Prometheus sees it.
        def eta_known():
            text = engine_raw(ec, "GET", "/metrics", token=token)[2].decode()
            gauge = sample(text, "ferry_engine_job_eta_seconds", kind="move_disk")
            rest = ec.engine.get(f"/api/jobs/{job_id}").get("eta_seconds")
            return gauge is not None and rest is not None and (text, gauge, rest)
        during, gauge, rest = wait_for(eta_known, 60, "the move's ETA in /metrics and REST", interval=0.2)
        assert gauge >= 0 and abs(gauge - rest) <= 2, (gauge, rest)
        seen = wait_for(lambda: prometheus.query_timed('ferry_engine_job_eta_seconds{kind="move_disk"}'), 30,
                        "prometheus to see the move's ETA", interval=0.2)
        eta_at = seen[0][1]
        assert ec.engine.wait_job(job_id)["status"] == "finished"
        # An ended job has no ETA: the gauge's kind has no sample left.
        assert sample(engine_raw(ec, "GET", "/metrics", token=token)[2].decode(), "ferry_engine_job_eta_seconds") is None
        copier = next(s["execution_host"]["name"] for s in ec.engine.get(f"/api/jobs/{job_id}/steps")["steps"]
                      if s["type"] == "copy_data")
        other = "host1" if copier == "host2" else "host2"

        # What PromQL says: the copying host ran one job meanwhile; the engine ran a
        # copy_data command; the move request was answered.
        def seen(q):
            return prometheus.query(q) or None
        wait_for(lambda: seen(f'ferry_engine_host_jobs{{host="{copier}",state="running"}} == 0'), 30,
                 "prometheus to scrape after the move")
        assert prometheus.values(f'max_over_time(ferry_engine_host_jobs{{host="{copier}",state="running"}}[5m])') == [1]
        # The other host (the SPM: it made the destination volume) copied nothing.
        assert prometheus.values(f'max_over_time(ferry_engine_host_copy_rate_bytes_per_second{{host="{other}"}}[5m])') == [0]
        rate = prometheus.values(f'max_over_time(ferry_engine_host_copy_rate_bytes_per_second{{host="{copier}"}}[5m])')
        assert len(rate) == 1 and 0 < rate[0] <= 64 * MiB * 1.1, rate
        assert prometheus.values('max_over_time(ferry_engine_commands{kind="copy_data",phase="sent"}[5m])') == [1]
        moves = prometheus.values('max_over_time(ferry_engine_commands{kind="move_disk"}[5m])')
        assert moves and max(moves) == 1, moves
        assert prometheus.values('sum(ferry_engine_http_request_duration_seconds_count'
                                 '{method="POST",route="/api/disks/{id}/move"})') == [1]

        # Every engine query of the Grafana dashboard, evaluated while the move ran: it names
        # only families the engine exports, Prometheus runs it, and it returns series whenever
        # its families had samples then (retries_total has none until a retry).
        exprs = dashboard_exprs("engine")
        assert exprs
        for expr in exprs:
            names = re.findall(r"\b(ferry_engine_[a-z_]+)", expr)
            assert names, expr
            for name in names:
                family = re.sub(r"_(bucket|count|sum)$", "", name) if name.startswith(
                    "ferry_engine_http_request_duration_seconds_") else name
                assert re.search(rf"^# TYPE {family} ", during, re.M), (name, expr)
            got = prometheus.query(expr.replace("$engine_job", "ferry-engine"), at=eta_at)
            if all(re.search(rf"^{name}[{{ ]", during, re.M) for name in names):
                assert got, (expr, during)
        eta = prometheus.values(dashboard_exprs("engine", "Longest job ETA")[0].replace("$engine_job", "ferry-engine"),
                                at=eta_at)
        assert len(eta) == 1 and eta[0] >= 0, eta
        load = prometheus.query(dashboard_exprs("engine", "Copy rate per host against its cap (engine's view)")[1]
                                .replace("$engine_job", "ferry-engine"), at=eta_at)
        assert sorted((m["host"], v) for m, v in load) == [("host1", 64 * MiB), ("host2", 64 * MiB)], load
    finally:
        prometheus.stop()


def test_correlation_id_follows_a_move(eng):
    ec = eng
    disk = ec.data_disk("corr", 64 * MiB)
    corr = f"move-{new_uuid()}"
    status, headers, body = engine_raw(ec, "POST", f"/api/disks/{disk['id']}/move",
                                       {"Correlation-Id": corr}, {"storage_domain": {"id": ec.sds[1]["id"]}})
    assert status in (200, 201, 202), body
    assert headers["Correlation-Id"] == corr
    job_id = json.loads(body)["job"]["id"]
    job = ec.engine.wait_job(job_id)
    assert job["status"] == "finished" and job["correlation_id"] == corr, job
    steps = ec.engine.get(f"/api/jobs/{job_id}/steps")["steps"]
    copier = ec.agent(next(s["execution_host"]["name"] for s in steps if s["type"] == "copy_data"))

    # The engine's log: the request, the job's commands, their calls to hosts.
    with open(ec.engine.log_path, encoding="utf-8", errors="replace") as f:
        engine_lines = [line for line in f if f"flow_id={corr}" in line]
    assert any("copying volume" in line for line in engine_lines), engine_lines
    assert any(f"job_id={job_id}" in line for line in engine_lines), engine_lines
    # The copying agent got it as VDSM's flow id: its copy job's lines carry it.
    agent_lines = [line for line in copier.log_tail(2000000).splitlines() if f"flow_id={corr}" in line]
    assert any("SDM.copy_data" in line for line in agent_lines), agent_lines

    # Events: filtered by it, through REST and the CLI.
    events = ec.engine.get(f"/api/events?correlation_id={corr}")["events"]
    assert events and all(e["correlation_id"] == corr for e in events), events
    assert any("copying volume" in e["message"] for e in events), events
    assert len(events) < len(ec.engine.get("/api/events")["events"])
    cli = subprocess.run([os.path.join(BUILD, "src", "cli", "ferry"), "event", "list", "--correlation-id", corr],
                         capture_output=True, text=True, env=ec.engine.cli_env(), timeout=60)
    assert cli.returncode == 0 and "copying volume" in cli.stdout and "host host1" not in cli.stdout, cli

    # No header: one is made and returned; a bad one is refused before anything runs.
    status, headers, _ = engine_raw(ec, "GET", "/api/hosts")
    assert status == 200 and re.fullmatch(r"[0-9a-f-]{36}", headers["Correlation-Id"])
    status, _, body = engine_raw(ec, "GET", "/api/hosts", {"Correlation-Id": "bad id"})
    assert status == 400 and b"Correlation-Id" in body
    with pytest.raises(HttpError) as e:
        ec.engine.get("/api/events?correlation_id=" + urllib.parse.quote("a b"))
    assert e.value.status == 400


# ---- stall detection ----

STALL_TIMEOUT = 3


def stall_events(ec):
    """The engine's stall events (newest first)."""
    return [e["message"] for e in ec.engine.get("/api/events")["events"] if "moved no bytes for" in e["message"]]


def new_stall(ec, before):
    """The stall event after the `before` ones, or None. Tests wait for it rather than for the
    step's status_detail: with stall_action = retry the flag may last only until the abort
    ends the job (tens of ms), while the event, written in the poll that flags, stays."""
    now = stall_events(ec)
    return now[0] if len(now) > len(before) else None


def qemu_img_converts(img):
    """Pids of running `qemu-img convert` processes writing into image img."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"qemu-img") and b"convert" in argv and any(img.encode() in a for a in argv):
            pids.append(int(pid))
    return pids


def proc_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def proc_wchar(pid):
    """Bytes the process wrote (/proc/PID/io), which the agent counts as qemu-img's bytes moved."""
    with open(f"/proc/{pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))


def stop_and_read_wchar(pid):
    """SIGSTOP pid and its wchar once every thread stopped (a write in flight lands first)."""
    os.kill(pid, signal.SIGSTOP)

    def all_stopped():
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] not in ("T", "t", "Z", "X"):
                        return False
            except FileNotFoundError:
                pass    # a thread that ended
        return True
    wait_for(all_stopped, 5, "qemu-img's threads to stop", interval=0.001)
    return proc_wchar(pid)


PF_EXITING = 0x4


def proc_dying(pid):
    """pid exits or was sent SIGKILL: a zombie, PF_EXITING in its flags, or SIGKILL pending."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X") or int(fields[6]) & PF_EXITING:
        return True
    with open(f"/proc/{pid}/status") as f:
        pending = [int(line.split()[1], 16) for line in f if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(p & (1 << (signal.SIGKILL - 1)) for p in pending)


def copy_of_written_qcow2(ec, name, size, written):
    """A sparse qcow2 disk of size on the first domain with its first `written` bytes written,
    copied to the second: (disk, its volume's path, the copy's job id, the new disk's id)."""
    r = ec.engine.post("/api/disks", {"name": name, "provisioned_size": size, "format": "cow",
                                      "sparse": True, "storage_domain": {"id": ec.sds[0]["id"]}})
    assert ec.engine.wait_job(r["job"]["id"], 60)["status"] == "finished"
    disk = ec.engine.get(f"/api/disks/{r['disk']['id']}")
    src = os.path.join(ec.storage, ec.sds[0]["id"], "images", disk["id"], disk["volumes"][0]["id"])
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a 0 {written}", src], check=True,
                   stdout=subprocess.DEVNULL)
    r = ec.engine.post(f"/api/disks/{disk['id']}/copy", {"name": f"{name}-copy",
                                                          "storage_domain": {"id": ec.sds[1]["id"]}})
    return disk, src, r["job"]["id"], r["disk"]["id"]


def test_stalled_copy_is_flagged_and_retried_elsewhere():
    """A qcow2 copy whose qemu-img is held still (SIGSTOP) is flagged stalled within
    stall_timeout plus one poll, and with stall_action=retry aborted and copied on
    another host; one whose abort cannot end it is fenced once the abort is overdue; a
    host that goes down loses its stats gauges. Copies are not rate-capped here, so the
    agent's own governor never stops or continues qemu-img: only the test does."""
    d = make_workdir()
    ec = EngineCluster(d, hosts=3, agent_options={"copy_rate_limit": "0"},
                       engine_args=[f"--stall-timeout={STALL_TIMEOUT}", "--stall-action=retry"])
    stopped = held = None
    try:
        disk, src, job_id, new_id = copy_of_written_qcow2(ec, "stall", 2048 * MiB, 1536 * MiB)
        # Hold the copy's qemu-img still as soon as it runs.
        pid = wait_for(lambda: (qemu_img_converts(new_id) or [None])[0], 60, "the copy's qemu-img", interval=0.005)
        stalled_host = agent_of(ec, pid).name     # before the retry's abort ends the process
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        stopped = pid
        assert wait_for(lambda: proc_state(pid) == "T", 5, "qemu-img to stop")

        msg = wait_for(lambda: new_stall(ec, []), STALL_TIMEOUT + 30, "the copy to be reported stalled",
                       interval=0.05)
        took = time.monotonic() - stopped_at
        # Not before stall_timeout (less the poll that may have seen the last progress before the
        # stop), and within it plus one poll (200 ms) and the latency of a loaded 2-core machine.
        assert STALL_TIMEOUT - 1 <= took <= STALL_TIMEOUT + 2, took
        # The metric counts it in the same poll, before the event is written.
        assert sample(engine_raw(ec, "GET", "/metrics")[2].decode(), "ferry_engine_stalls_total") == 1
        stalled_host_id = ec.hosts[stalled_host]["id"]
        assert stalled_host_id in msg and "stalled; aborting it to try on another host" in msg, msg
        # While the copy is still on the stalled host it is flagged and has no estimate, for the
        # step and its job (the retry may move it to another host between two reads).
        step = next(s for s in ec.engine.get(f"/api/jobs/{job_id}/steps")["steps"] if s["type"] == "copy_data")
        job_now = ec.engine.get(f"/api/jobs/{job_id}")
        if step["status"] == "started" and (step["execution_host"] or {}).get("id") == stalled_host_id:
            assert step.get("status_detail") == "stalled" and step["eta_seconds"] is None, step
            assert step["progress"] < 100, step
            after = next(s for s in ec.engine.get(f"/api/jobs/{job_id}/steps")["steps"] if s["type"] == "copy_data")
            if (after["execution_host"] or {}).get("id") == stalled_host_id and after["status"] == "started":
                assert job_now["status"] != "started" or job_now["eta_seconds"] is None, job_now
        assert sample(engine_raw(ec, "GET", "/metrics")[2].decode(), "ferry_engine_stalled_steps") in (0, 1)

        # stall_action=retry: aborted (the agent kills the stopped qemu-img) and copied elsewhere.
        # Until the copy leaves the stalled host, the step stays flagged (also while it is aborted).
        def left_stalled_host():
            s = next(s for s in ec.engine.get(f"/api/jobs/{job_id}/steps")["steps"] if s["type"] == "copy_data")
            on_it = s["status"] == "started" and (s["execution_host"] or {}).get("id") == stalled_host_id
            assert not on_it or (s.get("status_detail") == "stalled" and s["eta_seconds"] is None), s
            return not on_it
        wait_for(left_stalled_host, 60, "the copy to leave the stalled host", interval=0.05)
        job = ec.engine.wait_job(job_id, 120)
        assert job["status"] == "finished", job
        stopped = None if not os.path.exists(f"/proc/{pid}") else pid
        copy = next(s for s in ec.engine.get(f"/api/jobs/{job_id}/steps")["steps"] if s["type"] == "copy_data")
        assert copy["execution_host"]["name"] != stalled_host, copy
        assert "status_detail" not in copy, copy
        msgs = [e["message"] for e in ec.engine.get("/api/events")["events"]]
        assert any("stalled; aborting it to try on another host" in m and stalled_host_id in m for m in msgs), msgs
        assert any("retrying" in m and "on another host" in m for m in msgs), msgs
        new = ec.engine.get(f"/api/disks/{new_id}")
        dst = os.path.join(ec.storage, ec.sds[1]["id"], "images", new_id, new["volumes"][0]["id"])
        assert qemu_img_compare(src, dst).returncode == 0
        text = engine_raw(ec, "GET", "/metrics")[2].decode()
        assert sample(text, "ferry_engine_stalled_steps") == 0
        assert sample(text, "ferry_engine_retries_total", kind="copy_data") == 1

        # A stalled copy whose abort does not end it (its host's sanlock daemon held still: the job
        # cannot let go of its lease, as a copy hung in the kernel cannot) is fenced as a lost copy
        # once the abort is overdue (2 x stall_timeout), and tried again elsewhere.
        r = ec.engine.post(f"/api/disks/{disk['id']}/copy", {"name": "hung-copy",
                                                              "storage_domain": {"id": ec.sds[1]["id"]}})
        job2, new2 = r["job"]["id"], r["disk"]["id"]
        pid2 = wait_for(lambda: (qemu_img_converts(new2) or [None])[0], 60, "the copy's qemu-img", interval=0.005)
        with open(f"/proc/{pid2}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[2])
        hung = next(i for i, a in enumerate(ec.agents) if a.proc.pid == ppid)
        os.kill(pid2, signal.SIGSTOP)
        os.kill(ec.sanlocks[hung].proc.pid, signal.SIGSTOP)
        stopped, held = pid2, ec.sanlocks[hung].proc.pid
        msgs = lambda: [e["message"] for e in ec.engine.get("/api/events")["events"]]
        wait_for(lambda: any("did not end within 6 s of its abort" in m for m in msgs()), 60,
                 "the overdue abort to be escalated", interval=0.1)
        os.kill(held, signal.SIGCONT)
        held = None
        job = ec.engine.wait_job(job2, 180)
        assert job["status"] == "finished", job
        assert any("fencing copy_data job" in m for m in msgs()), msgs()
        copy = next(s for s in ec.engine.get(f"/api/jobs/{job2}/steps")["steps"] if s["type"] == "copy_data")
        assert copy["execution_host"]["name"] != ec.agents[hung].name, copy
        new = ec.engine.get(f"/api/disks/{new2}")
        assert qemu_img_compare(src, os.path.join(ec.storage, ec.sds[1]["id"], "images", new2,
                                                  new["volumes"][0]["id"])).returncode == 0
        text = engine_raw(ec, "GET", "/metrics")[2].decode()

        # A host that goes down is exported as down, without the gauges of its last stats.
        assert sample(text, "ferry_engine_host_jobs", host=stalled_host, state="running") is not None
        ec.agent(stalled_host).stop()
        wait_for(lambda: ec.engine.get(f"/api/hosts/{stalled_host_id}")["status"] != "up", 60, "the host to be down")
        text = engine_raw(ec, "GET", "/metrics")[2].decode()
        assert sample(text, "ferry_engine_host_up", host=stalled_host) == 0
        for name in ("ferry_engine_host_jobs", "ferry_engine_host_jobs_limit", "ferry_engine_host_copy_rate_bytes_per_second",
                     "ferry_engine_host_copy_rate_limit_bytes_per_second"):
            assert sample(text, name, host=stalled_host) is None, name
    finally:
        if held:
            os.kill(held, signal.SIGCONT)
        if stopped and os.path.exists(f"/proc/{stopped}"):
            os.kill(stopped, signal.SIGCONT)
        codes = ec.stop()
        if not os.environ.get("FERRY_KEEP_TMP"):
            shutil.rmtree(d, ignore_errors=True)
    assert all(code == 0 for code in codes.values()), codes



def agent_of(ec, pid):
    """The agent (of ec.agents) whose child process pid is."""
    with open(f"/proc/{pid}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[2])
    return next(a for a in ec.agents if a.proc.pid == ppid)


def test_capped_copies_stall_judgement():
    """Under a copy_rate_limit (set in a config file, so SIGHUP changes it):
    - qemu-img's -r charges a sparse image's holes against the cap, an L2 table's reach
      (512 MiB) at a time, and sleeps through each writing nothing: a capped sparse copy shows
      no bytes and no progress for longer than stall_timeout. The agent reports that wait
      (phase rate_wait), so the copy is not flagged, not aborted, and finishes (review 13b);
    - a copy whose qemu-img is held still (SIGSTOP) is flagged within stall_timeout plus a poll;
    - a reload that lifts the cap while the governor has qemu-img stopped lets it go on (review 13c).
    A copy hung asleep (S) is reported waiting only for what the cap explains: unit test
    /copy/qemu-img/hung-asleep (a FUSE server that stops is no such hang here: its callers
    wait in D, already judged)."""
    d = make_workdir()
    conf = os.path.join(d, "agent-cap.conf")

    def set_cap(cap, agents):
        with open(conf + ".tmp", "w") as f:
            f.write(f"[agent]\ncopy_rate_limit = {cap}\n")
        os.replace(conf + ".tmp", conf)
        for a in agents:
            os.kill(a.proc.pid, signal.SIGHUP)

    set_cap("64M", [])
    ec = EngineCluster(d, hosts=2, agent_options={"copy_rate_limit": None, "config": conf},
                       engine_args=[f"--stall-timeout={STALL_TIMEOUT}", "--stall-action=retry"])
    stopped = None
    try:
        job_id = copy_of_written_qcow2(ec, "holes", 1024 * MiB, 16 * MiB)[2]
        flagged, etas, last, flat_since, longest_flat = [], [], None, time.monotonic(), 0.0
        while True:
            job = ec.engine.get(f"/api/jobs/{job_id}")
            for s in ec.engine.get(f"/api/jobs/{job_id}/steps")["steps"]:
                if s["type"] == "copy_data" and s["status"] == "started":
                    if s.get("status_detail") == "stalled":
                        flagged.append(s)
                    etas.append(s["eta_seconds"])
                    if s["progress"] != last:
                        last, flat_since = s["progress"], time.monotonic()
                    longest_flat = max(longest_flat, time.monotonic() - flat_since)
            if job["status"] != "started":
                break
            time.sleep(0.2)
        assert longest_flat > 2 * STALL_TIMEOUT, longest_flat     # the case is exercised
        assert not flagged, flagged[0]
        assert job["status"] == "finished", job
        # A running copy never estimates 0 s left (null when it cannot tell).
        assert 0 not in etas, etas
        assert sample(engine_raw(ec, "GET", "/metrics")[2].decode(), "ferry_engine_stalls_total") == 0

        # Held still under the cap: not a rate wait (the process is stopped, T, by someone else).
        disk, src, job_id, new_id = copy_of_written_qcow2(ec, "frozen", 256 * MiB, 128 * MiB)
        pid = wait_for(lambda: (qemu_img_converts(new_id) or [None])[0], 60, "the copy's qemu-img", interval=0.005)
        before, agent = stall_events(ec), agent_of(ec, pid)
        # Not while the governor holds it stopped: its SIGCONT would undo ours.
        wait_for(lambda: proc_state(pid) != "T", 30, "the governor to let qemu-img run", interval=0.005)
        # still_since: since when it has not moved, at the earliest (the engine's clock may start
        # there); stopped_at: when it was last stopped (its clock starts by then at the latest).
        still_since = stopped_at = last_still = time.monotonic()
        stopped, wrote = pid, stop_and_read_wchar(pid)

        def held_still_and_flagged():
            # The governor may pause qemu-img (its own SIGSTOP) just after ours, a wait it reports as
            # rate_wait, and end that pause with a SIGCONT that undoes ours: stop it again (seen once
            # under ASan in CI: the copy ran on and finished unflagged). It moved only if it wrote
            # (the agent counts its /proc/PID/io wchar); if it did not, the engine may still count
            # from our first stop. A process the engine's abort killed is not stopped again: that
            # reset the clock just before the flag was read (seen in CI: 7 ms after a "re-stop").
            nonlocal still_since, stopped_at, last_still, wrote
            msg = new_stall(ec, before)
            if msg:
                return msg
            try:
                if proc_state(pid) in ("T", "t"):
                    last_still = time.monotonic()
                elif not proc_dying(pid):
                    at = time.monotonic()
                    w = stop_and_read_wchar(pid)
                    stopped_at = at
                    if w != wrote:
                        still_since, wrote = last_still, w     # it moved after we last saw it stopped
                    last_still = time.monotonic()
            except (FileNotFoundError, ProcessLookupError):
                pass        # flagged and aborted (stall_action = retry): the event is read next time
            return None
        msg = wait_for(held_still_and_flagged, STALL_TIMEOUT + 30, "the copy to be reported stalled", interval=0.05)
        now = time.monotonic()
        assert now - still_since >= STALL_TIMEOUT - 1, (now - still_since, now - stopped_at)
        assert now - stopped_at <= STALL_TIMEOUT + 2, (now - still_since, now - stopped_at)
        assert ec.hosts[agent.name]["id"] in msg, msg
        job = ec.engine.wait_job(job_id, 120)     # aborted, and copied on the other host
        assert job["status"] == "finished", job
        stopped = None
        assert sample(engine_raw(ec, "GET", "/metrics")[2].decode(), "ferry_engine_stalls_total") == 1

        # The cap lifted by a reload while the governor holds qemu-img stopped: it goes on.
        disk, src, job_id, new_id = copy_of_written_qcow2(ec, "uncap", 256 * MiB, 192 * MiB)
        pid = wait_for(lambda: (qemu_img_converts(new_id) or [None])[0], 60, "the copy's qemu-img", interval=0.005)
        agent = agent_of(ec, pid)
        set_cap("1M", [agent])      # qemu-img's own -r stays 64M: the governor stops it, for seconds at a time
        wait_for(lambda: proc_state(pid) == "T" and time.sleep(0.05) is None and proc_state(pid) == "T", 30,
                 "the governor to stop qemu-img", interval=0.01)
        set_cap("0", [agent])
        job = ec.engine.wait_job(job_id, 30)
        assert job["status"] == "finished", job
        assert len(stall_events(ec)) == 1, stall_events(ec)
        new = ec.engine.get(f"/api/disks/{new_id}")
        assert qemu_img_compare(src, os.path.join(ec.storage, ec.sds[1]["id"], "images", new_id,
                                                  new["volumes"][0]["id"])).returncode == 0

    finally:
        if stopped and os.path.exists(f"/proc/{stopped}"):
            os.kill(stopped, signal.SIGCONT)
        codes = ec.stop()
        if not os.environ.get("FERRY_KEEP_TMP"):
            shutil.rmtree(d, ignore_errors=True)
    assert all(code == 0 for code in codes.values()), codes
