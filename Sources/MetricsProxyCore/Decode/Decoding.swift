/// The decoders' shared machinery: a `JSONScanner` that records the first broken rule and
/// goes on, so that a later syntax error still wins, and the field readers with the server's coercions.
enum DecodeStop: Error {
    case syntax(JSONSyntaxError)
    case invalid(ValidationFailure)
}

struct Decoding {
    var scanner: JSONScanner
    /// The first rule broken; scanning goes on so that a later syntax error still wins, as
    /// the server parses the whole body before it validates.
    var failure: ValidationFailure?

    /// Runs a top-level read and turns its stop into the failure the caller sees.
    mutating func complete<T>(_ read: (inout Decoding) throws(DecodeStop) -> T) throws(ValidationFailure) -> T {
        do throws(DecodeStop) {
            let value = try read(&self)
            if let failure { throw DecodeStop.invalid(failure) }
            return value
        } catch {
            switch error {
            case .syntax(let e): throw ValidationFailure.syntax(e)
            case .invalid(let f): throw f
            }
        }
    }

    mutating func record(_ f: ValidationFailure) {
        if failure == nil { failure = f }
    }

    mutating func run<T>(_ body: (inout JSONScanner) throws(JSONSyntaxError) -> T) throws(DecodeStop) -> T {
        do { return try body(&scanner) } catch { throw .syntax(error) }
    }

    mutating func kind() throws(DecodeStop) -> JSONKind { try run { s throws(JSONSyntaxError) in try s.peekKind() } }

    /// Skips the next value and returns its text for an error message.
    mutating func skipAndShow() throws(DecodeStop) -> String {
        scanner.skipWhitespace()
        let start = scanner.position
        try run { s throws(JSONSyntaxError) in try s.skipValue() }
        return scanner.text(from: start)
    }

    mutating func finish() throws(DecodeStop) {
        scanner.skipWhitespace()
        guard scanner.isAtEnd else { throw .syntax(scanner.fail(.trailingData)) }
    }

    /// A string field, with Ajv's coercion of numbers, booleans and null.
    mutating func string(_ path: @autoclosure () -> String, maxLength: Int? = nil) throws(DecodeStop) -> String? {
        let value: String
        switch try kind() {
        case .string: value = try run { s throws(JSONSyntaxError) in try s.readString() }
        case .number:
            let n = try run { s throws(JSONSyntaxError) in try s.readNumber() }
            value = javascriptText(n)
        case .bool: value = try run { s throws(JSONSyntaxError) in try s.readBool() } ? "true" : "false"
        case .null:
            try run { s throws(JSONSyntaxError) in try s.readNull() }
            value = ""
        case .object, .array:
            record(.invalid(path(), "must be string", sent: try skipAndShow()))
            return nil
        }
        if let maxLength, value.utf16.count > maxLength {
            record(.invalid(path(), "must NOT have more than \(maxLength) characters", sent: quoted(value)))
            return nil
        }
        return value
    }

    func javascriptText(_ n: JSONNumber) -> String {
        let d = n.doubleValue
        guard d == d.rounded(), abs(d) < 1e21 else { return n.literal }
        if abs(d) < 1e15 { return String(Int64(d)) }
        // JavaScript writes an integer below 1e21 in full: the shortest round-trip digits
        // (as Swift's description has them), then zeros. Int64(d) would trap past 2^63 (found
        // by the decoder fuzzer with a 21-digit sdkVersion).
        let text = d.description
        let negative = text.hasPrefix("-")
        let parts = text.drop(while: { $0 == "-" }).split(separator: "e")
        var digits = parts[0].filter { $0 != "." }
        let exponent = parts.count > 1 ? Int(parts[1].drop(while: { $0 == "+" })) ?? 0 : parts[0].prefix(while: { $0 != "." }).count - 1
        if parts.count == 1, parts[0].hasSuffix(".0") { digits.removeLast() }
        let zeros = max(0, exponent + 1 - digits.count)
        return (negative ? "-" : "") + digits + String(repeating: "0", count: zeros)
    }

    func quoted(_ s: String) -> String {
        var w = JSONWriter()
        w.string(s.count > 80 ? String(s.prefix(80)) + "…" : s)
        return String(decoding: w.bytes, as: UTF8.self)
    }

    /// The start of a body: an object. An empty body, which body-parser reads as {}, is
    /// missing its first required member, `required` (`appName` for a post or registration).
    mutating func bodyObject(required: String = "/body/appName") throws(DecodeStop) {
        scanner.skipWhitespace()
        if scanner.isAtEnd { throw .invalid(.required(required)) }
        guard try kind() == .object else {
            let sent = try skipAndShow()
            try finish()
            throw .invalid(.invalid("/body", "must be object", sent: sent))
        }
    }

    /// Reads the array that comes next, calling `element` at each element, which must read it.
    mutating func forEachElement(_ element: (inout Decoding) throws(DecodeStop) -> Void) throws(DecodeStop) {
        try run { s throws(JSONSyntaxError) in try s.expect(UInt8(ascii: "[")) }
        var first = true
        while try run({ s throws(JSONSyntaxError) in try s.nextElement(first: first) }) {
            first = false
            try element(&self)
        }
    }

    /// Reads a scalar and tells whether Ajv would coerce it to null ("" , 0, false).
    mutating func isNullish() throws(DecodeStop) -> Bool {
        switch try kind() {
        case .string: return try run { s throws(JSONSyntaxError) in try s.readRawString() }.raw.isEmpty
        case .number: return try run { s throws(JSONSyntaxError) in try s.readNumber() }.doubleValue == 0
        case .bool: return try !run { s throws(JSONSyntaxError) in try s.readBool() }
        case .null: try run { s throws(JSONSyntaxError) in try s.readNull() }; return true
        case .object, .array: try run { s throws(JSONSyntaxError) in try s.skipValue() }; return false
        }
    }

    /// Ajv checks `required` before an object's properties: records the first member missing
    /// from the object read at `path` (unless a failure came before it, `failureBefore`), and
    /// tells whether every one was there.
    mutating func present(_ members: [(seen: Bool, name: String)], at path: String, failureBefore: ValidationFailure?) -> Bool {
        guard let missing = members.first(where: { !$0.seen }) else { return true }
        if failureBefore == nil { failure = .required("\(path)/\(missing.name)") }
        return false
    }

    func keyIs(_ key: (raw: Slice<UnsafeBufferPointer<UInt8>>, escaped: Bool), _ name: StaticString) -> Bool {
        if !key.escaped { return key.raw.equals(name) }
        return JSONScanner.unescape(key.raw) == name.description
    }

    /// One of the SDK's fields about itself: a string, within the schema's length if it sets one.
    mutating func sdkField(_ f: SDKField, into sdk: inout SDKMetadata) throws(DecodeStop) {
        sdk[f] = try string("/body/\(f.name)", maxLength: f.schemaMaxLength)
    }

    /// `start` / `stop`: an RFC 3339 date-time, or an integer (or digit string) of epoch milliseconds.
    /// `fractions`: a non-integer number is also a date (`started` is `number`, not `integer`).
    mutating func date(_ path: @autoclosure () -> String, fractions: Bool = false) throws(DecodeStop) -> Int64? {
        scanner.skipWhitespace()
        let startPos = scanner.position
        let rule = "must be a date-time string (RFC 3339) or an integer of epoch milliseconds"
        switch try kind() {
        case .string:
            let (raw, escaped) = try run { s throws(JSONSyntaxError) in try s.readRawString() }
            let text: [UInt8] = escaped ? Array(JSONScanner.unescape(raw).utf8) : Array(raw)
            if let ms = Timestamp.parse(rfc3339: text) { return ms }
            if let ms = epochMillis(text) { return ms }
        case .number:
            let n = try run { s throws(JSONSyntaxError) in try s.readNumber() }
            let d = n.doubleValue
            if fractions || d == d.rounded(), abs(d) <= Double(Timestamp.maxMillis) { return Int64(d) }
        case .bool, .null, .object, .array:
            try run { s throws(JSONSyntaxError) in try s.skipValue() }
        }
        record(.invalid(path(), rule, sent: scanner.text(from: startPos)))
        return nil
    }

    func epochMillis(_ text: [UInt8]) -> Int64? {
        guard !text.isEmpty, text.count <= 17 else { return nil }
        var v: Int64 = 0
        var negative = false
        for (i, b) in text.enumerated() {
            if i == 0, b == UInt8(ascii: "-") { negative = true; continue }
            let d = b &- UInt8(ascii: "0")
            guard d < 10 else { return nil }
            v = v * 10 + Int64(d)
        }
        guard text.count > (negative ? 1 : 0), v <= Timestamp.maxMillis else { return nil }
        return negative ? -v : v
    }

}

extension StringProtocol {
    public func trimmingASCIIWhitespace() -> String {
        let ws: Set<Character> = [" ", "\t", "\n", "\r"]
        var s = Substring(self)
        while let f = s.first, ws.contains(f) { s.removeFirst() }
        while let l = s.last, ws.contains(l) { s.removeLast() }
        return String(s)
    }
}
