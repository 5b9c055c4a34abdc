import Foundation
import XCTest
@testable import MetricsProxyCore

/// `POST /api/client/metrics/bulk`: the server's validation, the merge into the window, the
/// instances relayed with their own fields, the journal, and a proxy meeting its own traffic.
final class BulkPostTests: XCTestCase {
    static let token = "default:development.secret"
    static let now: Int64 = 1_796_378_400_000 // 2026-12-04T10:00:00Z
    let json = Ingest.Headers(contentType: "application/json", authorization: token)

    static let app = #"{"appName":"shop","instanceId":"pod-1","environment":"development","interval":15000,"started":"2026-12-04T09:00:00.000Z","strategies":["default"],"sdkVersion":"unleash-node:6.1.0","connectVia":[{"appName":"unleash-edge","instanceId":"edge-1"}]}"#

    static func entry(_ feature: String, yes: Int = 1, no: Int = 0, environment: String = "development",
                      timestamp: String = #""2026-12-04T10:00:00.000Z""#, variants: String = "{}") -> String {
        #"{"featureName":"\#(feature)","appName":"shop","environment":"\#(environment)","timestamp":\#(timestamp),"yes":\#(yes),"no":\#(no),"variants":\#(variants)}"#
    }

    static func bulk(apps: [String] = [app], metrics: [String], impact: String? = nil) -> [UInt8] {
        var body = #"{"applications":[\#(apps.joined(separator: ","))],"metrics":[\#(metrics.joined(separator: ","))]"#
        if let impact { body += #","impactMetrics":[\#(impact)]"# }
        return Array((body + "}").utf8)
    }

    /// The server's cases (SERVER.md §6, `bulk-metrics-schema.ts`, the handler's Joi checks):
    /// each body and the path its 400 names, or nil for 202.
    func testValidationFollowsTheServer() {
        let cases: [(String, String?)] = [
            (#"{"applications":[],"metrics":[]}"#, nil),
            (#"{"metrics":[]}"#, "/body/applications"),
            (#"{"applications":[]}"#, "/body/metrics"),
            ("", "/body/applications"),
            ("[]", "/body"),
            (#"{"applications":{},"metrics":[]}"#, "/body/applications"),
            (#"{"applications":[],"metrics":[\#(Self.entry("f", variants: "null"))]}"#, "/body/metrics/0/variants"),
            (#"{"applications":[],"metrics":[\#(Self.entry("f", yes: -1))]}"#, "/body/metrics/0/yes"),
            (#"{"applications":[],"metrics":[{"featureName":"f","appName":"shop","environment":"development","yes":1.5,"no":0,"variants":{}}]}"#, "/body/metrics/0/yes"),
            (#"{"applications":[],"metrics":[{"featureName":"f","appName":"shop","environment":"development","yes":1,"no":0,"variants":{"a":0.5}}]}"#, "/body/metrics/0/variants/a"),
            (#"{"applications":[],"metrics":[{"featureName":"f","environment":"development","yes":1,"no":0,"variants":{}}]}"#, "/body/metrics/0/appName"),
            (#"{"applications":[],"metrics":[{"featureName":"f","appName":"","environment":"development","yes":1,"no":0,"variants":{}}]}"#, "/body/metrics/0/appName"),
            (#"{"applications":[],"metrics":[{"featureName":"f","appName":"shop","environment":"","yes":1,"no":0,"variants":{}}]}"#, "/body/metrics/0/environment"),
            (#"{"applications":[],"metrics":[{"appName":"shop","environment":"development","yes":1,"no":0,"variants":{}}]}"#, "/body/metrics/0/featureName"),
            // The server allows an empty feature name, coerces numeric strings, and takes 2^53 - 1.
            (#"{"applications":[],"metrics":[{"featureName":"","appName":"shop","environment":"development","yes":"3","no":9007199254740991,"variants":{}}]}"#, nil),
            (#"{"applications":[],"metrics":[\#(Self.entry("f", timestamp: #""yesterday""#))]}"#, "/body/metrics/0/timestamp"),
            (#"{"applications":[],"metrics":[\#(Self.entry("f", timestamp: "1796378400000"))]}"#, nil),
            // An application needs appName, instanceId and environment, then `started` and
            // `interval` unless it is a frontend SDK that names its version.
            (#"{"applications":[{"appName":"shop","instanceId":"i","environment":"development"}],"metrics":[]}"#, "/body/applications/0/started"),
            (#"{"applications":[{"appName":"shop","instanceId":"i","environment":"development","started":0}],"metrics":[]}"#, "/body/applications/0/interval"),
            (#"{"applications":[{"appName":"shop","instanceId":"i","environment":"development","sdkType":"frontend","sdkVersion":"unleash-proxy-client-js:3.7.0"}],"metrics":[]}"#, nil),
            (#"{"applications":[{"appName":"shop","instanceId":"i","environment":"development","sdkType":"frontend"}],"metrics":[]}"#, "/body/applications/0/started"),
            (#"{"applications":[{"appName":"shop","instanceId":"i","environment":"development","started":0,"interval":1,"sdkType":"mobile"}],"metrics":[]}"#, "/body/applications/0/sdkType"),
            (#"{"applications":[{"appName":"shop","environment":"development","started":0,"interval":1}],"metrics":[]}"#, "/body/applications/0/instanceId"),
            (#"{"applications":[{"appName":"shop","instanceId":"i","started":0,"interval":1}],"metrics":[]}"#, "/body/applications/0/environment"),
            (#"{"applications":[{"appName":"","instanceId":"i","environment":"development","started":0,"interval":1}],"metrics":[]}"#, "/body/applications/0/appName"),
            (#"{"applications":[{"appName":"shop","instanceId":"i","environment":"development","started":0,"interval":1,"connectVia":[{"appName":"edge"}]}],"metrics":[]}"#, "/body/applications/0/connectVia/0/instanceId"),
            (#"{"applications":[{"appName":"shop","instanceId":"i","environment":"development","started":0,"interval":1,"sdkFlavorVersion":"\#(String(repeating: "9", count: 33))"}],"metrics":[]}"#, "/body/applications/0/sdkFlavorVersion"),
            (#"{"applications":[],"metrics":[],"seenTokens":"x"}"#, "/body/seenTokens"),
            // A bad impact metric is dropped alone, as on an SDK post.
            (#"{"applications":[],"metrics":[],"impactMetrics":[{"name":"x"}],"seenTokens":["a"]}"#, nil),
        ]
        for (body, path) in cases {
            var ingest = Ingest(Config())
            var w = Window(opened: 0)
            let answer = ingest.accept(.bulk, headers: json, body: Array(body.utf8), into: &w, now: Self.now)
            if let path {
                guard case .invalid(let f) = answer else { XCTFail("\(body): \(answer)"); continue }
                XCTAssertEqual(f.details.first?.path, path, body)
                XCTAssertTrue(w.isEmpty, "a refused post leaves the window untouched: \(body)")
            } else {
                XCTAssertEqual(answer, .accepted, body)
            }
        }
    }

    func testEntriesMergeByHourAndTheTokensEnvironmentAndInstancesKeepTheirOwnFields() throws {
        var ingest = Ingest(Config())
        var w = Window(opened: Self.now)
        let sdkPost = #"{"appName":"shop","instanceId":"pod-9","bucket":{"start":"2026-12-04T10:00:00Z","stop":"2026-12-04T10:00:30Z","toggles":{"a":{"yes":2,"no":1,"variants":{"blue":2}}}}}"#
        XCTAssertEqual(ingest.accept(.metrics, headers: json, body: Array(sdkPost.utf8), into: &w, now: Self.now), .accepted)
        let body = Self.bulk(metrics: [
            Self.entry("a", yes: 3, no: 1, variants: #"{"blue":1,"green":2}"#),
            Self.entry("a", yes: 5, timestamp: #""2026-12-04T09:59:59.000Z""#), // the hour before
            Self.entry("b", yes: 7, environment: "production"), // not the token's: dropped, as the server does
            Self.entry("c", yes: 0, no: 0), // nothing counted: dropped, as the server does
        ], impact: #"{"name":"orders","help":"h","type":"counter","samples":[{"labels":{"appName":"shop"},"value":4}]}"#)
        XCTAssertEqual(ingest.accept(.bulk, headers: json, body: body, into: &w, now: Self.now), .accepted)
        let again = Self.bulk(apps: [], metrics: [Self.entry("a", yes: 1)],
                              impact: #"{"name":"orders","help":"h","type":"counter","samples":[{"labels":{"appName":"shop"},"value":6}]}"#)
        XCTAssertEqual(ingest.accept(.bulk, headers: json, body: again, into: &w, now: Self.now), .accepted)

        let batches = BatchBuilder(mode: .bulk, maxBody: 1 << 20, proxyInstance: "node-7-abc123").batches(from: w, sequence: 1, closedAt: Self.now)
        XCTAssertEqual(batches.count, 1)
        let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(batches[0].body)) as? [String: Any])
        var got: [String: [Int]] = [:]
        for m in o["metrics"] as? [[String: Any]] ?? [] {
            let variants = m["variants"] as? [String: Int] ?? [:]
            got["\(m["featureName"]!) \(m["timestamp"]!)"] = [m["yes"] as! Int, m["no"] as! Int, variants["blue"] ?? 0, variants["green"] ?? 0]
        }
        XCTAssertEqual(got, ["a 2026-12-04T10:00:00.000Z": [2 + 3 + 1, 1 + 1, 2 + 1, 2], "a 2026-12-04T09:00:00.000Z": [5, 0, 0, 0]])
        let impact = try XCTUnwrap(o["impactMetrics"] as? [[String: Any]])
        XCTAssertEqual(impact.count, 1)
        XCTAssertEqual((impact[0]["samples"] as? [[String: Any]])?.map { $0["value"] as? Double }, [10])

        let apps = try XCTUnwrap(o["applications"] as? [[String: Any]])
        let relayed = try XCTUnwrap(apps.first { $0["instanceId"] as? String == "pod-1" })
        XCTAssertEqual(relayed["started"] as? String, "2026-12-04T09:00:00.000Z")
        XCTAssertEqual(relayed["interval"] as? Int, 15000)
        XCTAssertEqual(relayed["sdkVersion"] as? String, "unleash-node:6.1.0")
        XCTAssertEqual(relayed["connectVia"] as? [[String: String]],
                       [["appName": "unleash-edge", "instanceId": "edge-1"], ["appName": "metrics-proxy", "instanceId": "node-7-abc123"]])
        let direct = try XCTUnwrap(apps.first { $0["instanceId"] as? String == "pod-9" })
        XCTAssertEqual(direct["connectVia"] as? [[String: String]], [["appName": "metrics-proxy", "instanceId": "node-7-abc123"]])
    }

    func testAProxyRefusesItsOwnTrafficByConnectViaOrHeader() {
        var ingest = Ingest(Config())
        ingest.instanceId = "node-7-abc123"
        var w = Window(opened: 0)
        let mine = Self.app.replacingOccurrences(of: #""appName":"unleash-edge","instanceId":"edge-1""#,
                                                 with: #""appName":"metrics-proxy","instanceId":"node-7-abc123""#)
        XCTAssertEqual(ingest.accept(.bulk, headers: json, body: Self.bulk(apps: [mine], metrics: [Self.entry("a")]), into: &w, now: Self.now).status, 508)
        var fromMe = json
        fromMe.proxyInstance = "node-7-abc123"
        XCTAssertEqual(ingest.accept(.bulk, headers: fromMe, body: Self.bulk(apps: [], metrics: [Self.entry("a")]), into: &w, now: Self.now).status, 508)
        XCTAssertEqual(ingest.accept(.metrics, headers: fromMe, body: Array(#"{"appName":"a"}"#.utf8), into: &w, now: Self.now).status, 508)
        XCTAssertTrue(w.isEmpty)
        // Another proxy's traffic is taken.
        fromMe.proxyInstance = "node-8-def456"
        XCTAssertEqual(ingest.accept(.bulk, headers: fromMe, body: Self.bulk(metrics: [Self.entry("a")]), into: &w, now: Self.now), .accepted)
    }

    func testBulkPostsAndRelayedInstancesSurviveTheJournalAndACheckpoint() throws {
        var config = Config()
        config.spool.dir = "/s"
        let fs = ScriptedFileSystem()
        let journal = Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20)
        let d = DurableWindow(config: config, journal: journal, opened: Self.now)
        _ = try d.recover(spool: JournalTests.spool(fs), config: config)
        let frontend = #"{"appName":"web","instanceId":"browser","environment":"development","sdkType":"frontend","sdkVersion":"unleash-proxy-client-js:3.7.0","projects":["p1"]}"#
        XCTAssertEqual(d.accept(.bulk, headers: json, body: Self.bulk(apps: [Self.app, frontend], metrics: [Self.entry("a", yes: 2)],
                                                                     impact: #"{"name":"orders","help":"h","type":"counter","samples":[{"labels":{},"value":4}]}"#),
                                now: Self.now), .accepted)
        let expected = JournalTests.upstreamBodies(d.window)
        XCTAssertTrue(expected[0].contains(#""sdkType":"frontend""#) && expected[0].contains(#""projects":["p1"]"#), expected[0])

        // Replayed from the journal after a kill: the same bodies upstream.
        let replayed = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20), opened: Self.now)
        XCTAssertEqual(try replayed.recover(spool: JournalTests.spool(fs), config: config).records, 1)
        XCTAssertEqual(JournalTests.upstreamBodies(replayed.window), expected)

        // Written into a checkpoint and read back: the same bodies again.
        replayed.journal!.maxSize = 1
        guard case .success(true) = replayed.checkpointIfDue(now: Self.now + 100) else { return XCTFail("checkpoint not written") }
        let fromCheckpoint = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20), opened: Self.now)
        let r = try fromCheckpoint.recover(spool: JournalTests.spool(fs), config: config)
        XCTAssertEqual(r.refused, 0)
        XCTAssertEqual(JournalTests.upstreamBodies(fromCheckpoint.window), expected)
    }

    /// A batch another proxy resends (its 202 lost) is answered 202 and not merged again, also
    /// after a restart that replayed it from the journal; a refused one is taken when it comes again.
    func testABatchResentByAnotherProxyCountsOnceAcrossARestart() throws {
        var config = Config()
        config.spool.dir = "/s"
        let fs = ScriptedFileSystem()
        let d = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20), opened: Self.now)
        _ = try d.recover(spool: JournalTests.spool(fs), config: config)
        var sent = json
        sent.proxyInstance = "sidecar-1-abc123"
        sent.batch = "001796378400000-0000"
        let body = Self.bulk(metrics: [Self.entry("a", yes: 2)])
        XCTAssertEqual(d.accept(.bulk, headers: sent, body: body, now: Self.now), .accepted)
        XCTAssertEqual(d.accept(.bulk, headers: sent, body: body, now: Self.now), .accepted)
        XCTAssertEqual(JournalTests.counts(d.window), ["a": 2])
        XCTAssertEqual(d.ingest.duplicateBatches, 1)
        // The same id from another sender is another batch; a metrics-mode batch (an SDK-shaped post) too.
        var other = sent
        other.proxyInstance = "sidecar-2-def456"
        XCTAssertEqual(d.accept(.bulk, headers: other, body: body, now: Self.now), .accepted)
        other.batch = "001796378400000-0001"
        let single = #"{"appName":"shop","instanceId":"i","bucket":{"start":"2026-12-04T10:00:00Z","stop":"2026-12-04T10:00:10Z","toggles":{"a":{"yes":5,"no":0}}}}"#
        XCTAssertEqual(d.accept(.metrics, headers: other, body: Array(single.utf8), now: Self.now), .accepted)
        XCTAssertEqual(d.accept(.metrics, headers: other, body: Array(single.utf8), now: Self.now), .accepted)
        XCTAssertEqual(JournalTests.counts(d.window), ["a": 9])

        // Killed after the journal took them: the restarted proxy knows them all.
        let after = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20), opened: Self.now)
        _ = try after.recover(spool: JournalTests.spool(fs), config: config)
        XCTAssertEqual(after.accept(.bulk, headers: sent, body: body, now: Self.now), .accepted)
        XCTAssertEqual(after.accept(.metrics, headers: other, body: Array(single.utf8), now: Self.now), .accepted)
        XCTAssertEqual(JournalTests.counts(after.window), ["a": 9])
        XCTAssertEqual(after.ingest.duplicateBatches, 2)

        // A batch refused the first time (here: broken) is not remembered: its fixed resend counts.
        var fresh = sent
        fresh.batch = "001796378460000-0000"
        XCTAssertEqual(after.accept(.bulk, headers: fresh, body: Array("{".utf8), now: Self.now).status, 400)
        XCTAssertEqual(after.accept(.bulk, headers: fresh, body: body, now: Self.now), .accepted)
        XCTAssertEqual(JournalTests.counts(after.window), ["a": 11])
    }

    func testRecentBatchesForgetTheOldestPastTheirCapacity() {
        var r = RecentBatches(capacity: 3)
        for k in ["a", "b", "c", "d"] { r.insert(k) }
        XCTAssertEqual(r.count, 3)
        XCTAssertFalse(r.contains("a"))
        XCTAssertTrue(r.contains("b") && r.contains("d"))
        r.insert("e")
        XCTAssertFalse(r.contains("b"))
        XCTAssertTrue(r.contains("c") && r.contains("e"))
    }
}
