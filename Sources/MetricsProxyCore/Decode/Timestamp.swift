/// Dates as the Unleash server reads them: RFC 3339 date-time strings (ajv-formats 2.1.1
/// rules: a space may replace `T`, the offset may be missing and then means UTC, the day must
/// exist) or integers of epoch milliseconds (Joi reads numbers as milliseconds).
public enum Timestamp {
    /// JavaScript's Date range: ±8.64e15 ms.
    public static let maxMillis: Int64 = 8_640_000_000_000_000
    public static let millisPerHour: Int64 = 3_600_000

    /// Parses an RFC 3339 date-time into epoch milliseconds, or nil when it is not one.
    public static func parse<C: Collection<UInt8>>(rfc3339 s: C) -> Int64? where C.Index == Int {
        var i = s.startIndex
        let end = s.endIndex
        func digits(_ n: Int) -> Int? {
            guard i + n <= end else { return nil }
            var v = 0
            for k in 0..<n {
                let d = s[i + k] &- UInt8(ascii: "0")
                guard d < 10 else { return nil }
                v = v * 10 + Int(d)
            }
            i += n
            return v
        }
        func byte(_ c: UInt8) -> Bool {
            guard i < end, s[i] == c else { return false }
            i += 1
            return true
        }
        // `YYYY-MM-DDTHH:MM:SS` has fixed widths: read at fixed offsets.
        guard end - i >= 19, let (year, month, day, hour, minute, second) = fixedPart(s, i) else { return nil }
        i += 19
        guard (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year) else { return nil }
        guard hour <= 23, minute <= 59, second <= 60 else { return nil }
        var millis = 0
        if byte(UInt8(ascii: ".")) {
            var n = 0
            while i < end, s[i] &- UInt8(ascii: "0") < 10 {
                if n < 3 { millis = millis * 10 + Int(s[i] - UInt8(ascii: "0")) }
                n += 1
                i += 1
            }
            guard n > 0 else { return nil }
            for _ in n..<max(n, 3) { millis *= 10 }
        }
        var offsetMinutes = 0
        if i < end {
            if s[i] == UInt8(ascii: "Z") || s[i] == UInt8(ascii: "z") {
                i += 1
            } else if s[i] == UInt8(ascii: "+") || s[i] == UInt8(ascii: "-") {
                let sign = s[i] == UInt8(ascii: "-") ? -1 : 1
                i += 1
                guard let oh = digits(2) else { return nil }
                var om = 0
                if i < end {
                    _ = byte(UInt8(ascii: ":"))
                    guard let m = digits(2) else { return nil }
                    om = m
                }
                guard oh <= 23, om <= 59 else { return nil }
                offsetMinutes = sign * (oh * 60 + om)
            } else {
                return nil
            }
        }
        guard i == end else { return nil }
        // A leap second is only valid at 23:59:60 UTC.
        if second == 60 {
            let utcMinutes = ((hour * 60 + minute - offsetMinutes) % 1440 + 1440) % 1440
            guard utcMinutes == 1439 else { return nil }
        }
        let days = Int64(daysFromCivil(year: year, month: month, day: day))
        let secs = days * 86_400 + Int64(hour * 3600 + minute * 60 + min(second, 59)) - Int64(offsetMinutes * 60)
        return secs * 1000 + Int64(millis)
    }

    /// `YYYY-MM-DDTHH:MM:SS` (`T`, `t` or a space between date and time) at `i`, or nil for
    /// anything else.
    @inline(__always)
    private static func fixedPart<C: Collection<UInt8>>(_ s: C, _ i: Int) -> (Int, Int, Int, Int, Int, Int)? where C.Index == Int {
        @inline(__always) func d(_ k: Int) -> Int { Int(s[i + k] &- UInt8(ascii: "0")) }
        let t = s[i + 10]
        guard s[i + 4] == UInt8(ascii: "-"), s[i + 7] == UInt8(ascii: "-"), s[i + 13] == UInt8(ascii: ":"),
              s[i + 16] == UInt8(ascii: ":"), t == UInt8(ascii: "T") || t == UInt8(ascii: "t") || t == UInt8(ascii: " ") else { return nil }
        guard d(0) < 10, d(1) < 10, d(2) < 10, d(3) < 10, d(5) < 10, d(6) < 10, d(8) < 10, d(9) < 10,
              d(11) < 10, d(12) < 10, d(14) < 10, d(15) < 10, d(17) < 10, d(18) < 10 else { return nil }
        return (d(0) * 1000 + d(1) * 100 + d(2) * 10 + d(3), d(5) * 10 + d(6), d(8) * 10 + d(9),
                d(11) * 10 + d(12), d(14) * 10 + d(15), d(17) * 10 + d(18))
    }

    /// The start of the UTC hour that holds `millis`.
    public static func hourStart(_ millis: Int64) -> Int64 {
        let r = millis % millisPerHour
        return r >= 0 ? millis - r : millis - r - millisPerHour
    }

    /// Formats epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`, as JavaScript's toISOString does.
    public static func iso8601(_ millis: Int64) -> String {
        var days = millis / 86_400_000
        var rem = millis % 86_400_000
        if rem < 0 { rem += 86_400_000; days -= 1 }
        let (y, m, d) = civilFromDays(Int(days))
        let ms = Int(rem)
        let h = ms / 3_600_000, mi = ms / 60_000 % 60, s = ms / 1000 % 60, f = ms % 1000
        func pad(_ v: Int, _ w: Int) -> String {
            let t = String(v)
            return t.count >= w ? t : String(repeating: "0", count: w - t.count) + t
        }
        return "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2))T\(pad(h, 2)):\(pad(mi, 2)):\(pad(s, 2)).\(pad(f, 3))Z"
    }

    static func isLeap(_ y: Int) -> Bool { (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    // Howard Hinnant's days_from_civil / civil_from_days.
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civilFromDays(_ z0: Int) -> (Int, Int, Int) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }
}
