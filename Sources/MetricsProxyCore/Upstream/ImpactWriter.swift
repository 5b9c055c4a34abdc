/// Writes a closed window's impact metrics as the JSON the Unleash server takes: one object per
/// metric name (`name`, `help`, `type`, `samples`), each series once per request.
///
/// A series can have more than one thing to send: a histogram layout kept apart, or the same
/// labels under two appNames (the server keys series by name and labels alone). Those go in
/// *rounds*: round 0 holds the first of each, round 1 the second, and so on; each round goes in
/// requests of its own, sent in order, so that no request carries a series twice and a gauge's
/// newest value is applied last.
struct ImpactWriter {
    let table: ImpactTable
    let maxFragment: Int

    /// The series of each token, then of each of its apps: found in one pass over the table.
    func byToken() -> [String: [String: [(ImpactTable.SeriesKey, ImpactTable.Series)]]] {
        var out: [String: [String: [(ImpactTable.SeriesKey, ImpactTable.Series)]]] = [:]
        for (key, s) in table.series { out[key.token, default: [:]][key.appName, default: []].append((key, s)) }
        return out
    }

    /// Metric fragments by round for `series` (one token's, or one app's). With `splitUnsafe`,
    /// metrics with a label value the bulk endpoint refuses come back apart.
    func rounds(_ series: [(ImpactTable.SeriesKey, ImpactTable.Series)], splitUnsafe: Bool)
        -> (safe: [[ArraySlice<UInt8>]], unsafe: [[ArraySlice<UInt8>]], unsafeApps: [String]) {
        struct Occurrence {
            var key: ImpactTable.SeriesKey
            var series: ImpactTable.Series
            var part: Int
        }
        var byName: [String: [Occurrence]] = [:]
        for (key, s) in series {
            if s.parts.isEmpty {
                byName[key.name, default: []].append(Occurrence(key: key, series: s, part: 0))
            } else {
                for i in s.parts.indices { byName[key.name, default: []].append(Occurrence(key: key, series: s, part: i)) }
            }
        }
        var safe: [[ArraySlice<UInt8>]] = [], unsafe: [[ArraySlice<UInt8>]] = []
        var unsafeApps: [String] = []
        for name in byName.keys.sorted() {
            guard let definition = table.definitions[name] else { continue }
            // Oldest change first, so that of two gauges with the same labels the newest goes last.
            let occurrences = byName[name]!.sorted { a, b in
                if a.key.labels != b.key.labels { return a.key.labels.lexicographicallyPrecedes(b.key.labels) }
                return (a.series.sequence, a.key.appName, a.part) < (b.series.sequence, b.key.appName, b.part)
            }
            var samplesByRound: [[[UInt8]]] = []
            var previous: [ImpactLabel]?
            var round = 0
            for o in occurrences {
                round = o.key.labels == previous ? round + 1 : 0
                previous = o.key.labels
                if samplesByRound.count <= round { samplesByRound.append([]) }
                samplesByRound[round].append(sample(o.key.labels, o.series, part: o.part, type: definition.type))
            }
            let isUnsafe = splitUnsafe && occurrences.contains { o in o.key.labels.contains { Self.bulkRefuses($0.value) } }
            if isUnsafe { unsafeApps.append(occurrences.map(\.key.appName).min()!) }
            for (r, samples) in samplesByRound.enumerated() {
                let fragments = metric(name, definition, samples)
                if isUnsafe {
                    while unsafe.count <= r { unsafe.append([]) }
                    unsafe[r] += fragments
                } else {
                    while safe.count <= r { safe.append([]) }
                    safe[r] += fragments
                }
            }
        }
        return (safe, unsafe, unsafeApps)
    }

    /// `{"name":…,"help":…,"type":…,"samples":[…]}`; more than one object with the same name
    /// when its samples alone would pass `maxFragment`.
    private func metric(_ name: String, _ d: ImpactTable.Definition, _ samples: [[UInt8]]) -> [ArraySlice<UInt8>] {
        var head = JSONWriter(capacity: 96)
        head.beginObject()
        head.key("name"); head.string(name)
        head.key("help"); head.string(d.help)
        head.key("type"); head.string(d.type.rawValue)
        head.key("samples")
        let open = head.bytes + [UInt8(ascii: "[")]
        var out: [ArraySlice<UInt8>] = []
        var body = open
        var count = 0
        for s in samples {
            if count > 0, body.count + 1 + s.count + 2 > maxFragment {
                out.append((body + Array("]}".utf8))[...])
                body = open
                count = 0
            }
            if count > 0 { body.append(UInt8(ascii: ",")) }
            body += s
            count += 1
        }
        out.append((body + Array("]}".utf8))[...])
        return out
    }

    private func sample(_ labels: [ImpactLabel], _ s: ImpactTable.Series, part: Int, type: ImpactType) -> [UInt8] {
        var w = JSONWriter(capacity: 128)
        w.beginObject()
        w.key("labels"); w.beginObject()
        for l in labels { w.key(l.key); w.string(l.value) }
        w.endObject()
        if type == .histogram {
            let h = s.parts[part]
            w.key("count"); w.double(h.count)
            w.key("sum"); w.double(h.sum)
            w.key("buckets"); w.beginArray()
            for (le, c) in zip(h.bounds, h.counts) {
                w.beginObject()
                w.key("le")
                if le == .infinity { w.string("+Inf") } else { w.double(le) }
                w.key("count"); w.double(c)
                w.endObject()
            }
            w.endArray()
        } else {
            w.key("value"); w.double(s.value)
        }
        w.endObject()
        return w.bytes
    }

    /// Whether the bulk endpoint answers 400 for this label value: its schema allows a string
    /// or a number, and with the server's type coercion a string JavaScript reads as a number
    /// (`"200"`, `" 1e3 "`, `"0x1F"`, `"Infinity"`, `" "`) matches both, which `oneOf` refuses.
    static func bulkRefuses(_ value: String) -> Bool {
        // JavaScript's white space and line terminators, which Number() trims.
        func isSpace(_ c: Unicode.Scalar) -> Bool {
            switch c.value {
            case 0x09...0x0D, 0x20, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0xFEFF: return true
            default: return false
            }
        }
        guard !value.isEmpty else { return false }
        var scalars = Substring(value).unicodeScalars[...]
        while let f = scalars.first, isSpace(f) { scalars.removeFirst() }
        while let l = scalars.last, isSpace(l) { scalars.removeLast() }
        let t = String(String.UnicodeScalarView(scalars))
        if t.isEmpty { return true } // Number("  ") is 0
        if ["Infinity", "+Infinity", "-Infinity"].contains(t) { return true }
        let u = Array(t.utf8)
        if u.count > 2, u[0] == UInt8(ascii: "0") {
            let digits: ((UInt8) -> Bool)?
            switch u[1] | 0x20 {
            case UInt8(ascii: "x"): digits = { hexValue($0) != nil }
            case UInt8(ascii: "o"): digits = { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "7") }
            case UInt8(ascii: "b"): digits = { $0 == UInt8(ascii: "0") || $0 == UInt8(ascii: "1") }
            default: digits = nil
            }
            if let digits { return u[2...].allSatisfy(digits) }
        }
        return ImpactMetric.decimal(t) != nil
    }
}
