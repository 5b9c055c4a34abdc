/// Tests on eight bytes at once. Each answers the high bit of every byte that matches; the
/// lowest one set is exact (a borrow only runs upwards from a byte that itself matches).
enum SWAR {
    static let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080

    /// From `i`, eight bytes at a time, to the first quote, backslash or control character,
    /// or to where fewer than eight bytes of the `count` are left (the caller reads on a byte
    /// at a time).
    @inline(__always)
    static func skipPlain(_ base: UnsafePointer<UInt8>, from i: Int, count: Int) -> Int {
        var i = i
        while count &- i >= 8 {
            let m = quoteBackslashOrControl(UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self).littleEndian)
            if m != 0 { return i &+ m.trailingZeroBitCount >> 3 }
            i += 8
        }
        return i
    }

    /// A byte's high bit is set in `x - 0x01…` when it was 0 (or above 0x80), in `w - 0x20…`
    /// when it was below 0x20 (or above 0x9F); `& ~w` drops bytes above 0x7F. A byte that
    /// wraps borrows from the next, so only bytes after the first flagged one can be wrong.
    @inline(__always)
    static func quoteBackslashOrControl(_ w: UInt64) -> UInt64 {
        let q = w ^ (0x22 &* ones), b = w ^ (0x5C &* ones)
        return ((q &- ones) | (b &- ones) | (w &- 0x20 &* ones)) & ~w & highs
    }

    /// The same, and any byte above 0x7F.
    @inline(__always)
    static func quoteBackslashControlOrHigh(_ w: UInt64) -> UInt64 {
        let q = w ^ (0x22 &* ones), b = w ^ (0x5C &* ones)
        return ((q &- ones) | (b &- ones) | (w &- 0x20 &* ones) | w) & highs
    }
}
