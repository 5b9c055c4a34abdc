import XCTest
@testable import MetricsProxyCore

final class RetryAndOutboxTests: XCTestCase {
    let policy = RetryPolicy(initial: .seconds(1), max: .seconds(60), jitter: 0.2)

    /// The Date header the proxy sends: RFC 9110's example, and every hour of a leap year
    /// read back by the parser Retry-After uses.
    func testHTTPDateFormatsWhatItParses() {
        XCTAssertEqual(HTTPDate.format(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT")
        XCTAssertEqual(HTTPDate.format(1_795_860_000_999), "Sat, 28 Nov 2026 10:00:00 GMT", "whole seconds")
        XCTAssertEqual(HTTPDate.format(0), "Thu, 01 Jan 1970 00:00:00 GMT")
        for hour in stride(from: Int64(1_704_067_200_000), to: 1_735_689_600_000, by: 3_600_000) { // 2024
            let t = hour + 61_000
            XCTAssertEqual(HTTPDate.parse(HTTPDate.format(t)), t, HTTPDate.format(t))
        }
    }

    func testBackoffDoublesCapsAndJitters() {
        XCTAssertEqual(policy.delay(failures: 1, random: 0.5), .seconds(1))
        XCTAssertEqual(policy.delay(failures: 3, random: 0.5), .seconds(4))
        XCTAssertEqual(policy.delay(failures: 30, random: 0.5), .seconds(60))
        XCTAssertEqual(policy.delay(failures: 1, random: 0), .milliseconds(800))
        XCTAssertEqual(policy.delay(failures: 1, random: 0.999_999), .milliseconds(1199))
    }

    func testAnswerClasses() {
        XCTAssertEqual(policy.classify(.status(202, retryAfter: nil), failures: 1, random: 0.5), .delivered)
        XCTAssertEqual(policy.classify(.status(503, retryAfter: nil), failures: 2, random: 0.5), .retry(after: .seconds(2)))
        XCTAssertEqual(policy.classify(.status(429, retryAfter: .seconds(30)), failures: 1, random: 0.5), .retry(after: .seconds(30)),
                       "Retry-After is a floor")
        XCTAssertEqual(policy.classify(.status(413, retryAfter: nil), failures: 1, random: 0.5), .split)
        XCTAssertEqual(policy.classify(.status(400, retryAfter: nil), failures: 1, random: 0.5), .reject)
        XCTAssertEqual(policy.classify(.status(401, retryAfter: nil), failures: 1, random: 0.5), .hold(after: .seconds(60)))
        XCTAssertEqual(policy.classify(.noAnswer("refused"), failures: 1, random: 0.5), .retry(after: .seconds(1)))
        XCTAssertEqual(RetryPolicy.parseRetryAfter("120", now: 0), .seconds(120))
        XCTAssertEqual(RetryPolicy.parseRetryAfter("Sat, 28 Nov 2026 10:00:30 GMT", now: 1_795_860_000_000), .seconds(30))
        XCTAssertNil(RetryPolicy.parseRetryAfter("soon", now: 0))
    }

    func batch(_ id: String, _ token: String, bytes: Int = 10) -> Batch {
        Batch(id: id, token: token, path: "/client/metrics/bulk", body: [UInt8](repeating: 0x20, count: bytes), created: 0, entries: 1)
    }

    func testOneTokensFailuresDoNotHoldBackAnother() {
        var o = Outbox(policy: policy, maxBytes: 1 << 20)
        _ = o.add([batch("1-a", "A"), batch("1-b", "B"), batch("2-a", "A")])
        var ready = o.takeReady(now: 0)
        XCTAssertEqual(ready.map(\.id), ["1-a", "1-b"], "oldest per token, one in flight each")
        o.complete(ready[0], answer: .status(503, retryAfter: nil), now: 0, random: 0.5)
        o.complete(ready[1], answer: .status(202, retryAfter: nil), now: 0, random: 0.5)
        XCTAssertEqual(o.takeReady(now: 500).map(\.id), [], "A waits out its backoff")
        XCTAssertEqual(o.nextWake(), 1000)
        ready = o.takeReady(now: 1000)
        XCTAssertEqual(ready.map(\.id), ["1-a"], "the same batch again, still first")
        XCTAssertEqual(ready[0].attempts, 2)
        o.complete(ready[0], answer: .status(200, retryAfter: nil), now: 1000, random: 0.5)
        XCTAssertEqual(o.takeReady(now: 1000).map(\.id), ["2-a"])
    }

    func testMemoryCapDropsOldestUnspooledFirst() {
        var o = Outbox(policy: policy, maxBytes: 25)
        var spooled = batch("0", "A", bytes: 0)
        spooled.spooled = true
        let dropped = o.add([spooled, batch("1", "A"), batch("2", "A"), batch("3", "B")])
        XCTAssertEqual(dropped.map(\.id), ["1"], "a spooled batch costs no memory and is never dropped here")
        XCTAssertEqual(o.bytes, 20)
        o.markSpooled("2", token: "A")
        XCTAssertEqual(o.bytes, 10)
        XCTAssertEqual(o.unspooled.map(\.id), ["3"])
    }

    func testPacingBoundsInFlightAndSpacing() {
        var o = Outbox(policy: policy, maxBytes: 1 << 20, maxInFlight: 2, minSpacingMillis: 100)
        _ = o.add((0..<4).map { batch("\($0)", "T\($0)") })
        XCTAssertEqual(o.takeReady(now: 0).map(\.id), ["0"])
        XCTAssertEqual(o.takeReady(now: 50).map(\.id), [], "spacing")
        XCTAssertEqual(o.nextWake(), 100)
        XCTAssertEqual(o.takeReady(now: 100).map(\.id), ["1"])
        XCTAssertEqual(o.takeReady(now: 1000).map(\.id), [], "two in flight at most")
        XCTAssertNil(o.nextWake())
    }

    func testSplitReplacesTheBatchInPlace() {
        var o = Outbox(policy: policy, maxBytes: 1 << 20)
        _ = o.add([batch("1", "A"), batch("2", "A")])
        let b = o.takeReady(now: 0)[0]
        XCTAssertEqual(o.complete(b, answer: .status(413, retryAfter: nil), now: 0, random: 0.5), .split)
        o.replace("1", token: "A", with: [batch("1a", "A"), batch("1b", "A")])
        XCTAssertEqual(o.takeReady(now: 0).map(\.id), ["1a"])
    }
}
