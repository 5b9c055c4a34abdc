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

    /// A metric read from its JSON object (`Decoding.impactMetric`), checked as the server's
    /// Joi schema would check it, and more where the server would fail later (a counter going
    /// down throws in its registry).
    static func check(_ m: Draft) -> Result<ImpactMetric, ImpactDrop> {
        guard case .ok(let name) = m.name, case .ok(let help) = m.help, case .ok(let typeName) = m.type,
              case .ok(let drafts) = m.samples else { return .failure(.invalid) }
        guard let type = ImpactType(rawValue: typeName) else {
            // The server validates these as counters and stores nothing.
            return .failure(.unknownType)
        }
        var samples: [ImpactSample] = []
        samples.reserveCapacity(drafts.count)
        for d in drafts {
            let labels: [ImpactLabel]
            switch d.labels {
            case .absent: labels = []
            case .bad: return .failure(.invalid)
            case .ok(let l): labels = l
            }
            if type == .histogram {
                guard case .ok(let count) = d.count, case .ok(let sum) = d.sum, case .ok(let b) = d.buckets else { return .failure(.invalid) }
                samples.append(ImpactSample(labels: labels, histogram: HistogramCounts(count: count, sum: sum, bounds: b.bounds, counts: b.counts)))
            } else {
                guard case .ok(let value) = d.value else { return .failure(.invalid) }
                // prom-client throws on a negative increment, which aborts the rest of the array.
                if type == .counter, value < 0 { return .failure(.invalid) }
                samples.append(ImpactSample(labels: labels, value: value))
            }
        }
        return .success(ImpactMetric(name: name, help: help, type: type, samples: samples))
    }

    /// A member as read: absent, present but not what the schema allows, or its value. A
    /// member sent twice counts as its last (JSON.parse keeps the last).
    enum Field<T> {
        case absent, bad, ok(T)
    }

    struct Draft {
        var name: Field<String> = .absent
        var help: Field<String> = .absent
        var type: Field<String> = .absent
        var samples: Field<[SampleDraft]> = .absent
    }

    /// A sample read before the metric's type is known (members come in any order).
    struct SampleDraft {
        var labels: Field<[ImpactLabel]> = .absent
        var value: Field<Double> = .absent
        var count: Field<Double> = .absent
        var sum: Field<Double> = .absent
        var buckets: Field<(bounds: [Double], counts: [Double])> = .absent
    }

    /// Joi `number()`: a finite number within the safe integers (-0 is 0).
    static func safe(_ d: Double) -> Double? {
        guard d.isFinite, abs(d) <= maxSafe else { return nil }
        return d == 0 ? 0 : d
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

extension Decoding {
    /// `impactMetrics`: each element read and checked alone; a bad one is counted and dropped,
    /// never failing the post (the server only logs a bad array). Only broken JSON stops here.
    /// Read straight into metrics, without a tree: this runs for every post that has them.
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
            guard try d.kind() == .object else {
                try d.run { s throws(JSONSyntaxError) in try s.skipValue() }
                result.drop(.invalid)
                return
            }
            switch ImpactMetric.check(try d.impactMetric()) {
            case .success(let m): result.metrics.append(m)
            case .failure(let reason): result.drop(reason)
            }
        }
        return result
    }

    /// Calls `member` with each key of the object that comes next; it must read the value.
    private mutating func eachMember(_ member: (inout Decoding, Slice<UnsafeBufferPointer<UInt8>>, Bool) throws(DecodeStop) -> Void) throws(DecodeStop) {
        try run { s throws(JSONSyntaxError) in try s.expect(UInt8(ascii: "{")) }
        var first = true
        while try run({ s throws(JSONSyntaxError) in try s.nextMember(first: first) }) {
            first = false
            let key = try run { s throws(JSONSyntaxError) in try s.readKey() }
            try member(&self, key.raw, key.escaped)
        }
    }

    private func isKey(_ raw: Slice<UnsafeBufferPointer<UInt8>>, _ escaped: Bool, _ name: StaticString) -> Bool {
        keyIs((raw, escaped), name)
    }

    private mutating func skip() throws(DecodeStop) { try run { s throws(JSONSyntaxError) in try s.skipValue() } }

    /// One metric object, its members in any order.
    private mutating func impactMetric() throws(DecodeStop) -> ImpactMetric.Draft {
        var m = ImpactMetric.Draft()
        try eachMember { d, key, escaped throws(DecodeStop) in
            if d.isKey(key, escaped, "name") { m.name = try d.impactString() }
            else if d.isKey(key, escaped, "help") { m.help = try d.impactString() }
            else if d.isKey(key, escaped, "type") { m.type = try d.impactString() }
            else if d.isKey(key, escaped, "samples") { m.samples = try d.impactSamples() }
            else { try d.skip() }
        }
        return m
    }

    /// Joi `string()`: a JSON string, not empty (numbers are not converted).
    private mutating func impactString() throws(DecodeStop) -> ImpactMetric.Field<String> {
        guard try kind() == .string else { try skip(); return .bad }
        let s = try run { s throws(JSONSyntaxError) in try s.readString() }
        return s.isEmpty ? .bad : .ok(s)
    }

    /// Joi `number()`: a number, or a string holding a decimal number; finite, within the safe
    /// integers.
    private mutating func impactNumber() throws(DecodeStop) -> ImpactMetric.Field<Double> {
        switch try kind() {
        case .number:
            let d = try run { s throws(JSONSyntaxError) in try s.readNumber() }.doubleValue
            return ImpactMetric.safe(d).map { .ok($0) } ?? .bad
        case .string:
            let text = try run { s throws(JSONSyntaxError) in try s.readString() }
            return ImpactMetric.decimal(text).flatMap(ImpactMetric.safe).map { .ok($0) } ?? .bad
        default:
            try skip()
            return .bad
        }
    }

    private mutating func impactSamples() throws(DecodeStop) -> ImpactMetric.Field<[ImpactMetric.SampleDraft]> {
        guard try kind() == .array else { try skip(); return .bad }
        var samples: [ImpactMetric.SampleDraft] = []
        var bad = false
        try forEachElement { d throws(DecodeStop) in
            guard try d.kind() == .object else { try d.skip(); bad = true; return }
            var s = ImpactMetric.SampleDraft()
            try d.eachMember { d, key, escaped throws(DecodeStop) in
                if d.isKey(key, escaped, "labels") { s.labels = try d.impactLabels() }
                else if d.isKey(key, escaped, "value") { s.value = try d.impactNumber() }
                else if d.isKey(key, escaped, "count") { s.count = try d.impactNumber() }
                else if d.isKey(key, escaped, "sum") { s.sum = try d.impactNumber() }
                else if d.isKey(key, escaped, "buckets") { s.buckets = try d.impactBuckets() }
                else { try d.skip() }
            }
            samples.append(s)
        }
        return bad ? .bad : .ok(samples)
    }

    /// `labels`: an object of non-empty strings or numbers (kept as their JavaScript text),
    /// keys not empty. Sorted by key; a key sent twice keeps its last value.
    private mutating func impactLabels() throws(DecodeStop) -> ImpactMetric.Field<[ImpactLabel]> {
        guard try kind() == .object else { try skip(); return .bad }
        var out: [ImpactLabel] = []
        var bad = false
        try run { s throws(JSONSyntaxError) in try s.expect(UInt8(ascii: "{")) }
        var first = true
        while try run({ s throws(JSONSyntaxError) in try s.nextMember(first: first) }) {
            first = false
            let key = try run { s throws(JSONSyntaxError) in let k = try s.readString(); try s.expect(UInt8(ascii: ":")); return k }
            let text: String?
            switch try kind() {
            case .string:
                let s = try run { s throws(JSONSyntaxError) in try s.readString() }
                text = s.isEmpty ? nil : s
            case .number:
                let d = try run { s throws(JSONSyntaxError) in try s.readNumber() }.doubleValue
                text = ImpactMetric.safe(d).map(ImpactMetric.javascriptText)
            default:
                try skip()
                text = nil
            }
            guard !key.isEmpty, let text else { bad = true; continue }
            if let i = out.firstIndex(where: { $0.key == key }) { out.remove(at: i) }
            out.append(ImpactLabel(key, text))
        }
        if bad { return .bad }
        out.sort()
        return .ok(out)
    }

    /// `buckets`: an array of `{le, count}`, `le` a number or "+Inf", each bound once (a bound
    /// twice could not be merged by bound; the server would add both into one).
    private mutating func impactBuckets() throws(DecodeStop) -> ImpactMetric.Field<(bounds: [Double], counts: [Double])> {
        guard try kind() == .array else { try skip(); return .bad }
        var bounds: [Double] = [], counts: [Double] = []
        var bad = false
        var seen: Set<Double>? // past a few bounds, so that a hostile sample costs no n² search
        func isNew(_ b: Double) -> Bool {
            if bounds.count < 32 { return !bounds.contains(b) }
            if seen == nil { seen = Set(bounds) }
            return seen!.insert(b).inserted
        }
        try forEachElement { d throws(DecodeStop) in
            guard try d.kind() == .object else { try d.skip(); bad = true; return }
            var le: ImpactMetric.Field<Double> = .absent, count: ImpactMetric.Field<Double> = .absent
            try d.eachMember { d, key, escaped throws(DecodeStop) in
                if d.isKey(key, escaped, "le") {
                    if try d.kind() == .string {
                        let text = try d.run { s throws(JSONSyntaxError) in try s.readString() }
                        le = text == "+Inf" ? .ok(.infinity) : ImpactMetric.decimal(text).flatMap(ImpactMetric.safe).map { .ok($0) } ?? .bad
                    } else {
                        le = try d.impactNumber()
                    }
                } else if d.isKey(key, escaped, "count") {
                    count = try d.impactNumber()
                } else {
                    try d.skip()
                }
            }
            guard case .ok(let bound) = le, case .ok(let c) = count, isNew(bound) else { bad = true; return }
            bounds.append(bound)
            counts.append(c)
        }
        return bad ? .bad : .ok((bounds, counts))
    }
}
