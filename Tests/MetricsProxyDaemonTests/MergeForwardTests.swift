import Foundation
import XCTest
import TestSupport

/// The main path: many SDKs over TCP and the Unix socket, merged per window, one request per
/// token per window upstream, every count exact.
final class MergeForwardTests: XCTestCase {
    func testConcurrentPostersOverTCPAndUnixArriveExactlyOncePerTokenPerWindow() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url))
        let posters = 24
        let deadline = Date().addingTimeInterval(3.5) // spans several 1 s windows
        let tcp = HTTPClient.Endpoint.tcp("127.0.0.1", proxy.tcpPort), unix = HTTPClient.Endpoint.unix(proxy.unixPath)
        let results = parallel(posters) { i -> (ledger: Ledger, bad: [Int], error: String) in
            let client = HTTPClient(i % 2 == 0 ? tcp : unix)
            var factory = PostFactory(apps: ["app-0", "app-1", "app-2"], label: "merge-\(i)")
            var ledger = Ledger(), bad: [Int] = []
            let token = i % 3 == 0 ? tokenB : tokenA
            var n = 0
            do {
                while Date() < deadline, n < 600 {
                    n += 1
                    if n % 7 == 0 {
                        // A bad post between good ones: refused whole, the window untouched.
                        let b = PostFactory.badBodies[(n / 7 + i) % PostFactory.badBodies.count]
                        let r = try client.post("/api/client/metrics", json: b.body, token: token)
                        bad.append(r.status == b.status ? 0 : r.status)
                        continue
                    }
                    var attempt = Ledger()
                    let body = factory.post(token: token, instance: "instance-\(i)", into: &attempt)
                    let r = try client.post("/api/client/metrics", json: body, token: token)
                    if r.status == 202 { ledger.merge(attempt) } else { bad.append(r.status) }
                    // Paced, so that 600 posts last at least 3 s on any machine and span several
                    // windows (unpaced, they took 2.4–2.6 s here, close to two windows).
                    usleep(5_000)
                }
            } catch {
                return (ledger, bad, "\(client.endpoint): \(error)")
            }
            return (ledger, bad, "")
        }
        let ledgers = results.map(\.ledger), badAnswers = results.map(\.bad), errors = results.map(\.error)
        XCTAssertEqual(errors.filter { !$0.isEmpty }, [])
        XCTAssertEqual(badAnswers.flatMap { $0 }.filter { $0 != 0 }, [], "every good post 202, every bad one its status")
        var expected = Ledger()
        for l in ledgers { expected.merge(l) }
        XCTAssertGreaterThan(expected.sums.count, 20)

        try waitFor("every count upstream", timeout: 15) {
            Ledger.fromUpstream(try upstream.requests()) == expected
        }
        let requests = try upstream.requests(path: "/api/client/metrics/bulk")
        XCTAssertEqual(Ledger.fromUpstream(requests), expected)

        // Exactly one request per token per window: batch ids are "<window>-<n>".
        var perWindowToken: [String: Int] = [:]
        for r in requests {
            let window = String(r.header("X-Metrics-Proxy-Batch")!.split(separator: "-")[0])
            perWindowToken["\(window) \(r.header("Authorization")!)", default: 0] += 1
        }
        XCTAssertEqual(perWindowToken.values.filter { $0 != 1 }, [], "\(perWindowToken)")
        let windows = Set(perWindowToken.keys.map { $0.split(separator: " ")[0] })
        XCTAssertGreaterThanOrEqual(windows.count, 3, "posting for 3.5 s with a 1 s window spans several windows")

        // Both hours arrive as separate entries; the environment is the token's.
        let hours = Set(expected.sums.keys.map(\.hour))
        XCTAssertEqual(hours, ["2026-11-28T10:00:00.000Z", "2026-11-28T09:00:00.000Z"])
        for r in requests {
            let env = r.header("Authorization") == tokenA ? "development" : "production"
            for m in r.json["metrics"] as! [[String: Any]] { XCTAssertEqual(m["environment"] as? String, env) }
            // Every instance that posted in the window is in applications[], with started and interval.
            for a in r.json["applications"] as! [[String: Any]] {
                XCTAssertEqual(a["environment"] as? String, env)
                XCTAssertNotNil(a["started"]); XCTAssertNotNil(a["interval"])
            }
        }
        let instances = Set(requests.flatMap { ($0.json["applications"] as! [[String: Any]]).map { $0["instanceId"] as! String } })
        XCTAssertEqual(instances, Set((0..<posters).map { "instance-\($0)" }))
    }

    func testMetricsModeSendsOneSingleAppPostPerAppAndHour() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, upstreamExtra: "mode = metrics"))
        let c = proxy.tcp()
        var expected = Ledger()
        var factory = PostFactory(apps: ["app-0", "app-1"], label: "metrics-mode")
        for i in 0..<40 {
            XCTAssertEqual(try c.post("/api/client/metrics", json: factory.post(token: tokenA, instance: "i\(i % 3)", into: &expected), token: tokenA).status, 202)
        }
        func received() throws -> Ledger {
            var got = Ledger()
            for r in try upstream.requests(path: "/api/client/metrics") {
                let j = r.json
                let bucket = j["bucket"] as! [String: Any]
                let stop = bucket["stop"] as! String
                for (f, v) in bucket["toggles"] as! [String: [String: Any]] {
                    got.add(.init(token: r.header("Authorization")!, app: j["appName"] as! String, feature: f,
                                  hour: String(stop.prefix(13)) + ":00:00.000Z"),
                            yes: v["yes"] as! Int, no: v["no"] as! Int, variants: v["variants"] as? [String: Int] ?? [:])
                }
            }
            return got
        }
        // The posts may straddle a window boundary: wait for all of them.
        try waitFor("every count upstream") { try received() == expected }
        var seen = Set<String>()
        for r in try upstream.requests(path: "/api/client/metrics") {
            let j = r.json
            let bucket = j["bucket"] as! [String: Any]
            let stop = bucket["stop"] as! String
            let window = r.header("X-Metrics-Proxy-Batch")!.split(separator: "-")[0]
            XCTAssertTrue(seen.insert("\(window) \(j["appName"]!) \(stop.prefix(13))").inserted, "one post per app and hour per window")
            XCTAssertEqual(String((bucket["start"] as! String).prefix(13)), String(stop.prefix(13)), "start and stop in the same hour")
        }
        XCTAssertGreaterThanOrEqual(seen.count, 4, "2 apps × 2 hours")
    }

    func testGzipPostIsInflatedAndMergedAndUpstreamGzipIsSent() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, upstreamExtra: "gzip = on"))
        var expected = Ledger()
        var factory = PostFactory(apps: ["app-0"], label: "gzip")
        let body = factory.post(token: tokenA, instance: "gz", into: &expected)
        let gz = try gzip(Array(body.utf8))
        let c = proxy.unix()
        let r = try c.request("POST", "/api/client/metrics", headers: [("Content-Type", "application/json"),
                              ("Content-Encoding", "gzip"), ("Authorization", tokenA)], body: gz)
        XCTAssertEqual(r.status, 202)
        try waitFor("the gzip post upstream") { Ledger.fromUpstream(try upstream.requests()) == expected }
        XCTAssertEqual(try upstream.requests(path: "/api/client/metrics/bulk").first?.header("Content-Encoding"), "gzip")
    }
}

/// gzip with the system tool, so the test does not share the proxy's zlib code.
func gzip(_ bytes: [UInt8]) throws -> [UInt8] {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["gzip", "-c"]
    let input = Pipe(), output = Pipe()
    p.standardInput = input
    p.standardOutput = output
    try p.run()
    input.fileHandleForWriting.write(Data(bytes))
    try input.fileHandleForWriting.close()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return Array(data)
}
