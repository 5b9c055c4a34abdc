#!/usr/bin/env python3
"""Drive the real Python Unleash SDK (UnleashClient 6.9.1 from PyPI) for end-to-end tests.

Usage:
    python3 sdk_app.py --url http://127.0.0.1:PORT/api --app-name APP \
        --instance-id ID --token TOKEN --evaluations N \
        --metrics-interval SECONDS --out RESULT.json \
        [--refresh-interval S] [--duration S] [--init-timeout S] [--impact]

What it does:
  1. Builds one UnleashClient (registration on, polling mode, its own temporary
     cache directory) and calls initialize_client(). It then waits until the
     engine knows "flag-on". The wait uses client.feature_definitions(), which
     does not count anything, so the wait adds nothing to the metrics.
     If the features have not arrived by --init-timeout (15 s), it exits 2.
  2. Runs N rounds, paced evenly over --duration seconds (default: 2.5 metric
     intervals, so the SDK's own scheduler posts metrics at least twice while
     the rounds run). Each round i (0-based) calls:
         is_enabled("flag-on")
         is_enabled("flag-off")
         is_enabled("flag-gradual", {"userId": str(i)})
         get_variant("flag-variants", {"userId": str(i)})
         is_enabled("flag-unknown")
     With --impact, each round also records impact metrics through the SDK's
     client.impact_metrics (yggdrasil counts them; the SDK posts them in
     "impactMetrics" beside the flag counts):
         increment_counter("checkouts", 1 + i % 3, flag context "flag-variants")
         increment_counter("checkouts", 1)
         update_gauge("inflight_<instance id>", i / 2)
         observe_histogram("latency_ms", (7 * i) % 130 + 0.5)   buckets 10, 50, 100
     The flag context resolves to a label "flag-variants": <variant> without
     counting a flag evaluation (yggdrasil's check_variant).
  3. Calls client.destroy(). That flushes the last partial bucket in the calling
     thread, then shuts the scheduler down and waits for any running job, so
     every metric post has finished when destroy() returns.
  4. Writes the result JSON to --out and exits 0.

How it counts (UnleashClient 6.9.1 with yggdrasil-engine; the counting is done
in yggdrasil_engine/engine.py, the SDK's own code does none):
  - UnleashEngine.is_enabled(): count_toggle(name, is_enabled) with the value it
    returns. true counts one "yes", false one "no". An unknown flag is false, so
    it counts one "no", and the name shows up in the bucket.
  - UnleashEngine.get_variant(): count_toggle(name, variant.feature_enabled) and
    count_variant(name, variant.name). An enabled flag counts "yes" plus its
    variant; a disabled or unknown flag counts "no" plus the variant "disabled";
    an enabled flag without variants counts "yes" plus "disabled".
  This script counts the same way, from the values the SDK returned.

Result JSON:
  {"app": APP, "instance": ID,
   "counts": {flag: {"yes": n, "no": n, "variants": {name: n}}},
   "metric_posts": K,              # metric POSTs the SDK attempted
   "metric_statuses": [202, ...],  # HTTP status of each one (null: no answer)
   "metric_posts_accepted": n,     # how many were answered 202
   "final_post_on_destroy": bool,  # whether destroy() posted a last bucket
   "register_posts": n, "feature_fetches": n,
   "rounds": N, "elapsed": seconds,
   "impact": {"counters": [{"name", "labels", "value"}], "gauges": [{"name", "labels", "value"}],
              "histograms": [{"name", "labels", "count", "sum", "buckets": {"10.0": n, ..., "+Inf": n}}]}}
  ("impact" only with --impact: what was recorded, summed per label set; a gauge's
  last value.) The impact metrics on the wire are added up too, and checked against
  what was recorded, as the flag counts are.

The HTTP observation wraps requests.Session.request in this process. It calls
the original with the same arguments, so nothing sent changes. It also adds up
the bucket.toggles of every metric body the SDK sent and checks the sum against
"counts". If they differ, the SDK did not send what it counted. The JSON is
still written, with "wire_counts" added, and the script exits 3.

Exit codes: 0 ok; 2 no features within --init-timeout; 3 the metrics on the
wire do not match the counts; 1 any other error (bad arguments, SDK missing).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time

FLAG_ON = "flag-on"
FLAG_OFF = "flag-off"
FLAG_GRADUAL = "flag-gradual"
FLAG_VARIANTS = "flag-variants"
FLAG_UNKNOWN = "flag-unknown"

METRICS_SUFFIX = "/client/metrics"
REGISTER_SUFFIX = "/client/register"
FEATURES_SUFFIX = "/client/features"


class Observer:
    """Watches every HTTP request this process makes via requests. It only observes and never changes a request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.metric_statuses: list = []
        self.metric_threads: list = []
        self.wire_counts: dict = {}
        self.wire_impact = ImpactLedger()
        self.register_posts = 0
        self.feature_fetches = 0
        self.destroying = False
        self.posts_during_destroy = 0
        self._orig = None

    def install(self) -> None:
        import requests

        orig = requests.Session.request
        self._orig = orig
        observer = self

        def request(session, method, url, *args, **kwargs):
            path = str(url).split("?", 1)[0].rstrip("/")
            m = str(method).upper()
            is_metrics = m == "POST" and path.endswith(METRICS_SUFFIX)
            slot = None
            if is_metrics:
                observer._add_wire(kwargs.get("data"))
                with observer.lock:
                    slot = len(observer.metric_statuses)
                    observer.metric_statuses.append(None)
                    if observer.destroying:
                        observer.posts_during_destroy += 1
            elif m == "POST" and path.endswith(REGISTER_SUFFIX):
                with observer.lock:
                    observer.register_posts += 1
            elif m == "GET" and path.endswith(FEATURES_SUFFIX):
                with observer.lock:
                    observer.feature_fetches += 1
            resp = orig(session, method, url, *args, **kwargs)
            if slot is not None:
                with observer.lock:
                    observer.metric_statuses[slot] = resp.status_code
            return resp

        requests.Session.request = request

    def _add_wire(self, data) -> None:
        if data is None:
            return
        if isinstance(data, (bytes, bytearray)):
            data = data.decode("utf-8")
        try:
            body = json.loads(data)
        except (TypeError, ValueError):
            return
        if isinstance(body, dict) and isinstance(body.get("impactMetrics"), list):
            with self.lock:
                for m in body["impactMetrics"]:
                    for smp in m.get("samples") or []:
                        labels = smp.get("labels") or {}
                        if m["type"] == "counter":
                            self.wire_impact.count(m["name"], labels, smp["value"])
                        elif m["type"] == "gauge":
                            self.wire_impact.gauge(m["name"], labels, smp["value"])
                        elif m["type"] == "histogram":
                            self.wire_impact.histogram(m["name"], labels, smp)
        bucket = body.get("bucket") if isinstance(body, dict) else None
        toggles = (bucket or {}).get("toggles") or {}
        with self.lock:
            for name, t in toggles.items():
                slot = self.wire_counts.setdefault(name, {"yes": 0, "no": 0, "variants": {}})
                slot["yes"] += int(t.get("yes", 0) or 0)
                slot["no"] += int(t.get("no", 0) or 0)
                for vname, n in (t.get("variants") or {}).items():
                    slot["variants"][vname] = slot["variants"].get(vname, 0) + int(n)


class ImpactLedger:
    """Impact metrics summed per (name, label set): counters added, a gauge's last value,
    histograms' count, sum and cumulative buckets added."""

    HISTOGRAM_BOUNDS = [10.0, 50.0, 100.0]

    def __init__(self) -> None:
        self.counters: dict = {}
        self.gauges: dict = {}
        self.histograms: dict = {}

    @staticmethod
    def key(name: str, labels: dict) -> tuple:
        return name, json.dumps(labels, sort_keys=True)

    def count(self, name: str, labels: dict, value) -> None:
        k = self.key(name, labels)
        self.counters[k] = self.counters.get(k, 0) + value

    def gauge(self, name: str, labels: dict, value) -> None:
        self.gauges[self.key(name, labels)] = value

    def observe(self, name: str, labels: dict, value: float) -> None:
        h = self.histograms.setdefault(self.key(name, labels), {"count": 0, "sum": 0.0, "buckets": {}})
        h["count"] += 1
        h["sum"] += value
        for le in self.HISTOGRAM_BOUNDS + ["+Inf"]:
            if le == "+Inf" or value <= le:
                k = "+Inf" if le == "+Inf" else repr(float(le))
                h["buckets"][k] = h["buckets"].get(k, 0) + 1

    def histogram(self, name: str, labels: dict, sample: dict) -> None:
        h = self.histograms.setdefault(self.key(name, labels), {"count": 0, "sum": 0.0, "buckets": {}})
        h["count"] += sample["count"]
        h["sum"] += sample["sum"]
        for b in sample["buckets"]:
            k = "+Inf" if b["le"] == "+Inf" else repr(float(b["le"]))
            h["buckets"][k] = h["buckets"].get(k, 0) + b["count"]

    def as_json(self) -> dict:
        def rows(d, fields):
            return [dict(name=k[0], labels=json.loads(k[1]), **fields(v)) for k, v in sorted(d.items())]
        # Zero samples (a defined metric with no activity) carry nothing to compare.
        return {"counters": rows({k: v for k, v in self.counters.items() if v}, lambda v: {"value": v}),
                "gauges": rows(self.gauges, lambda v: {"value": v}),
                "histograms": rows({k: v for k, v in self.histograms.items() if v["count"]},
                                   lambda v: {"count": v["count"], "sum": round(v["sum"], 6),
                                              "buckets": {b: n for b, n in v["buckets"].items() if n}})}


def _slot(counts: dict, name: str) -> dict:
    return counts.setdefault(name, {"yes": 0, "no": 0, "variants": {}})


def count_enabled(counts: dict, name: str, enabled: bool) -> None:
    _slot(counts, name)["yes" if enabled else "no"] += 1


def count_variant(counts: dict, name: str, variant: dict) -> None:
    slot = _slot(counts, name)
    slot["yes" if variant.get("feature_enabled") else "no"] += 1
    vname = variant.get("name", "")
    slot["variants"][vname] = slot["variants"].get(vname, 0) + 1


def normalized(counts: dict) -> dict:
    """Drop empty entries so two count maps can be compared."""
    out = {}
    for name, t in counts.items():
        variants = {k: v for k, v in t.get("variants", {}).items() if v}
        if t.get("yes", 0) or t.get("no", 0) or variants:
            out[name] = {"yes": t.get("yes", 0), "no": t.get("no", 0), "variants": variants}
    return out


def write_json(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def positive_int(text: str) -> int:
    v = float(text)
    if v < 1 or v != int(v):
        raise argparse.ArgumentTypeError("must be a whole number of seconds >= 1 "
                                         "(the SDK schedules with int seconds)")
    return int(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="Unleash API base, e.g. http://127.0.0.1:PORT/api")
    ap.add_argument("--app-name", required=True)
    ap.add_argument("--instance-id", required=True)
    ap.add_argument("--token", required=True, help="sent as the Authorization header")
    ap.add_argument("--evaluations", type=int, required=True, help="number of rounds N")
    ap.add_argument("--metrics-interval", type=positive_int, required=True)
    ap.add_argument("--refresh-interval", type=positive_int, default=1,
                    help="feature poll interval in seconds (default 1)")
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds to spread the rounds over (default 2.5 x metrics interval)")
    ap.add_argument("--init-timeout", type=float, default=15.0,
                    help="seconds to wait for the features (default 15)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--impact", action="store_true", help="also record impact metrics each round")
    args = ap.parse_args(argv)
    if args.evaluations < 0:
        ap.error("--evaluations must be >= 0")

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="sdk_app[%(process)d] %(levelname)s %(name)s: %(message)s")

    observer = Observer()
    observer.install()  # before the SDK makes any request

    try:
        from UnleashClient import UnleashClient
        from UnleashClient.utils import InstanceAllowType
        from UnleashClient.impact_metrics import MetricFlagContext
    except ImportError as e:
        print(f"sdk_app: UnleashClient is not installed ({e}); "
              "pip install UnleashClient==6.9.1", file=sys.stderr)
        return 1

    cache_dir = tempfile.mkdtemp(prefix="sdk_app_cache_")
    client = None
    try:
        client = UnleashClient(
            url=args.url,
            app_name=args.app_name,
            instance_id=args.instance_id,
            custom_headers={"Authorization": args.token},
            metrics_interval=args.metrics_interval,
            refresh_interval=args.refresh_interval,
            disable_metrics=False,
            disable_registration=False,
            cache_directory=cache_dir,
            request_timeout=10,
            multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW,
        )
        # Registers, fetches the features once (synchronously), then starts
        # the scheduler: feature polls every refresh interval, metrics every
        # metrics interval.
        client.initialize_client()

        deadline = time.monotonic() + args.init_timeout
        while FLAG_ON not in client.feature_definitions():
            if time.monotonic() >= deadline:
                print(f"sdk_app: features never arrived from {args.url} within "
                      f"{args.init_timeout:g} s (no '{FLAG_ON}' in the SDK's feature "
                      f"definitions; {observer.feature_fetches} fetch attempt(s))",
                      file=sys.stderr)
                client.destroy()
                client = None
                return 2
            time.sleep(0.05)

        counts: dict = {}
        recorded = ImpactLedger()
        gauge = "inflight_" + args.instance_id.replace("-", "_")
        if args.impact:
            im = client.impact_metrics
            im.define_counter("checkouts", "Completed checkouts")
            im.define_gauge(gauge, "Requests in flight")
            im.define_histogram("latency_ms", "Checkout latency", ImpactLedger.HISTOGRAM_BOUNDS)
        n = args.evaluations
        duration = args.duration if args.duration is not None else 2.5 * args.metrics_interval
        step = duration / n if n else 0.0
        t0 = time.monotonic()
        for i in range(n):
            target = t0 + i * step
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            user = {"userId": str(i)}
            count_enabled(counts, FLAG_ON, client.is_enabled(FLAG_ON))
            count_enabled(counts, FLAG_OFF, client.is_enabled(FLAG_OFF))
            count_enabled(counts, FLAG_GRADUAL, client.is_enabled(FLAG_GRADUAL, user))
            count_variant(counts, FLAG_VARIANTS, client.get_variant(FLAG_VARIANTS, user))
            count_enabled(counts, FLAG_UNKNOWN, client.is_enabled(FLAG_UNKNOWN))
            if args.impact:
                ctx = MetricFlagContext(flag_names=[FLAG_VARIANTS], context=user)
                # The labels the SDK attaches, resolved the way it resolves them.
                flagged = im._resolve_labels(ctx)
                plain = im._resolve_labels(None)
                im.increment_counter("checkouts", 1 + i % 3, flag_context=ctx)
                recorded.count("checkouts", flagged, 1 + i % 3)
                im.increment_counter("checkouts", 1)
                recorded.count("checkouts", plain, 1)
                im.update_gauge(gauge, i / 2)
                recorded.gauge(gauge, plain, i / 2)
                im.observe_histogram("latency_ms", (7 * i) % 130 + 0.5)
                recorded.observe("latency_ms", plain, (7 * i) % 130 + 0.5)
        elapsed = time.monotonic() - t0

        # destroy() flushes the last bucket in this thread, then waits for the
        # scheduler (and any flush it is running) to finish.
        with observer.lock:
            observer.destroying = True
        client.destroy()
        client = None
        with observer.lock:
            observer.destroying = False

        with observer.lock:
            statuses = list(observer.metric_statuses)
            wire = normalized(observer.wire_counts)
            result = {
                "app": args.app_name,
                "instance": args.instance_id,
                "counts": counts,
                "metric_posts": len(statuses),
                "metric_statuses": statuses,
                "metric_posts_accepted": sum(1 for s in statuses if s == 202),
                "final_post_on_destroy": observer.posts_during_destroy > 0,
                "register_posts": observer.register_posts,
                "feature_fetches": observer.feature_fetches,
                "rounds": n,
                "elapsed": round(elapsed, 3),
            }
            if args.impact:
                result["impact"] = recorded.as_json()
                wire_impact = observer.wire_impact.as_json()
        # What went over the wire must add up to what was counted (or recorded).
        checks = [("wire_counts", "metric bodies", normalized(counts), wire)]
        if args.impact:
            checks.append(("wire_impact", "impact metrics", result["impact"], wire_impact))
        for key, what, counted, sent in checks:
            if sent != counted:
                result[key] = sent
                write_json(args.out, result)
                print(f"sdk_app: the {what} the SDK sent do not add up to what it counted:\n"
                      f"  counted: {json.dumps(counted, sort_keys=True)}\n"
                      f"  sent:    {json.dumps(sent, sort_keys=True)}", file=sys.stderr)
                return 3
        write_json(args.out, result)
        return 0
    finally:
        if client is not None:
            try:
                client.destroy()
            except Exception:  # noqa: BLE001 - best effort on the error path
                pass
        shutil.rmtree(cache_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
