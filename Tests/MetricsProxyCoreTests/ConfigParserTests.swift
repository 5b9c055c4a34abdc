import XCTest
@testable import MetricsProxyCore

final class ConfigParserTests: XCTestCase {
    func parse(_ text: String, env: [String: String] = [:]) throws(ConfigError) -> Config {
        try ConfigParser(file: "proxy.conf", environment: env).parse(text)
    }

    func testUnitsRepeatsAndComments() throws {
        let c = try parse("""
            # comment
            [listen]
            tcp = 127.0.0.1:1000   # inline comment
            tcp = [::1]:1001
            unix = /run/mp.sock
            unix_mode = 0600
            max_body = 100KiB
            [upstream]
            url = https://unleash.example:8443/api/
            max_body = 1MB
            timeout = 1500ms
            [window]
            interval = 5m
            [retry]
            max = 1h
            jitter = 25%
            """)
        XCTAssertEqual(c.listen.tcp, [HostPort(host: "127.0.0.1", port: 1000), HostPort(host: "::1", port: 1001)])
        XCTAssertEqual(c.listen.unixMode, 0o600)
        XCTAssertEqual(c.listen.maxBody, 102_400)
        XCTAssertEqual(c.upstream.url, UpstreamURL(scheme: .https, host: "unleash.example", port: 8443, basePath: "/api"))
        XCTAssertEqual(c.upstream.maxBody, 1_000_000)
        XCTAssertEqual(c.upstream.timeout, .milliseconds(1500))
        XCTAssertEqual(c.window.interval, .seconds(300))
        XCTAssertEqual(c.retry.max, .seconds(3600))
        XCTAssertEqual(c.retry.jitter, 0.25)
    }

    func testLimitsAndAllowTokens() throws {
        let c = try parse("""
            [listen]
            max_connections = 64
            request_timeout = 5s
            allow_tokens = ${A}, p:e.two
            [limits]
            max_toggles_per_post = 100
            max_name_length = 64
            max_headers = 20
            max_header_size = 4KiB
            """, env: ["A": "p:e.one"])
        XCTAssertEqual(c.listen.maxConnections, 64)
        XCTAssertEqual(c.listen.requestTimeout, .seconds(5))
        XCTAssertEqual(c.listen.allowTokens, ["p:e.one", "p:e.two"])
        XCTAssertEqual([c.limits.maxTogglesPerPost, c.limits.maxNameLength, c.limits.maxHeaders, c.limits.maxHeaderSize], [100, 64, 20, 4096])
        let defaults = try parse("[listen]\ntcp = 127.0.0.1:1\n")
        XCTAssertEqual(defaults.listen.allowTokens, [])
        XCTAssertEqual(defaults.limits.maxNameLength, 255)
    }

    func testEnvironmentExpansion() throws {
        let c = try parse("[upstream]\ntoken = ${T}\nurl = ${U:-http://h:1/x}\n", env: ["T": "p:e.s", "U": ""])
        XCTAssertEqual(c.upstream.token, "p:e.s")
        XCTAssertEqual(c.upstream.url.host, "h", "an empty variable takes the default")
        XCTAssertThrowsError(try parse("[upstream]\ntoken = ${MISSING}\n")) { e in
            XCTAssertEqual((e as? ConfigError)?.line, 2)
        }
    }

    func testErrorsCarryTheLine() {
        for (text, line) in [("[window]\n\n\nintervall = 1s", 4), ("[listen]\nunix_mode = 999", 2), ("[retry]\njitter = 2", 2),
                             ("[window]\ninterval = 0s", 2), ("[listen]\nmax_body = 10", 2), ("[log]\nformat = xml", 2),
                             ("[listen]\nmax_connections = 2", 2), ("[listen]\nrequest_timeout = soon", 2),
                             ("[limits]\n\nmax_toggles_per_post = 0", 3), ("[limits]\nmax_name_length = 4", 2),
                             ("[limits]\nmax_headers = x", 2), ("[limits]\nmax_header_size = 12", 2)] {
            XCTAssertThrowsError(try parse(text), text) { e in XCTAssertEqual((e as? ConfigError)?.line, line, text) }
        }
    }
}
