import CZlib

/// One accepted post as the journal keeps it: enough to merge it again exactly as it was
/// merged — the kind, when it arrived, the token it was filed under, the request headers
/// ingest read, and the body as received (gzip stays gzip).
///
/// On disk a record is `length` (u32, little endian, of the payload), `crc32c` (u32, of the
/// payload; zlib's CRC-32 in format 1), then the payload: a type byte, and for a post the
/// kind, the arrival time (i64) and tagged fields, the body last. A checkpoint segment opens
/// with a `checkpoint` record naming the segments it replaces and closes its snapshot with
/// `checkpointEnd`.
public struct JournalRecord: Sendable, Equatable {
    public enum RecordType: UInt8, Sendable { case post = 1, checkpoint = 2, checkpointEnd = 3, compact = 4 }

    public var kind: Ingest.Kind
    public var now: Int64
    public var token: String
    public var headers: Ingest.Headers
    /// The SDK fields' fallback request headers (`SDKField.header`) the request carried.
    public var sdkHeaders: [(name: String, value: String)]
    public var body: [UInt8]

    public init(kind: Ingest.Kind, now: Int64, token: String, headers: Ingest.Headers,
                sdkHeaders: [(name: String, value: String)] = [], body: [UInt8]) {
        self.kind = kind
        self.now = now
        self.token = token
        self.headers = headers
        self.sdkHeaders = sdkHeaders
        self.body = body
    }

    public static func == (a: JournalRecord, b: JournalRecord) -> Bool {
        a.kind == b.kind && a.now == b.now && a.token == b.token && a.headers == b.headers && a.body == b.body
            && a.sdkHeaders.map(\.name) == b.sdkHeaders.map(\.name) && a.sdkHeaders.map(\.value) == b.sdkHeaders.map(\.value)
    }

    /// The fields of a post record, each `tag` (u8), `length` (u32), bytes; the body comes last.
    enum Tag: UInt8 { case body = 0, token = 1, contentType = 2, contentEncoding = 3, interval = 4, header = 5 }

    /// `length` and `crc32` before each payload.
    static let frame = 8
    /// A record larger than this is corrupt, whatever its length field says.
    static let maxPayload = 1 << 30
}

/// Writes post records into a reusable buffer: the head (frame and fields) is encoded here, the
/// body is written after it as it lies in the request, without a copy.
struct JournalEncoder {
    private(set) var head: [UInt8] = []

    init() { head.reserveCapacity(512) }

    /// Encodes everything of a post record but its body bytes; the checksum covers the body too.
    mutating func encodePost(kind: Ingest.Kind, now: Int64, token: String, headers: Ingest.Headers,
                             sdkHeaders: [(name: String, value: String)], body: UnsafeRawBufferPointer) {
        head.removeAll(keepingCapacity: true)
        append32(0) // length, filled in below
        append32(0) // crc32
        head.append(JournalRecord.RecordType.post.rawValue)
        head.append(kind.journalByte)
        append64(UInt64(bitPattern: now))
        field(.token, token)
        if let v = headers.contentType { field(.contentType, v) }
        if let v = headers.contentEncoding { field(.contentEncoding, v) }
        if let v = headers.interval { field(.interval, v) }
        for (name, value) in sdkHeaders { field(.header, name + "\0" + value) }
        head.append(JournalRecord.Tag.body.rawValue)
        append32(UInt32(body.count))
        let payload = head.count - JournalRecord.frame + body.count
        store32(UInt32(payload), at: 0)
        var c = head.withUnsafeBufferPointer { mp_crc32c(0, $0.baseAddress! + JournalRecord.frame, $0.count - JournalRecord.frame) }
        if body.count > 0 { c = mp_crc32c(c, body.baseAddress!, body.count) }
        store32(c, at: 4)
    }

    /// A whole record of another type (checkpoint markers), frame included.
    static func encode(_ type: JournalRecord.RecordType, payload: [UInt8]) -> [UInt8] {
        var e = JournalEncoder()
        e.head.removeAll()
        let full = [type.rawValue] + payload
        e.append32(UInt32(full.count))
        e.append32(full.withUnsafeBufferPointer { mp_crc32c(0, $0.baseAddress, $0.count) })
        return e.head + full
    }

    static func encode(_ r: JournalRecord) -> [UInt8] {
        var e = JournalEncoder()
        r.body.withUnsafeBytes { e.encodePost(kind: r.kind, now: r.now, token: r.token, headers: r.headers, sdkHeaders: r.sdkHeaders, body: $0) }
        return e.head + r.body
    }

    private mutating func field(_ tag: JournalRecord.Tag, _ value: String) {
        head.append(tag.rawValue)
        var v = value
        v.withUTF8 { u in
            append32(UInt32(u.count))
            head.append(contentsOf: u)
        }
    }

    private mutating func append32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { head.append(contentsOf: $0) } }
    private mutating func append64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { head.append(contentsOf: $0) } }
    private mutating func store32(_ v: UInt32, at i: Int) {
        withUnsafeBytes(of: v.littleEndian) { for k in 0..<4 { head[i + k] = $0[k] } }
    }
}

/// Reads a segment's records in order. It stops at the first record that is torn (shorter than
/// its length), fails its checksum or does not parse: what follows such a point cannot be
/// trusted, and a torn tail is a post whose answer never left.
public struct JournalReader {
    public enum Item {
        /// A post; its `body` is left empty and given as a slice of the segment's bytes.
        case post(JournalRecord, body: ArraySlice<UInt8>)
        /// A checkpoint opens: the segments it replaces.
        case checkpoint(supersedes: [UInt64])
        case checkpointEnd
        /// A post in the compact form (`CompactEncoder`): the post's ranges point into `body`,
        /// the segment's strings, valid during the call.
        case compact(CompactDecoder.Decoded, FastPost, body: UnsafeBufferPointer<UInt8>)
    }

    public struct Damage: Sendable, Equatable {
        /// Where the unreadable part starts, and how many bytes it holds.
        public var offset: Int
        public var bytes: Int
        public var reason: String
    }

    /// Calls `each` for every readable record after the segment's magic line; returns the
    /// damage that ended the read early, if any.
    public static func read(_ bytes: [UInt8], _ each: (Item) -> Void) -> Damage? {
        let compact = CompactDecoder()
        return frames(bytes) { start, length in
            if bytes[start] == JournalRecord.RecordType.compact.rawValue {
                guard let d = compact.decode(bytes[(start + 1)..<(start + length)]) else { return false }
                compact.store.withUnsafeBufferPointer { each(.compact(d, compact.post, body: $0)) }
            } else {
                guard let item = parse(bytes[start..<(start + length)]) else { return false }
                each(item)
            }
            return true
        }
    }

    /// Whether the segment opens with a checkpoint, which segments it replaces, and whether
    /// it is whole (its end marker readable): found from the records' types alone, without
    /// decoding the posts.
    static func checkpoint(in bytes: [UInt8]) -> (supersedes: [UInt64], complete: Bool)? {
        var supersedes: [UInt64]?, complete = false, first = true
        _ = frames(bytes) { start, length in
            defer { first = false }
            switch JournalRecord.RecordType(rawValue: bytes[start]) {
            case .checkpoint where first:
                guard case .checkpoint(let s)? = parse(bytes[start..<(start + length)]) else { return false }
                supersedes = s
            case .checkpointEnd where supersedes != nil: complete = true
            default: if first { return false } // not a checkpoint segment: nothing more to learn
            }
            return true
        }
        return supersedes.map { ($0, complete) }
    }

    /// Walks the segment's records: `each` gets each whole, checksummed payload (its start
    /// and length) and says whether it parsed. Returns where the readable part ends early.
    private static func frames(_ bytes: [UInt8], _ each: (_ start: Int, _ length: Int) -> Bool) -> Damage? {
        // A segment created but never written to (a crash right after its creation) holds nothing.
        if bytes.isEmpty { return nil }
        // Format 1 (zlib's CRC-32) is still read: a proxy upgraded with a journal replays it.
        let magic = Array(JournalSegment.magic.utf8), first = Array(JournalSegment.magicFormat1.utf8)
        let format1 = bytes.count >= first.count && bytes[..<first.count].elementsEqual(first)
        guard format1 || bytes.count >= magic.count && bytes[..<magic.count].elementsEqual(magic) else {
            return Damage(offset: 0, bytes: bytes.count, reason: "not a journal segment of a known version")
        }
        var at = format1 ? first.count : magic.count
        while at < bytes.count {
            func damaged(_ why: String) -> Damage { Damage(offset: at, bytes: bytes.count - at, reason: why) }
            guard bytes.count - at >= JournalRecord.frame else {
                return bytes[at...].allSatisfy({ $0 == 0 }) ? nil : damaged("torn record frame")
            }
            let length = Int(u32(bytes[...], at))
            let sum = u32(bytes[...], at + 4)
            // The space reserved past the last record reads as zeros: the end, if all of it is.
            if length == 0 && sum == 0 {
                guard bytes[at...].allSatisfy({ $0 == 0 }) else { return damaged("data after an empty record frame") }
                return nil
            }
            guard length >= 1, length <= JournalRecord.maxPayload else { return damaged("record length \(length) out of range") }
            guard bytes.count - at - JournalRecord.frame >= length else { return damaged("torn record: \(length) bytes announced") }
            let start = at + JournalRecord.frame
            let computed = bytes.withUnsafeBufferPointer { b in
                format1 ? UInt32(truncatingIfNeeded: crc32(crc32(0, nil, 0), b.baseAddress! + start, UInt32(length)))
                    : mp_crc32c(0, b.baseAddress! + start, length)
            }
            guard computed == sum else { return damaged("checksum mismatch") }
            guard each(start, length) else { return damaged("record does not parse") }
            at = start + length
        }
        return nil
    }

    static func parse(_ p: ArraySlice<UInt8>) -> Item? {
        var i = p.startIndex
        guard let t = p.first.flatMap(JournalRecord.RecordType.init(rawValue:)) else { return nil }
        i += 1
        switch t {
        case .checkpointEnd:
            return p.count == 1 ? .checkpointEnd : nil
        case .compact:
            return nil // read by the caller, which keeps the segment's strings
        case .checkpoint:
            guard p.count >= 5 else { return nil }
            let n = Int(u32(p, i))
            i += 4
            guard p.count == 5 + 8 * n else { return nil }
            return .checkpoint(supersedes: (0..<n).map { u64(p, i + 8 * $0) })
        case .post:
            guard p.endIndex - i >= 9, let kind = Ingest.Kind(journalByte: p[i]) else { return nil }
            let now = Int64(bitPattern: u64(p, i + 1))
            i += 9
            var r = JournalRecord(kind: kind, now: now, token: "", headers: Ingest.Headers(), body: [])
            var hasToken = false
            while i < p.endIndex {
                guard p.endIndex - i >= 5, let tag = JournalRecord.Tag(rawValue: p[i]) else { return nil }
                let n = Int(u32(p, i + 1))
                i += 5
                guard p.endIndex - i >= n else { return nil }
                let value = p[i..<(i + n)]
                i += n
                switch tag {
                case .body:
                    guard i == p.endIndex, hasToken else { return nil }
                    return .post(r, body: value)
                case .token: r.token = String(decoding: value, as: UTF8.self); hasToken = true
                case .contentType: r.headers.contentType = String(decoding: value, as: UTF8.self)
                case .contentEncoding: r.headers.contentEncoding = String(decoding: value, as: UTF8.self)
                case .interval: r.headers.interval = String(decoding: value, as: UTF8.self)
                case .header:
                    guard let nul = value.firstIndex(of: 0) else { return nil }
                    r.sdkHeaders.append((String(decoding: value[..<nul], as: UTF8.self),
                                         String(decoding: value[(nul + 1)...], as: UTF8.self)))
                }
            }
            return nil // no body
        }
    }

    /// Little-endian integers at absolute indices (a slice keeps its array's indices).
    static func u32(_ b: ArraySlice<UInt8>, _ at: Int) -> UInt32 {
        UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
    }

    static func u64(_ b: ArraySlice<UInt8>, _ at: Int) -> UInt64 {
        UInt64(u32(b, at)) | UInt64(u32(b, at + 4)) << 32
    }
}

extension Ingest.Kind {
    /// The kind's byte in a post record.
    var journalByte: UInt8 {
        switch self {
        case .metrics: return 0
        case .register: return 1
        case .bulk: return 2
        }
    }

    init?(journalByte: UInt8) {
        switch journalByte {
        case 0: self = .metrics
        case 1: self = .register
        case 2: self = .bulk
        default: return nil
        }
    }
}
