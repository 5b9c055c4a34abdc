import Foundation
import XCTest

/// proxy.conf errors name file:line and stop the proxy before it listens; --check-config
/// validates without starting.
final class ConfigTests: XCTestCase {
    func write(_ text: String) throws -> String {
        let path = Paths.tempDir("conf").appendingPathComponent("proxy.conf").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func testRepositoryProxyConfIsValidAsShipped() throws {
        let path = Paths.repo.appendingPathComponent("proxy.conf").path
        let r = try runProxy(["--check-config", "--config", path])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("OK"))
    }

    func testErrorsNameFileAndLine() throws {
        let cases: [(String, String)] = [
            ("[window]\nintervall = 5s\n", ":2: unknown key \"intervall\" in [window]"),
            ("# c\n[listen]\ntcp = 127.0.0.1:notaport\n", ":3: tcp = \"127.0.0.1:notaport\": expected host:port"),
            ("[windw]\n", ":1: unknown section [windw]"),
            ("[window]\ninterval = 5 parsecs\n", ":2: interval = \"5 parsecs\": expected a duration"),
            ("[upstream]\nmode = firehose\n", ":2: mode = \"firehose\": expected bulk or metrics"),
            ("[upstream]\nurl = ftp://x\n", ":2: url = \"ftp://x\": expected http(s)://host[:port][/path]"),
            ("[upstream]\nmax_body = 12parsecs\n", ":2: max_body = \"12parsecs\": expected a size"),
            ("[upstream]\ntoken = ${METRICS_PROXY_TEST_UNSET_VAR}\n", ":2: environment variable METRICS_PROXY_TEST_UNSET_VAR is not set"),
            ("[window]\ninterval = 5s\ninterval = 6s\n", ":3: \"interval\" set twice in [window]"),
            ("interval = 5s\n", ":1: key \"interval\" outside any [section]"),
            ("[listen]\njust words\n", ":2: expected 'key = value'"),
            ("[log]\nlevel = loud\n", ":2: level = \"loud\": expected debug, info, warn or error"),
            ("[listen]\ntcp = off\n", ": no listener: set [listen] tcp or unix"),
        ]
        for (text, expected) in cases {
            let path = try write(text)
            for args in [["--check-config", "--config", path], ["--config", path]] {
                let r = try runProxy(args)
                XCTAssertNotEqual(r.status, 0, text)
                XCTAssertTrue(r.stderr.contains(path + expected), "\(text): \(r.stderr)")
                XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "one line: \(r.stderr)")
                XCTAssertFalse(r.stderr.contains("event=listening"), "a bad config must stop before listening")
            }
        }
    }

    func testEnvironmentVariablesAndDefaults() throws {
        let path = try write("[upstream]\nurl = ${MP_TEST_URL:-http://127.0.0.1:1/api}\ntoken = ${MP_TEST_TOKEN}\n")
        XCTAssertEqual(try runProxy(["--check-config", "--config", path], environment: ["MP_TEST_TOKEN": "x:y.z"]).status, 0)
        let bad = try runProxy(["--check-config", "--config", path], environment: ["MP_TEST_TOKEN": "x", "MP_TEST_URL": "nope"])
        XCTAssertTrue(bad.stderr.contains(":2: url = \"nope\""), bad.stderr)
        XCTAssertFalse(bad.stderr.contains("x:y.z"))
    }

    func testCommandLine() throws {
        XCTAssertTrue(try runProxy(["--version"]).stdout.hasPrefix("metrics-proxy "))
        XCTAssertTrue(try runProxy(["--help"]).stdout.contains("--check-config"))
        let r = try runProxy(["--frobnicate"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("unknown argument --frobnicate"))
        let missing = try runProxy(["--config", "/nonexistent/proxy.conf"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("/nonexistent/proxy.conf: cannot read"), missing.stderr)
    }

    func testPortInUseAndLiveUnixSocketAreFatalWithOneLine() throws {
        let upstream = try FakeUpstream()
        let first = try ProxyProcess(config: testConfig(upstream: upstream.url))
        let clash = try write("[listen]\ntcp = 127.0.0.1:\(first.tcpPort)\n")
        let r = try runProxy(["--config", clash])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("cannot listen on 127.0.0.1:\(first.tcpPort)"), r.stderr)
        let sockClash = try write("[listen]\ntcp = off\nunix = \(first.unixPath)\n")
        let r2 = try runProxy(["--config", sockClash])
        XCTAssertNotEqual(r2.status, 0)
        XCTAssertTrue(r2.stderr.contains("another process is listening on it"), r2.stderr)
        // The first proxy still serves on its socket.
        XCTAssertEqual(try first.unix().request("GET", "/healthz").status, 200)
    }

    func testStaleUnixSocketIsReplacedAndRemovedOnExit() throws {
        let upstream = try FakeUpstream()
        let first = try ProxyProcess(config: testConfig(upstream: upstream.url))
        first.signal(SIGKILL) // leaves its socket file behind
        _ = first.waitForExit()
        XCTAssertTrue(FileManager.default.fileExists(atPath: first.unixPath))
        let config = testConfig(upstream: upstream.url).replacingOccurrences(of: "{UNIX}", with: first.unixPath)
        let second = try ProxyProcess(config: config, name: "second")
        XCTAssertEqual(try HTTPClient(.unix(first.unixPath)).request("GET", "/healthz").status, 200)
        let attributes = try FileManager.default.attributesOfItem(atPath: first.unixPath)
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o660)
        second.signal(SIGTERM)
        XCTAssertEqual(second.waitForExit(), 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: first.unixPath), "the socket file is removed on exit")
    }
}
