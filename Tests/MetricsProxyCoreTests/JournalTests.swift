import Foundation
import Glibc
import XCTest
@testable import MetricsProxyCore
import CZlib

final class JournalTests: XCTestCase {
    static let token = "default:development.secret"
    static let now: Int64 = 1_796_378_400_000 // 2026-12-04T10:00:00Z
    let json = Ingest.Headers(contentType: "application/json", authorization: token)

    static func post(_ flags: [String], instance: String = "i1", impact: String? = nil) -> [UInt8] {
        let toggles = flags.map { #""\#($0)":{"yes":1,"no":0,"variants":{}}"# }.joined(separator: ",")
        var body = #"{"appName":"shop","instanceId":"\#(instance)","bucket":{"start":"2026-12-04T10:00:00Z","stop":"2026-12-04T10:00:10Z","toggles":{\#(toggles)}}"#
        if let impact { body += #","impactMetrics":[\#(impact)]"# }
        return Array((body + "}").utf8)
    }

    static func spool(_ fs: ScriptedFileSystem) -> Spool {
        let s = Spool(dir: "/s", fs: fs, maxSize: 1 << 30, maxAgeMillis: .max)
        _ = try? s.open()
        return s
    }

    var config: Config {
        var c = Config()
        c.spool.dir = "/s"
        return c
    }

    /// The flag counts every upstream body of `window` holds, by feature name.
    static func counts(_ window: Window) -> [String: Int] {
        let builder = BatchBuilder(mode: .bulk, maxBody: 1 << 30)
        return counts(builder.batches(from: window, sequence: 1, closedAt: now + 60_000).map(\.body))
    }

    static func counts(_ bodies: [[UInt8]]) -> [String: Int] {
        var out: [String: Int] = [:]
        for body in bodies {
            let o = try! JSONSerialization.jsonObject(with: Data(body)) as! [String: Any]
            for m in o["metrics"] as? [[String: Any]] ?? [] { out[m["featureName"] as! String, default: 0] += m["yes"] as! Int }
        }
        return out
    }

    /// Every upstream body of `window`, as text: what the upstream would learn from it.
    static func upstreamBodies(_ window: Window) -> [String] {
        BatchBuilder(mode: .bulk, maxBody: 1 << 30).batches(from: window, sequence: 1, closedAt: now + 60_000)
            .map { String(decoding: $0.body, as: UTF8.self) }
    }

    // MARK: records

    func testRecordsRoundTripAndEveryTearOrFlipIsCaught() throws {
        let records = [
            JournalRecord(kind: .metrics, now: Self.now, token: Self.token, headers: json, body: Self.post(["a"])),
            JournalRecord(kind: .register, now: Self.now + 1, token: "t2",
                          headers: Ingest.Headers(contentType: "application/json; charset=utf-8", contentEncoding: "gzip", interval: "15000"),
                          sdkHeaders: [("unleash-sdk", "unleash-client-python:6.9.1")], body: BodyInflater.gzip(Self.post(["b"]))),
            JournalRecord(kind: .metrics, now: -5, token: "t", headers: Ingest.Headers(), body: []),
        ]
        let bytes = Array(JournalSegment.magic.utf8) + records.flatMap { JournalEncoder.encode($0) }
        var read: [JournalRecord] = []
        XCTAssertNil(JournalReader.read(bytes) { if case .post(var r, let body) = $0 { r.body = Array(body); read.append(r) } })
        XCTAssertEqual(read, records.map { var r = $0; r.headers.authorization = nil; return r })
        let ends = records.reduce(into: [JournalSegment.magic.utf8.count]) { $0.append($0.last! + JournalEncoder.encode($1).count) }
        for cut in JournalSegment.magic.utf8.count..<bytes.count {
            var n = 0
            let damage = JournalReader.read(Array(bytes.prefix(cut))) { _ in n += 1 }
            // Only whole records before the cut are read; a cut inside one is reported.
            XCTAssertEqual(n, ends.filter { $0 <= cut }.count - 1, "cut at \(cut)")
            XCTAssertEqual(damage == nil, ends.contains(cut), "cut at \(cut)")
            if let damage { XCTAssertEqual(damage.offset + damage.bytes, cut) }
        }
        for i in stride(from: 0, to: bytes.count, by: 2) {
            var flipped = bytes
            flipped[i] ^= 0x10
            var n = 0
            let damage = JournalReader.read(flipped) { _ in n += 1 }
            XCTAssertNotNil(damage, "bit flipped at byte \(i)")
            XCTAssertEqual(n, ends.lastIndex { $0 <= i } ?? 0, "records before the flip at \(i) are read")
        }
    }

    // MARK: replay

    func testAcceptedPostsComeBackExactlyAsTheyWereMerged() throws {
        let fs = ScriptedFileSystem()
        let before = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20), opened: Self.now)
        XCTAssertEqual(try before.recover(spool: Self.spool(fs), config: config), DurableWindow.Recovery(segments: [], records: 0, bytes: 0))
        var gz = json
        gz.contentEncoding = "gzip"
        gz.interval = "15000"
        let sdk = ["unleash-sdk": "unleash-client-python:6.9.1"]
        let counter = #"{"name":"orders","help":"h","type":"counter","samples":[{"labels":{"b":"2","a":"1"},"value":3}]}"#
        XCTAssertEqual(before.accept(.metrics, headers: json, body: Self.post(["a", "b"], impact: counter), now: Self.now), .accepted)
        XCTAssertEqual(before.accept(.metrics, headers: gz, body: BodyInflater.gzip(Self.post(["a"], instance: "i2")), now: Self.now) { sdk[$0] },
                       .accepted)
        let register = #"{"appName":"shop","instanceId":"i3","interval":15000,"started":"2026-12-04T09:00:00.000Z","strategies":["default"]}"#
        XCTAssertEqual(before.accept(.register, headers: json, body: Array(register.utf8), now: Self.now), .accepted)
        // Refused posts are not journalled.
        XCTAssertEqual(before.accept(.metrics, headers: json, body: Array("{".utf8), now: Self.now).status, 400)
        XCTAssertEqual(before.journal!.records, 3)

        let after = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20), opened: Self.now + 5)
        let r = try after.recover(spool: Self.spool(fs), config: config)
        XCTAssertEqual(r.records, 3)
        XCTAssertEqual(r.damaged.count, 0)
        XCTAssertEqual(Self.upstreamBodies(after.window), Self.upstreamBodies(before.window))
        XCTAssertEqual(Self.counts(after.window), ["a": 2, "b": 1])
        XCTAssertTrue(Self.upstreamBodies(after.window)[0].contains("unleash-client-python:6.9.1"), "the header fallback is replayed")
        XCTAssertTrue(Self.upstreamBodies(after.window)[0].contains(#""started":"2026-12-04T09:00:00.000Z""#))
        // New posts go to a new segment after the replayed one.
        XCTAssertEqual(after.journal!.window, [1, 2])
    }

    func testCommonPostsAreJournalledCompactlyAndAFailedAppendStartsTheStringsAfresh() throws {
        let fs = ScriptedFileSystem()
        let d = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20), opened: Self.now)
        _ = try d.recover(spool: Self.spool(fs), config: config)
        let flags = (0..<50).map { "feature.checkout.flag-\($0)" }
        var interval = json
        interval.interval = "15000"
        let sdk = ["unleash-sdk": "unleash-client-python:6.9.1"]
        let body = Self.post(flags)
        for _ in 0..<20 { XCTAssertEqual(d.accept(.metrics, headers: interval, body: body, now: Self.now) { sdk[$0] }, .accepted) }
        let journal = d.journal!
        let first = fs.files[journal.path(1)]!.count - JournalSegment.magic.utf8.count
        // The first post defines its strings; the next ones refer to them.
        XCTAssertLessThan((first - (first / 20)) / 19, body.count / 8, "a repeated post costs a fraction of its body")
        fs.appendFaults = [ENOSPC]
        XCTAssertEqual(d.accept(.metrics, headers: interval, body: body, now: Self.now).status, 503)
        XCTAssertEqual(d.accept(.metrics, headers: interval, body: Self.post(flags + ["late"]), now: Self.now) { sdk[$0] }, .accepted)
        XCTAssertEqual(journal.window, [1, 2], "the append after a failure starts a segment, which defines its strings again")
        let again = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20), opened: Self.now)
        XCTAssertEqual(try again.recover(spool: Self.spool(fs), config: config).records, 21)
        XCTAssertEqual(Self.upstreamBodies(again.window), Self.upstreamBodies(d.window))
        XCTAssertTrue(Self.upstreamBodies(again.window)[0].contains(#""interval":15000"#))
        XCTAssertTrue(Self.upstreamBodies(again.window)[0].contains("unleash-client-python:6.9.1"))
    }

    /// Segment numbers are never used twice: a journal found empty (removed by hand, or
    /// never started) numbers its segments past those the spool's batches name, else a new
    /// segment would pass for a spooled one at the next start and be skipped.
    func testSegmentNumbersContinuePastTheSpoolsEvenWithAnEmptyJournal() throws {
        let fs = ScriptedFileSystem()
        let spool = Self.spool(fs)
        var b = Batch(id: "000000000000001-0000", token: Self.token, path: "/client/metrics/bulk",
                      body: Array(#"{"applications":[],"metrics":[]}"#.utf8), created: Self.now, entries: 0)
        b.journal = [7, 8]
        b.windowBatches = 1
        try spool.store(b)
        let d = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20), opened: Self.now)
        _ = try d.recover(spool: spool, config: config)
        XCTAssertEqual(d.journal!.window, [9])
        XCTAssertEqual(d.accept(.metrics, headers: json, body: Self.post(["a"]), now: Self.now), .accepted)
        let again = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20), opened: Self.now)
        _ = try again.recover(spool: Self.spool(fs), config: config)
        XCTAssertEqual(Self.counts(again.window), ["a": 1])
    }

    func testATornTailIsDroppedAndCountedAndTheRestReplayed() throws {
        let fs = ScriptedFileSystem()
        let d = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20), opened: Self.now)
        _ = try d.recover(spool: Self.spool(fs), config: config)
        for f in ["a", "b"] { XCTAssertEqual(d.accept(.metrics, headers: json, body: Self.post([f]), now: Self.now), .accepted) }
        let path = d.journal!.path(1)
        fs.files[path]! += JournalEncoder.encode(JournalRecord(kind: .metrics, now: Self.now, token: "t", headers: json,
                                                               body: Self.post(["torn"]))).prefix(30)
        let again = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20), opened: Self.now)
        let r = try again.recover(spool: Self.spool(fs), config: config)
        XCTAssertEqual(r.records, 2)
        XCTAssertEqual(r.damaged.map(\.segment), [1])
        XCTAssertEqual(r.damaged.first?.damage.bytes, 30)
        XCTAssertEqual(Self.counts(again.window), ["a": 1, "b": 1])
    }

    func testAFullDiskAnswers503AndLeavesTheWindowUntouched() throws {
        let fs = ScriptedFileSystem()
        let d = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20), opened: Self.now)
        _ = try d.recover(spool: Self.spool(fs), config: config)
        fs.appendFaults = [ENOSPC]
        guard case .unavailable(let body) = d.accept(.metrics, headers: json, body: Self.post(["a"]), now: Self.now) else {
            return XCTFail("a post that cannot be journalled must not be acknowledged")
        }
        XCTAssertTrue(String(decoding: body, as: UTF8.self).contains("disk full"))
        XCTAssertTrue(d.window.isEmpty)
        XCTAssertEqual(d.ingest.journalFailures, 1)
        XCTAssertEqual(d.journal!.records, 0)
        // The disk has room again: the SDK's retry is taken, once.
        XCTAssertEqual(d.accept(.metrics, headers: json, body: Self.post(["a"]), now: Self.now), .accepted)
        let again = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20), opened: Self.now)
        _ = try again.recover(spool: Self.spool(fs), config: config)
        XCTAssertEqual(Self.counts(again.window), ["a": 1])
    }

    func testACheckpointReplacesTheSegmentsAndRebuildsTheSameWindow() throws {
        let fs = ScriptedFileSystem()
        let journal = Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20)
        let d = DurableWindow(config: config, journal: journal, opened: Self.now)
        _ = try d.recover(spool: Self.spool(fs), config: config)
        let gauge = #"{"name":"queue","help":"h","type":"gauge","samples":[{"labels":{"q":"x"},"value":7}]}"#
        let histogram = #"{"name":"lat","help":"h","type":"histogram","samples":[{"labels":{},"count":2,"sum":0.5,"buckets":[{"le":0.1,"count":1},{"le":"+Inf","count":2}]}]}"#
        let register = #"{"appName":"shop","instanceId":"i1","interval":15000,"started":"2026-12-04T09:00:00.000Z","strategies":["default","flexibleRollout"],"sdkVersion":"unleash-node:6.1.0"}"#
        XCTAssertEqual(d.accept(.register, headers: json, body: Array(register.utf8), now: Self.now), .accepted)
        for i in 0..<20 {
            XCTAssertEqual(d.accept(.metrics, headers: json, body: Self.post(["f\(i % 7)"], instance: "i\(i % 3)", impact: i % 2 == 0 ? gauge : histogram),
                                    now: Self.now + Int64(i)), .accepted)
        }
        let expected = Self.upstreamBodies(d.window)
        journal.maxSize = 1 // due now
        guard case .success(true) = d.checkpointIfDue(now: Self.now + 100) else { return XCTFail("checkpoint not written") }
        XCTAssertEqual(journal.window, [2], "the checkpoint replaces segment 1")
        XCTAssertNil(fs.files[journal.path(1)])
        journal.maxSize = 1 << 20
        XCTAssertEqual(d.accept(.metrics, headers: json, body: Self.post(["late"]), now: Self.now + 200), .accepted)

        let again = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20), opened: Self.now)
        let r = try again.recover(spool: Self.spool(fs), config: config)
        XCTAssertEqual(r.refused, 0)
        var withoutLate = Self.counts(again.window)
        XCTAssertEqual(withoutLate.removeValue(forKey: "late"), 1)
        XCTAssertEqual(withoutLate, Self.counts(expected.map { Array($0.utf8) }))
        // Instances, impact series and the rest of every body are the same as before it.
        let rebuilt = Self.upstreamBodies(again.window).joined()
        for needle in [#""instanceId":"i2""#, #""started":"2026-12-04T09:00:00.000Z""#, #""flexibleRollout""#, "unleash-node:6.1.0",
                       #""name":"queue""#, #""value":7"#, #""name":"lat""#] {
            XCTAssertTrue(rebuilt.contains(needle), needle)
        }
        XCTAssertEqual(ImpactCounts.of(again.window), ImpactCounts.of(d.window))
    }

    /// A checkpoint that cannot be read whole (damaged after it was written) is not replayed
    /// at all, and the segments it names count instead, when they are still there.
    func testADamagedCheckpointGivesWayToTheSegmentsItNames() throws {
        let fs = ScriptedFileSystem()
        let journal = Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20)
        let d = DurableWindow(config: config, journal: journal, opened: Self.now)
        _ = try d.recover(spool: Self.spool(fs), config: config)
        for f in ["a", "b", "c"] { XCTAssertEqual(d.accept(.metrics, headers: json, body: Self.post([f, "shared"]), now: Self.now), .accepted) }
        let before = fs.files[journal.path(1)]!
        journal.maxSize = 1
        guard case .success(true) = d.checkpointIfDue(now: Self.now) else { return XCTFail("no checkpoint") }
        XCTAssertNil(fs.files[journal.path(1)])
        // The process died before removing segment 1, and the checkpoint was damaged since, in
        // its end marker: every snapshot record reads, yet it must not count.
        fs.files[journal.path(1)] = before
        fs.files[journal.path(2)]![fs.files[journal.path(2)]!.count - 3] ^= 0x20
        let again = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20), opened: Self.now)
        let r = try again.recover(spool: Self.spool(fs), config: config)
        XCTAssertEqual(Self.counts(again.window), ["a": 1, "b": 1, "c": 1, "shared": 3])
        XCTAssertEqual(r.damaged.map(\.segment), [2])
        // Whole, the same checkpoint replaces segment 1.
        fs.files[journal.path(2)]![fs.files[journal.path(2)]!.count - 3] ^= 0x20
        let whole = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20), opened: Self.now)
        let w = try whole.recover(spool: Self.spool(fs), config: config)
        XCTAssertEqual(Self.counts(whole.window), ["a": 1, "b": 1, "c": 1, "shared": 3])
        XCTAssertEqual(w.skipped, [1])
    }

    /// With a retirer (the daemon's fsync thread), a checkpoint leaves the segments it replaced
    /// to it. Until they are gone, the next checkpoint names them again and a window close
    /// hands them over with its own, so a restart in between never counts them beside the
    /// checkpoint; once the retirer is done they are forgotten.
    func testReplacedSegmentsStayNamedUntilTheRetirerRemovesThem() throws {
        let fs = ScriptedFileSystem()
        let journal = Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20)
        let retirer = HeldRetirer(fs, when: .never)
        journal.retirer = retirer
        let d = DurableWindow(config: config, journal: journal, opened: Self.now)
        _ = try d.recover(spool: Self.spool(fs), config: config)
        func post(_ flag: String) {
            // Enough posts that the journal is twice the last checkpoint: the next one is due.
            for _ in 0..<20 { XCTAssertEqual(d.accept(.metrics, headers: json, body: Self.post([flag]), now: Self.now), .accepted) }
        }
        func checkpoint() throws -> [UInt64] {
            journal.maxSize = 1
            guard case .success(true) = d.checkpointIfDue(now: Self.now) else { XCTFail("no checkpoint"); return [] }
            journal.maxSize = 1 << 20
            return try XCTUnwrap(JournalReader.checkpoint(in: fs.files[journal.path(journal.current)]!)).supersedes
        }
        func restartCounts() throws -> [String: Int] {
            let again = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: ScriptedFileSystem(copying: fs), maxSize: 1 << 20), opened: Self.now)
            _ = try again.recover(spool: Self.spool(ScriptedFileSystem(copying: fs)), config: config)
            return Self.counts(again.window)
        }
        post("a")
        XCTAssertEqual(try checkpoint(), [1])
        XCTAssertNotNil(fs.files[journal.path(1)], "removed only by the retirer")
        XCTAssertEqual(retirer.held.map(\.id), [2])
        XCTAssertEqual(try restartCounts(), ["a": 20])
        post("b")
        XCTAssertEqual(try checkpoint(), [1, 2], "segment 1 is not removed yet: named again")
        XCTAssertEqual(try restartCounts(), ["a": 20, "b": 20])
        retirer.runHeld()
        XCTAssertNil(fs.files[journal.path(1)])
        XCTAssertNil(fs.files[journal.path(2)])
        XCTAssertEqual(retirer.retiredThrough, 3)
        post("c")
        XCTAssertEqual(try checkpoint(), [3], "removed segments are forgotten")
        // A window close hands over what the retirer has not removed yet, with the window.
        let (batches, _, _) = d.close(now: Self.now + 1, sequence: 1, builder: BatchBuilder(mode: .bulk, maxBody: 1 << 20), config: config)
        XCTAssertEqual(batches.first?.journal, [3, 4])
        XCTAssertEqual(try restartCounts(), ["a": 20, "b": 20, "c": 20], "nothing spooled yet: the journal has it all")
    }

    // MARK: checksums

    func testCRC32CMatchesItsDefinitionWithAndWithoutTheCPUInstruction() {
        let check = Array("123456789".utf8)
        XCTAssertEqual(mp_crc32c(0, check, check.count), 0xE306_9283) // the CRC-32C check value
        XCTAssertEqual(mp_crc32c_portable(0, check, check.count), 0xE306_9283)
        XCTAssertEqual(mp_crc32c_instruction(0, check, check.count), 0xE306_9283)
        var rng = SystemRandomNumberGenerator()
        for n in 0..<300 {
            let bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let whole = mp_crc32c_portable(0, bytes, n)
            XCTAssertEqual(mp_crc32c(0, bytes, n), whole, "\(n) bytes")
            let cut = n / 3
            let chained = bytes.withUnsafeBytes { b in mp_crc32c(mp_crc32c(0, b.baseAddress, cut), b.baseAddress! + cut, n - cut) }
            XCTAssertEqual(chained, whole, "\(n) bytes in two")
        }
    }

    /// A proxy upgraded with a journal on disk replays it: a segment of format 1 (zlib's
    /// CRC-32) reads as before, and its records under the format 2 line fail their checksum.
    func testASegmentOfTheFirstFormatStillReplays() throws {
        let fs = ScriptedFileSystem()
        let journal = Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20)
        let d = DurableWindow(config: config, journal: journal, opened: Self.now)
        _ = try d.recover(spool: Self.spool(fs), config: config)
        for f in ["a", "b", "a"] { XCTAssertEqual(d.accept(.metrics, headers: json, body: Self.post([f]), now: Self.now), .accepted) }
        let gzipped = BodyInflater.gzip(Self.post(["z"]))
        XCTAssertEqual(d.accept(.metrics, headers: Ingest.Headers(contentType: "application/json", contentEncoding: "gzip", authorization: Self.token),
                                body: gzipped, now: Self.now), .accepted)
        let format2 = try XCTUnwrap(fs.files[journal.path(1)])
        // The same records, checksummed with CRC-32 under the first format's line.
        var format1 = Array(JournalSegment.magicFormat1.utf8)
        var at = JournalSegment.magic.utf8.count
        while at + JournalRecord.frame <= format2.count {
            let length = Int(format2[at]) | Int(format2[at + 1]) << 8 | Int(format2[at + 2]) << 16 | Int(format2[at + 3]) << 24
            if length == 0 { break }
            let payload = Array(format2[(at + JournalRecord.frame)..<(at + JournalRecord.frame + length)])
            let sum = UInt32(truncatingIfNeeded: payload.withUnsafeBufferPointer { crc32(crc32(0, nil, 0), $0.baseAddress, UInt32(length)) })
            format1 += Array(format2[at..<(at + 4)]) + withUnsafeBytes(of: sum.littleEndian, Array.init) + payload
            at += JournalRecord.frame + length
        }
        XCTAssertGreaterThan(at, 100)
        let old = ScriptedFileSystem()
        old.files["/s/journal/00000000000000000001.journal"] = format1
        let again = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: old, maxSize: 1 << 20), opened: Self.now)
        let r = try again.recover(spool: Self.spool(old), config: config)
        XCTAssertEqual(r.records, 4)
        XCTAssertEqual(r.damaged.count, 0)
        XCTAssertEqual(Self.counts(again.window), ["a": 2, "b": 1, "z": 1])
        // Under the format 2 line, the CRC-32 sums do not hold.
        var mislabelled = format1
        mislabelled.replaceSubrange(0..<JournalSegment.magic.utf8.count, with: Array(JournalSegment.magic.utf8))
        XCTAssertEqual(JournalReader.read(mislabelled) { _ in }?.reason, "checksum mismatch")
    }

    // MARK: crash points

    /// One run of a proxy's life on `fs`: start (spool, then journal replay), twelve posts of
    /// a flag each under two tokens, a checkpoint after the fifth, a window close (its two
    /// batches spooled, then the journal cut) after the eighth. It stops where the disk dies. Returns the flags answered
    /// 202, and the one whose answer was being decided when it died.
    func life(_ fs: ScriptedFileSystem, run: Int, retiring: HeldRetirer.When? = nil) -> (acknowledged: [String], unanswered: String?) {
        var acknowledged: [String] = []
        let journal = Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20)
        let retirer = retiring.map { HeldRetirer(fs, when: $0) }
        journal.retirer = retirer
        let spool = Spool(dir: "/s", fs: fs, maxSize: 1 << 30, maxAgeMillis: .max)
        let d = DurableWindow(config: config, journal: journal, opened: Self.now)
        do {
            _ = try spool.open()
            _ = try d.recover(spool: spool, config: config)
        } catch {
            return ([], nil)
        }
        for i in 0..<12 {
            let flag = "r\(run)-\(i)"
            // Two tokens: each window makes two batches, so a kill can fall between them.
            var headers = json
            if i % 2 == 1 { headers.authorization = "default:production.other" }
            if d.accept(.metrics, headers: headers, body: Self.post([flag]), now: Self.now) == .accepted { acknowledged.append(flag) }
            if fs.crashed { return (acknowledged, flag) }
            if i == 4 {
                journal.maxSize = 1
                _ = d.checkpointIfDue(now: Self.now)
                journal.maxSize = 1 << 20
            }
            if let retirer, retirer.when == .atOnce && i == 4 || retirer.when == .beforeTheClose && i == 6
                || retirer.when == .afterTheClose && i == 9 {
                retirer.runHeld()
            }
            if i == 7 {
                let (batches, _, _) = d.close(now: Self.now + 1, sequence: UInt64(100 + run), builder: BatchBuilder(mode: .bulk, maxBody: 1 << 20),
                                              config: config)
                var unspooled = Set<String>()
                for b in batches { do { try spool.store(b) } catch { unspooled.insert(b.id) } }
                _ = d.release(unspooled: unspooled)
            }
            if fs.crashed { return (acknowledged, nil) }
        }
        return (acknowledged, nil)
    }

    /// What a restart finds: the spool's batches and the replayed window, counted by flag.
    func restart(_ fs: ScriptedFileSystem, crashingAt: Int? = nil) throws -> [String: Int]? {
        fs.revive()
        fs.crashAt = crashingAt.map { fs.changes + $0 }
        let spool = Spool(dir: "/s", fs: fs, maxSize: 1 << 30, maxAgeMillis: .max)
        let d = DurableWindow(config: config, journal: Journal(dir: "/s/journal", fs: fs, maxSize: 1 << 20), opened: Self.now)
        do {
            _ = try spool.open()
            _ = try d.recover(spool: spool, config: config)
        } catch {
            XCTAssertTrue(fs.crashed, "\(error)")
            return nil
        }
        var bodies: [[UInt8]] = []
        for e in spool.entries { bodies.append(try XCTUnwrap(try? spool.load(e.id)).body) }
        return Self.counts(bodies).merging(Self.counts(d.window), uniquingKeysWith: +)
    }

    func testEveryCrashPointLosesNothingAcknowledgedAndCountsNothingTwice() throws {
        try everyCrashPoint(retiring: nil)
    }

    /// The same, with the segments a checkpoint replaced removed later, on another thread (as
    /// the daemon does): at once, before the window closes, after it, or never (the process
    /// dies first). A crash may also fall inside that removal.
    func testEveryCrashPointWithCheckpointsRetiredOffTheLoop() throws {
        for when in [HeldRetirer.When.atOnce, .beforeTheClose, .afterTheClose, .never] {
            try everyCrashPoint(retiring: when)
        }
    }

    func everyCrashPoint(retiring: HeldRetirer.When?) throws {
        // How many changes to the disk a life makes without a crash.
        let clean = ScriptedFileSystem()
        let all = life(clean, run: 0, retiring: retiring).acknowledged
        XCTAssertEqual(all.count, 12)
        let changes = clean.changes
        XCTAssertEqual(try restart(clean), Dictionary(uniqueKeysWithValues: all.map { ($0, 1) }))
        XCTAssertGreaterThan(changes, 30)
        var checked = 0
        for crashAt in 1...changes {
            // A first life dies at `crashAt`, then a second life runs whole on what it left;
            // and the restart after it may itself die at each of its first changes.
            for recoveryCrash in [nil, 1, 2, 3, 4, 5] as [Int?] {
                let fs = ScriptedFileSystem()
                fs.crashAt = crashAt
                let first = life(fs, run: 1, retiring: retiring)
                XCTAssertTrue(fs.crashed, "crash point \(crashAt)")
                if let k = recoveryCrash, try restart(fs, crashingAt: k) != nil { continue } // got through: nothing to add
                fs.revive()
                let second = life(fs, run: 2, retiring: retiring)
                let found = try XCTUnwrap(try restart(fs))
                for flag in first.acknowledged + second.acknowledged {
                    XCTAssertEqual(found[flag], 1, "crash at change \(crashAt), restart crash \(String(describing: recoveryCrash)), retiring \(String(describing: retiring)): \(flag)")
                }
                if let u = first.unanswered { XCTAssertLessThanOrEqual(found[u] ?? 0, 1, "unanswered \(u), crash at \(crashAt)") }
                let known = Set(first.acknowledged + second.acknowledged + [first.unanswered].compactMap { $0 })
                XCTAssertEqual(Set(found.keys).subtracting(known), [], "nothing counted that was never posted")
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, changes)
    }
}

/// Impact series of a window as comparable values: name, sorted labels, value or counts.
enum ImpactCounts {
    static func of(_ window: Window) -> [String] {
        let builder = BatchBuilder(mode: .bulk, maxBody: 1 << 30)
        var out: [String] = []
        for b in builder.batches(from: window, sequence: 1, closedAt: JournalTests.now + 60_000) {
            let o = try! JSONSerialization.jsonObject(with: Data(b.body)) as! [String: Any]
            for m in o["impactMetrics"] as? [[String: Any]] ?? [] {
                let data = try! JSONSerialization.data(withJSONObject: m, options: [.sortedKeys])
                out.append(String(decoding: data, as: UTF8.self))
            }
        }
        return out.sorted()
    }
}

/// The daemon's retirer, in step with the test: it holds each checkpoint's removal until
/// `runHeld`, then does what `JournalSyncer` does, through the scripted disk (where a crash
/// can fall inside it). A checkpoint already gone was handed over with its window: its
/// segments go too.
final class HeldRetirer: SegmentRetirer {
    enum When { case atOnce, beforeTheClose, afterTheClose, never }
    let fs: ScriptedFileSystem
    let when: When
    private(set) var held: [(id: UInt64, segments: [String], checkpoint: String, dir: String)] = []
    private(set) var retiredThrough: UInt64 = 0

    init(_ fs: ScriptedFileSystem, when: When) {
        self.fs = fs
        self.when = when
    }

    func retire(_ segments: [String], after checkpoint: String, dir: String, id: UInt64) {
        held.append((id, segments, checkpoint, dir))
    }

    func runHeld() {
        while let job = held.first {
            do throws(FSError) {
                if fs.files[job.checkpoint] != nil { try fs.syncDirectory(job.checkpoint) } // the checkpoint's fsync
                try fs.syncDirectory(job.dir)
                for s in job.segments { try fs.remove(s) }
                try fs.syncDirectory(job.dir)
            } catch {
                return
            }
            retiredThrough = job.id
            held.removeFirst()
        }
    }
}
