import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A small blocking HTTP/1.1 client over real sockets, TCP or Unix, with keep-alive: what an
/// SDK does, without any library in between.
final class HTTPClient {
    enum Endpoint: CustomStringConvertible {
        case tcp(String, UInt16)
        case unix(String)

        var description: String {
            switch self {
            case .tcp(let h, let p): return "\(h):\(p)"
            case .unix(let p): return "unix:\(p)"
            }
        }
    }

    struct Response {
        var status: Int
        var headers: [(String, String)]
        var body: [UInt8]

        func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }

        var text: String { String(decoding: body, as: UTF8.self) }
        var json: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] }
    }

    struct Failure: Error, CustomStringConvertible { let description: String }

    let endpoint: Endpoint
    private var fd: Int32 = -1
    private var pending: [UInt8] = []

    init(_ endpoint: Endpoint) { self.endpoint = endpoint }
    deinit { disconnect() }

    func disconnect() {
        if fd >= 0 { close(fd) }
        fd = -1
        pending = []
    }

    func request(_ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8] = []) throws -> Response {
        let reused = fd >= 0
        do {
            return try attempt(method, path, headers, body)
        } catch {
            // A kept-alive connection the server closed meanwhile: one fresh try.
            guard reused else { throw error }
            disconnect()
            return try attempt(method, path, headers, body)
        }
    }

    func post(_ path: String, json: String, token: String? = nil, headers: [(String, String)] = []) throws -> Response {
        var h = [("Content-Type", "application/json")] + headers
        if let token { h.append(("Authorization", token)) }
        return try request("POST", path, headers: h, body: Array(json.utf8))
    }

    private func attempt(_ method: String, _ path: String, _ headers: [(String, String)], _ body: [UInt8]) throws -> Response {
        if fd < 0 { try connect() }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if !body.isEmpty || method == "POST" || method == "PUT" { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        try sendAll(Array(head.utf8) + body)
        let response = try readResponse(method: method)
        if response.header("Connection")?.lowercased() == "close" { disconnect() }
        return response
    }

    /// Sends raw bytes (for malformed requests) and reads one response, unless told not to.
    @discardableResult
    func raw(_ bytes: [UInt8], readResponse: Bool = true) throws -> Response? {
        if fd < 0 { try connect() }
        try sendAll(bytes)
        return readResponse ? try self.readResponse(method: "POST") : nil
    }

    /// Connects now (for tests that hold connections open without a request).
    func open() throws { if fd < 0 { try connect() } }

    /// How long a read may wait before it fails.
    func setReadTimeout(_ seconds: Double) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Reads one response to what was sent with `raw(_:readResponse: false)`.
    func readResponse() throws -> Response { try readResponse(method: "POST") }

    /// Whether the server closed the connection (a read sees end of file or a reset).
    func serverClosed() -> Bool {
        var b: UInt8 = 0
        let n = recv(fd, &b, 1, 0)
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    }

    private func connect() throws {
        switch endpoint {
        case .tcp(let host, let port):
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port.bigEndian
            inet_pton(AF_INET, host, &addr.sin_addr)
            let r = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard r == 0 else { let e = errno; disconnect(); throw Failure(description: "connect \(endpoint): \(String(cString: strerror(e)))") }
        case .unix(let path):
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { p in
                let b = Array(path.utf8)
                for i in 0..<min(b.count, p.count - 1) { p[i] = b[i] }
            }
            let r = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard r == 0 else { let e = errno; disconnect(); throw Failure(description: "connect \(endpoint): \(String(cString: strerror(e)))") }
        }
        var tv = timeval(tv_sec: 15, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    private func sendAll(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure(description: "send: \(String(cString: strerror(errno)))") }
            off += n
        }
    }

    private func fill() throws {
        var buf = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &buf, buf.count, 0)
        guard n > 0 else { throw Failure(description: n == 0 ? "connection closed by the server" : "recv: \(String(cString: strerror(errno)))") }
        pending += buf[0..<n]
    }

    private func readResponse(method: String) throws -> Response {
        let sep: [UInt8] = [13, 10, 13, 10]
        var end: Int?
        while end == nil {
            if let r = pending.firstRange(of: sep) { end = r.lowerBound; break }
            try fill()
        }
        let headText = String(decoding: pending[..<end!], as: UTF8.self)
        pending.removeFirst(end! + 4)
        var lines = headText.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw Failure(description: "bad status line") }
        let headers = lines.compactMap { line -> (String, String)? in
            guard let c = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<c]), line[line.index(after: c)...].trimmingCharacters(in: .whitespaces))
        }
        var response = Response(status: status, headers: headers, body: [])
        let length = method == "HEAD" || status == 304 || status == 204 ? 0 : Int(response.header("Content-Length") ?? "0") ?? 0
        while pending.count < length { try fill() }
        response.body = Array(pending[..<length])
        pending.removeFirst(length)
        return response
    }
}
