import Foundation
import XCTest

/// Every validation rule of `POST /api/client/metrics`, against the real binary: the status,
/// and for a 400 the error body's field and message. None of the refused posts may reach the
/// window: the test ends by checking that only the accepted ones arrived upstream.
final class ValidationTests: XCTestCase {
    struct Case {
        var name: String
        var body: String
        var status: Int
        /// For a 400: the detail's path and a piece of its message (what was sent).
        var path: String? = nil
        var message: String? = nil
    }

    static let start = #""start":"2026-11-28T10:00:00Z""#
    static let stop = #""stop":"2026-11-28T10:00:10Z""#
    static func bucket(_ toggles: String, start: String = start, stop: String = stop) -> String {
        #"{"appName":"app","instanceId":"i","bucket":{\#(start),\#(stop),"toggles":\#(toggles)}}"#
    }

    static let cases: [Case] = [
        // Accepted, as the server accepts them.
        Case(name: "full post", body: bucket(#"{"f":{"yes":1,"no":2,"variants":{"a":1}}}"#), status: 202),
        Case(name: "bucket missing (impact metrics only)", body: #"{"appName":"app","impactMetrics":[]}"#, status: 202),
        Case(name: "bucket null", body: #"{"appName":"app","bucket":null}"#, status: 202),
        Case(name: "empty toggles", body: bucket("{}"), status: 202),
        Case(name: "counts missing are 0", body: bucket(#"{"f":{}}"#), status: 202),
        Case(name: "fractional yes", body: bucket(#"{"f":{"yes":1.5,"no":1}}"#), status: 202),
        Case(name: "variants null", body: bucket(#"{"f":{"yes":1,"variants":null}}"#), status: 202),
        Case(name: "numeric string count", body: bucket(#"{"f":{"yes":"12","no":"3"}}"#), status: 202),
        Case(name: "unknown fields and environment ignored", body: #"{"appName":"app","environment":"prod","x":{"y":[1,2]},"bucket":{"start":"2026-11-28T10:00:00Z","stop":"2026-11-28T10:00:10Z","toggles":{"f":{"yes":1,"extra":true}},"more":1}}"#, status: 202),
        Case(name: "nine fraction digits", body: bucket("{}", start: #""start":"2026-11-28T10:00:00.123456789Z""#, stop: #""stop":"2026-11-28T10:00:10.987654321Z""#), status: 202),
        Case(name: "no fraction, +02:00 offset", body: bucket("{}", start: #""start":"2026-11-28T12:00:00+02:00""#, stop: #""stop":"2026-11-28T12:00:10-05:30""#), status: 202),
        Case(name: "epoch milliseconds", body: bucket("{}", start: #""start":1795860000000"#, stop: #""stop":1795860010000"#), status: 202),
        Case(name: "space instead of T, no offset", body: bucket("{}", start: #""start":"2026-11-28 10:00:00""#, stop: #""stop":"2026-11-28 10:00:10""#), status: 202),
        Case(name: "instanceId null", body: #"{"appName":"app","instanceId":null}"#, status: 202),
        Case(name: "appName number is its text", body: #"{"appName":42}"#, status: 202),

        // Refused: 400 with the field and what was sent.
        Case(name: "appName missing", body: #"{"instanceId":"i"}"#, status: 400, path: "/body/appName", message: "is required"),
        Case(name: "appName empty", body: #"{"appName":""}"#, status: 400, path: "/body/appName", message: "must not be empty"),
        Case(name: "appName null", body: #"{"appName":null}"#, status: 400, path: "/body/appName", message: "must not be empty"),
        Case(name: "appName object", body: #"{"appName":{"a":1}}"#, status: 400, path: "/body/appName", message: #"must be string. You sent {"a":1}"#),
        Case(name: "body not an object", body: #"[1,2]"#, status: 400, path: "/body", message: "must be object. You sent [1,2]"),
        Case(name: "empty body", body: "", status: 400, path: "/body/appName", message: "is required"),
        Case(name: "invalid JSON", body: #"{"appName":"app","#, status: 400, path: "/body", message: "not valid JSON"),
        Case(name: "trailing garbage", body: #"{"appName":"app"} x"#, status: 400, path: "/body", message: "not valid JSON"),
        Case(name: "bucket array", body: #"{"appName":"app","bucket":[]}"#, status: 400, path: "/body/bucket", message: "must be object,null"),
        Case(name: "bucket without start", body: #"{"appName":"app","bucket":{"stop":"2026-11-28T10:00:10Z","toggles":{}}}"#, status: 400, path: "/body/bucket/start", message: "is required"),
        Case(name: "bucket without stop", body: #"{"appName":"app","bucket":{"start":"2026-11-28T10:00:10Z","toggles":{}}}"#, status: 400, path: "/body/bucket/stop", message: "is required"),
        Case(name: "bucket without toggles", body: #"{"appName":"app","bucket":{"start":"2026-11-28T10:00:00Z","stop":"2026-11-28T10:00:10Z"}}"#, status: 400, path: "/body/bucket/toggles", message: "is required"),
        Case(name: "start not a date", body: bucket("{}", start: #""start":"yesterday""#), status: 400, path: "/body/bucket/start", message: #"You sent "yesterday""#),
        Case(name: "stop a date alone", body: bucket("{}", stop: #""stop":"2026-11-28""#), status: 400, path: "/body/bucket/stop", message: #"You sent "2026-11-28""#),
        Case(name: "stop a day that does not exist", body: bucket("{}", stop: #""stop":"2026-02-30T10:00:00Z""#), status: 400, path: "/body/bucket/stop", message: "date-time"),
        Case(name: "start fractional number", body: bucket("{}", start: #""start":1795860000000.5"#), status: 400, path: "/body/bucket/start", message: "You sent 1795860000000.5"),
        Case(name: "start boolean", body: bucket("{}", start: #""start":true"#), status: 400, path: "/body/bucket/start", message: "You sent true"),
        Case(name: "start out of Date range", body: bucket("{}", start: #""start":1e20"#), status: 400, path: "/body/bucket/start", message: "You sent 1e20"),
        Case(name: "toggles not an object", body: bucket("[]"), status: 400, path: "/body/bucket/toggles", message: "must be object"),
        Case(name: "toggle not an object", body: bucket(#"{"f":5}"#), status: 400, path: "/body/bucket/toggles/f", message: "must be object. You sent 5"),
        Case(name: "yes negative", body: bucket(#"{"f":{"yes":-1}}"#), status: 400, path: "/body/bucket/toggles/f/yes", message: "must be >= 0. You sent -1"),
        Case(name: "yes a word", body: bucket(#"{"f":{"yes":"many"}}"#), status: 400, path: "/body/bucket/toggles/f/yes", message: #"must be number. You sent "many""#),
        Case(name: "yes empty string", body: bucket(#"{"f":{"yes":""}}"#), status: 400, path: "/body/bucket/toggles/f/yes", message: "must be number"),
        Case(name: "no fractional", body: bucket(#"{"f":{"no":1.5}}"#), status: 400, path: "/body/bucket/toggles/f/no", message: "must be integer. You sent 1.5"),
        Case(name: "no negative", body: bucket(#"{"f":{"no":-2}}"#), status: 400, path: "/body/bucket/toggles/f/no", message: "must be >= 0"),
        Case(name: "count beyond 2^53-1", body: bucket(#"{"f":{"yes":9007199254740993}}"#), status: 400, path: "/body/bucket/toggles/f/yes", message: "safe integer"),
        Case(name: "count infinite", body: bucket(#"{"f":{"no":1e400}}"#), status: 400, path: "/body/bucket/toggles/f/no", message: "safe integer"),
        Case(name: "variants array", body: bucket(#"{"f":{"variants":[1]}}"#), status: 400, path: "/body/bucket/toggles/f/variants", message: "must be object,null"),
        Case(name: "variant fractional", body: bucket(#"{"f":{"variants":{"a":0.5}}}"#), status: 400, path: "/body/bucket/toggles/f/variants/a", message: "must be integer. You sent 0.5"),
        Case(name: "variant negative", body: bucket(#"{"f":{"variants":{"a":-1}}}"#), status: 400, path: "/body/bucket/toggles/f/variants/a", message: "must be >= 0"),
        Case(name: "feature name with a slash is escaped in the path", body: bucket(#"{"a/b":{"no":0.5}}"#), status: 400, path: "/body/bucket/toggles/a~1b/no", message: "must be integer"),
        Case(name: "sdkFlavorVersion too long", body: #"{"appName":"app","sdkFlavorVersion":"123456789012345678901234567890123"}"#, status: 400, path: "/body/sdkFlavorVersion", message: "more than 32 characters"),
    ]

    /// HTTP's Date format (IMF-fixdate).
    let imfDate: DateFormatter = {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return f
    }()

    func testEveryRuleStatusFieldAndMessageAndNothingRefusedIsMerged() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "500ms"))
        let c = proxy.tcp()
        var acceptedFeatures = 0
        for k in Self.cases {
            // Each case's toggles get a feature name of their own, so upstream shows which merged.
            let feature = "case-\(k.name.count)-\(k.status)"
            let body = k.body.replacingOccurrences(of: #"{"f":"#, with: #"{"\#(feature)":"#)
            let path = k.path?.replacingOccurrences(of: "/toggles/f", with: "/toggles/\(feature)")
            let r = try c.post("/api/client/metrics", json: body, token: tokenA)
            XCTAssertEqual(r.status, k.status, k.name)
            if k.status == 202 {
                XCTAssertEqual(r.body, [], k.name)
                XCTAssertNil(r.header("Content-Type"), "an empty 202 has no content type, as the server's: \(k.name)")
                // Fast path (headers written by the proxy) and full decoder (by libevent) alike.
                XCTAssertEqual(r.header("Content-Length"), "0", k.name)
                let date = try XCTUnwrap(r.header("Date").flatMap { imfDate.date(from: $0) }, "\(k.name): \(r.header("Date") ?? "no Date")")
                XCTAssertLessThan(abs(date.timeIntervalSinceNow), 5, k.name)
                if body.contains("\"yes\":1") || body.contains("\"yes\":\"12\"") { acceptedFeatures += 1 }
                continue
            }
            XCTAssertEqual(r.header("Content-Type"), "application/json", k.name)
            let j = try XCTUnwrap(r.json, k.name)
            XCTAssertEqual(j["name"] as? String, "ValidationError", k.name)
            XCTAssertNotNil(UUID(uuidString: j["id"] as? String ?? ""), k.name)
            let details = try XCTUnwrap(j["details"] as? [[String: String]], k.name)
            XCTAssertEqual(details.first?["path"], path, k.name)
            XCTAssertTrue((j["message"] as? String ?? "").contains(k.message!), "\(k.name): \(j["message"] ?? "")")
            XCTAssertTrue((details.first?["message"] ?? "").contains("`\(path!)`"), "\(k.name): the message names the field")
            // The connection stays usable after a 400 (keep-alive, not evhttp_send_error).
            XCTAssertNotEqual(r.header("Connection")?.lowercased(), "close", k.name)
        }
        // The posts may straddle a window boundary: wait for every accepted feature.
        func caseMetrics() throws -> [[String: Any]] {
            try upstream.requests(path: "/api/client/metrics/bulk").flatMap { $0.json["metrics"] as! [[String: Any]] }
        }
        try waitFor("the accepted posts upstream") {
            try caseMetrics().filter { ($0["featureName"] as! String).hasPrefix("case-") }.count >= acceptedFeatures
        }
        let metrics = try caseMetrics()
        let names = Set(metrics.map { $0["featureName"] as! String })
        XCTAssertTrue(names.allSatisfy { $0.hasSuffix("-202") || !$0.hasPrefix("case-") }, "a refused post reached upstream: \(names)")
        XCTAssertEqual(metrics.filter { ($0["featureName"] as! String).hasPrefix("case-") }.count, acceptedFeatures)
        // The fractional yes is rounded as the server's database does.
        XCTAssertTrue(metrics.contains { $0["featureName"] as? String == "case-\("fractional yes".count)-202" && $0["yes"] as? Int == 2 })
    }

    func testStatusCodesForTokenContentTypeEncodingSizeAndMethod() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, listen: "max_body = 2KiB"))
        let c = proxy.unix()
        let good = Self.bucket(#"{"f":{"yes":1}}"#)
        // No token and none configured: 401, as the server.
        var r = try c.post("/api/client/metrics", json: good)
        XCTAssertEqual(r.status, 401)
        XCTAssertTrue(r.text.contains("requires an API token"))
        // Bearer prefix is accepted.
        XCTAssertEqual(try c.post("/api/client/metrics", json: good, token: "Bearer \(tokenA)").status, 202)
        // Wrong content type: 415 ContentTypeError; missing: the same.
        r = try c.request("POST", "/api/client/metrics", headers: [("Content-Type", "text/plain"), ("Authorization", tokenA)], body: Array(good.utf8))
        XCTAssertEqual(r.status, 415)
        XCTAssertEqual(r.json?["name"] as? String, "ContentTypeError")
        XCTAssertTrue(r.text.contains("(text/plain)"))
        r = try c.request("POST", "/api/client/metrics", headers: [("Authorization", tokenA)], body: Array(good.utf8))
        XCTAssertEqual(r.status, 415)
        XCTAssertTrue(r.text.contains("you didn't provide one"))
        // JSON with a parameter and any case is JSON.
        r = try c.request("POST", "/api/client/metrics", headers: [("Content-Type", "Application/JSON; charset=utf-8"), ("Authorization", tokenA)], body: Array(good.utf8))
        XCTAssertEqual(r.status, 202)
        // A non-UTF charset and an unknown encoding: 415 naming them.
        r = try c.request("POST", "/api/client/metrics", headers: [("Content-Type", "application/json; charset=latin1"), ("Authorization", tokenA)], body: Array(good.utf8))
        XCTAssertEqual(r.status, 415)
        XCTAssertTrue(r.text.contains("LATIN1"))
        r = try c.request("POST", "/api/client/metrics", headers: [("Content-Type", "application/json"), ("Content-Encoding", "br"), ("Authorization", tokenA)], body: Array(good.utf8))
        XCTAssertEqual(r.status, 415)
        XCTAssertEqual(r.json?["message"] as? String, "unsupported content encoding \"br\"")
        // Over max_body: 413; after inflation too (a small gzip body that inflates past 2 KiB).
        let big = #"{"appName":"app","pad":""# + String(repeating: "x", count: 3000) + #""}"#
        r = try c.post("/api/client/metrics", json: big, token: tokenA)
        XCTAssertEqual(r.status, 413)
        let c2 = proxy.unix()
        let bomb = try gzip(Array(big.utf8))
        XCTAssertLessThan(bomb.count, 2048)
        r = try c2.request("POST", "/api/client/metrics", headers: [("Content-Type", "application/json"), ("Content-Encoding", "gzip"), ("Authorization", tokenA)], body: bomb)
        XCTAssertEqual(r.status, 413)
        // A corrupt gzip stream: 400.
        r = try c2.request("POST", "/api/client/metrics", headers: [("Content-Type", "application/json"), ("Content-Encoding", "gzip"), ("Authorization", tokenA)], body: Array("not gzip".utf8))
        XCTAssertEqual(r.status, 400)
        // Wrong method on a known path: 405 with Allow.
        r = try c2.request("GET", "/api/client/metrics")
        XCTAssertEqual(r.status, 405)
        XCTAssertEqual(r.header("Allow"), "POST")
        // Paths match as the server matches them.
        XCTAssertEqual(try c2.post("//API/Client//metrics/", json: good, token: tokenA).status, 202)
        XCTAssertEqual(try c2.request("GET", "/nothing").status, 404)
        XCTAssertEqual(try c2.request("GET", "/healthz").status, 200)
        XCTAssertEqual(try c2.request("GET", "/readyz").status, 200)
    }

    func testRegisterJoinsApplicationsAndUnleashIntervalHeaderIsKept() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "500ms"))
        let c = proxy.tcp()
        // The Python SDK's register body, from a capture.
        let register = #"{"appName": "capture-app", "instanceId": "capture-instance-1", "connectionId": "eea534d9-b864-4029-99e3-a46aafd15d49", "platformName": "CPython", "platformVersion": "3.11.7", "yggdrasilVersion": "0.20.8", "specVersion": "6.1.0", "sdkVersion": "unleash-python-sdk:6.9.1", "strategies": ["default"], "started": "2026-11-28T01:24:18.277189+00:00", "interval": 1}"#
        XCTAssertEqual(try c.post("/api/client/register", json: register, token: tokenA).status, 202)
        var r = try c.post("/api/client/register", json: #"{"appName":"x","strategies":[],"started":"2026-11-28T01:00:00Z"}"#, token: tokenA)
        XCTAssertEqual(r.status, 400)
        XCTAssertEqual((r.json?["details"] as? [[String: String]])?.first?["path"], "/body/interval")
        r = try c.post("/api/client/metrics", json: Self.bucket(#"{"f":{"yes":1}}"#).replacingOccurrences(of: "\"i\"", with: "\"other\""),
                       token: tokenA, headers: [("unleash-interval", "15000")])
        XCTAssertEqual(r.status, 202)
        func apps() throws -> [[String: Any]] {
            try upstream.requests(path: "/api/client/metrics/bulk").flatMap { $0.json["applications"] as! [[String: Any]] }
        }
        // The two may land in different windows: wait for both.
        try waitFor("the registrations upstream") {
            Set(try apps().compactMap { $0["instanceId"] as? String }).isSuperset(of: ["capture-instance-1", "other"])
        }
        let apps = try apps()
        let reg = try XCTUnwrap(apps.first { $0["instanceId"] as? String == "capture-instance-1" })
        XCTAssertEqual(reg["sdkVersion"] as? String, "unleash-python-sdk:6.9.1")
        XCTAssertEqual(reg["started"] as? String, "2026-11-28T01:24:18.277Z")
        XCTAssertEqual(reg["interval"] as? Int, 1)
        XCTAssertEqual(reg["strategies"] as? [String], ["default"])
        XCTAssertEqual(reg["environment"] as? String, "development")
        let other = try XCTUnwrap(apps.first { $0["instanceId"] as? String == "other" })
        XCTAssertEqual(other["interval"] as? Int, 15000)
    }
}

/// `[limits] max_keys` bounds the window's memory: posts that would add keys past it get 503
/// with Retry-After, posts to keys already held still merge, and nothing refused is counted.
final class KeyCapTests: XCTestCase {
    func testPastTheKeyCapNewKeysAreRefusedAndExistingKeysStillMerge() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "1h", extra: "[limits]\nmax_keys = 3"))
        let c = proxy.tcp()
        let first = ValidationTests.bucket(#"{"k1":{"yes":1},"k2":{"yes":1},"k3":{"yes":1}}"#)
        XCTAssertEqual(try c.post("/api/client/metrics", json: first, token: tokenA).status, 202)
        // Full body (fast path) and escaped names (full decoder) are both held to the cap.
        for body in [ValidationTests.bucket(#"{"k1":{"yes":5},"k4":{"yes":1}}"#), ValidationTests.bucket(#"{"k\u0035":{"yes":1}}"#)] {
            let r = try c.post("/api/client/metrics", json: body, token: tokenA)
            XCTAssertEqual(r.status, 503, body)
            XCTAssertNotNil(r.header("Retry-After"))
            XCTAssertTrue((r.json?["message"] as? String ?? "").contains("3 distinct keys"))
        }
        XCTAssertEqual(try c.post("/api/client/metrics", json: ValidationTests.bucket(#"{"k1":{"yes":2},"k3":{"no":4}}"#), token: tokenA).status, 202)
        proxy.signal(SIGTERM)
        XCTAssertEqual(proxy.waitForExit(), 0)
        let metrics = try upstream.requests(path: "/api/client/metrics/bulk").flatMap { $0.json["metrics"] as! [[String: Any]] }
        var got: [String: [Int]] = [:]
        for m in metrics { got[m["featureName"] as! String] = [m["yes"] as! Int, m["no"] as! Int] }
        XCTAssertEqual(got, ["k1": [3, 0], "k2": [1, 0], "k3": [1, 4]])
        XCTAssertEqual(proxy.log.components(separatedBy: "window key cap reached").count - 1, 1, "logged once per window")
    }
}

/// SDK metadata the body carries (every `SDKField`, `sdkFlavor` and `sdkFlavorVersion`
/// among them) reaches the upstream as the SDK said it, in both upstream modes and whichever
/// decoder read the post.
final class SDKFieldsEndToEndTests: XCTestCase {
    func testFlavorFieldsFromTheBodyReachTheUpstreamInBothModes() throws {
        for mode in ["bulk", "metrics"] {
            let upstream = try FakeUpstream()
            let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "1h", upstreamExtra: "mode = \(mode)"))
            let c = proxy.tcp()
            // The shape SDKs write (the fast path), and with an escaped name (the full decoder).
            let plain = #"{"appName":"app","instanceId":"fast","sdkFlavor":"unleash-openfeature-node-provider","sdkFlavorVersion":"1.0.1","bucket":{"start":"2026-11-28T10:00:00Z","stop":"2026-11-28T10:00:30Z","toggles":{"f":{"yes":1,"no":0,"variants":{}}}}}"#
            let escaped = #"{"appName":"app2","instanceId":"full","sdkFlavor":"of-python","sdkFlavorVersion":"0.9","bucket":{"start":"2026-11-28T10:00:00Z","stop":"2026-11-28T10:00:30Z","toggles":{"\u0067":{"yes":1,"no":0,"variants":{}}}}}"#
            XCTAssertEqual(try c.post("/api/client/metrics", json: plain, token: tokenA).status, 202)
            XCTAssertEqual(try c.post("/api/client/metrics", json: escaped, token: tokenA).status, 202)
            // Over the schema's 32 characters: the server's 400, naming the field.
            let long = plain.replacingOccurrences(of: #""1.0.1""#, with: "\"\(String(repeating: "9", count: 33))\"")
            let r = try c.post("/api/client/metrics", json: long, token: tokenA)
            XCTAssertEqual(r.status, 400)
            XCTAssertEqual((r.json?["details"] as? [[String: String]])?.first?["path"], "/body/sdkFlavorVersion")
            proxy.signal(SIGTERM)
            XCTAssertEqual(proxy.waitForExit(), 0)
            let requests = try upstream.requests()
            let entries: [[String: Any]] = mode == "bulk"
                ? requests.flatMap { $0.json["applications"] as! [[String: Any]] } : requests.map(\.json)
            var flavors: [String: [String]] = [:]
            for e in entries {
                flavors[e["instanceId"] as! String] = [e["sdkFlavor"] as? String ?? "-", e["sdkFlavorVersion"] as? String ?? "-"]
            }
            XCTAssertEqual(flavors, ["fast": ["unleash-openfeature-node-provider", "1.0.1"], "full": ["of-python", "0.9"]], mode)
        }
    }
}
