import Foundation
import XCTest

/// The real Python SDK (UnleashClient from PyPI) with its base URL at the proxy: it fetches
/// feature definitions through the proxy, evaluates flags in several app instances (separate
/// processes), posts metrics, and shuts down. The upstream must hold exactly the evaluations
/// the SDKs made, in fewer requests than they posted.
final class SDKEndToEndTests: XCTestCase {
    func testPythonSDKInstancesThroughTheProxyArriveExactlyInFewerRequests() throws {
        guard pythonHasUnleashClient() else {
            return XCTFail("the real SDK is not installed: run python3 -m pip install UnleashClient==6.9.1 (the README's test command does)")
        }
        let upstream = try FakeUpstream(features: Paths.fixtures.appendingPathComponent("features.json").path)
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "2s"))
        let instances = Self.instances
        let outputs = try runSDKs(proxy, evaluations: 300)
        // What the SDKs say they evaluated, summed per app and flag.
        var expected: [String: [String: (yes: Int, no: Int, variants: [String: Int])]] = [:]
        var sdkPosts = 0
        for (inst, out) in zip(instances, outputs) {
            let j = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as? [String: Any])
            sdkPosts += j["metric_posts"] as? Int ?? 0
            XCTAssertEqual(j["metric_statuses"] as? [Int], Array(repeating: 202, count: j["metric_posts"] as? Int ?? 0),
                           "the proxy answered every SDK post 202")
            for (flag, c) in j["counts"] as! [String: [String: Any]] {
                var e = expected[inst.0, default: [:]][flag, default: (0, 0, [:])]
                e.yes += c["yes"] as! Int
                e.no += c["no"] as! Int
                for (v, n) in c["variants"] as? [String: Int] ?? [:] { e.variants[v, default: 0] += n }
                expected[inst.0, default: [:]][flag] = e
            }
        }
        XCTAssertEqual(expected.count, 2)
        XCTAssertGreaterThan(sdkPosts, 6)
        // The SDKs fetched their features through the proxy.
        XCTAssertGreaterThanOrEqual(try upstream.requests(path: "/api/client/features").count, 3)

        func received() throws -> [String: [String: (yes: Int, no: Int, variants: [String: Int])]] {
            var got: [String: [String: (yes: Int, no: Int, variants: [String: Int])]] = [:]
            for r in try upstream.requests(path: "/api/client/metrics/bulk") {
                for m in r.json["metrics"] as! [[String: Any]] {
                    let app = m["appName"] as! String, flag = m["featureName"] as! String
                    var e = got[app, default: [:]][flag, default: (0, 0, [:])]
                    e.yes += m["yes"] as! Int
                    e.no += m["no"] as! Int
                    for (v, n) in m["variants"] as! [String: Int] { e.variants[v, default: 0] += n }
                    got[app, default: [:]][flag] = e
                }
            }
            return got
        }
        func same(_ a: [String: [String: (yes: Int, no: Int, variants: [String: Int])]],
                  _ b: [String: [String: (yes: Int, no: Int, variants: [String: Int])]]) -> Bool {
            a.keys.sorted() == b.keys.sorted() && a.keys.allSatisfy { app in
                a[app]!.keys.sorted() == b[app]!.keys.sorted() && a[app]!.keys.allSatisfy { f in
                    a[app]![f]!.yes == b[app]![f]!.yes && a[app]![f]!.no == b[app]![f]!.no && a[app]![f]!.variants == b[app]![f]!.variants
                }
            }
        }
        try waitFor("every evaluation upstream", timeout: 15) { same(try received(), expected) }
        let upstreamRequests = try upstream.requests(path: "/api/client/metrics/bulk")
        XCTAssertLessThan(upstreamRequests.count, sdkPosts, "fewer requests upstream than the SDKs posted")
        print("sdk end-to-end: \(sdkPosts) SDK metric posts in, \(upstreamRequests.count) upstream requests out")
        let apps = Set(upstreamRequests.flatMap { ($0.json["applications"] as! [[String: Any]]).map { "\($0["appName"]!)/\($0["instanceId"]!)" } })
        XCTAssertEqual(apps, Set(instances.map { "\($0.0)/\($0.1)" }), "every instance in applications[]")
        let registered = upstreamRequests.flatMap { $0.json["applications"] as! [[String: Any]] }
        XCTAssertTrue(registered.allSatisfy { ($0["sdkVersion"] as? String)?.hasPrefix("unleash-python-sdk:") == true })
    }

    /// Three real Python SDK instances (two of one app) record impact metrics through the proxy:
    /// a counter with and without a flag-context label, a gauge each, a histogram. In both
    /// upstream modes, the fake upstream, holding them as the Unleash server's registry does,
    /// has every increment and observation exactly once, each gauge's last value, the flag
    /// counts exact, and never dropped, aborted or refused an impact array.
    func testImpactMetricsFromThreePythonSDKsArriveExactlyInBothModes() throws {
        guard pythonHasUnleashClient() else {
            return XCTFail("the real SDK is not installed: run python3 -m pip install UnleashClient==6.9.1 (the README's test command does)")
        }
        for mode in ["bulk", "metrics"] {
            let upstream = try FakeUpstream(features: Paths.fixtures.appendingPathComponent("features.json").path)
            let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "2s", upstreamExtra: "mode = \(mode)"))
            let outputs = try runSDKs(proxy, evaluations: 200, extra: ["--impact"])
            // What the SDKs recorded, summed per series as the server keys them.
            var counters: [ImpactState.Key: Double] = [:], gauges: [ImpactState.Key: Double] = [:]
            var histograms: [ImpactState.Key: ImpactState.Histogram] = [:]
            var flags: [String: Int] = [:]
            var sdkPosts = 0
            func key(_ row: [String: Any]) -> ImpactState.Key {
                var labels: [String: String] = [:]
                for (k, v) in row["labels"] as! [String: String] { labels[k.replacingOccurrences(of: "-", with: "_")] = v }
                return ImpactState.Key(name: row["name"] as! String, labels: labels)
            }
            for out in outputs {
                let j = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as? [String: Any])
                sdkPosts += j["metric_posts"] as! Int
                XCTAssertEqual(Set(j["metric_statuses"] as! [Int]), [202], "every SDK post answered 202 (\(mode))")
                let impact = j["impact"] as! [String: [[String: Any]]]
                for row in impact["counters"]! { counters[key(row), default: 0] += (row["value"] as! NSNumber).doubleValue }
                for row in impact["gauges"]! { gauges[key(row)] = (row["value"] as! NSNumber).doubleValue }
                for row in impact["histograms"]! {
                    var h = histograms[key(row), default: ImpactState.Histogram(count: 0, sum: 0, buckets: [:])]
                    h.count += (row["count"] as! NSNumber).doubleValue
                    h.sum += (row["sum"] as! NSNumber).doubleValue
                    for (le, n) in row["buckets"] as! [String: Int] { h.buckets[le, default: 0] += Double(n) }
                    histograms[key(row)] = h
                }
                for (flag, c) in j["counts"] as! [String: [String: Any]] {
                    flags[flag, default: 0] += (c["yes"] as! Int) + (c["no"] as! Int)
                }
            }
            XCTAssertEqual(counters.count, 8, "two apps, each with a plain series and three flag-variant ones")
            XCTAssertEqual(gauges.count, 3)
            XCTAssertEqual(histograms.count, 2)
            var state = try upstream.impact()
            try waitFor("every impact metric upstream (\(mode))", timeout: 15) {
                state = try upstream.impact()
                return state.values.filter { state.types[$0.key.name] == "counter" && $0.value != 0 } == counters
                    && state.histograms.filter { $0.value.count != 0 } == histograms
            }
            XCTAssertEqual(state.values.filter { state.types[$0.key.name] == "gauge" }, gauges, "each gauge's last value (\(mode))")
            XCTAssertEqual([state.droppedArrays, state.aborted, state.refused], [0, 0, 0], "nothing the server would drop or refuse (\(mode))")
            XCTAssertEqual(state.resets, 0, "no metric recreated upstream (\(mode))")
            // The flag counts, exact, from the same posts.
            let path = mode == "bulk" ? "/api/client/metrics/bulk" : "/api/client/metrics"
            var got: [String: Int] = [:]
            for r in try upstream.requests(path: path) {
                if mode == "bulk" {
                    for m in r.json["metrics"] as! [[String: Any]] { got[m["featureName"] as! String, default: 0] += (m["yes"] as! Int) + (m["no"] as! Int) }
                } else {
                    for (f, c) in (r.json["bucket"] as! [String: Any])["toggles"] as! [String: [String: Any]] {
                        got[f, default: 0] += (c["yes"] as! Int) + (c["no"] as! Int)
                    }
                }
                XCTAssertEqual(r.impact.map { $0 == "none" || $0 == "stored" }, true, "\(r.impact ?? "no verdict") (\(mode))")
            }
            XCTAssertEqual(got, flags, "the flag counts, exact (\(mode))")
            XCTAssertLessThan(try upstream.requests(path: path).count, sdkPosts, "fewer requests upstream than the SDKs posted (\(mode))")
        }
    }

    /// Two instances of one app and one of another.
    static let instances = [("checkout", "checkout-1"), ("checkout", "checkout-2"), ("search", "search-1")]

    /// Runs `Self.instances` of the real SDK (Tests/Fixtures/sdk_app.py) at the proxy, at once,
    /// and returns the path of each one's result file once all have finished.
    func runSDKs(_ proxy: ProxyProcess, evaluations: Int, extra: [String] = []) throws -> [String] {
        let url = "http://127.0.0.1:\(proxy.tcpPort)/api"
        let dir = Paths.tempDir("sdk")
        let outputs = Self.instances.map { dir.appendingPathComponent("\($0.1).json").path }
        let processes = try zip(Self.instances, outputs).map { inst, out -> Process in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["python3", Paths.fixtures.appendingPathComponent("sdk_app.py").path, "--url", url,
                           "--app-name", inst.0, "--instance-id", inst.1, "--token", tokenA,
                           "--evaluations", "\(evaluations)", "--metrics-interval", "1", "--out", out] + extra
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            return p
        }
        for p in processes {
            waitFor("an SDK instance to finish", timeout: 30) { !p.isRunning }
            XCTAssertEqual(p.terminationStatus, 0, "sdk_app.py \(extra.joined(separator: " ")) failed")
        }
        return outputs
    }

    func pythonHasUnleashClient() -> Bool {
        (try? runTool("/usr/bin/env", ["python3", "-c", "import UnleashClient"])) == 0
    }
}
