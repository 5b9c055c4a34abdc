import CLibevent
import Glibc
import MetricsProxyCore

/// A borrowed view of one `evhttp_request` being served. libevent owns the request; it is
/// valid until `reply` is called, which must happen exactly once.
struct HTTPRequest {
    let raw: OpaquePointer

    var method: String {
        switch evhttp_request_get_command(raw) {
        case EVHTTP_REQ_GET: return "GET"
        case EVHTTP_REQ_POST: return "POST"
        case EVHTTP_REQ_HEAD: return "HEAD"
        case EVHTTP_REQ_PUT: return "PUT"
        case EVHTTP_REQ_DELETE: return "DELETE"
        case EVHTTP_REQ_OPTIONS: return "OPTIONS"
        case EVHTTP_REQ_PATCH: return "PATCH"
        case EVHTTP_REQ_TRACE: return "TRACE"
        case EVHTTP_REQ_CONNECT: return "CONNECT"
        default: return "UNKNOWN"
        }
    }

    /// Whether this is a POST whose URI is exactly `path` (no String made: the hot path).
    func isPost(exactly path: StaticString) -> Bool {
        guard evhttp_request_get_command(raw) == EVHTTP_REQ_POST, let u = evhttp_request_get_uri(raw) else { return false }
        return strcmp(u, UnsafeRawPointer(path.utf8Start).assumingMemoryBound(to: CChar.self)) == 0
    }

    var uri: String { evhttp_request_get_uri(raw).map { String(cString: $0) } ?? "/" }

    /// A request header, matched case-insensitively (libevent compares names that way).
    func header(_ name: String) -> String? {
        guard let headers = evhttp_request_get_input_headers(raw),
              let v = evhttp_find_header(headers, name) else { return nil }
        return String(cString: v)
    }

    /// Every request header, in order, as sent.
    func headers() -> [(String, String)] {
        var out: [(String, String)] = []
        var kv = evhttp_request_get_input_headers(raw)?.pointee.tqh_first
        while let e = kv {
            out.append((String(cString: e.pointee.key), String(cString: e.pointee.value)))
            kv = e.pointee.next.tqe_next
        }
        return out
    }

    /// The headers a metrics or register post is judged by, found in one walk over the
    /// header list (the first of each name, as `header(_:)` finds it).
    func postHeaders() -> Ingest.Headers {
        var out = Ingest.Headers()
        var seenType = false, seenEncoding = false, seenAuthorization = false, seenInterval = false
        var kv = evhttp_request_get_input_headers(raw)?.pointee.tqh_first
        while let e = kv {
            kv = e.pointee.next.tqe_next
            let key = e.pointee.key!, value = e.pointee.value!
            switch key[0] | 0x20 {
            case 0x63: // c
                if !seenType, strcasecmp(key, "Content-Type") == 0 {
                    seenType = true
                    // What SDKs send, as a literal: no String to allocate.
                    out.contentType = strcmp(value, "application/json") == 0 ? "application/json" : String(cString: value)
                } else if !seenEncoding, strcasecmp(key, "Content-Encoding") == 0 {
                    seenEncoding = true
                    out.contentEncoding = String(cString: value)
                }
            case 0x61: // a
                if !seenAuthorization, strcasecmp(key, "Authorization") == 0 {
                    seenAuthorization = true
                    out.authorization = String(cString: value)
                }
            case 0x75: // u
                if !seenInterval, strcasecmp(key, "unleash-interval") == 0 {
                    seenInterval = true
                    out.interval = String(cString: value)
                }
            case 0x78: // x
                if out.proxyInstance == nil, strcasecmp(key, ProxyIdentity.header) == 0 {
                    out.proxyInstance = String(cString: value)
                } else if out.batch == nil, strcasecmp(key, ProxyIdentity.batchHeader) == 0 {
                    out.batch = String(cString: value)
                }
            default:
                break
            }
        }
        return out
    }

    /// How many header lines the request has, counting no further than `limit`.
    func headerCount(atMost limit: Int) -> Int? {
        var n = 0
        var kv = evhttp_request_get_input_headers(raw)?.pointee.tqh_first
        while let e = kv, n < limit {
            n += 1
            kv = e.pointee.next.tqe_next
        }
        return n
    }

    /// The connection the request came on.
    var connection: OpaquePointer? { evhttp_request_get_connection(raw) }

    /// The client's IP address; nil on the Unix socket (libevent reports port 0 there).
    var peerAddress: String? {
        guard let conn = evhttp_request_get_connection(raw) else { return nil }
        var address: UnsafeMutablePointer<CChar>?
        var port: UInt16 = 0
        evhttp_connection_get_peer(conn, &address, &port)
        guard port != 0, let address else { return nil }
        return String(cString: address)
    }

    /// Calls `body` with the request body as one contiguous buffer.
    func withBody<T>(_ body: (UnsafeBufferPointer<UInt8>) -> T) -> T {
        guard let buf = evhttp_request_get_input_buffer(raw) else { return body(UnsafeBufferPointer(start: nil, count: 0)) }
        let n = evbuffer_get_length(buf)
        guard n > 0, let p = evbuffer_pullup(buf, -1) else { return body(UnsafeBufferPointer(start: nil, count: 0)) }
        return body(UnsafeBufferPointer(start: p, count: n))
    }

    /// Sends the answer. A JSON body gets its content type; errors keep keep-alive (we never
    /// use evhttp_send_error, which drops headers and closes the connection). The Date header
    /// (and an empty body's Content-Length) are added here, the Date formatted once a second,
    /// so evhttp formats neither per reply; they come where evhttp would put them.
    func reply(_ status: Int32, _ body: [UInt8] = [], contentType: String? = "application/json", headers: [(String, String)] = []) {
        let out = evhttp_request_get_output_headers(raw)
        if !body.isEmpty, let contentType { evhttp_add_header(out, "Content-Type", contentType) }
        for (k, v) in headers { evhttp_add_header(out, k, v) }
        Self.date.withCurrent { _ = evhttp_add_header(out, "Date", $0) }
        // A StaticString's bytes go to libevent as they are; a String would be copied into a
        // fresh C array on every reply.
        let phrase = UnsafeRawPointer(reason(status).utf8Start).assumingMemoryBound(to: CChar.self)
        if body.isEmpty {
            if evhttp_request_get_command(raw) != EVHTTP_REQ_HEAD { evhttp_add_header(out, "Content-Length", "0") }
            evhttp_send_reply(raw, status, phrase, nil)
            return
        }
        let buf = evbuffer_new()
        body.withUnsafeBytes { _ = evbuffer_add(buf, $0.baseAddress, $0.count) }
        evhttp_send_reply(raw, status, phrase, buf)
        evbuffer_free(buf)
    }

    /// Replies are sent on the loop thread only.
    nonisolated(unsafe) private static let date = DateHeader()

    private func reason(_ status: Int32) -> StaticString {
        switch status {
        case 200: return "OK"
        case 202: return "Accepted"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 413: return "Payload Too Large"
        case 415: return "Unsupported Media Type"
        case 431: return "Request Header Fields Too Large"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        default: return "Status"
        }
    }
}

/// The Date header's value (`HTTPDate.format`), formatted again only when the second changes.
final class DateHeader {
    private var second: Int64 = -1
    private var text = ""

    func withCurrent<T>(_ body: (UnsafePointer<CChar>) -> T) -> T {
        let now = nowMillis()
        if now / 1000 != second {
            second = now / 1000
            text = HTTPDate.format(now)
        }
        return text.withCString(body)
    }
}
