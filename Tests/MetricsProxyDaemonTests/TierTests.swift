import Foundation
import XCTest
import TestSupport

/// Proxies in tiers: sidecars forward their windows as bulk posts to a proxy that merges them
/// again, journals and spools them, and forwards one request per window to Unleash.
final class TierTests: XCTestCase {
    /// A proxy on a fixed port (so that it can be killed and started again where the sidecars
    /// expect it), forwarding to `upstream`.
    static func middleConfig(port: UInt16, upstream: String) -> String {
        testConfig(upstream: upstream, interval: "2s").replacingOccurrences(of: "tcp = 127.0.0.1:0", with: "tcp = 127.0.0.1:\(port)")
    }

    func testThreeSidecarsThroughAMiddleTierArriveExactlyOnceEvenWhenTheMiddleIsKilled() throws {
        let upstream = try FakeUpstream()
        let middlePort = FakeUpstream.freePort()
        let middleConf = Self.middleConfig(port: middlePort, upstream: upstream.url)
        let killed = try ProxyProcess(config: middleConf, name: "middle")
        let middleURL = "http://127.0.0.1:\(middlePort)/api"
        let sidecars = try (0..<3).map { i in try ProxyProcess(config: testConfig(upstream: middleURL, interval: "1s"), name: "sidecar-\(i)") }

        // Six SDK-like posters, two per sidecar (one over TCP, one over its Unix socket), each
        // with flag counts and an impact counter of its own; every 202 is written down.
        let posters = 6
        let endpoints = sidecars.map { [HTTPClient.Endpoint.tcp("127.0.0.1", $0.tcpPort), .unix($0.unixPath)] }
        let stop = Date().addingTimeInterval(5)
        let box = Box<[(ledger: Ledger, counter: Double, error: String)]>([])
        let posting = DispatchGroup()
        posting.enter()
        Thread {
            box.value = parallel(posters) { i -> (ledger: Ledger, counter: Double, error: String) in
                let client = HTTPClient(endpoints[i / 2][i % 2])
                var factory = PostFactory(apps: ["checkout", "search"], label: "tier-\(i)")
                var rng = SeededRandom("tier-counter-\(i)")
                var ledger = Ledger(), counter = 0.0, n = 0
                do {
                    let registration = """
                        {"appName":"checkout","instanceId":"pod-\(i)","sdkVersion":"unleash-test:1.0","started":"2026-11-28T09:00:00Z",\
                        "interval":60000,"strategies":["default","flexibleRollout"]}
                        """
                    guard try client.post("/api/client/register", json: registration, token: tokenA).status == 202 else {
                        return (ledger, counter, "registration refused")
                    }
                    while Date() < stop, n < 1000 {
                        n += 1
                        var attempt = Ledger()
                        var body = factory.post(token: tokenA, instance: "pod-\(i)", into: &attempt)
                        let value = Int.random(in: 1...5, using: &rng)
                        body.removeLast()
                        body += #","impactMetrics":[{"name":"tier_checkouts","help":"checkouts","type":"counter","samples":[{"labels":{"poster":"p\#(i)"},"value":\#(value)}]}]}"#
                        if try client.post("/api/client/metrics", json: body, token: tokenA).status == 202 {
                            ledger.merge(attempt)
                            counter += Double(value)
                        }
                        usleep(5_000)
                    }
                } catch {
                    return (ledger, counter, "\(client.endpoint): \(error)")
                }
                return (ledger, counter, "")
            }
            posting.leave()
        }.start()
        // The middle tier dies with SIGKILL while posts and batches flow, once it has taken a few
        // sidecar batches (so its journal holds acknowledged ones), and comes back at once.
        // Not while one of its own batches is between the upstream's 202 and its removal from
        // the spool: a kill there sends it again after the restart, and the Unleash server
        // (like this fake) would count it twice. That is the documented at-least-once edge
        // (README, "Duplicates are possible"; Tests/Soak/kill9.py counts such resends); this
        // test is about every other moment.
        try waitFor("the middle tier to take sidecar batches") {
            (value(try scrape(killed), "metrics_proxy_posts_total", ["code": "202"]) ?? 0) >= 4 && killed.spooledFiles.isEmpty
        }
        killed.signal(SIGKILL)
        _ = killed.waitForExit()
        // Its spool and journal are in the killed one's directory, kept until the test ends.
        let middle = try ProxyProcess(config: middleConf, name: "middle", spoolDir: killed.spoolDir)
        posting.wait()
        let results = box.value
        XCTAssertEqual(results.map(\.error).filter { !$0.isEmpty }, [])
        var expected = Ledger()
        for r in results { expected.merge(r.ledger) }
        XCTAssertGreaterThan(expected.sums.count, 20)
        XCTAssertTrue(middle.log.contains("journal replayed"), "the restarted middle tier replayed its journal")

        // Every acknowledged count reaches the upstream exactly once, through two tiers and a kill.
        try waitFor("every count upstream", timeout: 30) { Ledger.fromUpstream(try upstream.requests()) == expected }
        // The impact counters too (the last window's may come a moment after its flag counts).
        var impact = try upstream.impact()
        waitFor("every impact counter upstream", timeout: 10) {
            impact = (try? upstream.impact()) ?? impact
            return (0..<posters).allSatisfy { impact.values[.init(name: "tier_checkouts", labels: ["poster": "p\($0)"])] == results[$0].counter }
        }
        for i in 0..<posters {
            XCTAssertEqual(impact.values[.init(name: "tier_checkouts", labels: ["poster": "p\(i)"])], results[i].counter, "poster \(i)")
        }
        XCTAssertEqual(impact.resets + impact.aborted + impact.refused, 0)

        // Only the middle tier talks to the upstream: one bulk request per window of its own,
        // not one per sidecar window.
        let requests = try upstream.requests(path: "/api/client/metrics/bulk")
        var perWindow: [String: Int] = [:]
        for r in requests { perWindow[String(r.header("X-Metrics-Proxy-Batch")!.split(separator: "-")[0]), default: 0] += 1 }
        XCTAssertEqual(perWindow.values.filter { $0 != 1 }, [], "\(perWindow)")
        let sidecarBatches = try sidecars.map { value(try scrape($0), "metrics_proxy_upstream_requests_total", ["code": "202"]) ?? 0 }
            .reduce(0, +)
        XCTAssertGreaterThan(sidecarBatches, Double(requests.count) * 1.5, "the middle tier merged the sidecars' windows")

        // The upstream hears of the SDK instances, not of the proxies, each with the way it came.
        let middleId = try XCTUnwrap(Self.instanceId(middle))
        let sidecarIds = sidecars.map { Self.instanceId($0) }
        var seen: [String: [String]] = [:]
        var checkoutPods = Set<String>()
        for r in requests {
            for a in r.json["applications"] as? [[String: Any]] ?? [] {
                let via = (a["connectVia"] as? [[String: String]] ?? []).map { "\($0["appName"]!)/\($0["instanceId"]!)" }
                seen["\(a["appName"]!)/\(a["instanceId"]!)"] = via
                // The registered instances keep what their SDK said, two tiers away.
                guard a["appName"] as? String == "checkout" else { continue }
                checkoutPods.insert(a["instanceId"] as! String)
                XCTAssertEqual(a["started"] as? String, "2026-11-28T09:00:00.000Z", "the SDK's own start, not the proxy's")
                XCTAssertEqual(a["strategies"] as? [String], ["default", "flexibleRollout"])
                XCTAssertEqual(a["sdkVersion"] as? String, "unleash-test:1.0")
            }
        }
        XCTAssertEqual(checkoutPods, Set((0..<posters).map { "pod-\($0)" }))
        XCTAssertFalse(seen.keys.contains { $0.hasPrefix("metrics-proxy/") }, "no proxy reported as an instance")
        for (key, via) in seen {
            let i = Int(key.split(separator: "-").last!)!
            XCTAssertEqual(via, ["metrics-proxy/\(sidecarIds[i / 2]!)", "metrics-proxy/\(middleId)"], key)
        }
    }

    /// What Unleash Edge sends upstream (its documented shape, IMPACT-METRICS.md §3), through
    /// the real binary: taken, merged and forwarded with Edge kept in `connectVia`; a body the
    /// server would refuse gets its 400 naming the field, and nothing of it is kept.
    func testEdgesBulkPostIsForwardedWithItsInstancesAndABadOneNamesTheField() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "1s"))
        let edge = #"""
            {"applications":[{"appName":"my-app","connectVia":[{"appName":"unleash-edge","instanceId":"01JEDGE"}],
               "environment":"production","projects":["*"],"instanceId":"instance-123","connectionId":"connection-456",
               "interval":60000,"started":"2026-01-01T00:00:00Z","strategies":["default"],"sdkVersion":"unleash-node-sdk:6.12.0",
               "sdkType":"backend","yggdrasilVersion":null,"platformName":"node","platformVersion":"22.0.0"}],
             "metrics":[{"featureName":"f1","appName":"my-app","environment":"production","timestamp":"2026-01-01T00:00:00Z",
               "yes":3,"no":1,"variants":{"blue":2},"sdkVersion":null,"platformName":"node"},
               {"featureName":"f1","appName":"my-app","environment":"development","timestamp":"2026-01-01T00:00:00Z","yes":5,"no":0,"variants":{}}],
             "impactMetrics":[{"type":"counter","name":"purchases","help":"Number of purchases",
               "samples":[{"value":42.0,"labels":{"appName":"my-app","environment":"production","origin":"edge"}}]}],
             "seenTokens":["*:production.abc"]}
            """#
        XCTAssertEqual(try proxy.unix().post("/api/client/metrics/bulk", json: edge, token: tokenB).status, 202)
        let bad = edge.replacingOccurrences(of: #""variants":{"blue":2}"#, with: #""variants":null"#)
        let refused = try proxy.tcp().post("/api/client/metrics/bulk", json: bad, token: tokenB)
        XCTAssertEqual(refused.status, 400)
        let error = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(refused.body)) as? [String: Any])
        XCTAssertEqual(error["name"] as? String, "ValidationError")
        XCTAssertEqual((error["details"] as? [[String: Any]])?.first?["path"] as? String, "/body/metrics/0/variants")
        XCTAssertEqual(try proxy.tcp().request("GET", "/api/client/metrics/bulk").status, 405)
        // What goes no further is counted: the development entry, and Edge's seenTokens (the refused post counts nothing).
        let m = try scrape(proxy)
        XCTAssertEqual(value(m, "metrics_proxy_bulk_dropped_total", ["reason": "environment"]), 1)
        XCTAssertEqual(value(m, "metrics_proxy_bulk_dropped_total", ["reason": "seen_tokens"]), 1)

        try waitFor("the bulk post upstream", timeout: 10) { !(try upstream.requests(path: "/api/client/metrics/bulk")).isEmpty }
        let requests = try upstream.requests(path: "/api/client/metrics/bulk")
        XCTAssertEqual(requests.count, 1)
        let body = requests[0].json
        // The entry for the token's environment, once; the development one dropped as the server drops it.
        let metrics = try XCTUnwrap(body["metrics"] as? [[String: Any]])
        XCTAssertEqual(metrics.count, 1)
        XCTAssertEqual(metrics.first?["featureName"] as? String, "f1")
        XCTAssertEqual(metrics.first?["timestamp"] as? String, "2026-01-01T00:00:00.000Z")
        XCTAssertEqual([metrics.first?["yes"] as? Int, metrics.first?["no"] as? Int], [3, 1])
        XCTAssertEqual(metrics.first?["variants"] as? [String: Int], ["blue": 2])
        let app = try XCTUnwrap((body["applications"] as? [[String: Any]])?.first)
        XCTAssertEqual(app["projects"] as? [String], ["*"])
        XCTAssertEqual(app["connectVia"] as? [[String: String]],
                       [["appName": "unleash-edge", "instanceId": "01JEDGE"], ["appName": "metrics-proxy", "instanceId": Self.instanceId(proxy)!]])
        XCTAssertEqual(try upstream.impact().values[.init(name: "purchases", labels: ["appName": "my-app", "environment": "production"])], 42)
        XCTAssertTrue(requests[0].body.contains(#""origin":"edge""#), "the sample's own labels are kept")
    }

    /// A sidecar that lost the answer to a batch sends it again: the middle tier answers 202
    /// and counts it once, also when the resend reaches it after a kill -9 and a restart.
    func testAResentBatchCountsOnceEvenAfterTheMiddleTierIsKilled() throws {
        let upstream = try FakeUpstream()
        let conf = testConfig(upstream: upstream.url, interval: "2s")
        let first = try ProxyProcess(config: conf, name: "middle")
        let body = #"{"applications":[],"metrics":[{"featureName":"resent","appName":"shop","environment":"development","timestamp":"2026-12-04T10:00:00Z","yes":4,"no":1,"variants":{}}]}"#
        let from = [("X-Metrics-Proxy-Instance", "sidecar-7-0a1b2c"), ("X-Metrics-Proxy-Batch", "001796378400000-0000")]
        XCTAssertEqual(try first.tcp().post("/api/client/metrics/bulk", json: body, token: tokenA, headers: from).status, 202)
        XCTAssertEqual(try first.unix().post("/api/client/metrics/bulk", json: body, token: tokenA, headers: from).status, 202)
        XCTAssertEqual(value(try scrape(first), "metrics_proxy_duplicate_batches_total"), 1)
        first.signal(SIGKILL)
        _ = first.waitForExit()
        let second = try ProxyProcess(config: conf, name: "middle", spoolDir: first.spoolDir)
        XCTAssertEqual(try second.tcp().post("/api/client/metrics/bulk", json: body, token: tokenA, headers: from).status, 202)
        XCTAssertEqual(value(try scrape(second), "metrics_proxy_duplicate_batches_total"), 1)
        // Without the headers it is another post, and counts.
        XCTAssertEqual(try second.tcp().post("/api/client/metrics/bulk", json: body, token: tokenA).status, 202)
        try waitFor("the counts upstream", timeout: 10) {
            var expected = Ledger()
            expected.add(.init(token: tokenA, app: "shop", feature: "resent", hour: "2026-12-04T10:00:00.000Z"), yes: 8, no: 2, variants: [:])
            return Ledger.fromUpstream(try upstream.requests()) == expected
        }
    }

    /// Two proxies on one spool directory would send each other's batches and share an
    /// instance id: the second refuses to start, naming the directory; once the first is
    /// gone (even by SIGKILL) the directory is free.
    func testASecondProxyOnTheSameSpoolDirectoryRefusesToStart() throws {
        let upstream = try FakeUpstream()
        let first = try ProxyProcess(config: testConfig(upstream: upstream.url), name: "first")
        let second = try ProxyProcess(config: testConfig(upstream: upstream.url), name: "second", spoolDir: first.spoolDir,
                                      waitUntilListening: false)
        XCTAssertEqual(second.waitForExit(), 2, "a start-up error")
        XCTAssertTrue(second.log.contains("spool.dir \(first.spoolDir) is in use by another metrics-proxy"), second.log)
        first.signal(SIGKILL)
        _ = first.waitForExit()
        let third = try ProxyProcess(config: testConfig(upstream: upstream.url), name: "third", spoolDir: first.spoolDir)
        XCTAssertEqual(try third.tcp().request("GET", "/readyz").status, 200)
    }

    /// The instance id a proxy logged at start.
    static func instanceId(_ p: ProxyProcess) -> String? {
        guard let line = p.log.split(separator: "\n").first(where: { $0.contains("event=listening") }),
              let r = line.range(of: #"instance=[^ ]+"#, options: .regularExpression) else { return nil }
        return String(line[r].dropFirst("instance=".count))
    }

    func testAProxyPointedAtItselfRefusesItsOwnBatchesAndKeepsThem() throws {
        let port = FakeUpstream.freePort()
        let proxy = try ProxyProcess(config: Self.middleConfig(port: port, upstream: "http://127.0.0.1:\(port)/api")
            .replacingOccurrences(of: "interval = 2s", with: "interval = 1s"))
        var ledger = Ledger()
        var factory = PostFactory(apps: ["checkout"], label: "loop")
        for i in 0..<5 {
            XCTAssertEqual(try proxy.tcp().post("/api/client/metrics", json: factory.post(token: tokenA, instance: "i\(i)", into: &ledger), token: tokenA).status, 202)
        }
        // Its batch comes back to it: refused with 508 and a message that says why, kept in the spool.
        waitFor("the loop to be refused") { proxy.log.contains("refused this proxy's own traffic") }
        // The sender logs the 508 when the answer reaches it, after the receiver logged why.
        waitFor("the sender to log the 508") { proxy.log.contains("status=508") }
        XCTAssertFalse(proxy.spooledFiles.isEmpty, "the refused batch stays spooled")
        // Another proxy's batch is not refused, and one that carries this proxy's id is, whatever the route.
        var refused = Ledger()
        let echo = try proxy.tcp().post("/api/client/metrics", json: factory.post(token: tokenA, instance: "x", into: &refused), token: tokenA,
                                        headers: [("X-Metrics-Proxy-Instance", Self.instanceId(proxy)!)])
        XCTAssertEqual(echo.status, 508)
        XCTAssertTrue(String(decoding: echo.body, as: UTF8.self).contains("leads back to itself"))
        let forwarded = try proxy.tcp().request("GET", "/api/client/features", headers: [("Authorization", tokenA), ("X-Metrics-Proxy-Instance", Self.instanceId(proxy)!)])
        XCTAssertEqual(forwarded.status, 508)

        // Pointed at the right upstream (SIGHUP), the kept batches arrive, each count once.
        let upstream = try FakeUpstream()
        try String(contentsOf: proxy.configURL, encoding: .utf8)
            .replacingOccurrences(of: "url = http://127.0.0.1:\(port)/api", with: "url = \(upstream.url)")
            .write(to: proxy.configURL, atomically: true, encoding: .utf8)
        proxy.signal(SIGHUP)
        try waitFor("the kept batches upstream", timeout: 20) { Ledger.fromUpstream(try upstream.requests()) == ledger }
    }
}

/// A value handed back from another thread (read after that thread is done with it).
final class Box<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}
