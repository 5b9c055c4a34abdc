/// What came back from one upstream request.
public enum UpstreamAnswer: Sendable, Equatable {
    case status(Int, retryAfter: Duration?)
    /// No HTTP answer: refused, reset, timed out, TLS failure; the reason is for logs.
    case noAnswer(String)
}

/// What to do with a batch after an answer (the README's "Delivery guarantees").
public enum Disposition: Sendable, Equatable {
    /// 2xx: done, forget it.
    case delivered
    /// 408, 429, 5xx, no answer: keep it and try again after the delay.
    case retry(after: Duration)
    /// 413: split it in two and send the halves.
    case split
    /// 400: the upstream will never take it; set it aside.
    case reject
    /// 401/403/404: a configuration error; keep it and try again at the longest backoff.
    case hold(after: Duration)
}

/// Exponential backoff with jitter, `Retry-After` as a floor.
public struct RetryPolicy: Sendable, Equatable {
    public var initial: Duration
    public var max: Duration
    public var jitter: Double

    public init(initial: Duration, max: Duration, jitter: Double) {
        self.initial = initial
        self.max = max
        self.jitter = jitter
    }

    public init(_ c: Config.Retry) { self.init(initial: c.initial, max: c.max, jitter: c.jitter) }

    /// The delay before attempt `failures + 1`; `random` is uniform in 0..<1.
    public func delay(failures: Int, random: Double) -> Duration {
        let base = Double(initial.milliseconds) * pow2(Swift.max(0, failures - 1))
        let capped = Swift.min(base, Double(max.milliseconds))
        let spread = capped * jitter * (random * 2 - 1)
        return .milliseconds(Int64(Swift.max(0, capped + spread)))
    }

    private func pow2(_ n: Int) -> Double { n >= 62 ? Double(1 << 62) : Double(1 << n) }

    public func classify(_ answer: UpstreamAnswer, failures: Int, random: Double) -> Disposition {
        switch answer {
        case .status(let code, let retryAfter):
            switch code {
            case 200..<300: return .delivered
            case 413: return .split
            case 400: return .reject
            case 401, 403, 404: return .hold(after: Swift.max(max, retryAfter ?? .zero))
            default:
                let d = delay(failures: failures, random: random)
                return .retry(after: Swift.max(d, retryAfter ?? .zero))
            }
        case .noAnswer:
            return .retry(after: delay(failures: failures, random: random))
        }
    }

    /// Parses `Retry-After`: delta seconds, or an HTTP date relative to `now` (epoch ms).
    public static func parseRetryAfter(_ value: String?, now: Int64) -> Duration? {
        guard let v = value?.trimmingASCIIWhitespace(), !v.isEmpty else { return nil }
        if let s = Int64(v), s >= 0 { return .seconds(s) }
        guard let date = HTTPDate.parse(v) else { return nil }
        return .milliseconds(Swift.max(0, date - now))
    }
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form RFC 9110 requires senders to use.
public enum HTTPDate {
    public static func parse(_ s: String) -> Int64? {
        let parts = s.split(separator: " ")
        guard parts.count == 6, parts[5] == "GMT", let day = Int(parts[1]), let year = Int(parts[3]) else { return nil }
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        guard let m = months.firstIndex(of: String(parts[2])) else { return nil }
        let hms = parts[4].split(separator: ":").compactMap { Int($0) }
        guard hms.count == 3 else { return nil }
        let iso = String(format4(year)) + "-" + two(m + 1) + "-" + two(day) + "T" + two(hms[0]) + ":" + two(hms[1]) + ":" + two(hms[2]) + "Z"
        return Timestamp.parse(rfc3339: Array(iso.utf8))
    }

    /// `millis` (epoch ms, whole seconds shown) in the same form: the Date header's value.
    public static func format(_ millis: Int64) -> String {
        var days = millis / 86_400_000, rem = millis % 86_400_000
        if rem < 0 { rem += 86_400_000; days -= 1 }
        let (y, m, d) = Timestamp.civilFromDays(Int(days))
        let s = Int(rem / 1000)
        let weekdays = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"] // 1970-01-01 was a Thursday
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        return weekdays[Int(((days % 7) + 7) % 7)] + ", " + two(d) + " " + months[m - 1] + " " + format4(y) + " "
            + two(s / 3600) + ":" + two(s / 60 % 60) + ":" + two(s % 60) + " GMT"
    }

    private static func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
    private static func format4(_ v: Int) -> String { String(repeating: "0", count: max(0, 4 - String(v).count)) + String(v) }
}
