"""How much each topology cuts the upstream's load: SDK posts in per upstream request out.
Used by topology.sh; see there.

Each scenario runs real metrics-proxy processes on loopback in the shape of a deployment
(sidecars, a node agent, node agents under a cluster proxy, a proxy behind Edge), and
SDK-like posters that post every SDK_INTERVAL seconds with a random phase, as SDKs do. The
window of every proxy is WINDOW seconds. After DURATION seconds the posters stop, the proxies
are stopped with SIGTERM tier by tier (each drains what it holds), and the fake upstream's
record is counted: requests, and the flag counts, which must equal what was posted."""
import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--proxy", required=True)
ap.add_argument("--fake", required=True, help="Tests/Fixtures/fake_upstream.py")
a = ap.parse_args()
DURATION = float(os.environ.get("DURATION", "12"))
WINDOW = os.environ.get("WINDOW", "2s")
SDK_INTERVAL = float(os.environ.get("SDK_INTERVAL", "2"))
TOKEN = "default:development.topology"
FEATURES = [f"feature.{i:03d}" for i in range(20)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_file(path, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return open(path).read().strip()
        time.sleep(0.02)
    sys.exit(f"no {path}")


class Proxy:
    def __init__(self, upstream_url, name):
        self.dir = tempfile.mkdtemp(prefix=f"mp-topo-{name}-")
        self.port = free_port()
        self.sock = os.path.join(self.dir, "proxy.sock")
        conf = os.path.join(self.dir, "proxy.conf")
        with open(conf, "w") as f:
            f.write(f"[listen]\ntcp = 127.0.0.1:{self.port}\nunix = {self.sock}\n[upstream]\nurl = {upstream_url}\n"
                    f"drain_timeout = 10s\n[window]\ninterval = {WINDOW}\n[spool]\ndir = {self.dir}/spool\n[log]\nlevel = warn\n")
        self.p = subprocess.Popen([a.proxy, "--config", conf], stderr=open(os.path.join(self.dir, "log"), "w"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        sys.exit(f"proxy {name} did not start")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/api"

    def posts_taken(self):
        """Posts (SDK or bulk) this proxy answered 202, from its /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith('metrics_proxy_posts_total{code="202"}'):
                    return int(float(line.split()[-1]))
        return 0

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(timeout=30)


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": TOKEN})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def sdk_body(app, instance, rng):
    now = time.time()
    toggles = {f: {"yes": rng.randint(0, 50), "no": rng.randint(0, 50), "variants": {}} for f in FEATURES}
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + "Z"
    return {"appName": app, "instanceId": instance, "sdkVersion": "unleash-python-sdk:6.9.1",
            "bucket": {"start": iso(now - SDK_INTERVAL), "stop": iso(now), "toggles": toggles}}, toggles


def edge_body(edge, rng):
    """A bulk post in Unleash Edge's documented shape: Edge's own merged window of its SDKs."""
    stamp = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime())
    apps = [{"appName": f"app-{edge}-{i}", "instanceId": f"pod-{edge}-{i}", "environment": "development",
             "connectVia": [{"appName": "unleash-edge", "instanceId": f"edge-{edge}"}], "interval": 60000,
             "started": stamp, "strategies": ["default"], "sdkType": "backend"} for i in range(4)]
    metrics, yes = [], 0
    for app in apps:
        for f in FEATURES:
            y = rng.randint(0, 50)
            yes += y
            metrics.append({"featureName": f, "appName": app["appName"], "environment": "development", "timestamp": stamp,
                            "yes": y, "no": 0, "variants": {}})
    return {"applications": apps, "metrics": metrics}, yes


def run_posters(targets, edge=False):
    """One thread per SDK instance (or Edge); returns (posts answered 202, yes counts in them)."""
    stop_at = time.monotonic() + DURATION
    totals = {"posts": 0, "yes": 0, "errors": 0}
    lock = threading.Lock()

    def poster(i, port):
        rng = random.Random(i)
        time.sleep(rng.uniform(0, SDK_INTERVAL))
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                if edge:
                    body, yes = edge_body(i, rng)
                    status = post(port, "/client/metrics/bulk", body)
                else:
                    body, toggles = sdk_body(f"app-{i % 3}", f"instance-{i}", rng)
                    yes = sum(t["yes"] for t in toggles.values())
                    status = post(port, "/client/metrics", body)
                with lock:
                    if status == 202:
                        totals["posts"] += 1
                        totals["yes"] += yes
                    else:
                        totals["errors"] += 1
            except OSError:
                with lock:
                    totals["errors"] += 1
            time.sleep(max(0, SDK_INTERVAL - (time.monotonic() - started)))

    threads = [threading.Thread(target=poster, args=(i, port)) for i, port in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return totals


def upstream_requests(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_control/requests", timeout=10) as r:
        records = json.load(r)
    reqs = [r for r in records if r["path"].startswith("/api/client/metrics") and r["status"] == 202]
    yes = 0
    for r in reqs:
        body = json.loads(r["body"])
        if r["path"].endswith("/bulk"):
            yes += sum(m["yes"] for m in body.get("metrics", []))
        else:
            yes += sum(t.get("yes", 0) for t in ((body.get("bucket") or {}).get("toggles") or {}).values())
    return len(reqs), yes


def scenario(name, build, edge=False):
    work = tempfile.mkdtemp(prefix="mp-topo-up-")
    port_file = os.path.join(work, "port")
    fake = subprocess.Popen([sys.executable, a.fake, "--host", "127.0.0.1", "--port", "0", "--port-file", port_file],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    up_port = int(wait_file(port_file))
    upstream = f"http://127.0.0.1:{up_port}/api"
    tiers, targets = build(upstream)
    totals = run_posters(targets, edge=edge)
    between = ""
    for n, tier in enumerate(tiers):  # the tier nearest the SDKs first, so each drains into a running one
        if n > 0:
            between = f" ({sum(p.posts_taken() for p in tier)} bulk posts between the tiers)"
        for p in tier:
            p.stop()
    out, yes = upstream_requests(up_port)
    fake.send_signal(signal.SIGTERM)
    fake.wait(timeout=10)
    exact = "yes" if yes == totals["yes"] and totals["errors"] == 0 else f"NO (posted {totals['yes']}, upstream {yes}, errors {totals['errors']})"
    print(f"| {name}{between} | {totals['posts']} | {out} | {totals['posts'] / max(1, out):.1f} | {exact} |", flush=True)


def direct(upstream):
    # No proxy at all: every SDK post is an upstream request (12 instances).
    port = int(upstream.rsplit(":", 1)[1].split("/")[0])
    return [], [port] * 12


def sidecars(per_pod):
    def build(upstream):
        pods = 12 // per_pod
        proxies = [Proxy(upstream, f"sidecar-{i}") for i in range(pods)]
        return [proxies], [proxies[i // per_pod].port for i in range(12)]
    return build


def node_agent(upstream):
    node = Proxy(upstream, "node")
    return [[node]], [node.port] * 12


def tiers(upstream):
    top = Proxy(upstream, "cluster")
    nodes = [Proxy(top.url, f"node-{i}") for i in range(3)]
    return [nodes, [top]], [nodes[i % 3].port for i in range(12)]


def behind_edge(upstream):
    proxy = Proxy(upstream, "behind-edge")
    return [[proxy]], [proxy.port] * 3


print(f"# Topologies: 12 SDK instances (3 Edges of 4 for the last row), each posting 20 flags every "
      f"{SDK_INTERVAL:g} s for {DURATION:g} s; every proxy's window {WINDOW}\n")
print("| topology | SDK posts in (202) | upstream requests out | posts per request | every count upstream |")
print("|---|---|---|---|---|")
scenario("no proxy (SDKs straight to Unleash)", direct)
scenario("sidecar per pod, 1 SDK instance per pod (12 pods)", sidecars(1))
scenario("sidecar per pod, 4 workers per pod (3 pods)", sidecars(4))
scenario("node agent (12 instances on one node)", node_agent)
scenario("tiers: 3 node agents (4 instances each) -> cluster proxy", tiers)
scenario("behind Edge: 3 Edges (bulk posts) -> proxy", behind_edge, edge=True)
