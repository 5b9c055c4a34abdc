import Foundation
import XCTest

/// What an operator sees: /metrics read by a real Prometheus parser, /healthz and /readyz,
/// one-line logs in either format, and SIGHUP reloads.
final class ObservabilityTests: XCTestCase {
    func testMetricsCountWhatHappened() throws {
        let upstream = try FakeUpstream()
        try upstream.script([["status": 503, "repeat": 1]])
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "300ms", spoolExtra: "replay_rate = 0"))
        let c = proxy.tcp()
        var bytes = 0
        for i in 0..<5 {
            let body = ValidationTests.bucket(#"{"m\#(i)":{"yes":1}}"#)
            bytes += body.utf8.count
            XCTAssertEqual(try c.post("/api/client/metrics", json: body, token: tokenA).status, 202)
        }
        for body in [#"{"appName":""}"#, #"{"appName":1.5e400x}"#] {
            bytes += body.utf8.count
            XCTAssertEqual(try c.post("/api/client/metrics", json: body, token: tokenA).status, 400)
        }
        XCTAssertEqual(try c.request("POST", "/api/client/metrics", headers: [("Content-Type", "text/plain"), ("Authorization", tokenA)], body: [1]).status, 415)
        bytes += 1
        // The posts may fall into one window or two: wait until everything is delivered.
        waitFor("delivery and an empty spool") {
            let recorded = (try? upstream.requests()) ?? []
            return recorded.first?.status == 503 && recorded.dropFirst().contains { $0.status == 202 } && proxy.spooledFiles.isEmpty
        }
        let m = try scrape(proxy)
        let recorded = try upstream.requests()
        XCTAssertEqual(value(m, "metrics_proxy_posts_total", ["code": "202"]), 5)
        XCTAssertEqual(value(m, "metrics_proxy_posts_total", ["code": "400"]), 2)
        XCTAssertEqual(value(m, "metrics_proxy_posts_total", ["code": "415"]), 1)
        XCTAssertEqual(value(m, "metrics_proxy_post_bytes_total"), Double(bytes))
        XCTAssertEqual(value(m, "metrics_proxy_upstream_requests_total", ["code": "503"]), 1)
        XCTAssertEqual(value(m, "metrics_proxy_upstream_requests_total", ["code": "202"]), Double(recorded.filter { $0.status == 202 }.count))
        XCTAssertEqual(value(m, "metrics_proxy_upstream_request_seconds_count"), Double(recorded.count))
        XCTAssertEqual(value(m, "metrics_proxy_upstream_request_seconds_bucket", ["le": "+Inf"]), Double(recorded.count))
        XCTAssertGreaterThanOrEqual(value(m, "metrics_proxy_windows_closed_total") ?? 0, 1)
        XCTAssertEqual(value(m, "metrics_proxy_spool_batches"), 0)
        XCTAssertEqual(value(m, "metrics_proxy_spool_bytes"), 0)
        XCTAssertEqual(value(m, "metrics_proxy_window_keys"), 0)
        XCTAssertEqual(value(m, "metrics_proxy_batches_dropped_total", ["reason": "max_size"]), 0)
        XCTAssertGreaterThan(value(m, "metrics_proxy_last_upstream_success_timestamp_seconds") ?? 0, Date().timeIntervalSince1970 - 60)
        XCTAssertEqual(value(m, "metrics_proxy_config_reloads_total", ["result": "failure"]), 0)
        XCTAssertNotNil(m.first { $0.name == "metrics_proxy_build_info" && $0.labels["version"] != nil })
        XCTAssertEqual(m.first { $0.name == "metrics_proxy_upstream_request_seconds_count" }?.type, "histogram")
        XCTAssertEqual(m.first { $0.name == "metrics_proxy_posts_total" }?.type, "counter")
    }

    func testSpoolDepthAndAgeWhileTheUpstreamIsDown() throws {
        let port = FakeUpstream.freePort()
        let proxy = try ProxyProcess(config: testConfig(upstream: "http://127.0.0.1:\(port)/api", interval: "200ms"))
        XCTAssertEqual(try proxy.tcp().post("/api/client/metrics", json: ValidationTests.bucket(#"{"f":{"yes":1}}"#), token: tokenA).status, 202)
        waitFor("the batch in the spool") { !proxy.spooledFiles.isEmpty && proxy.log.contains("upstream unavailable") }
        let m = try scrape(proxy)
        XCTAssertEqual(value(m, "metrics_proxy_spool_batches"), 1)
        XCTAssertGreaterThan(value(m, "metrics_proxy_spool_bytes") ?? 0, 100)
        XCTAssertGreaterThan(value(m, "metrics_proxy_spool_oldest_age_seconds") ?? 0, 0)
        XCTAssertGreaterThanOrEqual(value(m, "metrics_proxy_upstream_requests_total", ["code": "error"]) ?? 0, 1)
    }

    func testHealthAndReadiness() throws {
        let port = FakeUpstream.freePort()
        let config = testConfig(upstream: "http://127.0.0.1:\(port)/api", interval: "1h").replacingOccurrences(of: "drain_timeout = 5s", with: "drain_timeout = 3s")
        let proxy = try ProxyProcess(config: config)
        let kept = proxy.tcp()
        XCTAssertEqual(try kept.request("GET", "/healthz").status, 200)
        XCTAssertEqual(try kept.request("GET", "/readyz").status, 200)
        XCTAssertEqual(try proxy.unix().request("GET", "/readyz").status, 200)
        // While draining (the upstream is down, so the drain lasts), readiness fails with a reason.
        XCTAssertEqual(try kept.post("/api/client/metrics", json: ValidationTests.bucket(#"{"f":{"yes":1}}"#), token: tokenA).status, 202)
        proxy.signal(SIGTERM)
        waitFor("the drain to start") { proxy.log.contains("shutting down") }
        let r = try kept.request("GET", "/readyz")
        XCTAssertEqual(r.status, 503)
        XCTAssertTrue(r.text.contains("shutting down"))
        XCTAssertEqual(try kept.request("GET", "/healthz").status, 200, "alive while draining")
        XCTAssertEqual(proxy.waitForExit(), 0)
    }

    func testJSONLogsAreOneObjectPerLine() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "200ms").replacingOccurrences(of: "level = debug", with: "level = debug\nformat = json"))
        XCTAssertEqual(try proxy.tcp().post("/api/client/metrics", json: ValidationTests.bucket(#"{"f":{"yes":1}}"#), token: tokenA).status, 202)
        waitFor("a delivery") { proxy.log.contains("batch delivered") }
        let lines = proxy.log.split(separator: "\n")
        XCTAssertGreaterThanOrEqual(lines.count, 3)
        for line in lines {
            let j = try XCTUnwrap(try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String], String(line))
            XCTAssertNotNil(j["ts"]); XCTAssertNotNil(j["level"]); XCTAssertNotNil(j["event"])
        }
    }

    func testSIGHUPAppliesAGoodFileAndKeepsTheOldOneOnABadFile() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "1h"))
        let original = try String(contentsOf: proxy.configURL, encoding: .utf8)
        // A bad file: nothing changes, the failure is logged with file:line and counted.
        try (original + "\n[window]\nintervall = 1s\n").write(to: proxy.configURL, atomically: true, encoding: .utf8)
        proxy.signal(SIGHUP)
        waitFor("the failed reload") { proxy.log.contains("config reload failed") }
        XCTAssertTrue(proxy.log.contains("\(proxy.configURL.path):"), "names the file and line")
        XCTAssertEqual(value(try scrape(proxy), "metrics_proxy_config_reloads_total", ["result": "failure"]), 1)
        XCTAssertEqual(try proxy.tcp().post("/api/client/metrics", json: ValidationTests.bucket(#"{"before":{"yes":1}}"#), token: tokenA).status, 202)
        XCTAssertFalse(waitForQuietly(seconds: 1) { !((try? upstream.requests()) ?? []).isEmpty }, "still the 1 h window")
        // A good file with a short window: the open window now closes within a second.
        try original.replacingOccurrences(of: "interval = 1h", with: "interval = 300ms")
            .replacingOccurrences(of: "tcp = 127.0.0.1:0", with: "tcp = 127.0.0.1:1")
            .write(to: proxy.configURL, atomically: true, encoding: .utf8)
        proxy.signal(SIGHUP)
        try waitFor("the window to close after the reload", timeout: 5) {
            !(try upstream.requests(path: "/api/client/metrics/bulk")).isEmpty
        }
        XCTAssertTrue(proxy.log.contains("config keys changed that apply only after a restart"))
        XCTAssertTrue(proxy.log.contains("keys=listen.tcp"))
        let m = try scrape(proxy)
        XCTAssertEqual(value(m, "metrics_proxy_config_reloads_total", ["result": "success"]), 1)
        XCTAssertEqual(try proxy.tcp().request("GET", "/healthz").status, 200, "still on the old port")
    }
}
