import Foundation
import TestSupport
import MetricsProxyCore
import XCTest

/// Nothing acknowledged is lost while the upstream is away: outages, hard kills, damaged
/// spool files, the upstream's answer classes, the caps, a failing disk, a large backlog.
final class SpoolDeliveryTests: XCTestCase {
    /// Numbers `post` calls, so that each draws its own posts from the run's seed.
    private var posts = 0

    /// Posts `count` good posts and returns what they add up to.
    func post(_ proxy: ProxyProcess, count: Int, token: String = tokenA, instance: String = "i") throws -> Ledger {
        posts += 1
        var factory = PostFactory(apps: ["app-0", "app-1"], label: "\(name)-\(posts)")
        var ledger = Ledger()
        let c = proxy.tcp()
        for _ in 0..<count {
            var attempt = Ledger()
            let r = try c.post("/api/client/metrics", json: factory.post(token: token, instance: instance, into: &attempt), token: token)
            XCTAssertEqual(r.status, 202)
            if r.status == 202 { ledger.merge(attempt) }
        }
        return ledger
    }

    func windowsClosed(_ proxy: ProxyProcess) -> Int {
        proxy.log.components(separatedBy: "event=\"window closed\"").count - 1
    }

    /// Runs `posting`, then waits until a window closes after it began: what it posted is then
    /// in the spool (windows with posts always close; the log line follows the spool write).
    @discardableResult
    func spooled<T>(_ proxy: ProxyProcess, file: StaticString = #filePath, line: UInt = #line, _ posting: () throws -> T) rethrows -> T {
        let before = windowsClosed(proxy)
        let result = try posting()
        waitFor("a window to close", file: file, line: line) { windowsClosed(proxy) > before }
        return result
    }

    func testOutageRefusedThen503ThenHangingThenBackDeliversEveryCountOnceInOrderPaced() throws {
        let port = FakeUpstream.freePort()
        let proxy = try ProxyProcess(config: testConfig(upstream: "http://127.0.0.1:\(port)/api", interval: "400ms",
                                                        spoolExtra: "replay_rate = 10"))
        // Refused: nothing listens.
        var expected = try spooled(proxy) { try post(proxy, count: 30) }
        waitFor("a refused attempt") { proxy.log.contains("upstream unavailable") }
        // 503, from the first request on (a retry can arrive the moment the port listens).
        let upstream = try FakeUpstream(port: port, script: [["status": 503, "repeat": -1]])
        expected.merge(try post(proxy, count: 30, token: tokenB))
        // Several retries in the same state, so the log can show it says so once.
        try waitFor("several 503s") { try upstream.requests().filter { $0.status == 503 }.count >= 6 }
        // Hanging past the proxy's 2 s timeout.
        try upstream.script([["status": 503, "delay": 3.0, "repeat": -1]], replace: true)
        expected.merge(try spooled(proxy) { try post(proxy, count: 30) })
        waitFor("a timeout", timeout: 15) { proxy.log.contains("error=timeout") }
        XCTAssertGreaterThanOrEqual(proxy.spooledFiles.count, 3, "the closed windows wait on disk")
        // Back.
        try upstream.clearScript()
        // The spool first: polling the fake's whole record list every few milliseconds would
        // compete with it while it timestamps the paced replay. The fake records a batch before
        // its 202, so once the spool is empty every count is there.
        waitFor("the spool to empty", timeout: 30) { proxy.spooledFiles.isEmpty }
        try waitFor("every count upstream") { Ledger.fromUpstream(try upstream.requests()) == expected }

        let delivered = try upstream.requests(path: "/api/client/metrics/bulk").filter { $0.status == 202 }
        let ids = delivered.map { $0.header("X-Metrics-Proxy-Batch")! }
        XCTAssertEqual(Set(ids).count, ids.count, "each batch delivered exactly once")
        for token in [tokenA, tokenB] {
            let mine = delivered.filter { $0.header("Authorization") == token }.map { $0.header("X-Metrics-Proxy-Batch")! }
            XCTAssertEqual(mine, mine.sorted(), "window order for \(token.prefix(20))")
        }
        // Paced: replay_rate = 10 means at least ~100 ms between requests.
        let times = try upstream.arrivalTimes(path: "/api/client/metrics/bulk")
        let gaps = zip(times.dropFirst(), times).map { $0 - $1 }
        XCTAssertGreaterThan(gaps.min() ?? 1, 0.08, "\(gaps)")
        XCTAssertTrue(proxy.log.contains("upstream recovered"))
        // One log line per state change (refused, 503, timeout per token), not one per retry.
        let stateLines = proxy.log.components(separatedBy: "event=\"upstream unavailable, will retry\"").count - 1
        let failedAttempts = proxy.log.components(separatedBy: "event=\"batch attempt failed\"").count - 1
        XCTAssertLessThanOrEqual(stateLines, 6)
        XCTAssertGreaterThan(failedAttempts, stateLines)
    }

    func testKill9WithUpstreamDownLosesNoClosedWindow() throws {
        for round in 0..<3 {
            let port = FakeUpstream.freePort()
            let config = testConfig(upstream: "http://127.0.0.1:\(port)/api", interval: "300ms", spoolExtra: "replay_rate = 0")
            // A spool outside the proxy's temp dir, so it survives for the restart.
            let spool = Paths.tempDir("spool-\(round)").path
            let a: Ledger, b: Ledger
            // The post the kill interrupted: the proxy may have merged it (and closed its window
            // into the spool) before its 202 went out. It may be counted once, never twice.
            var unanswered = Ledger()
            do {
                let victim = try ProxyProcess(config: config, name: "victim-\(round)", spoolDir: spool)
                a = try spooled(victim) { try post(victim, count: 40) } // a is on disk now
                // More posts while the kill comes at a random moment.
                let pid = victim.process.processIdentifier
                var rng = SeededRandom("kill-\(round)")
                let delay = useconds_t.random(in: 50_000...700_000, using: &rng)
                let killer = Thread { usleep(delay); kill(pid, SIGKILL) }
                killer.start()
                var more = Ledger()
                var factory = PostFactory(apps: ["app-0", "app-1"], label: "victim-\(round)")
                let c = victim.tcp()
                for _ in 0..<5000 {
                    var attempt = Ledger()
                    guard let r = try? c.post("/api/client/metrics", json: factory.post(token: tokenA, instance: "k", into: &attempt), token: tokenA),
                          r.status == 202 else { unanswered = attempt; break }
                    more.merge(attempt)
                }
                b = more
                _ = victim.waitForExit()
            }
            let upstream = try FakeUpstream(port: port)
            let restarted = try ProxyProcess(config: config, name: "restart-\(round)", spoolDir: spool)
            // The window replayed from the journal closes up to one interval (300 ms) after the
            // start, possibly after the old batches are delivered: when it holds keys, wait for
            // its close before the spool can count as drained.
            let replay = restarted.log.split(separator: "\n").first { $0.contains("event=\"journal replayed\"") } ?? ""
            let replayedWindowPending = !replay.contains(" keys=0 ")
            waitFor("the spool to drain after restart (\(replay))", timeout: 20) {
                let log = restarted.log
                return (!replayedWindowPending || log.contains("event=\"window closed\""))
                    && restarted.spooledFiles.isEmpty && log.contains("batch delivered")
            }
            let got = Ledger.fromUpstream(try upstream.requests())
            var all = a
            all.merge(b)
            all.merge(unanswered)
            for (k, s) in a.sums {
                let g = got.sums[k] ?? Ledger.Sums()
                XCTAssertTrue(g.yes >= s.yes && g.no >= s.no, "round \(round): \(k) closed before the kill is missing counts")
            }
            for (k, g) in got.sums {
                let s = all.sums[k] ?? Ledger.Sums()
                XCTAssertTrue(g.yes <= s.yes && g.no <= s.no, "round \(round): \(k) counted more than posted (duplicate)")
                for (v, c) in g.variants { XCTAssertLessThanOrEqual(c, s.variants[v] ?? 0) }
            }
            let left = try FileManager.default.contentsOfDirectory(atPath: spool).sorted()
            XCTAssertEqual(left, [".lock", "corrupt", "journal", "rejected"],
                           "round \(round): nothing but the lock, corrupt/, journal/ and rejected/ is left")
            restarted.signal(SIGTERM)
            XCTAssertEqual(restarted.waitForExit(), 0)
        }
    }

    func testTornAndFlippedSpoolFilesAreSetAsideAndTheRestDelivered() throws {
        let port = FakeUpstream.freePort()
        let spool = Paths.tempDir("torn").path
        let config = testConfig(upstream: "http://127.0.0.1:\(port)/api", interval: "200ms", spoolExtra: "replay_rate = 0")
            .replacingOccurrences(of: "drain_timeout = 5s", with: "drain_timeout = 300ms")
        let writer = try ProxyProcess(config: config, name: "writer", spoolDir: spool)
        for i in 0..<6 {
            let r = try spooled(writer) {
                try writer.tcp().post("/api/client/metrics", json: ValidationTests.bucket(#"{"torn-\#(i)":{"yes":\#(i + 1)}}"#), token: tokenA)
            }
            XCTAssertEqual(r.status, 202)
        }
        writer.signal(SIGTERM)
        XCTAssertEqual(writer.waitForExit(), 0)
        let files = writer.spooledFiles
        XCTAssertEqual(files.count, 6)
        func damage(_ name: String, _ change: (inout [UInt8]) -> Void) throws {
            let url = URL(fileURLWithPath: spool).appendingPathComponent(name)
            var bytes = [UInt8](try Data(contentsOf: url))
            change(&bytes)
            try Data(bytes).write(to: url)
        }
        try damage(files[1]) { $0 = Array($0.prefix(10)) }
        try damage(files[2]) { b in b = Array(b.prefix(b.firstRange(of: [10, 10])!.lowerBound)) } // header only
        try damage(files[3]) { b in b = Array(b.prefix(b.count - 7)) } // torn body
        try damage(files[4]) { b in b[b.count - 20] ^= 0x10 } // one flipped bit
        _ = FileManager.default.createFile(atPath: spool + "/leftover.tmp", contents: Data([1, 2, 3]))

        let upstream = try FakeUpstream(port: port)
        let reader = try ProxyProcess(config: config, name: "reader", spoolDir: spool)
        waitFor("the intact batches upstream") { reader.spooledFiles.isEmpty && reader.log.contains("batch delivered") }
        let names = Set(try upstream.requests(path: "/api/client/metrics/bulk").flatMap { ($0.json["metrics"] as! [[String: Any]]).map { $0["featureName"] as! String } })
        XCTAssertEqual(names, ["torn-0", "torn-5"])
        let corrupt = try FileManager.default.contentsOfDirectory(atPath: spool + "/corrupt").sorted()
        XCTAssertEqual(corrupt, Array(files[1...4]))
        XCTAssertFalse(FileManager.default.fileExists(atPath: spool + "/leftover.tmp"))
        XCTAssertEqual(reader.log.components(separatedBy: "event=\"spool file set aside\"").count - 1, 4)
        XCTAssertEqual(try reader.tcp().request("GET", "/healthz").status, 200, "never fatal")
    }

    func testAnswerClasses413Split400Rejected401KeptRetryAfterHonoured() throws {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "300ms", spoolExtra: "replay_rate = 0"))
        // 413: the batch is split in two and both halves arrive.
        try upstream.script([["status": 413, "repeat": 1, "path_prefix": "/api/client/metrics/bulk"]])
        let split = try post(proxy, count: 20)
        try waitFor("the halves") { Ledger.fromUpstream(try upstream.requests()) == split }
        // The posts may fall into two windows; follow the batch that was answered 413.
        var got = try upstream.requests(path: "/api/client/metrics/bulk")
        let tooLarge = try XCTUnwrap(got.first { $0.status == 413 }?.header("X-Metrics-Proxy-Batch"))
        let ids = got.filter { $0.status == 202 }.map { $0.header("X-Metrics-Proxy-Batch")! }
        XCTAssertTrue(ids.contains(tooLarge + "a") && ids.contains(tooLarge + "b"), "\(ids)")
        XCTAssertFalse(ids.contains(tooLarge), "the whole batch is not sent again")
        try upstream.reset()

        // 400: moved to rejected/, counted in the log, not retried.
        try upstream.script([["status": 400, "repeat": 1]])
        _ = try post(proxy, count: 1)
        waitFor("the rejection") { proxy.log.contains("batch rejected by upstream") }
        let rejected = try FileManager.default.contentsOfDirectory(atPath: proxy.spoolDir + "/rejected")
        XCTAssertEqual(rejected.count, 1)
        XCTAssertEqual(try upstream.requests().count, 1)
        try upstream.reset()

        // 401: kept, logged loudly once, retried at [retry] max (1 s here) and delivered.
        try upstream.script([["status": 401, "repeat": 2]])
        let held = try post(proxy, count: 5)
        try waitFor("delivery after the 401s", timeout: 10) { Ledger.fromUpstream(try upstream.requests()) == held }
        got = try upstream.requests()
        let refusedId = try XCTUnwrap(got.first?.header("X-Metrics-Proxy-Batch"))
        XCTAssertEqual(got.filter { $0.header("X-Metrics-Proxy-Batch") == refusedId }.map(\.status), [401, 401, 202])
        XCTAssertEqual(proxy.log.components(separatedBy: "upstream refuses the token").count - 1, 1)
        try upstream.reset()

        // Retry-After: 2 s is a floor over the 200 ms backoff, measured on the fake's clock.
        try upstream.script([["status": 503, "repeat": 1, "headers": ["Retry-After": "2"]]])
        let later = try post(proxy, count: 5)
        try waitFor("delivery after Retry-After", timeout: 10) { Ledger.fromUpstream(try upstream.requests()) == later }
        got = try upstream.requests(path: "/api/client/metrics/bulk")
        let slowed = try XCTUnwrap(got.first { $0.status == 503 })
        let again = try XCTUnwrap(got.first { $0.status == 202 && $0.header("X-Metrics-Proxy-Batch") == slowed.header("X-Metrics-Proxy-Batch") })
        XCTAssertGreaterThanOrEqual(again.t - slowed.t, 1.95)
        XCTAssertLessThan(again.t - slowed.t, 4)
    }

    func testSpoolNeverExceedsMaxSizePlusOneBatchAndDropsOldestFirst() throws {
        let port = FakeUpstream.freePort()
        let proxy = try ProxyProcess(config: testConfig(upstream: "http://127.0.0.1:\(port)/api", interval: "200ms",
                                                        spoolExtra: "max_size = 64KiB\nreplay_rate = 0"))
        var maxSeen = 0, largestFile = 0
        for i in 0..<14 {
            // Each window: one batch of about 8 KB (many distinct features).
            let toggles = (0..<60).map { #""w\#(i)-feature-\#($0)-padding-padding":{"yes":1,"no":1}"# }.joined(separator: ",")
            XCTAssertEqual(try spooled(proxy) { try proxy.tcp().post("/api/client/metrics", json: ValidationTests.bucket("{\(toggles)}"), token: tokenA) }.status, 202)
            let sizes = proxy.spooledFiles.map { (try? FileManager.default.attributesOfItem(atPath: proxy.spoolDir + "/" + $0)[.size] as? Int) ?? 0 }
            maxSeen = max(maxSeen, sizes.reduce(0, +))
            largestFile = max(largestFile, sizes.max() ?? 0)
        }
        XCTAssertLessThanOrEqual(maxSeen, 64 * 1024 + largestFile)
        XCTAssertTrue(proxy.log.contains("reason=max_size"))
        let dropped = proxy.log.split(separator: "\n").filter { $0.contains("reason=max_size") }
            .map { String($0.components(separatedBy: "batch=")[1].prefix(20)) }
        let kept = proxy.spooledFiles.map { String($0.prefix(20)) }
        XCTAssertGreaterThan(dropped.count, 0)
        XCTAssertLessThan(dropped.max()!, kept.min()!, "the oldest go first")
    }

    /// A real ENOSPC: a 256 KiB tmpfs at `mountPoint`; nil (and a failure) without root.
    func tmpfs(_ mountPoint: String) throws -> Bool {
        let mount = try runTool("/bin/mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", mountPoint])
        XCTAssertEqual(mount, 0, "mounting a tmpfs needs root (CI runs as root)")
        return mount == 0
    }

    /// The spool's disk fills, the journal's does not: posts are still taken (the journal
    /// holds them), closed windows wait in memory, and their journal segments stay until the
    /// spool has them.
    func testSpoolDiskFullKeepsServingAndRecoversWhenSpaceReturns() throws {
        let mountPoint = Paths.tempDir("tmpfs").path
        guard try tmpfs(mountPoint) else { return }
        defer { _ = try? runTool("/bin/umount", [mountPoint]) }
        let filler = mountPoint + "/filler"
        let spool = mountPoint + "/spool"
        let journal = Paths.tempDir("journal").path
        let port = FakeUpstream.freePort()
        let proxy = try ProxyProcess(config: testConfig(upstream: "http://127.0.0.1:\(port)/api", interval: "200ms",
                                                        extra: "[journal]\ndir = \(journal)", spoolExtra: "replay_rate = 0"),
                                     spoolDir: spool)
        // Fill the disk.
        _ = try runTool("/bin/dd", ["if=/dev/zero", "of=\(filler)", "bs=4k", "count=1000"])
        var expected = try post(proxy, count: 20)
        waitFor("the write failure") { proxy.log.contains("spool write failed") }
        XCTAssertTrue(proxy.log.contains("No space left on device"), proxy.log)
        expected.merge(try post(proxy, count: 20))
        XCTAssertEqual(try proxy.tcp().request("GET", "/healthz").status, 200, "still serving")
        // The closed windows are only in memory: their journal segments are kept.
        func segments() -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: journal)) ?? []).filter { $0.hasSuffix(".journal") } }
        XCTAssertGreaterThan(segments().count, 1)
        // Space returns; the held windows reach the disk, then the upstream.
        try FileManager.default.removeItem(atPath: filler)
        waitFor("the spool to recover") { proxy.log.contains("spool writes recovered") }
        waitFor("the kept segments removed once the spool has their windows") {
            segments().count == 1
        }
        let upstream = try FakeUpstream(port: port)
        try waitFor("every count upstream", timeout: 20) { Ledger.fromUpstream(try upstream.requests()) == expected }
    }

    /// One disk for the spool and the journal, and it fills: a post that cannot be journalled
    /// is answered 503 with Retry-After (the SDK keeps its counts and retries), never 202.
    func testAFullDiskAnswers503UntilSpaceReturnsAndLosesNothingAnswered202() throws {
        let mountPoint = Paths.tempDir("tmpfs").path
        guard try tmpfs(mountPoint) else { return }
        defer { _ = try? runTool("/bin/umount", [mountPoint]) }
        let filler = mountPoint + "/filler"
        let port = FakeUpstream.freePort()
        let proxy = try ProxyProcess(config: testConfig(upstream: "http://127.0.0.1:\(port)/api", interval: "200ms",
                                                        spoolExtra: "replay_rate = 0"), spoolDir: mountPoint + "/spool")
        _ = try runTool("/bin/dd", ["if=/dev/zero", "of=\(filler)", "bs=4k", "count=1000"])
        var factory = PostFactory(apps: ["app-0"], label: name)
        var expected = Ledger()
        var statuses: [Int: Int] = [:]
        let c = proxy.tcp()
        // Compact journal records are small: the last page the disk gave may hold a window's
        // worth; the next window's segment finds no room. Post until then (5 s at most).
        let deadline = Date().addingTimeInterval(5)
        while (statuses[503] ?? 0) < 3 && Date() < deadline {
            var attempt = Ledger()
            let r = try c.post("/api/client/metrics", json: factory.post(token: tokenA, instance: "i", into: &attempt), token: tokenA)
            statuses[r.status, default: 0] += 1
            if r.status == 202 { expected.merge(attempt) } else {
                XCTAssertEqual(r.status, 503)
                XCTAssertEqual(r.header("Retry-After"), "1")
            }
        }
        XCTAssertGreaterThan(statuses[503] ?? 0, 0, "\(statuses)")
        XCTAssertTrue(proxy.log.contains("journal append failed"), proxy.log)
        XCTAssertEqual(try proxy.tcp().request("GET", "/healthz").status, 200, "still serving")
        try FileManager.default.removeItem(atPath: filler)
        waitFor("posts taken again") {
            var attempt = Ledger()
            guard (try? c.post("/api/client/metrics", json: factory.post(token: tokenA, instance: "i", into: &attempt), token: tokenA).status) == 202
            else { return false }
            expected.merge(attempt)
            return true
        }
        let upstream = try FakeUpstream(port: port)
        try waitFor("every count answered 202 upstream, once", timeout: 20) { Ledger.fromUpstream(try upstream.requests()) == expected }
    }

    func testA50MBBacklogReplaysWithBoundedMemory() throws {
        let spool = Paths.tempDir("backlog").path
        // 50 MB of valid batches, written with the spool's own format.
        let body = { (i: Int) -> [UInt8] in
            let metrics = (0..<420).map { #"{"featureName":"f\#(i)-\#($0)-padding-padding-padding-padding-padding","appName":"backlog","environment":"development","timestamp":"2026-11-28T10:00:00.000Z","yes":1,"no":2,"variants":{}}"# }
            return Array(#"{"applications":[],"metrics":[\#(metrics.joined(separator: ","))]}"#.utf8)
        }
        var total = 0, count = 0
        while total < 50 << 20 {
            let id = String(format: "%015d-0000", 1_795_860_000_000 + count)
            let bytes = SpoolFile.encode(Batch(id: id, token: tokenA, path: "/client/metrics/bulk", body: body(count), created: nowMillisForTests(), entries: 420))
            try Data(bytes).write(to: URL(fileURLWithPath: spool + "/\(id).batch"))
            total += bytes.count
            count += 1
        }
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "1h",
                                                        spoolExtra: "replay_rate = 0\nmax_size = 1GiB"), spoolDir: spool)
        waitFor("the backlog to drain", timeout: 120) { proxy.spooledFiles.isEmpty }
        let status = try String(contentsOfFile: "/proc/\(proxy.process.processIdentifier)/status", encoding: .utf8)
        let peakKiB = Int(status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }!.split(separator: " ")[1])!
        print("backlog: \(count) batches, \(total >> 20) MiB replayed; peak resident \(peakKiB / 1024) MiB")
        // Under Tests/sanitizers.sh the figure is ASan's shadow memory and quarantine, not ours;
        // the plain run (CI runs it first) holds the bound.
        if ProcessInfo.processInfo.environment["METRICS_PROXY_SANITIZER"] == nil {
            XCTAssertLessThan(peakKiB, 40 * 1024, "memory stays bounded while replaying \(total >> 20) MiB")
        }
        XCTAssertEqual(try upstream.requests(path: "/api/client/metrics/bulk").filter { $0.status == 202 }.count, count)
    }
}

func nowMillisForTests() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

/// Runs a system tool and returns its exit status.
@discardableResult
func runTool(_ path: String, _ args: [String]) throws -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    p.waitUntilExit()
    return p.terminationStatus
}
