import XCTest
@testable import MetricsProxyCore

/// `ConfigKey.table` drives defaults, parsing and reload.
final class ConfigKeyTableTests: XCTestCase {
    func testEveryKeyIsDeclaredOnceAndItsDefaultIsConfigsDefault() throws {
        let table = ConfigKey.table
        XCTAssertEqual(Set(table.map(\.qualifiedName)).count, table.count, "no key twice")
        // Writing every default out and parsing it back gives `Config()`.
        var text = ""
        let sections = table.map(\.section).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        for section in sections {
            text += "[\(section)]\n"
            for key in table where key.section == section { text += "\(key.name) = \(key.defaultValue)\n" }
        }
        XCTAssertEqual(try ConfigParser(file: "defaults.conf", environment: [:]).parse(text), Config())
        XCTAssertEqual(Config().window.interval, .seconds(60))
        XCTAssertEqual(Config().listen.tcp, [HostPort(host: "127.0.0.1", port: 4243)])
    }

    /// proxy.conf sets `unix` from the environment with a socket path as its fallback; the
    /// built-in default stays off, so a file without the key opens no socket (and a file with
    /// `tcp = off` alone has no listener and is refused).
    func testUnixSocketIsOffUnlessConfiguredNotProxyConfsFallback() throws {
        XCTAssertNil(Config().listen.unix)
        XCTAssertThrowsError(try ConfigParser(file: "p.conf", environment: [:]).parse("[listen]\ntcp = off\n"))
    }

    /// Each restart-only key is reported and kept on reload; each live key applies.
    func testReloadKeepsExactlyTheRestartOnlyKeys() throws {
        let running = Config()
        for key in ConfigKey.table {
            var changed = running
            let value = ["listen.tcp": "127.0.0.1:9", "listen.unix": "/tmp/other.sock", "listen.unix_mode": "0600",
                         "spool.dir": "/tmp/elsewhere", "window.interval": "5s", "journal.dir": "off", "journal.fsync": "250ms",
                         "journal.max_size": "2MiB"][key.qualifiedName]
            guard let value else { continue }
            try key.apply(&changed, value, true) { ConfigError(file: "t", line: 0, message: $0) }
            XCTAssertNotEqual(changed, running, key.qualifiedName)
            XCTAssertEqual(running.restartKeys(comparedTo: changed), key.live ? [] : [key.qualifiedName])
            XCTAssertEqual(running.reloaded(with: changed), key.live ? changed : running, key.qualifiedName)
        }
        XCTAssertEqual(ConfigKey.table.filter { !$0.live }.map(\.qualifiedName), ["listen.tcp", "listen.unix", "listen.unix_mode", "spool.dir",
                                                                                 "journal.dir", "journal.fsync"])
    }
}
