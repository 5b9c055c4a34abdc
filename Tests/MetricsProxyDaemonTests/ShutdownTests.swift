import Foundation
import XCTest
import TestSupport

/// SIGTERM: stop accepting, close the open window, send it, exit 0.
final class ShutdownTests: XCTestCase {
    func testSIGTERMDuringLoadDeliversTheOpenWindowBeforeExit() throws {
        let upstream = try FakeUpstream()
        // A long window: everything posted is still in the open window when SIGTERM comes.
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url, interval: "1h"))
        let tcp = HTTPClient.Endpoint.tcp("127.0.0.1", proxy.tcpPort), unix = HTTPClient.Endpoint.unix(proxy.unixPath)
        let started = ParallelFlag()
        let pid = proxy.process.processIdentifier
        let results = parallel(9) { i -> Ledger in
            if i == 8 {
                // The signaller: SIGTERM once the posters are well under way.
                let deadline = Date().addingTimeInterval(10)
                while started.count < 200, Date() < deadline { usleep(1000) }
                kill(pid, SIGTERM)
                return Ledger()
            }
            let client = HTTPClient(i % 2 == 0 ? tcp : unix)
            var factory = PostFactory(apps: ["app-0", "app-1"], label: "shutdown-\(i)")
            var ledger = Ledger()
            for _ in 0..<5000 {
                var attempt = Ledger()
                let body = factory.post(token: i % 2 == 0 ? tokenA : tokenB, instance: "i\(i)", into: &attempt)
                guard let r = try? client.post("/api/client/metrics", json: body, token: i % 2 == 0 ? tokenA : tokenB) else { break }
                if r.status == 202 { ledger.merge(attempt); started.increment() } else { break }
            }
            return ledger
        }
        XCTAssertEqual(proxy.waitForExit(), 0, proxy.log)
        var expected = Ledger()
        for l in results { expected.merge(l) }
        XCTAssertGreaterThan(expected.sums.count, 10)
        XCTAssertEqual(Ledger.fromUpstream(try upstream.requests()), expected, "every post answered 202 arrived before exit")
        XCTAssertTrue(proxy.log.contains("event=\"shutting down\" signal=SIGTERM"))
        XCTAssertFalse(proxy.log.contains("left in the spool"))
        XCTAssertEqual(proxy.spooledFiles, [], "delivered batches are deleted from the spool")
    }

    func testSIGTERMWithUpstreamDownExitsWithinTheDrainTimeout() throws {
        // Nothing listens on the upstream port: every attempt is refused.
        let proxy = try ProxyProcess(config: testConfig(upstream: "http://127.0.0.1:9/api", interval: "1h")
            .replacingOccurrences(of: "drain_timeout = 5s", with: "drain_timeout = 1s"))
        XCTAssertEqual(try proxy.tcp().post("/api/client/metrics", json: ValidationTests.bucket(#"{"f":{"yes":1}}"#), token: tokenA).status, 202)
        let t0 = Date()
        proxy.signal(SIGTERM)
        XCTAssertEqual(proxy.waitForExit(), 0)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 4)
        XCTAssertTrue(proxy.log.contains("drain timeout reached"), proxy.log)
        XCTAssertTrue(proxy.log.contains("batches left in the spool for the next start"), proxy.log)
        XCTAssertEqual(proxy.spooledFiles.count, 1, "a clean shutdown leaves the unsent window on disk")
    }
}

/// A counter shared between poster threads.
final class ParallelFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    var count: Int { lock.lock(); defer { lock.unlock() }; return n }
    func increment() { lock.lock(); n += 1; lock.unlock() }
}
