/// A metrics post in the common shape, read without allocating: byte ranges into the body and
/// counts, in scratch arrays reused from post to post.
public struct FastPost {
    struct Toggle {
        var name: Range<Int>
        var yes: Int64
        var no: Int64
        /// Indices into `variants`.
        var variants: Range<Int>
    }

    struct Variant {
        var name: Range<Int>
        var count: Int64
    }

    var appName: Range<Int> = 0..<0
    var instanceId: Range<Int>?
    /// Per `SDKField`, by its index: where the body gives it.
    let sdk = ScratchList<Range<Int>?>(capacity: SDKField.all.count)
    /// `SDKField.all`, held here so the reader does not reach for the global on every member.
    let sdkFields = SDKField.all
    var start: Int64 = 0, stop: Int64 = 0
    /// The body's `impactMetrics`, read by `Decoding.impactMetrics` from where the scan
    /// found them, so that the flag counts beside them stay on the fast path. Nil: none.
    var impact: ImpactMetrics?
    /// Where the body's `impactMetrics` value lies: the journal keeps it as it came.
    var impactRange: Range<Int>?
    /// The longest toggle or variant name, in bytes (for `PostLimits`).
    var longestName = 0
    /// Reused storage: appending checks no uniqueness and copies nothing.
    let toggles = ScratchList<Toggle>(capacity: 256)
    let variants = ScratchList<Variant>(capacity: 256)

    public init() {}
}

/// A growable list that keeps its storage from post to post. A class, so
/// appending through a struct that holds it costs no uniqueness check (Array's did, per
/// append, in the scanner's inner loop).
final class ScratchList<Element>: RandomAccessCollection {
    private var storage: UnsafeMutablePointer<Element>
    private var capacity: Int
    private(set) var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        storage = .allocate(capacity: capacity)
    }

    deinit {
        storage.deinitialize(count: count)
        storage.deallocate()
    }

    var startIndex: Int { 0 }
    var endIndex: Int { count }

    subscript(i: Int) -> Element {
        get {
            precondition(i >= 0 && i < count, "index out of range")
            return storage[i]
        }
        set {
            precondition(i >= 0 && i < count, "index out of range")
            storage[i] = newValue
        }
    }

    /// The elements as a buffer, valid during `body` (no bounds check per element).
    @inline(__always)
    func withElements<T>(_ body: (UnsafeBufferPointer<Element>) -> T) -> T {
        body(UnsafeBufferPointer(start: storage, count: count))
    }

    @inline(__always)
    func append(_ e: Element) {
        if count == capacity { grow() }
        (storage + count).initialize(to: e)
        count += 1
    }

    func removeAll() { truncate(to: 0) }

    /// Drops the elements from `newCount` on.
    func truncate(to newCount: Int) {
        precondition(newCount >= 0 && newCount <= count, "count out of range")
        (storage + newCount).deinitialize(count: count - newCount)
        count = newCount
    }

    private func grow() {
        let bigger = UnsafeMutablePointer<Element>.allocate(capacity: capacity * 2)
        bigger.moveInitialize(from: storage, count: count)
        storage.deallocate()
        storage = bigger
        capacity *= 2
    }
}

