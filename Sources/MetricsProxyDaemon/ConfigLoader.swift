import Glibc
import MetricsProxyCore

/// Reads proxy.conf from disk with the process environment for `${VAR}`.
public enum ConfigLoader {
    public static func load(path: String) throws(ConfigError) -> Config {
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
        return try ConfigParser(file: path, environment: env).parse(text)
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
