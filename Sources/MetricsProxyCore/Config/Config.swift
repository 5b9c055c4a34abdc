/// The running configuration, as read from proxy.conf. Every default comes from
/// `ConfigKey.table` (`init()`); the values written below are placeholders it replaces.
public struct Config: Sendable, Equatable {
    public struct Listen: Sendable, Equatable {
        public var tcp: [HostPort] = []
        public var unix: String?
        public var unixMode: UInt32 = 0
        public var maxBody = 0
        public var idleTimeout: Duration = .zero
        public var pathPrefix = ""
        /// Connections held open at once, over all listeners; past it, accepting pauses.
        public var maxConnections = 0
        /// The longest a client may take to send one whole request, first byte to last.
        public var requestTimeout: Duration = .zero
        /// Bytes a second an unfinished request must keep up after its first second; 0: off.
        public var minRate = 0
        /// Tokens accepted on metric and register posts; empty: any token.
        public var allowTokens: [String] = []
        /// Path prefixes (lower case, from `/`) of the requests passed to the upstream.
        public var forward: [String] = []
        /// Forwarded requests out at once; past it, 503 with Retry-After.
        public var forwardMaxInFlight = 0
    }

    public struct Upstream: Sendable, Equatable {
        public var url = UpstreamURL(scheme: .http, host: "", port: 0, basePath: "")
        public var token: String?
        public var mode: UpstreamMode = .bulk
        public var maxBody = 0
        public var timeout: Duration = .zero
        public var gzip = false
        public var caFile: String?
        public var tlsVerify = false
        /// How long a shutdown may spend sending what is left.
        public var drainTimeout: Duration = .zero
        /// Upstream requests out at once, across tokens.
        public var maxInFlight = 0
    }

    public struct Spool: Sendable, Equatable {
        public var dir = ""
        public var maxSize = 0
        public var maxAge: Duration = .zero
        /// Upstream requests per second at most while a backlog drains; 0 for no limit.
        public var replayRate = 0.0
    }

    public struct Window: Sendable, Equatable {
        public var interval: Duration = .zero
    }

    public struct Journal: Sendable, Equatable {
        /// Where accepted posts are journalled; "auto": `journal/` inside the spool directory;
        /// nil (`off`): no journal, and a kill loses the open window.
        public var dir: String? = "auto"
        /// How often the journal is fsynced, off the loop; nil (`off`): left to the kernel.
        public var fsync: Duration? = nil
        /// Past this many bytes the open window is checkpointed.
        public var maxSize = 0
    }

    public struct Retry: Sendable, Equatable {
        public var initial: Duration = .zero
        public var max: Duration = .zero
        /// Fraction of each delay drawn at random, 0…1.
        public var jitter = 0.0
    }

    public struct Limits: Sendable, Equatable {
        /// Distinct merge keys one window may hold; past it, posts that would add keys get 503.
        public var maxKeys = 0
        /// Features in one post's bucket; past it, 413.
        public var maxTogglesPerPost = 0
        /// Bytes in any name the window keeps (appName, instanceId, feature, variant, SDK fields).
        public var maxNameLength = 0
        /// Request header lines, and their total size in bytes.
        public var maxHeaders = 0
        public var maxHeaderSize = 0
        /// SDK instances remembered across windows, and how long one unseen is kept.
        public var maxInstances = 0
        public var instanceMaxAge: Duration = .zero
    }

    public struct Log: Sendable, Equatable {
        public var level: LogLevel = .info
        public var format: LogFormat = .logfmt
    }

    public var listen = Listen()
    public var upstream = Upstream()
    public var window = Window()
    public var spool = Spool()
    public var journal = Journal()
    public var retry = Retry()
    public var limits = Limits()
    public var log = Log()

    /// The journal's directory, if the journal is on.
    public var journalDir: String? {
        guard let d = journal.dir else { return nil }
        return d == "auto" ? "\(spool.dir)/journal" : d
    }

    /// Every key at its default.
    public init() { self.init(ConfigKey.table) }

    init(_ table: [ConfigKey]) {
        for key in table {
            do throws(ConfigError) {
                try key.apply(&self, key.defaultValue, true) { ConfigError(file: "ConfigKey.table", line: 0, message: $0) }
            } catch {
                preconditionFailure("the default of \(key.qualifiedName) does not parse: \(error)")
            }
        }
    }

    /// The keys whose change takes a restart (the listeners and the spool's place); every
    /// other key applies on SIGHUP.
    public func restartKeys(comparedTo new: Config) -> [String] {
        ConfigKey.table.filter { !$0.live && $0.differs(self, new) }.map(\.qualifiedName)
    }

    /// `new` with the restart-only keys kept as they are now.
    public func reloaded(with new: Config) -> Config {
        var c = new
        for key in ConfigKey.table where !key.live { key.keep(&c, self) }
        return c
    }
}

public struct HostPort: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

public struct UpstreamURL: Sendable, Equatable, CustomStringConvertible {
    public enum Scheme: String, Sendable { case http, https }
    public var scheme: Scheme
    public var host: String
    public var port: UInt16
    /// Path before `/client/...`, without a trailing slash (e.g. `/api`).
    public var basePath: String

    public var description: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return "\(scheme.rawValue)://\(h):\(port)\(basePath)"
    }

    /// Parses `http(s)://host[:port][/path]`.
    public static func parse(_ text: String) -> UpstreamURL? {
        let scheme: Scheme
        var rest: Substring
        if text.lowercased().hasPrefix("https://") { scheme = .https; rest = text.dropFirst(8) }
        else if text.lowercased().hasPrefix("http://") { scheme = .http; rest = text.dropFirst(7) }
        else { return nil }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        var path = String(rest[slash...])
        while path.hasSuffix("/") { path.removeLast() }
        guard !authority.isEmpty, !authority.contains("@"), !path.contains("?"), !path.contains("#") else { return nil }
        guard let hp = HostPort.parse(String(authority), defaultPort: scheme == .https ? 443 : 80) else { return nil }
        return UpstreamURL(scheme: scheme, host: hp.host, port: hp.port, basePath: path)
    }
}

extension HostPort {
    /// `host:port`, `[v6]:port`, or `host` alone when a default port is given.
    public static func parse(_ text: String, defaultPort: UInt16? = nil) -> HostPort? {
        var host: Substring
        var portText: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let after = text[text.index(after: close)...]
            if after.hasPrefix(":") { portText = after.dropFirst() } else if !after.isEmpty { return nil }
        } else if let colon = text.lastIndex(of: ":") {
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { return nil }
        } else {
            host = Substring(text)
        }
        guard !host.isEmpty else { return nil }
        let port: UInt16
        if let portText {
            guard let p = UInt16(portText) else { return nil }
            port = p
        } else {
            guard let defaultPort else { return nil }
            port = defaultPort
        }
        return HostPort(host: String(host), port: port)
    }
}

public enum LogLevel: Int, Sendable, Comparable {
    case debug, info, warn, error
    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
    public var name: String { ["debug", "info", "warn", "error"][rawValue] }
}

public enum LogFormat: String, Sendable { case logfmt, json }
