# SPDX-License-Identifier: GPL-2.0-or-later
"""Users, tokens and roles of the REST API, against a real engine over TLS:
every route of the route table answers 401 without a token and 403 to a role
too weak; tokens expire (idle and absolute), are revoked, survive a restart;
HTTP Basic works; failed logins are slowed down; `ferry login`, `ferry user`
and `ferry logout` over TLS; no password or token reaches a log or an event."""

import base64
import glob
import hashlib
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from conftest import make_workdir
from enginetest import Engine, HttpError
from ferrytest import FERRY, SANITIZED, tls_client_env, wait_for

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src", "engine")
ROLES = {"ENGINE_ROLE_VIEWER": 0, "ENGINE_ROLE_OPERATOR": 1, "ENGINE_ROLE_ADMIN": 2}
ROW = re.compile(r'\{\s*"(GET|POST|PUT|DELETE)",\s*"(/api/[^"]*|/metrics)",\s*\w+,\s*(ENGINE_ROLE_\w+)\s*\}')
# Every secret the tests send, to look for in the logs and events at the end.
SECRETS = []


def route_table():
    """The rows of the route table, read from the resource files the engine is built from."""
    rows = []
    for path in sorted(glob.glob(os.path.join(SRC, "*.c"))):
        with open(path) as f:
            rows += [(m.group(1), m.group(2), ROLES[m.group(3)]) for m in ROW.finditer(f.read())]
    return rows


def form(fields):
    return urllib.parse.urlencode(fields).encode()


def post_form(engine, path, fields, **kw):
    return engine.request("POST", path, raw=form(fields), auth=False,
                          headers={"Content-Type": "application/x-www-form-urlencoded"}, **kw)


def password_file(workdir, name, password):
    path = os.path.join(workdir, f"{name}.password")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return path


def status_of(engine, method, path, token):
    """The status only: some routes answer text (/metrics) or stay open (/api/events/stream)."""
    c = http.client.HTTPSConnection("127.0.0.1", engine.port, context=engine.ssl, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        if method != "GET":
            headers["Content-Type"] = "application/json"
        c.request(method, path, body="{}" if method != "GET" else None, headers=headers)
        return c.getresponse().status   # the body is not read: a stream never ends
    finally:
        c.close()


def add_user(engine, name, role):
    password = f"pw-{uuid.uuid4()}"
    SECRETS.append(password)
    engine.post("/api/users", {"name": name, "password": password, "role": role})
    token = engine.login(name, password)
    SECRETS.append(token)
    return password, token


@pytest.fixture(scope="module")
def eng():
    d = make_workdir()
    e = Engine(d)
    SECRETS.extend([e.admin_password, e.token])
    yield e
    assert e.stop() == 0
    if not os.environ.get("FERRY_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)


def test_every_route_needs_a_token_and_its_role(eng):
    rows = route_table()
    assert len(rows) >= 40
    assert ("GET", "/metrics", 0) in rows
    _, viewer = add_user(eng, "viewer1", "viewer")
    _, operator = add_user(eng, "operator1", "operator")
    for method, pattern, role in rows:
        path = re.sub(r"\{[^}]*\}", str(uuid.uuid4()), pattern)
        with pytest.raises(HttpError) as e:
            eng.request(method, path, body={} if method != "GET" else None, auth=False)
        assert e.value.status == 401, (method, pattern)
        assert e.value.body["fault"]["reason"] == "Unauthorized" and "ferry login" in e.value.body["fault"]["detail"]
        for token, have in ((viewer, 0), (operator, 1)):
            got = status_of(eng, method, path, token=token)
            if have < role:
                assert got == 403, (method, pattern, have, got)
            else:
                assert got not in (401, 403), (method, pattern, have, got)
        assert status_of(eng, method, path, token="not-a-token") == 401
    # What the issue names: a viewer cannot move, copy or delete.
    disk = str(uuid.uuid4())
    for method, path in (("POST", f"/api/disks/{disk}/move"), ("POST", f"/api/disks/{disk}/copy"),
                         ("DELETE", f"/api/disks/{disk}")):
        with pytest.raises(HttpError) as e:
            eng.request(method, path, body={"storage_domain": {"id": disk}}, token=viewer)
        assert e.value.status == 403 and "viewer" in e.value.body["fault"]["detail"]


def test_token_endpoint_shape(eng):
    status, body = eng.request("POST", "/sso/oauth/token", auth=False, raw=form(
        {"grant_type": "password", "username": "admin", "password": eng.admin_password, "scope": "ovirt-app-api"}),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
    SECRETS.append(body["access_token"])
    assert status == 200 and body["token_type"] == "bearer" and body["expires_in"] == 8 * 3600
    assert len(base64.urlsafe_b64decode(body["access_token"] + "=")) >= 16
    for fields, code in (({"grant_type": "client_credentials"}, 400),
                         ({"grant_type": "password", "username": "admin"}, 400),
                         ({"grant_type": "password", "username": "admin", "password": "wrong-password"}, 401),
                         ({"grant_type": "password", "username": "admin", "password": eng.admin_password,
                           "scope": "not-ovirt-app-api-at-all"}, 400),
                         # A name no user has may be a password typed in the wrong field.
                         ({"grant_type": "password", "username": "Hunter2-typed-here", "password": "x" * 8},
                          401)):
        with pytest.raises(HttpError) as e:
            post_form(eng, "/sso/oauth/token", fields)
        assert e.value.status == code and e.value.body["fault"], e.value.body
    # The scope is a list: ovirt-app-api among others is fine.
    status, body = post_form(eng, "/sso/oauth/token", {"grant_type": "password", "username": "admin",
                                                       "password": eng.admin_password,
                                                       "scope": "openid ovirt-app-api"})
    assert status == 200
    SECRETS.append(body["access_token"])
    events = eng.get("/api/events")["events"]
    assert any(ev["message"] == "failed login for user admin from 127.0.0.1" for ev in events)
    assert any(ev["message"] == "failed login for user (an unknown user) from 127.0.0.1" for ev in events)
    assert not any("Hunter2" in ev["message"] for ev in events)
    with open(eng.log_path) as f:
        assert "Hunter2" not in f.read()
    assert any(ev["message"].startswith("user admin logged in") and ev["user_name"] == "admin" for ev in events)


def test_basic_auth(eng):
    basic = base64.b64encode(f"admin:{eng.admin_password}".encode()).decode()
    status, body = eng.request("GET", "/api/datacenters", auth=False, headers={"Authorization": f"Basic {basic}"})
    assert status == 200 and body["datacenters"]
    wrong = base64.b64encode(b"admin:not-the-password").decode()
    with pytest.raises(HttpError) as e:
        eng.request("GET", "/api/datacenters", auth=False, headers={"Authorization": f"Basic {wrong}"})
    assert e.value.status == 401


def test_users_and_events_name_who(eng):
    add_user(eng, "someone", "operator")
    users = {u["name"]: u["role"] for u in eng.get("/api/users")["users"]}
    assert users["someone"] == "operator" and users["admin"] == "admin"
    assert "hash" not in str(eng.get("/api/users"))
    eng.request("PUT", "/api/users/someone", {"role": "viewer"})
    ev = eng.get("/api/events")["events"]
    assert any(e["message"] == "user someone now has the role viewer, and their tokens revoked"
               and e["user_name"] == "admin" for e in ev)
    # The last admin can be neither removed nor demoted.
    for method, body in (("DELETE", None), ("PUT", {"role": "viewer"})):
        with pytest.raises(HttpError) as e:
            eng.request(method, "/api/users/admin", body)
        assert e.value.status == 409
    eng.request("DELETE", "/api/users/someone")
    with pytest.raises(HttpError) as e:
        eng.post("/api/users", {"name": "../x", "password": "long-enough", "role": "viewer"})
    assert e.value.status == 400


def test_password_role_change_and_removal_end_the_users_tokens(eng):
    password, t1 = add_user(eng, "changer", "operator")
    t2 = eng.login("changer", password)
    SECRETS.append(t2)
    new = f"pw-{uuid.uuid4()}"
    SECRETS.append(new)
    eng.request("PUT", "/api/users/changer", {"password": new})
    for t in (t1, t2):
        assert status_of(eng, "GET", "/api/hosts", token=t) == 401
    with pytest.raises(HttpError):
        eng.login("changer", password)
    t3 = eng.login("changer", new)
    SECRETS.append(t3)
    assert eng.request("GET", "/api/hosts", token=t3)[0] == 200
    eng.request("PUT", "/api/users/changer", {"role": "viewer"})
    assert status_of(eng, "GET", "/api/hosts", token=t3) == 401
    t4 = eng.login("changer", new)
    SECRETS.append(t4)
    assert eng.request("GET", "/api/hosts", token=t4)[0] == 200
    # Another user's tokens are untouched; the admin's own token too.
    assert eng.request("GET", "/api/users")[0] == 200
    eng.request("DELETE", "/api/users/changer")
    assert status_of(eng, "GET", "/api/hosts", token=t4) == 401


def test_tokens_per_user_are_capped(eng):
    """A script that logs in without end keeps at most 100 tokens: the oldest end."""
    password, first = add_user(eng, "looper", "viewer")
    second = eng.login("looper", password)
    for _ in range(99):
        last = eng.login("looper", password)
    SECRETS.extend([second, last])
    assert status_of(eng, "GET", "/api/hosts", token=first) == 401
    for t in (second, last):
        assert status_of(eng, "GET", "/api/hosts", token=t) == 200
    # Each login that ended tokens says so, with the count.
    ended = [ev["message"] for ev in eng.get("/api/events")["events"] if "tokens" in ev["message"]
             and "looper" in ev["message"]]
    assert ended == ["1 oldest token(s) of user looper ended: more than 100 tokens"], ended


def test_revocation_and_restart(eng):
    _, kept = add_user(eng, "keeper", "viewer")
    revoked = eng.login("keeper", SECRETS[-2])
    SECRETS.append(revoked)
    assert eng.request("GET", "/api/hosts", token=revoked)[0] == 200
    status, _ = post_form(eng, "/sso/oauth/revoke", {"token": revoked})
    assert status == 200
    assert status_of(eng, "GET", "/api/hosts", token=revoked) == 401
    eng.restart()
    assert eng.request("GET", "/api/hosts", token=kept)[0] == 200
    assert status_of(eng, "GET", "/api/hosts", token=revoked) == 401
    assert any(e["message"] == "a token of user keeper was revoked" for e in eng.get("/api/events")["events"])


def ferry(env, *args, stdin=None):
    return subprocess.run([FERRY, *args], capture_output=True, text=True, timeout=60, env=env,
                          input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)


def test_cli_login_users_logout_over_tls(eng, tmp_path):
    env = tls_client_env()
    env.update(FERRY_ENGINE_URL=eng.url, FERRY_CA_FILE=eng.ca_file, XDG_CONFIG_HOME=str(tmp_path / "config"))
    assert eng.url.startswith("https://")
    r = ferry(env, "host", "list")
    assert r.returncode == 1 and "ferry login" in r.stderr, r.stderr
    r = ferry(env, "login", "--user", "admin", "--password-file", eng.admin_password_file)
    assert r.returncode == 0 and "logged in" in r.stdout, r.stderr
    tokens = tmp_path / "config" / "ferry" / "tokens.json"
    assert stat.S_IMODE(os.stat(tokens).st_mode) == 0o600
    SECRETS.extend(re.findall(r'"([A-Za-z0-9_-]{40,})"', tokens.read_text()))
    for args in (("host", "list"), ("sd", "list"), ("disk", "list"), ("vm", "list"), ("template", "list"),
                 ("job", "list"), ("event", "list"), ("config", "get", "DataOperationsByHSM"), ("user", "list")):
        r = ferry(env, *args)
        assert r.returncode == 0, (args, r.stderr)
    pw = password_file(str(tmp_path), "op", "op-password-1")
    SECRETS.append("op-password-1")
    r = ferry(env, "user", "add", "op", "--role", "operator", "--password-file", pw)
    assert r.returncode == 0 and "op operator" in r.stdout, r.stderr
    r = ferry(env, "user", "role", "op", "viewer")
    assert r.returncode == 0 and "op viewer" in r.stdout, r.stderr
    pw2 = password_file(str(tmp_path), "op2", "op-password-2")
    SECRETS.append("op-password-2")
    assert ferry(env, "user", "passwd", "op", "--password-file", pw2).returncode == 0
    # Log in as op through the prompt (stdin is not a terminal: no echo to turn off).
    env_op = dict(env, XDG_CONFIG_HOME=str(tmp_path / "config-op"))
    r = ferry(env_op, "login", stdin="op\nop-password-2\n")
    assert r.returncode == 0, r.stderr
    r = ferry(env_op, "config", "set", "DataOperationsByHSM", "false")
    assert r.returncode == 1 and "has the role viewer" in r.stderr, r.stderr
    r = ferry(env_op, "logout")
    assert r.returncode == 0 and "logged out" in r.stdout, r.stderr
    r = ferry(env_op, "host", "list")
    assert r.returncode == 1 and "ferry login" in r.stderr
    r = ferry(env, "user", "remove", "op")
    assert r.returncode == 0, r.stderr
    assert "op" not in [u["name"] for u in eng.get("/api/users")["users"]]


def test_logs_and_events_hold_no_secret(eng):
    """Last of the module: every password and token sent so far, nowhere in the log or the events."""
    with open(eng.log_path, errors="replace") as f:
        log = f.read()
    events = str(eng.get("/api/events"))
    assert "logged in" in log and len(SECRETS) > 8
    for s in SECRETS:
        assert s not in log and s not in events, "a secret reached the log or the events"


def test_token_expiry():
    d = make_workdir()
    # Idle 3 s, absolute 8 s: the margins hold when one request takes a second
    # or more (ASan build, parallel test workers on a 2-core machine).
    e = Engine(d, "--token-idle-timeout=3", "--token-lifetime=8")
    try:
        e.token = None
        t = e.login("admin", e.admin_password)
        # Used every half second: valid past the idle timeout, until the absolute one.
        start = time.monotonic()
        while time.monotonic() - start < 5:
            assert e.request("GET", "/api/hosts", token=t)[0] == 200
            time.sleep(0.5)
        deadline = start + 14
        while status_of(e, "GET", "/api/hosts", token=t) == 200:
            assert time.monotonic() < deadline, "the token outlived its lifetime"
            time.sleep(0.5)
        assert time.monotonic() - start >= 6
        with pytest.raises(HttpError) as err:
            e.request("GET", "/api/hosts", token=t)
        assert err.value.status == 401 and "ferry login" in err.value.body["fault"]["detail"]
        # Unused: gone after the idle timeout.
        t2 = e.login("admin", e.admin_password)
        assert e.request("GET", "/api/hosts", token=t2)[0] == 200
        # Swept from the inventory on a timer (every idle timeout here), not
        # only when used again: gone within idle + one sweep period.
        digest = hashlib.sha256(t2.encode()).hexdigest()

        def swept():
            return e.sql("SELECT COUNT(*) FROM tokens WHERE hash = ?", (digest,)) == [("0",)]
        wait_for(swept, 12, "the idle token to be swept from the inventory")
        assert status_of(e, "GET", "/api/hosts", token=t2) == 401
    finally:
        assert e.stop() == 0
        shutil.rmtree(d, ignore_errors=True)


def test_failed_logins_are_slowed_down():
    d = make_workdir()
    e = Engine(d)
    try:
        bad = {"grant_type": "password", "username": "admin", "password": "guess-guess"}
        for _ in range(5):
            t0 = time.monotonic()
            with pytest.raises(HttpError):
                post_form(e, "/sso/oauth/token", bad)
            assert time.monotonic() - t0 < 1
        waits = []
        for _ in range(2):
            t0 = time.monotonic()
            with pytest.raises(HttpError) as err:
                post_form(e, "/sso/oauth/token", bad)
            waits.append(time.monotonic() - t0)
            assert err.value.status == 401
        assert waits[0] >= 1 and waits[1] >= 2, waits
        # The right password also waits, then clears the count.
        t0 = time.monotonic()
        e.token = e.login("admin", e.admin_password)
        assert time.monotonic() - t0 >= 2
        t0 = time.monotonic()
        e.login("admin", e.admin_password)
        assert time.monotonic() - t0 < 1
        with open(e.log_path) as f:
            assert "repeated failed logins for user admin or from 127.0.0.1: the next attempt waits" in f.read()
    finally:
        assert e.stop() == 0
        shutil.rmtree(d, ignore_errors=True)


def raw(e, method, path, headers=None, body=None, source="127.0.0.1", timeout=30):
    """One request from a chosen loopback source address: (status, headers, body, seconds)."""
    c = http.client.HTTPSConnection("127.0.0.1", e.port, context=e.ssl, timeout=timeout, source_address=(source, 0))
    try:
        c.connect()
        t0 = time.monotonic()
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, dict(r.getheaders()), json.loads(data) if data else None, time.monotonic() - t0
    finally:
        c.close()


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bad_login(user):
    return form({"grant_type": "password", "username": user, "password": "guess-guess"})


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_login_throttle_per_source_parallel_and_off_the_main_loop():
    d = make_workdir()
    e = Engine(d)
    try:
        # Failures from another address do not lock the real user out of Basic.
        for _ in range(6):
            status, _, _, _ = raw(e, "GET", "/api/hosts", basic("admin", "guess-guess"), source="127.0.0.2")
            assert status == 401
        status, _, body, took = raw(e, "GET", "/api/hosts", basic("admin", e.admin_password))
        assert status == 200 and took < 1, (status, body, took)
        # The attacker's own next attempt still waits.
        status, _, _, took = raw(e, "GET", "/api/hosts", basic("admin", "guess-guess"), source="127.0.0.2")
        assert status == 401 and took >= 1.5, took
        # 7 failures, one event (the next one, a minute later at the earliest, counts those not shown).
        events = [ev["message"] for ev in e.get("/api/events")["events"] if "127.0.0.2" in ev["message"]]
        assert events == ["failed login for user admin from 127.0.0.2"], events
        # 7 failures of the user: from a new address even the right password waits (5 per user, issue 11),
        # from the address it logged in from it does not; once right, that address is trusted too.
        status, _, _, took = raw(e, "GET", "/api/hosts", basic("admin", e.admin_password), source="127.0.0.9")
        assert status == 200 and took >= 1.5, (status, took)
        for src in ("127.0.0.9", "127.0.0.1"):
            status, _, _, took = raw(e, "GET", "/api/hosts", basic("admin", e.admin_password), source=src)
            assert status == 200 and took < 1, (src, status, took)

        # Parallel guesses from one address: a few are checked, the rest refused at once with Retry-After.
        n = 12
        ready = threading.Barrier(n)
        results = []

        def guess():
            c = http.client.HTTPSConnection("127.0.0.1", e.port, context=e.ssl, timeout=60,
                                            source_address=("127.0.0.3", 0))
            c.connect()
            ready.wait()
            c.request("POST", "/sso/oauth/token", body=bad_login("admin"), headers=FORM)
            r = c.getresponse()
            results.append((r.status, r.getheader("Retry-After"), json.loads(r.read())["fault"]["reason"]))
            c.close()
        threads = [threading.Thread(target=guess) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = [s for s, _, _ in results]
        assert statuses.count(429) >= n - 8 and statuses.count(401) <= 8, statuses
        assert all(int(ra) >= 1 for s, ra, _ in results if s == 429), results
        assert all(reason == "Too many requests" for s, _, reason in results if s == 429), results

        # A flood of failed logins (each from its own address: no throttle holds it back) is hashed off the
        # main loop: a request with a token stays fast meanwhile.
        flood_done = threading.Event()
        flood_status = []

        def flood(k):
            for i in range(k * 8, k * 8 + 8):
                try:
                    st, hd, bd, _ = raw(e, "POST", "/sso/oauth/token", FORM, bad_login(f"nobody{i}"),
                                        source=f"127.1.{i // 200}.{i % 200 + 1}", timeout=10)
                    flood_status.append(st)
                    if st in (429, 503):
                        assert "Retry-After" in hd and bd["fault"]["reason"] != "Internal error", (st, bd)
                except OSError:
                    flood_status.append(0)
        floods = [threading.Thread(target=flood, args=(k,)) for k in range(16)]
        for t in floods:
            t.start()
        times = []
        conn = http.client.HTTPSConnection("127.0.0.1", e.port, context=e.ssl, timeout=30)
        try:
            while any(t.is_alive() for t in floods) or len(times) < 20:
                t0 = time.monotonic()
                conn.request("GET", "/api/hosts", headers={"Authorization": f"Bearer {e.token}"})
                r = conn.getresponse()
                r.read()
                assert r.status == 200
                times.append(time.monotonic() - t0)
                time.sleep(0.02)
        finally:
            conn.close()
        for t in floods:
            t.join()
        assert len(flood_status) == 128 and flood_status.count(401) >= 64, flood_status
        times.sort()
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        # With the hashing on the main loop this was 2.9 s (6 s for 300 logins). Under ASan, with other
        # test workers on the same 2 cores, one plain request alone can take a second: a wider bound.
        assert p99 < (5 if SANITIZED else 0.5), (p99, times[-5:], len(times))
    finally:
        assert e.stop() == 0
        shutil.rmtree(d, ignore_errors=True)


def test_cli_follows_no_redirect(tmp_path):
    """An engine URL that redirects elsewhere: the CLI stops, and neither its token nor a password travels."""
    seen = []

    class Elsewhere(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(dict(self.headers))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"hosts": []}')
        do_POST = do_GET

        def log_message(self, *args):
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Elsewhere)

    class Redirector(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.2:{other.server_port}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        do_POST = do_GET

        def log_message(self, *args):
            pass

    first = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    for srv in (other, first):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{first.server_port}"
        config = tmp_path / "config"
        (config / "ferry").mkdir(parents=True)
        fd = os.open(config / "ferry" / "tokens.json", os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({url: "a-token-that-must-stay-home"}, f)
        env = dict(tls_client_env(), FERRY_ENGINE_URL=url, XDG_CONFIG_HOME=str(config))
        r = ferry(env, "host", "list")
        assert r.returncode != 0 and "redirect (307)" in r.stderr, r.stderr
        pw = password_file(str(tmp_path), "x", "a-password-that-must-stay-home")
        r = ferry(env, "login", "--user", "admin", "--password-file", pw)
        assert r.returncode != 0 and "redirect (307)" in r.stderr, r.stderr
        assert seen == [], seen
    finally:
        for srv in (other, first):
            srv.shutdown()
            srv.server_close()


def test_sigterm_during_a_login_flood_exits_cleanly():
    """Password checks in flight at shutdown are dropped: no check finishes on a stopping engine."""
    # The race needs a hash running at the signal: names unknown and fresh (no user-wide delay) keep both
    # password threads busy; it is a matter of timing, hence several rounds.
    for _ in range(5):
        d = make_workdir()
        e = Engine(d)
        stop = threading.Event()
        answered = threading.Semaphore(0)

        def flood(k):
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    raw(e, "GET", "/api/hosts", basic(f"nobody{k}x{i}", "guess-guess"),
                        source=f"127.6.{k}.{i % 250 + 1}", timeout=20)
                    answered.release()
                except OSError:
                    pass
        threads = [threading.Thread(target=flood, args=(k,)) for k in range(10)]
        try:
            for t in threads:
                t.start()
            for _ in range(6):          # checks are running and queued when the signal comes
                assert answered.acquire(timeout=60)
            e.proc.send_signal(15)
            assert e.proc.wait(30) == 0
        finally:
            stop.set()
            for t in threads:
                t.join()
            e.stop()
            shutil.rmtree(d, ignore_errors=True)


def test_guesses_from_elsewhere_never_lock_the_user_out(eng):
    """Guesses kept in flight from 2 addresses: the real user from a third logs in, perhaps delayed, never 429."""
    password, _ = add_user(eng, "victim", "viewer")
    stop = threading.Event()
    conns, answers, lock = [], [], threading.Lock()

    def attack(source):
        while not stop.is_set():
            c = http.client.HTTPSConnection("127.0.0.1", eng.port, context=eng.ssl, timeout=60,
                                            source_address=(source, 0))
            try:
                c.connect()
                with lock:
                    if stop.is_set():
                        return
                    conns.append(c)
                c.request("POST", "/sso/oauth/token", body=bad_login("victim"), headers=FORM)
                status = c.getresponse().status
                with lock:
                    answers.append(status)
            except (OSError, http.client.HTTPException):
                pass
            finally:
                c.close()
    # 4 per address: each one's cap per (user, address), 8 for the user in all.
    threads = [threading.Thread(target=attack, args=(f"127.0.11.{2 + i % 2}",)) for i in range(8)]
    for t in threads:
        t.start()
    try:
        # The first 5 failures are free and answered at once; from then on all 8 wait in flight.
        deadline = time.monotonic() + 20
        while len(answers) < 5:
            assert time.monotonic() < deadline, answers
            time.sleep(0.05)
        status, hd, body, took = raw(eng, "GET", "/api/hosts", basic("victim", password), source="127.0.11.4",
                                     timeout=60)
        assert status == 200 and took <= 40, (status, hd.get("Retry-After"), body, took)
        assert set(answers) <= {401, 429}, answers
    finally:
        stop.set()
        with lock:
            for c in conns:
                try:
                    c.sock and c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for t in threads:
            t.join()
