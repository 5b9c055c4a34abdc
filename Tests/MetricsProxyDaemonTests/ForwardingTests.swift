import Foundation
import XCTest

/// Every other client API request goes to the upstream and back, unchanged, so an SDK whose
/// base URL is the proxy keeps working.
final class ForwardingTests: XCTestCase {
    func testFeaturesForwardedWithHeadersQueryAndETagOverTCPAndUnix() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url))
        for client in [proxy.tcp(), proxy.unix()] {
            try upstream.reset()
            let r = try client.request("GET", "/api/client/features?namePrefix=flag&project=default", headers: [
                ("Authorization", tokenA), ("unleash-appname", "shop"), ("X-Forwarded-For", "10.0.0.7"),
                ("Connection", "keep-alive, X-Hop"), ("X-Hop", "must not pass"), ("X-Custom", "passes")])
            XCTAssertEqual(r.status, 200)
            XCTAssertEqual((r.json?["features"] as? [[String: Any]])?.first?["name"] as? String, "flag-a")
            let etag = try XCTUnwrap(r.header("ETag"))
            let seen = try XCTUnwrap(try upstream.requests(path: "/api/client/features").first)
            XCTAssertEqual(seen.header("Authorization"), tokenA)
            XCTAssertEqual(seen.header("unleash-appname"), "shop")
            XCTAssertEqual(seen.header("X-Custom"), "passes")
            XCTAssertNil(seen.header("X-Hop"), "headers named in Connection are hop-by-hop")
            let xff = seen.header("X-Forwarded-For")
            if case .tcp = client.endpoint {
                XCTAssertEqual(xff, "10.0.0.7, 127.0.0.1", "the peer is appended")
            } else {
                XCTAssertEqual(xff, "10.0.0.7", "a Unix peer has no address to append")
            }
            let all = try upstream.requests()
            XCTAssertTrue(all.contains { $0.path == "/api/client/features" })
            // The conditional request: 304 with no body, on the same kept-alive connection.
            let again = try client.request("GET", "/api/client/features", headers: [("Authorization", tokenA), ("If-None-Match", etag)])
            XCTAssertEqual(again.status, 304)
            XCTAssertEqual(again.body, [])
        }
    }

    func testQueryStringAndBodyOfOtherMethodsPassThrough() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url))
        let r = try proxy.tcp().request("POST", "/api/client/something?x=1", headers: [("Content-Type", "application/json"), ("Authorization", tokenA)],
                                        body: Array(#"{"k":"v"}"#.utf8))
        XCTAssertEqual(r.status, 404, "the upstream's own answer comes back")
        XCTAssertEqual(r.json?["message"] as? String, "not found")
        let seen = try XCTUnwrap(try upstream.requests(path: "/api/client/something").first)
        XCTAssertEqual(seen.method, "POST")
        XCTAssertEqual(seen.body, #"{"k":"v"}"#)
    }

    func testUpstreamDownIsA502AndSilentIsA504WithoutBlockingMetricPosts() throws {
        let port = FakeUpstream.freePort()
        let down = try ProxyProcess(config: testConfig(upstream: "http://127.0.0.1:\(port)/api"))
        let t0 = Date()
        let r = try down.tcp().request("GET", "/api/client/features", headers: [("Authorization", tokenA)])
        XCTAssertEqual(r.status, 502)
        XCTAssertTrue((r.json?["message"] as? String ?? "").hasPrefix("upstream unavailable"))
        XCTAssertLessThan(Date().timeIntervalSince(t0), 1, "a refused upstream answers quickly")

        let upstream = try FakeUpstream()
        try upstream.script([["status": 200, "delay": 4.0, "repeat": -1, "path_prefix": "/api/client/features"]])
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url))
        let tcp = proxy.tcpPort, upstreamPort = upstream.port
        let slow = parallel(2) { i -> (Int, TimeInterval) in
            let start = Date()
            let c = HTTPClient(.tcp("127.0.0.1", tcp))
            if i == 0 {
                let r = try? c.request("GET", "/api/client/features", headers: [("Authorization", tokenA)])
                return (r?.status ?? 0, Date().timeIntervalSince(start))
            }
            // Once the features request is hanging upstream, post a metric.
            waitFor("the features request upstream") { FakeUpstream.hasRecorded(port: upstreamPort, path: "/api/client/features") }
            let posted = Date()
            let r = try? c.post("/api/client/metrics", json: ValidationTests.bucket(#"{"f":{"yes":1}}"#), token: tokenA)
            return (r?.status ?? 0, Date().timeIntervalSince(posted))
        }
        XCTAssertEqual(slow[0].0, 504, "the proxy's 2 s upstream timeout")
        XCTAssertEqual(slow[1].0, 202)
        XCTAssertLessThan(slow[1].1, 0.5, "a metric post does not wait on a hanging forward")
    }

    /// Only what an SDK needs goes upstream by default (the client and frontend API); the
    /// admin API, or anything else, only where `[listen] forward` names it.
    func testOnlyTheClientAndFrontendAPIAreForwardedUnlessConfigured() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url))
        let auth = [("Authorization", tokenA)]
        for path in ["/api/admin/projects", "/api/clientele", "/API/Admin/features?x=1"] {
            let r = try proxy.tcp().request("GET", path, headers: auth)
            XCTAssertEqual(r.status, 404, path)
            XCTAssertTrue((r.json?["message"] as? String ?? "").contains("outside [listen] forward"), path)
        }
        XCTAssertEqual(try proxy.unix().request("GET", "/api/frontend/client/features", headers: auth).json?["message"] as? String,
                       "not found", "forwarded: the upstream's own answer")
        XCTAssertEqual(try proxy.tcp().request("GET", "/api/client/features", headers: auth).status, 200)
        XCTAssertEqual(try upstream.requests().map(\.path), ["/api/frontend/client/features", "/api/client/features"])
        // Named in [listen] forward, the admin API goes too; the frontend API no longer does.
        let open = try ProxyProcess(config: testConfig(upstream: upstream.url, listen: "forward = /api/client/, /api/admin"))
        XCTAssertEqual(try open.tcp().request("GET", "/api/admin/projects", headers: auth).json?["message"] as? String, "not found")
        XCTAssertEqual(try upstream.requests(path: "/api/admin/projects").count, 1)
        XCTAssertEqual(try open.tcp().request("GET", "/api/frontend", headers: auth).status, 404)
        XCTAssertEqual(try upstream.requests(path: "/api/frontend").count, 0)
    }

    /// A client flooding the forward path gets 503s past `[listen] forward_max_in_flight`, and
    /// the count comes back as the requests finish.
    func testForwardedRequestsAreBoundedInFlight() throws {
        let upstream = try FakeUpstream()
        try upstream.script([["status": 200, "delay": 1.5, "repeat": -1, "path_prefix": "/api/client/features"]])
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, listen: "forward_max_in_flight = 2"))
        let tcp = proxy.tcpPort, upstreamPort = upstream.port
        let answers = parallel(3) { i -> (Int, String?) in
            if i == 2 {
                waitFor("the first two upstream") { FakeUpstream.recorded(port: upstreamPort, path: "/api/client/features") == 2 }
            }
            let r = try? HTTPClient(.tcp("127.0.0.1", tcp)).request("GET", "/api/client/features", headers: [("Authorization", tokenA)])
            return (r?.status ?? 0, r?.header("Retry-After"))
        }
        XCTAssertEqual(answers.map(\.0), [200, 200, 503])
        XCTAssertEqual(answers[2].1, "1")
        XCTAssertEqual(try upstream.requests(path: "/api/client/features").count, 2)
        try upstream.clearScript()
        XCTAssertEqual(try proxy.tcp().request("GET", "/api/client/features", headers: [("Authorization", tokenA)]).status, 200)
        XCTAssertEqual(try proxy.tcp().post("/api/client/metrics", json: ValidationTests.bucket(#"{"f":{"yes":1}}"#), token: tokenA).status, 202,
                       "metric posts are never held by the forward bound")
    }

    func testClientLeavingMidForwardDoesNotDisturbTheProxy() throws {
        let upstream = try FakeUpstream()
        try upstream.script([["status": 200, "delay": 1.0, "repeat": -1, "path_prefix": "/api/client/features"]])
        // As many forward slots as clients that leave: each must come back.
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, listen: "forward_max_in_flight = 5"))
        for i in 0..<5 {
            if i > 0 {
                try upstream.reset()
                try upstream.script([["status": 200, "delay": 1.0, "repeat": -1, "path_prefix": "/api/client/features"]])
            }
            let c = proxy.tcp()
            _ = try c.raw(Array("GET /api/client/features HTTP/1.1\r\nHost: x\r\nAuthorization: \(tokenA)\r\nContent-Length: 0\r\n\r\n".utf8), readResponse: false)
            waitFor("the request upstream") { FakeUpstream.hasRecorded(port: upstream.port, path: "/api/client/features") }
            c.disconnect()
        }
        XCTAssertEqual(try proxy.tcp().request("GET", "/healthz").status, 200)
        XCTAssertTrue(proxy.process.isRunning)
        // libevent 2.1 notices a client that left only when it writes the answer; the answer
        // is then dropped with the connection, and nothing else is disturbed. So the checks
        // wait until the last delayed answer (1 s after its request, the others before it) is
        // sent, and a forward is taken again: all five slots held would be a 503 each time.
        try upstream.clearScript()
        try waitFor("the last delayed answer sent", timeout: 5) { try upstream.requests(path: "/api/client/features").last?.answered == true }
        var status = 0
        waitFor("a forward taken again: the exchanges whose client left gave their slots back", timeout: 5) {
            status = (try? proxy.unix().request("GET", "/api/client/features", headers: [("Authorization", tokenA)]).status) ?? 0
            return status == 200
        }
        XCTAssertEqual(status, 200)
        XCTAssertFalse(proxy.log.contains("level=error"), proxy.log)
    }

    func testRegisterIsForwardedInMetricsModeAndJoinedInBulkMode() throws {
        let upstream = try FakeUpstream()
        let register = #"{"appName":"shop","instanceId":"i-1","strategies":["default"],"started":"2026-11-28T10:00:00Z","interval":15000}"#
        let metricsMode = try ProxyProcess(config: testConfig(upstream: upstream.url, upstreamExtra: "mode = metrics"))
        XCTAssertEqual(try metricsMode.tcp().post("/api/client/register", json: register, token: tokenA).status, 202)
        let forwarded = try upstream.requests(path: "/api/client/register")
        XCTAssertEqual(forwarded.count, 1)
        XCTAssertEqual(forwarded.first?.body, register)
        try upstream.reset()
        let bulk = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "300ms"))
        XCTAssertEqual(try bulk.tcp().post("/api/client/register", json: register, token: tokenA).status, 202)
        waitFor("the registration in applications[]") {
            ((try? upstream.requests(path: "/api/client/metrics/bulk")) ?? []).contains { ($0.json["applications"] as? [[String: Any]])?.first?["instanceId"] as? String == "i-1" }
        }
        XCTAssertEqual(try upstream.requests(path: "/api/client/register").count, 0)
    }
}

/// An SDK registers once, at start: every later window's `applications[]` entry still reports
/// what it said (the regression: `started` moved every window, `strategies` showed only in the
/// window of the registration), and names the proxy in `connectVia`.
final class InstanceRegistryEndToEndTests: XCTestCase {
    func testStartedAndStrategiesStayTheSDKsOwnAcrossFiveWindows() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "300ms"))
        let c = proxy.tcp()
        let register = #"{"appName":"shop","instanceId":"pod-1","sdkVersion":"unleash-python-sdk:6.9.1","strategies":["default","flexibleRollout"],"started":"2026-11-28T01:24:18.277Z","interval":15000}"#
        XCTAssertEqual(try c.post("/api/client/register", json: register, token: tokenA).status, 202)
        /// The windows whose bulk request carries pod-1, each with its entry for it.
        func entries() throws -> [String: [String: Any]] {
            var out: [String: [String: Any]] = [:]
            for r in try upstream.requests(path: "/api/client/metrics/bulk") {
                let window = String(r.header("X-Metrics-Proxy-Batch")!.split(separator: "-")[0])
                for a in r.json["applications"] as! [[String: Any]] where a["instanceId"] as? String == "pod-1" { out[window] = a }
            }
            return out
        }
        // A post now and then, so that pod-1 is seen in window after window.
        try waitFor("pod-1 in six windows", timeout: 20) {
            _ = try c.post("/api/client/metrics", json: ValidationTests.bucket(#"{"f":{"yes":1}}"#).replacingOccurrences(of: #""instanceId":"i""#, with: #""instanceId":"pod-1""#).replacingOccurrences(of: #""appName":"app""#, with: #""appName":"shop""#), token: tokenA)
            usleep(100_000) // a post per 100 ms: several per 300 ms window
            return try entries().count >= 6
        }
        let seen = try entries()
        XCTAssertGreaterThanOrEqual(seen.count, 6)
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, 255)
        let hostName = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // The proxy names itself by its host and its spool directory, as its start-up line says.
        let instance = try XCTUnwrap(TierTests.instanceId(proxy))
        XCTAssertTrue(instance.hasPrefix(hostName + "-") && instance.count == hostName.count + 7, instance)
        for (window, a) in seen {
            XCTAssertEqual(a["started"] as? String, "2026-11-28T01:24:18.277Z", "window \(window)")
            XCTAssertEqual(a["strategies"] as? [String], ["default", "flexibleRollout"], "window \(window)")
            XCTAssertEqual(a["interval"] as? Int, 15000, "window \(window)")
            XCTAssertEqual(a["sdkVersion"] as? String, "unleash-python-sdk:6.9.1", "window \(window)")
            XCTAssertEqual(a["connectVia"] as? [[String: String]], [["appName": "metrics-proxy", "instanceId": instance]], "window \(window)")
        }
        XCTAssertTrue(proxy.log.contains("instances_remembered=1"), proxy.log)
        XCTAssertEqual(value(try scrape(proxy), "metrics_proxy_instances_remembered"), 1)
    }
}
