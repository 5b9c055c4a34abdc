/// A config error a person reads: `proxy.conf:12: unknown key "intervall" in [window]`.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var message: String

    public init(file: String, line: Int, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String { line > 0 ? "\(file):\(line): \(message)" : "\(file): \(message)" }
}

/// Reads proxy.conf: INI sections, `key = value`, `#` and `;` comments, units on durations and
/// sizes, and `${VAR}` / `${VAR:-default}` from the environment.
public struct ConfigParser {
    public var file: String
    public var environment: [String: String]

    public init(file: String, environment: [String: String]) {
        self.file = file
        self.environment = environment
    }

    public func parse(_ text: String) throws(ConfigError) -> Config {
        var config = Config()
        var section = ""
        var seen: Set<String> = []
        var tcpSet = false
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = stripComment(rawLine).trimmingASCIIWhitespace()
            if line.isEmpty { continue }
            func fail(_ message: String) -> ConfigError { ConfigError(file: file, line: lineNumber, message: message) }
            if line.hasPrefix("[") {
                guard line.hasSuffix("]") else { throw fail("section header must end with ']': \(line)") }
                section = String(line.dropFirst().dropLast()).trimmingASCIIWhitespace().lowercased()
                guard Self.keys[section] != nil else { throw fail("unknown section [\(section)]") }
                continue
            }
            guard let eq = line.firstIndex(of: "=") else { throw fail("expected 'key = value', found \(quote(line))") }
            let key = String(line[..<eq]).trimmingASCIIWhitespace().lowercased()
            guard !section.isEmpty else { throw fail("key \(quote(key)) outside any [section]") }
            guard Self.keys[section]!.contains(key) else { throw fail("unknown key \(quote(key)) in [\(section)]") }
            let value = try expand(String(line[line.index(after: eq)...]).trimmingASCIIWhitespace(), fail)
            let qualified = "\(section).\(key)"
            if qualified != "listen.tcp" {
                guard seen.insert(qualified).inserted else { throw fail("\(quote(key)) set twice in [\(section)]") }
            }
            try apply(section: section, key: key, value: value, to: &config, tcpSet: &tcpSet, fail)
        }
        if config.listen.tcp.isEmpty && config.listen.unix == nil {
            throw ConfigError(file: file, line: 0, message: "no listener: set [listen] tcp or unix")
        }
        return config
    }

    static let keys: [String: Set<String>] = [
        "listen": ["tcp", "unix", "unix_mode", "max_body", "idle_timeout", "path_prefix", "max_connections", "request_timeout",
                   "allow_tokens"],
        "upstream": ["url", "token", "mode", "max_body", "timeout", "gzip", "ca_file", "tls_verify", "drain_timeout", "max_in_flight"],
        "window": ["interval"],
        "spool": ["dir", "max_size", "max_age", "replay_rate"],
        "retry": ["initial", "max", "jitter"],
        "limits": ["max_keys", "max_toggles_per_post", "max_name_length", "max_headers", "max_header_size"],
        "log": ["level", "format"],
    ]

    private func apply(section: String, key: String, value: String, to c: inout Config, tcpSet: inout Bool,
                       _ fail: (String) -> ConfigError) throws(ConfigError) {
        func bad(_ what: String) -> ConfigError { fail("\(key) = \(quote(value)): \(what)") }
        switch (section, key) {
        case ("listen", "tcp"):
            if !tcpSet { c.listen.tcp = []; tcpSet = true }
            if value.lowercased() == "off" { c.listen.tcp = []; return }
            guard let hp = HostPort.parse(value) else { throw bad("expected host:port, [v6]:port or off") }
            c.listen.tcp.append(hp)
        case ("listen", "unix"):
            if value.lowercased() == "off" || value.isEmpty { c.listen.unix = nil; return }
            guard value.hasPrefix("/") else { throw bad("expected an absolute path or off") }
            guard value.utf8.count < 108 else { throw bad("a Unix socket path must be shorter than 108 bytes") }
            c.listen.unix = value
        case ("listen", "unix_mode"):
            guard let m = UInt32(value, radix: 8), m <= 0o777 else { throw bad("expected an octal mode such as 0660") }
            c.listen.unixMode = m
        case ("listen", "max_body"): c.listen.maxBody = try size(value, min: 1024, bad)
        case ("listen", "idle_timeout"): c.listen.idleTimeout = try duration(value, bad)
        case ("listen", "max_connections"):
            guard let n = Int(value), (8...1_000_000).contains(n) else { throw bad("expected a number of connections from 8 to 1000000") }
            c.listen.maxConnections = n
        case ("listen", "request_timeout"): c.listen.requestTimeout = try duration(value, bad)
        case ("listen", "allow_tokens"):
            let tokens = value.split(separator: ",").map { String($0.trimmingASCIIWhitespace()) }.filter { !$0.isEmpty }
            guard tokens.allSatisfy({ !$0.contains(" ") }) else { throw bad("expected tokens separated by commas") }
            c.listen.allowTokens = tokens
        case ("listen", "path_prefix"):
            var p = value
            while p.hasSuffix("/") { p.removeLast() }
            guard p.isEmpty || p.hasPrefix("/") else { throw bad("expected a path starting with /") }
            c.listen.pathPrefix = p
        case ("upstream", "url"):
            guard let u = UpstreamURL.parse(value) else { throw bad("expected http(s)://host[:port][/path]") }
            c.upstream.url = u
        case ("upstream", "token"): c.upstream.token = value.isEmpty ? nil : value
        case ("upstream", "mode"):
            guard let m = UpstreamMode(rawValue: value.lowercased()) else { throw bad("expected bulk or metrics") }
            c.upstream.mode = m
        case ("upstream", "max_body"): c.upstream.maxBody = try size(value, min: 1024, bad)
        case ("upstream", "timeout"): c.upstream.timeout = try duration(value, bad)
        case ("upstream", "gzip"): c.upstream.gzip = try bool(value, bad)
        case ("upstream", "ca_file"): c.upstream.caFile = value.isEmpty ? nil : value
        case ("upstream", "tls_verify"): c.upstream.tlsVerify = try bool(value, bad)
        case ("upstream", "drain_timeout"): c.upstream.drainTimeout = try duration(value, bad, allowZero: true)
        case ("upstream", "max_in_flight"):
            guard let n = Int(value), (1...64).contains(n) else { throw bad("expected a number from 1 to 64") }
            c.upstream.maxInFlight = n
        case ("spool", "dir"):
            guard !value.isEmpty else { throw bad("expected a directory") }
            var d = value
            while d.count > 1, d.hasSuffix("/") { d.removeLast() }
            c.spool.dir = d
        case ("spool", "max_size"): c.spool.maxSize = try size(value, min: 64 * 1024, bad)
        case ("spool", "max_age"): c.spool.maxAge = try duration(value, bad)
        case ("spool", "replay_rate"):
            let text = value.hasSuffix("/s") ? String(value.dropLast(2)) : value
            guard let r = Double(text), r >= 0, r.isFinite else { throw bad("expected requests per second, such as 20 or 20/s (0: no limit)") }
            c.spool.replayRate = r
        case ("window", "interval"): c.window.interval = try duration(value, bad)
        case ("retry", "initial"): c.retry.initial = try duration(value, bad)
        case ("retry", "max"): c.retry.max = try duration(value, bad)
        case ("retry", "jitter"):
            let text = value.hasSuffix("%") ? String(value.dropLast()) : value
            guard let v = Double(text), v >= 0 else { throw bad("expected a fraction from 0 to 1, or a percentage") }
            let j = value.hasSuffix("%") ? v / 100 : v
            guard j <= 1 else { throw bad("expected a fraction from 0 to 1, or a percentage") }
            c.retry.jitter = j
        case ("limits", "max_keys"):
            guard let n = Int(value), n >= 1 else { throw bad("expected a number of keys, at least 1") }
            c.limits.maxKeys = n
        case ("limits", "max_toggles_per_post"):
            guard let n = Int(value), n >= 1 else { throw bad("expected a number of features, at least 1") }
            c.limits.maxTogglesPerPost = n
        case ("limits", "max_name_length"):
            guard let n = Int(value), n >= 16 else { throw bad("expected a number of bytes, at least 16") }
            c.limits.maxNameLength = n
        case ("limits", "max_headers"):
            guard let n = Int(value), (8...10_000).contains(n) else { throw bad("expected a number of header lines from 8 to 10000") }
            c.limits.maxHeaders = n
        case ("limits", "max_header_size"): c.limits.maxHeaderSize = try size(value, min: 1024, bad)
        case ("log", "level"):
            guard let l = ["debug": LogLevel.debug, "info": .info, "warn": .warn, "warning": .warn, "error": .error][value.lowercased()]
            else { throw bad("expected debug, info, warn or error") }
            c.log.level = l
        case ("log", "format"):
            guard let f = LogFormat(rawValue: value.lowercased()) else { throw bad("expected logfmt or json") }
            c.log.format = f
        default:
            preconditionFailure("key table and apply() disagree on \(section).\(key)")
        }
    }

    /// `#` or `;` starts a comment at the start of a line or after white space.
    private func stripComment(_ line: Substring) -> Substring {
        var previous: Character = " "
        for i in line.indices {
            let c = line[i]
            if (c == "#" || c == ";"), previous == " " || previous == "\t" { return line[..<i] }
            previous = c
        }
        return line
    }

    private func expand(_ value: String, _ fail: (String) -> ConfigError) throws(ConfigError) -> String {
        guard value.contains("${") else { return value }
        var out = ""
        var rest = Substring(value)
        while let open = rest.firstRange(of: "${") {
            out += rest[..<open.lowerBound]
            guard let close = rest[open.upperBound...].firstIndex(of: "}") else { throw fail("unterminated ${ in value") }
            let inner = rest[open.upperBound..<close]
            var name = inner
            var fallback: Substring?
            if let sep = inner.firstRange(of: ":-") {
                name = inner[..<sep.lowerBound]
                fallback = inner[sep.upperBound...]
            }
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                throw fail("bad variable name ${\(inner)}")
            }
            if let v = environment[String(name)], !(fallback != nil && v.isEmpty) {
                out += v
            } else if let fallback {
                out += fallback
            } else {
                throw fail("environment variable \(name) is not set (write ${\(name):-default} to give a default)")
            }
            rest = rest[rest.index(after: close)...]
        }
        return out + rest
    }

    private func quote(_ s: String) -> String { "\"\(s)\"" }

    func duration(_ v: String, _ bad: (String) -> ConfigError, allowZero: Bool = false) throws(ConfigError) -> Duration {
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

    func size(_ v: String, min: Int, _ bad: (String) -> ConfigError) throws(ConfigError) -> Int {
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

    func bool(_ v: String, _ bad: (String) -> ConfigError) throws(ConfigError) -> Bool {
        switch v.lowercased() {
        case "on", "true", "yes", "1": return true
        case "off", "false", "no", "0": return false
        default: throw bad("expected on or off")
        }
    }
}

extension Substring {
    func trimmingCharacters(in set: Character) -> Substring {
        var s = self
        while s.first == set { s.removeFirst() }
        while s.last == set { s.removeLast() }
        return s
    }
}

extension Duration {
    /// Whole milliseconds, for timers and logs.
    public var milliseconds: Int64 {
        let (s, atto) = components
        return s * 1000 + atto / 1_000_000_000_000_000
    }
}
