/// Splits a batch the upstream answered 413 into two halves of the same shape: bulk bodies by
/// their `applications`, `metrics` and `impactMetrics` entries, single-app bodies by their
/// toggles and impact metrics. Also parts a refused batch's flag counts from its impact metrics.
public enum BatchSplitter {
    /// Two halves, or the batch alone when it holds a single entry and cannot be split.
    public static func split(_ batch: Batch) -> [Batch] {
        let halves: (ArraySlice<UInt8>, ArraySlice<UInt8>)?
        if batch.path.hasSuffix("/bulk") {
            halves = splitBulk(batch.body)
        } else {
            halves = splitSingleApp(batch.body)
        }
        guard let (a, b) = halves else { return [batch] }
        var first = batch, second = batch
        first.body = Array(a); second.body = Array(b)
        first.id += "a"; second.id += "b"
        first.entries = (batch.entries + 1) / 2; second.entries = batch.entries / 2
        return [first, second]
    }

    /// The member at `path` (an array or an object): its value's byte range and those of its
    /// elements (or members).
    static func members(_ body: UnsafeBufferPointer<UInt8>, path: [StaticString]) -> Container? {
        var s = JSONScanner(body)
        func descend(_ depth: Int) throws(JSONSyntaxError) -> Container? {
            guard try s.peekKind() == .object else { return nil }
            try s.expect(UInt8(ascii: "{"))
            var found: Container?
            var first = true
            while try s.nextMember(first: first) {
                first = false
                let key = try s.readKey()
                if found == nil, !key.escaped, key.raw.equals(path[depth]) {
                    if depth + 1 < path.count {
                        found = try descend(depth + 1)
                    } else {
                        found = try elements()
                    }
                } else {
                    try s.skipValue()
                }
            }
            return found
        }
        func elements() throws(JSONSyntaxError) -> Container? {
            var out: [Range<Int>] = []
            let kind = try s.peekKind()
            guard kind == .array || kind == .object else { try s.skipValue(); return nil }
            let isArray = kind == .array
            s.skipWhitespace()
            let open = s.position
            try s.expect(isArray ? UInt8(ascii: "[") : UInt8(ascii: "{"))
            var first = true
            while try (isArray ? s.nextElement(first: first) : s.nextMember(first: first)) {
                first = false
                s.skipWhitespace()
                let start = s.position
                if !isArray { _ = try s.readKey() }
                try s.skipValue()
                out.append(start..<s.position)
            }
            return Container(value: open..<s.position, elements: out)
        }
        return (try? descend(0)) ?? nil
    }

    struct Container {
        var value: Range<Int>
        var elements: [Range<Int>]
    }

    /// A bulk body's parts: applications, metrics and impact metrics, each a list of byte ranges.
    static func bulkParts(_ body: [UInt8]) -> (apps: [Range<Int>], metrics: [Range<Int>], impact: [Range<Int>])? {
        body.withUnsafeBufferPointer { p in
            guard let apps = members(p, path: ["applications"]), let metrics = members(p, path: ["metrics"]) else { return nil }
            return (apps.elements, metrics.elements, members(p, path: ["impactMetrics"])?.elements ?? [])
        }
    }

    static func bulkBody(_ body: [UInt8], apps: ArraySlice<Range<Int>>, metrics: ArraySlice<Range<Int>>, impact: ArraySlice<Range<Int>>) -> [UInt8] {
        func list(_ ranges: ArraySlice<Range<Int>>) -> [UInt8] { Array(ranges.map { body[$0] }.joined(separator: [UInt8(ascii: ",")])) }
        var w = Array(#"{"applications":["#.utf8) + list(apps) + Array(#"],"metrics":["#.utf8) + list(metrics)
        if !impact.isEmpty { w += Array(#"],"impactMetrics":["#.utf8) + list(impact) }
        return w + Array("]}".utf8)
    }

    static func splitBulk(_ body: [UInt8]) -> (ArraySlice<UInt8>, ArraySlice<UInt8>)? {
        guard let (apps, metrics, impact) = bulkParts(body) else { return nil }
        let all = apps.map { (0, $0) } + metrics.map { (1, $0) } + impact.map { (2, $0) }
        guard all.count >= 2 else { return nil }
        let mid = all.count / 2
        func build(_ part: ArraySlice<(Int, Range<Int>)>) -> ArraySlice<UInt8> {
            func of(_ k: Int) -> ArraySlice<Range<Int>> { part.filter { $0.0 == k }.map(\.1)[...] }
            return bulkBody(body, apps: of(0), metrics: of(1), impact: of(2))[...]
        }
        return (build(all[..<mid]), build(all[mid...]))
    }

    /// A single post's toggles (the object inside `bucket`) and impact metrics.
    static func singleParts(_ body: [UInt8]) -> (toggles: Container, impact: Container?)? {
        body.withUnsafeBufferPointer { p in
            guard let toggles = members(p, path: ["bucket", "toggles"]) else { return nil }
            return (toggles, members(p, path: ["impactMetrics"]))
        }
    }

    static func singleBody(_ body: [UInt8], toggles: Range<Int>, impact: Range<Int>?, keep: ArraySlice<Range<Int>>, keepImpact: ArraySlice<Range<Int>>) -> [UInt8] {
        func list(_ ranges: ArraySlice<Range<Int>>) -> [UInt8] { Array(ranges.map { body[$0] }.joined(separator: [UInt8(ascii: ",")])) }
        var w = Array(body[..<toggles.lowerBound]) + [UInt8(ascii: "{")] + list(keep) + [UInt8(ascii: "}")]
        if let impact {
            w += Array(body[toggles.upperBound..<impact.lowerBound]) + [UInt8(ascii: "[")] + list(keepImpact) + [UInt8(ascii: "]")]
            w += Array(body[impact.upperBound...])
        } else {
            w += Array(body[toggles.upperBound...])
        }
        return w
    }

    static func splitSingleApp(_ body: [UInt8]) -> (ArraySlice<UInt8>, ArraySlice<UInt8>)? {
        guard let (toggles, impact) = singleParts(body) else { return nil }
        let all = toggles.elements.map { (false, $0) } + (impact?.elements ?? []).map { (true, $0) }
        guard all.count >= 2 else { return nil }
        let mid = all.count / 2
        func build(_ part: ArraySlice<(Bool, Range<Int>)>) -> ArraySlice<UInt8> {
            singleBody(body, toggles: toggles.value, impact: impact?.value,
                       keep: part.filter { !$0.0 }.map(\.1)[...], keepImpact: part.filter { $0.0 }.map(\.1)[...])[...]
        }
        return (build(all[..<mid]), build(all[mid...]))
    }

    /// A batch the upstream refused (400) parted into its flag counts and its impact metrics,
    /// so that the flag counts can be sent alone; nil when it does not hold both.
    public static func separateImpact(_ batch: Batch) -> (flags: Batch, impact: Batch)? {
        let bodies: ([UInt8], [UInt8])
        if batch.path.hasSuffix("/bulk") {
            guard let (apps, metrics, impact) = bulkParts(batch.body), !impact.isEmpty, !(apps.isEmpty && metrics.isEmpty) else { return nil }
            bodies = (bulkBody(batch.body, apps: apps[...], metrics: metrics[...], impact: []),
                      bulkBody(batch.body, apps: [], metrics: [], impact: impact[...]))
        } else {
            guard let (toggles, impact) = singleParts(batch.body), let impact, !impact.elements.isEmpty,
                  !toggles.elements.isEmpty else { return nil }
            bodies = (singleBody(batch.body, toggles: toggles.value, impact: impact.value, keep: toggles.elements[...], keepImpact: []),
                      singleBody(batch.body, toggles: toggles.value, impact: impact.value, keep: [], keepImpact: impact.elements[...]))
        }
        var flags = batch, impact = batch
        flags.body = bodies.0; flags.id += "f"; flags.attempts = 0
        impact.body = bodies.1; impact.id += "i"
        return (flags, impact)
    }
}
