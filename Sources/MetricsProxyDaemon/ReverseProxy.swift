import CLibevent
import Glibc
import MetricsProxyCore

/// Passes every client API request the proxy does not answer itself (feature definitions,
/// streaming, …) to the upstream with its method, headers and body, and streams the answer
/// back as it arrives, so an SDK pointed at the proxy works unchanged. It never blocks the
/// loop: an unreachable upstream is a quick 502, a silent one a 504.
final class ReverseProxy {
    /// Replaced on a reload that changes the upstream.
    var client: UpstreamClient
    /// Tells an exchange when its client's connection closes.
    weak var connections: ConnectionGuard?
    private let log: Logger
    /// `[listen] forward_max_in_flight`: forwarded requests out at once.
    var maxInFlight: Int
    /// Forwarded requests out now (each until its answer is done or its client left).
    private(set) var inFlight = 0
    /// Sent as `X-Metrics-Proxy-Instance`, so that a request that comes back is recognised.
    var proxyInstance = ""


    init(client: UpstreamClient, log: Logger, maxInFlight: Int) {
        self.client = client
        self.log = log
        self.maxInFlight = maxInFlight
    }

    /// Headers that describe one hop, not the message (RFC 9110 §7.6.1), and ours to set.
    static let hopByHop: Set<String> = ["connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                                        "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "host"]

    /// `upstreamPath` is the request's path and query below `/api` (e.g. `/client/features?x=1`).
    func forward(_ request: HTTPRequest, upstreamPath: String) {
        guard let method = Self.command(request.method) else {
            request.reply(405, ErrorBody.message("Method \(request.method) is not supported"))
            return
        }
        // Bounded like everything else: a client that floods the forward path gets 503s, not
        // an unbounded number of upstream connections.
        guard inFlight < maxInFlight else {
            request.reply(503, ErrorBody.message("metrics-proxy is forwarding \(maxInFlight) requests already ([listen] forward_max_in_flight); retry"),
                          headers: [("Retry-After", "1")])
            return
        }
        inFlight += 1
        let exchange = Exchange(request: request.raw, log: log) { [weak self] in self?.inFlight -= 1 }
        var headers: [(String, String)] = []
        var forwardedFor: String?
        let connectionTokens = Set((request.header("Connection") ?? "").lowercased().split(separator: ",")
            .map { $0.trimmingASCIIWhitespace() })
        for (name, value) in request.headers() {
            let lower = name.lowercased()
            if Self.hopByHop.contains(lower) || connectionTokens.contains(lower) || lower == "content-length" { continue }
            if lower == "x-forwarded-for" { forwardedFor = value; continue }
            headers.append((name, value))
        }
        if let peer = request.peerAddress {
            headers.append(("X-Forwarded-For", forwardedFor.map { "\($0), \(peer)" } ?? peer))
        } else if let forwardedFor {
            headers.append(("X-Forwarded-For", forwardedFor))
        }
        headers.removeAll { $0.0.lowercased() == ProxyIdentity.header.lowercased() }
        headers.append((ProxyIdentity.header, proxyInstance))
        let body = request.withBody { Array($0) }
        exchange.watchDownstream(connections)
        exchange.call = client.stream(.init(method: method, path: upstreamPath, headers: headers, body: body),
                                      head: { [exchange] status, reason, headers in exchange.head(status, reason, headers) },
                                      chunk: { [exchange] bytes in exchange.chunk(bytes) },
                                      done: { [exchange, log] answer in
                                          if case .noAnswer(let why) = answer {
                                              log.warn("forwarding failed", [("path", upstreamPath), ("error", why)])
                                          }
                                          exchange.done(answer)
                                      })
    }

    static func command(_ method: String) -> evhttp_cmd_type? {
        switch method {
        case "GET": return EVHTTP_REQ_GET
        case "POST": return EVHTTP_REQ_POST
        case "HEAD": return EVHTTP_REQ_HEAD
        case "PUT": return EVHTTP_REQ_PUT
        case "DELETE": return EVHTTP_REQ_DELETE
        case "OPTIONS": return EVHTTP_REQ_OPTIONS
        case "PATCH": return EVHTTP_REQ_PATCH
        default: return nil
        }
    }
}

/// One forwarded request: the downstream request libevent owns, and the upstream call.
/// The downstream may close first; then libevent frees its request and we must not touch it.
private final class Exchange {
    private let request: OpaquePointer
    private let connection: OpaquePointer?
    private let log: Logger
    var call: UpstreamCall?
    private var started = false
    private var gone = false
    private weak var connections: ConnectionGuard?
    private var watchID: Int?
    /// Called once, when the exchange is over (answered, failed, or its client left).
    private var finished: (() -> Void)?

    init(request: OpaquePointer, log: Logger, finished: @escaping () -> Void) {
        self.request = request
        connection = evhttp_request_get_connection(request)
        self.log = log
        self.finished = finished
    }

    private func finish() {
        finished?()
        finished = nil
    }

    /// Learns of the downstream connection closing. The handler holds self until it fires or
    /// we stop watching (reply finished).
    func watchDownstream(_ connections: ConnectionGuard?) {
        guard let connection, let connections else { return }
        self.connections = connections
        watchID = connections.onClose(connection) { [self] in
            watchID = nil
            gone = true
            call?.cancel()
            finish()
            log.debug("client left before the upstream answered; forward cancelled")
        }
    }

    private func stopWatching() {
        guard let id = watchID, let connection else { return }
        watchID = nil
        connections?.cancelOnClose(connection, id)
    }

    func head(_ status: Int, _ reason: String, _ headers: [(String, String)]) {
        guard !gone, !started else { return }
        let out = evhttp_request_get_output_headers(request)
        for (name, value) in headers where !ReverseProxy.hopByHop.contains(name.lowercased()) {
            evhttp_add_header(out, name, value)
        }
        started = true
        evhttp_send_reply_start(request, Int32(status), reason.isEmpty ? "Upstream" : reason)
    }

    func chunk(_ bytes: [UInt8]) {
        guard !gone, started, !bytes.isEmpty else { return }
        let buf = evbuffer_new()
        bytes.withUnsafeBytes { _ = evbuffer_add(buf, $0.baseAddress, $0.count) }
        evhttp_send_reply_chunk(request, buf)
        evbuffer_free(buf)
    }

    func done(_ answer: UpstreamAnswer) {
        finish()
        guard !gone else { return }
        stopWatching()
        if started {
            evhttp_send_reply_end(request)
            return
        }
        // No answer at all: a short JSON error, 504 for a timeout, 502 otherwise.
        let (status, text): (Int32, String)
        switch answer {
        case .noAnswer(let why) where why == "timeout": (status, text) = (504, "upstream did not answer in time")
        case .noAnswer(let why): (status, text) = (502, "upstream unavailable: \(why)")
        case .status(let code, _): (status, text) = (502, "upstream answered \(code) without a usable response")
        }
        HTTPRequest(raw: request).reply(status, ErrorBody.message(text))
    }
}
