import CLibevent
import Glibc
import MetricsProxyCore

/// Sends requests to the upstream Unleash over HTTP or verified HTTPS, on the loop. Each
/// request gets its own connection, freed by libevent when the request completes: one batch
/// per token per window does not need keep-alive, and a fresh TLS session per connection
/// avoids reusing an `SSL*` across reconnects.
final class UpstreamClient {
    struct Request {
        var method: evhttp_cmd_type = EVHTTP_REQ_POST
        /// Appended to the URL's base path, e.g. `/client/metrics/bulk`.
        var path: String
        var headers: [(String, String)]
        var body: [UInt8]
    }

    private let loop: EventLoop
    let url: UpstreamURL
    private let timeoutMillis: Int64
    private let tls: TLSContext?

    init(loop: EventLoop, config: Config.Upstream) throws(StartupError) {
        self.loop = loop
        url = config.url
        timeoutMillis = config.timeout.milliseconds
        tls = url.scheme == .https ? try TLSContext(caFile: config.caFile, verify: config.tlsVerify) : nil
    }

    /// Sends `request`; `done` is called exactly once, on the loop.
    func send(_ request: Request, done: @escaping (UpstreamAnswer) -> Void) {
        let pending = PendingRequest(done: done)
        var bev: OpaquePointer?
        if let tls {
            guard let ssl = tls.makeSSL(host: url.host) else { return done(.noAnswer("cannot create a TLS session")) }
            bev = bufferevent_openssl_socket_new(loop.base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                 Int32(BEV_OPT_CLOSE_ON_FREE.rawValue | BEV_OPT_DEFER_CALLBACKS.rawValue))
            guard bev != nil else { SSL_free(ssl); return done(.noAnswer("cannot create a TLS connection")) }
        }
        guard let conn = evhttp_connection_base_bufferevent_new(loop.base, loop.dns, bev, url.host, url.port) else {
            if let bev { bufferevent_free(bev) }
            return done(.noAnswer("cannot create a connection to \(url.host):\(url.port)"))
        }
        var tv = timeval(tv_sec: Int(timeoutMillis / 1000), tv_usec: Int(timeoutMillis % 1000) * 1000)
        evhttp_connection_set_timeout_tv(conn, &tv)
        pending.conn = conn
        pending.isTLS = tls != nil
        // The request callback owns one retain of `pending`, released when it runs; it runs
        // exactly once, also on failure. If evhttp_make_request fails, we release it here.
        let arg = Unmanaged.passRetained(pending).toOpaque()
        guard let req = evhttp_request_new({ req, arg in
            Unmanaged<PendingRequest>.fromOpaque(arg!).takeRetainedValue().finish(req)
        }, arg) else {
            Unmanaged<PendingRequest>.fromOpaque(arg).release()
            evhttp_connection_free(conn)
            return done(.noAnswer("cannot create a request"))
        }
        evhttp_request_set_error_cb(req) { error, arg in
            Unmanaged<PendingRequest>.fromOpaque(arg!).takeUnretainedValue().error = error
        }
        let headers = evhttp_request_get_output_headers(req)
        let defaultPort: UInt16 = url.scheme == .https ? 443 : 80
        let hostHeader = url.port == defaultPort ? url.host : "\(url.host):\(url.port)"
        evhttp_add_header(headers, "Host", isIPv6(url.host) ? "[\(url.host)]" + (url.port == defaultPort ? "" : ":\(url.port)") : hostHeader)
        evhttp_add_header(headers, "User-Agent", "metrics-proxy/\(Version.string)")
        evhttp_add_header(headers, "Connection", "close")
        for (k, v) in request.headers { evhttp_add_header(headers, k, v) }
        if !request.body.isEmpty {
            request.body.withUnsafeBytes { _ = evbuffer_add(evhttp_request_get_output_buffer(req), $0.baseAddress, $0.count) }
        }
        if evhttp_make_request(conn, req, request.method, url.basePath + request.path) != 0 {
            // libevent has freed the request without calling its callback.
            Unmanaged<PendingRequest>.fromOpaque(arg).release()
            evhttp_connection_free(conn)
            return done(.noAnswer("cannot send the request"))
        }
        evhttp_connection_free_on_completion(conn)
    }

    private func isIPv6(_ host: String) -> Bool { host.contains(":") }
}

/// The state of one request in flight, kept alive by the callback's retain.
private final class PendingRequest {
    let done: (UpstreamAnswer) -> Void
    var conn: OpaquePointer?
    var isTLS = false
    var error: evhttp_request_error?

    init(done: @escaping (UpstreamAnswer) -> Void) { self.done = done }

    func finish(_ req: OpaquePointer?) {
        let code = req.map { evhttp_request_get_response_code($0) } ?? 0
        guard let req, code > 0 else { return done(.noAnswer(failureReason())) }
        var retryAfter: Duration?
        if let headers = evhttp_request_get_input_headers(req), let v = evhttp_find_header(headers, "Retry-After") {
            retryAfter = RetryPolicy.parseRetryAfter(String(cString: v), now: nowMillis())
        }
        done(.status(Int(code), retryAfter: retryAfter))
    }

    /// Why there was no answer: libevent's error kind, and for TLS what OpenSSL said.
    private func failureReason() -> String {
        var reason: String
        switch error {
        case EVREQ_HTTP_TIMEOUT: reason = "timeout"
        case EVREQ_HTTP_EOF: reason = "connection closed (refused, reset or closed before an answer)"
        case EVREQ_HTTP_INVALID_HEADER: reason = "invalid answer header"
        case EVREQ_HTTP_BUFFER_ERROR: reason = "connection error"
        case EVREQ_HTTP_DATA_TOO_LONG: reason = "answer too long"
        default: reason = "no answer"
        }
        if isTLS, let conn, let bev = evhttp_connection_get_bufferevent(conn) {
            var tlsReasons: [String] = []
            if let ssl = bufferevent_openssl_get_ssl(bev) {
                let v = SSL_get_verify_result(ssl)
                if v != X509_V_OK, let s = X509_verify_cert_error_string(v) {
                    tlsReasons.append("certificate verify failed: \(String(cString: s))")
                }
            }
            var e = bufferevent_get_openssl_error(bev)
            while e != 0 {
                tlsReasons.append(opensslErrorText(e))
                e = bufferevent_get_openssl_error(bev)
            }
            if !tlsReasons.isEmpty { reason = "TLS: " + tlsReasons.joined(separator: "; ") }
        }
        return reason
    }
}
