/// A syntax error in a request body, with the byte offset where it was found. It holds no
/// String, so the scanner's typed throws stay cheap; the text is made only when shown.
public struct JSONSyntaxError: Error, Equatable, Sendable {
    public enum Problem: Equatable, Sendable {
        case end, endExpecting(UInt8), unexpected(UInt8), expected(UInt8, found: UInt8)
        case endInObject, commaOrBrace(found: UInt8), propertyName, endInArray, commaOrBracket(found: UInt8)
        case truncatedEscape, badUnicodeEscape, badEscape(UInt8), controlCharacter, unterminatedString
        case badNumber, digitAfterDot, digitInExponent, badLiteral, tooDeep, trailingData
    }

    public let offset: Int
    public let problem: Problem

    public var reason: String {
        func show(_ b: UInt8) -> String {
            (0x20..<0x7F).contains(b) ? "'\(Character(Unicode.Scalar(b)))'" : "byte 0x\(String(b, radix: 16))"
        }
        switch problem {
        case .end: return "unexpected end of input"
        case .endExpecting(let b): return "unexpected end of input, expected \(show(b))"
        case .unexpected(let b): return "unexpected character \(show(b))"
        case .expected(let e, let f): return "expected \(show(e)) but found \(show(f))"
        case .endInObject: return "unexpected end of input in object"
        case .commaOrBrace(let f): return "expected ',' or '}' but found \(show(f))"
        case .propertyName: return "expected a property name"
        case .endInArray: return "unexpected end of input in array"
        case .commaOrBracket(let f): return "expected ',' or ']' but found \(show(f))"
        case .truncatedEscape: return "truncated \\u escape"
        case .badUnicodeEscape: return "bad \\u escape"
        case .badEscape(let b): return "bad escape \\\(show(b))"
        case .controlCharacter: return "control character in string"
        case .unterminatedString: return "unterminated string"
        case .badNumber: return "bad number"
        case .digitAfterDot: return "bad number: digit expected after '.'"
        case .digitInExponent: return "bad number: digit expected in exponent"
        case .badLiteral: return "bad literal"
        case .tooDeep: return "nesting deeper than \(JSONScanner.maxDepth)"
        case .trailingData: return "unexpected data after the JSON value"
        }
    }
}

/// The kind of the next JSON value, read from its first byte.
enum JSONKind {
    case object, array, string, number, bool, null
}

/// A JSON number as it appeared in the text; converted only when a field needs it.
struct JSONNumber {
    let text: Slice<UnsafeBufferPointer<UInt8>>
    /// No fraction and no exponent in the text.
    let isIntegerLiteral: Bool

    /// The value as a Double (what JavaScript's JSON.parse would read).
    var doubleValue: Double {
        if isIntegerLiteral, text.count <= 15 {
            var v: Int64 = 0
            var i = text.startIndex
            let negative = text[i] == UInt8(ascii: "-")
            if negative { i += 1 }
            while i < text.endIndex { v = v * 10 + Int64(text[i] &- 48); i += 1 }
            return Double(negative ? -v : v)
        }
        return Double(String(decoding: UnsafeBufferPointer(rebasing: text), as: UTF8.self)) ?? .nan
    }

    var literal: String { String(decoding: UnsafeBufferPointer(rebasing: text), as: UTF8.self) }
}

/// A forward-only JSON reader over a byte buffer. It validates syntax as it goes and reads
/// values without building a tree, so decoding a post allocates only the strings it keeps.
struct JSONScanner {
    let bytes: UnsafeBufferPointer<UInt8>
    var position = 0
    /// Nesting deeper than this is refused, so hostile input cannot exhaust the stack.
    static let maxDepth = 64

    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    var isAtEnd: Bool { position >= bytes.count }

    func fail(_ problem: JSONSyntaxError.Problem, at offset: Int? = nil) -> JSONSyntaxError {
        JSONSyntaxError(offset: offset ?? position, problem: problem)
    }

    mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x0A, 0x0D, 0x09: position += 1
            default: return
            }
        }
    }

    /// The kind of the next value, after white space.
    mutating func peekKind() throws(JSONSyntaxError) -> JSONKind {
        skipWhitespace()
        guard position < bytes.count else { throw fail(.end) }
        switch bytes[position] {
        case UInt8(ascii: "{"): return .object
        case UInt8(ascii: "["): return .array
        case UInt8(ascii: "\""): return .string
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number
        case UInt8(ascii: "t"), UInt8(ascii: "f"): return .bool
        case UInt8(ascii: "n"): return .null
        default: throw fail(.unexpected(bytes[position]))
        }
    }

    mutating func expect(_ byte: UInt8) throws(JSONSyntaxError) {
        skipWhitespace()
        guard position < bytes.count else { throw fail(.endExpecting(byte)) }
        guard bytes[position] == byte else {
            throw fail(.expected(byte, found: bytes[position]))
        }
        position += 1
    }

    /// After '{' or ',' inside an object: true when another member follows.
    /// Call with `first` true right after '{'.
    mutating func nextMember(first: Bool) throws(JSONSyntaxError) -> Bool {
        skipWhitespace()
        guard position < bytes.count else { throw fail(.endInObject) }
        if bytes[position] == UInt8(ascii: "}") { position += 1; return false }
        if !first {
            guard bytes[position] == UInt8(ascii: ",") else { throw fail(.commaOrBrace(found: bytes[position])) }
            position += 1
            skipWhitespace()
        }
        guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else {
            throw fail(.propertyName)
        }
        return true
    }

    /// Same as `nextMember` for arrays.
    mutating func nextElement(first: Bool) throws(JSONSyntaxError) -> Bool {
        skipWhitespace()
        guard position < bytes.count else { throw fail(.endInArray) }
        if bytes[position] == UInt8(ascii: "]") { position += 1; return false }
        if !first {
            guard bytes[position] == UInt8(ascii: ",") else { throw fail(.commaOrBracket(found: bytes[position])) }
            position += 1
        }
        return true
    }

    /// Reads a string's raw bytes between the quotes; `escaped` tells whether they need decoding.
    mutating func readRawString() throws(JSONSyntaxError) -> (raw: Slice<UnsafeBufferPointer<UInt8>>, escaped: Bool) {
        try expect(UInt8(ascii: "\""))
        let start = position
        var escaped = false
        if let base = bytes.baseAddress { position = SWAR.skipPlain(base, from: position, count: bytes.count) }
        while position < bytes.count {
            let b = bytes[position]
            if b == UInt8(ascii: "\"") {
                let raw = bytes[start..<position]
                position += 1
                return (raw, escaped)
            }
            if b == UInt8(ascii: "\\") {
                escaped = true
                position += 1
                guard position < bytes.count else { break }
                switch bytes[position] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                     UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    position += 1
                case UInt8(ascii: "u"):
                    guard position + 4 < bytes.count else { throw fail(.truncatedEscape) }
                    for k in 1...4 where hexValue(bytes[position + k]) == nil {
                        throw fail(.badUnicodeEscape, at: position + k)
                    }
                    position += 5
                default:
                    throw fail(.badEscape(bytes[position]))
                }
                continue
            }
            if b < 0x20 { throw fail(.controlCharacter) }
            position += 1
        }
        throw fail(.unterminatedString, at: start - 1)
    }

    /// Reads a string value or property name, decoding escapes.
    mutating func readString() throws(JSONSyntaxError) -> String {
        let (raw, escaped) = try readRawString()
        return escaped ? Self.unescape(raw) : String(decoding: UnsafeBufferPointer(rebasing: raw), as: UTF8.self)
    }

    /// Reads a property name and the ':' after it.
    mutating func readKey() throws(JSONSyntaxError) -> (raw: Slice<UnsafeBufferPointer<UInt8>>, escaped: Bool) {
        let key = try readRawString()
        try expect(UInt8(ascii: ":"))
        return key
    }

    mutating func readNumber() throws(JSONSyntaxError) -> JSONNumber {
        skipWhitespace()
        let start = position
        var integer = true
        if position < bytes.count, bytes[position] == UInt8(ascii: "-") { position += 1 }
        guard position < bytes.count, isDigit(bytes[position]) else { throw fail(.badNumber) }
        if bytes[position] == UInt8(ascii: "0") {
            position += 1
        } else {
            while position < bytes.count, isDigit(bytes[position]) { position += 1 }
        }
        if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
            integer = false
            position += 1
            guard position < bytes.count, isDigit(bytes[position]) else { throw fail(.digitAfterDot) }
            while position < bytes.count, isDigit(bytes[position]) { position += 1 }
        }
        if position < bytes.count, bytes[position] | 0x20 == UInt8(ascii: "e") {
            integer = false
            position += 1
            if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") { position += 1 }
            guard position < bytes.count, isDigit(bytes[position]) else { throw fail(.digitInExponent) }
            while position < bytes.count, isDigit(bytes[position]) { position += 1 }
        }
        return JSONNumber(text: bytes[start..<position], isIntegerLiteral: integer)
    }

    mutating func readBool() throws(JSONSyntaxError) -> Bool {
        skipWhitespace()
        if matchLiteral("true") { return true }
        if matchLiteral("false") { return false }
        throw fail(.badLiteral)
    }

    mutating func readNull() throws(JSONSyntaxError) {
        skipWhitespace()
        guard matchLiteral("null") else { throw fail(.badLiteral) }
    }

    private mutating func matchLiteral(_ word: StaticString) -> Bool {
        let n = word.utf8CodeUnitCount
        guard position + n <= bytes.count else { return false }
        let w = word.utf8Start
        for i in 0..<n where bytes[position + i] != w[i] { return false }
        position += n
        return true
    }

    /// Skips one value of any kind, checking its syntax.
    mutating func skipValue(depth: Int = 0) throws(JSONSyntaxError) {
        guard depth < Self.maxDepth else { throw fail(.tooDeep) }
        switch try peekKind() {
        case .object:
            position += 1
            var first = true
            while try nextMember(first: first) {
                first = false
                _ = try readKey()
                try skipValue(depth: depth + 1)
            }
        case .array:
            position += 1
            var first = true
            while try nextElement(first: first) {
                first = false
                try skipValue(depth: depth + 1)
            }
        case .string: _ = try readRawString()
        case .number: _ = try readNumber()
        case .bool: _ = try readBool()
        case .null: try readNull()
        }
    }

    /// The JSON text from `start` to the current position, shortened for error messages.
    func text(from start: Int, limit: Int = 80) -> String {
        var s = start
        while s < position, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[s]) { s += 1 }
        let end = min(position, s + limit)
        let t = String(decoding: UnsafeBufferPointer(rebasing: bytes[s..<end]), as: UTF8.self)
        return end < position ? t + "…" : t
    }

    private func isDigit(_ b: UInt8) -> Bool { b &- UInt8(ascii: "0") < 10 }

    static func unescape(_ raw: Slice<UnsafeBufferPointer<UInt8>>) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        var i = raw.startIndex
        while i < raw.endIndex {
            let b = raw[i]
            guard b == UInt8(ascii: "\\") else { out.append(b); i += 1; continue }
            let e = raw[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var code = hex4(raw, i)
                i += 4
                // A high surrogate followed by a low one forms one scalar; a lone one becomes U+FFFD.
                if (0xD800..<0xDC00).contains(code), i + 5 < raw.endIndex,
                   raw[i] == UInt8(ascii: "\\"), raw[i + 1] == UInt8(ascii: "u") {
                    let low = hex4(raw, i + 2)
                    if (0xDC00..<0xE000).contains(low) {
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        i += 6
                    }
                }
                let scalar = Unicode.Scalar(code) ?? "\u{FFFD}"
                out.append(contentsOf: String(Character(scalar)).utf8)
            default: out.append(e)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hex4(_ raw: Slice<UnsafeBufferPointer<UInt8>>, _ at: Int) -> UInt32 {
        var v: UInt32 = 0
        for k in 0..<4 { v = v << 4 | UInt32(hexValue(raw[at + k]) ?? 0) }
        return v
    }
}

@inline(__always)
func hexValue(_ b: UInt8) -> UInt8? {
    switch b {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
    default: return nil
    }
}

extension Slice where Base == UnsafeBufferPointer<UInt8> {
    /// Compares the bytes with an ASCII literal without allocating.
    func equals(_ literal: StaticString) -> Bool {
        let n = literal.utf8CodeUnitCount
        guard count == n else { return false }
        let p = literal.utf8Start
        var i = startIndex
        for k in 0..<n {
            if self[i] != p[k] { return false }
            i += 1
        }
        return true
    }
}
