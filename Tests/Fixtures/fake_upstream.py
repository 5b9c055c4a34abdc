#!/usr/bin/env python3
"""Recording fake Unleash upstream for metrics-proxy integration tests.

Standard library only (Python 3.11).

Usage:
    python3 fake_upstream.py --host 127.0.0.1 --port 0 --port-file PATH \
        [--cert CERT.pem --key KEY.pem] [--features FEATURES.json]

Once listening, the bound port is written (atomically) to --port-file.
SIGTERM / SIGINT stop the server cleanly (exit status 0).

Every request outside /_control/ is recorded in arrival order:
    {"seq", "t", "method", "path", "query", "raw_path", "headers",
     "body", ["encoding"], "wire_bytes", "status", "answered"}

Impact metrics are handled as the Unleash server (v8.1) handles them: each request's
`impactMetrics` is validated with the server's Joi rules (one bad item: the whole array is
dropped, still 202), a bulk request is answered 400 where the server's Ajv schema refuses
it (a label value that is a number or a numeric string matches both branches of its
`oneOf`; `applications`/`metrics` not arrays), and what passes is applied to an in-memory
registry the way the server's prom-client registry applies it (counters add, gauges set,
histograms add per `le`; a new label name or bucket layout recreates the metric, a name
registered with another type aborts the rest of the array). Each record carries
"impact": "none" | "stored" | "dropped: why" | "aborted: why" | "refused: why".

Control API (never recorded):
    GET  /_control/health              -> 200 "ok"
    GET  /_control/requests[?path=P]   -> 200 JSON list (optionally exact-path filtered)
    GET  /_control/impact              -> 200 JSON {"metrics": {name: {"type", "help",
         "series": [{"labels": {...}, "value"} | {"labels", "count", "sum", "buckets": {le: n}}]}},
         "resets": n, "dropped_arrays": n, "aborted": n, "refused": n}
    POST /_control/reset               -> clears records (seq restarts at 1) and script
    POST /_control/script/clear        -> clears the script only, keeping the records
    POST /_control/script              -> body {"answers": [entry, ...]} appended to FIFO
         entry: {"status": 503, "delay": 0.0, "headers": {...}, "body": "...",
                 "repeat": 1, "path_prefix": "/api/client/metrics", "method": null,
                 "body_contains": null}
         status 0 = close the connection abruptly (RST) without answering;
         repeat -1 = forever (until reset). body_contains: only requests whose
         (decoded) body holds this text.
    POST /_control/features            -> replace the features body (raw JSON text)
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DEFAULT_FEATURES = {
    "version": 2,
    "features": [
        {
            "name": "flag-a",
            "enabled": True,
            "strategies": [{"name": "default"}],
            "variants": [],
        }
    ],
}

DEFAULT_PATH_PREFIX = "/api/client/metrics"
ACCEPTED_POSTS = ("/api/client/metrics", "/api/client/metrics/bulk", "/api/client/register")
FEATURES_PATH = "/api/client/features"
CONTROL_PREFIX = "/_control/"


class State:
    """Thread-safe shared state: recorded requests, script queue, features body."""

    def __init__(self, features_body: bytes):
        self.lock = threading.Lock()
        self.records: list[dict] = []
        self.seq = 0
        self.script: list[dict] = []
        self.impact = ImpactRegistry()
        self.set_features(features_body)

    def set_features(self, body: bytes) -> None:
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        with self.lock:
            self.features_body = body
            self.features_etag = etag

    def get_features(self) -> tuple[bytes, str]:
        with self.lock:
            return self.features_body, self.features_etag

    def reset(self) -> None:
        with self.lock:
            self.records = []
            self.seq = 0
            self.script = []
            self.impact = ImpactRegistry()

    def clear_script(self) -> None:
        with self.lock:
            self.script = []

    def add_script(self, answers: list[dict], replace: bool = False) -> None:
        with self.lock:
            if replace:
                self.script = []
            self.script.extend(answers)

    def take_script(self, method: str, path: str, body: str = "") -> dict | None:
        """Consume one use of the first entry matching this request."""
        with self.lock:
            for i, entry in enumerate(self.script):
                if not path.startswith(entry["path_prefix"]):
                    continue
                if entry.get("body_contains") is not None and entry["body_contains"] not in body:
                    continue
                if entry["method"] is not None and entry["method"] != method:
                    continue
                if entry["repeat"] > 0:
                    entry["repeat"] -= 1
                    if entry["repeat"] == 0:
                        del self.script[i]
                # repeat < 0: forever
                return dict(entry)
            return None

    def record(self, rec: dict) -> dict:
        with self.lock:
            self.seq += 1
            rec["seq"] = self.seq
            self.records.append(rec)
            return rec

    def snapshot(self, path: str | None) -> list[dict]:
        with self.lock:
            recs = [dict(r) for r in self.records]
        if path is not None:
            recs = [r for r in recs if r["path"] == path]
        return recs


def normalize_entry(raw: dict) -> dict:
    if not isinstance(raw, dict):
        raise ValueError("script entry must be an object")
    status = int(raw.get("status", 200))
    delay = float(raw.get("delay", 0.0) or 0.0)
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError("headers must be an object")
    body = raw.get("body", "")
    if body is None:
        body = ""
    if not isinstance(body, str):
        body = json.dumps(body)
    repeat = int(raw.get("repeat", 1))
    if repeat == 0:
        raise ValueError("repeat must be >= 1 or -1")
    prefix = raw.get("path_prefix", DEFAULT_PATH_PREFIX)
    if not isinstance(prefix, str):
        raise ValueError("path_prefix must be a string")
    method = raw.get("method")
    contains = raw.get("body_contains")
    if contains is not None and not isinstance(contains, str):
        raise ValueError("body_contains must be a string")
    return {
        "body_contains": contains,
        "status": status,
        "delay": delay,
        "headers": {str(k): str(v) for k, v in headers.items()},
        "body": body,
        "repeat": repeat,
        "path_prefix": prefix,
        "method": method.upper() if isinstance(method, str) else None,
    }


MAX_SAFE = 2**53 - 1
_DECIMAL = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
# JavaScript's white space and line terminators, which Number() trims.
_JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
            "\u2028\u2029\u202f\u205f\u3000\ufeff"


def joi_number(v) -> bool:
    """Joi number() with conversion: a finite number (or decimal string) in the safe range."""
    if isinstance(v, bool):
        return False
    if isinstance(v, str):
        if not _DECIMAL.match(v):
            return False
        v = float(v)
    if not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        return False
    return abs(v) <= MAX_SAFE


def joi_string(v) -> bool:
    return isinstance(v, str) and v != ""


def joi_labels(v) -> bool:
    if v is None:
        return True  # absent
    if not isinstance(v, dict):
        return False
    return all(joi_string(k) and (joi_string(x) or joi_number(x) and not isinstance(x, str)) for k, x in v.items())


def joi_error(metrics) -> str | None:
    """impactMetricsSchema (src/lib/features/metrics/shared/schema.ts): why Joi refuses the array."""
    if not isinstance(metrics, list):
        return "impactMetrics must be an array"
    for i, m in enumerate(metrics):
        if not isinstance(m, dict):
            return f"[{i}] must be an object"
        for k in ("name", "help", "type"):
            if not joi_string(m.get(k)):
                return f"[{i}].{k} must be a non-empty string"
        samples = m.get("samples")
        if not isinstance(samples, list):
            return f"[{i}].samples is required"
        for j, smp in enumerate(samples):
            where = f"[{i}].samples[{j}]"
            if not isinstance(smp, dict) or not joi_labels(smp.get("labels", None)) or \
                    ("labels" in smp and smp["labels"] is None):
                return f"{where}: bad labels"
            if m["type"] == "histogram":
                if not joi_number(smp.get("count")) or not joi_number(smp.get("sum")):
                    return f"{where}: count and sum must be numbers"
                buckets = smp.get("buckets")
                if not isinstance(buckets, list):
                    return f"{where}.buckets is required"
                for b in buckets:
                    if not isinstance(b, dict) or not joi_number(b.get("count")):
                        return f"{where}: bad bucket"
                    if b.get("le") != "+Inf" and not joi_number(b.get("le")):
                        return f"{where}: bad bucket le"
            elif not joi_number(smp.get("value")):
                return f"{where}.value must be a number"
    return None


def js_numeric(s: str) -> bool:
    """Whether JavaScript's Number(s) is a number (not NaN) for a non-empty string."""
    t = s.strip(_JS_SPACE)
    if t == "":
        return True
    if t in ("Infinity", "+Infinity", "-Infinity"):
        return True
    if len(t) > 2 and t[0] == "0" and t[1] in "xXoObB":
        digits = {"x": "0123456789abcdefABCDEF", "o": "01234567", "b": "01"}[t[1].lower()]
        return all(c in digits for c in t[2:])
    return bool(_DECIMAL.match(t))


def bulk_refusal(doc: dict) -> str | None:
    """The server's Ajv (bulkMetricsSchema, coerceTypes) on a bulk body: why it answers 400."""
    for k in ("applications", "metrics"):
        if not isinstance(doc.get(k), list):
            return f"{k} must be an array"
    metrics = doc.get("impactMetrics")
    if metrics is None:
        return None
    if not isinstance(metrics, list):
        return "impactMetrics must be an array"
    for i, m in enumerate(metrics):
        if not isinstance(m, dict) or m.get("type") not in ("counter", "gauge", "histogram"):
            return f"impactMetrics[{i}] matches no schema in oneOf"
        for smp in m.get("samples") or []:
            for key, v in ((smp or {}).get("labels") or {}).items():
                if isinstance(v, bool):
                    continue
                if isinstance(v, (int, float)) or isinstance(v, str) and v != "" and js_numeric(v):
                    return f"impactMetrics[{i}] label {key}={v!r} matches more than one schema in oneOf"
    return None


def sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


class ImpactRegistry:
    """What the server's impact registry (prom-client, unprefixed names) holds."""

    def __init__(self):
        self.metrics: dict[str, dict] = {}
        self.resets = 0
        self.dropped_arrays = 0
        self.aborted = 0
        self.refused = 0

    def apply(self, metrics) -> str:
        why = joi_error(metrics)
        if why:
            self.dropped_arrays += 1
            return "dropped: " + why
        for m in metrics:
            kind = m["type"]
            if kind not in ("counter", "gauge", "histogram"):
                continue
            name = sanitize(m["name"])
            if not re.match(r"^[a-zA-Z_]", name):
                continue
            samples = m["samples"]
            if kind == "histogram" and not samples:
                continue
            names = {"origin", "type"}
            for smp in samples:
                names |= {sanitize(k) for k in (smp.get("labels") or {}) if re.match(r"^[a-zA-Z_]", sanitize(k))}
            existing = self.metrics.get(name)
            if existing is not None and existing["type"] != kind:
                self.aborted += 1
                return f"aborted: {name} is already registered as a {existing['type']}"
            recreate = existing is not None and bool(names - existing["labelNames"])
            if existing is not None and kind == "histogram" and not recreate:
                first = [le_key(b["le"]) for b in samples[0]["buckets"]]
                recreate = len(existing["bounds"]) != len(first) or any(b not in existing["bounds"] for b in first)
            if existing is None or recreate:
                if recreate:
                    self.resets += 1
                existing = {"type": kind, "help": m["help"], "labelNames": names, "series": {}, "bounds": set()}
                self.metrics[name] = existing
            for smp in samples:
                labels = {"origin": (smp.get("labels") or {}).get("origin") or "sdk", "type": kind}
                for k, v in (smp.get("labels") or {}).items():
                    if re.match(r"^[a-zA-Z_]", sanitize(k)):
                        labels[sanitize(k)] = str(v)
                key = json.dumps(sorted(labels.items()))
                if kind == "counter":
                    existing["series"][key] = existing["series"].get(key, 0) + float(smp["value"])
                elif kind == "gauge":
                    existing["series"][key] = float(smp["value"])
                else:
                    h = existing["series"].setdefault(key, {"count": 0, "sum": 0, "buckets": {}})
                    h["count"] += float(smp["count"])
                    h["sum"] += float(smp["sum"])
                    for b in smp["buckets"]:
                        le = le_key(b["le"])
                        h["buckets"][le] = h["buckets"].get(le, 0) + float(b["count"])
                        existing["bounds"].add(le)
        return "stored"

    def snapshot(self) -> dict:
        out = {}
        for name, m in self.metrics.items():
            series = []
            for key, v in m["series"].items():
                labels = dict(json.loads(key))
                if m["type"] == "histogram":
                    series.append({"labels": labels, "count": v["count"], "sum": v["sum"],
                                   "buckets": {str(le): c for le, c in v["buckets"].items()}})
                else:
                    series.append({"labels": labels, "value": v})
            out[name] = {"type": m["type"], "help": m["help"], "series": series}
        return {"metrics": out, "resets": self.resets, "dropped_arrays": self.dropped_arrays,
                "aborted": self.aborted, "refused": self.refused}


def le_key(le):
    return "+Inf" if le == "+Inf" else repr(float(le))


class BadRequest(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-upstream/1.0"

    def version_string(self):
        return self.server_version
    state: State  # set on the class by main()

    # --- plumbing -------------------------------------------------------

    def setup(self):
        super().setup()
        # TLS handshake happens here (in the per-connection thread), not in accept().
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def log_message(self, format, *args):  # noqa: A002 - silence default logging
        pass

    def _read_body(self) -> bytes:
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise BadRequest("eof in chunked body")
                size_txt = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_txt, 16)
                except ValueError:
                    raise BadRequest("bad chunk size")
                if size == 0:
                    # trailers until blank line
                    while True:
                        t = self.rfile.readline(65537)
                        if not t or t in (b"\r\n", b"\n"):
                            break
                    break
                data = self.rfile.read(size)
                if len(data) != size:
                    raise BadRequest("short chunk")
                chunks.append(data)
                self.rfile.readline(3)  # CRLF after chunk data
            return b"".join(chunks)
        cl = self.headers.get("Content-Length")
        if cl is None:
            return b""
        try:
            n = int(cl)
        except ValueError:
            raise BadRequest("bad content-length")
        if n < 0:
            raise BadRequest("bad content-length")
        data = self.rfile.read(n)
        if len(data) != n:
            raise BadRequest("short body")
        return data

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None,
              content_type: str | None = None) -> None:
        self.send_response(status)
        no_body = status in (204, 304) or 100 <= status < 200
        hdrs = dict(headers or {})
        lower = {k.lower() for k in hdrs}
        if content_type and body and "content-type" not in lower:
            self.send_header("Content-Type", content_type)
        for k, v in hdrs.items():
            if k.lower() in ("content-length", "transfer-encoding"):
                continue
            self.send_header(k, v)
        if not no_body:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not no_body and self.command != "HEAD" and body:
            self.wfile.write(body)
        self.wfile.flush()

    def _send_json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode(), content_type="application/json")

    def _abort_connection(self) -> None:
        """Close abruptly (RST) without sending anything."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        except OSError:
            pass
        for f in (self.rfile, self.wfile):
            try:
                f.close()
            except Exception:
                pass
        try:
            self.connection.close()
        except OSError:
            pass
        # BaseHTTPRequestHandler flushes wfile after the do_* method returns.
        self.wfile = io.BytesIO()

    # --- dispatch -------------------------------------------------------

    def _handle(self):
        t = time.time()
        if self.path.startswith("/"):
            path, _, query = self.path.partition("?")
            path = path.split("#", 1)[0]
        else:  # absolute-form request target
            split = urlsplit(self.path)
            path, query = split.path or "/", split.query
        try:
            raw_body = self._read_body()
        except BadRequest as e:
            self.close_connection = True
            self._send_json(400, {"message": str(e)})
            return

        if path.startswith(CONTROL_PREFIX):
            self._control(path, query, raw_body)
            return

        rec = {
            "seq": 0,
            "t": t,
            "method": self.command,
            "path": path,
            "query": query,
            "raw_path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": "",
            "wire_bytes": len(raw_body),
            "status": None,
            "answered": False,
        }
        enc = (self.headers.get("Content-Encoding") or "").strip().lower()
        body = raw_body
        if enc in ("gzip", "x-gzip", "deflate") and raw_body:
            rec["encoding"] = "deflate" if enc == "deflate" else "gzip"
            try:
                if enc == "deflate":
                    try:
                        body = zlib.decompress(raw_body)
                    except zlib.error:
                        body = zlib.decompress(raw_body, -zlib.MAX_WBITS)
                else:
                    body = gzip.decompress(raw_body)
            except Exception as e:  # record the failure, keep raw bytes
                rec["encoding_error"] = str(e)
                body = raw_body
        elif enc:
            rec["encoding"] = enc
        rec["body"] = body.decode("utf-8", errors="replace")

        entry = self.state.take_script(self.command, path, rec["body"])
        if entry is not None:
            rec["status"] = entry["status"]
            rec["scripted"] = True
            self.state.record(rec)
            if entry["delay"] > 0:
                time.sleep(entry["delay"])
            if entry["status"] == 0:
                rec["answered"] = True
                self._abort_connection()
                return
            self._send(entry["status"], entry["body"].encode(), entry["headers"])
            rec["answered"] = True
            return

        status, resp_body, headers = self._default(path)
        if status == 202 and path in ("/api/client/metrics", "/api/client/metrics/bulk"):
            status, resp_body, headers, rec["impact"] = self._impact(path, rec["body"])
        rec["status"] = status
        self.state.record(rec)
        self._send(status, resp_body, headers)
        rec["answered"] = True

    def _default(self, path: str) -> tuple[int, bytes, dict]:
        if self.command == "POST" and path in ACCEPTED_POSTS:
            return 202, b"", {}
        if self.command in ("GET", "HEAD") and path == FEATURES_PATH:
            body, etag = self.state.get_features()
            inm = self.headers.get("If-None-Match")
            if inm is not None:
                tags = [x.strip() for x in inm.split(",")]
                if etag in tags or "W/" + etag in tags or "*" in tags:
                    return 304, b"", {"ETag": etag}
            return 200, body, {"ETag": etag, "Content-Type": "application/json"}
        return 404, b'{"message": "not found"}', {"Content-Type": "application/json"}

    def _impact(self, path: str, text: str) -> tuple[int, bytes, dict, str]:
        """The server's handling of a metrics request's impactMetrics (see the module doc)."""
        try:
            doc = json.loads(text)
        except ValueError:
            return 202, b"", {}, "none"
        if not isinstance(doc, dict):
            return 202, b"", {}, "none"
        if path.endswith("/bulk"):
            why = bulk_refusal(doc)
            if why:
                with self.state.lock:
                    self.state.impact.refused += 1
                return 400, json.dumps({"name": "ValidationError", "message": why}).encode(), \
                    {"Content-Type": "application/json"}, "refused: " + why
        metrics = doc.get("impactMetrics")
        if not metrics:
            return 202, b"", {}, "none"
        with self.state.lock:
            return 202, b"", {}, self.state.impact.apply(metrics)

    def _control(self, path: str, query: str, body: bytes) -> None:
        st = self.state
        if path == "/_control/health" and self.command in ("GET", "HEAD"):
            self._send(200, b"ok", content_type="text/plain")
        elif path == "/_control/requests" and self.command == "GET":
            q = parse_qs(query, keep_blank_values=True)
            p = q.get("path", [None])[0]
            self._send_json(200, st.snapshot(p))
        elif path == "/_control/impact" and self.command == "GET":
            with st.lock:
                snapshot = st.impact.snapshot()
            self._send_json(200, snapshot)
        elif path == "/_control/reset" and self.command == "POST":
            st.reset()
            self._send_json(200, {"ok": True})
        elif path == "/_control/script/clear" and self.command == "POST":
            st.clear_script()
            self._send_json(200, {"ok": True})
        elif path == "/_control/script" and self.command == "POST":
            try:
                doc = json.loads(body.decode("utf-8") or "{}")
                answers = doc.get("answers", []) if isinstance(doc, dict) else doc
                if not isinstance(answers, list):
                    raise ValueError("answers must be a list")
                entries = [normalize_entry(a) for a in answers]
            except (ValueError, TypeError, AttributeError) as e:
                self._send_json(400, {"message": f"bad script: {e}"})
                return
            # "replace": true swaps the script atomically (no request slips between).
            st.add_script(entries, replace=isinstance(doc, dict) and bool(doc.get("replace")))
            self._send_json(200, {"ok": True, "added": len(entries)})
        elif path == "/_control/features" and self.command in ("POST", "PUT"):
            try:
                json.loads(body.decode("utf-8"))
            except ValueError as e:
                self._send_json(400, {"message": f"bad features json: {e}"})
                return
            st.set_features(body)
            self._send_json(200, {"ok": True, "etag": st.get_features()[1]})
        else:
            self._send_json(404, {"message": "not found"})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # Quiet for expected client-side disconnects / TLS failures.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError, BrokenPipeError)):
            return
        if isinstance(exc, OSError):
            return
        super().handle_error(request, client_address)


class Server6(Server):
    address_family = socket.AF_INET6


class _Stop(Exception):
    pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--features", help="file with the JSON body for GET /api/client/features")
    ap.add_argument("--script", help="file with a JSON array of script entries in force before the "
                    "first connection (a request arriving before a /_control/script call would "
                    "otherwise get the default answer)")
    args = ap.parse_args(argv)

    if bool(args.cert) != bool(args.key):
        ap.error("--cert and --key must be given together")

    if args.features:
        with open(args.features, "rb") as f:
            features = f.read()
        json.loads(features.decode("utf-8"))  # fail early on invalid JSON
    else:
        features = json.dumps(DEFAULT_FEATURES).encode()

    Handler.state = State(features)
    if args.script:
        with open(args.script, "rb") as f:
            Handler.state.add_script([normalize_entry(e) for e in json.loads(f.read().decode("utf-8"))])
    cls = Server6 if ":" in args.host else Server
    httpd = cls((args.host, args.port), Handler)

    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True,
                                       do_handshake_on_connect=False)

    port = httpd.server_address[1]
    tmp = f"{args.port_file}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, args.port_file)

    def stop(signum, frame):
        raise _Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    try:
        httpd.serve_forever(poll_interval=0.2)
    except _Stop:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
