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
