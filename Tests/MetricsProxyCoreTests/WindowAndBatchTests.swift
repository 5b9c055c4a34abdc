import XCTest
@testable import MetricsProxyCore

final class WindowAndBatchTests: XCTestCase {
    let hour: Int64 = 1_795_860_000_000
    let token = "default:development.secret"

    func post(_ app: String, _ instance: String, stop: Int64, _ toggles: [ToggleCounts]) -> MetricsPost {
        MetricsPost(appName: app, instanceId: instance, bucket: Bucket(start: stop - 1000, stop: stop, toggles: toggles))
    }

    func testMergeSumsByKeyAndKeepsHoursApart() {
        var w = Window(opened: 0)
        w.merge(post("a", "i1", stop: hour + 10, [ToggleCounts(name: "f", yes: 1, no: 2, variants: [VariantCount(name: "v", count: 1)])]),
                token: token, interval: nil, now: 0)
        w.merge(post("a", "i2", stop: hour + 20, [ToggleCounts(name: "f", yes: 3, no: 0, variants: [VariantCount(name: "v", count: 2), VariantCount(name: "w", count: 1)])]),
                token: token, interval: 15000, now: 0)
        w.merge(post("a", "i1", stop: hour - 1, [ToggleCounts(name: "f", yes: 5, no: 5)]), token: token, interval: nil, now: 0)
        w.merge(post("a", "i1", stop: hour + 30, [ToggleCounts(name: "zero", yes: 0, no: 0, variants: [VariantCount(name: "v", count: 3)])]),
                token: token, interval: nil, now: 0)
        XCTAssertEqual(w.keyCount, 2, "f in two hours; the all-zero toggle is dropped as the server drops it")
        let current = w.groups[Window.GroupKey(token: token, appName: "a", hour: hour)]!
        XCTAssertEqual(current.toggles["f"], Window.Counts(yes: 4, no: 2, variants: ["v": 3, "w": 1]))
        XCTAssertEqual(w.groups[Window.GroupKey(token: token, appName: "a", hour: hour - 3_600_000)]!.toggles["f"]?.yes, 5)
        XCTAssertEqual(w.instances.count, 2)
        XCTAssertEqual(w.instances[Window.InstanceKey(token: token, appName: "a", instanceId: "i2")]?.interval, 15000)
    }

    func testMemoryGrowsWithKeysNotPosts() {
        var w = Window(opened: 0)
        for _ in 0..<1000 {
            w.merge(post("a", "i", stop: hour, [ToggleCounts(name: "f", yes: 1, no: 1)]), token: token, interval: nil, now: 0)
        }
        XCTAssertEqual(w.keyCount, 1)
        XCTAssertEqual(w.groups.first?.value.toggles["f"]?.yes, 1000)
    }

    func testBulkBatchesSplitUnderMaxBodyApplicationsFirstAndValid() throws {
        var w = Window(opened: 0)
        for i in 0..<300 {
            w.merge(post("app-\(i % 3)", "instance-\(i % 40)", stop: hour + Int64(i),
                         [ToggleCounts(name: "feature-\(i)", yes: Int64(i), no: 1)]), token: token, interval: nil, now: 0)
        }
        let batches = BatchBuilder(mode: .bulk, maxBody: 4096).batches(from: w, sequence: 7, closedAt: 42)
        XCTAssertGreaterThan(batches.count, 5)
        var features = 0, apps = 0
        for (i, b) in batches.enumerated() {
            XCTAssertLessThanOrEqual(b.body.count, 4096)
            XCTAssertEqual(b.path, "/client/metrics/bulk")
            XCTAssertTrue(b.id.hasPrefix("000000000000007-"))
            let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(b.body)) as? [String: Any])
            let a = json["applications"] as! [[String: Any]], m = json["metrics"] as! [[String: Any]]
            if i > 0, !a.isEmpty { XCTAssertEqual(features, 0, "applications go first") }
            apps += a.count
            features += m.count
            for e in m {
                XCTAssertEqual(e["environment"] as? String, "development")
                XCTAssertEqual(e["timestamp"] as? String, "2026-11-28T10:00:00.000Z")
                XCTAssertNotNil(e["variants"] as? [String: Any], "variants is an object, never null")
            }
        }
        XCTAssertEqual(apps, 120, "every (appName, instanceId) seen: 3 apps × 40 instances cycle over 120")
        XCTAssertEqual(features, 300)
        XCTAssertEqual(batches.map(\.id), batches.map(\.id).sorted(), "ids sort in order")
    }

    func testTokenWithoutEnvironmentFallsBackToSingleAppPosts() throws {
        var w = Window(opened: 0)
        w.merge(post("a", "i", stop: hour + 5, [ToggleCounts(name: "f", yes: 1, no: 0)]), token: "*:*.admin", interval: nil, now: 0)
        let b = BatchBuilder(mode: .bulk, maxBody: 4096).batches(from: w, sequence: 1, closedAt: 0)
        XCTAssertEqual(b.map(\.path), ["/client/metrics"])
    }

    func testSplitterHalvesBulkAndSingleAppBodiesEachEntryExactlyOnce() throws {
        var w = Window(opened: 0)
        for i in 0..<9 { w.merge(post("a", "i\(i)", stop: hour, [ToggleCounts(name: "f\(i)", yes: 1, no: 0)]), token: token, interval: nil, now: 0) }
        /// Every entry of a body, as "kind:name": applications by instance, metrics and toggles by feature.
        func entries(_ body: [UInt8], _ mode: UpstreamMode) throws -> [String] {
            let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(body)) as? [String: Any], "\(mode)")
            if mode == .bulk {
                let apps = try XCTUnwrap(json["applications"] as? [[String: Any]]).map { "app:\($0["instanceId"]!)" }
                let metrics = try XCTUnwrap(json["metrics"] as? [[String: Any]]).map { "metric:\($0["featureName"]!)" }
                return apps + metrics
            }
            let toggles = try XCTUnwrap((json["bucket"] as? [String: Any])?["toggles"] as? [String: Any])
            return toggles.keys.map { "toggle:\($0)" }
        }
        for mode in [UpstreamMode.bulk, .metrics] {
            let whole = BatchBuilder(mode: mode, maxBody: 1 << 20).batches(from: w, sequence: 1, closedAt: 0)[0]
            let halves = BatchSplitter.split(whole)
            XCTAssertEqual(halves.count, 2)
            XCTAssertLessThan(halves[0].body.count, whole.body.count)
            let expected = try entries(whole.body, mode)
            XCTAssertEqual(expected.count, mode == .bulk ? 18 : 9)
            // Each entry of the whole in exactly one half: none lost, none twice.
            let got = try halves.flatMap { try entries($0.body, mode) }
            XCTAssertEqual(got.sorted(), expected.sorted(), "\(mode)")
            XCTAssertEqual(halves.map(\.entries).reduce(0, +), whole.entries, "\(mode)")
        }
    }

    /// Bulk entries are written as a fixed shape, the group's shared part encoded once; the
    /// bytes must be what the general writer makes, escapes and large counts included.
    func testBulkEntriesAreExactlyWhatTheGeneralWriterMakes() throws {
        var w = Window(opened: 0)
        let names = ["plain", "quote\"d", "back\\slash", "new\nline", "ctl\u{01}", "é🙂", ""]
        w.merge(post("app \"x\"", "i", stop: hour + 5, names.enumerated().map { i, n in
            ToggleCounts(name: n, yes: [0, 9, 10, 12_345_678_901_234, 1, 2, 3][i], no: Int64(i),
                         variants: i == 0 ? [VariantCount(name: "b", count: 2), VariantCount(name: "a\"", count: 1)] : [])
        }), token: token, interval: nil, now: 0)
        let body = try XCTUnwrap(BatchBuilder(mode: .bulk, maxBody: 1 << 20).batches(from: w, sequence: 1, closedAt: 0).first).body
        var expected = JSONWriter()
        expected.beginArray()
        for (name, c) in w.groups.first!.value.toggles {
            expected.beginObject()
            expected.key("featureName"); expected.string(name.text)
            expected.key("appName"); expected.string("app \"x\"")
            expected.key("environment"); expected.string("development")
            expected.key("timestamp"); expected.string("2026-11-28T10:00:00.000Z")
            expected.key("yes"); expected.int(c.yes)
            expected.key("no"); expected.int(c.no)
            expected.key("variants"); expected.beginObject()
            for (v, n) in c.variants.sorted(by: { $0.key < $1.key }) { expected.key(v.text); expected.int(n) }
            expected.endObject()
            expected.endObject()
        }
        expected.endArray()
        let text = String(decoding: body, as: UTF8.self)
        let metrics = try XCTUnwrap(text.range(of: #""metrics":"#)).upperBound
        XCTAssertEqual(String(text[metrics...].dropLast()), String(decoding: expected.bytes, as: UTF8.self))
    }
}
