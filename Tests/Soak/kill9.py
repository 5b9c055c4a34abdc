#!/usr/bin/env python3
"""A 202 survives kill -9: posters send without pause over TCP and the Unix socket while the
real binary is killed with SIGKILL at random moments and restarted at once, then stopped with
SIGTERM. Every post carries a flag of its own, so each one is followed to the upstream:

  - every post answered 202 must arrive exactly once;
  - every post whose answer never came (the kill cut it off) at most once;
  - every post answered otherwise (503 while starting or stopping) never.

The one duplicate the design allows is a batch the upstream took whose answer the kill cut
off: the proxy sends it again under the same X-Metrics-Proxy-Batch id. Such resends are
counted and reported; the flags are counted once per batch id.

    python3 Tests/Soak/kill9.py --binary .build/debug/metrics-proxy [--kills 5] [--posters 6]
"""
import argparse
import http.client
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

from soak import UnixHTTPConnection  # this script's folder is on the path

TOKEN = "default:development.kill9000aaaa"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Run:
    def __init__(self, a):
        self.a = a
        self.work = tempfile.mkdtemp(prefix="mp-kill9-")
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.acked, self.unanswered, self.refused = set(), set(), set()
        self.port = free_port()
        self.sock = os.path.join(self.work, "proxy.sock")
        self.starts = 0

    def start_upstream(self):
        port_file = os.path.join(self.work, "upstream-port")
        self.upstream = subprocess.Popen([sys.executable, self.a.fake, "--host", "127.0.0.1", "--port", "0",
                                          "--port-file", port_file], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Ready when its port is written and it answers its health check.
        deadline = time.time() + 10
        while True:
            try:
                self.upstream_port = int(open(port_file).read())
                with urllib.request.urlopen(f"http://127.0.0.1:{self.upstream_port}/_control/health", timeout=1):
                    return
            except (OSError, ValueError):
                if time.time() > deadline:
                    raise SystemExit("fake upstream did not start")
                time.sleep(0.02)

    def records(self):
        url = f"http://127.0.0.1:{self.upstream_port}/_control/requests?path=/api/client/metrics/bulk"
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())

    def start_proxy(self):
        conf = os.path.join(self.work, "proxy.conf")
        with open(conf, "w") as f:
            f.write(f"""[listen]
tcp = 127.0.0.1:{self.port}
unix = {self.sock}
[upstream]
url = http://127.0.0.1:{self.upstream_port}/api
drain_timeout = 30s
[window]
interval = {self.a.window}
[spool]
dir = {self.work}/spool
replay_rate = 0
[retry]
initial = 100ms
max = 1s
[journal]
dir = {self.a.journal}
""")
        self.starts += 1
        self.log_path = os.path.join(self.work, f"proxy-{self.starts}.log")
        self.proxy = subprocess.Popen([self.a.binary, "--config", conf], stdout=subprocess.DEVNULL,
                                      stderr=open(self.log_path, "w"))
        deadline = time.time() + 15
        while time.time() < deadline:
            if "event=listening" in open(self.log_path).read():
                return
            if self.proxy.poll() is not None:
                break
            time.sleep(0.01)
        raise SystemExit("proxy did not start:\n" + open(self.log_path).read())

    def poster(self, n):
        unix = n % 2 == 1
        seq = 0
        conn = None
        while not self.stop.is_set():
            flag = f"p{n}-{seq}"
            seq += 1
            body = json.dumps({"appName": "kill9", "instanceId": f"poster-{n}",
                               "bucket": {"start": "2026-12-04T10:00:00Z", "stop": "2026-12-04T10:00:10Z",
                                          "toggles": {flag: {"yes": 1, "no": 0, "variants": {}}}}})
            sent = False
            try:
                if conn is None:
                    conn = UnixHTTPConnection(self.sock, 5) if unix else http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                    conn.connect()
                conn.request("POST", "/api/client/metrics", body,
                             {"Content-Type": "application/json", "Authorization": TOKEN})
                sent = True
                r = conn.getresponse()
                r.read()
                status = r.status
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
                with self.lock:
                    (self.unanswered if sent else self.refused).add(flag)
                time.sleep(0.005)
                continue
            with self.lock:
                (self.acked if status == 202 else self.refused).add(flag)

    def main(self):
        self.start_upstream()
        self.start_proxy()
        threads = [threading.Thread(target=self.poster, args=(n,), daemon=True) for n in range(self.a.posters)]
        for t in threads:
            t.start()
        rng = random.Random(self.a.seed)
        replays = []
        for k in range(self.a.kills):
            time.sleep(rng.uniform(0.3, 2.5))
            self.proxy.send_signal(signal.SIGKILL)
            self.proxy.wait()
            self.start_proxy()
            replays.append(next((l for l in open(self.log_path) if "journal replayed" in l), "").strip())
        time.sleep(rng.uniform(0.3, 1.0))
        self.proxy.send_signal(signal.SIGTERM)
        self.stop.set()
        for t in threads:
            t.join(10)
        status = self.proxy.wait(60)
        ok = True

        def check(cond, what):
            nonlocal ok
            print(("ok   " if cond else "FAIL ") + what)
            ok = ok and cond

        records = self.records()
        counts, batches, resent = {}, set(), 0
        for rec in records:
            batch = dict((k.lower(), v) for k, v in rec["headers"]).get("x-metrics-proxy-batch")
            if batch in batches:
                resent += 1
                continue
            batches.add(batch)
            for m in json.loads(rec["body"])["metrics"]:
                counts[m["featureName"]] = counts.get(m["featureName"], 0) + m["yes"]
        print(f"posts: {len(self.acked)} answered 202, {len(self.unanswered)} cut off unanswered, "
              f"{len(self.refused)} refused or not sent; kills: {self.a.kills}; upstream requests: {len(records)} "
              f"({resent} resends of a batch whose answer the kill cut off)")
        for r in replays:
            print("   " + r)
        check(status == 0, f"the proxy exited 0 after SIGTERM (got {status})")
        check(self.a.kills == 0 or all(replays) or self.a.journal == "off", "every restart replayed the journal")
        lost = sorted(f for f in self.acked if counts.get(f, 0) == 0)
        twice = sorted(f for f in self.acked if counts.get(f, 0) > 1)
        check(not lost, f"every post answered 202 arrived ({len(lost)} lost: {lost[:10]})")
        check(not twice, f"no post answered 202 arrived twice ({len(twice)}: {twice[:10]})")
        over = sorted(f for f in self.unanswered if counts.get(f, 0) > 1)
        check(not over, f"posts cut off unanswered arrived at most once ({len(over)} more: {over[:10]})")
        ghosts = sorted(f for f in self.refused if counts.get(f, 0) > 0)
        check(not ghosts, f"posts refused or never sent did not arrive ({len(ghosts)}: {ghosts[:10]})")
        unknown = set(counts) - self.acked - self.unanswered - self.refused
        check(not unknown, f"nothing arrived that was not posted ({sorted(unknown)[:5]})")
        check(len(self.acked) > 100 * (self.a.kills + 1), f"the posters got through ({len(self.acked)} posts)")
        left = [n for n in os.listdir(os.path.join(self.work, "spool")) if n.endswith(".batch")]
        check(not left, f"the spool is empty after the drain ({len(left)} left)")
        self.upstream.send_signal(signal.SIGTERM)
        self.upstream.wait(10)
        if not ok:
            print("work dir kept: " + self.work)
        return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--posters", type=int, default=6, help="half over TCP, half over the Unix socket")
    ap.add_argument("--window", default="2s")
    ap.add_argument("--journal", default="auto", help="[journal] dir; off shows what a kill costs without it")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--fake", default=os.path.join(os.path.dirname(__file__), "..", "Fixtures", "fake_upstream.py"))
    a = ap.parse_args()
    print(f"seed {a.seed}")
    sys.exit(Run(a).main())
