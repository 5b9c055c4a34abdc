import Foundation
import XCTest
@testable import MetricsProxyCore

/// Impact metrics through the core: read with fault isolation, merged by series, written
/// upstream with each series once per body and nothing the server would drop or refuse.
final class ImpactMetricsTests: XCTestCase {
    let token = "default:development.secret"
    let headers = Ingest.Headers(contentType: "application/json", authorization: "default:development.secret")

    func post(_ impact: String, app: String = "shop", instance: String = "i1", toggles: String? = nil) -> [UInt8] {
        let bucket = toggles.map { #"{"start":"2026-11-28T10:00:00Z","stop":"2026-11-28T10:00:10Z","toggles":\#($0)}"# } ?? "null"
        return Array(#"{"appName":"\#(app)","instanceId":"\#(instance)","bucket":\#(bucket),"impactMetrics":[\#(impact)]}"#.utf8)
    }

    func counter(_ name: String, _ labels: String, _ value: String, help: String = "h") -> String {
        #"{"name":"\#(name)","help":"\#(help)","type":"counter","samples":[{"labels":\#(labels),"value":\#(value)}]}"#
    }

    func histogram(_ name: String, _ labels: String, count: Int, sum: Double, _ buckets: [(String, Int)]) -> String {
        let b = buckets.map { #"{"le":\#($0.0),"count":\#($0.1)}"# }.joined(separator: ",")
        return #"{"name":"\#(name)","help":"h","type":"histogram","samples":[{"labels":\#(labels),"count":\#(count),"sum":\#(sum),"buckets":[\#(b)]}]}"#
    }

    func accept(_ ingest: inout Ingest, _ body: [UInt8], into w: inout Window, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(ingest.accept(.metrics, headers: headers, body: body, into: &w, now: 0), .accepted, file: file, line: line)
    }

    func value(_ w: Window, _ name: String, _ labels: [(String, String)], app: String = "shop") -> ImpactTable.Series? {
        w.impact.series[ImpactTable.SeriesKey(token: token, appName: app, name: name,
                                               labels: labels.map { ImpactLabel($0.0, $0.1) }.sorted())]
    }

    func json(_ batch: Batch) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(batch.body)) as? [String: Any])
    }

    /// The real Python SDK's post (tests/Fixtures/captures): a counter with and without a
    /// flag label, a gauge and a histogram, with labels in the SDK's unstable key order.
    func testTheRealPythonSDKPostIsReadWhole() throws {
        let line = try String(contentsOfFile: "Tests/Fixtures/captures/python-unleashclient-impact.jsonl", encoding: .utf8)
        let record = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        let body = Array(try JSONSerialization.data(withJSONObject: record["body"]!))
        let post = try MetricsPostDecoder.decode(body)
        XCTAssertEqual(post.impact.dropped, [:])
        XCTAssertEqual(post.impact.metrics.map(\.name), ["checkouts", "queue_depth", "latency_ms"])
        XCTAssertEqual(post.impact.metrics.map(\.type), [.counter, .gauge, .histogram])
        XCTAssertEqual(post.impact.metrics[0].samples.map(\.value), [177, 159, 192])
        XCTAssertEqual(post.impact.metrics[0].samples[2].labels,
                       [ImpactLabel("appName", "shop"), ImpactLabel("checkout.v2", "green"), ImpactLabel("environment", "development")])
        XCTAssertEqual(post.impact.metrics[1].samples[0].value, 175)
        XCTAssertEqual(post.impact.metrics[2].samples[0].histogram,
                       HistogramCounts(count: 176, sum: 11080, bounds: [10, 50, 100, .infinity], counts: [16, 73, 138, 176]))
        XCTAssertEqual(post.bucket?.toggles.count, 2)
    }

    /// Each bad metric is dropped alone, with its reason; the good ones and the flag counts stay,
    /// and the post is still accepted.
    func testABadMetricIsDroppedAloneWithItsReason() {
        let good = counter("good", #"{"a":"1x"}"#, "2")
        let cases: [(String, ImpactDrop?)] = [
            (#"{"help":"h","type":"counter","samples":[]}"#, .invalid), // no name
            (#"{"name":"n","type":"counter","samples":[]}"#, .invalid), // no help: the server drops the whole array
            (#"{"name":"n","help":"","type":"counter","samples":[]}"#, .invalid), // empty help
            (#"{"name":"n","help":"h","type":"counter"}"#, .invalid), // no samples
            (counter("n", "{}", #""many""#), .invalid), // not a number
            (counter("n", "{}", "null"), .invalid),
            (counter("n", "{}", "-1"), .invalid), // a counter going down
            (counter("n", "{}", "1e300"), .invalid), // beyond the safe integers
            (counter("n", #"{"k":true}"#, "1"), .invalid), // a label value that is neither string nor number
            (counter("n", #"{"k":""}"#, "1"), .invalid),
            (counter("n", "null", "1"), .invalid),
            (#"{"name":"n","help":"h","type":"summary","samples":[{"value":1}]}"#, .unknownType),
            (histogram("n", "{}", count: 1, sum: 1, [("0.5", 1), (#""+Inf""#, 1), ("0.5", 1)]), .invalid), // a bound twice
            (histogram("n", "{}", count: 1, sum: 1, [(#""-Inf""#, 1)]), .invalid),
            (#"{"name":"n","help":"h","type":"histogram","samples":[{"count":1,"sum":1,"buckets":[{"count":1}]}]}"#, .invalid),
            (#"{"name":"n","help":"h","type":"histogram","samples":[{"count":1,"sum":1}]}"#, .invalid),
            (counter(String(repeating: "n", count: 300), "{}", "1"), .tooLong),
            (counter("n", #"{"k":"\#(String(repeating: "v", count: 300))"}"#, "1"), .tooLong),
            (#"[1]"#, .invalid),
            // Accepted as the server's Joi accepts them: a numeric string, a number as a label value.
            (counter("n", #"{"code":200}"#, #"" 7 ""#), nil),
            (histogram("n", "{}", count: 2, sum: 0.5, [(#""0.25""#, 1), (#""+Inf""#, 2)]), nil),
        ]
        for fastPath in [true, false] {
            for (bad, reason) in cases {
                var ingest = Ingest(Config(), fastPath: fastPath)
                var w = Window(opened: 0)
                accept(&ingest, post(good + "," + bad, toggles: #"{"f":{"yes":1,"no":0}}"#), into: &w)
                XCTAssertEqual(ingest.impactDropped, reason.map { [$0: 1] } ?? [:], bad)
                XCTAssertEqual(value(w, "good", [("a", "1x")])?.value, 2, bad)
                XCTAssertEqual(w.groups.first?.value.toggles["f"]?.yes, 1, bad)
                XCTAssertEqual(w.impact.series.count, reason == nil ? 2 : 1, bad)
            }
        }
        // Not an array at all, or null: the flag counts still count.
        for field in [#""x""#, "null", "{}"] {
            var ingest = Ingest(Config())
            var w = Window(opened: 0)
            let body = #"{"appName":"shop","bucket":{"start":1,"stop":2,"toggles":{"f":{"yes":1}}},"impactMetrics":\#(field)}"#
            accept(&ingest, Array(body.utf8), into: &w)
            XCTAssertEqual(ingest.impactDropped, field == "null" ? [:] : [.invalid: 1])
            XCTAssertEqual(w.keyCount, 1)
        }
    }

    func testSeriesMergeByTheRulesOfEachType() throws {
        var ingest = Ingest(Config())
        var w = Window(opened: 0)
        // Label order differs between posts (yggdrasil's HashMap): one series.
        accept(&ingest, post(counter("c", #"{"a":"1","b":"2"}"#, "3")), into: &w)
        accept(&ingest, post(counter("c", #"{"b":"2","a":"1"}"#, "4"), instance: "i2"), into: &w)
        accept(&ingest, post(counter("c", #"{"a":"1"}"#, "0")), into: &w) // another series, zero kept
        XCTAssertEqual(value(w, "c", [("a", "1"), ("b", "2")])?.value, 7)
        XCTAssertEqual(value(w, "c", [("a", "1")])?.value, 0)
        // Gauges: the last received wins.
        for v in ["5", "2.5", "9"] {
            accept(&ingest, post(#"{"name":"g","help":"h","type":"gauge","samples":[{"labels":{},"value":\#(v)}]}"#), into: &w)
        }
        XCTAssertEqual(value(w, "g", [])?.value, 9)
        // Histograms: summed by bound when the layouts agree, kept apart when not.
        let inf = #""+Inf""#
        accept(&ingest, post(histogram("h", "{}", count: 3, sum: 1.5, [("0.5", 2), ("1", 3), (inf, 3)])), into: &w)
        accept(&ingest, post(histogram("h", "{}", count: 4, sum: 2, [("0.5", 1), ("1", 1), (inf, 4)])), into: &w)
        accept(&ingest, post(histogram("h", "{}", count: 1, sum: 7, [("5", 0), (inf, 1)])), into: &w)
        let h = try XCTUnwrap(value(w, "h", []))
        XCTAssertEqual(h.parts, [HistogramCounts(count: 7, sum: 3.5, bounds: [0.5, 1, .infinity], counts: [3, 4, 7]),
                                 HistogramCounts(count: 1, sum: 7, bounds: [5, .infinity], counts: [0, 1])])
        // A second type for a name: the first wins, the other is counted.
        accept(&ingest, post(#"{"name":"c","help":"h","type":"gauge","samples":[{"labels":{},"value":1}]}"#), into: &w)
        XCTAssertEqual(ingest.impactDropped, [.typeClash: 1])
        XCTAssertEqual(w.impact.definitions["c"]?.type, .counter)
        // Every series and the second layout count as keys.
        XCTAssertEqual(w.keyCount, 2 + 1 + 2)
        // A gauge not set since the SDK's last send (no samples) claims nothing: the counter
        // of that name that follows is no clash.
        accept(&ingest, post(#"{"name":"e","help":"h","type":"gauge","samples":[]}"#), into: &w)
        accept(&ingest, post(counter("e", "{}", "1")), into: &w)
        XCTAssertEqual(ingest.impactDropped, [.typeClash: 1])
        XCTAssertEqual(value(w, "e", [])?.value, 1)
    }

    func testImpactSeriesCountAgainstTheKeyCap() {
        var config = Config()
        config.limits.maxKeys = 3
        var ingest = Ingest(config)
        var w = Window(opened: 0)
        accept(&ingest, post(counter("a", "{}", "1") + "," + counter("b", "{}", "1"), toggles: #"{"f":{"yes":1}}"#), into: &w)
        XCTAssertEqual(w.keyCount, 3)
        // Known series still merge; a new one is refused with the whole post, which the SDK retries.
        accept(&ingest, post(counter("a", "{}", "1")), into: &w)
        let answer = ingest.accept(.metrics, headers: headers, body: post(counter("c", "{}", "1")), into: &w, now: 0)
        XCTAssertEqual(answer.status, 503)
        XCTAssertEqual(w.keyCount, 3)
        XCTAssertEqual(value(w, "a", [])?.value, 2)
    }

    /// What the server would drop or refuse never goes up: each series once per body, the
    /// second histogram layout in a later body, and a metric with a label value the bulk schema
    /// refuses in a single post of its own.
    func testBulkBodiesCarryEachSeriesOnceAndNumericLabelsApart() throws {
        var ingest = Ingest(Config())
        var w = Window(opened: 0)
        let inf = #""+Inf""#
        accept(&ingest, post(counter("c", #"{"appName":"shop"}"#, "1") + "," + histogram("h", "{}", count: 1, sum: 1, [("1", 1), (inf, 1)]),
                             toggles: #"{"f":{"yes":1}}"#), into: &w)
        accept(&ingest, post(histogram("h", "{}", count: 1, sum: 1, [("2", 1), (inf, 1)])), into: &w)
        accept(&ingest, post(counter("http", #"{"code":"200"}"#, "4") + "," + counter("http", #"{"code":"ok"}"#, "1")), into: &w)
        // Same labels under another appName: a separate series, but the same one upstream.
        accept(&ingest, post(counter("c", #"{"appName":"shop"}"#, "2"), app: "other"), into: &w)
        let batches = BatchBuilder(mode: .bulk, maxBody: 95 * 1024, proxyInstance: "proxy-host").batches(from: w, sequence: 1, closedAt: 1000)
        XCTAssertEqual(batches.map(\.path), ["/client/metrics/bulk", "/client/metrics/bulk", "/client/metrics"])
        let first = try json(batches[0]), second = try json(batches[1]), third = try json(batches[2])
        XCTAssertEqual((first["metrics"] as? [Any])?.count, 1)
        XCTAssertEqual((first["applications"] as? [Any])?.count, 2)
        let firstImpact = try XCTUnwrap(first["impactMetrics"] as? [[String: Any]])
        XCTAssertEqual(firstImpact.map { $0["name"] as? String }, ["c", "h"])
        XCTAssertEqual((firstImpact[0]["samples"] as? [Any])?.count, 1)
        XCTAssertEqual((second["applications"] as? [Any])?.count, 0)
        XCTAssertEqual((second["metrics"] as? [Any])?.count, 0)
        let secondImpact = try XCTUnwrap(second["impactMetrics"] as? [[String: Any]])
        XCTAssertEqual(secondImpact.map { $0["name"] as? String }, ["c", "h"])
        let layouts = [firstImpact[1], secondImpact[1]].map { m in
            ((m["samples"] as! [[String: Any]])[0]["buckets"] as! [[String: Any]]).map { "\($0["le"]!)" }
        }
        XCTAssertEqual(Set(layouts), [["1", "+Inf"], ["2", "+Inf"]])
        // The numeric label rides a single post with an empty bucket, both of its series together.
        XCTAssertEqual((third["bucket"] as? [String: Any])?["toggles"] as? [String: Int], [:])
        let http = try XCTUnwrap((third["impactMetrics"] as? [[String: Any]])?.first)
        XCTAssertEqual(http["name"] as? String, "http")
        XCTAssertEqual((http["samples"] as? [[String: Any]])?.compactMap { ($0["labels"] as? [String: String])?["code"] }.sorted(), ["200", "ok"])
        for b in batches {
            for m in try json(b)["impactMetrics"] as? [[String: Any]] ?? [] {
                XCTAssertEqual(Set(m.keys), ["name", "help", "type", "samples"])
            }
        }
    }

    func testMetricsModeCarriesEachAppsMetricsInItsOwnPost() throws {
        var ingest = Ingest(Config())
        var w = Window(opened: 0)
        accept(&ingest, post(counter("c", "{}", "1"), toggles: #"{"f":{"yes":1}}"#), into: &w)
        accept(&ingest, post(counter("c", #"{"code":"200"}"#, "1"), app: "impact-only"), into: &w)
        let batches = BatchBuilder(mode: .metrics, maxBody: 95 * 1024).batches(from: w, sequence: 1, closedAt: 1000)
        XCTAssertEqual(batches.count, 2)
        let bodies = try batches.map(json)
        XCTAssertEqual(bodies.map { $0["appName"] as? String }, ["impact-only", "shop"])
        XCTAssertEqual(bodies.map { ($0["impactMetrics"] as? [Any])?.count }, [1, 1])
        XCTAssertEqual(((bodies[1]["bucket"] as? [String: Any])?["toggles"] as? [String: Any])?.count, 1)
    }

    /// A window whose impact metrics pass `max_body` is split at metric granularity; a 413
    /// splits further, and a 400 parts the flag counts from the impact metrics.
    func testSplitsKeepMetricsWholeAndFlagCountsApart() throws {
        var ingest = Ingest(Config())
        var w = Window(opened: 0)
        let metrics = (0..<40).map { counter("metric_\($0)", #"{"appName":"shop","n":"v\#($0)"}"#, "\($0)") }.joined(separator: ",")
        accept(&ingest, post(metrics, toggles: #"{"f":{"yes":1}}"#), into: &w)
        for mode in [UpstreamMode.bulk, .metrics] {
            let batches = BatchBuilder(mode: mode, maxBody: 2048, proxyInstance: "p").batches(from: w, sequence: 1, closedAt: 1000)
            XCTAssertGreaterThan(batches.count, 1)
            var names: [String] = []
            for b in batches {
                XCTAssertLessThanOrEqual(b.body.count, 2048)
                names += try (json(b)["impactMetrics"] as? [[String: Any]] ?? []).map { $0["name"] as! String }
                for half in BatchSplitter.split(b) {
                    XCTAssertNotNil(try? json(half), "a half is JSON")
                }
            }
            XCTAssertEqual(names.sorted(), (0..<40).map { "metric_\($0)" }.sorted(), "\(mode)")
        }
        let one = BatchBuilder(mode: .bulk, maxBody: 95 * 1024, proxyInstance: "p").batches(from: w, sequence: 1, closedAt: 1000)
        XCTAssertEqual(one.count, 1)
        let halves = BatchSplitter.split(one[0])
        let halfNames = try halves.map { try (json($0)["impactMetrics"] as? [[String: Any]] ?? []).count }
        XCTAssertEqual(halfNames.reduce(0, +), 40)
        let (flags, impact) = try XCTUnwrap(BatchSplitter.separateImpact(one[0]))
        XCTAssertNil(try json(flags)["impactMetrics"])
        XCTAssertEqual((try json(flags)["metrics"] as? [Any])?.count, 1)
        XCTAssertEqual((try json(impact)["impactMetrics"] as? [Any])?.count, 40)
        XCTAssertEqual((try json(impact)["metrics"] as? [Any])?.count, 0)
        XCTAssertTrue(flags.id > one[0].id && impact.id > flags.id)
        // A single post parts the same way.
        let single = BatchBuilder(mode: .metrics, maxBody: 95 * 1024).batches(from: w, sequence: 1, closedAt: 1000)
        let (f2, i2) = try XCTUnwrap(BatchSplitter.separateImpact(single[0]))
        XCTAssertEqual((try json(f2)["impactMetrics"] as? [Any])?.count, 0)
        XCTAssertEqual(((try json(i2)["bucket"] as? [String: Any])?["toggles"] as? [String: Any])?.count, 0)
        XCTAssertEqual((try json(i2)["impactMetrics"] as? [Any])?.count, 40)
    }

    /// The flag counts beside impact metrics stay on the fast path, which reads the impact
    /// metrics with the full decoder's reader for them (the decoder fuzzer checks both paths agree).
    func testTheFastPathKeepsTheFlagCountsBesideImpactMetrics() throws {
        var p = FastPost()
        let body = post(counter("c", "{}", "1"), toggles: #"{"f":{"yes":1,"no":0}}"#)
        XCTAssertTrue(body.withUnsafeBufferPointer { FastPostScanner.scan($0, into: &p) })
        XCTAssertEqual(p.impact?.metrics.map(\.name), ["c"])
        XCTAssertEqual(p.toggles.count, 1)
        // Twice in one body: the full decoder decides.
        let twice = Array((String(decoding: body.dropLast(), as: UTF8.self) + #","impactMetrics":[]}"#).utf8)
        XCTAssertFalse(twice.withUnsafeBufferPointer { FastPostScanner.scan($0, into: &p) })
    }

    func testWhichLabelValuesTheBulkSchemaRefuses() {
        for v in ["200", " 200 ", "1e3", "-1.5", ".5", "5.", "0x1F", "0b101", "0o17", "Infinity", "-Infinity", " ", "\u{A0}7"] {
            XCTAssertTrue(ImpactWriter.bulkRefuses(v), v)
        }
        for v in ["", "ok", "200ms", "v1", "-0x1F", "0x", "NaN", "1e", "e5", "1.2.3", "+Inf", "infinity"] {
            XCTAssertFalse(ImpactWriter.bulkRefuses(v), v)
        }
    }

    func testNumbersAsLabelValuesKeepTheirJavaScriptText() {
        let cases: [(Double, String)] = [(200, "200"), (-3, "-3"), (0.5, "0.5"), (1e21, "1e+21"), (1.5e-7, "1.5e-7"),
                                         (0.000001, "0.000001"), (123.456, "123.456"), (1e-5, "0.00001")]
        for (d, text) in cases { XCTAssertEqual(ImpactMetric.javascriptText(d), text, "\(d)") }
    }
}
