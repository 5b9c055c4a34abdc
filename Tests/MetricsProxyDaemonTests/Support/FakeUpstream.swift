import Foundation

/// The recording fake Unleash (Tests/Fixtures/fake_upstream.py), over HTTP or HTTPS.
final class FakeUpstream {
    struct Recorded {
        var method: String
        var path: String
        var headers: [(String, String)]
        var body: String
        var status: Int
        /// Arrival time on the fake's clock (epoch seconds).
        var t: Double = 0
        /// What the fake, acting as the Unleash server, did with the request's impact metrics:
        /// "none", "stored", or "dropped: …" / "aborted: …" / "refused: …" with the reason.
        var impact: String?
        /// Whether the fake has sent its answer (it records a request before it answers).
        var answered = false

        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
        var json: [String: Any] { ((try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]) ?? [:] }
    }

    let process = Process()
    let dir: URL
    private(set) var port: UInt16 = 0

    /// With `cert`/`key`, serves HTTPS.
    /// `port` 0 picks a free one; a fixed port brings an upstream "back" where it was down.
    /// `script` is in force before the first connection: an upstream brought back to a proxy
    /// that is retrying must not answer its first request with the default 202.
    init(cert: String? = nil, key: String? = nil, port: UInt16 = 0, features: String? = nil,
         script: [[String: Any]]? = nil) throws {
        dir = Paths.tempDir("upstream")
        let portFile = dir.appendingPathComponent("port").path
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        var args = ["python3", Paths.fixtures.appendingPathComponent("fake_upstream.py").path,
                    "--host", "127.0.0.1", "--port", "\(port)", "--port-file", portFile]
        if let cert, let key { args += ["--cert", cert, "--key", key] }
        if let features { args += ["--features", features] }
        if let script {
            let file = dir.appendingPathComponent("script.json")
            try JSONSerialization.data(withJSONObject: script).write(to: file)
            args += ["--script", file.path]
        }
        process.arguments = args
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        waitFor("the fake upstream to listen") { FileManager.default.fileExists(atPath: portFile) }
        self.port = UInt16((try String(contentsOfFile: portFile, encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines))!
        // The control API is plain HTTP only when the upstream is; over TLS the tests read
        // what was recorded through the same TLS port with curl-free checks in Python.
        isTLS = cert != nil
    }

    let isTLS: Bool

    deinit {
        if process.isRunning { process.terminate(); process.waitUntilExit() }
        try? FileManager.default.removeItem(at: dir)
    }

    var url: String { "\(isTLS ? "https" : "http")://127.0.0.1:\(port)/api" }

    private func control(_ method: String, _ path: String, body: String = "") throws -> HTTPClient.Response {
        precondition(!isTLS, "use requestsOverTLS for an HTTPS fake upstream")
        let c = HTTPClient(.tcp("127.0.0.1", port))
        return try c.request(method, path, headers: [("Content-Type", "application/json")], body: Array(body.utf8))
    }

    func requests(path: String? = nil) throws -> [Recorded] {
        let r: HTTPClient.Response
        if isTLS {
            r = try tlsControl("/_control/requests")
        } else {
            r = try control("GET", "/_control/requests")
        }
        let list = (try JSONSerialization.jsonObject(with: Data(r.body)) as? [[String: Any]]) ?? []
        return list.map { d in
            Recorded(method: d["method"] as? String ?? "", path: d["path"] as? String ?? "",
                     headers: (d["headers"] as? [[String]] ?? []).map { ($0[0], $0[1]) },
                     body: d["body"] as? String ?? "", status: d["status"] as? Int ?? 0, t: d["t"] as? Double ?? 0,
                     impact: d["impact"] as? String, answered: d["answered"] as? Bool ?? false)
        }.filter { path == nil || $0.path == path }
    }

    /// Scripted answers, e.g. `[["status": 503, "repeat": 2]]`; `replace` swaps the whole
    /// script at once, so no request is answered by the default in between.
    func script(_ answers: [[String: Any]], replace: Bool = false) throws {
        let body = String(decoding: try JSONSerialization.data(withJSONObject: ["answers": answers, "replace": replace]), as: UTF8.self)
        _ = try control("POST", "/_control/script", body: body)
    }

    func reset() throws { _ = try control("POST", "/_control/reset") }

    /// The impact metrics the fake holds as the server's registry would, by sanitized name:
    /// type, help and series (labels with the server's `origin` and `type`; a value, or
    /// count, sum and buckets by `le`), and how often it recreated a metric, dropped a
    /// request's array, aborted one or refused a bulk request.
    func impact() throws -> ImpactState {
        let r = try control("GET", "/_control/impact")
        let d = try XCTUnwrapJSON(r.body)
        var state = ImpactState(resets: d["resets"] as? Int ?? -1, droppedArrays: d["dropped_arrays"] as? Int ?? -1,
                                aborted: d["aborted"] as? Int ?? -1, refused: d["refused"] as? Int ?? -1)
        for (name, m) in d["metrics"] as? [String: [String: Any]] ?? [:] {
            for s in m["series"] as? [[String: Any]] ?? [] {
                var labels = s["labels"] as? [String: String] ?? [:]
                labels["origin"] = nil
                labels["type"] = nil
                let key = ImpactState.Key(name: name, labels: labels)
                state.types[name] = m["type"] as? String
                if let v = s["value"] as? Double {
                    state.values[key] = v
                } else {
                    state.histograms[key] = ImpactState.Histogram(count: s["count"] as? Double ?? -1, sum: s["sum"] as? Double ?? -1,
                                                                  buckets: s["buckets"] as? [String: Double] ?? [:])
                }
            }
        }
        return state
    }

    private func XCTUnwrapJSON(_ body: [UInt8]) throws -> [String: Any] {
        guard let d = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            throw NSError(domain: "FakeUpstream", code: 1, userInfo: [NSLocalizedDescriptionKey: "not a JSON object"])
        }
        return d
    }

    /// Forgets the scripted answers but keeps what was recorded.
    func clearScript() throws { _ = try control("POST", "/_control/script/clear") }

    /// Times (epoch seconds, the fake's clock) at which each request arrived, in order.
    func arrivalTimes(path: String) throws -> [Double] {
        let r = try control("GET", "/_control/requests")
        let list = (try JSONSerialization.jsonObject(with: Data(r.body)) as? [[String: Any]]) ?? []
        return list.filter { $0["path"] as? String == path }.compactMap { $0["t"] as? Double }
    }

    /// Whether the plain-HTTP fake on `port` has recorded a request to `path` (callable from
    /// any thread).
    static func hasRecorded(port: UInt16, path: String) -> Bool { recorded(port: port, path: path) > 0 }

    /// How many requests to `path` the plain-HTTP fake on `port` has recorded (callable from
    /// any thread).
    static func recorded(port: UInt16, path: String) -> Int {
        let c = HTTPClient(.tcp("127.0.0.1", port))
        guard let r = try? c.request("GET", "/_control/requests?path=\(path)"),
              let list = try? JSONSerialization.jsonObject(with: Data(r.body)) as? [Any] else { return 0 }
        return list.count
    }

    /// A port nothing listens on (yet): bound, read and closed.
    static func freePort() -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return UInt16(bigEndian: addr.sin_port)
    }

    /// Reads the control API of an HTTPS fake upstream with curl, trusting any certificate
    /// (this is the test reading its own fake, not the proxy's TLS path).
    private func tlsControl(_ path: String) throws -> HTTPClient.Response {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["curl", "-sk", "https://127.0.0.1:\(port)\(path)"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return HTTPClient.Response(status: 200, headers: [], body: Array(data))
    }
}

/// The fake upstream's impact registry, read back (`FakeUpstream.impact()`).
struct ImpactState: Equatable {
    struct Key: Hashable, CustomStringConvertible {
        var name: String
        /// Without the server's own `origin` and `type`; names sanitized as the server does.
        var labels: [String: String]
        var description: String { "\(name)\(labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })" }
    }

    struct Histogram: Equatable {
        var count: Double
        var sum: Double
        /// By `le` as the fake writes it: "10.0", "+Inf".
        var buckets: [String: Double]
    }

    var resets: Int
    var droppedArrays: Int
    var aborted: Int
    var refused: Int
    var types: [String: String] = [:]
    /// Counters' sums and gauges' values.
    var values: [Key: Double] = [:]
    var histograms: [Key: Histogram] = [:]
}
