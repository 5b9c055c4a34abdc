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

    public func parse(_ text: String) throws(ConfigError) -> Config { try parseWithLines(text).config }

    /// The configuration, and the line each key was set on (by `section.key`), for checks
    /// made after parsing that must name the line too.
    public func parseWithLines(_ text: String) throws(ConfigError) -> (config: Config, lines: [String: Int]) {
        let table = ConfigKey.table
        var lines: [String: Int] = [:]
        var config = Config(table)
        var section = ""
        var seen: Set<String> = []
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = stripComment(rawLine).trimmingASCIIWhitespace()
            if line.isEmpty { continue }
            func fail(_ message: String) -> ConfigError { ConfigError(file: file, line: lineNumber, message: message) }
            if line.hasPrefix("[") {
                guard line.hasSuffix("]") else { throw fail("section header must end with ']': \(line)") }
                section = String(line.dropFirst().dropLast()).trimmingASCIIWhitespace().lowercased()
                guard table.contains(where: { $0.section == section }) else { throw fail("unknown section [\(section)]") }
                continue
            }
            guard let eq = line.firstIndex(of: "=") else { throw fail("expected 'key = value', found \(quote(line))") }
            let name = String(line[..<eq]).trimmingASCIIWhitespace().lowercased()
            guard !section.isEmpty else { throw fail("key \(quote(name)) outside any [section]") }
            guard let key = table.first(where: { $0.section == section && $0.name == name }) else {
                throw fail("unknown key \(quote(name)) in [\(section)]")
            }
            let value = try expand(String(line[line.index(after: eq)...]).trimmingASCIIWhitespace(), fail)
            let first = seen.insert(key.qualifiedName).inserted
            if first { lines[key.qualifiedName] = lineNumber }
            guard first || key.repeats else { throw fail("\(quote(name)) set twice in [\(section)]") }
            try key.apply(&config, value, first) { what in fail("\(name) = \(quote(value)): \(what)") }
        }
        if config.listen.tcp.isEmpty && config.listen.unix == nil {
            throw ConfigError(file: file, line: 0, message: "no listener: set [listen] tcp or unix")
        }
        return (config, lines)
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
