#!/usr/bin/env python3
"""Bounded soak and abuse run against the real metrics-proxy binary (loopback only).

For --seconds, good posters (TCP and Unix socket, keep-alive, two tokens, several apps) post
valid metrics while abusers send malformed JSON, truncated bodies, wrong content types,
oversized and gzip-bomb bodies, slow-drip requests, and connections dropped mid-request;
meanwhile the fake upstream flaps (up, 503, connection reset, slow, down). /healthz is
polled throughout. Afterwards the upstream comes back, the proxy drains on SIGTERM, and the
run (with the [listen] defaults, and --drip-rate never-finishing connections a second)
checks: /healthz always answered within 1 s, accept never paused at the connection cap, every
good post's counts arrived exactly (nothing lost, nothing twice), and so
did the impact counter a third of them carry (beside a bad impact metric that must cost only
itself), every
answer was the expected one, resident memory stayed flat, no file descriptor leaked, and
/healthz always answered.

Usage: soak.py --binary PATH [--seconds 180] [--fake Tests/Fixtures/fake_upstream.py]
Prints a report; exits 0 when every check passed.
"""
import argparse
import gzip
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

TOKENS = ["default:development.soak0000aaaa", "default:production.soak1111bbbb"]
APPS = ["checkout", "search", "cart"]
FEATURES = [f"flag-{i}" for i in range(40)]
VARIANTS = ["red", "green", "blue"]


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Run:
    def __init__(self, a):
        self.a = a
        self.work = tempfile.mkdtemp(prefix="mp-soak-")
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ledger = {}  # (token, app, feature) -> [yes, no, {variant: n}]
        self.impact = {}  # (token, app, poster label) -> summed counter value
        self.counts = {}  # what happened, by kind
        self.failures = []
        self.upstream_records = []  # records kept from fake upstreams that were stopped
        self.health_max = 0.0

    # --- bookkeeping
    def count(self, kind, n=1):
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + n

    def fail(self, what):
        with self.lock:
            if len(self.failures) < 50:
                self.failures.append(what)

    # --- processes
    def start_upstream(self, port=0):
        port_file = os.path.join(self.work, f"upstream-port-{time.time()}")
        self.upstream = subprocess.Popen([sys.executable, self.a.fake, "--host", "127.0.0.1", "--port", str(port),
                                          "--port-file", port_file], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while not os.path.exists(port_file):
            if time.time() > deadline:
                raise SystemExit("fake upstream did not start")
            time.sleep(0.02)
        self.upstream_port = int(open(port_file).read())

    def control(self, path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.upstream_port}/_control/{path}",
                                     data=None if body is None else json.dumps(body).encode(), method="GET" if body is None else "POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null") if path.startswith("requests") else None

    def stop_upstream(self):
        # Refuse everything first and let requests in flight finish, so no request is taken
        # after the records were read.
        self.control("script", {"answers": [{"status": 503, "repeat": -1}], "replace": True})
        deadline = time.time() + 10
        while True:
            records = self.control("requests?path=/api/client/metrics/bulk")
            if all(r["answered"] for r in records) or time.time() > deadline:
                break
            time.sleep(0.05)
        self.upstream_records += records
        self.upstream.send_signal(signal.SIGTERM)
        self.upstream.wait(10)

    def start_proxy(self):
        self.sock = os.path.join(self.work, "sock", "proxy.sock")
        conf = os.path.join(self.work, "proxy.conf")
        with open(conf, "w") as f:
            f.write(f"""[listen]
tcp = 127.0.0.1:0
unix = {self.sock}
[upstream]
url = http://127.0.0.1:{self.upstream_port}/api
timeout = 3s
drain_timeout = 60s
[window]
interval = 1s
[spool]
dir = {self.work}/spool
replay_rate = 0
[retry]
initial = 100ms
max = 1s
[log]
level = info
""")
        self.log_path = os.path.join(self.work, "proxy.log")
        self.proxy = subprocess.Popen([self.a.binary, "--config", conf], stdout=subprocess.DEVNULL,
                                      stderr=open(self.log_path, "w"))
        deadline = time.time() + 15
        while time.time() < deadline:
            text = open(self.log_path).read()
            if "event=listening" in text:
                self.port = int(text.split("127.0.0.1:")[1].split(",")[0].split()[0])
                return
            if self.proxy.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit("proxy did not start:\n" + open(self.log_path).read())

    def rss_kib(self):
        for line in open(f"/proc/{self.proxy.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return -1

    def fds(self):
        return len(os.listdir(f"/proc/{self.proxy.pid}/fd"))

    # --- clients
    def connection(self, unix):
        return UnixHTTPConnection(self.sock, 10) if unix else http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def good_poster(self, n):
        rng = random.Random(n)
        unix = n % 2 == 1
        conn = self.connection(unix)
        token = TOKENS[n % len(TOKENS)]
        instance = f"soak-{n}"
        while not self.stop.is_set():
            app = rng.choice(APPS)
            toggles, adds = {}, []
            for f in rng.sample(FEATURES, rng.randint(1, 25)):
                yes, no = rng.randint(0, 50), rng.randint(0, 50)
                variants = {v: rng.randint(0, 9) for v in rng.sample(VARIANTS, rng.randint(0, 3))}
                toggles[f] = {"yes": yes, "no": no, "variants": variants}
                if yes or no:  # the server (and so the proxy) drops an entry with neither, variants too
                    adds.append((f, yes, no, variants))
            now = time.time()
            stop = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + "Z"
            start = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 10)) + "Z"
            post = {"appName": app, "instanceId": instance, "environment": "x",
                    "bucket": {"start": start, "stop": stop, "toggles": toggles}}
            events = rng.randint(1, 9) if rng.random() < 1 / 3 else 0
            if events:
                # An impact counter, and a metric without help beside it that is dropped alone.
                post["impactMetrics"] = [
                    {"name": "soak_events", "help": "events", "type": "counter",
                     "samples": [{"labels": {"poster": f"p{n % 4}", "appName": app}, "value": events}]},
                    {"name": "soak_broken", "type": "counter", "samples": [{"value": 1}]}]
            body = json.dumps(post)
            try:
                conn.request("POST", "/api/client/metrics", body,
                             {"Content-Type": "application/json", "Authorization": token})
                r = conn.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException) as e:
                # The post may or may not have been taken: that would make the ledger unknowable.
                self.fail(f"good post over {'unix' if unix else 'tcp'} failed: {e!r}")
                conn.close()
                conn = self.connection(unix)
                continue
            if status != 202:
                self.fail(f"good post answered {status}")
                continue
            with self.lock:
                if events:
                    k = (token, app, f"p{n % 4}")
                    self.impact[k] = self.impact.get(k, 0) + events
                for f, yes, no, variants in adds:
                    e = self.ledger.setdefault((token, app, f), [0, 0, {}])
                    e[0] += yes
                    e[1] += no
                    for v, c in variants.items():
                        e[2][v] = e[2].get(v, 0) + c
            self.count("good posts")
        conn.close()

    def expect(self, kind, method, path, body, headers, statuses, unix=False):
        conn = self.connection(unix)
        try:
            conn.request(method, path, body, headers)
            r = conn.getresponse()
            r.read()
            if r.status not in statuses:
                self.fail(f"{kind}: answered {r.status}, expected {statuses}")
            self.count(kind)
        except (OSError, http.client.HTTPException) as e:
            if 413 in statuses and isinstance(e, (BrokenPipeError, ConnectionResetError)):
                self.count(kind)  # libevent answers 413 and closes while the body is still going out
            else:
                self.fail(f"{kind}: {e!r}")
        finally:
            conn.close()

    def raw(self, data, then_close=True, unix=False):
        s = socket.socket(socket.AF_UNIX if unix else socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(self.sock if unix else ("127.0.0.1", self.port))
        s.sendall(data)
        if then_close:
            s.close()
        return s

    def abuser(self, n):
        rng = random.Random(1000 + n)
        bomb = gzip.compress(b"0" * (20 << 20), 9)
        json_headers = {"Content-Type": "application/json", "Authorization": TOKENS[0]}
        while not self.stop.is_set():
            unix = rng.random() < 0.5
            kind = rng.choice(["malformed", "schema", "content-type", "oversized", "gzip-bomb", "truncated",
                               "dropped-headers", "connect-close", "many-headers", "huge-header"])
            try:
                if kind == "malformed":
                    self.expect(kind, "POST", "/api/client/metrics", '{"appName": "x", "bucket": {', json_headers, [400], unix)
                elif kind == "schema":
                    self.expect(kind, "POST", "/api/client/metrics", '{"appName": "", "bucket": {"toggles": 5}}', json_headers, [400], unix)
                elif kind == "content-type":
                    self.expect(kind, "POST", "/api/client/metrics", '{"appName": "x"}',
                                {"Content-Type": "text/plain", "Authorization": TOKENS[0]}, [415], unix)
                elif kind == "oversized":
                    self.expect(kind, "POST", "/api/client/metrics", "x" * 200_000, json_headers, [413], unix)
                elif kind == "gzip-bomb":
                    self.expect(kind, "POST", "/api/client/metrics", bomb, dict(json_headers, **{"Content-Encoding": "gzip"}), [413], unix)
                elif kind == "truncated":
                    self.raw(b"POST /api/client/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Authorization: " + TOKENS[0].encode() + b"\r\nContent-Length: 900\r\n\r\n{\"appName\":\"x\",\"bucket\":{", unix=unix)
                    self.count(kind)
                elif kind == "many-headers":
                    many = dict(json_headers, **{f"X-Junk-{i}": "x" for i in range(200)})
                    self.expect(kind, "POST", "/api/client/metrics", '{"appName": "x"}', many, [431], unix)
                elif kind == "huge-header":
                    # Past max_header_size: libevent answers 400 and closes.
                    self.expect(kind, "GET", "/healthz", None, {"X-Junk": "x" * 40_000}, [400], unix)
                elif kind == "dropped-headers":
                    self.raw(b"POST /api/client/metrics HTTP/1.1\r\nHost: x\r\nContent-Ty", unix=unix)
                    self.count(kind)
                else:
                    self.raw(b"", unix=unix)
                    self.count(kind)
            except OSError as e:
                self.fail(f"{kind}: {e!r}")
            time.sleep(rng.uniform(0, 0.02))

    def slow_drip(self):
        while not self.stop.is_set():
            s = self.raw(b"POST /api/client/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 400\r\n\r\n", then_close=False)
            s.settimeout(0.3)
            started, answer = time.time(), b""
            while time.time() - started < 6:
                try:
                    s.sendall(b" ")
                    chunk = s.recv(1000)
                    if not chunk:
                        break
                    answer += chunk
                except socket.timeout:
                    continue
                except OSError:
                    break
            s.close()
            took = time.time() - started
            if not answer.startswith(b"HTTP/1.1 408") or took > 4.5:
                self.fail(f"slow drip: {answer[:40]!r} after {took:.1f}s")
            self.count("slow drip cut off")

    def drip_flood(self):
        """Connections that send a request line and then nothing, --drip-rate a second (a
        leaked pool, a stuck worker): each must be cut off (min_rate) before they fill the
        connection cap, and none may keep /healthz or the good posters waiting."""
        held = []
        began, opened = time.time(), 0
        while not self.stop.is_set():
            # Paced by the clock, not by sleeps after each connect, so the rate is what was asked.
            self.stop.wait(max(0.0, began + opened / self.a.drip_rate - time.time()))
            opened += 1
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
                s.sendall(b"POST /api/client/metrics HTTP/1.1\r\n")
                held.append((time.time(), s))
                self.count("never-finishing connections")
            except OSError as e:
                self.fail(f"drip flood: connect failed: {e!r}")
            # Our side lets go after 20 s; the proxy should have closed them long before.
            while held and time.time() - held[0][0] > 20:
                held.pop(0)[1].close()
        for _, s in held:
            s.close()

    def scrape(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return r.read().decode()

    def health(self):
        while not self.stop.is_set():
            t = time.time()
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3)
                c.request("GET", "/healthz")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status != 200:
                    self.fail(f"/healthz answered {r.status}")
            except (OSError, http.client.HTTPException) as e:
                self.fail(f"/healthz: {e!r}")
            with self.lock:
                self.health_max = max(self.health_max, time.time() - t)
            self.count("health checks")
            self.stop.wait(0.25)

    def flapper(self):
        phases = ["up", "503", "up", "reset", "up", "slow", "up", "down"]
        i = 0
        while not self.stop.is_set():
            phase = phases[i % len(phases)]
            i += 1
            if phase == "503":
                self.control("script", {"answers": [{"status": 503, "repeat": -1, "path_prefix": "/api/client/metrics"}], "replace": True})
            elif phase == "reset":
                self.control("script", {"answers": [{"status": 0, "repeat": -1, "path_prefix": "/api/client/metrics"}], "replace": True})
            elif phase == "slow":
                self.control("script", {"answers": [{"status": 202, "delay": 0.5, "repeat": -1, "path_prefix": "/api/client/metrics"}], "replace": True})
            elif phase == "down":
                port = self.upstream_port
                self.stop_upstream()
                self.stop.wait(3)
                self.start_upstream(port)
                self.count("upstream flaps")
                continue
            else:
                self.control("script/clear", {})
            self.count("upstream flaps")
            self.stop.wait(3)
        self.control("script/clear", {})

    # --- the run
    def main(self):
        self.start_upstream()
        self.start_proxy()
        fds_start = self.fds()
        threads = [threading.Thread(target=self.good_poster, args=(n,)) for n in range(self.a.posters)]
        threads += [threading.Thread(target=self.abuser, args=(n,)) for n in range(4)]
        threads += [threading.Thread(target=self.slow_drip), threading.Thread(target=self.health),
                    threading.Thread(target=self.flapper), threading.Thread(target=self.drip_flood)]
        for t in threads:
            t.start()
        samples = []
        began = time.time()
        while time.time() - began < self.a.seconds:
            time.sleep(1)
            samples.append((time.time() - began, self.rss_kib(), self.fds()))
            if self.proxy.poll() is not None:
                self.fail("the proxy exited during the run")
                break
        metrics_text = self.scrape()
        self.stop.set()
        for t in threads:
            t.join(30)
        # Every client is gone: descriptors must come back to where they started.
        deadline = time.time() + 10
        while self.fds() > fds_start and time.time() < deadline:
            time.sleep(0.1)
        fds_end = self.fds()
        self.proxy.send_signal(signal.SIGTERM)
        code = self.proxy.wait(90)
        self.upstream_records += self.control("requests?path=/api/client/metrics/bulk")
        self.upstream.send_signal(signal.SIGTERM)
        self.upstream.wait(10)

        got, impact_got, impact_extra = {}, {}, []
        for rec in self.upstream_records:
            if not rec["status"] or not 200 <= rec["status"] < 300:
                continue
            token = dict((k.lower(), v) for k, v in rec["headers"])["authorization"]
            doc = json.loads(rec["body"])
            for im in doc.get("impactMetrics", []):
                if im["name"] != "soak_events":
                    impact_extra.append(im["name"])
                    continue
                for smp in im["samples"]:
                    k = (token, smp["labels"]["appName"], smp["labels"]["poster"])
                    impact_got[k] = impact_got.get(k, 0) + smp["value"]
            for m in doc["metrics"]:
                e = got.setdefault((token, m["appName"], m["featureName"]), [0, 0, {}])
                e[0] += m["yes"]
                e[1] += m["no"]
                for v, c in m["variants"].items():
                    e[2][v] = e[2].get(v, 0) + c
        # Variants with 0 are never posted by us; drop empty maps for comparison.
        ledger = {k: [v[0], v[1], {n: c for n, c in v[2].items() if c}] for k, v in self.ledger.items()}
        got = {k: [v[0], v[1], {n: c for n, c in v[2].items() if c}] for k, v in got.items()}
        ledger = {k: v for k, v in ledger.items() if v != [0, 0, {}]}
        missing = [k for k in ledger if got.get(k) != ledger[k]]
        extra = [k for k in got if k not in ledger]

        warm = [s for s in samples if s[0] >= min(10, self.a.seconds / 4)] or samples
        rss_start, rss_end = warm[0][1], samples[-1][1]
        rss_max = max(s[1] for s in samples)
        print(f"soak: {self.a.seconds}s, {self.a.posters} good posters (TCP and Unix), 4 abusers, 1 slow drip, "
              f"{self.a.drip_rate:g} never-finishing connections a second, upstream flapping; [listen] defaults")
        for k in sorted(self.counts):
            print(f"  {k}: {self.counts[k]}")
        print(f"  merge keys checked: {len(ledger)}; mismatched: {len(missing)}; unexpected: {len(extra)}")
        print(f"  impact series checked: {len(self.impact)}; mismatched: "
              f"{sum(1 for k in self.impact if impact_got.get(k) != self.impact[k])}; unexpected: {len(impact_extra)}")
        print(f"  upstream requests recorded: {len(self.upstream_records)}")
        print(f"  resident memory: {rss_start} KiB after warm-up, {rss_end} KiB at the end, {rss_max} KiB peak")
        print(f"  open descriptors: {fds_start} at start, {fds_end} after the clients left")
        print(f"  /healthz: slowest answer {self.health_max * 1000:.0f} ms")
        print(f"  proxy exit status: {code}")
        def sample(name):
            for line in metrics_text.splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
            return -1
        pauses = sample('metrics_proxy_accept_pauses_total{reason="max_connections"}')
        cut = sample('metrics_proxy_connections_shed_total{reason="min_rate"}')
        timed_out = sample("metrics_proxy_requests_timed_out_total")
        print(f"  never-finishing connections cut off by min_rate: {cut:.0f}; by request_timeout: {timed_out:.0f}; "
              f"accept paused at the cap: {pauses:.0f} times")
        ok = True
        checks = [("/healthz answered within 1 s every time", self.health_max < 1.0),
                  ("accept never paused at the cap", pauses == 0),("every good post's counts arrived exactly", not missing and not extra),
                  ("every impact counter arrived exactly, no bad metric with it",
                   impact_got == self.impact and not impact_extra and len(self.impact) > 0),
                  ("every answer as expected", not self.failures)]
        if self.a.sanitized:
            print("  (resident memory not checked: an instrumented binary's figure is the sanitizer's quarantine)")
        else:
            checks.append(("resident memory flat (end within 16 MiB of after warm-up)", rss_end - rss_start < 16 * 1024))
        for what, cond in checks + [
                           ("no descriptor leaked", fds_end <= fds_start),
                           ("clean exit after the drain", code == 0),
                           ("good posts made", self.counts.get("good posts", 0) > 0)]:
            print(f"  {'ok  ' if cond else 'FAIL'} {what}")
            ok = ok and cond
        for f in self.failures[:20]:
            print(f"    {f}")
        for k in missing[:5]:
            print(f"    {k}: posted {ledger[k]}, upstream {got.get(k)}")
        if not ok:
            print("  proxy log: " + self.log_path)
        return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--posters", type=int, default=16)
    ap.add_argument("--drip-rate", type=float, default=40, help="never-finishing connections opened a second")
    ap.add_argument("--sanitized", action="store_true", help="the binary is built with a sanitizer: skip the memory check")
    ap.add_argument("--fake", default=os.path.join(os.path.dirname(__file__), "..", "Fixtures", "fake_upstream.py"))
    sys.exit(Run(ap.parse_args()).main())
