/// The window's per-group table of feature names: open addressing over the names' hashes
/// (`NameHash`), names kept in one byte arena. A merge looks a post's name up by its bytes at
/// the entry it expects first (`updateOwned(_:hint:…)`), and hashes it only when that entry
/// holds another name; a lookup allocates nothing and retains nothing; only a new name is
/// copied in. Measured against `Dictionary<FeatureName, _>`, whose every lookup seeds and
/// finalises a SipHash `Hasher` and retains the stored key's String to compare it.
///
/// Entries, slots and name bytes live in one allocation after a small header, so a table of a
/// few variants is one or two cache lines, and a lookup is straight-line code over raw
/// pointers. The table is a value: storage shared by two copies is copied before either
/// changes it.
public struct FeatureTable<Value>: Sequence {
    struct Entry {
        var hash: UInt64
        var start: Int32
        var length: Int32
        var value: Value
    }

    struct Header {
        var count = 0
        /// Room for this many entries.
        var capacity: Int
        /// A power of two, at most half full; 0 for a small table, searched in order.
        var slotCount: Int
        var arenaCount = 0
        var arenaCapacity: Int
    }

    /// The header, then `capacity` entries, `slotCount` slots (entry indices, -1 for empty)
    /// and `arenaCapacity` name bytes.
    final class Storage: ManagedBuffer<Header, UInt8> {
        deinit {
            _ = withUnsafeMutablePointers { h, tail in
                FeatureTable.entries(tail).deinitialize(count: h.pointee.count)
            }
        }
    }

    private var storage: Storage?

    public init() {}

    public var count: Int { storage?.header.count ?? 0 }
    public var isEmpty: Bool { count == 0 }

    /// Up to this many names a table has no slots and is searched in order: most features
    /// have one to three variants, and a slot array per feature cost memory and a cache miss
    /// per lookup.
    static var smallLimit: Int { 8 }

    @inline(__always)
    static func entries(_ tail: UnsafeMutablePointer<UInt8>) -> UnsafeMutablePointer<Entry> {
        UnsafeMutableRawPointer(tail).alignedUp(for: Entry.self).assumingMemoryBound(to: Entry.self)
    }

    @inline(__always)
    static func slots(_ h: UnsafeMutablePointer<Header>, _ tail: UnsafeMutablePointer<UInt8>) -> UnsafeMutablePointer<Int32> {
        UnsafeMutableRawPointer(entries(tail) + h.pointee.capacity).assumingMemoryBound(to: Int32.self)
    }

    @inline(__always)
    static func arena(_ h: UnsafeMutablePointer<Header>, _ tail: UnsafeMutablePointer<UInt8>) -> UnsafeMutablePointer<UInt8> {
        UnsafeMutableRawPointer(slots(h, tail) + h.pointee.slotCount).assumingMemoryBound(to: UInt8.self)
    }

    @inline(__always)
    private static func slot(for hash: UInt64, mask: Int) -> Int {
        // The product's high bits depend on every bit of the hash.
        Int(truncatingIfNeeded: (hash &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    /// Records entry `e` in the first free slot from its hash's.
    @inline(__always)
    private static func place(_ e: Int, hash: UInt64, in ss: UnsafeMutablePointer<Int32>, mask: Int) {
        var i = slot(for: hash, mask: mask)
        while ss[i] >= 0 { i = (i + 1) & mask }
        ss[i] = Int32(e)
    }

    /// The index of the entry holding `bytes`, or nil.
    @inline(__always)
    private static func find(_ h: UnsafeMutablePointer<Header>, _ tail: UnsafeMutablePointer<UInt8>,
                             _ bytes: UnsafeBufferPointer<UInt8>, hash: UInt64) -> Int? {
        let es = entries(tail), ar = arena(h, tail)
        @inline(__always) func holds(_ e: Int) -> Bool {
            es[e].hash == hash && Int(es[e].length) == bytes.count
                && (bytes.count == 0 || sameBytes(ar + Int(es[e].start), bytes.baseAddress!, bytes.count))
        }
        let slotCount = h.pointee.slotCount
        guard slotCount > 0 else {
            for e in 0..<h.pointee.count where holds(e) { return e }
            return nil
        }
        let ss = slots(h, tail), mask = slotCount - 1
        var i = slot(for: hash, mask: mask)
        while true {
            let e = Int(ss[i])
            if e < 0 { return nil }
            if holds(e) { return e }
            i = (i + 1) & mask
        }
    }

    private func find(_ bytes: UnsafeBufferPointer<UInt8>, hash: UInt64) -> Int? {
        storage?.withUnsafeMutablePointers { h, tail in Self.find(h, tail, bytes, hash: hash) }
    }

    /// New storage with room for `capacity` entries and `arenaCapacity` bytes, holding a copy
    /// of `old`'s entries (moved out of it when `moving`).
    private static func make(capacity: Int, arenaCapacity: Int, from old: Storage?, moving: Bool) -> Storage {
        let slotCount = capacity > smallLimit ? 2 * capacity : 0
        let bytes = MemoryLayout<Entry>.alignment + capacity * MemoryLayout<Entry>.stride
            + slotCount * MemoryLayout<Int32>.stride + arenaCapacity
        let made = unsafeDowncast(Storage.create(minimumCapacity: bytes) { _ in
            Header(capacity: capacity, slotCount: slotCount, arenaCapacity: arenaCapacity)
        }, to: Storage.self)
        made.withUnsafeMutablePointers { h, tail in
            let es = entries(tail)
            if slotCount > 0 { slots(h, tail).initialize(repeating: -1, count: slotCount) }
            if let old {
                old.withUnsafeMutablePointers { oh, otail in
                    let n = oh.pointee.count
                    if moving {
                        es.moveInitialize(from: entries(otail), count: n)
                        oh.pointee.count = 0
                    } else {
                        es.initialize(from: entries(otail), count: n)
                    }
                    arena(h, tail).update(from: arena(oh, otail), count: oh.pointee.arenaCount)
                    h.pointee.count = n
                    h.pointee.arenaCount = oh.pointee.arenaCount
                }
            }
            if slotCount > 0 {
                for e in 0..<h.pointee.count { place(e, hash: es[e].hash, in: slots(h, tail), mask: slotCount - 1) }
            }
        }
        return made
    }

    /// Adds a name known to be absent, to storage already this table's own (`makeUnique`).
    private mutating func insert(_ bytes: UnsafeBufferPointer<UInt8>, hash: UInt64, _ value: Value) {
        let (count, capacity, arenaCount, arenaCapacity) = storage.map {
            ($0.header.count, $0.header.capacity, $0.header.arenaCount, $0.header.arenaCapacity)
        } ?? (0, 0, 0, 0)
        let entriesFull = count == capacity, arenaFull = arenaCount + bytes.count > arenaCapacity
        if entriesFull || arenaFull {
            storage = Self.make(capacity: entriesFull ? Swift.max(2, 2 * capacity) : capacity,
                                arenaCapacity: arenaFull ? Swift.max(2 * arenaCapacity, arenaCount + 2 * bytes.count, 16) : arenaCapacity,
                                from: storage, moving: true)
        }
        storage!.withUnsafeMutablePointers { h, tail in
            let n = h.pointee.count, start = h.pointee.arenaCount
            if bytes.count > 0 { (Self.arena(h, tail) + start).update(from: bytes.baseAddress!, count: bytes.count) }
            (Self.entries(tail) + n).initialize(to: Entry(hash: hash, start: Int32(start), length: Int32(bytes.count), value: value))
            if h.pointee.slotCount > 0 { Self.place(n, hash: hash, in: Self.slots(h, tail), mask: h.pointee.slotCount - 1) }
            h.pointee.count = n + 1
            h.pointee.arenaCount = start + bytes.count
        }
    }

    /// Changes the value for the name in `bytes` (hashed with `NameHash`) in place, or adds it
    /// as `initial()` changed by `change`. Returns whether it was added.
    @discardableResult @inline(__always)
    public mutating func update(_ bytes: UnsafeBufferPointer<UInt8>, hash: UInt64, initial: () -> Value,
                                _ change: (inout Value) -> Void) -> Bool {
        makeUnique()
        return updateOwned(bytes, hash: hash, initial: initial, change)
    }

    /// Copies storage shared with another table, so that this one can change it.
    @inline(__always)
    mutating func makeUnique() {
        if storage != nil && !isKnownUniquelyReferenced(&storage) {
            storage = Self.make(capacity: storage!.header.capacity, arenaCapacity: storage!.header.arenaCapacity,
                                from: storage, moving: false)
        }
    }

    /// `update` for a table made unique (`makeUnique`) and not copied since: a merge checks
    /// once per group instead of once per name.
    @discardableResult @inline(__always)
    mutating func updateOwned(_ bytes: UnsafeBufferPointer<UInt8>, hash: UInt64, initial: () -> Value,
                              _ change: (inout Value) -> Void) -> Bool {
        let entry = storage?.withUnsafeMutablePointers { h, tail in
            Self.find(h, tail, bytes, hash: hash).map { Self.entries(tail) + $0 }
        } ?? nil
        return changeOrAdd(entry, bytes, hash: hash, initial, change)
    }

    /// `updateOwned` for a name not hashed yet. The entry at `hint` is tried first, by length
    /// and bytes: posts list features (and a feature its variants) in the order the window
    /// first saw them when their SDK keeps that order, so most names are found without a
    /// hash. Only a name not at `hint` is hashed and looked up. `hint` ends just past the
    /// entry that holds the name. Returns whether the name was added.
    @discardableResult @inline(__always)
    mutating func updateOwned(_ bytes: UnsafeBufferPointer<UInt8>, hint: inout Int, initial: () -> Value,
                              _ change: (inout Value) -> Void) -> Bool {
        var hash: UInt64?
        let entry = storage?.withUnsafeMutablePointers { h, tail -> UnsafeMutablePointer<Entry>? in
            let es = Self.entries(tail), g = hint
            if g < h.pointee.count, Int(es[g].length) == bytes.count,
               bytes.count == 0 || sameBytesFromTheEnd(Self.arena(h, tail) + Int(es[g].start), bytes.baseAddress!, bytes.count) {
                hint = g &+ 1
                return es + g
            }
            let hashed = NameHash.of(bytes)
            hash = hashed
            guard let e = Self.find(h, tail, bytes, hash: hashed) else { return nil }
            hint = e &+ 1
            return es + e
        } ?? nil
        let added = changeOrAdd(entry, bytes, hash: hash ?? NameHash.of(bytes), initial, change)
        if added { hint = count }
        return added
    }

    /// Changes the value at `entry`, or adds the name as `initial()` changed by `change`;
    /// whether it was added. The entry is changed here, outside the storage's closure, where
    /// `change` can be inlined; the pointer stays valid because `storage` holds the memory
    /// and nothing else changes this table meanwhile.
    @inline(__always)
    private mutating func changeOrAdd(_ entry: UnsafeMutablePointer<Entry>?, _ bytes: UnsafeBufferPointer<UInt8>,
                                      hash: @autoclosure () -> UInt64, _ initial: () -> Value,
                                      _ change: (inout Value) -> Void) -> Bool {
        if let entry {
            change(&entry.pointee.value)
            return false
        }
        var v = initial()
        change(&v)
        insert(bytes, hash: hash(), v)
        return true
    }

    public func contains(_ bytes: UnsafeBufferPointer<UInt8>, hash: UInt64) -> Bool { find(bytes, hash: hash) != nil }

    /// The entry at `index` (in the order names were added): its name's bytes and its value.
    private func withEntry<T>(_ index: Int, _ body: (UnsafeBufferPointer<UInt8>, UInt64, Value) -> T) -> T {
        storage!.withUnsafeMutablePointers { h, tail in
            let e = Self.entries(tail)[index]
            return body(UnsafeBufferPointer(start: Self.arena(h, tail) + Int(e.start), count: Int(e.length)), e.hash, e.value)
        }
    }

    public subscript(name: FeatureName) -> Value? {
        get { name.withBytes { b in find(b, hash: name.nameHash).map { e in withEntry(e) { $2 } } } }
        set {
            guard let newValue else { preconditionFailure("names are never removed from a window") }
            _ = name.withBytes { b in update(b, hash: name.nameHash, initial: { newValue }) { $0 = newValue } }
        }
    }

    public struct Iterator: IteratorProtocol {
        let table: FeatureTable
        var position = 0

        public mutating func next() -> (key: FeatureName, value: Value)? {
            guard position < table.count else { return nil }
            defer { position += 1 }
            return table.withEntry(position) { bytes, hash, value in
                (FeatureName(String(decoding: bytes, as: UTF8.self), hash: hash), value)
            }
        }
    }

    /// In the order names were first added.
    public func makeIterator() -> Iterator { Iterator(table: self) }

    /// Each name's bytes and its value, in the order names were first added, without making
    /// a String of the name.
    func forEachName(_ body: (UnsafeBufferPointer<UInt8>, Value) -> Void) {
        for i in 0..<count { withEntry(i) { bytes, _, value in body(bytes, value) } }
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
        return (0..<a.count).allSatisfy { i in
            a.withEntry(i) { bytes, hash, value in b.find(bytes, hash: hash).map { b.withEntry($0) { $2 } == value } ?? false }
        }
    }
}

// A value type: its storage is only changed when not shared (copied first otherwise), so
// copies on different threads never touch the same memory.
extension FeatureTable: @unchecked Sendable where Value: Sendable {}

/// `sameBytes`, the last word compared first: names that share a prefix
/// (`feature.checkout.flag-003`, `feature.checkout.flag-017`) differ at their ends.
@inline(__always)
func sameBytesFromTheEnd(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ count: Int) -> Bool {
    if count >= 8 {
        let last = count &- 8
        guard UnsafeRawPointer(a + last).loadUnaligned(as: UInt64.self) == UnsafeRawPointer(b + last).loadUnaligned(as: UInt64.self)
        else { return false }
    }
    return sameBytes(a, b, count)
}

/// Whether `count` bytes at `a` and `b` are equal: a word at a time (names are short, and a
/// call to memcmp cost more than the comparison).
@inline(__always)
func sameBytes(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ count: Int) -> Bool {
    @inline(__always) func word(_ p: UnsafePointer<UInt8>, _ k: Int) -> UInt64 { UnsafeRawPointer(p + k).loadUnaligned(as: UInt64.self) }
    @inline(__always) func half(_ p: UnsafePointer<UInt8>, _ k: Int) -> UInt32 { UnsafeRawPointer(p + k).loadUnaligned(as: UInt32.self) }
    if count >= 8 {
        // Whole words, then the last word, overlapping the one before.
        var i = 0
        let last = count &- 8
        while i < last {
            if word(a, i) != word(b, i) { return false }
            i &+= 8
        }
        return word(a, last) == word(b, last)
    }
    if count >= 4 {
        // Two four-byte words, overlapping when the name is shorter than eight.
        return half(a, 0) == half(b, 0) && half(a, count &- 4) == half(b, count &- 4)
    }
    for i in 0..<count where a[i] != b[i] { return false }
    return true
}
