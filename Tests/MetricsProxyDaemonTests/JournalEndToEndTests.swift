import Foundation
import Glibc
import XCTest

/// A 202 survives the process: the real binary killed with SIGKILL, a disk that fills, the
/// journal's files and the check of its directory.
final class JournalEndToEndTests: XCTestCase {
    func testSIGKILLAtRandomMomentsLosesNothingAnswered202AndCountsNothingTwice() throws {
        let (status, report) = try runPythonScript("Tests/Soak/kill9.py", ["--binary", Paths.binary.path, "--kills", "5", "--posters", "6"])
        XCTAssertEqual(status, 0, report)
        for line in ["ok   every post answered 202 arrived (0 lost", "ok   no post answered 202 arrived twice (0:",
                     "ok   posts cut off unanswered arrived at most once", "ok   every restart replayed the journal",
                     "ok   posts refused or never sent did not arrive"] {
            XCTAssertTrue(report.contains(line), line)
        }
    }

    /// No file may grow past 48 KiB (`ulimit -f`): the journal segment fills like a disk.
    func testAFullDiskIsAnswered503WithRetryAfterAndTheProxyKeepsServing() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "3s"), maxFileBlocks: 96)
        let c = proxy.tcp()
        var accepted = 0
        var refused: HTTPClient.Response?
        for i in 0..<2000 {
            let r = try c.post("/api/client/metrics", json: HardeningTests.post(instance: "i\(i % 5)", #"{"full":{"yes":1,"no":0}}"#),
                               token: tokenA)
            if r.status == 202 { accepted += 1; continue }
            refused = r
            break
        }
        let r = try XCTUnwrap(refused, "the segment never filled")
        XCTAssertEqual(r.status, 503)
        XCTAssertEqual(r.header("Retry-After"), "1")
        XCTAssertTrue(r.text.contains("cannot journal this post"), r.text)
        XCTAssertEqual(try proxy.tcp().request("GET", "/healthz").status, 200)
        waitFor("the failure logged") { proxy.log.contains("journal append failed") }
        XCTAssertTrue(proxy.log.contains("File too large"), proxy.log)
        // The window closes into the spool and a new segment starts: posts are taken again.
        waitFor("posts accepted again", timeout: 15) {
            (try? c.post("/api/client/metrics", json: HardeningTests.post(#"{"full":{"yes":1,"no":0}}"#), token: tokenA).status) == 202
        }
        accepted += 1
        proxy.signal(SIGTERM)
        XCTAssertEqual(proxy.waitForExit(), 0)
        XCTAssertEqual(try HardeningTests.upstreamCounts(upstream)["full"], accepted, "every 202, once; no 503")
        XCTAssertTrue(proxy.log.contains("journal appends recovered"))
    }

    func testJournalFilesArePrivateAndReportedOnMetrics() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "1h"))
        XCTAssertEqual(try proxy.unix().post("/api/client/metrics", json: HardeningTests.post(#"{"a":{"yes":1}}"#), token: tokenA).status, 202)
        let dir = proxy.spoolDir + "/journal"
        let attributes = try FileManager.default.attributesOfItem(atPath: dir)
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o700)
        let segments = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".journal") }
        XCTAssertEqual(segments.count, 1)
        for s in segments {
            let mode = (try FileManager.default.attributesOfItem(atPath: "\(dir)/\(s)")[.posixPermissions] as? NSNumber)?.intValue
            XCTAssertEqual(mode, 0o600, s)
        }
        let metrics = try proxy.tcp().request("GET", "/metrics").text
        XCTAssertTrue(metrics.contains("metrics_proxy_journal_records 1\n"), metrics)
        XCTAssertTrue(metrics.contains("metrics_proxy_journal_append_failures_total 0\n"), metrics)
        XCTAssertTrue(metrics.contains("metrics_proxy_journal_replay_refused_total 0\n"), metrics)
        waitFor("a journal fsync", timeout: 5) {
            ((try? proxy.tcp().request("GET", "/metrics").text) ?? "").contains("metrics_proxy_journal_fsync_seconds_count 1\n")
        }
        proxy.signal(SIGTERM)
        XCTAssertEqual(proxy.waitForExit(), 0)
    }

    /// A post answered 202 under one limit is replayed even when a restart lowered it: the
    /// limits keep out what is offered, not what was already taken. Both kinds of record: a
    /// compact one (the fast path) and a body kept whole (gzip).
    func testAPostTakenUnderALimitIsReplayedAfterTheLimitIsLowered() throws {
        let upstream = try FakeUpstream()
        let spool = Paths.tempDir("lowered").path
        let first = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "1h"), spoolDir: spool)
        XCTAssertEqual(try first.tcp().post("/api/client/metrics", json: HardeningTests.post(#"{"a-rather-long-flag-name":{"yes":1}}"#),
                                            token: tokenA).status, 202)
        let zipped = try gzip(Array(HardeningTests.post(#"{"another-long-flag-name":{"yes":2}}"#).utf8))
        XCTAssertEqual(try first.tcp().request("POST", "/api/client/metrics", headers: [("Content-Type", "application/json"),
                       ("Content-Encoding", "gzip"), ("Authorization", tokenA)], body: zipped).status, 202)
        first.signal(SIGKILL)
        _ = first.waitForExit()
        let second = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "1h", extra: "[limits]\nmax_name_length = 16"),
                                      spoolDir: spool)
        let metrics = try second.tcp().request("GET", "/metrics").text
        XCTAssertTrue(metrics.contains("metrics_proxy_journal_replayed_records_total 2\n"), metrics)
        XCTAssertTrue(metrics.contains("metrics_proxy_journal_replay_refused_total 0\n"), metrics)
        // New posts meet the new limit.
        XCTAssertEqual(try second.tcp().post("/api/client/metrics", json: HardeningTests.post(#"{"a-rather-long-flag-name":{"yes":1}}"#),
                                             token: tokenA).status, 400)
        second.signal(SIGTERM)
        XCTAssertEqual(second.waitForExit(), 0)
        XCTAssertEqual(try HardeningTests.upstreamCounts(upstream), ["a-rather-long-flag-name": 1, "another-long-flag-name": 2])
    }

    /// Past `[journal] max_size` the window is checkpointed: the loop appends the snapshot and
    /// the fsync thread removes the segments it replaced once it is on disk (with `fsync = off`
    /// too). A kill -9 after two checkpoints still counts every post once.
    func testCheckpointsKeepTheJournalSmallAndAKillAfterThemCountsEachPostOnce() throws {
        for fsync in ["1s", "off"] {
            let upstream = try FakeUpstream()
            let spool = Paths.tempDir("checkpoints").path
            let config = testConfig(upstream: upstream.url, interval: "1h", extra: "[journal]\nmax_size = 1MiB\nfsync = \(fsync)")
            let first = try ProxyProcess(config: config, spoolDir: spool)
            let c = first.tcp()
            // A registration keeps its body whole in the journal: 4 KB a post fills it quickly.
            let strategies = (0..<200).map { #""strategy-\#($0)""# }.joined(separator: ",")
            let register = #"{"appName":"app","instanceId":"i","interval":15000,"started":"2026-11-28T10:00:00Z","strategies":[\#(strategies)]}"#
            var posted = 0
            while posted < 1500, !((try? first.tcp().request("GET", "/metrics").text) ?? "").contains("metrics_proxy_journal_checkpoints_total 2\n") {
                for _ in 0..<50 {
                    XCTAssertEqual(try c.post("/api/client/register", json: register, token: tokenA).status, 202)
                    XCTAssertEqual(try c.post("/api/client/metrics", json: HardeningTests.post(#"{"k\#(posted)":{"yes":1,"no":0}}"#), token: tokenA).status, 202)
                    posted += 1
                }
            }
            let dir = spool + "/journal"
            func segments() -> [String] {
                ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".journal") }.sorted()
            }
            XCTAssertGreaterThan(posted, 200, "fsync \(fsync)")
            waitFor("the replaced segments removed (fsync \(fsync)): \(segments())", timeout: 5) { segments().count == 1 }
            XCTAssertTrue(first.log.contains("event=\"journal checkpoint\""), first.log)
            first.signal(SIGKILL)
            _ = first.waitForExit()
            let second = try ProxyProcess(config: config, spoolDir: spool)
            XCTAssertEqual(try second.tcp().post("/api/client/metrics", json: HardeningTests.post(#"{"after":{"yes":1,"no":0}}"#), token: tokenA).status, 202)
            second.signal(SIGTERM)
            XCTAssertEqual(second.waitForExit(), 0)
            var expected = Dictionary(uniqueKeysWithValues: (0..<posted).map { ("k\($0)", 1) })
            expected["after"] = 1
            XCTAssertEqual(try HardeningTests.upstreamCounts(upstream), expected, "fsync \(fsync)")
        }
    }

    func testJournalOffKeepsNoFilesAndReportsNoJournal() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "1h", extra: "[journal]\ndir = off"))
        XCTAssertEqual(try proxy.tcp().post("/api/client/metrics", json: HardeningTests.post(#"{"a":{"yes":1}}"#), token: tokenA).status, 202)
        XCTAssertFalse(FileManager.default.fileExists(atPath: proxy.spoolDir + "/journal"))
        XCTAssertFalse(try proxy.tcp().request("GET", "/metrics").text.contains("metrics_proxy_journal"))
        proxy.signal(SIGTERM)
        XCTAssertEqual(proxy.waitForExit(), 0)
        XCTAssertEqual(try HardeningTests.upstreamCounts(upstream)["a"], 1)
    }

    func testCheckConfigNamesTheLineOfADirectoryThatCannotBeWritten() throws {
        let dir = Paths.tempDir("check")
        let file = dir.appendingPathComponent("a-file").path
        XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data()))
        let conf = dir.appendingPathComponent("proxy.conf")
        let base = "[listen]\ntcp = 127.0.0.1:0\n[upstream]\nurl = http://127.0.0.1:1/api\n[spool]\ndir = \(dir.path)/spool\n"
        try (base + "[journal]\ndir = \(file)/journal\n").write(to: conf, atomically: true, encoding: .utf8)
        var r = try runProxy(["--config", conf.path, "--check-config"])
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.stderr.contains("\(conf.path):8: journal.dir \(file)/journal: \(file) is not a directory"), r.stderr)
        try (base + "[journal]\ndir = /proc/1/metrics-proxy-journal\n").write(to: conf, atomically: true, encoding: .utf8)
        r = try runProxy(["--config", conf.path, "--check-config"])
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.stderr.contains("\(conf.path):8: journal.dir /proc/1/metrics-proxy-journal: cannot be created in /proc/1"), r.stderr)
        // The default, inside a spool directory that does not exist yet: fine, it will be created.
        try base.write(to: conf, atomically: true, encoding: .utf8)
        r = try runProxy(["--config", conf.path, "--check-config"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir.path)/spool"), "a check creates nothing")
    }
}
