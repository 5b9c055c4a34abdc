"""Checks that deploy/ parses and agrees with proxy.conf and with the metrics the proxy
exposes, and validates every Kubernetes manifest in deploy/kubernetes/ against the Kubernetes
API schemas with kubernetes-validate (strict: unknown fields are errors). Usage:
  check_deploy.py --deploy DIR --conf proxy.conf --metrics SCRAPE.txt [--extract-configmap OUT]
                  [--extract-daemonset-configmap OUT] [--kubernetes-version 1.35]
--extract-configmap writes the sidecar's proxy.conf, --extract-daemonset-configmap the node
agent's. Prints one line per problem and exits 1 if there is any."""
import argparse
import glob
import json
import os
import re
import sys
from urllib.parse import unquote, urlparse

import yaml

# The Kubernetes version the manifests are validated against (kubernetes-validate bundles
# the schemas of several; 1.35 is recent and widely run, and has native sidecars, 1.29+).
KUBERNETES_VERSION = "1.35"

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


def check_sidecar(a, repo_keys, env_names):
    """deploy/kubernetes/metrics-proxy-sidecar.yaml; returns the sidecar container."""
    docs = list(yaml.safe_load_all(open(os.path.join(a.deploy, "kubernetes", "metrics-proxy-sidecar.yaml"))))
    cm = next((d for d in docs if d and d.get("kind") == "ConfigMap"), None)
    dep = next((d for d in docs if d and d.get("kind") == "Deployment"), None)
    if not cm or "proxy.conf" not in cm.get("data", {}):
        problem("kubernetes: no ConfigMap with proxy.conf")
        return None
    if not dep:
        problem("kubernetes: no Deployment")
        return None
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
        return None
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
    return side


DAEMONSET = "metrics-proxy-daemonset.yaml"


def load_manifest(path, label):
    """The documents of a multi-document YAML file, or None (a problem) if it does not parse."""
    try:
        with open(path) as f:
            return [d for d in yaml.safe_load_all(f) if d]
    except (OSError, yaml.YAMLError) as e:
        problem(f"{label}: cannot read {path}: {e}")
        return None


def mount_of(path, mounts):
    """(mountPath, volume name) of the mount that holds `path`, the deepest one; or (None, None)."""
    best = (None, None)
    for mount_path, name in mounts.items():
        root = mount_path.rstrip("/") or "/"
        if path == root or path.startswith(root.rstrip("/") + "/"):
            if best[0] is None or len(root) > len(best[0]):
                best = (root, name)
    return best


def container_port(container, port):
    """A probe's or a Service's port (number or port name) as the container's port number."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p.get("containerPort")
    return port


def shell_ops(container, command):
    """path -> the arguments of each `chown U[:G] PATH` / `chmod MODE PATH` in its command."""
    text = " ".join(str(x) for x in container.get("command", []) + container.get("args", []))
    word = r"(?:\s+-\S+)*\s+(\S+)\s+(\S+?)/?(?=[\s;&|]|$)"
    return {path.rstrip("/") or "/": arg for arg, path in re.findall(command + word, text)}


def may(uid, gids, owner, group, mode, bit):
    """Whether a process of uid and gids has permission `bit` (4 r, 2 w, 1 x) on a file."""
    if uid == owner:
        return bool(mode & (bit << 6))
    if group in gids:
        return bool(mode & (bit << 3))
    return bool(mode & bit)


def check_daemonset(a, repo_keys, env_names):
    """deploy/kubernetes/metrics-proxy-daemonset.yaml: the node agent, its Service and an
    example app on its socket. Returns the proxy container."""
    docs = load_manifest(os.path.join(a.deploy, "kubernetes", DAEMONSET), "kubernetes daemonset")
    if docs is None:
        return None
    def p(text):
        problem(f"kubernetes daemonset: {text}")
    def kinds(kind):
        return [d for d in docs if d.get("kind") == kind]
    cm = next((d for d in kinds("ConfigMap") if "proxy.conf" in (d.get("data") or {})), None)
    ds = next(iter(kinds("DaemonSet")), None)
    if not cm:
        p("no ConfigMap with proxy.conf")
        return None
    if not ds:
        p("no DaemonSet")
        return None
    if a.extract_daemonset_configmap:
        open(a.extract_daemonset_configmap, "w").write(cm["data"]["proxy.conf"])
    conf = conf_entries(cm["data"]["proxy.conf"])
    for key in conf:
        if key not in repo_keys:
            p(f"ConfigMap sets [{key[0]}] {key[1]}, which proxy.conf does not document")
    tcp = conf.get(("listen", "tcp"), "")
    if ":" not in tcp:
        p(f"ConfigMap's [listen] tcp should be 0.0.0.0:PORT (the Service and the probes come over TCP), is {tcp!r}")
        return None
    host, port = tcp.rsplit(":", 1)[0], int(tcp.rsplit(":", 1)[1])
    if host in ("127.0.0.1", "localhost", "[::1]"):
        p(f"[listen] tcp {tcp} is loopback: the Service and the kubelet's probes cannot reach it")
    sock = conf.get(("listen", "unix"), "off")
    if sock in ("off", ""):
        p("ConfigMap's [listen] unix is off: a node agent offers its socket to the node's pods")
        return None
    sock_dir = os.path.dirname(sock)
    try:
        unix_mode = int(conf.get(("listen", "unix_mode"), "0660"), 8)
    except ValueError:
        p(f"[listen] unix_mode {conf[('listen', 'unix_mode')]} is not octal")
        return None
    spool = conf.get(("spool", "dir"), "")
    journal = conf.get(("journal", "dir"), "auto")
    drain = seconds(conf.get(("upstream", "drain_timeout"), "10s"))

    # The DaemonSet and its proxy container.
    tmpl = ds.get("spec", {}).get("template", {})
    spec = tmpl.get("spec", {})
    strategy = ds.get("spec", {}).get("updateStrategy", {})
    rolling = strategy.get("rollingUpdate", {})
    if strategy.get("type", "RollingUpdate") != "RollingUpdate" or rolling.get("maxUnavailable") != 1:
        p(f"updateStrategy should be RollingUpdate with maxUnavailable 1, is {strategy}")
    if rolling.get("maxSurge") not in (None, 0, "0", "0%"):
        p("updateStrategy maxSurge must be 0: two proxies on a node would share the spool and journal")
    proxies = spec.get("containers", [])
    if len(proxies) != 1:
        p("expected one container, the proxy")
        return None
    proxy = proxies[0]
    if port not in [q.get("containerPort") for q in proxy.get("ports", [])]:
        p(f"the proxy does not expose the listen port {port}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = proxy.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or container_port(proxy, get.get("port")) != port:
            p(f"{probe} should be GET {path} on port {port}, is {get}")
    pod_sc = spec.get("securityContext", {})
    sc = proxy.get("securityContext", {})
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup", uid))
    if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) or uid in (None, 0):
        p("the proxy must run as a non-root user (runAsNonRoot and runAsUser)")
    if sc.get("readOnlyRootFilesystem") is not True:
        p("the proxy should have readOnlyRootFilesystem: true")
    if sc.get("allowPrivilegeEscalation") is not False:
        p("the proxy should have allowPrivilegeEscalation: false")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        p("the proxy should drop ALL capabilities")
    res = proxy.get("resources", {})
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in res.get(kind, {}):
                p(f"the proxy has no {kind}.{r}")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace < drain + 10:
        p(f"terminationGracePeriodSeconds {grace} does not cover drain_timeout {drain}s")
    env = {e["name"]: e for e in proxy.get("env", [])}
    used_env = set(re.findall(r"\$\{(\w+)", cm["data"]["proxy.conf"])) | {"UNLEASH_TOKEN"} & env_names
    for name in used_env:
        if name not in env:
            p(f"the proxy does not set {name}")
    if "secretKeyRef" not in env.get("UNLEASH_TOKEN", {}).get("valueFrom", {}):
        p("UNLEASH_TOKEN must come from a Secret")
    annotations = tmpl.get("metadata", {}).get("annotations", {})
    if annotations.get("prometheus.io/port") not in (None, str(port)) or annotations.get("prometheus.io/path") not in (None, "/metrics"):
        p("the scrape annotations disagree with the port or /metrics")

    # Volumes: the config from the ConfigMap; the socket's directory and the spool on hostPaths.
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in proxy.get("volumeMounts", [])}
    args = proxy.get("args", [])
    cfg = args[args.index("--config") + 1] if "--config" in args and args.index("--config") + 1 < len(args) else "./proxy.conf"
    cfg_vol = mounts.get(os.path.dirname(cfg))
    if not cfg_vol or volumes.get(cfg_vol, {}).get("configMap", {}).get("name") != cm["metadata"]["name"]:
        p(f"--config {cfg} is not the ConfigMap's proxy.conf")
    sock_root, sock_vol = mount_of(sock_dir, mounts)
    sock_host = volumes.get(sock_vol, {}).get("hostPath", {}).get("path")
    if not sock_host:
        p(f"the socket directory {sock_dir} is not on a hostPath volume")
    elif sock_root != sock_dir:
        p(f"the socket directory {sock_dir} should be the root of its hostPath volume ({sock_root}), prepared by the init container")
    spool_root, spool_vol = mount_of(spool, mounts)
    if "hostPath" not in volumes.get(spool_vol, {}):
        p(f"the spool {spool} is not on a hostPath volume: a restart of the proxy would lose it")
    elif spool_vol == sock_vol:
        p("the spool must be on its own hostPath, not the socket's")
    if journal.lower() == "off":
        p("[journal] dir is off: a restart of the proxy would lose the open window")
    elif journal.lower() != "auto" and "hostPath" not in volumes.get(mount_of(journal, mounts)[1], {}):
        p(f"the journal {journal} is not on a hostPath volume")

    # The init container makes the hostPath directories the proxy's, as it demands: the
    # socket's directory neither writable by others nor another user's (and writable by the
    # proxy, to create the socket); the spool's 0700.
    inits = [c for c in spec.get("initContainers", []) if c.get("restartPolicy") != "Always"]
    init = next((c for c in inits if {sock_vol, spool_vol} <= {m["name"] for m in c.get("volumeMounts", [])}), None)
    dir_owner = dir_group = dir_mode = None
    if not init:
        p("no init container mounts both the socket's and the spool's hostPath (the kubelet creates them root 0755)")
    else:
        if init.get("securityContext", {}).get("runAsUser") != 0:
            p(f"the init container {init['name']} must run as root (runAsUser: 0) to chown the hostPath directories")
        init_mounts = {m["name"]: m["mountPath"].rstrip("/") for m in init.get("volumeMounts", [])}
        chowns, chmods = shell_ops(init, r"\bchown"), shell_ops(init, r"\bchmod")
        caps = init.get("securityContext", {}).get("capabilities", {})
        if "ALL" in caps.get("drop", []):
            # chown; chmod of what root no longer owns; a setgid bit for a group root is not
            # in (without FSETID the kernel clears it silently, and the socket gets the wrong group).
            needed = {"CHOWN", "FOWNER"} | ({"FSETID"} if any(re.fullmatch(r"[2367][0-7]{3}", m) for m in chmods.values()) else set())
            for cap in sorted(needed - set(caps.get("add", []))):
                p(f"the init container drops ALL capabilities but does not add {cap} back")
        for label, vol, want_mode in (("socket", sock_vol, None), ("spool", spool_vol, 0o700)):
            where = init_mounts.get(vol)
            owner, _, group = chowns.get(where, "").partition(":")
            mode = chmods.get(where)
            if owner != str(uid):
                p(f"the init container does not chown the {label} directory {where} to the proxy's user {uid}")
            if not mode or not re.fullmatch(r"[0-7]{3,4}", mode):
                p(f"the init container does not chmod the {label} directory {where} to an octal mode")
                continue
            if want_mode is not None and int(mode, 8) != want_mode:
                p(f"the {label} directory should be mode {want_mode:04o}, is {mode}")
            if label == "socket" and owner == str(uid):
                dir_owner, dir_group, dir_mode = uid, int(group) if group.isdigit() else 0, int(mode, 8)
        if dir_mode is not None:
            if dir_mode & 0o002:
                p(f"the socket directory's mode {dir_mode:04o} lets every user write it, which the proxy refuses")
            if dir_mode & 0o300 != 0o300:
                p(f"the socket directory's mode {dir_mode:04o} does not let the proxy create its socket")

    # The Service: TCP for the pods that cannot mount the socket, on their own node.
    labels = tmpl.get("metadata", {}).get("labels", {})
    svcs = [s for s in kinds("Service")
            if s.get("spec", {}).get("selector") and s["spec"]["selector"].items() <= labels.items()]
    if not svcs:
        p("no Service selects the DaemonSet's pods")
    svc_ports = {}
    for svc in svcs:
        name = svc["metadata"]["name"]
        if svc["spec"].get("internalTrafficPolicy") != "Local":
            p(f"Service {name} should have internalTrafficPolicy: Local (each pod to its own node's proxy)")
        for sp in svc["spec"].get("ports", []):
            if container_port(proxy, sp.get("targetPort", sp.get("port"))) == port:
                svc_ports[name] = sp.get("port")
        if name not in svc_ports:
            p(f"Service {name} has no port targeting the proxy's port {port}")

    # The example app: mounts the socket's hostPath, can connect to the socket, and its
    # UNLEASH_URL is the Service or the socket.
    apps = []
    for dep in kinds("Deployment"):
        aspec = dep.get("spec", {}).get("template", {}).get("spec", {})
        vols = {v["name"] for v in aspec.get("volumes", []) if sock_host and v.get("hostPath", {}).get("path") == sock_host}
        for c in aspec.get("containers", []):
            mount = next((m for m in c.get("volumeMounts", []) if m["name"] in vols), None)
            if mount:
                apps.append((dep, aspec, c, mount))
    if sock_host and not apps:
        p(f"no example app Deployment mounts the socket's hostPath {sock_host}")
    for dep, aspec, c, mount in apps:
        who = f"example app {dep['metadata']['name']}/{c['name']}"
        app_sock = mount["mountPath"].rstrip("/") + "/" + os.path.relpath(sock, sock_dir)
        app_env = {e["name"]: e.get("value", "") for e in c.get("env", [])}
        url = app_env.get("UNLEASH_URL", "")
        u = urlparse(url)
        try:
            url_port = u.port
        except ValueError:
            url_port = None
        # http://SERVICE:PORT/api, or SERVICE.NAMESPACE[.svc[.cluster.local]] from another namespace.
        to_service = u.scheme == "http" and u.path.rstrip("/") == "/api" and any(
            (u.hostname == svc or (u.hostname or "").startswith(svc + ".")) and url_port == svc_port
            for svc, svc_port in svc_ports.items())
        to_socket = u.scheme == "http+unix" and unquote(u.netloc) == app_sock
        if not (to_service or to_socket):
            p(f"{who}: UNLEASH_URL should be the Service (http://SERVICE:PORT/api) or the socket, is {url!r}")
        if "METRICS_PROXY_SOCKET" in app_env and app_env["METRICS_PROXY_SOCKET"] != app_sock:
            p(f"{who}: METRICS_PROXY_SOCKET is {app_env['METRICS_PROXY_SOCKET']}, the socket is at {app_sock} in it")
        asc, csc = aspec.get("securityContext", {}), c.get("securityContext", {})
        app_uid = csc.get("runAsUser", asc.get("runAsUser"))
        app_gid = csc.get("runAsGroup", asc.get("runAsGroup"))
        if app_uid is None or app_gid is None:
            p(f"{who}: set runAsUser and runAsGroup, so that who may use the socket is documented")
            continue
        if dir_mode is None or uid is None:
            continue
        gids = {app_gid} | set(asc.get("supplementalGroups", []))
        sock_group = dir_group if dir_mode & 0o2000 else gid
        if not may(app_uid, gids, dir_owner, dir_group, dir_mode, 1):
            p(f"{who}: uid {app_uid} groups {sorted(gids)} cannot enter the socket directory "
              f"({dir_owner}:{dir_group} {dir_mode:04o})")
        elif not may(app_uid, gids, uid, sock_group, unix_mode, 2):
            p(f"{who}: uid {app_uid} groups {sorted(gids)} cannot connect to the socket "
              f"({uid}:{sock_group} {unix_mode:04o})")
    return proxy


def validate_manifests(directory, version):
    """Every document of every deploy/kubernetes/*.yaml against the Kubernetes API schemas
    bundled with kubernetes-validate, strict: unknown fields are errors as well."""
    try:
        import kubernetes_validate
        from kubernetes_validate import utils as kv_utils
    except ImportError:
        problem("kubernetes-validate: not installed: run python3 -m pip install kubernetes-validate==1.37.0 "
                "(the README's test command does)")
        return
    version = version.lstrip("v")
    try:
        bundled = sorted({kv_utils.major_minor(v) for v in kv_utils.all_versions()}, key=lambda v: tuple(map(int, v.split("."))))
    except Exception:
        bundled = None
    if bundled is not None and kv_utils.major_minor(version) not in bundled:
        problem(f"kubernetes-validate {kubernetes_validate.__version__} does not bundle the schemas of "
                f"Kubernetes {version} (it has {', '.join(bundled)})")
        return
    files = sorted(glob.glob(os.path.join(directory, "*.yaml")) + glob.glob(os.path.join(directory, "*.yml")))
    if not files:
        problem(f"kubernetes-validate: no manifests in {directory}")
    for path in files:
        docs = load_manifest(path, "kubernetes-validate")
        for doc in docs or []:
            name = f"{os.path.basename(path)}: {str(doc.get('kind', '?')).lower()}/{(doc.get('metadata') or {}).get('name', '?')}"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                continue
            except kubernetes_validate.ValidationError as e:
                first = e
            except kubernetes_validate.SchemaNotFoundError as e:
                problem(f"kubernetes-validate: {name}: {e.message}")
                continue
            except Exception as e:  # a version it does not bundle, a document without kind
                problem(f"kubernetes-validate: {name}: cannot validate against Kubernetes {version}: "
                        f"{getattr(e, 'message', None) or e!r}")
                continue
            for e in all_schema_errors(kv_utils, doc, version) or [first]:
                where = ".".join(str(x) for x in e.absolute_path) or "(top)"
                problem(f"kubernetes-validate: {name}: {where}: {e.message}")


def all_schema_errors(kv_utils, doc, version):
    """Every error, not only the one kubernetes_validate.validate raises: the same strict
    schema, walked with iter_errors. [] if the package's layout is not the one expected."""
    try:
        import jsonschema
        from referencing import Registry, Resource
        bundled = [v for v in kv_utils.all_versions() if kv_utils.major_minor(v) == kv_utils.major_minor(version)]
        schema_dir = f"kubernetes-json-schema/v{bundled[-1]}-local-strict"
        api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", doc["apiVersion"])
        schema = kv_utils.schema_contents(f"{schema_dir}/{doc['kind'].lower()}-{api}.json", version)
        defs = kv_utils.schema_contents(f"{schema_dir}/_definitions.json", version)
        registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
        validator = jsonschema.validators.Draft202012Validator(schema, registry=registry)
        return sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    except Exception:
        return []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--deploy", required=True)
    ap.add_argument("--conf", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--extract-configmap")
    ap.add_argument("--extract-daemonset-configmap")
    ap.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    a = ap.parse_args()
    repo_conf_text = open(a.conf).read()
    repo = conf_entries(repo_conf_text)
    repo_keys = set(repo)
    env_names = set(re.findall(r"\$\{(\w+)", repo_conf_text))
    default_port = env_default(repo[("listen", "tcp")])[1].rsplit(":", 1)[1]
    default_drain = seconds(repo[("upstream", "drain_timeout")])

    # Kubernetes: the sidecar, the node agent, and every manifest against the API schemas.
    side = check_sidecar(a, repo_keys, env_names)
    agent = check_daemonset(a, repo_keys, env_names)
    validate_manifests(os.path.join(a.deploy, "kubernetes"), a.kubernetes_version)

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
    for label, container in (("kubernetes", side), ("kubernetes daemonset", agent)):
        uid = (container or {}).get("securityContext", {}).get("runAsUser")
        if users and uid is not None and str(uid) != users[-1].split(":")[0]:
            problem(f"{label}: runAsUser differs from the image's USER")

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
