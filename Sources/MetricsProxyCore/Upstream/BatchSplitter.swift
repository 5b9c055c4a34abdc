/// Splits a batch the upstream answered 413 into two halves of the same shape: bulk bodies by
/// their `applications` and `metrics` entries, single-app bodies by their toggles.
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

    /// Byte ranges of the elements of the top-level array or object member `name`.
    static func members(_ body: UnsafeBufferPointer<UInt8>, path: [StaticString]) -> [Range<Int>]? {
        var s = JSONScanner(body)
        func descend(_ depth: Int) throws(JSONSyntaxError) -> [Range<Int>]? {
            guard try s.peekKind() == .object else { return nil }
            try s.expect(UInt8(ascii: "{"))
            var found: [Range<Int>]?
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
        func elements() throws(JSONSyntaxError) -> [Range<Int>] {
            var out: [Range<Int>] = []
            let kind = try s.peekKind()
            let isArray = kind == .array
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
            return out
        }
        return try? descend(0)
    }

    static func splitBulk(_ body: [UInt8]) -> (ArraySlice<UInt8>, ArraySlice<UInt8>)? {
        body.withUnsafeBufferPointer { p -> (ArraySlice<UInt8>, ArraySlice<UInt8>)? in
            guard let apps = members(p, path: ["applications"]), let metrics = members(p, path: ["metrics"]) else { return nil }
            let all = apps.map { (true, $0) } + metrics.map { (false, $0) }
            guard all.count >= 2 else { return nil }
            let mid = all.count / 2
            func build(_ part: ArraySlice<(Bool, Range<Int>)>) -> ArraySlice<UInt8> {
                var w = Array(#"{"applications":["#.utf8)
                w += part.filter { $0.0 }.map { Array(body[$0.1]) }.joined(separator: [UInt8(ascii: ",")])
                w += Array(#"],"metrics":["#.utf8)
                w += part.filter { !$0.0 }.map { Array(body[$0.1]) }.joined(separator: [UInt8(ascii: ",")])
                w += Array("]}".utf8)
                return w[...]
            }
            return (build(all[..<mid]), build(all[mid...]))
        }
    }

    static func splitSingleApp(_ body: [UInt8]) -> (ArraySlice<UInt8>, ArraySlice<UInt8>)? {
        body.withUnsafeBufferPointer { p -> (ArraySlice<UInt8>, ArraySlice<UInt8>)? in
            guard let toggles = members(p, path: ["bucket", "toggles"]), toggles.count >= 2,
                  let open = toggles.first?.lowerBound, let close = toggles.last?.upperBound else { return nil }
            let head = body[..<open], tail = body[close...]
            let mid = toggles.count / 2
            func build(_ part: ArraySlice<Range<Int>>) -> ArraySlice<UInt8> {
                (Array(head) + part.map { Array(body[$0]) }.joined(separator: [UInt8(ascii: ",")]) + Array(tail))[...]
            }
            return (build(toggles[..<mid]), build(toggles[mid...]))
        }
    }
}
