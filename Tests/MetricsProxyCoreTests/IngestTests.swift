import Foundation
import XCTest
@testable import MetricsProxyCore

/// `Ingest.accept`, the one way into the window, with the fast path on and off.
final class IngestTests: XCTestCase {
    let token = "default:development.abc"
    var headers: Ingest.Headers { Ingest.Headers(contentType: "application/json", authorization: token) }
    let stop = "2026-11-28T10:00:30Z"

    func metricsBody(_ extra: String = "", toggles: String = #""f": {"yes": 1, "no": 2, "variants": {}}"#) -> [UInt8] {
        Array(#"{"appName": "shop", "instanceId": "pod-1"\#(extra), "bucket": {"start": "2026-11-28T10:00:00Z", "stop": "\#(stop)", "toggles": {\#(toggles)}}}"#.utf8)
    }

    func registerBody(_ extra: String = "") -> [UInt8] {
        Array(#"{"appName": "shop", "instanceId": "pod-1"\#(extra), "interval": 15000, "started": "2026-11-28T09:00:00Z", "strategies": ["default"]}"#.utf8)
    }

    /// The `applications[]` entry the window sends upstream for its one instance.
    func application(_ window: Window) throws -> [String: Any] {
        let batch = try XCTUnwrap(BatchBuilder(mode: .bulk, maxBody: 1 << 20).batches(from: window, sequence: 1, closedAt: 0).first)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(batch.body)) as? [String: Any])
        let apps = try XCTUnwrap(json["applications"] as? [[String: Any]])
        XCTAssertEqual(apps.count, 1)
        return try XCTUnwrap(apps.first)
    }

    /// Every declared SDK field, sent in the body of a post or registration, read by either
    /// path, reaches the instance's `applications[]` entry upstream; one with a header is
    /// filled from it when the body leaves it out, and the body wins when it has it.
    func testEverySDKFieldIsCarriedFromBodyAndHeaderIntoApplications() throws {
        XCTAssertGreaterThanOrEqual(SDKField.all.count, 6)
        for field in SDKField.all {
            for kind in [Ingest.Kind.metrics, .register] {
                for fastPath in [true, false] {
                    let what = "\(field.name) in a \(kind) post, fast path \(fastPath)"
                    var ingest = Ingest(Config(), fastPath: fastPath)
                    var w = Window(opened: 0)
                    let extra = #", "\#(field.name)": "sent-\#(field.name)""#
                    let body = kind == .metrics ? metricsBody(extra) : registerBody(extra)
                    let answer = ingest.accept(kind, headers: headers, body: body, into: &w, now: 0) { name in
                        field.header == name ? "header-\(name)" : nil
                    }
                    XCTAssertEqual(answer, .accepted, what)
                    XCTAssertEqual(try application(w)[field.name] as? String, "sent-\(field.name)", what)
                    guard let header = field.header else { continue }
                    var fromHeader = Window(opened: 0)
                    XCTAssertEqual(ingest.accept(kind, headers: headers, body: kind == .metrics ? metricsBody() : registerBody(),
                                                 into: &fromHeader, now: 0) { $0 == header ? "header-value" : nil }, .accepted)
                    XCTAssertEqual(try application(fromHeader)[field.name] as? String, "header-value", what)
                }
            }
        }
    }

    /// An SDK field over the name-length limit is refused whole, by name, on either path.
    func testAnSDKFieldOverTheNameLimitIsRefusedNamingIt() {
        var config = Config()
        config.limits.maxNameLength = 16
        for field in SDKField.all {
            for fastPath in [true, false] {
                var ingest = Ingest(config, fastPath: fastPath)
                var w = Window(opened: 0)
                let long = String(repeating: "x", count: min(17, field.schemaMaxLength ?? 17))
                let answer = ingest.accept(.metrics, headers: headers, body: metricsBody(#", "\#(field.name)": "\#(long)""#), into: &w, now: 0)
                guard case .invalid(let f) = answer else { return XCTFail("\(field.name): \(answer)") }
                XCTAssertEqual(f.details.first?.path, "/body/\(field.name)")
                XCTAssertTrue(w.isEmpty)
            }
        }
    }

    /// At `[limits] max_keys` a post that would add a key is answered 503 and merges nothing;
    /// a post to keys already held still merges.
    func testKeyCapAnswersWindowFullAndMergesNothingOfThatPost() throws {
        var config = Config()
        config.limits.maxKeys = 2
        for fastPath in [true, false] {
            var ingest = Ingest(config, fastPath: fastPath)
            var w = Window(opened: 0)
            let two = #""a": {"yes": 1, "no": 0, "variants": {}}, "b": {"yes": 1, "no": 0, "variants": {}}"#
            XCTAssertEqual(ingest.accept(.metrics, headers: headers, body: metricsBody(toggles: two), into: &w, now: 0), .accepted)
            let before = w.groups
            let third = #""a": {"yes": 5, "no": 0, "variants": {}}, "c": {"yes": 1, "no": 0, "variants": {}}"#
            let answer = ingest.accept(.metrics, headers: headers, body: metricsBody(toggles: third), into: &w, now: 0)
            XCTAssertEqual(answer.status, 503, "fast path \(fastPath)")
            XCTAssertEqual(w.groups, before, "nothing of the refused post merged")
            XCTAssertEqual(ingest.accept(.metrics, headers: headers, body: metricsBody(toggles: two), into: &w, now: 0), .accepted)
            XCTAssertEqual(w.keyCount, 2)
            XCTAssertEqual(w.groups.first?.value.toggles[FeatureName("a")]?.yes, 2)
        }
    }

    /// Whatever is wrong with a post, it is answered and the window stays as it was.
    func testRefusedPostsLeaveTheWindowAsItWas() throws {
        var config = Config()
        config.limits.maxTogglesPerPost = 1
        let bad: [(String, [UInt8], Int)] = [
            ("broken JSON", Array(#"{"appName": "shop", "bucket": {"#.utf8), 400),
            ("a count of the wrong type", metricsBody(toggles: #""f": {"yes": 1, "no": 1.5}"#), 400),
            ("no appName", Array(#"{"bucket": null}"#.utf8), 400),
            ("too many toggles", metricsBody(toggles: #""f": {"yes": 1, "no": 0}, "g": {"yes": 1, "no": 0}"#), 413),
        ]
        for fastPath in [true, false] {
            var ingest = Ingest(config, fastPath: fastPath)
            var w = Window(opened: 0)
            XCTAssertEqual(ingest.accept(.metrics, headers: headers, body: metricsBody(), into: &w, now: 0), .accepted)
            let (groups, instances) = (w.groups, w.instances)
            for (what, body, status) in bad {
                XCTAssertEqual(ingest.accept(.metrics, headers: headers, body: body, into: &w, now: 0).status, status, what)
                XCTAssertEqual(w.groups, groups, what)
                XCTAssertEqual(w.instances, instances, what)
            }
            var noToken = headers
            noToken.authorization = nil
            XCTAssertEqual(ingest.accept(.metrics, headers: noToken, body: metricsBody(), into: &w, now: 0).status, 401)
            XCTAssertEqual(w.groups, groups)
        }
    }

    /// A post with impact metrics takes the full decoder on either path: its flag counts merge
    /// as ever, its good impact metrics merge, a bad one is dropped alone and counted, and a
    /// refused post counts nothing.
    func testImpactMetricsMergeOnEitherPathAndABadOneCostsOnlyItself() throws {
        let impact = #", "impactMetrics": [{"name": "c", "help": "h", "type": "counter", "samples": [{"labels": {}, "value": 1}]}, {"bad": true}]"#
        for fastPath in [true, false] {
            var ingest = Ingest(Config(), fastPath: fastPath)
            var w = Window(opened: 0)
            XCTAssertEqual(ingest.accept(.metrics, headers: headers, body: metricsBody(impact), into: &w, now: 0), .accepted)
            XCTAssertEqual(ingest.impactDropped, [.invalid: 1])
            XCTAssertEqual(w.groups.first?.value.toggles[FeatureName("f")]?.no, 2)
            XCTAssertEqual(w.impact.series.values.map(\.value), [1])
            let only = Array(#"{"appName": "shop", "bucket": null, "impactMetrics": [{"name": "g"}]}"#.utf8)
            XCTAssertEqual(ingest.accept(.metrics, headers: headers, body: only, into: &w, now: 0), .accepted)
            XCTAssertEqual(ingest.impactDropped, [.invalid: 2])
            // A refused post counts nothing.
            XCTAssertEqual(ingest.accept(.metrics, headers: headers, body: Array(#"{"impactMetrics": [1]}"#.utf8), into: &w, now: 0).status, 400)
            XCTAssertEqual(ingest.impactDropped, [.invalid: 2])
        }
    }
}
