import Glibc
import MetricsProxyCore

/// Reads proxy.conf from disk with the process environment for `${VAR}`.
public enum ConfigLoader {
    public static func load(path: String) throws(ConfigError) -> Config { try loadWithLines(path: path).config }

    /// `--check-config`: the file parses, and the directories the proxy writes to can be
    /// written (or created) by this user. Errors name the line of the key.
    public static func check(path: String) throws(ConfigError) -> Config {
        let (config, lines) = try loadWithLines(path: path)
        var dirs = [("spool.dir", config.spool.dir)]
        if let j = config.journalDir { dirs.append((lines["journal.dir"] != nil ? "journal.dir" : "spool.dir", j)) }
        for (key, dir) in dirs {
            if let problem = writeProblem(dir) {
                throw ConfigError(file: path, line: lines[key] ?? 0, message: "\(key) \(dir): \(problem)")
            }
        }
        // The socket's directory, as binding it will check (a missing one is created).
        if let socket = config.listen.unix {
            let dir = HTTPServer.socketDirectory(of: socket)
            var st = stat()
            let problem = stat(dir, &st) == 0 ? HTTPServer.socketDirectoryProblem(dir) : writeProblem(dir)
            if let problem {
                throw ConfigError(file: path, line: lines["listen.unix"] ?? 0, message: "listen.unix \(socket): \(problem)")
            }
        }
        return config
    }

    /// Why this user could not write files in `dir` (creating it and its parents if need be).
    static func writeProblem(_ dir: String) -> String? {
        var path = dir
        var st = stat()
        while stat(path, &st) != 0 {
            guard errno == ENOENT || errno == ENOTDIR else { return "cannot be reached: \(String(cString: strerror(errno)))" }
            // The nearest existing parent must let the missing ones be created.
            guard let slash = path.lastIndex(of: "/") else { path = "."; continue }
            path = slash == path.startIndex ? "/" : String(path[..<slash])
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { return "\(path) is not a directory" }
        guard access(path, W_OK | X_OK) == 0 else {
            return path == dir ? "not writable: \(String(cString: strerror(errno)))"
                : "cannot be created in \(path): \(String(cString: strerror(errno)))"
        }
        return nil
    }

    static func loadWithLines(path: String) throws(ConfigError) -> (config: Config, lines: [String: Int]) {
        guard let text = readFile(path) else {
            throw ConfigError(file: path, line: 0, message: "cannot read: \(String(cString: strerror(errno)))")
        }
        var env: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") { env[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        return try ConfigParser(file: path, environment: env).parseWithLines(text)
    }

    static func readFile(_ path: String) -> String? {
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buf, 1, buf.count, f)
            if n > 0 { bytes += buf[0..<n] }
            if n < buf.count { break }
        }
        return ferror(f) != 0 ? nil : String(decoding: bytes, as: UTF8.self)
    }
}
