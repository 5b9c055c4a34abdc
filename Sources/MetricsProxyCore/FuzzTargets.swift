/// What the fuzzers (Tests/Fuzz/) run on each input, kept here so the regression tests run exactly
/// the same checks on every input a fuzzer ever found. Each returns normally for any input,
/// valid or not; a crash or a failed `precondition` is a bug.
public enum FuzzTargets {
    /// The metrics decoders: the full decoder and the register decoder on any bytes; the fast
    /// path must accept only what the full decoder accepts, with the same meaning once merged;
    /// and gzip/deflate inflation stays within its limit.
    public static func decoder(_ bytes: UnsafeBufferPointer<UInt8>) {
        let token = "default:development.fuzz"
        var slow: Window?
        if let post = try? MetricsPostDecoder.decode(bytes) {
            var w = Window(opened: 0)
            w.merge(post, token: token, interval: nil, now: 0)
            slow = w
        }
        var fast = FastPost()
        if FastPostScanner.scan(bytes, into: &fast) {
            precondition(slow != nil, "the fast path accepted a body the full decoder refuses")
            var w = Window(opened: 0)
            w.merge(fast, body: bytes, token: token, interval: nil, now: 0) { (nil, nil) }
            precondition(w.groups == slow!.groups && w.keyCount == slow!.keyCount && w.instances == slow!.instances,
                         "the fast path and the full decoder disagree on what the body means")
        }
        _ = try? RegistrationDecoder.decode(bytes)
        for gzip in [true, false] {
            if let inflated = try? BodyInflater.inflate(bytes, gzip: gzip, limit: 4096) {
                precondition(inflated.count <= 4096, "inflation went past its limit")
            }
        }
    }

    /// proxy.conf: any text either parses or names a line that exists.
    public static func config(_ bytes: UnsafeBufferPointer<UInt8>) {
        let text = String(decoding: bytes, as: UTF8.self)
        do {
            _ = try ConfigParser(file: "fuzz.conf", environment: ["SET": "value", "EMPTY": ""]).parse(text)
        } catch {
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false).count
            precondition(error.line >= 0 && error.line <= lines, "error names line \(error.line) of \(lines)")
        }
    }

    /// A spool file: read as it is, and again with its checksum line made to match, so the
    /// fuzzer gets past the CRC to the header fields. Whatever decodes must encode back the same.
    public static func spool(_ bytes: UnsafeBufferPointer<UInt8>) {
        let raw = Array(bytes)
        for candidate in [raw, withMatchingChecksum(raw)] {
            guard let batch = try? SpoolFile.decode(candidate) else { continue }
            let again = try? SpoolFile.decode(SpoolFile.encode(batch))
            precondition(again == batch, "a decoded batch does not survive encode and decode")
        }
    }

    /// `bytes` with the value of its `crc32:` line replaced by the checksum of what it covers.
    static func withMatchingChecksum(_ bytes: [UInt8]) -> [UInt8] {
        let marker = Array("\ncrc32: ".utf8)
        guard let m = bytes.firstRange(of: marker), let blank = bytes[m.lowerBound...].firstRange(of: [0x0A, 0x0A]) else {
            return bytes
        }
        let covered = Array(bytes[...m.lowerBound])
        let body = Array(bytes[blank.upperBound...])
        return covered + Array("crc32: \(SpoolFile.hex(SpoolFile.crc(covered, body)))\n\n".utf8) + body
    }
}
