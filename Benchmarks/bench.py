"""Runs the measurements for Benchmarks/run.sh and prints a report; see run.sh."""
import argparse
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ap = argparse.ArgumentParser()
ap.add_argument("--proxy", required=True)
ap.add_argument("--baseline", required=True)
ap.add_argument("--bodies", required=True)
ap.add_argument("--out", required=True)
a = ap.parse_args()
DURATION = os.environ.get("DURATION", "10s")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
POSTS = int(os.environ.get("POSTS", "1000000"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_http(port, path="/readyz", timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            if c.getresponse().status in (200, 202, 404, 405):
                return True
        except OSError:
            time.sleep(0.001)
    return False


def start_proxy(extra="", interval="1h"):
    d = tempfile.mkdtemp(prefix="mp-bench-")
    port = free_port()
    conf = os.path.join(d, "proxy.conf")
    with open(conf, "w") as f:
        f.write(f"[listen]\ntcp = 127.0.0.1:{port}\nunix = off\n[upstream]\nurl = http://127.0.0.1:{free_port()}/api\n"
                f"drain_timeout = 0s\n[window]\ninterval = {interval}\n[spool]\ndir = {d}/spool\nmax_size = 4GiB\n"
                f"[log]\nlevel = info\n{extra}")
    log = open(os.path.join(d, "proxy.log"), "w")
    t0 = time.monotonic()
    p = subprocess.Popen([a.proxy, "--config", conf], stderr=log)
    if not wait_http(port):
        sys.exit(f"proxy did not start: {open(log.name).read()}")
    return p, port, time.monotonic() - t0, log.name


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()


def post_distinct_keys(port):
    """500 posts of 200 toggles each, every name new: 100,000 keys. Returns the connection."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(500):
        toggles = {f"distinct-flag-{i:04d}-{t:03d}": {"yes": 1, "no": 2, "variants": {"a": 1}} for t in range(200)}
        body = json.dumps({"appName": "keys", "instanceId": "k", "bucket": {"start": "2026-11-28T10:00:00Z",
                           "stop": "2026-11-28T10:00:30Z", "toggles": toggles}})
        c.request("POST", "/api/client/metrics", body, {"Content-Type": "application/json",
                  "Authorization": "default:development.bench"})
        assert c.getresponse().read() == b""
    return c


def wrk(port, bodies, cpus=None):
    env = dict(os.environ, BODIES=bodies)
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    r = subprocess.run(["wrk", "-t2", "-c50", f"-d{DURATION}", "--latency", "-s", "Benchmarks/post.lua",
                        f"http://127.0.0.1:{port}/api/client/metrics"], env=env, capture_output=True, text=True,
                       preexec_fn=pin)
    text = r.stdout
    if cpus:
        return int(re.search(r"(\d+) requests in", text).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    lat = {}
    for pct, val, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        lat[pct] = float(val) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = int(non2xx.group(1)) if non2xx else 0
    return rps, lat, errors


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid, cpus):
    """Moves every thread of a process to `cpus`."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)


def scrape(port, name):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


report = {"machine": f"{os.cpu_count()} cores, {os.uname().release}", "duration": DURATION, "rounds": ROUNDS}
print(f"# metrics-proxy benchmark: wrk -t2 -c50 -d{DURATION}, {ROUNDS} alternating rounds per size\n")

# 1. Throughput and latency against the bare libevent baseline, alternately.
base_port = free_port()
base = subprocess.Popen([a.baseline, str(base_port)])
wait_http(base_port, "/")
# The same baseline with libevent's epoll change list, which the proxy turns on (see
# EventLoop): the proxy is also compared with a libevent tuned as it is.
tuned_port = free_port()
tuned = subprocess.Popen([a.baseline, str(tuned_port)], env=dict(os.environ, EVENT_EPOLL_USE_CHANGELIST="1"))
wait_http(tuned_port, "/")
proxy, proxy_port, _, proxy_log = start_proxy()
# The same proxy without its journal ([journal] dir = off): the journal's own cost is the
# difference between the two rows. Every other row has the journal on, as shipped.
nojournal, nojournal_port, _, _ = start_proxy("[journal]\ndir = off\n")
idle_rss = rss_kib(proxy.pid)
rows = []
# "50, shuffled": each post's toggles in an order of its own (see bodies.py).
# "50 + impact": the same posts with a counter, a gauge and a histogram in impactMetrics (read
# by the full decoder, not the fast path).
cases = (("20", "bodies-20", proxy_port), ("50", "bodies-50", proxy_port), ("50, journal off", "bodies-50", nojournal_port),
         ("50, shuffled", "bodies-50-shuffled", proxy_port), ("50 + impact", "bodies-50-impact", proxy_port),
         ("200", "bodies-200", proxy_port))
for size, name, port in cases:
    bodies = os.path.join(a.bodies, f"{name}.tsv")
    b_runs, p_runs, t_runs = [], [], []
    for _ in range(ROUNDS):
        b_runs.append(wrk(base_port, bodies))
        p_runs.append(wrk(port, bodies))
        t_runs.append(wrk(tuned_port, bodies))
    b_rps = statistics.median(r[0] for r in b_runs)
    p_rps = statistics.median(r[0] for r in p_runs)
    b_p99 = statistics.median(r[1].get("99", 0) for r in b_runs)
    p_p99 = statistics.median(r[1].get("99", 0) for r in p_runs)
    p_p50 = statistics.median(r[1].get("50", 0) for r in p_runs)
    errors = sum(r[2] for r in p_runs)
    t_rps = statistics.median(r[0] for r in t_runs)
    t_p99 = statistics.median(r[1].get("99", 0) for r in t_runs)
    rows.append((size, b_rps, p_rps, p_rps / b_rps, b_p99, p_p99, p_p99 / b_p99 if b_p99 else 0, p_p50, errors,
                 t_rps, p_rps / t_rps, t_p99, p_p99 / t_p99 if t_p99 else 0,
                 [p[0] / b[0] for b, p in zip(b_runs, p_runs)]))
print("| toggles | baseline req/s | proxy req/s | ratio | baseline p99 ms | proxy p99 ms | p99 ratio | proxy p50 ms | proxy non-202 |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[1]:.0f} | {r[2]:.0f} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:.2f} | {r[7]:.2f} | {r[8]} |")
# The machine's speed drifts between runs: each round's proxy run against the baseline run
# just before it shows how much of a ratio is the proxy and how much the moment.
print("\nEach round's proxy req/s ÷ the baseline's in the same round: " + "; ".join(
    f"{r[0]}: {', '.join(f'{x:.2f}' for x in r[13])}" for r in rows))
print("\nThe same proxy runs against the baseline with EVENT_EPOLL_USE_CHANGELIST=1:\n")
print("| toggles | tuned baseline req/s | ratio | tuned baseline p99 ms | p99 ratio |")
print("|---|---|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[9]:.0f} | {r[10]:.2f} | {r[11]:.2f} | {r[12]:.2f} |")
report["throughput"] = rows

# 1b. What each post costs the server in CPU, with the server alone on CPU 0 and wrk on the
# others: the scheduler no longer decides how the two cores are shared, so this varies far
# less between runs than the throughput above. 50-toggle bodies, alternating rounds, medians.
everything = os.sched_getaffinity(0)
if len(everything) >= 2:
    server_cpu, client_cpus = {min(everything)}, everything - {min(everything)}
    bodies = os.path.join(a.bodies, "bodies-50.tsv")
    servers = [("baseline", base, base_port), ("tuned baseline", tuned, tuned_port), ("proxy", proxy, proxy_port),
               ("proxy, journal off", nojournal, nojournal_port)]
    for _, proc, _ in servers:
        pin(proc.pid, server_cpu)
    costs = {name: [] for name, _, _ in servers}
    for _ in range(ROUNDS):
        for name, proc, port in servers:
            before = cpu_seconds(proc.pid)
            requests = wrk(port, bodies, cpus=client_cpus)
            costs[name].append((cpu_seconds(proc.pid) - before) * 1e6 / max(1, requests))
    for _, proc, _ in servers:
        pin(proc.pid, everything)
    us = {name: statistics.median(v) for name, v in costs.items()}
    print(f"\nServer CPU per 50-toggle post, server pinned to CPU {min(everything)}, wrk on the others "
          f"(median of {ROUNDS}; lower is better):\n")
    print("| server | µs per post | baseline ÷ this (as a throughput ratio) |")
    print("|---|---|---|")
    for name, _, _ in servers:
        runs = ", ".join(f"{v:.1f}" for v in costs[name])
        print(f"| {name} | {us[name]:.1f} ({runs}) | {us['baseline'] / us[name]:.2f} |")
    report["cpu_per_post_us"] = costs
# 1c. Stalls: stretches of more than 0.5 ms in which no connection got an answer, under the
# same load as wrk (two threads, 50 connections; Benchmarks/stalls.c), 6 s per server,
# alternating rounds, medians. At saturation a p99 mostly measures how the scheduler shares
# two cores between the server and the load; a stall of the server shows here.
stalls = os.path.join(a.out, "stalls")
bodies = os.path.join(a.bodies, "bodies-50.tsv")
servers = [("baseline", base_port), ("proxy", proxy_port), ("proxy, journal off", nojournal_port)]
found = {name: [] for name, _ in servers}
for _ in range(ROUNDS):
    for name, port in servers:
        line = subprocess.run([stalls, str(port), "6", bodies], capture_output=True, text=True, check=True).stdout
        found[name].append({k: float(v) for k, v in (kv.split("=") for kv in line.split())})
print("\nStalls under the same load (Benchmarks/stalls.c, 6 s per server, median of "
      f"{ROUNDS}): gaps are stretches in which no connection got an answer\n")
print("| server | req/s | p50 ms | p99 ms | p99.9 ms | gaps > 0.5 ms | gaps > 1 ms | time in gaps ms |")
print("|---|---|---|---|---|---|---|---|")
for name, _ in servers:
    m = {k: statistics.median(r[k] for r in found[name]) for k in found[name][0]}
    print(f"| {name} | {m['rps']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['p999_ms']:.2f} | "
          f"{m['gaps_over_0.5ms']:.0f} | {m['gaps_over_1ms']:.0f} | {m['gap_ms']:.1f} |")
report["stalls"] = found

for b in (base, tuned):
    b.send_signal(signal.SIGTERM)
    b.wait()
stop(nojournal)

# 2. Memory: idle, and after POSTS posts (50-toggle bodies; their keys repeat, as in production).
bodies = os.path.join(a.bodies, "bodies-50.tsv")
posted = scrape(proxy_port, "metrics_proxy_posts_total")
rounds = 0
while posted < POSTS and rounds < 200:
    wrk(proxy_port, bodies)
    posted = scrape(proxy_port, "metrics_proxy_posts_total")
    rounds += 1
after_rss = rss_kib(proxy.pid)
keys = scrape(proxy_port, "metrics_proxy_window_keys")
stop(proxy)
print(f"\nresident memory idle: {idle_rss / 1024:.1f} MiB")
print(f"resident memory after {posted:.0f} posts ({keys:.0f} keys in the window): {after_rss / 1024:.1f} MiB")

# 3. 100,000 distinct merge keys: resident memory, then the time to close and serialize them.
proxy, port, _, log = start_proxy()
c = post_distinct_keys(port)
keys = scrape(port, "metrics_proxy_window_keys")
keys_rss = rss_kib(proxy.pid)
stop(proxy)
m = re.search(r"serialize_ms=(\d+) close_ms=(\d+)", open(log).read())
print(f"resident memory with {keys:.0f} distinct keys: {keys_rss / 1024:.1f} MiB")
print(f"closing that window: serialize {m.group(1)} ms, serialize + spool to disk {m.group(2)} ms")

# 4. Start-up to ready (GET /readyz answers 200), median of 5.
starts = []
for _ in range(5):
    p, _, took, _ = start_proxy()
    starts.append(took * 1000)
    stop(p)
print(f"start-up to ready: {statistics.median(starts):.1f} ms (median of 5; {', '.join(f'{s:.1f}' for s in starts)})")

# 5. Start-up to ready after a kill -9 with a full journal ([journal] max_size, 32 MiB by
# default) on top of a checkpoint of 100,000 distinct keys: the replay a restart must do.
proxy, port, _, log = start_proxy()
c = post_distinct_keys(port)
max_size = 32 << 20
# Post 50-toggle bodies until the journal has been checkpointed (holding the 100,000 keys) and
# has grown again to within 4 MiB of the size that triggers the next checkpoint: wrk for most
# of the way (a second at a time), then one post at a time.
saved_duration = DURATION
DURATION = "1s"
for _ in range(120):
    if scrape(port, "metrics_proxy_journal_checkpoints_total") >= 1 and scrape(port, "metrics_proxy_journal_bytes") >= max_size - (16 << 20):
        break
    wrk(port, os.path.join(a.bodies, "bodies-50.tsv"))
DURATION = saved_duration
lines = [l.rstrip("\n").split("\t", 1) for l in open(os.path.join(a.bodies, "bodies-50.tsv"))]
sent = 0
while sent < 400_000:
    if sent % 500 == 0:
        checkpoints = scrape(port, "metrics_proxy_journal_checkpoints_total")
        size = scrape(port, "metrics_proxy_journal_bytes")
        if checkpoints >= 1 and size >= max_size - (4 << 20):
            break
    token, body = lines[sent % len(lines)]
    c.request("POST", "/api/client/metrics", body, {"Content-Type": "application/json", "Authorization": token})
    r = c.getresponse()
    r.read()
    assert r.status == 202, r.status
    sent += 1
keys = scrape(port, "metrics_proxy_window_keys")
records = scrape(port, "metrics_proxy_journal_records")
checkpoint_ms = re.findall(r'event="journal checkpoint" bytes=(\d+) keys=(\d+) ms=(\d+)', open(log).read())
proxy.send_signal(signal.SIGKILL)
proxy.wait()
conf = os.path.join(os.path.dirname(log), "proxy.conf")
t0 = time.monotonic()
again = subprocess.Popen([a.proxy, "--config", conf], stderr=open(log, "a"))
wait_http(port, timeout=60)
ready_ms = (time.monotonic() - t0) * 1000
replay = re.findall(r'event="journal replayed" records=(\d+) segments=(\d+) bytes=(\d+).* keys=(\d+) ms=(\d+)', open(log).read())
again_keys = scrape(port, "metrics_proxy_window_keys")
stop(again)
print(f"\njournal checkpoints while filling it: " + "; ".join(f"{int(b) / 1048576:.1f} MiB, {k} keys, {m} ms" for b, k, m in checkpoint_ms))
print(f"kill -9 with {size / 1048576:.1f} MiB of journal ({records:.0f} records since the checkpoint) on a checkpoint, "
      f"{keys:.0f} keys in the window: ready again in {ready_ms:.0f} ms")
if replay:
    r = replay[-1]
    print(f"   replay: {r[0]} records from {r[1]} segments, {int(r[2]) / 1048576:.1f} MiB, {r[4]} ms; keys after: {again_keys:.0f}"
          f" ({'the same' if again_keys == keys else 'DIFFERENT'})")
