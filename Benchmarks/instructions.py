"""User-space instructions per post, counted by valgrind's callgrind: steadier than any
timing on a shared machine. Used by instructions.sh; see there.

Each server runs under callgrind on a free loopback port; a warm-up of WARMUP posts fills the
window, the counters are zeroed, POSTS posts are sent one at a time on one keep-alive
connection (every answer must be 202), and the counters are dumped and summed per function."""
import argparse
import collections
import glob
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

ap = argparse.ArgumentParser()
ap.add_argument("--proxy", required=True)
ap.add_argument("--baseline", required=True)
ap.add_argument("--bodies", required=True)
ap.add_argument("--shuffled", help="the same posts, each with its toggles in its own order")
ap.add_argument("--top", type=int, default=15)
a = ap.parse_args()
WARMUP = int(os.environ.get("WARMUP", "500"))
POSTS = int(os.environ.get("POSTS", "2000"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def requests(port, bodies):
    out = []
    for line in open(bodies):
        token, body = line.rstrip("\n").split("\t", 1)
        b = body.encode()
        out.append(b"POST /api/client/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   b"Authorization: %s\r\nContent-Length: %d\r\n\r\n%s" % (token.encode(), len(b), b))
    return out


def post(port, n, offset, bodies):
    reqs = requests(port, bodies)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        for i in range(n):
            s.sendall(reqs[(offset + i) % len(reqs)])
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    sys.exit("the server closed the connection")
                data += chunk
            if not data.startswith(b"HTTP/1.1 202"):
                sys.exit("not 202: " + data.split(b"\r\n", 1)[0].decode())


def measure(name, argv_for_port, bodies=a.bodies):
    work = tempfile.mkdtemp(prefix="mp-instr-")
    port = free_port()
    out = os.path.join(work, "callgrind.out")
    server = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + argv_for_port(port, work),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        sys.exit(f"{name} did not start under valgrind")
    post(port, WARMUP, 0, a.bodies)
    subprocess.run(["callgrind_control", "--zero", str(server.pid)], check=True, capture_output=True)
    post(port, POSTS, WARMUP, bodies)
    subprocess.run(["callgrind_control", "--dump", str(server.pid)], check=True, capture_output=True)
    server.terminate()
    server.wait(timeout=60)
    dumps = [f for f in glob.glob(out + "*") if re.search(r"\.\d+$", f)]
    return per_function(max(dumps, key=os.path.getmtime))


def per_function(path):
    """Exclusive instruction counts per function in a callgrind dump."""
    names, cost, fn, skip = {}, collections.Counter(), None, False
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith(("fn=", "cfn=")):
            m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
            if m and m.group(2):
                names[m.group(1)] = m.group(2)
            if line.startswith("fn="):
                fn = names.get(m.group(1)) if m else line[3:]
        elif line.startswith("calls="):
            skip = True  # the next cost line is the call's inclusive cost
        elif line[:1].isdigit() or line[:1] in "+-*":
            if skip:
                skip = False
            elif fn:
                parts = line.split()
                if len(parts) >= 2:
                    cost[fn] += int(parts[1])
    return cost


def demangle(names):
    try:
        r = subprocess.run(["swift-demangle", "--simplified", "--compact"], input="\n".join(names),
                           capture_output=True, text=True)
        return r.stdout.splitlines() if r.returncode == 0 else names
    except OSError:
        return names


base = measure("baseline", lambda port, work: [a.baseline, str(port)])


def proxy_argv(port, work):
    conf = os.path.join(work, "proxy.conf")
    with open(conf, "w") as f:
        f.write(f"[listen]\ntcp = 127.0.0.1:{port}\nunix = off\n[upstream]\nurl = http://127.0.0.1:9/api\n"
                f"drain_timeout = 0s\n[window]\ninterval = 1h\n[spool]\ndir = {work}/spool\n[log]\nlevel = warn\n")
    return [a.proxy, "--config", conf]


proxy = measure("proxy", proxy_argv)
b, p = sum(base.values()) / POSTS, sum(proxy.values()) / POSTS
print(f"user-space instructions per post ({os.path.basename(a.bodies)}, {POSTS} posts after {WARMUP}):")
print(f"  baseline {b:,.0f}\n  proxy    {p:,.0f}   ({p / b:.2f}x the baseline; {p - b:,.0f} more)")
if a.shuffled:
    # Warmed up with the ordered posts, so the window's tables keep that order.
    s = sum(measure("proxy", proxy_argv, a.shuffled).values()) / POSTS
    print(f"  proxy    {s:,.0f}   ({s / b:.2f}x) with {os.path.basename(a.shuffled)}")
print(f"\nthe proxy's {a.top} costliest functions (instructions per post):")
top = proxy.most_common(a.top)
for (name, c), pretty in zip(top, demangle([n for n, _ in top])):
    print(f"  {c / POSTS:8,.0f}  {pretty[:110]}")
