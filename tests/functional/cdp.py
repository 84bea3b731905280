# SPDX-License-Identifier: GPL-2.0-or-later
"""A real headless Chromium driven over the DevTools protocol (websocket-client),
for the web UI's end-to-end tests.

The browser trusts the test cluster's CA through an NSS database in a
throwaway HOME (Chromium on Linux reads $HOME/.pki/nssdb), so TLS is
verified as a user's browser would; no --ignore-certificate-errors. It runs
with --no-sandbox only when run as root (CI containers), where Chromium's
sandbox refuses to start."""

import base64
import json
import os
import re
import shutil
import subprocess
import urllib.request

import websocket

from ferrytest import wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class CdpError(Exception):
    pass


class Tab:
    """One page target (a tab) and its DevTools connection."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events = []
        self.call("Page.enable")
        self.call("Runtime.enable")

    def call(self, method, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise CdpError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
                del self.events[:-1000]

    def eval(self, expr, await_promise=True):
        """The value of a JavaScript expression in the page (thrown exceptions are raised here)."""
        r = self.call("Runtime.evaluate", expression=expr, awaitPromise=await_promise, returnByValue=True)
        if "exceptionDetails" in r:
            raise CdpError(f"{expr[:80]}: {r['exceptionDetails'].get('exception', {}).get('description')}")
        return r["result"].get("value")

    def wait(self, expr, timeout=30, what=None, interval=0.05):
        """Until the expression is truthy in the page; its value (true for an element, which is not serializable)."""
        probe = f"(v => v instanceof Node ? true : v)({expr})"
        return wait_for(lambda: self.eval(probe), timeout, what or expr, interval=interval)

    def goto(self, url):
        # The old document is marked: readyState alone could still be the old one's.
        self.eval("window.__ferryOld = true")
        self.call("Page.navigate", url=url)
        self.wait("!window.__ferryOld && document.readyState === 'complete'", 30, "the page to load")

    def viewport(self, width, height, mobile=False):
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile)

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def set_files(self, selector, paths):
        root = self.call("DOM.getDocument", depth=1)["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.call("DOM.setFileInputFiles", nodeId=node, files=paths)

    def fill(self, selector, value):
        self.eval(f"""(() => {{ const el = document.querySelector({json.dumps(selector)});
            el.value = {json.dumps(value)}; el.dispatchEvent(new Event('input', {{bubbles: true}})); }})()""")

    def click(self, selector):
        self.wait(f"(el => el && !el.disabled)(document.querySelector({json.dumps(selector)}))", 30,
                  f"{selector} to be enabled")
        self.eval(f"document.querySelector({json.dumps(selector)}).click()")

    def key(self, key, code, keycode):
        for kind in ("rawKeyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key=key, code=code, windowsVirtualKeyCode=keycode)


class Browser(Tab):
    def __init__(self, workdir, ca_file, width=1280, height=720):
        self.workdir = workdir
        home = os.path.join(workdir, "chromium-home")
        nssdb = os.path.join(home, ".pki", "nssdb")
        os.makedirs(nssdb, exist_ok=True)
        subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True,
                       capture_output=True, timeout=30)
        subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "ferry-test-ca", "-i", ca_file],
                       check=True, capture_output=True, timeout=30)
        self.downloads = os.path.join(workdir, "downloads")
        os.makedirs(self.downloads, exist_ok=True)
        self.log_path = os.path.join(workdir, "chromium.log")
        args = [CHROMIUM, "--headless=new", f"--user-data-dir={os.path.join(workdir, 'chromium-profile')}",
                "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", "--no-first-run",
                "--no-default-browser-check", "--disable-gpu", "--disable-extensions", "--disable-sync",
                "--disable-background-networking", "--disable-component-update", "--password-store=basic",
                f"--window-size={width},{height}", "about:blank"]
        # FERRY_TEST_NETLOG=FILE: Chromium's net log (every socket and request, with its net error), to find
        # why a request failed ("Failed to fetch" says nothing); large, hence never on by default.
        if os.environ.get("FERRY_TEST_NETLOG"):
            args[1:1] = [f"--log-net-log={os.environ['FERRY_TEST_NETLOG']}", "--net-log-capture-mode=Everything"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")
        env = dict(os.environ, HOME=home)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.ws = None
        try:
            def listening():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"chromium exited with {self.proc.returncode}; see {self.log_path}")
                with open(self.log_path, "rb") as f:
                    m = re.search(rb"DevTools listening on ws://127\.0\.0\.1:(\d+)/", f.read())
                return int(m.group(1)) if m else None
            port = wait_for(listening, 30, "chromium's DevTools endpoint")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                page = next(t for t in json.load(r) if t["type"] == "page")
            self.port = port
            Tab.__init__(self, page["webSocketDebuggerUrl"])
            self.call("Page.setDownloadBehavior", behavior="allow", downloadPath=self.downloads)
        except BaseException:
            self.close()
            raise

    def new_tab(self, url="about:blank"):
        """Another tab, in a window of its own so that it is visible (a background tab would be hidden)."""
        target = self.call("Target.createTarget", url=url, newWindow=True)["targetId"]
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as r:
            ws_url = next(t["webSocketDebuggerUrl"] for t in json.load(r) if t["id"] == target)
        tab = Tab(ws_url)
        tab.target = target
        return tab

    def close_tab(self, tab):
        try:
            tab.ws.close()
        except OSError:
            pass
        self.call("Target.closeTarget", targetId=tab.target)

    def close(self):
        if self.ws:
            try:
                self.ws.close()
            except OSError:
                pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.log.close()


def wait_file(path, timeout=30):
    """A download is complete once Chromium renamed its .crdownload."""
    def done():
        return os.path.exists(path) and not os.path.exists(path + ".crdownload")
    wait_for(done, timeout, f"{path} downloaded", interval=0.05)
