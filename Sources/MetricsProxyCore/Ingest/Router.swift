/// Which handler a request goes to, from its method and path (the README's "What it does"). Paths match as the
/// Unleash server matches them: case-insensitive, repeated slashes collapsed, a trailing slash
/// ignored, under an optional prefix.
public struct Router: Sendable {
    public enum Route: Sendable, Equatable {
        case metrics, register, bulk, health, ready
        /// The proxy's own Prometheus metrics (`GET /metrics`).
        case selfMetrics
        case methodNotAllowed(allow: String)
        /// Another `/api/...` request under a `[listen] forward` prefix, for the upstream.
        case forward
        /// An `/api/...` request outside the `[listen] forward` prefixes (the admin API by default).
        case notForwarded
        case notFound
    }

    public var prefix: String
    /// `[listen] forward`: what is passed to the upstream (lower case, from `/`).
    public var forward: [String]

    /// By default only what an SDK needs goes upstream: the client and frontend API.
    public init(prefix: String, forward: [String] = ["/api/client/", "/api/frontend/"]) {
        self.prefix = prefix.lowercased()
        self.forward = forward
    }

    /// Whether `path` (normalized, below the prefix) is under one of the `forward` prefixes,
    /// at a segment boundary (`/api/client` does not take `/api/clientele`).
    func forwards(_ path: String) -> Bool {
        forward.contains { p in
            if p.hasSuffix("/") { return path.hasPrefix(p) || path + "/" == p }
            return path == p || path.hasPrefix(p + "/")
        }
    }

    public func route(method: String, uri: String) -> Route {
        var path = Self.normalize(uri)
        if !prefix.isEmpty {
            guard path == prefix || path.hasPrefix(prefix + "/") else { return .notFound }
            path = String(path.dropFirst(prefix.count))
            if path.isEmpty { path = "/" }
        }
        switch path {
        case "/api/client/metrics": return method == "POST" ? .metrics : .methodNotAllowed(allow: "POST")
        case "/api/client/register": return method == "POST" ? .register : .methodNotAllowed(allow: "POST")
        case "/api/client/metrics/bulk": return method == "POST" ? .bulk : .methodNotAllowed(allow: "POST")
        case "/healthz": return method == "GET" || method == "HEAD" ? .health : .methodNotAllowed(allow: "GET, HEAD")
        case "/readyz": return method == "GET" || method == "HEAD" ? .ready : .methodNotAllowed(allow: "GET, HEAD")
        case "/metrics": return method == "GET" || method == "HEAD" ? .selfMetrics : .methodNotAllowed(allow: "GET, HEAD")
        default:
            guard path.hasPrefix("/api/") else { return .notFound }
            return forwards(path) ? .forward : .notForwarded
        }
    }

    /// For a forwarded request: its path and query below the prefix and `/api`, as sent
    /// (case kept), e.g. `/client/features?namePrefix=x`.
    public func upstreamPath(uri: String) -> String {
        var rest = Substring(uri)
        while rest.hasPrefix("//") { rest = rest.dropFirst() }
        if !prefix.isEmpty, rest.lowercased().hasPrefix(prefix) { rest = rest.dropFirst(prefix.count) }
        while rest.hasPrefix("//") { rest = rest.dropFirst() }
        if rest.lowercased().hasPrefix("/api/") { rest = rest.dropFirst(4) }
        return String(rest)
    }

    /// The path without query, lower-cased, slashes collapsed, no trailing slash.
    public static func normalize(_ uri: String) -> String {
        let pathPart = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        var out = ""
        out.reserveCapacity(pathPart.utf8.count)
        var lastSlash = false
        for c in pathPart.lowercased() {
            if c == "/" {
                if lastSlash { continue }
                lastSlash = true
            } else {
                lastSlash = false
            }
            out.append(c)
        }
        if out.count > 1, out.hasSuffix("/") { out.removeLast() }
        return out.isEmpty ? "/" : out
    }
}
