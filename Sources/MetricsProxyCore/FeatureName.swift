/// A feature or variant name as a window key, hashed once (FNV-1a over its bytes) instead of
/// on every lookup. A lookup key may borrow the request's bytes, so merging a post allocates
/// a String only for a name the window has not seen yet.
public struct FeatureName: Hashable, Comparable, ExpressibleByStringLiteral, CustomStringConvertible, @unchecked Sendable {
    // @unchecked: a borrowing key only lives for one lookup on the loop thread; every key
    // stored in a window owns its text.
    /// The name; empty for a borrowing key.
    public let text: String
    private let fnv: UInt64
    private let borrowed: UnsafeBufferPointer<UInt8>?

    public init(_ text: String) {
        var t = text
        fnv = t.withUTF8 { Self.hash($0) }
        self.text = t
        borrowed = nil
    }

    public init(stringLiteral value: String) { self.init(value) }

    /// A name whose hash is known (read back from a `FeatureTable`).
    init(_ text: String, hash: UInt64) {
        self.text = text
        fnv = hash
        borrowed = nil
    }

    var fnvHash: UInt64 { fnv }

    /// A lookup key over bytes that must stay valid while it is used; never store it.
    init(borrowing bytes: UnsafeBufferPointer<UInt8>, hash: UInt64) {
        text = ""
        fnv = hash
        borrowed = bytes
    }

    /// A key that owns its text, for storing.
    var owned: FeatureName {
        guard let borrowed else { return self }
        return FeatureName(String(decoding: borrowed, as: UTF8.self))
    }

    public var description: String { text }

    static func hash(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(fnv) }

    func withBytes<R>(_ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        if let borrowed { return body(borrowed) }
        var t = text
        return t.withUTF8(body)
    }

    public static func == (a: FeatureName, b: FeatureName) -> Bool {
        guard a.fnv == b.fnv else { return false }
        if a.borrowed == nil && b.borrowed == nil { return a.text == b.text }
        return a.withBytes { x in b.withBytes { y in x.count == y.count && (x.count == 0 || memcmpBytes(x, y)) } }
    }

    public static func < (a: FeatureName, b: FeatureName) -> Bool { a.text < b.text }
}

@inline(__always)
func memcmpBytes(_ x: UnsafeBufferPointer<UInt8>, _ y: UnsafeBufferPointer<UInt8>) -> Bool {
    for i in 0..<x.count where x[i] != y[i] { return false }
    return true
}
