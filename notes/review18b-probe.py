import os, sys, socket, time, re, uuid
sys.path.insert(0, "/work/wt/review18b/tests/functional")
from enginetest import Engine
d = f"/tmp/r18b/eng-{uuid.uuid4().hex[:6]}"; os.makedirs(d)
e = Engine(d, "--idle-timeout=3", "--request-timeout=2", "--write-timeout=2", "--body-deadline=4", insecure=True)
tok = e.token.encode()
def raw(data, wait=4.0):
    s = socket.create_connection(("127.0.0.1", e.port))
    try:
        try: s.sendall(data)
        except OSError as x: return b"<send " + str(x).encode() + b">"
        s.settimeout(wait); out = b""
        while True:
            try: d_ = s.recv(65536)
            except socket.timeout: return out + b"<timeout>"
            except ConnectionResetError: return out + b"<reset>"
            if not d_: return out
            out += d_
    finally: s.close()
def rss(): 
    return [l for l in open(f"/proc/{e.proc.pid}/status") if l.startswith(("VmRSS","VmHWM"))]
A = b"Authorization: Bearer " + tok + b"\r\n"
cases = {
 "nul_in_TE": b"POST /api/hosts HTTP/1.1\r\nHost: x\r\n" + A + b"Transfer-Encoding: chun\x00ked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
 "nul_in_CL": b"POST /api/hosts HTTP/1.1\r\nHost: x\r\n" + A + b"Content-Length: 1\x002\r\n\r\n{}",
 "ctl_in_value": b"GET /api/hosts HTTP/1.1\r\nHost: x\r\n" + A + b"X-A: a\x01b\x7f\r\nConnection: close\r\n\r\n",
 "TE_http10": b"POST /api/hosts HTTP/1.0\r\nHost: x\r\n" + A + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
 "TE_chunked_comma": b"POST /api/hosts HTTP/1.1\r\nHost: x\r\n" + A + b"Transfer-Encoding: chunked, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
 "nul_in_reqline": b"GET /api/ho\x00sts HTTP/1.1\r\nHost: x\r\n" + A + b"Connection: close\r\n\r\n",
 "cr_in_value": b"GET /api/hosts HTTP/1.1\r\nHost: x\r\n" + A + b"X-A: a\rb\r\nConnection: close\r\n\r\n",
 "huge_header_line": b"GET /api/hosts HTTP/1.1\r\nHost: x\r\n" + A + b"X-A: " + b"a" * (2 * 1024 * 1024) + b"\r\n\r\n",
 "many_headers": b"GET /api/hosts HTTP/1.1\r\nHost: x\r\n" + A + b"".join(b"X-%d: 1\r\n" % i for i in range(20000)) + b"\r\n",
 "TE_gzip_chunked": b"POST /api/hosts HTTP/1.1\r\nHost: x\r\n" + A + b"Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
 "chunk_ext_huge": b"POST /api/hosts HTTP/1.1\r\nHost: x\r\n" + A + b"Transfer-Encoding: chunked\r\n\r\n2;" + b"e" * (1024*1024) + b"\r\n{}\r\n0\r\n\r\n",
}
only = sys.argv[1:]
try:
    print("rss0", rss())
    for k, v in cases.items():
        if only and k not in only: continue
        t0 = time.monotonic(); a = raw(v)
        print(f"== {k} ({time.monotonic()-t0:.1f}s):", a[:400])
    print("rss1", rss())
    print("fds", len(os.listdir(f"/proc/{e.proc.pid}/fd")))
finally:
    print("stop", e.stop())
    print(open(e.log_path, errors="replace").read()[-3000:])
