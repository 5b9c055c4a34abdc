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
