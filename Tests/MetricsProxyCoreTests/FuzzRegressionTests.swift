import Foundation
import XCTest
@testable import MetricsProxyCore

/// Every input a fuzzer (Tests/Fuzz/run.sh) ever crashed on, and the seed corpora, run through the
/// same checks the fuzzers run. A crash here fails the whole test run, as it should.
final class FuzzRegressionTests: XCTestCase {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func inputs(_ target: String) throws -> [(String, [UInt8])] {
        var out: [(String, [UInt8])] = []
        for dir in ["Tests/Fixtures/fuzz-regressions/\(target)", "Tests/Fuzz/corpus/\(target)"] {
            let url = Self.repo.appendingPathComponent(dir)
            // Git keeps no empty directory: a target nothing ever crashed has none.
            guard FileManager.default.fileExists(atPath: url.path) else { continue }
            for name in try FileManager.default.contentsOfDirectory(atPath: url.path).sorted() {
                out.append(("\(dir)/\(name)", Array(try Data(contentsOf: url.appendingPathComponent(name)))))
            }
        }
        return out
    }

    func testDecoderInputs() throws {
        let all = try inputs("decoder")
        XCTAssertGreaterThan(all.count, 5)
        for (_, bytes) in all { bytes.withUnsafeBufferPointer { FuzzTargets.decoder($0) } }
    }

    func testConfigInputs() throws {
        let all = try inputs("config")
        XCTAssertGreaterThan(all.count, 1)
        for (_, bytes) in all { bytes.withUnsafeBufferPointer { FuzzTargets.config($0) } }
    }

    func testSpoolInputs() throws {
        let all = try inputs("spool")
        XCTAssertGreaterThan(all.count, 1)
        for (_, bytes) in all { bytes.withUnsafeBufferPointer { FuzzTargets.spool($0) } }
        // The seed is a valid file; the found input is one only once its checksum is fixed.
        let seed = all.first { $0.0.hasSuffix("batch.batch") }!.1
        XCTAssertEqual(try SpoolFile.decode(seed).entries, 1)
        let found = all.first { $0.0.hasSuffix("non-utf8-header-moves-crc-offset") }!.1
        XCTAssertThrowsError(try SpoolFile.decode(found))
        XCTAssertThrowsError(try SpoolFile.decode(FuzzTargets.withMatchingChecksum(found)), "its length field is wrong")
    }

    func testJournalInputs() throws {
        let all = try inputs("journal")
        XCTAssertGreaterThanOrEqual(all.count, 5)
        for (_, bytes) in all { bytes.withUnsafeBufferPointer { FuzzTargets.journal($0) } }
        // The seeds are what the proxy writes: two posts; a checkpoint with a post after it; a torn tail.
        func items(_ name: String) -> (posts: Int, checkpoints: Int, damage: JournalReader.Damage?) {
            var posts = 0, checkpoints = 0
            let damage = JournalReader.read(all.first { $0.0.hasSuffix(name) }!.1) { item in
                if case .post = item { posts += 1 }
                if case .compact = item { posts += 1 }
                if case .checkpoint(let s) = item { XCTAssertEqual(s, [1, 2]); checkpoints += 1 }
            }
            return (posts, checkpoints, damage)
        }
        XCTAssertEqual(items("posts.journal").posts, 2)
        XCTAssertNil(items("posts.journal").damage)
        XCTAssertEqual(items("checkpoint.journal").posts, 3)
        XCTAssertEqual(items("checkpoint.journal").checkpoints, 1)
        XCTAssertEqual(items("torn.journal").posts, 0)
        // Compact records (written here by a Python rendition of the format): the second post
        // refers to the strings the first defined.
        var toggles: [String] = []
        XCTAssertNil(JournalReader.read(all.first { $0.0.hasSuffix("compact.journal") }!.1) { item in
            guard case .compact(let d, let p, let body) = item else { return XCTFail("not compact") }
            XCTAssertEqual(d.token, "default:development.secret")
            for t in p.toggles { toggles.append("\(String(decoding: body[t.name], as: UTF8.self))=\(t.yes)/\(t.no)/\(t.variants.count)") }
        })
        XCTAssertEqual(toggles, ["a=1/2/1", "b=0/3/0", "a=4/0/2", "b=1/1/0"])
        // A compact record carrying impact metrics: replayed, they reach the window's series.
        var window = Window(opened: 0)
        var ingest = Ingest(DurableWindow.replayConfig(Config()))
        XCTAssertNil(JournalReader.read(all.first { $0.0.hasSuffix("compact-impact.journal") }!.1) { item in
            guard case .compact(let d, let p, let body) = item else { return XCTFail("not compact") }
            XCTAssertNotNil(d.impact)
            ingest.merge(d, p, body: body, into: &window)
        })
        XCTAssertEqual(window.impact.keyCount, 2)
        XCTAssertEqual(window.flagKeys, 1)
        XCTAssertEqual(items("torn.journal").damage?.reason, "torn record: 341 bytes announced")
        // The seeds are of format 1 (zlib's CRC-32), still read; `-format2` is each of them in
        // the format written now (CRC-32C), with the same records.
        for name in ["posts", "checkpoint", "torn", "compact", "compact-impact"] {
            let (one, two) = (items("/\(name).journal"), items("/\(name)-format2.journal"))
            XCTAssertEqual(two.posts, one.posts, name)
            XCTAssertEqual(two.checkpoints, one.checkpoints, name)
            XCTAssertEqual(two.damage, one.damage, name)
        }
        XCTAssertEqual(Array(all.first { $0.0.hasSuffix("/posts-format2.journal") }!.1.prefix(24)), Array(JournalSegment.magic.utf8))
    }
}
