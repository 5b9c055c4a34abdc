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
        _ = start(request, PendingRequest(done: done))
    }

    /// Sends `request` and streams the answer: `head` once the status line and headers are in,
    /// `chunk` for each piece of the body as it arrives, then `done` exactly once (a status on
    /// success, `.noAnswer` on failure). Returns a handle to cancel it, or nil when it could
    /// not even start (then `done` has already been called).
    func stream(_ request: Request, head: @escaping (Int, String, [(String, String)]) -> Void, chunk: @escaping ([UInt8]) -> Void,
                done: @escaping (UpstreamAnswer) -> Void) -> UpstreamCall? {
        let pending = PendingRequest(done: done)
        pending.onHead = head
        pending.onChunk = chunk
        return start(request, pending)
    }

    private func start(_ request: Request, _ pending: PendingRequest) -> UpstreamCall? {
        let done = pending.done
        var bev: OpaquePointer?
        if let tls {
            guard let ssl = tls.makeSSL(host: url.host) else { done(.noAnswer("cannot create a TLS session")); return nil }
            bev = bufferevent_openssl_socket_new(loop.base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                 Int32(BEV_OPT_CLOSE_ON_FREE.rawValue | BEV_OPT_DEFER_CALLBACKS.rawValue))
            guard bev != nil else { SSL_free(ssl); done(.noAnswer("cannot create a TLS connection")); return nil }
        }
        guard let conn = evhttp_connection_base_bufferevent_new(loop.base, loop.dns, bev, url.host, url.port) else {
            if let bev { bufferevent_free(bev) }
            done(.noAnswer("cannot create a connection to \(url.host):\(url.port)"))
            return nil
        }
        var tv = timeval(tv_sec: Int(timeoutMillis / 1000), tv_usec: Int(timeoutMillis % 1000) * 1000)
        evhttp_connection_set_timeout_tv(conn, &tv)
        pending.conn = conn
        pending.base = loop.base
        pending.isTLS = tls != nil
        // The request callback owns one retain of `pending`, released when it runs; it runs
        // exactly once, also on failure. If evhttp_make_request fails, or the call is
        // cancelled (libevent then never calls back), the retain is released there instead.
        let arg = Unmanaged.passRetained(pending).toOpaque()
        guard let req = evhttp_request_new({ req, arg in
            Unmanaged<PendingRequest>.fromOpaque(arg!).takeRetainedValue().finish(req)
        }, arg) else {
            Unmanaged<PendingRequest>.fromOpaque(arg).release()
            evhttp_connection_free(conn)
            done(.noAnswer("cannot create a request"))
            return nil
        }
        evhttp_request_set_error_cb(req) { error, arg in
            Unmanaged<PendingRequest>.fromOpaque(arg!).takeUnretainedValue().error = error
        }
        if pending.onHead != nil {
            evhttp_request_set_header_cb(req) { req, arg in
                Unmanaged<PendingRequest>.fromOpaque(arg!).takeUnretainedValue().headersArrived(req!)
                return 0
            }
            evhttp_request_set_chunked_cb(req) { req, arg in
                Unmanaged<PendingRequest>.fromOpaque(arg!).takeUnretainedValue().bodyArrived(req!)
            }
        }
        let headers = evhttp_request_get_output_headers(req)
        let defaultPort: UInt16 = url.scheme == .https ? 443 : 80
        let hostName = isIPv6(url.host) ? "[\(url.host)]" : url.host
        evhttp_add_header(headers, "Host", url.port == defaultPort ? hostName : "\(hostName):\(url.port)")
        if !request.headers.contains(where: { $0.0.lowercased() == "user-agent" }) {
            evhttp_add_header(headers, "User-Agent", "metrics-proxy/\(Version.string)")
        }
        evhttp_add_header(headers, "Connection", "close")
        for (k, v) in request.headers { evhttp_add_header(headers, k, v) }
        if !request.body.isEmpty {
            request.body.withUnsafeBytes { _ = evbuffer_add(evhttp_request_get_output_buffer(req), $0.baseAddress, $0.count) }
        }
        if evhttp_make_request(conn, req, request.method, url.basePath + request.path) != 0 {
            // libevent has freed the request without calling its callback.
            Unmanaged<PendingRequest>.fromOpaque(arg).release()
            evhttp_connection_free(conn)
            done(.noAnswer("cannot send the request"))
            return nil
        }
        evhttp_connection_free_on_completion(conn)
        pending.req = req
        return UpstreamCall(pending: pending, arg: arg)
    }

    private func isIPv6(_ host: String) -> Bool { host.contains(":") }
}

/// A request in flight that its caller may abandon.
final class UpstreamCall {
    private let pending: PendingRequest
    private let arg: UnsafeMutableRawPointer

    fileprivate init(pending: PendingRequest, arg: UnsafeMutableRawPointer) {
        self.pending = pending
        self.arg = arg
    }

    /// Stops the request; `done` is not called. Safe after it finished (then a no-op).
    func cancel() {
        guard !pending.finished, let req = pending.req else { return }
        pending.finished = true
        evhttp_cancel_request(req)
        // libevent will not call back now: release the callback's retain here.
        Unmanaged<PendingRequest>.fromOpaque(arg).release()
    }
}

/// The state of one request in flight, kept alive by the callback's retain.
private final class PendingRequest {
    let done: (UpstreamAnswer) -> Void
    var onHead: ((Int, String, [(String, String)]) -> Void)?
    var onChunk: (([UInt8]) -> Void)?
    var conn: OpaquePointer?
    var base: OpaquePointer?
    var req: OpaquePointer?
    var isTLS = false
    var finished = false
    var error: evhttp_request_error?

    init(done: @escaping (UpstreamAnswer) -> Void) { self.done = done }

    func headersArrived(_ req: OpaquePointer) {
        var headers: [(String, String)] = []
        if let h = evhttp_request_get_input_headers(req) {
            var kv = h.pointee.tqh_first
            while let e = kv {
                headers.append((String(cString: e.pointee.key), String(cString: e.pointee.value)))
                kv = e.pointee.next.tqe_next
            }
        }
        let reason = evhttp_request_get_response_code_line(req).map { String(cString: $0) } ?? ""
        onHead?(Int(evhttp_request_get_response_code(req)), reason, headers)
    }

    func bodyArrived(_ req: OpaquePointer) {
        guard let buf = evhttp_request_get_input_buffer(req) else { return }
        let n = evbuffer_get_length(buf)
        guard n > 0 else { return }
        var bytes = [UInt8](repeating: 0, count: n)
        evbuffer_remove(buf, &bytes, n)
        onChunk?(bytes)
    }

    func finish(_ req: OpaquePointer?) {
        finished = true
        let code = req.map { evhttp_request_get_response_code($0) } ?? 0
        if code == 0, error == nil, let conn, let base {
            // A failed connect (refused, unreachable) is the one failure libevent 2.1 reports
            // without its error callback, and then it does not honour free_on_completion: the
            // connection would leak (found by LeakSanitizer). Free it once libevent is done.
            var now = timeval()
            event_base_once(base, -1, Int16(EV_TIMEOUT), { _, _, conn in evhttp_connection_free(OpaquePointer(conn)) },
                            UnsafeMutableRawPointer(conn), &now)
        }
        guard let req, code > 0 else { return done(.noAnswer(failureReason())) }
        var retryAfter: Duration?
        if let headers = evhttp_request_get_input_headers(req), let v = evhttp_find_header(headers, "Retry-After") {
            retryAfter = RetryPolicy.parseRetryAfter(String(cString: v), now: nowMillis())
        }
        // A body not taken by chunk callbacks (a non-streaming response) is passed on too.
        if onChunk != nil { bodyArrived(req) }
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
        default: reason = "connection failed (refused, reset or unreachable)"
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
