/// Writes compact JSON into bytes, placing commas itself. Used for every body the proxy makes.
public struct JSONWriter {
    public private(set) var bytes: [UInt8] = []
    /// One flag per open container: whether it already holds a value.
    private var hasValue: [Bool] = []
    private var afterKey = false

    public init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    private mutating func separate() {
        if afterKey { afterKey = false; return }
        if let last = hasValue.last {
            if last { bytes.append(UInt8(ascii: ",")) }
            hasValue[hasValue.count - 1] = true
        }
    }

    public mutating func beginObject() { separate(); bytes.append(UInt8(ascii: "{")); hasValue.append(false) }
    public mutating func endObject() { hasValue.removeLast(); bytes.append(UInt8(ascii: "}")) }
    public mutating func beginArray() { separate(); bytes.append(UInt8(ascii: "[")); hasValue.append(false) }
    public mutating func endArray() { hasValue.removeLast(); bytes.append(UInt8(ascii: "]")) }

    public mutating func key(_ k: String) {
        separate()
        appendQuoted(k)
        bytes.append(UInt8(ascii: ":"))
        afterKey = true
    }

    public mutating func string(_ s: String) { separate(); appendQuoted(s) }
    public mutating func int(_ v: Int64) { separate(); bytes.append(contentsOf: String(v).utf8) }
    public mutating func double(_ v: Double) {
        separate()
        if v.isFinite, v == v.rounded(), abs(v) < 9.007e15 {
            bytes.append(contentsOf: String(Int64(v)).utf8)
        } else {
            bytes.append(contentsOf: (v.isFinite ? String(v) : "null").utf8)
        }
    }
    public mutating func bool(_ v: Bool) { separate(); bytes.append(contentsOf: (v ? "true" : "false").utf8) }
    public mutating func null() { separate(); bytes.append(contentsOf: "null".utf8) }

    /// Appends an already-encoded JSON value.
    public mutating func raw(_ json: [UInt8]) { separate(); bytes.append(contentsOf: json) }

    private mutating func appendQuoted(_ s: String) {
        var text = s
        text.withUTF8 { appendQuoted(bytes: $0) }
    }

    // MARK: fixed shapes
    // For a caller that writes a fixed shape itself, outside the comma bookkeeping (the bulk
    // entries, 100,000 of them in a large window).

    /// Bytes that are already JSON.
    mutating func appendRaw(_ json: UnsafeBufferPointer<UInt8>) { bytes.append(contentsOf: json) }

    mutating func appendRaw(_ json: StaticString) {
        bytes.append(contentsOf: UnsafeBufferPointer(start: json.utf8Start, count: json.utf8CodeUnitCount))
    }

    /// A string's bytes, quoted and escaped.
    mutating func appendQuoted(bytes u: UnsafeBufferPointer<UInt8>) {
        bytes.append(UInt8(ascii: "\""))
        // Most names need no escaping: copy them whole.
        guard u.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) else {
            bytes.append(contentsOf: u)
            bytes.append(UInt8(ascii: "\""))
            return
        }
        for b in u {
            switch b {
            case UInt8(ascii: "\""): bytes.append(UInt8(ascii: "\\")); bytes.append(b)
            case UInt8(ascii: "\\"): bytes.append(UInt8(ascii: "\\")); bytes.append(b)
            case 0x0A: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "n"))
            case 0x0D: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "r"))
            case 0x09: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "t"))
            case 0..<0x20:
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                bytes.append(contentsOf: "\\u00".utf8)
                bytes.append(hex[Int(b >> 4)])
                bytes.append(hex[Int(b & 0xF)])
            default: bytes.append(b)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// An integer's digits, written without making a String.
    mutating func appendInt(_ v: Int64) {
        if v < 0 { bytes.append(contentsOf: String(v).utf8); return }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0) // room for 19 digits, filled from the end
        var n = 0
        var x = UInt64(v)
        withUnsafeMutableBytes(of: &digits) { d in
            repeat {
                n += 1
                d[24 - n] = UInt8(ascii: "0") + UInt8(x % 10)
                x /= 10
            } while x > 0
            bytes.append(contentsOf: d[(24 - n)...])
        }
    }
}
