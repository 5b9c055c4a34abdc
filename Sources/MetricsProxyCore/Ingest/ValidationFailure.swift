/// Why a post was refused with 400: what the error body says.
public struct ValidationFailure: Error, Sendable, Equatable {
    public struct Detail: Sendable, Equatable {
        /// A JSON pointer into the request, prefixed `/body` as the Unleash server does.
        public var path: String
        public var message: String
    }

    public var details: [Detail]
    /// The body is not JSON at all (the server answers this before it checks the token).
    public var isSyntax = false

    public init(path: String, message: String) {
        details = [Detail(path: path, message: message)]
    }

    /// The one-line message: the first detail, which names the field and what was sent.
    public var message: String { details.first?.message ?? "Request validation failed" }

    static func required(_ path: String) -> ValidationFailure {
        ValidationFailure(path: path, message: "The `\(path)` property is required. It was not present on the data you sent.")
    }

    static func invalid(_ path: String, _ rule: String, sent: String) -> ValidationFailure {
        ValidationFailure(path: path, message: "The `\(path)` property \(rule). You sent \(sent).")
    }

    static func syntax(_ error: JSONSyntaxError) -> ValidationFailure {
        var f = ValidationFailure(path: "/body", message: "The request body (`/body`) is not valid JSON: \(error.reason) at byte \(error.offset).")
        f.isSyntax = true
        return f
    }

    /// The 400 body: `{"id", "name": "ValidationError", "message", "details": [{path, message}]}`.
    public func responseBody(id: String) -> [UInt8] {
        var w = JSONWriter()
        w.beginObject()
        w.key("id"); w.string(id)
        w.key("name"); w.string("ValidationError")
        w.key("message"); w.string(message)
        w.key("details")
        w.beginArray()
        for d in details {
            w.beginObject()
            w.key("path"); w.string(d.path)
            w.key("message"); w.string(d.message)
            w.endObject()
        }
        w.endArray()
        w.endObject()
        return w.bytes
    }
}

/// Escapes one segment of a JSON pointer (RFC 6901).
func pointerSegment(_ s: String) -> String {
    guard s.contains("~") || s.contains("/") else { return s }
    return s.replacingAll("~", with: "~0").replacingAll("/", with: "~1")
}

extension String {
    func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        out.reserveCapacity(utf8.count)
        for c in self {
            if c == target { out += replacement } else { out.append(c) }
        }
        return out
    }
}
