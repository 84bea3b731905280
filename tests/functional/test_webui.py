# SPDX-License-Identifier: GPL-2.0-or-later
"""The web UI end to end: a real headless Chromium (cdp.py) against a real
cluster (two hosts, two domains, the engine serving the UI at /). Screenshots
of every page go to tests/functional/artifacts/webui/ (or
$FERRY_TEST_ARTIFACTS), never committed."""

import http.client
import json
import os
import shutil
import ssl
import subprocess
import time
import types
import urllib.parse

import pytest

from cdp import Browser, wait_file
from enginetest import Engine, EngineCluster, postgres
from ferrytest import MiB, file_digest, free_port, qemu_io_write, wait_for
from conftest import make_workdir

ARTIFACTS = os.environ.get("FERRY_TEST_ARTIFACTS") or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                    "artifacts", "webui")
RATE = "16M"                  # 96 MiB copies take 6 s: the page (one redraw a second) sees several values
DISK = 96 * MiB
VIEWER = ("ui-viewer", "viewer-password-1")


@pytest.fixture(scope="module")
def ui():
    d = make_workdir()
    # The agents answer CORS for the engine's origin only: its port must be known before they start.
    port = free_port()
    origin = f"https://127.0.0.1:{port}"
    c = EngineCluster(d, hosts=2, domains=2, engine_port=port,
                      agent_options={"copy_rate_limit": RATE, "cors_origin": origin})
    browser = None
    try:
        browser = Browser(os.path.join(d, "browser"), c.engine.ca_file)
        os.makedirs(ARTIFACTS, exist_ok=True)
        c.browser = browser
        c.origin = origin
        yield c
    finally:
        if browser:
            browser.close()
        codes = c.stop()
        if not os.environ.get("FERRY_KEEP_TMP"):
            shutil.rmtree(d, ignore_errors=True)
    assert all(code == 0 for code in codes.values()), codes


def shot(b, name):
    b.screenshot(os.path.join(ARTIFACTS, f"{name}.png"))


def login(c, user, password, b=None):
    b = b or c.browser
    b.goto(c.origin + "/")
    b.wait("document.querySelector('#username') || !document.querySelector('#who').hidden", 10, "the page")
    logout(c, b)
    b.fill("#username", user)
    b.fill("#password", password)
    b.click("#login-submit")
    b.wait("!document.querySelector('#who').hidden || (document.querySelector('#login-error') || {}).textContent",
           15, "the logged-in header")
    assert b.eval("!document.querySelector('#who').hidden"), b.eval(
        "document.querySelector('#login-error').textContent + ' / ' + document.querySelector('#status').textContent")


def logout(c, b=None):
    b = b or c.browser
    if b.eval("!!document.querySelector('#who') && !document.querySelector('#who').hidden"):
        b.click("#logout")
    b.wait("document.querySelector('#username')", 10, "the login form")


def page(c, name, b=None):
    b = b or c.browser
    b.eval(f"location.hash = '#/{name}'")
    b.wait(f"document.querySelector('#data[data-view={name}][aria-busy=false]')", 15, f"the {name} page")


def disk_by_name(c, name):
    return next((d for d in c.engine.get("/api/disks")["disks"] if d["name"] == name), None)


def test_bad_password_shows_an_error(ui):
    b = ui.browser
    b.goto(ui.origin + "/")
    b.wait("document.querySelector('#username')", 10, "the login form")
    b.fill("#username", "admin")
    b.fill("#password", "not-the-password")
    b.click("#login-submit")
    msg = b.wait("document.querySelector('#login-error').textContent", 15, "the login error")
    assert "Wrong user name or password" in msg
    assert b.eval("document.querySelector('#who').hidden") is True
    assert b.eval("sessionStorage.getItem('ferry.token')") is None
    shot(b, "login-error")


def test_admin_sees_every_page_labelled(ui):
    b = ui.browser
    login(ui, ui.engine.ADMIN, ui.engine.admin_password)
    assert b.eval("sessionStorage.getItem('ferry.token')")
    assert "admin (admin)" in b.eval("document.querySelector('#who-name').textContent")
    unlabelled = """[...document.querySelectorAll('button, input, select, a[href]')].filter(el =>
        !(el.getAttribute('aria-label') || (el.labels && el.labels.length) || el.textContent.trim()))
        .map(el => el.outerHTML.slice(0, 80))"""
    for name in ("hosts", "storage", "disks", "vms", "templates", "jobs", "events"):
        page(ui, name)
        assert b.eval("document.querySelector('#data p.error')") is None, b.eval("document.querySelector('#data').innerText")
        assert b.eval(unlabelled) == [], name
        shot(b, f"{name}-1280x720")
    page(ui, "hosts")
    assert b.eval("document.activeElement.id") == "main"       # navigation moves focus to the new page
    assert b.eval("document.querySelectorAll('#data tbody tr').length") == 2
    assert "SPM" in b.eval("document.querySelector('#data').innerText")
    # Keyboard: from the skip link, Tab walks the page links, then the page's controls.
    b.eval("document.querySelector('.skip').focus()")
    b.key("Tab", "Tab", 9)
    assert b.eval("document.activeElement.getAttribute('href')") == "#/hosts"
    for _ in range(12):
        b.key("Tab", "Tab", 9)
    assert b.eval("document.activeElement.tagName") in ("A", "BUTTON", "INPUT", "SELECT")
    # Phone width: rows become cards, nothing wider than the screen.
    b.viewport(390, 844, mobile=True)
    try:
        page(ui, "disks")
        assert b.eval("document.documentElement.scrollWidth") <= 390 + 1
        shot(b, "disks-phone")
    finally:
        b.call("Emulation.clearDeviceMetricsOverride")


def api_answers(tab):
    """The user's name from /api/session in that tab, or 'timeout' if the browser holds the request back."""
    return tab.eval("Promise.race([get('/api/session').then(s => s.user),"
                    " new Promise(r => setTimeout(() => r('timeout'), 10000))])")


def fail_hosts_reads(b, times):
    """Opens the hosts page with its GETs of /api/hosts failing with a network error (no answer at all:
    fetch's TypeError) the first `times` times, through DevTools' Fetch domain; the others go through.
    How many failed."""
    b.call("Fetch.enable", patterns=[{"urlPattern": "*/api/hosts?*"}])
    failed = []
    try:
        b.events.clear()
        b.eval("location.hash = '#/hosts'")

        def shown():
            for ev in [e for e in b.events if e.get("method") == "Fetch.requestPaused"]:
                b.events.remove(ev)
                rid = ev["params"]["requestId"]
                if len(failed) < times:
                    failed.append(rid)
                    b.call("Fetch.failRequest", requestId=rid, errorReason="ConnectionReset")
                else:
                    b.call("Fetch.continueRequest", requestId=rid)
            return b.eval("!!document.querySelector('#data[data-view=hosts][aria-busy=false]')")
        wait_for(shown, 15, "the hosts page")
    finally:
        b.call("Fetch.disable")
    return len(failed)


def test_a_read_that_gets_no_answer_is_sent_once_more(ui):
    # A browser drops its connections when the machine's network changes (Chromium: ERR_NETWORK_CHANGED,
    # not resent); the page must not show an error for one such loss, and must say what happened for two.
    b = ui.browser
    login(ui, ui.engine.ADMIN, ui.engine.admin_password)
    page(ui, "storage")
    assert fail_hosts_reads(b, 1) == 1
    assert b.eval("document.querySelector('#data p.error')") is None, b.eval("document.querySelector('#data').innerText")
    assert b.eval("document.querySelectorAll('#data tbody tr').length") == 2
    page(ui, "storage")
    assert fail_hosts_reads(b, 2) == 2
    err = b.eval("(document.querySelector('#data p.error') || {}).textContent")
    assert err and err.startswith("Cannot read hosts: no answer from the engine, twice"), err
    page(ui, "storage")
    page(ui, "hosts")
    assert b.eval("document.querySelector('#data p.error')") is None


def test_seven_tabs_share_one_event_stream(ui):
    """Chromium opens 6 connections per origin: a stream per tab would freeze the 7th tab and every API call."""
    b = ui.browser
    login(ui, ui.engine.ADMIN, ui.engine.admin_password)
    page(ui, "disks")
    tabs = []
    try:
        for _ in range(6):
            t = b.new_tab()
            tabs.append(t)
            login(ui, ui.engine.ADMIN, ui.engine.admin_password, t)
            page(ui, "disks", t)
        every = [b] + tabs
        for t in every:
            t.wait("document.querySelector('#live').className === 'on'", 15, "live updates in every tab")
            assert api_answers(t) == ui.engine.ADMIN
        assert sum(1 for t in every if t.eval("LIVE.leader")) == 1
        # Every tab hears of a change through the one stream.
        r = ui.engine.post("/api/disks", {"name": "seven-tabs", "provisioned_size": MiB, "format": "raw",
                                          "sparse": True, "storage_domain": {"id": ui.sds[0]["id"]}})
        for t in every:
            t.wait(f"document.querySelector('[data-disk-status=\"{r['disk']['id']}\"]')", 30, "the disk in every tab")
        # The leader's tab closes: another takes the stream over.
        leader = next(t for t in every if t.eval("LIVE.leader"))
        if leader is b:
            logout(ui)
        else:
            b.close_tab(leader)
            tabs.remove(leader)
        rest = [t for t in [b] + tabs if t is not leader]
        wait_for(lambda: sum(1 for t in rest if t.eval("LIVE.leader")) == 1, 15, "a new leader")
        for t in rest:
            assert api_answers(t) == ui.engine.ADMIN
        assert ui.engine.wait_job(r["job"]["id"], 60)["status"] == "finished"
    finally:
        for t in tabs:
            b.close_tab(t)


def test_live_redraws_reread_only_what_changed_at_most_once_a_second(ui):
    """On the VMs page a change to disks (every copy makes many) reads nothing, a change to attachments does not
    make the page read every VM's snapshots again nor list the disks, and redraws are coalesced."""
    b = ui.browser
    vm = ui.engine.post("/api/vms", {"name": "ui-redraws"})
    r = ui.engine.post("/api/disks", {"name": "ui-redraws-disk", "provisioned_size": MiB, "format": "raw",
                                      "sparse": True, "storage_domain": {"id": ui.sds[0]["id"]}})
    assert ui.engine.wait_job(r["job"]["id"], 60)["status"] == "finished"
    disk = r["disk"]
    login(ui, ui.engine.ADMIN, ui.engine.admin_password)
    page(ui, "vms")
    b.wait("document.querySelector('#live').className === 'on'", 15, "the event stream")
    b.wait(f"document.querySelector('#data').innerText.includes('ui-redraws')", 15, "the VM")
    # The page's own first redraws (page load, the stream's hello) over before counting.
    wait_for(lambda: b.eval("(l => !l || performance.now() - l.responseEnd > 1500)"
                            "(performance.getEntriesByType('resource').pop())"), 15, "the page to settle")
    b.eval("performance.clearResourceTimings(); performance.setResourceTimingBufferSize(10000)")
    fetched = """performance.getEntriesByType('resource').map(e => [new URL(e.name).pathname, e.startTime])"""
    # A disk made: the disks, jobs and steps tables change, none of which the VMs page shows.
    r = ui.engine.post("/api/disks", {"name": "ui-redraws-other", "provisioned_size": MiB, "format": "raw",
                                      "sparse": True, "storage_domain": {"id": ui.sds[0]["id"]}})
    assert ui.engine.wait_job(r["job"]["id"], 60)["status"] == "finished"
    time.sleep(1.5)     # the last change event (250 ms after the last write) and a redraw it would cause (1 s)
    assert b.eval(fetched) == [], b.eval(fetched)
    ui.engine.request("DELETE", f"/api/disks/{r['disk']['id']}")
    # Attachments changed several times in a row: the page redraws, coalesced.
    for _ in range(3):
        ui.engine.post(f"/api/vms/{vm['id']}/diskattachments", {"disk": {"id": disk["id"]}})
        ui.engine.request("DELETE", f"/api/vms/{vm['id']}/diskattachments/{disk['id']}")
    ui.engine.post(f"/api/vms/{vm['id']}/diskattachments", {"disk": {"id": disk["id"]}})
    b.wait(f"document.querySelector('#detach-{vm['id']}-{disk['id']}')", 15, "the attached disk in the page")
    # The last change event comes 250 ms after the last write; its redraw up to a second later.
    wait_for(lambda: b.eval(f"(() => {{ const l = ({fetched}).filter(([p]) => p === '/api/vms').pop();"
                            " return l && performance.now() - l[1] > 1500; })()"), 15, "the redraws to settle")
    seen = b.eval(fetched)
    assert not [p for p, _ in seen if p.endswith("/snapshots")], seen
    # The attached disk's name: read once, by id; the disks are never listed.
    assert [p for p, _ in seen if p.startswith("/api/disks")] == [f"/api/disks/{disk['id']}"], seen
    starts = [t for p, t in seen if p == "/api/vms"]
    assert starts and all(b2 - a >= 950 for a, b2 in zip(starts, starts[1:])), starts
    ui.engine.request("DELETE", f"/api/vms/{vm['id']}?detach_only=true")
    ui.engine.request("DELETE", f"/api/disks/{disk['id']}")


def test_long_lists_come_a_page_at_a_time(ui):
    """The VMs page shows 100 VMs and a "More" button that reads the next page (GET /api/vms?max=100&page=)."""
    b = ui.browser
    made = [ui.engine.request("POST", "/api/vms", {"name": f"ui-page-{i:03}"})[1]["id"] for i in range(101)]
    try:
        login(ui, ui.engine.ADMIN, ui.engine.admin_password)
        page(ui, "vms")
        rows = "document.querySelectorAll('#data tbody tr').length"
        assert b.eval(rows) == 100 and b.eval("!!document.querySelector('#more-vms')")
        b.click("#more-vms")
        b.wait(f"{rows} === {len(ui.engine.get('/api/vms')['vms'])}", 15, "the second page of VMs")
        assert b.eval("!document.querySelector('#more-vms')")
    finally:
        for v in made:
            ui.engine.request("DELETE", f"/api/vms/{v}")


def test_disks_filtered_by_name(ui):
    """The disks page's name filter asks the engine for ?search=name=NAME (escaped): exactly that
    disk, not the one whose name it begins."""
    b = ui.browser
    for name in ("ui find 1", "ui find 1.2"):
        status, _ = ui.engine.request("POST", "/api/disks", {
            "name": name, "provisioned_size": MiB, "format": "raw", "sparse": True,
            "storage_domain": {"id": ui.sds[1]["id"]}})
        assert status == 202
    login(ui, ui.engine.ADMIN, ui.engine.admin_password)
    page(ui, "disks")
    b.fill("#search-disks", "ui find 1")
    names = "[...document.querySelectorAll('#data tbody tr td:first-child')].map(td => td.textContent)"
    b.wait(f"JSON.stringify({names}) === JSON.stringify(['ui find 1'])", 15, "only the disk of that name")
    b.fill("#search-disks", "no such disk")
    b.wait("(p => p && p.textContent === 'No disks yet.')(document.querySelector('#data p.muted'))", 15, "no disk listed")


def test_create_disk_in_the_browser(ui):
    b = ui.browser
    login(ui, ui.engine.ADMIN, ui.engine.admin_password)
    page(ui, "disks")
    b.fill("#disk-name", "ui-made")
    b.fill("#disk-size", "64")
    b.eval(f"document.querySelector('#disk-domain').value = {json.dumps(ui.sds[1]['id'])}")
    b.click("#disk-create")
    disk = wait_for(lambda: disk_by_name(ui, "ui-made"), 15, "the disk in the inventory")
    # The page hears of it by the event stream, no reload.
    b.wait(f"(el => el && el.textContent === 'ok')(document.querySelector('[data-disk-status=\"{disk['id']}\"]'))",
           60, "the new disk ok in the page")
    d = ui.engine.get(f"/api/disks/{disk['id']}")
    assert d["provisioned_size"] == 64 * MiB and d["storage_domains"] == [{"id": ui.sds[1]["id"]}]


def test_move_shows_live_progress_and_copying_host(ui):
    b = ui.browser
    disk = ui.data_disk("ui-move", DISK, seed=7)
    login(ui, ui.engine.ADMIN, ui.engine.admin_password)
    page(ui, "disks")
    b.wait(f"document.querySelector('#move-{disk['id']}')", 15, "the move button")
    # Everything the page shows of this disk while it moves, as it shows it.
    b.eval(f"""(() => {{ window.__seen = []; window.__hosts = [];
        const watch = () => {{
          const p = document.querySelector('progress[data-disk="{disk['id']}"]');
          if (p && !__seen.includes(p.value)) __seen.push(p.value);
          for (const h of document.querySelectorAll('[data-disk-steps="{disk['id']}"] [data-host]'))
            if (!__hosts.includes(h.dataset.host)) __hosts.push(h.dataset.host);
        }};
        new MutationObserver(watch).observe(document.body, {{subtree: true, childList: true, attributes: true}});
    }})()""")
    b.click(f"#move-{disk['id']}")
    b.eval(f"document.querySelector('#move-domain').value = {json.dumps(ui.sds[1]['id'])}")
    shot(b, "disk-move-dialog")
    b.click("#dialog-submit")
    b.wait(f"document.querySelector('progress[data-disk=\"{disk['id']}\"]')", 15, "the progress bar")
    shot(b, "disk-moving")
    b.wait(f"(el => el && el.textContent === 'ok')(document.querySelector('[data-disk-status=\"{disk['id']}\"]'))",
           90, "the disk ok again")
    seen = b.eval("window.__seen")
    hosts = b.eval("window.__hosts")
    between = sorted({v for v in seen if 0 < v < 100})
    assert len(between) >= 3, seen
    assert hosts and set(hosts) <= {"host1", "host2"}, hosts
    assert ui.engine.get(f"/api/disks/{disk['id']}")["storage_domains"] == [{"id": ui.sds[1]["id"]}]


def test_cancel_a_copy_from_the_jobs_page(ui):
    b = ui.browser
    disk = ui.data_disk("ui-cancel", DISK, seed=7)
    login(ui, ui.engine.ADMIN, ui.engine.admin_password)
    page(ui, "disks")
    b.click(f"#copy-{disk['id']}")
    b.eval(f"document.querySelector('#copy-domain').value = {json.dumps(ui.sds[1]['id'])}")
    b.fill("#copy-name", "ui-cancel-copy")
    b.click("#dialog-submit")
    job = wait_for(lambda: next((j for j in ui.engine.get("/api/jobs")["jobs"]
                                 if j["status"] == "started" and "ui-cancel" in j["description"]), None),
                   15, "the copy job")
    page(ui, "jobs")
    b.wait(f"document.querySelector('#cancel-{job['id']}')", 15, "the cancel button")
    shot(b, "jobs-running")
    b.click(f"#cancel-{job['id']}")
    end = ui.engine.wait_job(job["id"], 60)
    assert end["status"] == "aborted", end
    b.wait(f"!document.querySelector('#cancel-{job['id']}') && document.querySelector('#data').innerText.includes('aborted')",
           15, "the job aborted in the page")
    assert disk_by_name(ui, "ui-cancel")["status"] == "ok"
    assert disk_by_name(ui, "ui-cancel-copy") is None


def test_upload_and_download_from_the_browser(ui):
    b = ui.browser
    src = os.path.join(ui.workdir, "upload.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", src, "16M"], check=True)
    # More than the page's 8 MiB chunk: the chunk loop and its Content-Range offsets are exercised.
    qemu_io_write(src, "qcow2", 0x5a, 0, 9 * MiB)
    qemu_io_write(src, "qcow2", 0xa5, 12 * MiB, 1 * MiB)
    assert os.path.getsize(src) > 8 * MiB
    login(ui, ui.engine.ADMIN, ui.engine.admin_password)
    page(ui, "disks")
    b.set_files("#upload-file", [src])
    b.fill("#upload-name", "ui-upload")
    b.click("#upload-submit")
    b.wait("document.querySelector('#status').textContent.startsWith('Uploading upload.qcow2: done') || "
           "document.querySelector('#status').className === 'error'", 120, "the upload to end")
    assert b.eval("document.querySelector('#status').className") == "", b.eval("document.querySelector('#status').textContent")
    disk = disk_by_name(ui, "ui-upload")
    assert disk["status"] == "ok" and disk["format"] == "cow" and disk["provisioned_size"] == 16 * MiB
    b.wait(f"document.querySelector('#download-{disk['id']}')", 15, "the download button")
    b.click(f"#download-{disk['id']}")
    out = os.path.join(b.downloads, "ui-upload.qcow2")
    wait_file(out, 60)
    assert file_digest(out) == file_digest(src)
    # The browser saved the host's answer itself (the URL's last part is the ticket; the name came from
    # Content-Disposition); the page finalizes once the host counted every byte sent.
    status_done(b, "Downloading ui-upload", timeout=60)
    transfers = ui.engine.get("/api/imagetransfers")["imagetransfers"]
    assert {t["phase"] for t in transfers if t["disk"]["id"] == disk["id"]} == {"finished_success"}


def test_failed_upload_leaves_nothing_behind(ui):
    """The network to the host fails mid-upload: the page says so, cancels the transfer and removes the new disk."""
    b = ui.browser
    src = os.path.join(ui.workdir, "fails.raw")
    with open(src, "wb") as f:
        f.truncate(MiB)
    login(ui, ui.engine.ADMIN, ui.engine.admin_password)
    page(ui, "disks")
    b.eval("""(() => { const real = window.fetch;
        window.fetch = (url, opts) => opts && opts.method === 'PUT' ? Promise.reject(new TypeError('test: no route')) :
                                                                     real(url, opts); })()""")
    b.set_files("#upload-file", [src])
    b.fill("#upload-name", "ui-upload-fails")
    b.click("#upload-submit")
    text = b.wait("(t => t.startsWith('Uploading fails.raw failed:') && t)(document.querySelector('#status').textContent)",
                  120, "the upload to fail")
    assert "did not answer: test: no route" in text and b.eval("document.querySelector('#status').className") == "error"
    disk = next(t["disk"]["id"] for t in ui.engine.get("/api/imagetransfers")["imagetransfers"]
                if t["direction"] == "upload" and t["size"] == MiB)
    wait_for(lambda: disk_by_name(ui, "ui-upload-fails") is None, 60, "the new disk removed")
    assert {t["phase"] for t in ui.engine.get("/api/imagetransfers")["imagetransfers"]
            if t["disk"]["id"] == disk} == {"cancelled"}


def test_agent_answers_cors_for_the_engine_origin_only(ui):
    """What the upload relies on, and its limit: another origin's page gets no CORS answer."""
    b = ui.browser
    login(ui, ui.engine.ADMIN, ui.engine.admin_password)
    disk = disk_by_name(ui, "ui-cors") or ui.data_disk("ui-cors", 4 * MiB)
    t = ui.engine.post("/api/imagetransfers", {"disk": {"id": disk["id"]}, "direction": "download"})
    try:
        ok = b.eval(f"fetch({json.dumps(t['transfer_url'])}, {{method: 'GET', headers: {{Range: 'bytes=0-3'}}}})"
                    ".then(r => r.status).catch(e => 'blocked')")
        assert ok == 206
        # The same request from another origin (a blank page's opaque origin) is refused by the browser.
        b.goto("about:blank")
        other = b.eval(f"fetch({json.dumps(t['transfer_url'])}, {{headers: {{Range: 'bytes=0-3'}}}})"
                       ".then(r => r.status).catch(e => 'blocked')")
        assert other == "blocked"
    finally:
        ui.engine.post(f"/api/imagetransfers/{t['id']}/cancel", {})


def status_done(b, what, word="done", timeout=30):
    """The status line after an action: 'done' when it finished, 'started' when the engine answered with a job."""
    text = b.wait(f"(t => ([{json.dumps(what + ': done')}, {json.dumps(what + ': started')}].includes(t) || "
                  "t.includes('failed')) && t)"
                  "(document.querySelector('#status').textContent)", timeout, what)
    assert text == f"{what}: {word}", text


def by_name(c, kind, name):
    return next((x for x in c.engine.get(f"/api/{kind}")[kind] if x["name"] == name), None)


def test_vm_snapshot_template_and_thin_vm_from_the_browser(ui):
    b = ui.browser
    login(ui, ui.engine.ADMIN, ui.engine.admin_password)
    disk = disk_by_name(ui, "ui-made") or ui.data_disk("ui-made", 16 * MiB)
    page(ui, "vms")
    b.fill("#vm-name", "ui-vm")
    b.click("#vm-create")
    status_done(b, "Creating VM ui-vm")
    vm = by_name(ui, "vms", "ui-vm")
    b.click(f"#attach-{vm['id']}")
    # The dialog lists the first page of disks (the module has fewer than 100), and finds one by name on the
    # engine (search=name=); never every disk.
    b.wait(f"document.querySelector('#attach-disk option[value=\"{disk['id']}\"]')", 15, "the first page of disks")
    b.fill("#attach-find", "ui-made")
    b.wait(f"(s => s && s.options.length === 1 && s.value === {json.dumps(disk['id'])})"
           "(document.querySelector('#attach-disk'))", 15, "the disk of that name in the dialog")
    b.click("#dialog-submit")
    status_done(b, "Attaching to ui-vm")
    b.wait(f"document.querySelector('#detach-{vm['id']}-{disk['id']}')", 15, "the attached disk in the page")
    b.click(f"#snapshot-{vm['id']}")
    b.fill("#snapshot-description", "before-template")
    b.click("#dialog-submit")
    status_done(b, "Snapshot of ui-vm", "started")
    b.wait("document.querySelector('#data').innerText.includes('before-template') && "
           "document.querySelector('#data').innerText.includes('(ok)')", 60, "the snapshot ok in the page")
    wait_for(lambda: ui.engine.get(f"/api/vms/{vm['id']}")["status"] == "ok", 60, "the VM unlocked")
    b.click(f"#template-{vm['id']}")
    b.fill("#template-name", "ui-template")
    b.click("#dialog-submit")
    status_done(b, "Template from ui-vm", "started")
    tpl = wait_for(lambda: (lambda t: t if t and t["status"] == "ok" else None)(by_name(ui, "templates", "ui-template")),
                   60, "the template ok")
    page(ui, "templates")
    assert "ui-template" in b.eval("document.querySelector('#data').innerText")
    page(ui, "vms")            # the VM form lists the new template
    b.fill("#vm-name", "ui-vm-thin")
    b.eval(f"document.querySelector('#vm-template').value = {json.dumps(tpl['id'])}")
    b.eval("document.querySelector('#vm-mode').value = 'thin'")
    b.click("#vm-create")
    status_done(b, "Creating VM ui-vm-thin", "started")
    thin = wait_for(lambda: (lambda v: v if v and v["status"] == "ok" else None)(by_name(ui, "vms", "ui-vm-thin")),
                    60, "the thin VM ok")
    assert thin["template"] == {"id": tpl["id"]} and len(thin["disk_attachments"]) == 1
    b.click(f"#detach-{vm['id']}-{disk['id']}")
    status_done(b, "Detaching ui-made")
    assert ui.engine.get(f"/api/vms/{vm['id']}")["disk_attachments"] == []
    shot(b, "vms-after-actions")


def test_viewer_sees_no_actions(ui):
    b = ui.browser
    try:
        ui.engine.post("/api/users", {"name": VIEWER[0], "password": VIEWER[1], "role": "viewer"})
    except Exception:  # noqa: BLE001 - made by an earlier run of this test in the module
        pass
    login(ui, ui.engine.ADMIN, ui.engine.admin_password)
    logout(ui)
    login(ui, *VIEWER)
    assert "(viewer)" in b.eval("document.querySelector('#who-name').textContent")
    for name in ("hosts", "disks", "vms", "templates", "jobs"):
        page(ui, name)
        # Filters (the events filter, the name search boxes) read; nothing else in a viewer's page may act.
        assert b.eval("document.querySelectorAll('#main button, #main form:not(#event-filter):not([role=search])')"
                      ".length") == 0, name
        shot(b, f"{name}-viewer")
    page(ui, "disks")
    assert b.eval("document.querySelectorAll('#data tbody tr').length") >= 1
    logout(ui)


def test_a_standby_engine_says_so_and_offers_no_change(ui):
    """Two engines on one PostgreSQL database, no hosts (roles and reads need none; PostgreSQL must be
    installed, as for test_failover.py). Logged in on the standby, every page says so with a link to the
    active engine and offers no action; a write the page sends anyway is not followed to the other origin
    (where its CORS preflight would fail with no answer) but explained; the page rereads itself, since the
    standby's event stream hears nothing of the active engine's changes; and when the active engine stops
    and the standby takes over, the page offers its actions again."""
    b = ui.browser
    d = os.path.join(ui.workdir, "standby-ui")
    db = postgres().new_database()
    engines = []
    try:
        for i in range(2):
            w = os.path.join(d, f"engine{i + 1}")
            os.makedirs(w)
            if engines:           # the same admin, made by the first engine; the certificates the browser trusts
                shutil.copy(engines[0].admin_password_file, os.path.join(w, "admin.password"))
            engines.append(Engine(w, pki=ui.pki, db=db))
            wait_for(lambda: engines[0].get("/api/engine")["role"] == "active", 15, "the first engine active")
        active, standby = engines
        assert standby.get("/api/engine") == {"role": "standby", "epoch": 0, "active_url": active.url}
        at = types.SimpleNamespace(origin=standby.url, browser=b)
        login(at, active.ADMIN, active.admin_password)
        banner = "(el => !el.hidden && el.textContent)(document.querySelector('#standby'))"
        for name in ("disks", "hosts", "vms"):        # the VMs page last: it is read below
            page(at, name)
            assert "This engine is a standby" in b.eval(banner), name
            assert b.eval("document.querySelector('#active-engine').href") == active.url + "/"
            assert b.eval("document.querySelectorAll('#main button, #main form:not([role=search])').length") == 0, name
        assert b.eval("document.querySelector('#live').getAttribute('aria-label')") == \
            "live updates: none from a standby engine"
        shot(b, "standby")
        # A write sent all the same (a page that has not noticed yet): said precisely, and nothing done anywhere.
        msg = b.eval("api('POST', '/api/vms', { name: 'ui-standby-write' }).then(() => 'done', (e) => e.message)")
        assert msg == f"nothing was done: this engine is a standby, changes are made on the active engine at {active.url}"
        assert active.get("/api/vms?search=name%3Dui-standby-write")["vms"] == []
        # The active engine's change reaches the standby's page by rereading (every 5 s).
        active.post("/api/vms", {"name": "ui-standby-vm"})
        b.wait("document.querySelector('#data').innerText.includes('ui-standby-vm')", 15, "the new VM on the standby")
        # The active engine goes: the standby takes over (about a second), and the page notices at its next reread.
        assert active.stop() == 0
        b.wait("document.querySelector('#standby').hidden && document.querySelector('#vm-create')", 20,
               "the page offering actions after the takeover")
        b.wait("document.querySelector('#live').className === 'on'", 15, "live updates from the new active engine")
        b.fill("#vm-name", "ui-after-takeover")
        b.click("#vm-create")
        status_done(b, "Creating VM ui-after-takeover")
        assert standby.get("/api/vms?search=name%3Dui-after-takeover")["vms"]
    finally:
        logout(ui)
        codes = [e.stop() for e in engines]
    assert codes == [0, 0], codes


def open_stream(c, token=None):
    conn = http.client.HTTPSConnection("127.0.0.1", c.engine.port, context=c.engine.ssl, timeout=10)
    conn.request("GET", "/api/events/stream", headers={"Authorization": f"Bearer {token or c.engine.token}"})
    return conn, conn.getresponse()


def revoke(c, token):
    form = urllib.parse.urlencode({"token": token}).encode()
    status, _ = c.engine.request("POST", "/sso/oauth/revoke", raw=form, auth=False,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200


def test_revoked_token_ends_the_stream_and_the_page_logs_out(ui):
    """The stream does not outlive its token: the page's stream ends, its reconnect gets 401, the login form shows.
    A raw stream with a revoked token is closed as well."""
    b = ui.browser
    login(ui, ui.engine.ADMIN, ui.engine.admin_password)
    page(ui, "disks")
    b.wait("document.querySelector('#live').className === 'on'", 15, "the event stream")
    token = ui.engine.login(ui.engine.ADMIN, ui.engine.admin_password)
    conn, r = open_stream(ui, token)
    try:
        assert r.status == 200 and b"event: hello" in b"".join(r.fp.readline() for _ in range(4))
        revoke(ui, b.eval("sessionStorage.getItem('ferry.token')"))
        b.wait("document.querySelector('#username')", 20, "the login form")
        assert "session ended" in b.eval("document.querySelector('#status').textContent")
        revoke(ui, token)

        def ended():
            try:
                line = r.fp.readline()
            except (ConnectionError, ssl.SSLError, http.client.IncompleteRead):
                return True                     # the engine shut the socket: that ends it too
            return not line                     # the chunked body's end, or the socket's
        wait_for(ended, 20, "the revoked stream to end", interval=0)
    finally:
        conn.close()


def test_event_stream_is_bounded(ui):
    """At most 8 streams per user, 64 in all, each refusal a 503 with Retry-After; slots come back once clients left.
    Exact counts: fresh users, and the page's own stream gone (its token revoked)."""
    b = ui.browser
    login(ui, ui.engine.ADMIN, ui.engine.admin_password)
    revoke(ui, b.eval("sessionStorage.getItem('ferry.token')"))
    b.wait("document.querySelector('#username')", 20, "the page logged out")
    tokens = []
    for i in range(9):
        name = f"streamer{i}"
        try:
            ui.engine.post("/api/users", {"name": name, "password": "streamer-password-1", "role": "viewer"})
        except Exception:  # noqa: BLE001 - made by an earlier run of this test in the module
            pass
        tokens.append(ui.engine.login(name, "streamer-password-1"))
    conns = []

    def opened(token):
        conn, r = open_stream(ui, token)
        if r.status != 200:
            r.detail = json.loads(r.read())["fault"]["detail"]
            conn.close()
            return r
        assert r.getheader("Content-Type") == "text/event-stream"
        assert r.fp.readline().strip() and b"retry: 2000" in r.fp.readline()
        conns.append(conn)
        return None
    try:
        for token in tokens[:8]:
            assert [opened(token) for _ in range(8)] == [None] * 8
        assert len(conns) == 64
        per_user = opened(tokens[0])
        assert per_user.status == 503 and per_user.getheader("Retry-After") == "5"
        assert "streamer0 has 8 event streams open" in per_user.detail
        total = opened(tokens[8])
        assert total.status == 503 and total.getheader("Retry-After") == "5"
        assert "too many event streams" in total.detail
    finally:
        for conn in conns:
            conn.close()

    # The engine notices a client left at its next write to it: a login writes an event.
    def reopened():
        ui.engine.login(ui.engine.ADMIN, ui.engine.admin_password)
        conn, r = open_stream(ui, tokens[8])
        conn.close()
        return r.status == 200
    wait_for(reopened, 30, "a stream slot to come back", interval=0.3)


def test_page_catches_up_after_an_engine_restart(ui):
    b = ui.browser
    login(ui, ui.engine.ADMIN, ui.engine.admin_password)
    page(ui, "disks")
    b.wait("document.querySelector('#live').className === 'on'", 15, "the event stream")
    ui.engine.restart()
    # Made while the page is reconnecting or just after: it must appear without a reload.
    r = ui.engine.post("/api/disks", {"name": "after-restart", "provisioned_size": MiB, "format": "raw",
                                      "sparse": True, "storage_domain": {"id": ui.sds[0]["id"]}})
    b.wait(f"document.querySelector('[data-disk-status=\"{r['disk']['id']}\"]')", 30, "the new disk in the page")
    b.wait("document.querySelector('#live').className === 'on'", 15, "the event stream again")
    assert ui.engine.wait_job(r["job"]["id"], 60)["status"] == "finished"
    b.wait(f"(el => el && el.textContent === 'ok')(document.querySelector('[data-disk-status=\"{r['disk']['id']}\"]'))",
           30, "the disk ok in the page")
