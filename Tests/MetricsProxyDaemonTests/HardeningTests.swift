import Foundation
import XCTest

/// The limits a hostile or broken client meets: per-post limits, tokens, headers, the request
/// deadline, the connection cap, running out of file descriptors, and the socket directory.
final class HardeningTests: XCTestCase {
    static func post(app: String = "app", instance: String = "i", _ toggles: String) -> String {
        #"{"appName":"\#(app)","instanceId":"\#(instance)","bucket":{"start":"2026-11-28T10:00:00Z","stop":"2026-11-28T10:00:10Z","toggles":\#(toggles)}}"#
    }

    /// The yes counts upstream received, by feature name.
    static func upstreamCounts(_ upstream: FakeUpstream) throws -> [String: Int] {
        Dictionary(Ledger.fromUpstream(try upstream.requests()).sums.map { ($0.key.feature, $0.value.yes) }, uniquingKeysWith: +)
    }

    func testPostLimitsAnswerClearlyAndLeaveTheWindowAlone() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "1h",
                                                        extra: "[limits]\nmax_toggles_per_post = 3\nmax_name_length = 16"))
        let c = proxy.unix()
        let long = String(repeating: "n", count: 17)
        let cases: [(String, Int, String)] = [
            (Self.post(#"{"a":{"yes":1},"b":{"yes":1},"c":{"yes":1},"d":{"yes":1}}"#), 413, "at most 3"),
            (Self.post(#"{"\#(long)":{"yes":1}}"#), 400, "/body/bucket/toggles/\(long)"),
            // An escaped name goes through the full decoder: held to the same limit.
            (Self.post(#"{"\u006e\#(long.dropFirst())":{"yes":1}}"#), 400, "/body/bucket/toggles/\(long)"),
            (Self.post(app: long, #"{"a":{"yes":1}}"#), 400, "/body/appName"),
            (Self.post(instance: long, #"{"a":{"yes":1}}"#), 400, "/body/instanceId"),
            (Self.post(#"{"a":{"yes":1,"variants":{"\#(long)":1}}}"#), 400, "/body/bucket/toggles/a/variants/\(long)"),
            // The same in the shapes SDKs write (read by the word-matching reader).
            (Self.post(#"{"a":{"yes":1,"no":0,"variants":{"v":1,"\#(long)":1}}}"#), 400, "/body/bucket/toggles/a/variants/\(long)"),
            (Self.post(#"{"a": {"yes": 1, "no": 0, "variants": {}}, "\#(long)": {"yes": 1, "no": 0, "variants": {}}}"#), 400,
             "/body/bucket/toggles/\(long)"),
        ]
        for (body, status, mention) in cases {
            let r = try c.post("/api/client/metrics", json: body, token: tokenA)
            XCTAssertEqual(r.status, status, body)
            XCTAssertTrue(r.text.contains(mention), "\(r.text) should name \(mention)")
            if status == 400 {
                XCTAssertEqual(r.json?["name"] as? String, "ValidationError")
                XCTAssertTrue(r.text.contains("at most 16 bytes"), r.text)
            }
        }
        let register = #"{"appName":"\#(long)","interval":10,"started":"2026-11-28T10:00:00Z","strategies":[]}"#
        XCTAssertEqual(try c.post("/api/client/register", json: register, token: tokenA).status, 400)
        // At the limits exactly: accepted.
        let edge = String(repeating: "e", count: 16)
        XCTAssertEqual(try c.post("/api/client/metrics", json: Self.post(app: edge, #"{"a":{"yes":2},"b":{"yes":3},"\#(edge)":{"yes":4}}"#),
                                  token: tokenA).status, 202)
        proxy.signal(SIGTERM)
        XCTAssertEqual(proxy.waitForExit(), 0)
        XCTAssertEqual(try Self.upstreamCounts(upstream), ["a": 2, "b": 3, edge: 4], "refused posts never reach the window")
    }

    func testAllowTokensRefusesEveryOtherToken() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "1h", listen: "allow_tokens = \(tokenA), other:x.y"))
        let c = proxy.tcp()
        let body = Self.post(#"{"a":{"yes":1}}"#)
        XCTAssertEqual(try c.post("/api/client/metrics", json: body, token: tokenA).status, 202)
        XCTAssertEqual(try c.post("/api/client/metrics", json: body, token: "Bearer " + tokenA).status, 202)
        for token in [tokenB, nil] {
            let r = try c.post("/api/client/metrics", json: body, token: token)
            XCTAssertEqual(r.status, 401)
            XCTAssertTrue(r.text.contains(token == nil ? "requires an API token" : "not accepted"), r.text)
        }
        // The full decoder's path (an escaped name) too, and registrations.
        XCTAssertEqual(try c.post("/api/client/metrics", json: Self.post(#"{"\u0061":{"yes":1}}"#), token: tokenB).status, 401)
        let register = #"{"appName":"app","interval":10,"started":"2026-11-28T10:00:00Z","strategies":[]}"#
        XCTAssertEqual(try c.post("/api/client/register", json: register, token: tokenB).status, 401)
        proxy.signal(SIGTERM)
        XCTAssertEqual(proxy.waitForExit(), 0)
        let sent = try upstream.requests(path: "/api/client/metrics/bulk")
        XCTAssertEqual(Set(sent.compactMap { $0.header("Authorization") }), [tokenA])
        XCTAssertEqual(try Self.upstreamCounts(upstream), ["a": 2])
    }

    func testHeaderCountAndSizeLimits() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, extra: "[limits]\nmax_headers = 10\nmax_header_size = 1KiB"))
        let many = (0..<12).map { ("X-Extra-\($0)", "v") }
        let c = proxy.tcp()
        let r = try c.request("GET", "/healthz", headers: many)
        XCTAssertEqual(r.status, 431)
        XCTAssertTrue(r.text.contains("too many request headers"), r.text)
        let big = HTTPClient(.tcp("127.0.0.1", proxy.tcpPort))
        let answer = try big.request("GET", "/healthz", headers: [("X-Big", String(repeating: "b", count: 2048))])
        XCTAssertEqual(answer.status, 400, "libevent's own answer to an oversized header block")
        XCTAssertTrue(big.serverClosed(), "an oversized header block closes the connection")
        XCTAssertEqual(try proxy.tcp().request("GET", "/healthz", headers: Array(many.prefix(5))).status, 200)
    }

    func testASlowDripClientIsCutOffAtTheRequestDeadline() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, listen: "request_timeout = 1s\nidle_timeout = 30s\nmin_rate = 0"))
        let idle = proxy.tcp()
        XCTAssertEqual(try idle.request("GET", "/healthz").status, 200)
        // On a fresh connection, and on one that has already been answered (the deadline
        // is armed again for each request).
        for reused in [false, true] {
            let drip = proxy.unix()
            if reused { XCTAssertEqual(try drip.request("GET", "/healthz").status, 200) }
            try drip.raw(Array("POST /api/client/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n".utf8),
                         readResponse: false)
            let started = Date()
            var answer: HTTPClient.Response?
            drip.setReadTimeout(0.2)
            // One byte every 200 ms: each read is quick, so only the proxy's own deadline ends it.
            while answer == nil, Date().timeIntervalSince(started) < 6 {
                _ = try? drip.raw([UInt8(ascii: " ")], readResponse: false)
                answer = try? drip.readResponse()
                XCTAssertEqual(try proxy.tcp().request("GET", "/healthz").status, 200, "others are served meanwhile")
            }
            let elapsed = Date().timeIntervalSince(started)
            XCTAssertEqual(answer?.status, 408, reused ? "reused connection" : "fresh connection")
            XCTAssertGreaterThanOrEqual(elapsed, 0.9)
            XCTAssertLessThan(elapsed, 3.5)
            drip.setReadTimeout(2)
            XCTAssertTrue(drip.serverClosed())
        }
        // An idle keep-alive connection is not a slow request: idle_timeout governs it.
        Thread.sleep(forTimeInterval: 1.5)
        XCTAssertEqual(try idle.request("GET", "/healthz").status, 200)
        XCTAssertEqual(value(try scrape(proxy), "metrics_proxy_requests_timed_out_total"), 2)
    }

    /// At the cap the proxy makes room instead of locking everyone out: the longest-idle
    /// connection goes first; when every connection is mid-request, the one that has made no
    /// progress for the longest (408); while all are young or keeping up, only probes get in.
    func testAtTheConnectionCapTheIdleGoFirstThenTheSlowest() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, listen: "max_connections = 8\nmin_rate = 0"))
        var held: [HTTPClient] = []
        for _ in 0..<8 {
            let h = HTTPClient(.tcp("127.0.0.1", proxy.tcpPort))
            try h.open()
            held.append(h)
            usleep(20_000) // accepted in this order
        }
        usleep(400_000) // all idle for longer than a just-accepted connection's grace
        let t0 = Date()
        XCTAssertEqual(try proxy.unix().request("GET", "/healthz").status, 200)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 0.5, "answered at once, at the cap")
        XCTAssertTrue(held[0].serverClosed(), "the longest-idle connection made room")
        for h in held { h.disconnect() }
        waitFor("the connections to be counted closed") { (try? self.connectionsOpen(proxy)) == 1 }

        // Every connection mid-request and young: accepting pauses.
        let busy = try (0..<8).map { _ -> HTTPClient in
            let c = HTTPClient(.tcp("127.0.0.1", proxy.tcpPort))
            try c.raw(Array("POST /api/client/metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{".utf8), readResponse: false)
            return c
        }
        // No room can be made, but a probe still gets in (a reserve past the cap, for probes
        // only): the kubelet does not restart a proxy that is merely busy.
        let t1 = Date()
        XCTAssertEqual(try proxy.unix().request("GET", "/healthz").status, 200)
        XCTAssertLessThan(Date().timeIntervalSince(t1), 0.5)
        let refused = try proxy.tcp().post("/api/client/metrics", json: ValidationTests.bucket(#"{"f":{"yes":1}}"#), token: tokenA)
        XCTAssertEqual(refused.status, 503, "past the cap, only probes")
        XCTAssertEqual(refused.header("Retry-After"), "1")
        // A second on, none of the eight has sent a byte more: they make room, one at a time.
        var posted = 0
        waitFor("a metric post to be taken again", timeout: 5) {
            posted = (try? proxy.tcp().post("/api/client/metrics", json: ValidationTests.bucket(#"{"f":{"yes":1}}"#), token: tokenA).status) ?? 0
            return posted == 202
        }
        let cut = busy.filter { b in
            b.setReadTimeout(0.2)
            return (try? b.readResponse())?.status == 408
        }
        XCTAssertGreaterThanOrEqual(cut.count, 1, "stalled requests made room")
        XCTAssertLessThan(cut.count, 8)
        for b in busy { b.disconnect() }
        let metrics = try scrape(proxy)
        XCTAssertGreaterThanOrEqual(value(metrics, "metrics_proxy_connections_shed_total", ["reason": "idle"]) ?? 0, 1)
        XCTAssertGreaterThanOrEqual(value(metrics, "metrics_proxy_connections_shed_total", ["reason": "slow"]) ?? 0, 1)
        XCTAssertEqual(value(metrics, "metrics_proxy_accept_pauses_total", ["reason": "max_connections"]), 0,
                       "never paused: there was always room to make, or the reserve for a probe")
    }

    /// Uploads that keep up `min_rate` are never closed to make room, whatever their age: at a
    /// cap they fill, a newcomer waits in the probe reserve (503 for a post) and every upload
    /// is taken whole.
    func testUploadsKeepingUpAreNeverShed() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, listen: "max_connections = 8\nmin_rate = 200"))
        let tcp = proxy.tcpPort
        let body = Array((ValidationTests.bucket(#"{"f":{"yes":1}}"#) + String(repeating: " ", count: 2400)).utf8)
        let results = parallel(9) { i -> Int in
            let c = HTTPClient(.tcp("127.0.0.1", tcp))
            if i == 8 {
                // 3 s on, every upload is over two seconds old and has been measured (a
                // measurement ends between 2 and 2.5 s, later if the sweep timer is late).
                Thread.sleep(forTimeInterval: 3.0)
                return (try? c.post("/api/client/metrics", json: ValidationTests.bucket(#"{"g":{"yes":1}}"#), token: tokenA).status) ?? 0
            }
            do {
                try c.raw(Array("POST /api/client/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: \(tokenA)\r\nContent-Length: \(body.count)\r\n\r\n".utf8),
                          readResponse: false)
                // About 600 bytes a second for four seconds: three times min_rate.
                for start in stride(from: 0, to: body.count, by: 60) {
                    try c.raw(Array(body[start..<min(body.count, start + 60)]), readResponse: false)
                    Thread.sleep(forTimeInterval: 0.1)
                }
                c.setReadTimeout(5)
                return try c.readResponse().status
            } catch {
                return -1
            }
        }
        XCTAssertEqual(Array(results.prefix(8)), Array(repeating: 202, count: 8), "every upload taken whole")
        XCTAssertEqual(results[8], 503, "the newcomer got the probe reserve, not an upload's place")
        let metrics = try scrape(proxy)
        XCTAssertEqual(value(metrics, "metrics_proxy_connections_shed_total", ["reason": "slow"]), 0)
        XCTAssertEqual(value(metrics, "metrics_proxy_connections_shed_total", ["reason": "min_rate"]), 0)
    }

    /// A request that trickles below `[listen] min_rate` is cut off in seconds, long before
    /// `request_timeout`; one sent slowly but above it is read whole.
    func testARequestBelowTheMinimumRateIsCutOffEarly() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, listen: "request_timeout = 30s\nmin_rate = 500"))
        let drip = proxy.tcp()
        try drip.raw(Array("POST /api/client/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n".utf8),
                     readResponse: false)
        drip.setReadTimeout(0.2)
        let started = Date()
        var answer: HTTPClient.Response?
        while answer == nil, Date().timeIntervalSince(started) < 8 {
            _ = try? drip.raw([UInt8(ascii: " ")], readResponse: false)
            answer = try? drip.readResponse()
        }
        let elapsed = Date().timeIntervalSince(started)
        XCTAssertEqual(answer?.status, 408)
        XCTAssertLessThan(elapsed, 4, "cut off by min_rate, not the 30 s deadline")
        // Above the rate: a 3,000-byte post sent over two seconds arrives.
        let body = Array((ValidationTests.bucket(#"{"f":{"yes":1}}"#) + String(repeating: " ", count: 3000)).utf8)
        let steady = proxy.unix()
        try steady.raw(Array("POST /api/client/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: \(tokenA)\r\nContent-Length: \(body.count)\r\n\r\n".utf8),
                       readResponse: false)
        for start in stride(from: 0, to: body.count, by: 150) {
            try steady.raw(Array(body[start..<min(body.count, start + 150)]), readResponse: false)
            usleep(100_000)
        }
        steady.setReadTimeout(5)
        XCTAssertEqual(try steady.readResponse().status, 202)
        let metrics = try scrape(proxy)
        XCTAssertEqual(value(metrics, "metrics_proxy_connections_shed_total", ["reason": "min_rate"]), 1)
        XCTAssertEqual(value(metrics, "metrics_proxy_requests_timed_out_total"), 0)
    }

    func connectionsOpen(_ proxy: ProxyProcess) throws -> Int? {
        value(try scrape(proxy), "metrics_proxy_connections").map { Int($0) }
    }

    func testRunningOutOfFileDescriptorsPausesAcceptInsteadOfSpinning() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url), maxOpenFiles: 48)
        let before = proxy.openFiles
        let clients = (0..<60).map { _ in HTTPClient(.tcp("127.0.0.1", proxy.tcpPort)) }
        for c in clients { try c.open() }
        waitFor("accept to fail for want of descriptors") { proxy.log.contains("accept failed; pausing") }
        let cpu = proxy.cpuSeconds
        Thread.sleep(forTimeInterval: 2)
        let spent = proxy.cpuSeconds - cpu
        XCTAssertLessThan(spent, 0.3, "the proxy spun on accept: \(spent) s of CPU in 2 s")
        for c in clients { c.disconnect() }
        waitFor("the proxy to serve again") { (try? proxy.tcp().request("GET", "/healthz").status) == 200 }
        waitFor("every descriptor to be released (\(before) before)") { proxy.openFiles <= before + 1 }
        XCTAssertGreaterThanOrEqual(value(try scrape(proxy), "metrics_proxy_accept_pauses_total", ["reason": "fd_limit"]) ?? 0, 1)
    }

    func testTheSocketDirectoryMustNotBeWritableByOthers() throws {
        let dir = Paths.tempDir("sockdir")
        defer { try? FileManager.default.removeItem(at: dir) }
        let open = dir.appendingPathComponent("open")
        try FileManager.default.createDirectory(at: open, withIntermediateDirectories: false)
        chmod(open.path, 0o1777)
        let spool = dir.appendingPathComponent("spool").path
        let config = dir.appendingPathComponent("proxy.conf")
        func write(_ socket: String) throws {
            try "[listen]\ntcp = off\nunix = \(socket)\n[spool]\ndir = \(spool)\n".write(to: config, atomically: true, encoding: .utf8)
        }
        try write(open.appendingPathComponent("proxy.sock").path)
        let refused = try runProxy(["--config", config.path])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("writable by every user"), refused.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: spool), "refused before the spool is touched")
        // A missing directory is created, closed to others; the socket gets unix_mode.
        let made = dir.appendingPathComponent("made")
        let proxy = try ProxyProcess(config: "[listen]\ntcp = 127.0.0.1:0\nunix = \(made.path)/proxy.sock\nunix_mode = 0600\n[spool]\ndir = {SPOOL}\n")
        var st = stat()
        XCTAssertEqual(stat(made.path, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o750)
        XCTAssertEqual(stat(made.path + "/proxy.sock", &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        XCTAssertEqual(try HTTPClient(.unix(made.path + "/proxy.sock")).request("GET", "/healthz").status, 200)
        proxy.signal(SIGTERM)
        XCTAssertEqual(proxy.waitForExit(), 0)
    }

    /// A socket directory owned by root, 0755 (what the kubelet makes of a hostPath), passes
    /// the ownership rule but a proxy that is not root cannot create its socket there: both the
    /// start and `--check-config` say so, naming the owner, the mode and the fix, not just
    /// "Permission denied".
    func testASocketDirectoryTheProxyCannotWriteIsNamedWithItsFix() throws {
        XCTAssertEqual(geteuid(), 0, "making a root-owned directory for another user needs root (CI runs as root)")
        let dir = Paths.tempDir("sockdir-root")
        defer { try? FileManager.default.removeItem(at: dir) }
        let rootOwned = dir.appendingPathComponent("run")
        try FileManager.default.createDirectory(at: rootOwned, withIntermediateDirectories: false)
        chmod(rootOwned.path, 0o755)
        chmod(dir.path, 0o755)
        let spool = dir.appendingPathComponent("spool")
        try FileManager.default.createDirectory(at: spool, withIntermediateDirectories: false)
        chown(spool.path, 65534, 65534)
        let config = dir.appendingPathComponent("proxy.conf")
        try "[listen]\ntcp = off\nunix = \(rootOwned.path)/proxy.sock\n[spool]\ndir = \(spool.path)\n".write(to: config, atomically: true, encoding: .utf8)
        chmod(config.path, 0o644)
        func asNobody(_ arguments: [String]) throws -> (status: Int32, stderr: String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            p.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", Paths.binary.path] + arguments
            let err = Pipe()
            p.standardError = err
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            return (p.terminationStatus, text)
        }
        let fix = "does not let this proxy (uid 65534) create its socket; make it the proxy's (chown 65534 \(rootOwned.path)"
        let started = try asNobody(["--config", config.path])
        XCTAssertEqual(started.status, 2, started.stderr)
        XCTAssertTrue(started.stderr.contains("owner uid 0, mode 755") && started.stderr.contains(fix), started.stderr)
        let checked = try asNobody(["--check-config", "--config", config.path])
        XCTAssertNotEqual(checked.status, 0)
        XCTAssertTrue(checked.stderr.contains("\(config.path):3: listen.unix") && checked.stderr.contains(fix), checked.stderr)
        // Made the proxy's, both pass.
        chown(rootOwned.path, 65534, 65534)
        XCTAssertEqual(try asNobody(["--check-config", "--config", config.path]).status, 0)
    }

    func testInstancesCountAgainstTheKeyCap() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "1h", extra: "[limits]\nmax_keys = 3"))
        let c = proxy.tcp()
        for i in 0..<3 {
            XCTAssertEqual(try c.post("/api/client/metrics", json: Self.post(instance: "i\(i)", "{}"), token: tokenA).status, 202)
        }
        XCTAssertEqual(try c.post("/api/client/metrics", json: Self.post(instance: "i9", "{}"), token: tokenA).status, 503)
        let register = #"{"appName":"app","instanceId":"r","interval":10,"started":"2026-11-28T10:00:00Z","strategies":[]}"#
        XCTAssertEqual(try c.post("/api/client/register", json: register, token: tokenA).status, 503)
        XCTAssertEqual(try c.post("/api/client/metrics", json: Self.post(instance: "i1", "{}"), token: tokenA).status, 202,
                       "a known instance still posts")
    }
}

/// A short run of Tests/Soak/soak.py (the full one: `bash Tests/Soak/run.sh`): good posts
/// mixed with abuse and a flapping upstream, every count checked at the end. With the
/// `[listen]` defaults and 60 never-finishing connections a second, 25 s would fill the 1,024
/// connections many times over if they were not cut off: /healthz must stay within 1 s and
/// accepting must never pause.
final class SoakTests: XCTestCase {
    func testShortSoakLosesNothingAndLeaksNothing() throws {
        let seconds = ProcessInfo.processInfo.environment["SOAK_SECONDS"] ?? "25"
        var arguments = ["--binary", Paths.binary.path, "--seconds", seconds, "--posters", "8", "--drip-rate", "60"]
        // Under Tests/sanitizers.sh resident memory is the sanitizer's; every other check stays.
        if ProcessInfo.processInfo.environment["METRICS_PROXY_SANITIZER"] != nil { arguments += ["--sanitized"] }
        let (status, report) = try runPythonScript("Tests/Soak/soak.py", arguments)
        XCTAssertEqual(status, 0, report)
        XCTAssertTrue(report.contains("ok   every good post's counts arrived exactly"), report)
        XCTAssertTrue(report.contains("ok   /healthz answered within 1 s every time"), report)
        XCTAssertTrue(report.contains("ok   accept never paused at the cap"), report)
    }
}
