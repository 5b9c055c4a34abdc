/// A post read in one loop over raw bytes. The toggles object, the bulk of every post: each
/// name found a word at a time (not hashed: see `FeatureTable.updateOwned(_:hint:…)`), each
/// toggle's counts matched against the shape SDKs write, counts parsed in place. The top
/// level and the bucket: keys told apart by length, then compared. Anything unusual makes it
/// answer false and the full decoder reads the body; only unknown keys are skipped, with the
/// general scanner.
struct PostReader {
    let base: UnsafePointer<UInt8>
    let n: Int
    /// The next byte to read.
    var i: Int

    init(base: UnsafePointer<UInt8>, count: Int, at i: Int) {
        self.base = base
        n = count
        self.i = i
    }

    private static let quote = UInt8(ascii: "\""), comma = UInt8(ascii: ","), colon = UInt8(ascii: ":")
    private static let open = UInt8(ascii: "{"), close = UInt8(ascii: "}")
    /// `yes"` and `variants` as little-endian words.
    private static let yesWord: UInt32 = 0x2273_6579, variantsWord: UInt64 = 0x7374_6E61_6972_6176

    @inline(__always)
    private func at(_ b: UInt8) -> Bool { i < n && base[i] == b }

    @inline(__always)
    mutating func skipWhitespace() {
        while i < n {
            let b = base[i]
            guard b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 else { return }
            i &+= 1
        }
    }

    /// White space, `b`, white space.
    @inline(__always)
    private mutating func expect(_ b: UInt8) -> Bool {
        skipWhitespace()
        guard at(b) else { return false }
        i &+= 1
        skipWhitespace()
        return true
    }

    /// After a name's opening quote: a plain ASCII name (no escapes, control characters or
    /// bytes above 0x7F; the full decoder turns invalid UTF-8 into U+FFFD, so two different
    /// invalid names would be one name there); `i` ends past the closing quote. Not hashed:
    /// the window finds most names without their hash (`FeatureTable.updateOwned(_:hint:…)`).
    @inline(__always)
    mutating func name() -> Range<Int>? {
        let start = i
        var p = i
        while n &- p >= 8 {
            let m = SWAR.quoteBackslashControlOrHigh(UnsafeRawPointer(base + p).loadUnaligned(as: UInt64.self).littleEndian)
            if m == 0 {
                p &+= 8
                continue
            }
            p &+= m.trailingZeroBitCount >> 3
            guard base[p] == Self.quote else { return nil }
            i = p &+ 1
            return start..<p
        }
        while p < n {
            let b = base[p]
            if b == Self.quote {
                i = p &+ 1
                return start..<p
            }
            if b == UInt8(ascii: "\\") || b < 0x20 || b > 0x7F { return nil }
            p &+= 1
        }
        return nil
    }

    /// A count as SDKs write it: a non-negative integer literal of 1 to 15 digits (so below
    /// 2^53). Nil for anything else (a sign, a fraction, an exponent, a leading zero, more
    /// digits, or not a number at all).
    @inline(__always)
    mutating func count() -> Int64? {
        if n &- i >= 3 {
            // One or two digits, most counts in a minute's bucket.
            let d0 = base[i] &- UInt8(ascii: "0"), d1 = base[i &+ 1] &- UInt8(ascii: "0")
            if d0 < 10, d1 >= 10 {
                let b = base[i &+ 1]
                guard b != UInt8(ascii: "."), b | 0x20 != UInt8(ascii: "e") else { return nil }
                i &+= 1
                return Int64(d0)
            }
            if d0 &- 1 < 9, d1 < 10, base[i &+ 2] &- UInt8(ascii: "0") >= 10 {
                let b = base[i &+ 2]
                guard b != UInt8(ascii: "."), b | 0x20 != UInt8(ascii: "e") else { return nil }
                i &+= 2
                return Int64(d0) &* 10 &+ Int64(d1)
            }
        }
        return longerCount()
    }

    /// `count` past one or two digits (kept out of line so the short case inlines).
    @inline(never)
    private mutating func longerCount() -> Int64? {
        let start = i
        var v: Int64 = 0
        if n &- i >= 8 {
            // Up to seven digits (nearly every count) found and converted a word at a time.
            let w = UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self).littleEndian
            let k = Self.leadingDigits(w)
            if k < 8 {
                guard k >= 1, k == 1 || base[i] != UInt8(ascii: "0") else { return nil }
                i &+= k
                let b = base[i]
                guard b != UInt8(ascii: "."), b | 0x20 != UInt8(ascii: "e") else { return nil }
                return Int64(Self.digitsValue(w, count: k))
            }
        }
        if at(UInt8(ascii: "0")) {
            i &+= 1
        } else {
            while i < n, base[i] &- UInt8(ascii: "0") < 10, i &- start < 16 {
                v = v &* 10 &+ Int64(base[i] &- UInt8(ascii: "0"))
                i &+= 1
            }
        }
        let digits = i &- start
        guard digits >= 1, digits <= 15 else { return nil }
        if i < n {
            let b = base[i]
            if b &- UInt8(ascii: "0") < 10 || b == UInt8(ascii: ".") || b | 0x20 == UInt8(ascii: "e") { return nil }
        }
        return v
    }

    /// How many of the word's bytes, from the first, are ASCII digits (8 when all are).
    @inline(__always)
    static func leadingDigits(_ w: UInt64) -> Int {
        let f0: UInt64 = 0xF0F0_F0F0_F0F0_F0F0, sevens: UInt64 = 0x7F7F_7F7F_7F7F_7F7F
        // A digit byte is 0x3_ and stays 0x3_ when 6 is added; anything else is flagged. A
        // carry out of a byte ≥ 0xFA only disturbs bytes after a flagged one.
        let y = ((w & f0) | (((w &+ 0x0606_0606_0606_0606) & f0) >> 4)) ^ 0x3333_3333_3333_3333
        let flags = (((y & sevens) &+ sevens) | y) & SWAR.highs
        return flags.trailingZeroBitCount >> 3
    }

    /// The value of the first `count` (1 to 7) digits of the word: shifted so the digits
    /// end at the last byte (zero bytes in front read as leading zeros), then paired up.
    @inline(__always)
    static func digitsValue(_ w: UInt64, count: Int) -> UInt64 {
        var v = (w & 0x0F0F_0F0F_0F0F_0F0F) &<< UInt64(8 &* (8 &- count))
        v = (v &* 2561) >> 8
        v = ((v & 0x00FF_00FF_00FF_00FF) &* 6_553_601) >> 16
        return ((v & 0x0000_FFFF_0000_FFFF) &* 42_949_672_960_001) >> 32
    }

    /// Past a ',' (true, white space skipped) or the closing '}' (false); nil for anything else.
    @inline(__always)
    private mutating func another() -> Bool? {
        skipWhitespace()
        guard i < n else { return nil }
        if base[i] == Self.comma { i &+= 1; skipWhitespace(); return true }
        if base[i] == Self.close { i &+= 1; return false }
        return nil
    }

    /// The whole post: its top-level object, with `appName` (not empty) and a `bucket`.
    mutating func readPost(into p: inout FastPost, scanner: JSONScanner) -> Bool {
        var sawApp = false, sawBucket = false
        let complete = members(scanner) { r, key in
            switch key.count {
            case 6 where r.keyIs(key, "bucket"):
                guard !sawBucket else { return false }
                sawBucket = true
                return r.bucket(into: &p, scanner: scanner)
            // Impact metrics: read by the full decoder's reader for them (each metric alone),
            // from here. Twice in one body, the full decoder decides (the last one counts, as
            // in JSON.parse).
            case 13 where r.keyIs(key, "impactMetrics"):
                guard p.impact == nil else { return false }
                var d = Decoding(scanner: scanner)
                d.scanner.position = r.i
                guard let impact = try? d.impactMetrics() else { return false }
                p.impactRange = r.i..<d.scanner.position
                r.i = d.scanner.position
                p.impact = impact
            case 7 where r.keyIs(key, "appName"):
                guard let v = r.plainString() else { return false }
                p.appName = v
                sawApp = true
            case 10 where r.keyIs(key, "instanceId"): return r.plainString(into: &p.instanceId)
            default:
                // One of the SDK's fields about itself, or a member the proxy does not keep.
                guard let f = p.sdkFields.first(where: { key.count == $0.key.utf8CodeUnitCount && r.keyIs(key, $0.key) }) else {
                    return r.skipValue(scanner)
                }
                guard let v = r.plainString(), v.count <= f.schemaMaxLength ?? .max else { return false }
                p.sdk[f.index] = v
            }
            return true
        }
        return complete && sawApp && !p.appName.isEmpty && sawBucket
    }

    /// The bucket object: `start` and `stop` (each once) and `toggles` (once).
    private mutating func bucket(into p: inout FastPost, scanner: JSONScanner) -> Bool {
        var start: Int64?, stop: Int64?, sawToggles = false
        let complete = members(scanner) { r, key in
            switch key.count {
            case 5 where r.keyIs(key, "start"):
                guard start == nil else { return false }
                start = r.date(scanner)
                return start != nil
            case 4 where r.keyIs(key, "stop"):
                guard stop == nil else { return false }
                stop = r.date(scanner)
                return stop != nil
            case 7 where r.keyIs(key, "toggles"):
                guard !sawToggles, r.at(Self.open) else { return false }
                sawToggles = true
                r.i &+= 1
                return r.readToggles(into: &p, scanner: scanner)
            default:
                return r.skipValue(scanner)
            }
        }
        guard complete, let start, let stop, sawToggles else { return false }
        p.start = start
        p.stop = stop
        return true
    }

    /// An object's members, each key (a plain string) handed to `member` with `i` at its
    /// value, which `member` reads (true) or refuses (false).
    @inline(__always)
    private mutating func members(_ scanner: JSONScanner, _ member: (inout PostReader, Range<Int>) -> Bool) -> Bool {
        skipWhitespace()
        guard at(Self.open) else { return false }
        i &+= 1
        skipWhitespace()
        if at(Self.close) {
            i &+= 1
            return true
        }
        while true {
            guard at(Self.quote) else { return false }
            i &+= 1
            guard let key = rawString(), expect(Self.colon), member(&self, key), let more = another() else { return false }
            if !more { return true }
        }
    }

    @inline(__always)
    private func keyIs(_ key: Range<Int>, _ name: StaticString) -> Bool {
        sameBytes(base + key.lowerBound, name.utf8Start, key.count)
    }

    /// After a string's opening quote: its bytes up to the closing quote, which `i` ends past.
    /// Nil when it has an escape or a control character (the full decoder judges those).
    @inline(__always)
    private mutating func rawString() -> Range<Int>? {
        let start = i
        i = SWAR.skipPlain(base, from: i, count: n)
        while i < n {
            let b = base[i]
            if b == Self.quote {
                i &+= 1
                return start..<i - 1
            }
            if b == UInt8(ascii: "\\") || b < 0x20 { return nil }
            i &+= 1
        }
        return nil
    }

    /// A string value without escapes, as a byte range.
    private mutating func plainString() -> Range<Int>? {
        guard at(Self.quote) else { return nil }
        i &+= 1
        return rawString()
    }

    /// `plainString` into `field`; false when the value is not one.
    private mutating func plainString(into field: inout Range<Int>?) -> Bool {
        field = plainString()
        return field != nil
    }

    /// `start` or `stop`: an RFC 3339 string, or epoch milliseconds as an integer literal.
    private mutating func date(_ scanner: JSONScanner) -> Int64? {
        if at(Self.quote) {
            i &+= 1
            guard let r = rawString() else { return nil }
            return Timestamp.parse(rfc3339: UnsafeBufferPointer(start: base, count: n)[r])
        }
        var s = scanner
        s.position = i
        guard let number = try? s.readNumber(), number.isIntegerLiteral, number.text.count <= 17 else { return nil }
        i = s.position
        let d = number.doubleValue
        guard abs(d) <= Double(Timestamp.maxMillis) else { return nil }
        return Int64(d)
    }

    /// Any value, skipped with the general scanner.
    private mutating func skipValue(_ scanner: JSONScanner) -> Bool {
        var s = scanner
        s.position = i
        guard (try? s.skipValue()) != nil else { return false }
        i = s.position
        return true
    }

    /// From just inside the toggles object's '{' to just past its '}'.
    mutating func readToggles(into p: inout FastPost, scanner: JSONScanner) -> Bool {
        skipWhitespace()
        if at(Self.close) { i &+= 1; return true }
        while true {
            guard at(Self.quote) else { return false }
            switch shapedToggles(into: &p) {
            case .end: return true
            case .afterToggle: break
            case .notShaped:
                // This toggle key by key, in any order and spacing.
                i &+= 1
                guard let name = name() else { return false }
                p.longestName = Swift.max(p.longestName, name.count)
                let firstVariant = p.variants.count
                var t = FastPost.Toggle(name: name, yes: 0, no: 0, variants: firstVariant..<firstVariant)
                guard counts(&t, into: &p, scanner: scanner) else { return false }
                p.toggles.append(t)
            }
            guard let more = another() else { return false }
            if !more { return true }
        }
    }

    enum ShapedRun { case end, afterToggle, notShaped }

    /// From a toggle's opening quote, as many toggles as come in the shape SDKs write (see
    /// `shaped`), in one loop: `.end` past the toggles' closing '}', `.afterToggle` just after
    /// a toggle followed by some other separator, `.notShaped` back at the opening quote of
    /// a toggle written otherwise (its variants taken back).
    private mutating func shapedToggles(into p: inout FastPost) -> ShapedRun {
        while true {
            let start = i
            i &+= 1
            guard let name = name() else {
                i = start
                return .notShaped
            }
            let firstVariant = p.variants.count
            var t = FastPost.Toggle(name: name, yes: 0, no: 0, variants: firstVariant..<firstVariant)
            guard shaped(&t, into: &p) else {
                i = start
                p.variants.truncate(to: firstVariant)
                return .notShaped
            }
            p.longestName = Swift.max(p.longestName, name.count)
            p.toggles.append(t)
            // `, "` or `,"` to the next toggle, or the toggles' '}'.
            guard n &- i >= 3 else { return .afterToggle }
            let b0 = base[i], b1 = base[i &+ 1]
            if b0 == Self.close {
                i &+= 1
                return .end
            }
            guard b0 == Self.comma else { return .afterToggle }
            if b1 == Self.quote {
                i &+= 1
            } else if b1 == 0x20, base[i &+ 2] == Self.quote {
                i &+= 2
            } else {
                return .afterToggle
            }
        }
    }

    @inline(__always)
    private func word(at k: Int) -> UInt64 { UnsafeRawPointer(base + k).loadUnaligned(as: UInt64.self).littleEndian }

    /// The separators SDKs write, as little-endian words: `: {"yes"` and `: ` (Python's json,
    /// `", "` and `": "`), `:{"yes":`, `, "no": `, `,"no":` (6 bytes), `, "varia` + `ants": {`
    /// (15 bytes, overlapping), `,"varian` + `iants":{` (13 bytes, overlapping).
    static let spacedYes: UInt64 = 0x2273_6579_227B_203A, spacedColon: UInt64 = 0x203A
    static let compactYes: UInt64 = 0x3A22_7365_7922_7B3A
    static let spacedNo: UInt64 = 0x203A_226F_6E22_202C, compactNo: UInt64 = 0x3A22_6F6E_222C
    static let spacedVariants0: UInt64 = 0x6169_7261_7622_202C, spacedVariants1: UInt64 = 0x7B20_3A22_7374_6E61
    static let compactVariants0: UInt64 = 0x6E61_6972_6176_222C, compactVariants1: UInt64 = 0x7B3A_2273_746E_6169

    /// From a toggle name's closing quote, its counts in the shape SDKs write them —
    /// `: {"yes": N, "no": N, "variants": {…}}` with Python's spaces or none — matched a word
    /// at a time instead of a byte at a time. False for anything else (other spacing or key
    /// order, unknown keys): the caller reads the toggle again with `counts`.
    @inline(__always)
    mutating func shaped(_ t: inout FastPost.Toggle, into p: inout FastPost) -> Bool {
        guard n &- i >= 16 else { return false }
        let spaced: Bool
        let w = word(at: i)
        if w == Self.spacedYes, word(at: i &+ 8) & 0xFFFF == Self.spacedColon {
            spaced = true
            i &+= 10
        } else if w == Self.compactYes {
            spaced = false
            i &+= 8
        } else {
            return false
        }
        guard let yes = count(), n &- i >= 8 else { return false }
        t.yes = yes
        if spaced {
            guard word(at: i) == Self.spacedNo else { return false }
            i &+= 8
        } else {
            guard word(at: i) & 0xFFFF_FFFF_FFFF == Self.compactNo else { return false }
            i &+= 6
        }
        guard let no = count(), i < n else { return false }
        t.no = no
        if base[i] == Self.close {
            i &+= 1
            return true
        }
        if spaced {
            guard n &- i >= 15, word(at: i) == Self.spacedVariants0, word(at: i &+ 7) == Self.spacedVariants1 else { return false }
            i &+= 15
        } else {
            guard n &- i >= 13, word(at: i) == Self.compactVariants0, word(at: i &+ 5) == Self.compactVariants1 else { return false }
            i &+= 13
        }
        let from = p.variants.count
        if i < n, base[i] != Self.close {
            while true {
                guard at(Self.quote) else { return false }
                i &+= 1
                guard let name = name() else { return false }
                if spaced {
                    guard n &- i >= 2, UnsafeRawPointer(base + i).loadUnaligned(as: UInt16.self).littleEndian == UInt16(Self.spacedColon)
                    else { return false }
                    i &+= 2
                } else {
                    guard at(Self.colon) else { return false }
                    i &+= 1
                }
                guard let c = count() else { return false }
                p.variants.append(FastPost.Variant(name: name, count: c))
                p.longestName = Swift.max(p.longestName, name.count)
                guard i < n else { return false }
                if base[i] == Self.close { break }
                guard base[i] == Self.comma else { return false }
                i &+= 1
                if spaced {
                    guard at(0x20) else { return false }
                    i &+= 1
                }
            }
        }
        // The variants' '}' and the toggle's.
        guard n &- i >= 2, base[i &+ 1] == Self.close else { return false }
        i &+= 2
        t.variants = from..<p.variants.count
        return true
    }

    /// From a toggle name's closing quote to past its object's '}', key by key, in any order
    /// and spacing.
    private mutating func counts(_ t: inout FastPost.Toggle, into p: inout FastPost, scanner: JSONScanner) -> Bool {
        guard expect(Self.colon), at(Self.open) else { return false }
        i &+= 1
        skipWhitespace()
        if at(Self.close) {
            i &+= 1
            return true
        }
        var sawVariants = false
        while true {
            guard at(Self.quote) else { return false }
            i &+= 1
            if n &- i >= 4, UnsafeRawPointer(base + i).loadUnaligned(as: UInt32.self).littleEndian == Self.yesWord {
                i &+= 4
                guard expect(Self.colon), let v = count() else { return false }
                t.yes = v
            } else if n &- i >= 3, base[i] == UInt8(ascii: "n"), base[i &+ 1] == UInt8(ascii: "o"), base[i &+ 2] == Self.quote {
                i &+= 3
                guard expect(Self.colon), let v = count() else { return false }
                t.no = v
            } else if n &- i >= 9, UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self).littleEndian == Self.variantsWord,
                      base[i &+ 8] == Self.quote {
                i &+= 9
                guard !sawVariants, expect(Self.colon), at(Self.open) else { return false }
                sawVariants = true
                i &+= 1
                guard let v = variants(into: &p) else { return false }
                t.variants = v
            } else {
                // Any other key: skipped with its value, unless it is escaped (it
                // could spell one of the three).
                guard rawString() != nil, expect(Self.colon), skipValue(scanner) else { return false }
            }
            guard let more = another() else { return false }
            if !more { return true }
        }
    }

    /// From just inside a variants object's '{' to just past its '}'; the indices of the
    /// variants added to `p.variants`.
    private mutating func variants(into p: inout FastPost) -> Range<Int>? {
        let from = p.variants.count
        skipWhitespace()
        if at(Self.close) { i &+= 1; return from..<from }
        while true {
            guard at(Self.quote) else { return nil }
            i &+= 1
            guard let name = name(), expect(Self.colon), let c = count() else { return nil }
            p.variants.append(FastPost.Variant(name: name, count: c))
            p.longestName = Swift.max(p.longestName, name.count)
            guard let more = another() else { return nil }
            if !more { return from..<p.variants.count }
        }
    }
}
