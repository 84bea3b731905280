import os, sys, socket, ssl, time, uuid
sys.path.insert(0, "/work/wt/review18b/tests/functional")
from enginetest import Engine
d = f"/tmp/r18b/tls-{uuid.uuid4().hex[:6]}"; os.makedirs(d)
e = Engine(d)
def rss(): 
    return int([l for l in open(f"/proc/{e.proc.pid}/status") if l.startswith("VmRSS")][0].split()[1])
N = int(sys.argv[1]) if len(sys.argv) > 1 else 150
try:
    r0 = rss(); held = []
    for i in range(N):
        s = e.ssl.wrap_socket(socket.create_connection(("127.0.0.1", e.port)), server_hostname="127.0.0.1") if False else None
        ctx = e.ssl; ctx.check_hostname = False
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", e.port)))
        held.append(s)
    time.sleep(1)
    r1 = rss()
    print(f"N={N} handshaken idle TLS conns: RSS {r0} -> {r1} KiB, {(r1-r0)/N:.0f} KiB/conn; fds {len(os.listdir(f'/proc/{e.proc.pid}/fd'))}")
    for s in held: s.close()
finally:
    print("stop", e.stop())
