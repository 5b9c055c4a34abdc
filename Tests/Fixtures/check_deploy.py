"""Checks that deploy/ parses and agrees with proxy.conf and with the metrics the proxy
exposes. Usage:
  check_deploy.py --deploy DIR --conf proxy.conf --metrics SCRAPE.txt [--extract-configmap OUT]
Prints one line per problem and exits 1 if there is any."""
import argparse
import json
import os
import re
import sys

import yaml

problems = []


def problem(text):
    problems.append(text)


def conf_entries(text):
    """(section, key) -> value of an INI-style proxy.conf, comments stripped."""
    out, section = {}, ""
    for raw in text.splitlines():
        line = re.split(r"(?:^|\s)[#;]", raw, maxsplit=1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            section = line.strip("[]").strip().lower()
            continue
        key, _, value = line.partition("=")
        out[(section, key.strip().lower())] = value.strip()
    return out


def env_default(value):
    m = re.fullmatch(r"\$\{(\w+)(?::-(.*))?\}", value)
    return (m.group(1), m.group(2)) if m else (None, value)


def seconds(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?", text)
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[m.group(2)]
    return float(m.group(1)) * scale


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--deploy", required=True)
    ap.add_argument("--conf", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--extract-configmap")
    a = ap.parse_args()
    repo_conf_text = open(a.conf).read()
    repo = conf_entries(repo_conf_text)
    repo_keys = set(repo)
    env_names = set(re.findall(r"\$\{(\w+)", repo_conf_text))
    default_port = env_default(repo[("listen", "tcp")])[1].rsplit(":", 1)[1]
    default_drain = seconds(repo[("upstream", "drain_timeout")])

    # Kubernetes.
    docs = list(yaml.safe_load_all(open(os.path.join(a.deploy, "kubernetes", "metrics-proxy-sidecar.yaml"))))
    cm = next((d for d in docs if d and d.get("kind") == "ConfigMap"), None)
    dep = next((d for d in docs if d and d.get("kind") == "Deployment"), None)
    if not cm or "proxy.conf" not in cm.get("data", {}):
        problem("kubernetes: no ConfigMap with proxy.conf")
        return
    if not dep:
        problem("kubernetes: no Deployment")
        return
    if a.extract_configmap:
        open(a.extract_configmap, "w").write(cm["data"]["proxy.conf"])
    conf = conf_entries(cm["data"]["proxy.conf"])
    for key in conf:
        if key not in repo_keys:
            problem(f"kubernetes: ConfigMap sets [{key[0]}] {key[1]}, which proxy.conf does not document")
    port = int(conf[("listen", "tcp")].rsplit(":", 1)[1])
    sock = conf[("listen", "unix")]
    spool = conf[("spool", "dir")]
    drain = seconds(conf.get(("upstream", "drain_timeout"), "10s"))
    spec = dep["spec"]["template"]["spec"]
    sidecars = [c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    if len(sidecars) != 1:
        problem("kubernetes: expected one native sidecar (init container with restartPolicy: Always)")
        return
    side = sidecars[0]
    if port not in [p["containerPort"] for p in side.get("ports", [])]:
        problem(f"kubernetes: sidecar does not expose the listen port {port}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = side.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") != port:
            problem(f"kubernetes: {probe} should be GET {path} on port {port}, is {get}")
    mounts = {m["mountPath"]: m["name"] for m in side.get("volumeMounts", [])}
    # The socket sits in a directory the proxy creates inside the shared volume (an emptyDir
    # is writable by everyone, which the proxy refuses for the socket's own directory).
    sock_dir = os.path.dirname(sock)
    sock_vol = mounts.get(os.path.dirname(sock_dir))
    if not sock_vol:
        problem(f"kubernetes: the socket's parent directory {os.path.dirname(sock_dir)} is not a sidecar volume")
    elif sock_dir in mounts:
        problem(f"kubernetes: the socket directory {sock_dir} is itself a volume (world-writable); put it one level below")
    spool_vol = next((n for p, n in mounts.items() if spool.startswith(p.rstrip("/") + "/") or spool == p), None)
    if not spool_vol:
        problem(f"kubernetes: the spool {spool} is not on a sidecar volume")
    elif spool_vol == sock_vol:
        problem("kubernetes: the spool must be on its own volume, not the socket's")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    if sock_vol and "emptyDir" not in volumes.get(sock_vol, {}):
        problem("kubernetes: the socket volume should be an emptyDir shared with the app")
    apps = spec.get("containers", [])
    if sock_vol and not any(sock_vol in [m["name"] for m in c.get("volumeMounts", [])] for c in apps):
        problem("kubernetes: no app container mounts the socket volume")
    args = side.get("args", [])
    cfg = args[args.index("--config") + 1] if "--config" in args else "./proxy.conf"
    cfg_vol = mounts.get(os.path.dirname(cfg))
    if not cfg_vol or "configMap" not in volumes.get(cfg_vol, {}) or volumes[cfg_vol]["configMap"]["name"] != cm["metadata"]["name"]:
        problem(f"kubernetes: --config {cfg} is not the ConfigMap's proxy.conf")
    env = {e["name"]: e for e in side.get("env", [])}
    used_env = set(re.findall(r"\$\{(\w+)", cm["data"]["proxy.conf"])) | {"UNLEASH_TOKEN"} & env_names
    for name in used_env:
        if name not in env:
            problem(f"kubernetes: the sidecar does not set {name}")
    if "secretKeyRef" not in env.get("UNLEASH_TOKEN", {}).get("valueFrom", {}):
        problem("kubernetes: UNLEASH_TOKEN must come from a Secret")
    res = side.get("resources", {})
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in res.get(kind, {}):
                problem(f"kubernetes: sidecar has no {kind}.{r}")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace < drain + 10:
        problem(f"kubernetes: terminationGracePeriodSeconds {grace} does not cover drain_timeout {drain}s")
    app_urls = [e.get("value", "") for c in apps for e in c.get("env", []) if e["name"] == "UNLEASH_URL"]
    if not any(f"127.0.0.1:{port}/api" in u for u in app_urls):
        problem(f"kubernetes: the app's UNLEASH_URL should be http://127.0.0.1:{port}/api")
    annotations = dep["spec"]["template"]["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/port") not in (None, str(port)) or annotations.get("prometheus.io/path") not in (None, "/metrics"):
        problem("kubernetes: the scrape annotations disagree with the port or /metrics")

    # Dockerfile.
    docker = open(os.path.join(a.deploy, "Dockerfile")).read()
    froms = re.findall(r"^FROM\s+(\S+)", docker, re.M)
    if len(froms) < 2:
        problem("Dockerfile: not multi-stage")
    elif "slim" not in froms[-1]:
        problem(f"Dockerfile: the run stage should be a slim Debian, is {froms[-1]}")
    users = re.findall(r"^USER\s+(\S+)", docker, re.M)
    if not users or users[-1].split(":")[0] in ("0", "root"):
        problem("Dockerfile: does not run as a non-root user")
    if default_port not in re.findall(r"^EXPOSE\s+(\d+)", docker, re.M):
        problem(f"Dockerfile: does not EXPOSE {default_port}")
    for name in re.findall(r"\b(METRICS_PROXY_\w+)=", docker):
        if name not in env_names:
            problem(f"Dockerfile: sets {name}, which proxy.conf does not read")
    listen = re.search(r"METRICS_PROXY_LISTEN=\S+:(\d+)", docker)
    if listen and listen.group(1) != default_port:
        problem("Dockerfile: METRICS_PROXY_LISTEN port differs from EXPOSE")
    side_uid = side.get("securityContext", {}).get("runAsUser")
    if users and side_uid is not None and str(side_uid) != users[-1].split(":")[0]:
        problem("kubernetes: runAsUser differs from the image's USER")

    # systemd.
    unit = {}
    for line in open(os.path.join(a.deploy, "systemd", "metrics-proxy.service")):
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, _, v = line.partition("=")
            unit.setdefault(k, []).append(v)
    def one(k):
        return (unit.get(k) or [""])[-1]
    for k, v in (("DynamicUser", "yes"), ("ProtectSystem", "strict")):
        if one(k) != v:
            problem(f"systemd: {k}={v} expected")
    envs = dict(e.split("=", 1) for e in unit.get("Environment", []))
    state, runtime = one("StateDirectory"), one("RuntimeDirectory")
    if not state or not envs.get("METRICS_PROXY_SPOOL", "").startswith(f"/var/lib/{state}/"):
        problem("systemd: the spool must be in the StateDirectory")
    if not runtime or not envs.get("METRICS_PROXY_SOCKET", "").startswith(f"/run/{runtime}/"):
        problem("systemd: the socket must be in the RuntimeDirectory")
    for name in envs:
        if name not in env_names:
            problem(f"systemd: sets {name}, which proxy.conf does not read")
    if "--config" not in one("ExecStart"):
        problem("systemd: ExecStart without --config")
    if "-HUP" not in one("ExecReload"):
        problem("systemd: ExecReload should send SIGHUP")
    if seconds(one("TimeoutStopSec") or "90") < default_drain + 5:
        problem("systemd: TimeoutStopSec does not cover drain_timeout")

    # Grafana.
    dash = json.load(open(os.path.join(a.deploy, "grafana", "metrics-proxy-dashboard.json")))
    scrape = open(a.metrics).read()
    exposed = set(re.findall(r"^(metrics_proxy_\w+)", scrape, re.M))
    for name, kind in re.findall(r"^# TYPE (metrics_proxy_\w+) (\w+)", scrape, re.M):
        exposed |= {name} | ({name + "_bucket", name + "_sum", name + "_count"} if kind == "histogram" else set())
    used = set()
    for p in dash.get("panels", []):
        for t in p.get("targets", []):
            used |= set(re.findall(r"metrics_proxy_\w+", t.get("expr", "")))
    for name in sorted(used - exposed):
        problem(f"grafana: {name} is not a metric the proxy exposes")
    for needed in ("metrics_proxy_posts_total", "metrics_proxy_upstream_requests_total",
                   "metrics_proxy_spool_batches", "metrics_proxy_spool_oldest_age_seconds"):
        if needed not in used:
            problem(f"grafana: no panel shows {needed}")


main()
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
