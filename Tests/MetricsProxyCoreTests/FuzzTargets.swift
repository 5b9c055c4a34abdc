import CZlib
#if !FUZZING
// Tests/Fuzz/run.sh compiles this file into the core's own module (with -D FUZZING).
@testable import MetricsProxyCore
#endif

/// What the fuzzers (Tests/Fuzz/) run on each input, kept beside the tests so the regression
/// tests run exactly the same checks on every input a fuzzer ever found. Each returns normally
/// for any input, valid or not; a crash or a failed `precondition` is a bug.
enum FuzzTargets {
    /// The whole intake, `Ingest.accept`, as a metrics post, a registration and a bulk post: with the
    /// fast path on and off it must give the same answer and the same window (the fast path
    /// accepts only what the full decoder accepts, with the same meaning), also at a small key
    /// cap; a post that is not accepted leaves the window as it was. And gzip/deflate
    /// inflation stays within its limit.
    static func decoder(_ bytes: UnsafeBufferPointer<UInt8>) {
        let headers = Ingest.Headers(contentType: "application/json", authorization: "default:development.fuzz")
        let sdkHeader: (String) -> String? = { $0 == "unleash-sdk" ? "fuzz-sdk:1.0" : nil }
        for maxKeys in [200_000, 4] {
            var config = Config()
            config.limits.maxKeys = maxKeys
            var fast = Ingest(config), full = Ingest(config, fastPath: false)
            for kind in [Ingest.Kind.metrics, .register, .bulk] {
                var a = Window(opened: 0), b = Window(opened: 0)
                let answer = fast.accept(kind, headers: headers, body: bytes, into: &a, now: 0, header: sdkHeader)
                let expected = full.accept(kind, headers: headers, body: bytes, into: &b, now: 0, header: sdkHeader)
                precondition(answer == expected, "the fast path and the full decoder answer differently")
                precondition(a.groups == b.groups && a.keyCount == b.keyCount && a.instances == b.instances,
                             "the fast path and the full decoder disagree on what the body means")
                precondition(answer == .accepted || a.isEmpty, "a post that was not accepted changed the window")
                precondition(a.impact.series == b.impact.series && fast.impactDropped == full.impactDropped,
                             "the fast path and the full decoder disagree on impact metrics")
                if answer == .accepted { checkBodies(a) }
            }
        }
        for gzip in [true, false] {
            if let inflated = try? BodyInflater.inflate(bytes, gzip: gzip, limit: 4096) {
                precondition(inflated.count <= 4096, "inflation went past its limit")
            }
        }
    }

    /// Whatever a window holds goes upstream as bodies that are JSON, in both modes, within
    /// the size limit unless one entry alone is larger.
    static func checkBodies(_ window: Window) {
        for mode in [UpstreamMode.bulk, .metrics] {
            for batch in BatchBuilder(mode: mode, maxBody: 2048, proxyInstance: "fuzz").batches(from: window, sequence: 1, closedAt: 1) {
                batch.body.withUnsafeBufferPointer { p in
                    var s = JSONScanner(p)
                    precondition((try? s.skipValue()) != nil, "a body the proxy wrote is not JSON")
                    s.skipWhitespace()
                    precondition(s.isAtEnd, "a body the proxy wrote has trailing bytes")
                }
                for half in BatchSplitter.split(batch) where half.id != batch.id {
                    precondition(half.body.count < batch.body.count, "a half is not smaller than the batch it came from")
                }
            }
        }
    }

    /// proxy.conf: any text either parses or names a line that exists.
    static func config(_ bytes: UnsafeBufferPointer<UInt8>) {
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
    static func spool(_ bytes: UnsafeBufferPointer<UInt8>) {
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

    /// A journal segment: read as it is, and again with every record's checksum made to
    /// match, so the fuzzer gets past the CRC to the fields. Damage is reported where the
    /// readable part ends; every post read encodes and reads back the same; replaying the
    /// posts (as a restart does) merges or refuses each without crashing.
    static func journal(_ bytes: UnsafeBufferPointer<UInt8>) {
        let raw = Array(bytes)
        for candidate in [raw, withMatchingJournalChecksums(raw)] {
            var ingest = Ingest(DurableWindow.replayConfig(Config()))
            var window = Window(opened: 0)
            let damage = JournalReader.read(candidate) { item in
                if case .compact(let d, let post, let body) = item {
                    // Written again by a segment's first encoder and read back: the same post.
                    let encoder = CompactEncoder()
                    // The impact JSON rides after the strings, as in a request body.
                    var withImpact = post
                    let all = Array(body) + (d.impact ?? [])
                    if let impact = d.impact { withImpact.impactRange = body.count..<(body.count + impact.count) }
                    all.withUnsafeBufferPointer { b in
                        encoder.encode(withImpact, body: b, token: d.token, now: d.now, interval: d.interval, sdkHeaders: d.sdkHeaders)
                    }
                    let again = CompactDecoder()
                    let bytes = encoder.bytes
                    let decoded = again.decode(bytes[(JournalRecord.frame + 1)...])
                    precondition(decoded.map { canonical($0, again.post, again.store) } == canonical(d, post, Array(body)),
                                 "a compact record read back differs from the one written")
                    ingest.merge(d, post, body: body, into: &window)
                    return
                }
                guard case .post(var r, let body) = item else { return }
                r.body = Array(body)
                var again: JournalRecord?
                _ = JournalReader.read(Array(JournalSegment.magic.utf8) + JournalEncoder.encode(r)) { item in
                    if case .post(var a, let b) = item { a.body = Array(b); again = a }
                }
                precondition(again == r, "a record read back differs from the one written")
                _ = ingest.accept(r.kind, headers: r.headers.with(authorization: r.token), body: r.body, into: &window, now: r.now) { name in
                    r.sdkHeaders.first { $0.name == name }?.value
                }
            }
            if let damage {
                precondition(damage.offset >= 0 && damage.bytes > 0 && damage.offset + damage.bytes == candidate.count,
                             "damage \(damage) does not end the segment of \(candidate.count) bytes")
            }
        }
    }

    /// A compact post as text: what it says, whatever ids its strings had.
    static func canonical(_ d: CompactDecoder.Decoded, _ p: FastPost, _ body: [UInt8]) -> String {
        func t(_ r: Range<Int>?) -> String { r.map { String(decoding: body[$0], as: UTF8.self).debugDescription } ?? "nil" }
        var out = "\(d.now) \(d.token.debugDescription) \(d.interval ?? "nil") \(d.sdkHeaders.map { "\($0.name)=\($0.value)" })"
        out += " impact: \(d.impact.map { $0.description } ?? "none")"
        out += " \(t(p.appName)) \(t(p.instanceId.flatMap { $0.isEmpty ? nil : $0 })) \(p.sdkFields.map { t(p.sdk[$0.index]) }) \(p.start) \(p.stop)"
        for tg in p.toggles {
            out += " [\(t(tg.name)) \(tg.yes) \(tg.no)" + tg.variants.map { " \(t(p.variants[$0].name))=\(p.variants[$0].count)" }.joined() + "]"
        }
        return out
    }

    /// `bytes` with each record's `crc32` rewritten to match its payload, as far as the
    /// records' lengths fit.
    static func withMatchingJournalChecksums(_ bytes: [UInt8]) -> [UInt8] {
        var out = bytes
        var at = JournalSegment.magic.utf8.count
        while out.count - at >= JournalRecord.frame {
            let length = Int(JournalReader.u32(out[...], at))
            guard length >= 1, out.count - at - JournalRecord.frame >= length else { break }
            let sum = out.withUnsafeBufferPointer { UInt32(truncatingIfNeeded: crc32(crc32(0, nil, 0), $0.baseAddress! + at + 8, UInt32(length))) }
            withUnsafeBytes(of: sum.littleEndian) { for k in 0..<4 { out[at + 4 + k] = $0[k] } }
            at += JournalRecord.frame + length
        }
        return out
    }
}
