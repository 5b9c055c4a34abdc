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
