"""Writes realistic metric posts for the benchmark: one file per size (20, 50 and 200 toggles,
a third of them with variants), each line `token<TAB>body`, over several apps and tokens so
that merging does real work. Usage: bodies.py OUTDIR"""
import json
import os
import random
import sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = random.Random(7)
tokens = ["default:development.bench-token-a", "default:production.bench-token-b", "shop:development.bench-token-c"]
apps = ["checkout", "search", "cart", "payments", "profile"]
for size in (20, 50, 200):
    with open(os.path.join(out, f"bodies-{size}.tsv"), "w") as f:
        for i in range(64):
            toggles = {}
            for t in range(size):
                yes = rng.randint(0, 40)
                entry = {"yes": yes, "no": rng.randint(0, 40), "variants": {}}
                if t % 3 == 0:
                    entry["variants"] = {"control": yes // 2, "treatment-blue": yes - yes // 2}
                toggles[f"feature.{apps[i % len(apps)]}.flag-{t:03d}"] = entry
            body = {"appName": apps[i % len(apps)], "instanceId": f"{apps[i % len(apps)]}-pod-{i:02d}",
                    "connectionId": f"8a6c1f2e-0000-4000-8000-{i:012d}", "platformName": "CPython",
                    "platformVersion": "3.11.7", "yggdrasilVersion": "0.20.8", "specVersion": "6.1.0",
                    "bucket": {"start": "2026-11-28T10:00:00.268519247Z", "stop": "2026-11-28T10:00:59.268519247Z",
                               "toggles": toggles}}
            f.write(tokens[i % len(tokens)] + "\t" + json.dumps(body) + "\n")
    sizes = [len(l.split("\t", 1)[1]) for l in open(os.path.join(out, f"bodies-{size}.tsv"))]
    print(f"bodies-{size}.tsv: 64 bodies, {sum(sizes) // len(sizes)} bytes on average")
# The 50-toggle posts with each post's toggles in an order of its own, as an SDK sends them
# that keeps no order (Go's maps); the others keep one order per app, as the Python SDK does.
with open(os.path.join(out, "bodies-50-shuffled.tsv"), "w") as f:
    for line in open(os.path.join(out, "bodies-50.tsv")):
        token, body = line.rstrip("\n").split("\t", 1)
        post = json.loads(body)
        toggles = list(post["bucket"]["toggles"].items())
        rng.shuffle(toggles)
        post["bucket"]["toggles"] = dict(toggles)
        f.write(token + "\t" + json.dumps(post) + "\n")
print("bodies-50-shuffled.tsv: the same, each post's toggles in its own order")
# The 50-toggle posts with the impact metrics the Python SDK sends beside them: a counter with
# and without a flag-context label, a gauge, and a histogram on the default buckets (labels in
# the SDK's unstable key order).
bounds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
with open(os.path.join(out, "bodies-50-impact.tsv"), "w") as f:
    for line in open(os.path.join(out, "bodies-50.tsv")):
        token, body = line.rstrip("\n").split("\t", 1)
        post = json.loads(body)
        app = post["appName"]
        env = token.split(":")[1].split(".")[0]
        plain = {"appName": app, "environment": env}
        flagged = [dict(plain, **{"checkout.v2": v}) for v in ("blue", "green")]
        rng.shuffle(flagged)
        cumulative, n = [], 0
        for _ in bounds:
            n += rng.randint(0, 20)
            cumulative.append(n)
        post["impactMetrics"] = [
            {"name": "checkouts", "help": "Completed checkouts", "type": "counter",
             "samples": [{"labels": plain, "value": rng.randint(1, 200)}] +
                        [{"labels": l, "value": rng.randint(1, 200)} for l in flagged]},
            {"name": "queue_depth", "help": "Jobs waiting", "type": "gauge",
             "samples": [{"labels": {"environment": env, "appName": app}, "value": float(rng.randint(0, 500))}]},
            {"name": "latency_seconds", "help": "Checkout latency", "type": "histogram",
             "samples": [{"labels": plain, "count": n + 3, "sum": round(rng.uniform(1, 90), 3),
                          "buckets": [{"le": b, "count": c} for b, c in zip(bounds, cumulative)] +
                                     [{"le": "+Inf", "count": n + 3}]}]},
        ]
        f.write(token + "\t" + json.dumps(post) + "\n")
sizes = [len(l.split("\t", 1)[1]) for l in open(os.path.join(out, "bodies-50-impact.tsv"))]
print(f"bodies-50-impact.tsv: the 50-toggle bodies plus a counter, a gauge and a histogram, {sum(sizes) // len(sizes)} bytes on average")
