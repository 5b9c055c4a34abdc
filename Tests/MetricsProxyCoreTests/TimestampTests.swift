import XCTest
@testable import MetricsProxyCore

final class TimestampTests: XCTestCase {
    func parse(_ s: String) -> Int64? { Timestamp.parse(rfc3339: Array(s.utf8)) }

    func testFormsSDKsSend() {
        let base: Int64 = 1_795_860_000_000 // 2026-11-28T10:00:00Z
        XCTAssertEqual(parse("2026-11-28T10:00:00Z"), base)
        XCTAssertEqual(parse("2026-11-28T10:00:00.123Z"), base + 123)
        XCTAssertEqual(parse("2026-11-28T10:00:00.123456789Z"), base + 123)
        XCTAssertEqual(parse("2026-11-28T10:00:00.1Z"), base + 100)
        XCTAssertEqual(parse("2026-11-28T12:00:00+02:00"), base)
        XCTAssertEqual(parse("2026-11-28T04:30:00-05:30"), base)
        XCTAssertEqual(parse("2026-11-28T12:00:00+0200"), base)
        XCTAssertEqual(parse("2026-11-28 10:00:00"), base, "space for T, no offset: UTC")
        XCTAssertEqual(parse("2026-11-28t10:00:00z"), base)
        XCTAssertEqual(parse("2024-02-29T00:00:00Z"), 1_709_164_800_000, "leap day")
    }

    func testRejects() {
        for s in ["2026-11-28", "2026-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-11-28T24:00:00Z",
                  "2026-11-28T10:60:00Z", "2026-11-28T10:00:00.Z", "2026-11-28T10:00:00+2", "yesterday", "",
                  "2026-11-28T10:00:00Zjunk", "2026-11-28T10:00:60Z"] {
            XCTAssertNil(parse(s), s)
        }
        XCTAssertNotNil(parse("2026-12-31T23:59:60Z"), "a leap second at the end of a UTC day")
    }

    func testHourStartAndISOFormatting() {
        XCTAssertEqual(Timestamp.hourStart(1_795_860_000_000 + 3_599_999), 1_795_860_000_000)
        XCTAssertEqual(Timestamp.hourStart(1_795_860_000_000), 1_795_860_000_000)
        XCTAssertEqual(Timestamp.hourStart(-1), -3_600_000)
        XCTAssertEqual(Timestamp.iso8601(1_795_860_000_123), "2026-11-28T10:00:00.123Z")
        XCTAssertEqual(Timestamp.iso8601(0), "1970-01-01T00:00:00.000Z")
        for ms: Int64 in [0, 951_782_400_000, 1_709_164_800_000, 4_102_444_799_999] {
            XCTAssertEqual(parse(Timestamp.iso8601(ms)), ms, "round trip \(ms)")
        }
    }
}
