/// An Unleash API token as sent in `Authorization` (raw or `Bearer …`).
public enum Token {
    /// Strips a leading `Bearer ` (any case, any white space), as the server does.
    public static func fromAuthorization(_ header: String?) -> String? {
        // The common case, a bare token: nothing to trim or strip.
        if let h = header, let f = h.utf8.first, let l = h.utf8.last, f > 0x20, l > 0x20, f | 0x20 != UInt8(ascii: "b") {
            return h
        }
        guard var value = header?.trimmingASCIIWhitespace(), !value.isEmpty else { return nil }
        if value.count > 7, value.prefix(6).lowercased() == "bearer",
           let sep = value.dropFirst(6).first, sep == " " || sep == "\t" {
            value = String(value.dropFirst(7)).trimmingASCIIWhitespace()
        }
        return value.isEmpty ? nil : value
    }

    /// The environment a token is bound to: `project:environment.secret` (v1) and
    /// `prefix:environment.v2_…` (v2) both name it before the first dot. nil for `*` or none.
    public static func environment(of token: String) -> String? {
        let head = token.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        let parts = head.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[1].isEmpty, parts[1] != "*" else { return nil }
        return String(parts[1])
    }

    /// A short, stable fingerprint for logs: never the token itself.
    public static func fingerprint(_ token: String) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in token.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        let hex = String(h, radix: 16)
        return "tok-" + String(repeating: "0", count: 16 - hex.count) + hex.prefix(8)
    }
}
