import Foundation
import XCTest

/// An HTTPS upstream with a test CA: verified when chain and host name are right, refused and
/// logged when either is wrong. Nothing reaches an upstream that failed verification.
final class TLSUpstreamTests: XCTestCase {
    static let certs: URL = {
        let dir = Paths.tempDir("certs")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [Paths.fixtures.appendingPathComponent("make_certs.sh").path, dir.path]
        try! p.run()
        p.waitUntilExit()
        precondition(p.terminationStatus == 0, "make_certs.sh failed")
        return dir
    }()

    func cert(_ name: String) -> String { Self.certs.appendingPathComponent(name).path }

    /// Posts one metric through a proxy whose upstream is `host` with `serverCert`; returns
    /// the proxy and the fake upstream once the window has been tried.
    func deliver(host: String, serverCert: String, extra: String = "") throws -> (ProxyProcess, FakeUpstream) {
        let upstream = try FakeUpstream(cert: cert("\(serverCert).pem"), key: cert("\(serverCert).key"))
        let url = "https://\(host):\(upstream.port)/api"
        let proxy = try ProxyProcess(config: testConfig(upstream: url, interval: "300ms",
                                                        upstreamExtra: "ca_file = \(cert("ca.pem"))\n\(extra)"))
        let r = try proxy.tcp().post("/api/client/metrics", json: ValidationTests.bucket(#"{"tls":{"yes":7}}"#), token: tokenA)
        XCTAssertEqual(r.status, 202)
        waitFor("the upstream to be tried") { proxy.log.contains("batch delivered") || proxy.log.contains("upstream unavailable") }
        return (proxy, upstream)
    }

    func testVerifiedHTTPSByNameAndByIPDelivers() throws {
        for host in ["localhost", "127.0.0.1"] {
            let (proxy, upstream) = try deliver(host: host, serverCert: "server")
            XCTAssertTrue(proxy.log.contains("batch delivered"), "\(host): \(proxy.log)")
            let got = try upstream.requests(path: "/api/client/metrics/bulk")
            XCTAssertEqual(got.count, 1, host)
            XCTAssertEqual((got.first?.json["metrics"] as? [[String: Any]])?.first?["yes"] as? Int, 7, host)
            XCTAssertEqual(got.first?.header("Host"), "\(host):\(upstream.port)", host)
        }
    }

    func testWrongHostNameIsRefusedAndLogged() throws {
        for host in ["localhost", "127.0.0.1"] {
            let (proxy, upstream) = try deliver(host: host, serverCert: "wronghost")
            XCTAssertFalse(proxy.log.contains("batch delivered"), host)
            XCTAssertTrue(proxy.log.contains("certificate verify failed"), "\(host): \(proxy.log)")
            XCTAssertEqual(try upstream.requests().count, 0, "no request may reach an unverified upstream")
        }
    }

    func testUnknownCAIsRefusedAndLogged() throws {
        let (proxy, upstream) = try deliver(host: "localhost", serverCert: "untrusted")
        XCTAssertFalse(proxy.log.contains("batch delivered"))
        XCTAssertTrue(proxy.log.contains("unable to get local issuer certificate"), proxy.log)
        XCTAssertEqual(try upstream.requests().count, 0)
    }

    func testVerificationOffIsExplicitAndLoud() throws {
        let (proxy, upstream) = try deliver(host: "localhost", serverCert: "untrusted", extra: "tls_verify = off")
        XCTAssertTrue(proxy.log.contains("TLS verification is OFF"))
        XCTAssertTrue(proxy.log.contains("batch delivered"), proxy.log)
        XCTAssertEqual(try upstream.requests(path: "/api/client/metrics/bulk").count, 1)
    }
}
