import CZlib

/// The on-disk form of one spooled batch: a small text header, a blank line, then the exact
/// request body. The checksum (CRC-32) covers every header line above it and the body, so a
/// torn write or a flipped bit anywhere is caught.
///
/// ```
/// metrics-proxy-spool 1
/// id: 00001795860000000-0000
/// created: 1795860000000
/// attempts: 0
/// path: /client/metrics/bulk
/// entries: 42
/// token: default:development.secret
/// journal: 41,42 of 3
/// length: 5120
/// crc32: 89abcdef
///
/// {"applications":[...],"metrics":[...]}
/// ```
public enum SpoolFile {
    public static let magic = "metrics-proxy-spool 1"

    public struct Corrupt: Error, Equatable, CustomStringConvertible {
        public var reason: String
        public var description: String { reason }
    }

    public static func encode(_ b: Batch) -> [UInt8] {
        var head = "\(magic)\nid: \(b.id)\ncreated: \(b.created)\nattempts: \(b.attempts)\npath: \(b.path)\n"
        head += "entries: \(b.entries)\ntoken: \(b.token)\n"
        if !b.journal.isEmpty { head += "journal: \(b.journal.map { String($0) }.joined(separator: ",")) of \(b.windowBatches)\n" }
        head += "length: \(b.body.count)\n"
        let headBytes = Array(head.utf8)
        let sum = crc(headBytes, b.body)
        return headBytes + Array("crc32: \(hex(sum))\n\n".utf8) + b.body
    }

    public static func decode(_ bytes: [UInt8]) throws(Corrupt) -> Batch {
        guard let blank = bytes.firstRange(of: [0x0A, 0x0A]) else { throw Corrupt(reason: "no end of header") }
        let header = bytes[..<(blank.lowerBound + 1)]
        let body = Array(bytes[blank.upperBound...])
        var fields: [String: String] = [:]
        var lines = header.split(separator: 0x0A, omittingEmptySubsequences: false)
        if lines.last?.isEmpty == true { lines.removeLast() }
        guard let first = lines.first, first.elementsEqual(magic.utf8) else {
            throw Corrupt(reason: "not a spool file of this version")
        }
        // Offsets are counted in bytes as read: a header with bytes that are not UTF-8 must
        // not move them (a decoded String would count each such byte as three).
        var crcLineStart = 0
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
            let key = String(decoding: line[..<colon], as: UTF8.self)
            if key == "crc32" { crcLineStart = line.startIndex }
            fields[key] = String(decoding: line[line.index(after: colon)...].dropFirst(), as: UTF8.self)
        }
        guard let crcText = fields["crc32"], let expected = UInt32(crcText, radix: 16), crcLineStart > 0 else {
            throw Corrupt(reason: "no checksum")
        }
        guard crc(Array(bytes[..<crcLineStart]), body) == expected else { throw Corrupt(reason: "checksum mismatch") }
        guard let id = fields["id"], let created = fields["created"].flatMap({ Int64($0) }),
              let attempts = fields["attempts"].flatMap({ Int($0) }), let path = fields["path"],
              let entries = fields["entries"].flatMap({ Int($0) }), let token = fields["token"],
              let length = fields["length"].flatMap({ Int($0) }) else {
            throw Corrupt(reason: "missing header field")
        }
        guard length == body.count else { throw Corrupt(reason: "body is \(body.count) bytes, header says \(length)") }
        var b = Batch(id: id, token: token, path: path, body: body, created: created, attempts: attempts, entries: entries)
        if let j = fields["journal"] {
            let parts = j.split(separator: " ", omittingEmptySubsequences: false)
            let segments = parts[0].split(separator: ",").map { UInt64($0) }
            guard parts.count == 3, parts[1] == "of", let n = Int(parts[2]), n > 0, !segments.isEmpty, !segments.contains(nil) else {
                throw Corrupt(reason: "journal segments \"\(j)\" do not parse")
            }
            b.journal = segments.map { $0! }
            b.windowBatches = n
        }
        return b
    }

    static func crc(_ a: [UInt8], _ b: [UInt8]) -> UInt32 {
        var c = crc32(0, nil, 0)
        a.withUnsafeBufferPointer { c = crc32(c, $0.baseAddress, UInt32($0.count)) }
        b.withUnsafeBufferPointer { c = crc32(c, $0.baseAddress, UInt32($0.count)) }
        return UInt32(truncatingIfNeeded: c)
    }

    static func hex(_ v: UInt32) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }
}
