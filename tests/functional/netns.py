# SPDX-License-Identifier: GPL-2.0-or-later
"""Network faults for the functional tests: each host of a test cluster gets
its own network namespace, joined to the root namespace (where the engine
runs) by a veth pair. Cutting a host takes its link down inside the namespace
and adds an `unreachable` route for its address in the root namespace, so the
engine's connections fail at once instead of timing out; storage (a folder)
and the sanlock daemons (unix sockets) are not cut, only the network.

Addresses: one private /24 per Network, 10.213.X.0/24, with X claimed by
creating the namespace `fy<X>h0` (creation fails if another run holds it),
and a /30 per host inside it: 10.213.X.(4i+1) root side, 10.213.X.(4i+2) in
the namespace. Everything is removed by close(), whatever happened."""

import os
import random
import signal
import subprocess

SUBNET_PREFIX = "10.213"
MAX_HOSTS = 60          # /30s in a /24, leaving room


def ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def available():
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"ip netns does not work: {r.stderr.strip()}"
    return None


class HostNet:
    """One host's namespace and veth pair."""

    def __init__(self, net, index):
        self.net = net
        self.index = index
        self.ns = f"fy{net.subnet}h{index}"
        self.dev = f"fy{net.subnet}v{index}"          # root side (<= 15 chars)
        self.peer = "eth0"                            # inside the namespace
        base = f"{SUBNET_PREFIX}.{net.subnet}"
        self.root_addr = f"{base}.{4 * index + 1}"
        self.addr = f"{base}.{4 * index + 2}"
        self.cut_active = False

    def create(self, claimed=False):
        if not claimed:
            ip("netns", "add", self.ns)
        self.net.created.append(self)
        ip("link", "add", self.dev, "type", "veth", "peer", "name", self.peer, "netns", self.ns)
        ip("addr", "add", f"{self.root_addr}/30", "dev", self.dev)
        ip("link", "set", self.dev, "up")
        ip("-n", self.ns, "addr", "add", f"{self.addr}/30", "dev", self.peer)
        ip("-n", self.ns, "link", "set", "lo", "up")
        ip("-n", self.ns, "link", "set", self.peer, "up")

    def prefix(self):
        """argv prefix that runs a command inside this host's namespace."""
        return ["ip", "netns", "exec", self.ns]

    def cut(self):
        """The host drops off the network; connections to it fail fast."""
        if self.cut_active:
            return
        self.cut_active = True
        ip("-n", self.ns, "link", "set", self.peer, "down")
        ip("route", "add", "unreachable", f"{self.addr}/32", "metric", "4000")

    def restore(self):
        if not self.cut_active:
            return
        ip("route", "del", "unreachable", f"{self.addr}/32", "metric", "4000", check=False)
        ip("-n", self.ns, "link", "set", self.peer, "up")
        self.cut_active = False

    def destroy(self):
        if self.cut_active:
            ip("route", "del", "unreachable", f"{self.addr}/32", "metric", "4000", check=False)
            self.cut_active = False
        # Whatever still runs in the namespace was started by this test run.
        r = ip("netns", "pids", self.ns, check=False)
        for pid in r.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        ip("link", "del", self.dev, check=False)
        ip("netns", "del", self.ns, check=False)


class Network:
    """The namespaces of one test cluster."""

    def __init__(self, hosts):
        if hosts > MAX_HOSTS:
            raise ValueError(f"at most {MAX_HOSTS} hosts per network")
        self.created = []
        self.subnet = self._claim()
        try:
            self.hosts = [HostNet(self, i) for i in range(hosts)]
            for i, h in enumerate(self.hosts):
                h.create(claimed=(i == 0))
        except BaseException:
            self.close()
            raise

    def _claim(self):
        """Claims a free 10.213.X.0/24 by creating its first namespace."""
        used = ip("-4", "-o", "addr").stdout + ip("route").stdout
        candidates = list(range(1, 255))
        random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "little")).shuffle(candidates)
        for x in candidates:
            if f"{SUBNET_PREFIX}.{x}." in used:
                continue
            if ip("netns", "add", f"fy{x}h0", check=False).returncode == 0:
                return x
        raise RuntimeError(f"no free {SUBNET_PREFIX}.X.0/24 for the test network")

    def close(self):
        for h in reversed(self.created):
            h.destroy()
        self.created = []
        if getattr(self, "subnet", None) is not None:
            # The claimed namespace, if creating its links failed.
            ip("netns", "del", f"fy{self.subnet}h0", check=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
