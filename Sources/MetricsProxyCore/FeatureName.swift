/// A feature or variant name as a window key, hashed once (`NameHash`) instead of on every
/// lookup. A lookup key may borrow the request's bytes, so merging a post allocates
/// a String only for a name the window has not seen yet.
public struct FeatureName: Hashable, Comparable, ExpressibleByStringLiteral, CustomStringConvertible, @unchecked Sendable {
    // @unchecked: a borrowing key only lives for one lookup on the loop thread; every key
    // stored in a window owns its text.
    /// The name; empty for a borrowing key.
    public let text: String
    private let hashBits: UInt64
    private let borrowed: UnsafeBufferPointer<UInt8>?

    public init(_ text: String) {
        self.text = text
        hashBits = NameHash.of(text)
        borrowed = nil
    }

    public init(stringLiteral value: String) { self.init(value) }

    /// A name whose hash is known (read back from a `FeatureTable`).
    init(_ text: String, hash: UInt64) {
        self.text = text
        hashBits = hash
        borrowed = nil
    }

    var nameHash: UInt64 { hashBits }

    /// A lookup key over bytes that must stay valid while it is used; never store it.
    init(borrowing bytes: UnsafeBufferPointer<UInt8>, hash: UInt64) {
        text = ""
        hashBits = hash
        borrowed = bytes
    }

    /// A key that owns its text, for storing.
    var owned: FeatureName {
        guard let borrowed else { return self }
        return FeatureName(String(decoding: borrowed, as: UTF8.self))
    }

    public var description: String { text }

    public func hash(into hasher: inout Hasher) { hasher.combine(hashBits) }

    func withBytes<R>(_ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        if let borrowed { return body(borrowed) }
        var t = text
        return t.withUTF8(body)
    }

    public static func == (a: FeatureName, b: FeatureName) -> Bool {
        guard a.hashBits == b.hashBits else { return false }
        if a.borrowed == nil && b.borrowed == nil { return a.text == b.text }
        return a.withBytes { x in b.withBytes { y in x.count == y.count && (x.count == 0 || sameBytes(x.baseAddress!, y.baseAddress!, x.count)) } }
    }

    public static func < (a: FeatureName, b: FeatureName) -> Bool { a.text < b.text }
}

/// The hash of a name's bytes, eight at a time: each 8-byte word (little-endian; the last one
/// zero-padded, always present) is folded in with a rotate, xor and multiply, and the result
/// is finalised with the length. A post's names are hashed only when the window does not find
/// them at the entry it expects (`FeatureTable.updateOwned(_:hint:…)`). Seeded per process,
/// so which names share a table slot cannot be worked out in advance from outside.
enum NameHash {
    static let seed: UInt64 = UInt64.random(in: .min ... .max)

    @inline(__always)
    static func fold(_ h: UInt64, _ word: UInt64) -> UInt64 {
        ((h << 5 | h >> 59) ^ word) &* 0x9E37_79B9_7F4A_7C15
    }

    @inline(__always)
    static func finish(_ h: UInt64, length: Int) -> UInt64 {
        var x = h ^ UInt64(truncatingIfNeeded: length)
        x ^= x >> 33
        x = x &* 0xFF51_AFD7_ED55_8CCD
        x ^= x >> 33
        return x
    }

    /// Of a string's UTF-8 bytes.
    static func of(_ s: String) -> UInt64 {
        if let h = s.utf8.withContiguousStorageIfAvailable({ of($0) }) { return h }
        var copy = s
        return copy.withUTF8 { of($0) }
    }

    @inline(__always)
    static func of(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var h = seed
        let n = bytes.count
        guard let base = bytes.baseAddress else { return finish(fold(h, 0), length: 0) }
        var i = 0
        while n &- i >= 8 {
            h = fold(h, UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self).littleEndian)
            i &+= 8
        }
        if n >= 8 {
            // The bytes left, from one load that ends with the name, shifted down to where
            // the byte-by-byte read below puts them.
            let rest = n &- i
            let w = UnsafeRawPointer(base + (n &- 8)).loadUnaligned(as: UInt64.self).littleEndian
            return finish(fold(h, rest == 0 ? 0 : w >> UInt64(8 &* (8 &- rest))), length: n)
        }
        var last: UInt64 = 0
        var shift: UInt64 = 0
        while i < n {
            last |= UInt64(base[i]) << shift
            shift += 8
            i += 1
        }
        return finish(fold(h, last), length: n)
    }
}
