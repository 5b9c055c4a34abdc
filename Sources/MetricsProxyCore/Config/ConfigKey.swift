/// One proxy.conf key, declared once: its section and name, its default as proxy.conf writes
/// it, how its value is parsed into `Config`, and whether SIGHUP applies it. `Config()`,
/// `ConfigParser`, reload (`Config.restartKeys`, `Config.reloaded`) and the README's reference
/// (`metrics-proxy --config-keys`) are all derived from `ConfigKey.table`: a new key is one
/// entry there (and its documentation in proxy.conf, which a test holds to the table).
public struct ConfigKey {
    public typealias Fail = (String) -> ConfigError

    public let section: String
    public let name: String
    /// The default, written as in proxy.conf; `Config()` is made of these.
    public let defaultValue: String
    /// Applied by SIGHUP; otherwise a change waits for a restart (listeners, the spool's place).
    public let live: Bool
    /// May be given more than once; the first occurrence replaces the default, later ones add.
    public let repeats: Bool
    /// Parses `value` into the configuration; `first` is whether this is the key's first line.
    let apply: (_ config: inout Config, _ value: String, _ first: Bool, _ bad: Fail) throws(ConfigError) -> Void
    let differs: (Config, Config) -> Bool
    /// Copies the key's value from the second configuration into the first.
    let keep: (inout Config, Config) -> Void

    public var qualifiedName: String { "\(section).\(name)" }

    /// A key held at `path`, its value parsed by `parse`.
    static func value<V: Equatable>(_ section: String, _ name: String, _ path: WritableKeyPath<Config, V>, default defaultValue: String,
                                    live: Bool = true, _ parse: @escaping (String, Fail) throws(ConfigError) -> V) -> ConfigKey {
        ConfigKey(section: section, name: name, defaultValue: defaultValue, live: live, repeats: false,
                  apply: { (c: inout Config, v: String, _: Bool, bad: Fail) throws(ConfigError) in c[keyPath: path] = try parse(v, bad) },
                  differs: { $0[keyPath: path] != $1[keyPath: path] },
                  keep: { $0[keyPath: path] = $1[keyPath: path] })
    }

    /// Every key, in the order proxy.conf documents them.
    public static var table: [ConfigKey] {
        typealias V = ConfigValue
        return [
            ConfigKey(section: "listen", name: "tcp", defaultValue: "127.0.0.1:4243", live: false, repeats: true,
                      apply: { (c: inout Config, v: String, first: Bool, bad: Fail) throws(ConfigError) in
                          if first || v.lowercased() == "off" { c.listen.tcp = [] }
                          if v.lowercased() == "off" { return }
                          guard let hp = HostPort.parse(v) else { throw bad("expected host:port, [v6]:port or off") }
                          c.listen.tcp.append(hp)
                      },
                      differs: { $0.listen.tcp != $1.listen.tcp }, keep: { $0.listen.tcp = $1.listen.tcp }),
            .value("listen", "unix", \.listen.unix, default: "off", live: false) { v, bad throws(ConfigError) in
                if v.lowercased() == "off" || v.isEmpty { return nil }
                guard v.hasPrefix("/") else { throw bad("expected an absolute path or off") }
                guard v.utf8.count < 108 else { throw bad("a Unix socket path must be shorter than 108 bytes") }
                return v
            },
            .value("listen", "unix_mode", \.listen.unixMode, default: "0660", live: false) { v, bad throws(ConfigError) in
                guard let m = UInt32(v, radix: 8), m <= 0o777 else { throw bad("expected an octal mode such as 0660") }
                return m
            },
            .value("listen", "max_body", \.listen.maxBody, default: "102400") { v, bad throws(ConfigError) in try V.size(v, min: 1024, bad) },
            .value("listen", "idle_timeout", \.listen.idleTimeout, default: "60s", V.duration),
            .value("listen", "request_timeout", \.listen.requestTimeout, default: "30s", V.duration),
            .value("listen", "min_rate", \.listen.minRate, default: "500") { v, bad throws(ConfigError) in
                try V.integer(v, in: 0...1_000_000_000, "bytes a second (0: off)", bad)
            },
            .value("listen", "max_connections", \.listen.maxConnections, default: "1024") { v, bad throws(ConfigError) in
                try V.integer(v, in: 8...1_000_000, "a number of connections", bad)
            },
            .value("listen", "allow_tokens", \.listen.allowTokens, default: "") { v, bad throws(ConfigError) in
                let tokens = v.split(separator: ",").map { String($0.trimmingASCIIWhitespace()) }.filter { !$0.isEmpty }
                guard tokens.allSatisfy({ !$0.contains(" ") }) else { throw bad("expected tokens separated by commas") }
                return tokens
            },
            .value("listen", "forward", \.listen.forward, default: "/api/client/, /api/frontend/") { v, bad throws(ConfigError) in
                if v == "off" { return [] }
                let prefixes = v.split(separator: ",").map { String($0.trimmingASCIIWhitespace()).lowercased() }.filter { !$0.isEmpty }
                guard prefixes.allSatisfy({ $0.hasPrefix("/") && !$0.contains(" ") }) else {
                    throw bad("expected path prefixes starting with / separated by commas, or off")
                }
                return prefixes
            },
            .value("listen", "forward_max_in_flight", \.listen.forwardMaxInFlight, default: "64") { v, bad throws(ConfigError) in
                try V.integer(v, in: 1...100_000, "a number of requests", bad)
            },
            .value("listen", "path_prefix", \.listen.pathPrefix, default: "") { v, bad throws(ConfigError) in
                var p = v
                while p.hasSuffix("/") { p.removeLast() }
                guard p.isEmpty || p.hasPrefix("/") else { throw bad("expected a path starting with /") }
                return p
            },
            .value("upstream", "url", \.upstream.url, default: "http://127.0.0.1:4242/api") { v, bad throws(ConfigError) in
                guard let u = UpstreamURL.parse(v) else { throw bad("expected http(s)://host[:port][/path]") }
                return u
            },
            .value("upstream", "token", \.upstream.token, default: "") { v, _ in v.isEmpty ? nil : v },
            .value("upstream", "mode", \.upstream.mode, default: "bulk") { v, bad throws(ConfigError) in
                guard let m = UpstreamMode(rawValue: v.lowercased()) else { throw bad("expected bulk or metrics") }
                return m
            },
            .value("upstream", "max_body", \.upstream.maxBody, default: "95KiB") { v, bad throws(ConfigError) in try V.size(v, min: 1024, bad) },
            .value("upstream", "timeout", \.upstream.timeout, default: "10s", V.duration),
            .value("upstream", "gzip", \.upstream.gzip, default: "off", V.bool),
            .value("upstream", "ca_file", \.upstream.caFile, default: "") { v, _ in v.isEmpty ? nil : v },
            .value("upstream", "tls_verify", \.upstream.tlsVerify, default: "on", V.bool),
            .value("upstream", "drain_timeout", \.upstream.drainTimeout, default: "10s") { v, bad throws(ConfigError) in
                try V.duration(v, bad, allowZero: true)
            },
            .value("upstream", "max_in_flight", \.upstream.maxInFlight, default: "4") { v, bad throws(ConfigError) in
                try V.integer(v, in: 1...64, "a number", bad)
            },
            .value("window", "interval", \.window.interval, default: "60s", V.duration),
            .value("retry", "initial", \.retry.initial, default: "1s", V.duration),
            .value("retry", "max", \.retry.max, default: "5m", V.duration),
            .value("retry", "jitter", \.retry.jitter, default: "0.2") { v, bad throws(ConfigError) in
                let text = v.hasSuffix("%") ? String(v.dropLast()) : v
                guard let n = Double(text), n >= 0 else { throw bad("expected a fraction from 0 to 1, or a percentage") }
                let j = v.hasSuffix("%") ? n / 100 : n
                guard j <= 1 else { throw bad("expected a fraction from 0 to 1, or a percentage") }
                return j
            },
            .value("limits", "max_keys", \.limits.maxKeys, default: "200000") { v, bad throws(ConfigError) in
                try V.integer(v, in: 1...Int.max, "a number of keys", bad)
            },
            .value("limits", "max_toggles_per_post", \.limits.maxTogglesPerPost, default: "5000") { v, bad throws(ConfigError) in
                try V.integer(v, in: 1...Int.max, "a number of features", bad)
            },
            .value("limits", "max_name_length", \.limits.maxNameLength, default: "255") { v, bad throws(ConfigError) in
                try V.integer(v, in: 16...Int.max, "a number of bytes", bad)
            },
            .value("limits", "max_headers", \.limits.maxHeaders, default: "64") { v, bad throws(ConfigError) in
                try V.integer(v, in: 8...10_000, "a number of header lines", bad)
            },
            .value("limits", "max_header_size", \.limits.maxHeaderSize, default: "16KiB") { v, bad throws(ConfigError) in
                try V.size(v, min: 1024, bad)
            },
            .value("limits", "max_instances", \.limits.maxInstances, default: "10000") { v, bad throws(ConfigError) in
                try V.integer(v, in: 1...Int.max, "a number of instances", bad)
            },
            .value("limits", "instance_max_age", \.limits.instanceMaxAge, default: "24h", V.duration),
            .value("log", "level", \.log.level, default: "info") { v, bad throws(ConfigError) in
                guard let l = ["debug": LogLevel.debug, "info": .info, "warn": .warn, "warning": .warn, "error": .error][v.lowercased()]
                else { throw bad("expected debug, info, warn or error") }
                return l
            },
            .value("log", "format", \.log.format, default: "logfmt") { v, bad throws(ConfigError) in
                guard let f = LogFormat(rawValue: v.lowercased()) else { throw bad("expected logfmt or json") }
                return f
            },
            .value("spool", "dir", \.spool.dir, default: "./spool", live: false) { v, bad throws(ConfigError) in
                guard !v.isEmpty else { throw bad("expected a directory") }
                var d = v
                while d.count > 1, d.hasSuffix("/") { d.removeLast() }
                return d
            },
            .value("spool", "max_size", \.spool.maxSize, default: "256MiB") { v, bad throws(ConfigError) in try V.size(v, min: 64 * 1024, bad) },
            .value("spool", "max_age", \.spool.maxAge, default: "7d", V.duration),
            .value("spool", "replay_rate", \.spool.replayRate, default: "20") { v, bad throws(ConfigError) in
                let text = v.hasSuffix("/s") ? String(v.dropLast(2)) : v
                guard let r = Double(text), r >= 0, r.isFinite else { throw bad("expected requests per second, such as 20 or 20/s (0: no limit)") }
                return r
            },
            .value("journal", "dir", \.journal.dir, default: "auto", live: false) { v, bad throws(ConfigError) -> String? in
                guard !v.isEmpty else { throw bad("expected a directory, auto or off") }
                if v.lowercased() == "off" { return nil }
                if v.lowercased() == "auto" { return "auto" }
                var d = v
                while d.count > 1, d.hasSuffix("/") { d.removeLast() }
                return d
            },
            .value("journal", "fsync", \.journal.fsync, default: "1s", live: false) { v, bad throws(ConfigError) -> Duration? in
                v.lowercased() == "off" ? nil : try V.duration(v, { bad("expected off or an interval such as 1s: \($0)") })
            },
            .value("journal", "max_size", \.journal.maxSize, default: "32MiB") { v, bad throws(ConfigError) in
                // A segment is appended through a mapping of 1 GiB: room for a checkpoint past it.
                let n = try V.size(v, min: 1 << 20, bad)
                guard n <= 512 << 20 else { throw bad("must be at most 512MiB") }
                return n
            },
        ]
    }

    /// The table as tab-separated lines (section, key, default, `live` or `restart`), for the
    /// README's reference (`metrics-proxy --config-keys`, read by Tests/Fixtures/config_reference.py).
    public static var listing: String {
        table.map { "\($0.section)\t\($0.name)\t\($0.defaultValue)\t\($0.live ? "live" : "restart")\n" }.joined()
    }
}

/// The value syntaxes proxy.conf shares between keys.
enum ConfigValue {
    static func duration(_ v: String, _ bad: ConfigKey.Fail) throws(ConfigError) -> Duration {
        try duration(v, bad, allowZero: false)
    }

    static func duration(_ v: String, _ bad: ConfigKey.Fail, allowZero: Bool) throws(ConfigError) -> Duration {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
        var number = Substring(v.lowercased())
        var scale = 1.0
        for (suffix, s) in units where number.hasSuffix(suffix) {
            let head = number.dropLast(suffix.count)
            if Double(head) != nil { number = head; scale = s; break }
        }
        guard let n = Double(number), n.isFinite, n >= 0, allowZero || n > 0 else {
            throw bad("expected a duration such as 500ms, 30s, 5m, 1h or 7d")
        }
        return .milliseconds(Int64((n * scale * 1000).rounded()))
    }

    static func size(_ v: String, min: Int, _ bad: ConfigKey.Fail) throws(ConfigError) -> Int {
        let units: [(String, Double)] = [("kib", 1024), ("mib", 1_048_576), ("gib", 1_073_741_824),
                                         ("kb", 1000), ("mb", 1_000_000), ("gb", 1_000_000_000), ("b", 1)]
        var number = Substring(v.lowercased())
        var scale = 1.0
        for (suffix, s) in units where number.hasSuffix(suffix) {
            number = number.dropLast(suffix.count)
            scale = s
            break
        }
        guard let n = Double(number.trimmingCharacters(in: " ")), n.isFinite, n >= 0 else {
            throw bad("expected a size such as 102400, 95KiB or 256MiB")
        }
        let bytes = n * scale
        guard bytes >= Double(min), bytes < 1e15 else { throw bad("must be at least \(min) bytes") }
        return Int(bytes)
    }

    static func bool(_ v: String, _ bad: ConfigKey.Fail) throws(ConfigError) -> Bool {
        switch v.lowercased() {
        case "on", "true", "yes", "1": return true
        case "off", "false", "no", "0": return false
        default: throw bad("expected on or off")
        }
    }

    static func integer(_ v: String, in range: ClosedRange<Int>, _ what: String, _ bad: ConfigKey.Fail) throws(ConfigError) -> Int {
        guard let n = Int(v), range.contains(n) else {
            throw bad(range.upperBound == Int.max ? "expected \(what), at least \(range.lowerBound)"
                                                 : "expected \(what) from \(range.lowerBound) to \(range.upperBound)")
        }
        return n
    }
}
