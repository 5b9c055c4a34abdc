/// The open window's impact metrics, merged by series: (token, appName, metric name, label
/// set sorted by key). Counters are summed, a gauge keeps the last value received, a histogram
/// sums `count`, `sum` and each cumulative bucket by `le` when the bucket layouts agree and
/// keeps a different layout apart (a union of layouts would break cumulativity). One name has
/// one type per window: the first type seen wins, the server's registry holds no other.
public struct ImpactTable: Sendable {
    public struct SeriesKey: Hashable, Sendable {
        public var token: String
        public var appName: String
        public var name: String
        public var labels: [ImpactLabel]

        /// One word from `NameHash` for the hasher, as `Window.GroupKey` does: SipHash over
        /// every string of the key was most of the cost of merging a sample.
        public func hash(into hasher: inout Hasher) {
            var h = NameHash.fold(NameHash.fold(NameHash.of(token), NameHash.of(appName)), NameHash.of(name))
            for l in labels { h = NameHash.fold(NameHash.fold(h, NameHash.of(l.key)), NameHash.of(l.value)) }
            hasher.combine(h)
        }
    }

    public struct Series: Sendable, Equatable {
        /// A counter's sum or a gauge's last value.
        public var value: Double
        /// A histogram's sums, one per bucket layout seen, in the order first seen.
        public var parts: [HistogramCounts]
        /// When it last changed, in merge order (gauges from two apps are written oldest first).
        public var sequence: Int
    }

    /// Per metric name: its type and help as first seen in this window.
    public struct Definition: Sendable, Equatable {
        public var type: ImpactType
        public var help: String
    }

    public private(set) var definitions: [String: Definition] = [:]
    public private(set) var series: [SeriesKey: Series] = [:]
    /// Series, plus each histogram layout kept apart: what counts against `[limits] max_keys`.
    public private(set) var keyCount = 0
    private var sequence = 0

    public init() {}

    public var isEmpty: Bool { series.isEmpty }

    /// The type a metric would be merged as in this window, or nil when it clashes.
    private func accepts(_ m: ImpactMetric, pending: [String: ImpactType]) -> Bool {
        (definitions[m.name]?.type ?? pending[m.name] ?? m.type) == m.type
    }

    /// How many keys merging `metrics` would add.
    func newKeys(_ metrics: [ImpactMetric], token: String, appName: String) -> Int {
        var pending: [String: ImpactType] = [:]
        var seen = Set<SeriesKey>()
        var layouts: [SeriesKey: [[Double]]] = [:]
        var n = 0
        for m in metrics where !m.samples.isEmpty && accepts(m, pending: pending) {
            pending[m.name] = m.type
            for s in m.samples {
                let key = SeriesKey(token: token, appName: appName, name: m.name, labels: s.labels)
                let existing = series[key]
                if existing == nil, seen.insert(key).inserted { n += 1 }
                if let h = s.histogram {
                    let known = (existing?.parts.map(\.bounds) ?? []) + layouts[key, default: []]
                    if !known.contains(h.bounds) {
                        if !known.isEmpty { n += 1 }
                        layouts[key, default: []].append(h.bounds)
                    }
                }
            }
        }
        return n
    }

    /// Merges a post's impact metrics; returns those dropped here (type clashes, overflows).
    mutating func merge(_ metrics: [ImpactMetric], token: String, appName: String) -> [ImpactDrop: Int] {
        var dropped: [ImpactDrop: Int] = [:]
        // A metric without samples (a gauge not set since the SDK's last send) carries nothing,
        // and does not claim its name's type for the window.
        for m in metrics where !m.samples.isEmpty {
            if let d = definitions[m.name], d.type != m.type {
                dropped[.typeClash, default: 0] += 1
                continue
            }
            if definitions[m.name] == nil { definitions[m.name] = Definition(type: m.type, help: m.help) }
            var overflowed = false
            for s in m.samples {
                sequence += 1
                let key = SeriesKey(token: token, appName: appName, name: m.name, labels: s.labels)
                if series[key] == nil { keyCount += 1 }
                let (overflow, apart) = Self.update(&series[key, default: Series(value: 0, parts: [], sequence: 0)], m.type, s,
                                                    sequence: sequence)
                if apart { keyCount += 1 }
                overflowed = overflowed || overflow
            }
            if overflowed { dropped[.overflow, default: 0] += 1 }
        }
        return dropped
    }

    /// Applies one sample: whether a sum had to stop at the largest safe number, and whether
    /// a histogram layout was kept apart (an extra key).
    private static func update(_ s: inout Series, _ type: ImpactType, _ sample: ImpactSample,
                               sequence: Int) -> (overflow: Bool, apart: Bool) {
        s.sequence = sequence
        switch type {
        case .counter:
            return (add(&s.value, sample.value), false)
        case .gauge:
            s.value = sample.value
            return (false, false)
        case .histogram:
            let h = sample.histogram!
            guard let i = s.parts.firstIndex(where: { $0.bounds == h.bounds }) else {
                s.parts.append(h)
                return (false, s.parts.count > 1)
            }
            var overflow = add(&s.parts[i].count, h.count)
            overflow = add(&s.parts[i].sum, h.sum) || overflow
            for j in h.counts.indices { overflow = add(&s.parts[i].counts[j], h.counts[j]) || overflow }
            return (overflow, false)
        }
    }

    /// `a += b`, stopping at the server's largest safe number; true when it had to stop.
    private static func add(_ a: inout Double, _ b: Double) -> Bool {
        let r = a + b
        guard abs(r) > ImpactMetric.maxSafe else { a = r; return false }
        a = r < 0 ? -ImpactMetric.maxSafe : ImpactMetric.maxSafe
        return true
    }
}
