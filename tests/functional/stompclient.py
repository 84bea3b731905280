#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""JSON-RPC 2.0 over STOMP 1.2 client, speaking the wire protocol of VDSM's
stock client (vdsm-client / yajsonrpc). Stdlib only.

Used by the functional tests and the demo; also a small vdsm-client-like
command line:

    stompclient.py [--tls-cert C --tls-key K --tls-ca A] [-a HOST] -p PORT \\
        Namespace verb [name=value ...]
"""

import argparse
import json
import queue
import re
import select
import socket
import ssl
import sys
import threading
import uuid

REQUEST_QUEUE = "jms.topic.vdsm_requests"
EVENTS_QUEUE = "jms.queue.events"

# Bounds what a misbehaving server can make us buffer.
MAX_FRAME = 64 * 1024 * 1024


class RpcError(Exception):
    """A JSON-RPC error response: .code and .message as the server sent them."""

    def __init__(self, code, message):
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self):
        return f"(code={self.code}, message={self.message})"


def _escape(s):
    return (s.replace("\\", "\\\\").replace("\r", "\\r")
            .replace("\n", "\\n").replace(":", "\\c"))


_UNESCAPES = {"\\\\": "\\", "\\c": ":", "\\n": "\n", "\\r": "\r"}


def _unescape(s):
    def sub(m):
        try:
            return _UNESCAPES[m.group(0)]
        except KeyError:
            raise ValueError(f"undefined STOMP escape {m.group(0)!r}")
    return re.sub(r"\\.?", sub, s)


def encode_frame(command, headers=(), body=None):
    """Encodes a STOMP frame; headers is a sequence of (name, value)."""
    verbatim = command in ("CONNECT", "CONNECTED")
    out = [command, "\n"]
    for name, value in headers:
        name, value = str(name), str(value)
        if not verbatim:
            name, value = _escape(name), _escape(value)
        out += [name, ":", value, "\n"]
    data = body
    if isinstance(data, str):
        data = data.encode("utf-8")
    if data is not None:
        out.append(f"content-length:{len(data)}\n")
    out.append("\n")
    return "".join(out).encode("utf-8") + (data or b"") + b"\0"


class Frame:
    def __init__(self, command, headers, body):
        self.command = command
        self.headers = headers      # list of (name, value), in order
        self.body = body            # bytes

    def header(self, name, default=None):
        # STOMP 1.2: the first occurrence of a repeated header wins.
        for n, v in self.headers:
            if n == name:
                return v
        return default

    def __repr__(self):
        return f"Frame({self.command!r}, {self.headers!r}, {self.body!r})"


class FrameParser:
    """Incremental STOMP 1.2 parser: feed() bytes, then iterate frames()."""

    def __init__(self, max_frame=MAX_FRAME):
        self.buf = bytearray()
        self.heartbeats = 0
        self.max_frame = max_frame

    def feed(self, data):
        self.buf += data

    def _skip_heartbeats(self):
        while self.buf:
            if self.buf[0:1] == b"\n":
                del self.buf[0]
            elif self.buf[0:2] == b"\r\n":
                del self.buf[0:2]
            else:
                return
            self.heartbeats += 1

    def next_frame(self):
        """Returns the next complete Frame or None; raises ValueError on garbage."""
        self._skip_heartbeats()
        if not self.buf or self.buf == b"\r":
            return None
        m = re.search(rb"\r?\n\r?\n", self.buf)
        if not m:
            if len(self.buf) > self.max_frame:
                raise ValueError("STOMP frame headers too large")
            return None
        head = bytes(self.buf[:m.start()]).decode("utf-8")
        if "\0" in head:
            raise ValueError("NUL inside STOMP frame headers")
        lines = re.split(r"\r?\n", head)
        command = lines[0]
        if not re.fullmatch(r"[A-Z]+", command):
            raise ValueError(f"bad STOMP command {command!r}")
        verbatim = command in ("CONNECT", "CONNECTED")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"STOMP header line without ':': {line!r}")
            if not verbatim:
                name, value = _unescape(name), _unescape(value)
            headers.append((name, value))
        frame = Frame(command, headers, b"")
        start = m.end()
        length = frame.header("content-length")
        if length is not None:
            if not length.isdigit():
                raise ValueError(f"bad content-length {length!r}")
            n = int(length)
            if n > self.max_frame:
                raise ValueError(f"content-length {n} too large")
            if len(self.buf) < start + n + 1:
                return None
            if self.buf[start + n] != 0:
                raise ValueError("STOMP body not followed by NUL")
            end = start + n
        else:
            end = self.buf.find(b"\0", start)
            if end < 0:
                if len(self.buf) > self.max_frame:
                    raise ValueError("STOMP frame too large")
                return None
        frame.body = bytes(self.buf[start:end])
        del self.buf[:end + 1]
        return frame


class _Pending:
    """One outstanding SEND: a single call or a batch, keyed by request ids."""

    def __init__(self, ids):
        self.ids = list(ids)
        self.responses = {}
        self.orphan = None          # an error response with "id": null
        self.done = threading.Event()

    def deliver(self, msg):
        self.responses[msg.get("id")] = msg
        if all(i in self.responses for i in self.ids):
            self.done.set()


class Client:
    def __init__(self, host, port, tls=None, timeout=30, heartbeat_ms=0):
        self.timeout = timeout
        self.reply_queue = str(uuid.uuid4())
        self.events = queue.Queue()
        self.heartbeats_received = 0
        self.stomp_errors = []      # ERROR frames the server sent
        self.unmatched = []         # responses no caller waited for

        self._parser = FrameParser()
        self._lock = threading.Lock()           # guards the socket
        self._pending_lock = threading.Lock()
        self._pending = []
        self._closed = threading.Event()
        self._closing = False

        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            if tls:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_REQUIRED
                if tls.get("cert"):
                    ctx.load_cert_chain(tls["cert"], tls["key"])
                ctx.load_verify_locations(tls["ca"])
                sock = ctx.wrap_socket(sock, server_hostname=host)
            self._sock = sock
            self._handshake(heartbeat_ms)
        except BaseException:
            sock.close()
            raise

        self._subscribe(self.reply_queue)
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name=f"stomp-reader-{port}")
        self._reader.start()

    # -- connection ------------------------------------------------------

    def _handshake(self, heartbeat_ms):
        self._sock.sendall(encode_frame("CONNECT", [
            ("accept-version", "1.2"),
            ("heart-beat", f"0,{heartbeat_ms}"),
        ]))
        while True:
            frame = self._parser.next_frame()
            if frame is None:
                data = self._sock.recv(65536)
                if not data:
                    raise ConnectionError("server closed the connection during CONNECT")
                self._parser.feed(data)
                continue
            if frame.command == "CONNECTED":
                self.server_headers = dict(reversed(frame.headers))
                return
            if frame.command == "ERROR":
                raise ConnectionError("server refused CONNECT: "
                                      f"{frame.header('message', '')} {frame.body!r}")

    def _subscribe(self, destination):
        sub_id = str(uuid.uuid4())
        self._send(encode_frame("SUBSCRIBE", [
            ("destination", destination),
            ("ack", "auto"),
            ("id", sub_id),
        ]))
        return sub_id

    def _send(self, data):
        if self._closed.is_set():
            raise ConnectionError("connection is closed")
        with self._lock:
            self._sock.settimeout(self.timeout)
            self._sock.sendall(data)

    def _recv(self):
        """Returns bytes, b"" on EOF, or None when nothing arrived yet."""
        tls = isinstance(self._sock, ssl.SSLSocket)
        if not (tls and self._sock.pending()):
            r, _, _ = select.select([self._sock], [], [], 0.2)
            if not r:
                return None
        # Reads and writes share the lock: an SSL object must not be used
        # from two threads at once.
        with self._lock:
            self._sock.settimeout(0.05)
            try:
                return self._sock.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError, BlockingIOError):
                return None

    def _read_loop(self):
        try:
            while not self._closing:
                data = self._recv()
                if data is None:
                    continue
                if not data:
                    break
                self._parser.feed(data)
                while (frame := self._parser.next_frame()) is not None:
                    self._handle_frame(frame)
                self.heartbeats_received = self._parser.heartbeats
        except (OSError, ValueError, ssl.SSLError):
            pass
        finally:
            self.heartbeats_received = self._parser.heartbeats
            self._closed.set()
            with self._pending_lock:
                pending, self._pending = self._pending, []
            for p in pending:
                p.done.set()

    def _handle_frame(self, frame):
        if frame.command == "ERROR":
            self.stomp_errors.append(frame)
            return
        if frame.command != "MESSAGE":
            return
        try:
            msg = json.loads(frame.body)
        except ValueError:
            self.unmatched.append(frame.body)
            return
        for m in msg if isinstance(msg, list) else [msg]:
            self._route(m)

    def _route(self, msg):
        if not isinstance(msg, dict):
            self.unmatched.append(msg)
            return
        if "method" in msg and "id" not in msg:
            self.events.put(msg)
            return
        rid = msg.get("id")
        with self._pending_lock:
            if rid is None:
                # An error the server could not tie to a request (e.g. parse
                # error); only attributable when a single SEND is outstanding.
                target = self._pending[0] if len(self._pending) == 1 else None
                if target:
                    target.orphan = msg
                    self._pending.remove(target)
                    target.done.set()
                    return
            else:
                for p in self._pending:
                    if rid in p.ids:
                        p.deliver(msg)
                        if p.done.is_set():
                            self._pending.remove(p)
                        return
        self.unmatched.append(msg)

    # -- requests --------------------------------------------------------

    def _send_request(self, payload, ids, flow_id=None):
        pending = _Pending(ids)
        with self._pending_lock:
            self._pending.append(pending)
        body = json.dumps(payload).encode("utf-8")
        headers = [
            ("destination", REQUEST_QUEUE),
            ("content-type", "application/json"),
            ("reply-to", self.reply_queue),
        ]
        if flow_id is not None:
            # VDSM's yajsonrpc sends the flow id (vdsm-client --flow-id) in this header.
            headers.append(("ovirtCorrelationId", flow_id))
        try:
            self._send(encode_frame("SEND", headers, body))
        except BaseException:
            self._forget(pending)
            raise
        return pending

    def _forget(self, pending):
        with self._pending_lock:
            if pending in self._pending:
                self._pending.remove(pending)

    def _wait(self, pending, timeout):
        timeout = self.timeout if timeout is None else timeout
        if not pending.done.wait(timeout):
            self._forget(pending)
            raise TimeoutError(f"no response within {timeout}s")
        if pending.orphan is None and not all(i in pending.responses for i in pending.ids):
            raise ConnectionError("connection closed before the response arrived")

    @staticmethod
    def _request(method, params, rid=None):
        req = {"jsonrpc": "2.0", "method": method,
               "params": {} if params is None else params}
        if rid is not None:
            req["id"] = rid
        return req

    def call(self, method, params=None, timeout=None, flow_id=None):
        """Returns the result, or raises RpcError (TimeoutError, ConnectionError)."""
        rid = str(uuid.uuid4())
        pending = self._send_request(self._request(method, params, rid), [rid], flow_id)
        self._wait(pending, timeout)
        resp = pending.orphan or pending.responses[rid]
        if "error" in resp:
            err = resp["error"] or {}
            raise RpcError(err.get("code"), err.get("message"))
        return resp.get("result")

    def batch(self, calls, timeout=None):
        """Sends [(method, params), ...] as one JSON array; returns the responses
        in request order, each {"result": ...} or {"error": {...}}."""
        reqs = [self._request(m, p, str(uuid.uuid4())) for m, p in calls]
        ids = [r["id"] for r in reqs]
        pending = self._send_request(reqs, ids)
        self._wait(pending, timeout)
        if pending.orphan is not None and not pending.responses:
            return [{"error": pending.orphan.get("error")}]
        out = []
        for rid in ids:
            resp = pending.responses.get(rid, {})
            if "error" in resp:
                out.append({"error": resp["error"]})
            else:
                out.append({"result": resp.get("result")})
        return out

    def notify(self, method, params=None):
        """Sends a JSON-RPC notification (no id, no response)."""
        self._send(encode_frame("SEND", [
            ("destination", REQUEST_QUEUE),
            ("content-type", "application/json"),
            ("reply-to", self.reply_queue),
        ], json.dumps(self._request(method, params)).encode("utf-8")))

    def subscribe_events(self):
        """Subscribes to job events; they arrive in .events."""
        return self._subscribe(EVENTS_QUEUE)

    def send_raw(self, data):
        self._send(data)

    def wait_closed(self, timeout=None):
        """True once the server has closed the connection."""
        return self._closed.wait(timeout)

    @property
    def closed(self):
        return self._closed.is_set()

    def close(self):
        if self._closing:
            return
        self._closing = True
        if not self._closed.is_set():
            try:
                self._send(encode_frame("DISCONNECT"))
            except OSError:
                pass
        self._reader.join(timeout=2)
        with self._lock:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _parse_value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv=None):
    ap = argparse.ArgumentParser(description="vdsm-client-like JSON-RPC over STOMP client")
    ap.add_argument("-a", "--host", default="localhost")
    ap.add_argument("-p", "--port", type=int, required=True)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-ca")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("namespace")
    ap.add_argument("verb")
    ap.add_argument("args", nargs="*", metavar="name=value")
    opts = ap.parse_args(argv)

    tls = None
    if opts.tls_cert or opts.tls_key or opts.tls_ca:
        if not (opts.tls_cert and opts.tls_key and opts.tls_ca):
            ap.error("--tls-cert, --tls-key and --tls-ca go together")
        tls = {"cert": opts.tls_cert, "key": opts.tls_key, "ca": opts.tls_ca}

    params = {}
    for arg in opts.args:
        name, sep, value = arg.partition("=")
        if not sep:
            ap.error(f"argument {arg!r} is not name=value")
        params[name] = _parse_value(value)

    method = f"{opts.namespace}.{opts.verb}"
    try:
        with Client(opts.host, opts.port, tls=tls, timeout=opts.timeout) as client:
            result = client.call(method, params)
    except RpcError as e:
        print(f"{ap.prog}: Command {method} with args {json.dumps(params)} failed:\n{e}",
              file=sys.stderr)
        return 1
    except (OSError, ssl.SSLError) as e:
        print(f"{ap.prog}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
