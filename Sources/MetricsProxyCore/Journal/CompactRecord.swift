import CZlib

/// The journal's form of a post read by the fast path without impact metrics, the common case:
/// its counts and names, not its JSON. Every string (token, app, instance, feature and variant
/// names, SDK fields) is written once per segment and referred to by number after, so a post
/// that repeats the names of the one before costs a few bytes per toggle instead of its body.
/// What the journal writes per post is what the page cache and the disk must take, so this
/// is most of its cost.
///
/// Payload (after the record frame): type `compact`, `now` (i64), then varints:
/// token, appName, flags (1: instanceId, 2: interval, 4: impact metrics), [instanceId],
/// [interval], SDK fields given in the body (count, then index and value each), header
/// fallbacks (count, then name and value each), start, stop (zigzag), toggles (count, then
/// name, yes, no (zigzag), variant count, then name and count each), and with flag 4 the
/// body's `impactMetrics` JSON as it came (length, bytes), read again at replay. A string is `id << 1` when the segment has it already,
/// or `length << 1 | 1` and its bytes, which gives it the next id.
final class CompactEncoder {
    // The encoder is used from one thread at a time and hands out no inout access to these,
    // so the run-time exclusivity checks a class property gets (half the encoder's cost
    // when measured) are left out.
    @exclusivity(unchecked) private var names = FeatureTable<UInt8>()
    @exclusivity(unchecked) private var hint = 0
    /// The record being written. Raw memory rather than an array: a 50-toggle post is some
    /// 400 single-byte writes, and each array append checks uniqueness and capacity; here
    /// capacity is made sure of once per string or toggle (`room`) and bytes are stored.
    @exclusivity(unchecked) private var base: UnsafeMutablePointer<UInt8>
    @exclusivity(unchecked) private var capacity = 1024
    @exclusivity(unchecked) private var count = 0

    init() { base = .allocate(capacity: capacity) }
    deinit { base.deallocate() }

    /// The last record encoded, framed; valid until the next `encode`.
    var record: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
    var bytes: [UInt8] { Array(record) }

    /// A new segment: its first record defines every string again.
    func reset() { names = FeatureTable() }

    func encode(_ p: FastPost, body: UnsafeBufferPointer<UInt8>, token: String, now: Int64, interval: String?,
                sdkHeaders: [(name: String, value: String)]) {
        names.makeUnique()
        // Strings are looked up at the entry after the last one found first (see
        // `FeatureTable.updateOwned(_:hint:…)`). A segment's first post defines its token first.
        hint = 0
        count = JournalRecord.frame // the frame is filled in below
        room(64)
        put(JournalRecord.RecordType.compact.rawValue)
        withUnsafeBytes(of: UInt64(bitPattern: now).littleEndian) { put($0) }
        string(token)
        string(body, p.appName)
        let instance = p.instanceId.flatMap { $0.isEmpty ? nil : $0 }
        room(1)
        put((instance != nil ? 1 : 0) | (interval != nil ? 2 : 0) | (p.impactRange != nil ? 4 : 0))
        if let instance { string(body, instance) }
        if let interval { string(interval) }
        var given = 0
        for f in p.sdkFields where p.sdk[f.index] != nil { given += 1 }
        room(10)
        varint(UInt64(given))
        for f in p.sdkFields {
            guard let r = p.sdk[f.index] else { continue }
            room(10)
            varint(UInt64(f.index))
            string(body, r)
        }
        room(30)
        varint(UInt64(sdkHeaders.count))
        for (n, v) in sdkHeaders { string(n); string(v) }
        room(30)
        varint(zigzag(p.start))
        varint(zigzag(p.stop))
        // Toggle names follow each other in the table as the segment first saw them, and
        // variant names (the same few under many toggles) were defined after the first toggle
        // that had them: each is looked for where its own kind left off.
        var toggleHint = hint, variantsStart = hint
        p.toggles.withElements { toggles in
            p.variants.withElements { variants in
                room(10)
                varint(UInt64(toggles.count))
                for t in toggles {
                    hint = toggleHint
                    string(body, t.name, then: 40)
                    toggleHint = hint
                    varint(zigzag(t.yes))
                    varint(zigzag(t.no))
                    varint(UInt64(t.variants.count))
                    hint = variantsStart
                    for v in t.variants {
                        string(body, variants[v].name, then: 10)
                        if v == t.variants.lowerBound { variantsStart = hint - 1 }
                        varint(zigzag(variants[v].count))
                    }
                }
            }
        }
        if let r = p.impactRange {
            room(10 + r.count)
            varint(UInt64(r.count))
            put(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(body)[r]))
        }
        let payload = count - JournalRecord.frame
        let sum = mp_crc32c(0, base + JournalRecord.frame, payload)
        UnsafeMutableRawPointer(base).storeBytes(of: UInt32(payload).littleEndian, as: UInt32.self)
        UnsafeMutableRawPointer(base + 4).storeBytes(of: sum.littleEndian, as: UInt32.self)
    }

    /// Makes sure `n` more bytes fit.
    @inline(__always)
    private func room(_ n: Int) {
        if count + n > capacity { grow(count + n) }
    }

    private func grow(_ needed: Int) {
        capacity = max(needed, capacity * 2)
        let bigger = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
        bigger.update(from: base, count: count)
        base.deallocate()
        base = bigger
    }

    @inline(__always)
    private func put(_ b: UInt8) {
        base[count] = b
        count &+= 1
    }

    @inline(__always)
    private func put(_ b: UnsafeRawBufferPointer) {
        guard let from = b.baseAddress else { return }
        UnsafeMutableRawPointer(base + count).copyMemory(from: from, byteCount: b.count)
        count &+= b.count
    }

    private func string(_ body: UnsafeBufferPointer<UInt8>, _ r: Range<Int>, then more: Int = 0) {
        string(UnsafeBufferPointer(rebasing: body[r]), then: more)
    }

    private func string(_ s: String) {
        var s = s
        s.withUTF8 { string($0) }
    }

    /// Writes the string (its id, or its definition), with room for `more` bytes after it.
    @inline(__always)
    private func string(_ s: UnsafeBufferPointer<UInt8>, then more: Int = 0) {
        if names.updateOwned(s, hint: &hint, initial: { 0 }, { _ in }) {
            room(10 + s.count + more)
            varint(UInt64(s.count) << 1 | 1)
            put(UnsafeRawBufferPointer(s))
        } else {
            room(10 + more)
            varint(UInt64(hint - 1) << 1)
        }
    }

    /// Writes `v` in 1 to 10 bytes; the caller has made room.
    @inline(__always)
    private func varint(_ v: UInt64) {
        if v < 0x80 { put(UInt8(v)); return }
        var v = v
        while v >= 0x80 {
            put(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        put(UInt8(v))
    }

    private func zigzag(_ v: Int64) -> UInt64 { UInt64(bitPattern: (v << 1) ^ (v >> 63)) }
}

/// Reads compact records back: the segment's strings so far, and the post as a `FastPost`
/// whose ranges point into them, merged as the fast path merges.
public final class CompactDecoder {
    /// Every string the segment defined, end to end; `names` are their ranges by id.
    private(set) var store: [UInt8] = []
    private var names: [Range<Int>] = []
    var post = FastPost()
    /// The last token read, as a String: posts of one segment mostly share one.
    private var lastToken: (range: Range<Int>, text: String)?

    public struct Decoded {
        public var now: Int64
        public var token: String
        public var interval: String?
        public var sdkHeaders: [(name: String, value: String)]
        /// The post's `impactMetrics` JSON, if it had any.
        public var impact: [UInt8]?
    }

    /// Decodes one payload (after the type byte) into `post`; nil if it does not parse. A
    /// record that does not parse defines nothing.
    func decode(_ p: ArraySlice<UInt8>) -> Decoded? {
        let storeCount = store.count, namesCount = names.count
        var i = p.startIndex
        func fail() -> Decoded? {
            store.removeSubrange(storeCount...)
            names.removeSubrange(namesCount...)
            return nil
        }
        func varint() -> UInt64? {
            var v: UInt64 = 0, shift: UInt64 = 0
            while i < p.endIndex, shift < 64 {
                let b = p[i]
                i += 1
                v |= UInt64(b & 0x7F) << shift
                if b < 0x80 { return v }
                shift += 7
            }
            return nil
        }
        func signed() -> Int64? { varint().map { Int64(bitPattern: ($0 >> 1) ^ (0 &- ($0 & 1))) } }
        func string() -> Range<Int>? {
            guard let v = varint() else { return nil }
            if v & 1 == 0 {
                guard v >> 1 < UInt64(names.count) else { return nil }
                return names[Int(v >> 1)]
            }
            let n = v >> 1
            guard n <= UInt64(p.endIndex - i) else { return nil }
            let r = store.count..<(store.count + Int(n))
            store.append(contentsOf: p[i..<(i + Int(n))])
            i += Int(n)
            names.append(r)
            return r
        }
        func text(_ r: Range<Int>) -> String { String(decoding: store[r], as: UTF8.self) }
        guard p.endIndex - i >= 8 else { return fail() }
        let now = Int64(bitPattern: JournalReader.u64(p, i))
        i += 8
        guard let token = string(), let app = string(), i < p.endIndex else { return fail() }
        let flags = p[i]
        i += 1
        guard flags & ~7 == 0 else { return fail() }
        var instance: Range<Int>?, interval: Range<Int>?
        if flags & 1 != 0 { guard let r = string() else { return fail() }; instance = r }
        if flags & 2 != 0 { guard let r = string() else { return fail() }; interval = r }
        let fields = SDKField.all.count
        var sdk = [Range<Int>?](repeating: nil, count: fields)
        guard let given = varint(), given <= UInt64(fields) else { return fail() }
        for _ in 0..<given {
            guard let f = varint(), f < UInt64(fields), let r = string() else { return fail() }
            sdk[Int(f)] = r
        }
        guard let hc = varint(), hc <= 16 else { return fail() }
        var headers: [(Range<Int>, Range<Int>)] = []
        for _ in 0..<hc {
            guard let n = string(), let v = string() else { return fail() }
            headers.append((n, v))
        }
        guard let start = signed(), let stop = signed(), let count = varint(), count <= UInt64(p.endIndex - i) else { return fail() }
        post.toggles.removeAll()
        post.variants.removeAll()
        for _ in 0..<count {
            guard let name = string(), let yes = signed(), let no = signed(), let vc = varint(), vc <= UInt64(p.endIndex - i + 1)
            else { return fail() }
            let first = post.variants.count
            for _ in 0..<vc {
                guard let vn = string(), let c = signed() else { return fail() }
                post.variants.append(FastPost.Variant(name: vn, count: c))
            }
            post.toggles.append(FastPost.Toggle(name: name, yes: yes, no: no, variants: first..<post.variants.count))
        }
        var impact: [UInt8]?
        if flags & 4 != 0 {
            guard let n = varint(), n <= UInt64(p.endIndex - i) else { return fail() }
            impact = Array(p[i..<(i + Int(n))])
            i += Int(n)
        }
        guard i == p.endIndex else { return fail() }
        post.appName = app
        post.instanceId = instance
        post.start = start
        post.stop = stop
        post.impact = nil
        post.impactRange = nil
        post.sdk.removeAll()
        for r in sdk { post.sdk.append(r) }
        let tokenText: String
        if let last = lastToken, last.range == token { tokenText = last.text } else {
            tokenText = text(token)
            lastToken = (token, tokenText)
        }
        return Decoded(now: now, token: tokenText, interval: interval.map(text),
                       sdkHeaders: headers.map { (text($0.0), text($0.1)) }, impact: impact)
    }
}
