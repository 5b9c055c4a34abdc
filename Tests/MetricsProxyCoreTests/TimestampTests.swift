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

    /// The date and time are read at fixed offsets: every digit at every position either gives
    /// a date that formats back to the same text, or nil when no such date exists; a non-digit
    /// where a digit belongs, or another separator, is refused.
    func testEveryDigitAtEveryPositionReadsBackTheSame() {
        let text = Array("2024-02-29T13:45:59Z".utf8)
        var parsed = 0
        for position in 0..<19 {
            for b in Array("0123456789-:Tt /Zx".utf8) {
                var s = text
                s[position] = b
                let mutated = String(decoding: s, as: UTF8.self)
                guard let ms = Timestamp.parse(rfc3339: s) else { continue }
                parsed += 1
                let back = Array(Timestamp.iso8601(ms).utf8.prefix(19))
                var expected = Array(s.prefix(19))
                if expected[10] != UInt8(ascii: "T") { expected[10] = UInt8(ascii: "T") }
                XCTAssertEqual(String(decoding: back, as: UTF8.self), String(decoding: expected, as: UTF8.self), mutated)
                let allowed: [UInt8] = switch position {
                case 10: [UInt8(ascii: "T"), UInt8(ascii: "t"), 0x20]
                case 4, 7, 13, 16: [text[position]]
                default: Array("0123456789".utf8)
                }
                XCTAssertTrue(allowed.contains(b), "\(mutated) should be refused")
            }
        }
        XCTAssertGreaterThan(parsed, 60)
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
