/// An impact metric as an SDK posts it in `impactMetrics` (counters, gauges and histograms that
/// Unleash uses for release safeguards), checked by the rules the Unleash server's Joi schema
/// applies to the array (`impactMetricSchema`), so that nothing the proxy forwards can make the
/// server drop a request's impact metrics.
public enum ImpactType: String, Sendable, CaseIterable {
    case counter, gauge, histogram
}

public struct ImpactMetric: Sendable, Equatable {
    public var name: String
    public var help: String
    public var type: ImpactType
    public var samples: [ImpactSample]

    public init(name: String, help: String, type: ImpactType, samples: [ImpactSample]) {
        self.name = name
        self.help = help
        self.type = type
        self.samples = samples
    }
}

/// One label of a sample. Numbers sent as label values are kept as their JavaScript text,
/// which is what the server's registry makes of them.
public struct ImpactLabel: Hashable, Sendable, Comparable {
    public var key: String
    public var value: String

    public init(_ key: String, _ value: String) {
        self.key = key
        self.value = value
    }

    public static func < (a: ImpactLabel, b: ImpactLabel) -> Bool { (a.key, a.value) < (b.key, b.value) }
}

public struct ImpactSample: Sendable, Equatable {
    /// Sorted by key, each key once: the series' identity.
    public var labels: [ImpactLabel]
    /// A counter's delta or a gauge's value.
    public var value: Double
    /// A histogram's observations.
    public var histogram: HistogramCounts?

    public init(labels: [ImpactLabel], value: Double = 0, histogram: HistogramCounts? = nil) {
        self.labels = labels
        self.value = value
        self.histogram = histogram
    }
}

/// A histogram sample: `count`, `sum` and the cumulative count at each upper bound `le`, in the
/// order sent (+Inf is `Double.infinity`, written back as the string "+Inf").
public struct HistogramCounts: Sendable, Equatable {
    public var count: Double
    public var sum: Double
    public var bounds: [Double]
    public var counts: [Double]

    public init(count: Double, sum: Double, bounds: [Double], counts: [Double]) {
        self.count = count
        self.sum = sum
        self.bounds = bounds
        self.counts = counts
    }
}

/// Why an impact metric was dropped alone while the rest of its post was kept.
public enum ImpactDrop: String, Sendable, CaseIterable, Error {
    /// Breaks the server's schema: a missing or empty name, help or type, a value that is not a
    /// number (or NaN, or beyond the safe integers), a malformed bucket or label, a counter
    /// going down. The server would drop every impact metric of the request for it.
    case invalid
    /// A type other than counter, gauge or histogram: the server stores nothing for it.
    case unknownType = "unknown_type"
    /// A name, label name or label value longer than `[limits] max_name_length`.
    case tooLong = "too_long"
    /// The name already has another type in this window: the first type is kept.
    case typeClash = "type_clash"
    /// A sum would pass the largest number the server accepts (2^53 - 1).
    case overflow
}

/// The `impactMetrics` of one post: what is kept, and how many were dropped and why.
public struct ImpactMetrics: Sendable, Equatable {
    public var metrics: [ImpactMetric] = []
    public var dropped: [ImpactDrop: Int] = [:]

    public init(metrics: [ImpactMetric] = [], dropped: [ImpactDrop: Int] = [:]) {
        self.metrics = metrics
        self.dropped = dropped
    }

    public var isEmpty: Bool { metrics.isEmpty && dropped.isEmpty }

    mutating func drop(_ reason: ImpactDrop, _ n: Int = 1) {
        guard n > 0 else { return }
        dropped[reason, default: 0] += n
    }
}

extension ImpactMetric {
    /// The largest magnitude the server's Joi `number()` accepts.
    static let maxSafe: Double = 9_007_199_254_740_991

    /// Checks one element of `impactMetrics` as the server's Joi schema would, and more where
    /// the server would fail later (a counter going down throws in its registry).
    static func validate(_ v: JSONValue) -> Result<ImpactMetric, ImpactDrop> {
        guard case .object(let members) = v else { return .failure(.invalid) }
        guard let name = nonEmptyString(member(members, "name")), let help = nonEmptyString(member(members, "help")),
              let typeName = nonEmptyString(member(members, "type")) else { return .failure(.invalid) }
        guard case .array(let rawSamples)? = member(members, "samples") else { return .failure(.invalid) }
        guard let type = ImpactType(rawValue: typeName) else {
            // The server validates these as counters and stores nothing; the sample shape still
            // decides whether its whole array would be refused, which no longer matters here.
            return .failure(.unknownType)
        }
        var samples: [ImpactSample] = []
        samples.reserveCapacity(rawSamples.count)
        for raw in rawSamples {
            guard case .object(let s) = raw, let labels = labels(member(s, "labels")) else { return .failure(.invalid) }
            if type == .histogram {
                guard let count = number(member(s, "count")), let sum = number(member(s, "sum")),
                      let h = buckets(member(s, "buckets"), count: count, sum: sum) else { return .failure(.invalid) }
                samples.append(ImpactSample(labels: labels, histogram: h))
            } else {
                guard let value = number(member(s, "value")) else { return .failure(.invalid) }
                // prom-client throws on a negative increment, which aborts the rest of the array.
                if type == .counter, value < 0 { return .failure(.invalid) }
                samples.append(ImpactSample(labels: labels, value: value))
            }
        }
        return .success(ImpactMetric(name: name, help: help, type: type, samples: samples))
    }

    /// The last member named `key`, as JavaScript's JSON.parse keeps it.
    static func member(_ members: [(String, JSONValue)], _ key: String) -> JSONValue? {
        members.last(where: { $0.0 == key })?.1
    }

    /// Joi `string()`: a JSON string, not empty (numbers are not converted).
    static func nonEmptyString(_ v: JSONValue?) -> String? {
        guard case .string(let s)? = v, !s.isEmpty else { return nil }
        return s
    }

    /// Joi `number()`: a number, or a string holding a decimal number; finite and within the
    /// safe integers.
    static func number(_ v: JSONValue?) -> Double? {
        let d: Double
        switch v {
        case .number(let n)?: d = n
        case .string(let s)?:
            guard let parsed = decimal(s) else { return nil }
            d = parsed
        default: return nil
        }
        guard d.isFinite, abs(d) <= maxSafe else { return nil }
        return d == 0 ? 0 : d // -0 is 0
    }

    /// A decimal number in text (optional sign, digits, fraction, exponent; surrounding spaces).
    static func decimal(_ s: String) -> Double? {
        let t = s.trimmingASCIIWhitespace()
        var sawDigit = false
        var i = t.utf8.startIndex
        let u = t.utf8
        if i < u.endIndex, u[i] == UInt8(ascii: "+") || u[i] == UInt8(ascii: "-") { i = u.index(after: i) }
        while i < u.endIndex, u[i] &- 48 < 10 { sawDigit = true; i = u.index(after: i) }
        if i < u.endIndex, u[i] == UInt8(ascii: ".") {
            i = u.index(after: i)
            while i < u.endIndex, u[i] &- 48 < 10 { sawDigit = true; i = u.index(after: i) }
        }
        guard sawDigit else { return nil }
        if i < u.endIndex, u[i] | 0x20 == UInt8(ascii: "e") {
            i = u.index(after: i)
            if i < u.endIndex, u[i] == UInt8(ascii: "+") || u[i] == UInt8(ascii: "-") { i = u.index(after: i) }
            var expDigit = false
            while i < u.endIndex, u[i] &- 48 < 10 { expDigit = true; i = u.index(after: i) }
            guard expDigit else { return nil }
        }
        guard i == u.endIndex else { return nil }
        return Double(t)
    }

    /// `labels`: absent or an object of non-empty strings or numbers, keys not empty. Sorted by
    /// key; a key sent twice keeps its last value.
    static func labels(_ v: JSONValue?) -> [ImpactLabel]? {
        guard let v else { return [] }
        guard case .object(let members) = v else { return nil }
        var out: [ImpactLabel] = []
        out.reserveCapacity(members.count)
        for (key, value) in members {
            guard !key.isEmpty else { return nil }
            let text: String
            switch value {
            case .string(let s) where !s.isEmpty: text = s
            case .number(let n) where n.isFinite && abs(n) <= maxSafe: text = javascriptText(n)
            default: return nil
            }
            out.removeAll { $0.key == key }
            out.append(ImpactLabel(key, text))
        }
        out.sort()
        return out
    }

    /// `buckets`: an array of `{le, count}`, `le` a number or "+Inf", each bound once.
    static func buckets(_ v: JSONValue?, count: Double, sum: Double) -> HistogramCounts? {
        guard case .array(let items)? = v else { return nil }
        var bounds: [Double] = [], counts: [Double] = []
        for item in items {
            guard case .object(let b) = item, let c = number(member(b, "count")) else { return nil }
            let le: Double
            switch member(b, "le") {
            case .string("+Inf")?: le = .infinity
            case let other: guard let n = number(other) else { return nil }; le = n
            }
            // A bound twice cannot be merged by bound; the server would add both into one.
            if bounds.contains(le) { return nil }
            bounds.append(le)
            counts.append(c)
        }
        return HistogramCounts(count: count, sum: sum, bounds: bounds, counts: counts)
    }

    /// How JavaScript writes a number as text (`String(n)`), for a number sent as a label
    /// value: the shortest digits that read back as the number, in JavaScript's layout.
    static func javascriptText(_ d: Double) -> String {
        if d == d.rounded(), abs(d) <= maxSafe { return String(Int64(d)) }
        // Swift's description has the same shortest digits; only the layout differs.
        let text = d.magnitude.description
        let parts = text.split(separator: "e")
        let mantissa = parts[0]
        var exponent = parts.count > 1 ? Int(parts[1].drop(while: { $0 == "+" }))! : 0
        let dot = mantissa.firstIndex(of: ".") ?? mantissa.endIndex
        exponent += mantissa.distance(from: mantissa.startIndex, to: dot) - 1
        var digits = Array(mantissa.filter { $0 != "." })
        while digits.count > 1, digits.last == "0" { digits.removeLast() }
        while digits.count > 1, digits.first == "0" { digits.removeFirst(); exponent -= 1 }
        let k = digits.count, n = exponent + 1
        var out = d < 0 ? "-" : ""
        if k <= n, n <= 21 {
            out += String(digits) + String(repeating: "0", count: n - k)
        } else if 0 < n, n <= 21 {
            out += String(digits[..<n]) + "." + String(digits[n...])
        } else if -6 < n, n <= 0 {
            out += "0." + String(repeating: "0", count: -n) + String(digits)
        } else {
            out += String(digits[0]) + (k > 1 ? "." + String(digits[1...]) : "") + "e" + (n - 1 < 0 ? "-" : "+") + String(abs(n - 1))
        }
        return out
    }
}

/// A JSON value as a small tree: how an impact metric is read before it is checked, so that
/// a bad one is dropped alone. Depth is bounded by the shape of a metric.
indirect enum JSONValue: Sendable {
    case object([(String, JSONValue)])
    case array([JSONValue])
    case string(String)
    case number(Double)
    case bool(Bool)
    case null
    /// Nested deeper than any part of an impact metric: read past, not kept.
    case deep
}

extension Decoding {
    /// `impactMetrics`: each element read and checked alone; a bad one is counted and dropped,
    /// never failing the post (the server only logs a bad array). Only broken JSON stops here.
    mutating func impactMetrics() throws(DecodeStop) -> ImpactMetrics {
        var result = ImpactMetrics()
        switch try kind() {
        case .array: break
        case .null:
            try run { s throws(JSONSyntaxError) in try s.readNull() }
            return result
        default:
            // Not an array: the server's Joi refuses it whole and logs; counted here.
            try run { s throws(JSONSyntaxError) in try s.skipValue() }
            result.drop(.invalid)
            return result
        }
        try forEachElement { d throws(DecodeStop) in
            switch ImpactMetric.validate(try d.value(depth: 0)) {
            case .success(let m): result.metrics.append(m)
            case .failure(let reason): result.drop(reason)
            }
        }
        return result
    }

    /// The next value as a tree, down to the depth an impact metric uses.
    mutating func value(depth: Int) throws(DecodeStop) -> JSONValue {
        switch try kind() {
        case .string: return .string(try run { s throws(JSONSyntaxError) in try s.readString() })
        case .number: return .number(try run { s throws(JSONSyntaxError) in try s.readNumber() }.doubleValue)
        case .bool: return .bool(try run { s throws(JSONSyntaxError) in try s.readBool() })
        case .null:
            try run { s throws(JSONSyntaxError) in try s.readNull() }
            return .null
        case .object where depth >= 6, .array where depth >= 6:
            try run { s throws(JSONSyntaxError) in try s.skipValue() }
            return .deep
        case .array:
            var items: [JSONValue] = []
            try forEachElement { d throws(DecodeStop) in items.append(try d.value(depth: depth + 1)) }
            return .array(items)
        case .object:
            var members: [(String, JSONValue)] = []
            try run { s throws(JSONSyntaxError) in try s.expect(UInt8(ascii: "{")) }
            var first = true
            while try run({ s throws(JSONSyntaxError) in try s.nextMember(first: first) }) {
                first = false
                let key = try run { s throws(JSONSyntaxError) in let k = try s.readString(); try s.expect(UInt8(ascii: ":")); return k }
                members.append((key, try value(depth: depth + 1)))
            }
            return .object(members)
        }
    }
}
