import XCTest
@testable import MetricsProxyCore

final class MetricsPostDecoderTests: XCTestCase {
    func decode(_ s: String) throws(ValidationFailure) -> MetricsPost { try MetricsPostDecoder.decode(Array(s.utf8)) }

    func failure(_ s: String) -> ValidationFailure? {
        do { _ = try decode(s); return nil } catch { return error }
    }

    func testPythonSDKCaptureDecodes() throws {
        let body = #"{"appName": "capture-app", "instanceId": "capture-instance-1", "connectionId": "eea534d9", "platformName": "CPython", "platformVersion": "3.11.7", "yggdrasilVersion": "0.20.8", "specVersion": "6.1.0", "bucket": {"start": "2026-11-28T01:24:18.268519247Z", "stop": "2026-11-28T01:24:19.288519247Z", "toggles": {"flag-a": {"yes": 3, "no": 1, "variants": {"blue": 2}}, "flag-b": {"yes": 0, "no": 4, "variants": {}}}}}"#
        let p = try decode(body)
        XCTAssertEqual(p.appName, "capture-app")
        XCTAssertEqual(p.instanceId, "capture-instance-1")
        XCTAssertEqual(p.sdk[SDKField.named("platformName")!], "CPython")
        XCTAssertEqual(p.sdk[SDKField.named("connectionId")!], "eea534d9")
        XCTAssertEqual(p.bucket?.stop, Timestamp.parse(rfc3339: Array("2026-11-28T01:24:19.288Z".utf8)))
        XCTAssertEqual(p.bucket?.toggles, [ToggleCounts(name: "flag-a", yes: 3, no: 1, variants: [VariantCount(name: "blue", count: 2)]),
                                           ToggleCounts(name: "flag-b", yes: 0, no: 4)])
    }

    func testCoercionsTheServerApplies() throws {
        XCTAssertEqual(try decode(#"{"appName":42}"#).appName, "42")
        XCTAssertEqual(try decode(#"{"appName":true}"#).appName, "true")
        XCTAssertEqual(try decode(#"{"appName":"a","instanceId":null}"#).instanceId, "default")
        XCTAssertEqual(try decode(#"{"appName":"a","instanceId":""}"#).instanceId, "default")
        XCTAssertNil(try decode(#"{"appName":"a","bucket":""}"#).bucket)
        XCTAssertNil(try decode(#"{"appName":"a","bucket":0}"#).bucket)
        XCTAssertNil(try decode(#"{"appName":"a","bucket":false}"#).bucket)
        let t = try decode(#"{"appName":"a","bucket":{"start":"1795860000000","stop":1795860000000,"toggles":{"f":{"yes":"7.5","no":true,"variants":{"v":"3"}}}}}"#)
        XCTAssertEqual(t.bucket?.start, 1_795_860_000_000, "a digit string is epoch ms")
        XCTAssertEqual(t.bucket?.toggles.first, ToggleCounts(name: "f", yes: 8, no: 1, variants: [VariantCount(name: "v", count: 3)]))
        XCTAssertEqual(try decode(#"{"appName":"a","bucket":{"start":0,"stop":0,"toggles":{"f":{"yes":null,"no":2.0}}}}"#).bucket?.toggles.first?.no, 2)
        XCTAssertEqual(try decode(#"{"app\u004eame":"esc\u00e9\ud83d\ude00"}"#).appName, "escé😀", "escapes in keys and values")
    }

    /// A number where a string belongs is written as JavaScript would (Ajv coerces it with
    /// String(n)); past 2^63 this used to trap (decoder fuzzer).
    func testLargeNumbersCoercedToStringsAsJavaScriptWritesThem() throws {
        let cases = [("222222222222222222222", "222222222222222230000"), ("1e20", "100000000000000000000"),
                     ("1234567890123456", "1234567890123456"), ("-5e18", "-5000000000000000000"), ("12", "12"),
                     ("1.5", "1.5")]
        for (sent, text) in cases {
            let post = try decode(#"{"appName":"a","sdkVersion":\#(sent)}"#)
            XCTAssertEqual(post.sdk[SDKField.named("sdkVersion")!], text, sent)
        }
    }

    func testRejectionsNameTheFieldAndWhatWasSent() {
        XCTAssertEqual(failure(#"{"appName":"a","bucket":{"start":0,"stop":0,"toggles":{"x/y~z":{"no":-3}}}}"#)?.details.first?.path,
                       "/body/bucket/toggles/x~1y~0z/no")
        XCTAssertEqual(failure(#"{"appName":[1, 2]}"#)?.message, "The `/body/appName` property must be string. You sent [1, 2].")
        XCTAssertTrue(failure(#"{"appName":"a","bucket":{"start":"x","stop":0,"toggles":{}}}"#)!.message.contains(#"You sent "x""#))
        XCTAssertEqual(failure(#"{"bucket":{"start":"x"}}"#)?.details.first?.path, "/body/appName", "required is reported first")
        XCTAssertEqual(failure(#"{"appName":"a","bucket":{"toggles":{"f":{"yes":-1}}}}"#)?.details.first?.path, "/body/bucket/start",
                       "a bucket's required fields come before its properties")
        XCTAssertEqual(failure(#"{"appName":"a","x":[1,}"#)?.isSyntax, true)
        XCTAssertEqual(failure(#"{"appName":[1], "x": tru}"#)?.isSyntax, true, "a syntax error later in the body wins")
        XCTAssertEqual(failure(String(repeating: "[", count: 100) + String(repeating: "]", count: 100))?.isSyntax, true,
                       "nesting is bounded")
        XCTAssertEqual(failure("{\"appName\":\"a\u{01}\"}")?.isSyntax, true, "control characters in strings")
        XCTAssertNotNil(failure(#"{"appName":"a","bucket":{"start":0,"stop":0,"toggles":{"f":{"yes":9007199254740992}}}}"#))
        XCTAssertNil(failure(#"{"appName":"a","bucket":{"start":0,"stop":0,"toggles":{"f":{"yes":9007199254740991}}}}"#))
    }

    func testErrorBodyShape() throws {
        let f = failure(#"{"appName":""}"#)!
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(f.responseBody(id: "abc"))) as? [String: Any])
        XCTAssertEqual(json["id"] as? String, "abc")
        XCTAssertEqual(json["name"] as? String, "ValidationError")
        XCTAssertEqual(json["message"] as? String, "The `/body/appName` property must not be empty. You sent \"\".")
        XCTAssertEqual((json["details"] as? [[String: String]])?.first?["path"], "/body/appName")
    }
}
