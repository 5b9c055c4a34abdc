/// A metrics post in the common shape, read without allocating: byte ranges into the body and
/// counts, in scratch arrays reused from post to post.
public struct FastPost {
    struct Toggle {
        var name: Range<Int>
        var hash: UInt64
        var yes: Int64
        var no: Int64
        /// Indices into `variants`.
        var variants: Range<Int>
    }

    struct Variant {
        var name: Range<Int>
        var hash: UInt64
        var count: Int64
    }

    var appName: Range<Int> = 0..<0
    var instanceId: Range<Int>?
    var sdkVersion: Range<Int>?, platformName: Range<Int>?, platformVersion: Range<Int>?
    var yggdrasilVersion: Range<Int>?, specVersion: Range<Int>?, connectionId: Range<Int>?
    var start: Int64 = 0, stop: Int64 = 0
    var toggles: [Toggle] = []
    var variants: [Variant] = []

    public init() {
        toggles.reserveCapacity(256)
        variants.reserveCapacity(256)
    }
}

/// The fast path of `MetricsPostDecoder`: one pass over the bytes for posts in the shape SDKs
/// send (plain strings, a bucket object, integer counts, variants as an object). It accepts
/// only bodies the full decoder accepts with the same meaning; anything else (escapes,
/// coercions, null buckets, any error) makes it answer false, and the caller runs the full
/// decoder, which alone words errors.
public enum FastPostScanner {
    private struct Bail: Error {}

    public static func scan(_ body: UnsafeBufferPointer<UInt8>, into p: inout FastPost) -> Bool {
        p.toggles.removeAll(keepingCapacity: true)
        p.variants.removeAll(keepingCapacity: true)
        p.instanceId = nil
        p.sdkVersion = nil; p.platformName = nil; p.platformVersion = nil
        p.yggdrasilVersion = nil; p.specVersion = nil; p.connectionId = nil
        var s = JSONScanner(body)
        do {
            try top(&s, &p)
            s.skipWhitespace()
            return s.isAtEnd
        } catch {
            return false
        }
    }

    private static func top(_ s: inout JSONScanner, _ p: inout FastPost) throws {
        guard try s.peekKind() == .object else { throw Bail() }
        try s.expect(UInt8(ascii: "{"))
        var first = true, sawApp = false, sawBucket = false
        while try s.nextMember(first: first) {
            first = false
            let key = try s.readKey()
            guard !key.escaped else { throw Bail() }
            let k = key.raw
            if k.equals("appName") { p.appName = try plainString(&s); sawApp = true }
            else if k.equals("instanceId") { p.instanceId = try plainString(&s) }
            else if k.equals("bucket") {
                guard !sawBucket else { throw Bail() }
                sawBucket = true
                try bucket(&s, &p)
            }
            else if k.equals("sdkVersion") { p.sdkVersion = try plainString(&s) }
            else if k.equals("platformName") { p.platformName = try plainString(&s) }
            else if k.equals("platformVersion") { p.platformVersion = try plainString(&s) }
            else if k.equals("yggdrasilVersion") { p.yggdrasilVersion = try plainString(&s) }
            else if k.equals("specVersion") { p.specVersion = try plainString(&s) }
            else if k.equals("connectionId") { p.connectionId = try plainString(&s) }
            else if k.equals("sdkFlavor") || k.equals("sdkFlavorVersion") { throw Bail() }
            else { try s.skipValue() }
        }
        guard sawApp, !p.appName.isEmpty, sawBucket else { throw Bail() }
    }

    /// A string without escapes, as a byte range.
    private static func plainString(_ s: inout JSONScanner) throws -> Range<Int> {
        guard try s.peekKind() == .string else { throw Bail() }
        let (raw, escaped) = try s.readRawString()
        guard !escaped else { throw Bail() }
        return raw.startIndex..<raw.endIndex
    }

    private static func bucket(_ s: inout JSONScanner, _ p: inout FastPost) throws {
        guard try s.peekKind() == .object else { throw Bail() }
        try s.expect(UInt8(ascii: "{"))
        var first = true
        var start: Int64?, stop: Int64?, sawToggles = false
        while try s.nextMember(first: first) {
            first = false
            let key = try s.readKey()
            guard !key.escaped else { throw Bail() }
            if key.raw.equals("start") {
                guard start == nil else { throw Bail() }
                start = try date(&s)
            } else if key.raw.equals("stop") {
                guard stop == nil else { throw Bail() }
                stop = try date(&s)
            } else if key.raw.equals("toggles") {
                guard !sawToggles else { throw Bail() }
                sawToggles = true
                try toggles(&s, &p)
            } else {
                try s.skipValue()
            }
        }
        guard let start, let stop, sawToggles else { throw Bail() }
        p.start = start
        p.stop = stop
    }

    private static func date(_ s: inout JSONScanner) throws -> Int64 {
        switch try s.peekKind() {
        case .string:
            let (raw, escaped) = try s.readRawString()
            guard !escaped, let ms = Timestamp.parse(rfc3339: raw) else { throw Bail() }
            return ms
        case .number:
            let n = try s.readNumber()
            guard n.isIntegerLiteral, n.text.count <= 17 else { throw Bail() }
            let d = n.doubleValue
            guard abs(d) <= Double(Timestamp.maxMillis) else { throw Bail() }
            return Int64(d)
        default:
            throw Bail()
        }
    }

    private static func toggles(_ s: inout JSONScanner, _ p: inout FastPost) throws {
        guard try s.peekKind() == .object else { throw Bail() }
        try s.expect(UInt8(ascii: "{"))
        var first = true
        while try s.nextMember(first: first) {
            first = false
            guard let (name, hash) = s.plainKeyHashed(), try s.peekKind() == .object else { throw Bail() }
            var t = FastPost.Toggle(name: name, hash: hash, yes: 0, no: 0, variants: p.variants.count..<p.variants.count)
            try s.expect(UInt8(ascii: "{"))
            var f = true, sawVariants = false
            while try s.nextMember(first: f) {
                f = false
                guard let (k, _) = s.plainKeyHashed() else { throw Bail() }
                let key = s.bytes[k]
                if key.equals("yes") { t.yes = try count(&s) }
                else if key.equals("no") { t.no = try count(&s) }
                else if key.equals("variants") {
                    guard !sawVariants else { throw Bail() }
                    sawVariants = true
                    t.variants = try variants(&s, &p)
                }
                else { try s.skipValue() }
            }
            p.toggles.append(t)
        }
    }

    private static func variants(_ s: inout JSONScanner, _ p: inout FastPost) throws -> Range<Int> {
        guard try s.peekKind() == .object else { throw Bail() }
        let from = p.variants.count
        try s.expect(UInt8(ascii: "{"))
        var first = true
        while try s.nextMember(first: first) {
            first = false
            guard let (name, hash) = s.plainKeyHashed() else { throw Bail() }
            p.variants.append(FastPost.Variant(name: name, hash: hash, count: try count(&s)))
        }
        return from..<p.variants.count
    }

    /// A plain non-negative integer literal of at most 15 digits (so below 2^53).
    private static func count(_ s: inout JSONScanner) throws -> Int64 {
        guard let v = s.plainCount() else { throw Bail() }
        return v
    }
}
