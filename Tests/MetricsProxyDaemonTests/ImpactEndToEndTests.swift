import Foundation
import XCTest

/// Impact metrics through the real binary, over TCP and the Unix socket, to a fake upstream
/// that holds them as the Unleash server does: the merge rules, a bad metric costing only
/// itself, and nothing ever sent that the server would drop or refuse.
final class ImpactEndToEndTests: XCTestCase {
    static let flags = #""bucket":{"start":"2026-11-28T10:00:00Z","stop":"2026-11-28T10:00:05Z","toggles":{"f":{"yes":2,"no":1}}}"#

    static func counter(_ name: String, _ labels: String, _ value: String) -> String {
        #"{"name":"\#(name)","help":"\#(name) help","type":"counter","samples":[{"labels":\#(labels),"value":\#(value)}]}"#
    }

    static func post(_ impact: [String], app: String = "shop", instance: String = "inst-1", flags: Bool = false) -> String {
        #"{"appName":"\#(app)","instanceId":"\#(instance)",\#(flags ? Self.flags : #""bucket":null"#),"impactMetrics":[\#(impact.joined(separator: ","))]}"#
    }

    /// Every body the upstream received: impact metrics with name, help, type and samples
    /// only, and no series (name and labels, as the server keys it) twice in one body.
    func assertEachSeriesOncePerBody(_ requests: [FakeUpstream.Recorded], file: StaticString = #filePath, line: UInt = #line) {
        for r in requests {
            var seen = Set<String>()
            for m in r.json["impactMetrics"] as? [[String: Any]] ?? [] {
                XCTAssertEqual(Set(m.keys), ["name", "help", "type", "samples"], file: file, line: line)
                for s in m["samples"] as? [[String: Any]] ?? [] {
                    let labels = (s["labels"] as? [String: String] ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
                    XCTAssertTrue(seen.insert("\(m["name"]!)\(labels)").inserted, "a series twice in one body: \(r.body)", file: file, line: line)
                }
            }
        }
    }

    func testMergeRulesAndIsolationThroughTheRealBinary() throws {
        // The real Python SDK's post: two toggles, a counter (with and without a flag label), a gauge, a histogram.
        let capture = try String(contentsOf: Paths.fixtures.appendingPathComponent("captures/python-unleashclient-impact.jsonl"), encoding: .utf8)
        let record = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(capture.utf8)) as? [String: Any])
        let sdkPost = String(decoding: try JSONSerialization.data(withJSONObject: record["body"]!), as: UTF8.self)
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "1h"))
        let tcp = proxy.tcp(), unix = proxy.unix()
        XCTAssertEqual(try tcp.post("/api/client/metrics", json: sdkPost, token: tokenA).status, 202)
        let plain = #"{"appName":"shop","environment":"development"}"#
        let posts: [(HTTPClient, String)] = [
            // The same series with its labels in another order: one series, summed.
            (unix, Self.post([Self.counter("checkouts", #"{"environment":"development","appName":"shop"}"#, "3")], instance: "inst-2")),
            // A bad metric (no help) beside a good one, with flag counts: only the bad one goes.
            (tcp, Self.post([#"{"name":"broken","type":"counter","samples":[{"labels":{},"value":1}]}"#,
                             Self.counter("signups", plain, "2")], flags: true)),
            // The name already is a gauge in this window: the counter is dropped, the gauge kept.
            (unix, Self.post([Self.counter("queue_depth", plain, "9")])),
            // Label values the bulk schema refuses: a numeric string and a number.
            (tcp, Self.post([Self.counter("http_requests", #"{"appName":"shop","code":"200"}"#, "5"),
                             Self.counter("http_requests", #"{"appName":"shop","code":404}"#, "1")])),
            // Another bucket layout for the same histogram series: kept apart, never unioned.
            (unix, Self.post([#"{"name":"latency_ms","help":"Checkout latency","type":"histogram","samples":[{"labels":\#(plain),"count":2,"sum":3.5,"buckets":[{"le":5,"count":1},{"le":"+Inf","count":2}]}]}"#])),
            // A later gauge value wins.
            (tcp, Self.post([#"{"name":"queue_depth","help":"Jobs waiting","type":"gauge","samples":[{"labels":\#(plain),"value":12.5}]}"#])),
        ]
        for (client, body) in posts { XCTAssertEqual(try client.post("/api/client/metrics", json: body, token: tokenA).status, 202, body) }
        let m = try scrape(proxy)
        XCTAssertEqual(value(m, "metrics_proxy_impact_metrics_dropped_total", ["reason": "invalid"]), 1)
        XCTAssertEqual(value(m, "metrics_proxy_impact_metrics_dropped_total", ["reason": "type_clash"]), 1)
        XCTAssertEqual(value(m, "metrics_proxy_impact_metrics_dropped_total", ["reason": "too_long"]), 0)
        // checkouts ×3, queue_depth, latency_ms ×2 layouts, signups, http_requests ×2.
        XCTAssertEqual(value(m, "metrics_proxy_impact_series"), 9)
        proxy.signal(SIGTERM) // closes the window and delivers it
        XCTAssertEqual(proxy.waitForExit(), 0)
        XCTAssertEqual(proxy.log.components(separatedBy: "impact metrics dropped from accepted posts").count - 1, 1, "logged once per window")
        XCTAssertTrue(proxy.log.contains("impact_metrics_dropped=2"), proxy.log)

        let requests = try upstream.requests()
        XCTAssertEqual(requests.map(\.status), Array(repeating: 202, count: requests.count))
        XCTAssertTrue(requests.allSatisfy { $0.impact == "stored" }, requests.map { $0.impact ?? "-" }.joined(separator: "\n"))
        assertEachSeriesOncePerBody(requests)
        let state = try upstream.impact()
        XCTAssertEqual([state.droppedArrays, state.aborted, state.refused], [0, 0, 0])
        func key(_ name: String, _ labels: [String: String]) -> ImpactState.Key { .init(name: name, labels: labels) }
        let shop = ["appName": "shop", "environment": "development"]
        XCTAssertEqual(state.values[key("checkouts", shop)], 180)
        XCTAssertEqual(state.values[key("checkouts", shop.merging(["checkout_v2": "blue"]) { a, _ in a })], 159)
        XCTAssertEqual(state.values[key("checkouts", shop.merging(["checkout_v2": "green"]) { a, _ in a })], 192)
        XCTAssertEqual(state.values[key("signups", shop)], 2)
        XCTAssertEqual(state.types["queue_depth"], "gauge")
        XCTAssertEqual(state.values[key("queue_depth", shop)], 12.5)
        XCTAssertNil(state.types["broken"])
        XCTAssertEqual(state.values[key("http_requests", ["appName": "shop", "code": "200"])], 5)
        XCTAssertEqual(state.values[key("http_requests", ["appName": "shop", "code": "404"])], 1)
        let http = requests.filter { $0.body.contains("http_requests") }
        XCTAssertEqual(http.map(\.path), ["/api/client/metrics"], "numeric labels travel where the server takes them")
        XCTAssertFalse(http[0].body.contains("checkouts"), "alone: a refusal could cost nothing else")
        // Both histogram layouts went up, each in a body of its own (the server recreates a
        // histogram whose layout changes, as it would for the SDKs posting directly).
        let layouts = requests.flatMap { r in
            (r.json["impactMetrics"] as? [[String: Any]] ?? []).filter { $0["name"] as? String == "latency_ms" }
                .flatMap { $0["samples"] as! [[String: Any]] }.map { ($0["buckets"] as! [[String: Any]]).map { "\($0["le"]!)" } }
        }
        XCTAssertEqual(Set(layouts), [["10", "50", "100", "+Inf"], ["5", "+Inf"]])
        XCTAssertEqual(layouts.count, 2)
        // The flag counts of every post, exact.
        var got: [String: [Int]] = [:]
        for m in requests.flatMap({ $0.json["metrics"] as? [[String: Any]] ?? [] }) {
            got[m["featureName"] as! String, default: [0, 0]][0] += m["yes"] as! Int
            got[m["featureName"] as! String, default: [0, 0]][1] += m["no"] as! Int
        }
        XCTAssertEqual(got, ["search.fuzzy": [1, 0], "legacy.banner": [0, 176], "f": [2, 1]])
    }

    /// A gauge's newest value wins upstream even when the batch holding an older one is
    /// retried: batches of a token go up in window order.
    func testAGaugeNeverGoesBackWhenAnOlderBatchIsRetried() throws {
        let upstream = try FakeUpstream()
        try upstream.script([["status": 503, "repeat": 3, "path_prefix": "/api/client/metrics/bulk"]])
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "300ms"))
        func gauge(_ v: String) -> String {
            Self.post([#"{"name":"temperature","help":"h","type":"gauge","samples":[{"labels":{"appName":"shop"},"value":\#(v)}]}"#])
        }
        XCTAssertEqual(try proxy.tcp().post("/api/client/metrics", json: gauge("1"), token: tokenA).status, 202)
        try waitFor("the first attempt to fail") { try upstream.requests().contains { $0.status == 503 } }
        XCTAssertEqual(try proxy.tcp().post("/api/client/metrics", json: gauge("2"), token: tokenA).status, 202)
        try waitFor("both windows upstream", timeout: 15) { try upstream.requests().filter { $0.status == 202 }.count == 2 }
        let delivered = try upstream.requests().filter { $0.status == 202 }
        XCTAssertTrue(delivered[0].body.contains(#""value":1"#) && delivered[1].body.contains(#""value":2"#), "\(delivered.map(\.body))")
        XCTAssertEqual(try upstream.impact().values[.init(name: "temperature", labels: ["appName": "shop"])], 2)
    }

    /// A 400 for a batch holding impact metrics never costs its flag counts: they are sent
    /// again alone, and the impact metrics are set aside in spool/rejected.
    func testARefusedBatchSendsItsFlagCountsAgainAlone() throws {
        let upstream = try FakeUpstream()
        try upstream.script([["status": 400, "path_prefix": "/api/client/metrics/bulk", "body_contains": "impactMetrics"]])
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "300ms"))
        let body = Self.post([Self.counter("checkouts", #"{"appName":"shop"}"#, "4")], flags: true)
        XCTAssertEqual(try proxy.tcp().post("/api/client/metrics", json: body, token: tokenA).status, 202)
        try waitFor("the flag counts alone upstream", timeout: 10) {
            try upstream.requests().contains { $0.status == 202 && $0.body.contains(#""featureName":"f""#) }
        }
        let requests = try upstream.requests(path: "/api/client/metrics/bulk")
        XCTAssertEqual(requests.map(\.status), [400, 202])
        XCTAssertFalse(requests[1].body.contains("impactMetrics"))
        XCTAssertEqual((requests[1].json["applications"] as? [Any])?.count, 1)
        let rejected = proxy.spoolDir + "/rejected"
        waitFor("the impact part set aside") { ((try? FileManager.default.contentsOfDirectory(atPath: rejected)) ?? []).count == 1 }
        let file = try XCTUnwrap(FileManager.default.contentsOfDirectory(atPath: rejected).first)
        let saved = try String(contentsOfFile: rejected + "/" + file, encoding: .utf8)
        XCTAssertTrue(saved.contains(#""name":"checkouts""#) && !saved.contains(#""featureName""#))
        XCTAssertEqual(value(try scrape(proxy), "metrics_proxy_batches_dropped_total", ["reason": "rejected"]), 1)
        XCTAssertTrue(proxy.log.contains("sending its flag counts alone"))
        // The fake records a request before it answers, and the proxy removes the batch when it
        // reads the answer: wait for that, not only for the record.
        waitFor("the delivered batch removed from the spool: \(proxy.spooledFiles)") { proxy.spooledFiles.isEmpty }
    }
}
