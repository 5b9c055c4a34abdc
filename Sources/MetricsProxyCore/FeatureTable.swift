/// The window's per-group table of feature names: open addressing over the names' hashes
/// (`NameHash`), names kept in one byte arena. A lookup by a post's bytes hashes nothing more (the
/// scanner computed the hash), allocates nothing, and retains nothing; only a new name is
/// copied in. Measured against `Dictionary<FeatureName, _>`, whose every lookup seeds and
/// finalises a SipHash `Hasher` and retains the stored key's String to compare it.
public struct FeatureTable<Value>: Sequence {
    struct Entry {
        var hash: UInt64
        var start: Int32
        var length: Int32
        var value: Value
    }

    private var entries: [Entry] = []
    /// Indices into `entries`, -1 for an empty slot; a power of two, at most half full.
    private var slots: [Int32] = []
    private var arena: [UInt8] = []

    public init() {}

    public var count: Int { entries.count }
    public var isEmpty: Bool { entries.isEmpty }

    @inline(__always)
    private func slot(for hash: UInt64, mask: Int) -> Int {
        // The product's high bits depend on every bit of the hash.
        Int(truncatingIfNeeded: (hash &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    /// Up to this many names a table has no slots and is searched in order: most features
    /// have one to three variants, and a slot array per feature cost memory and a cache miss
    /// per lookup.
    static var smallLimit: Int { 8 }

    /// The entry holding `bytes`, or the empty slot where it would go (-1 in a small table).
    private func find(_ bytes: UnsafeBufferPointer<UInt8>, hash: UInt64) -> (slot: Int, entry: Int?) {
        entries.withUnsafeBufferPointer { es in
            arena.withUnsafeBufferPointer { ar in
                @inline(__always) func holds(_ entry: Entry) -> Bool {
                    entry.hash == hash && Int(entry.length) == bytes.count
                        && (bytes.count == 0 || sameBytes(ar.baseAddress! + Int(entry.start), bytes.baseAddress!, bytes.count))
                }
                guard !slots.isEmpty else {
                    for e in es.indices where holds(es[e]) { return (-1, e) }
                    return (-1, nil)
                }
                let mask = slots.count - 1
                var i = slot(for: hash, mask: mask)
                return slots.withUnsafeBufferPointer { ss in
                    while true {
                        let e = Int(ss[i])
                        if e < 0 { return (i, nil) }
                        if holds(es[e]) { return (i, e) }
                        i = (i + 1) & mask
                    }
                }
            }
        }
    }

    /// Slots for every entry, at most half full.
    private mutating func grow() {
        var capacity = Swift.max(16, slots.count * 2)
        while capacity < 2 * (entries.count + 1) { capacity *= 2 }
        slots = [Int32](repeating: -1, count: capacity)
        let mask = capacity - 1
        for (n, e) in entries.enumerated() {
            var i = slot(for: e.hash, mask: mask)
            while slots[i] >= 0 { i = (i + 1) & mask }
            slots[i] = Int32(n)
        }
    }

    private mutating func insert(_ bytes: UnsafeBufferPointer<UInt8>, hash: UInt64, _ value: Value) {
        if !slots.isEmpty || entries.count >= Self.smallLimit {
            if (entries.count + 1) * 2 > slots.count { grow() }
            let i = find(bytes, hash: hash).slot
            slots[i] = Int32(entries.count)
        }
        entries.append(Entry(hash: hash, start: Int32(arena.count), length: Int32(bytes.count), value: value))
        arena.append(contentsOf: bytes)
    }

    /// Changes the value for the name in `bytes` (hashed with `FeatureName.hash`) in place, or
    /// adds it as `initial()` changed by `change`. Returns whether it was added.
    @discardableResult
    public mutating func update(_ bytes: UnsafeBufferPointer<UInt8>, hash: UInt64, initial: () -> Value,
                                _ change: (inout Value) -> Void) -> Bool {
        if let e = find(bytes, hash: hash).entry {
            change(&entries[e].value)
            return false
        }
        var v = initial()
        change(&v)
        insert(bytes, hash: hash, v)
        return true
    }

    public func contains(_ bytes: UnsafeBufferPointer<UInt8>, hash: UInt64) -> Bool { find(bytes, hash: hash).entry != nil }

    public subscript(name: FeatureName) -> Value? {
        get { name.withBytes { b in find(b, hash: name.nameHash).entry.map { entries[$0].value } } }
        set {
            guard let newValue else { preconditionFailure("names are never removed from a window") }
            _ = name.withBytes { b in update(b, hash: name.nameHash, initial: { newValue }) { $0 = newValue } }
        }
    }

    public struct Iterator: IteratorProtocol {
        let table: FeatureTable
        var position = 0

        public mutating func next() -> (key: FeatureName, value: Value)? {
            guard position < table.entries.count else { return nil }
            defer { position += 1 }
            let e = table.entries[position]
            let name = table.arena[Int(e.start)..<Int(e.start + e.length)].withUnsafeBufferPointer {
                String(decoding: $0, as: UTF8.self)
            }
            return (FeatureName(name, hash: e.hash), e.value)
        }
    }

    /// In the order names were first added.
    public func makeIterator() -> Iterator { Iterator(table: self) }

    /// Each name's bytes and its value, in the order names were first added, without making
    /// a String of the name.
    func forEachName(_ body: (UnsafeBufferPointer<UInt8>, Value) -> Void) {
        arena.withUnsafeBufferPointer { ar in
            for e in entries { body(UnsafeBufferPointer(rebasing: ar[Int(e.start)..<Int(e.start + e.length)]), e.value) }
        }
    }
}

extension FeatureTable: ExpressibleByDictionaryLiteral {
    public init(dictionaryLiteral elements: (FeatureName, Value)...) {
        self.init()
        for (k, v) in elements { self[k] = v }
    }
}

extension FeatureTable: Equatable where Value: Equatable {
    /// The same names with the same values, in any order.
    public static func == (a: FeatureTable, b: FeatureTable) -> Bool {
        guard a.count == b.count else { return false }
        return a.entries.allSatisfy { e in
            a.arena[Int(e.start)..<Int(e.start + e.length)].withUnsafeBufferPointer { bytes in
                b.find(bytes, hash: e.hash).entry.map { b.entries[$0].value == e.value } ?? false
            }
        }
    }
}

extension FeatureTable: Sendable where Value: Sendable {}
extension FeatureTable.Entry: Sendable where Value: Sendable {}

/// Whether `count` bytes at `a` and `b` are equal: a word at a time (names are short, and a
/// call to memcmp cost more than the comparison).
@inline(__always)
func sameBytes(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ count: Int) -> Bool {
    if count >= 8 {
        var i = 0
        while i + 8 <= count {
            if UnsafeRawPointer(a + i).loadUnaligned(as: UInt64.self) != UnsafeRawPointer(b + i).loadUnaligned(as: UInt64.self) {
                return false
            }
            i += 8
        }
        // The last word, overlapping the one before.
        return UnsafeRawPointer(a + count - 8).loadUnaligned(as: UInt64.self)
            == UnsafeRawPointer(b + count - 8).loadUnaligned(as: UInt64.self)
    }
    for i in 0..<count where a[i] != b[i] { return false }
    return true
}
