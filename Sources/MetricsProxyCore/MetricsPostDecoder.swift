/// Decodes and validates a `POST /api/client/metrics` body in one pass over its bytes.
///
/// The rules are the Unleash server's (its Ajv schema with `coerceTypes`, then its Joi schema):
/// string fields take numbers and booleans as their text and null as "", counts take numeric
/// strings, booleans and null, a nullable object takes null, "", 0 and false as null, and
/// unknown fields are ignored. A body that breaks a rule yields a `ValidationFailure` naming
/// the field and what was sent; nothing of it is kept.
public enum MetricsPostDecoder {
    /// Largest count the server's Joi schema accepts (`Number.MAX_SAFE_INTEGER`).
    public static let maxSafeInteger: Double = 9_007_199_254_740_991

    public static func decode(_ body: UnsafeBufferPointer<UInt8>) throws(ValidationFailure) -> MetricsPost {
        var d = Decoding(scanner: JSONScanner(body))
        return try d.complete { d throws(DecodeStop) in try d.top() }
    }

    public static func decode(_ body: [UInt8]) throws(ValidationFailure) -> MetricsPost {
        var result: Result<MetricsPost, ValidationFailure>!
        body.withUnsafeBufferPointer { p in
            result = Result { () throws(ValidationFailure) in try decode(p) }
        }
        return try result.get()
    }
}

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

    mutating func top() throws(DecodeStop) -> MetricsPost {
        scanner.skipWhitespace()
        // body-parser reads an empty body with a JSON content type as {}.
        if scanner.isAtEnd { throw .invalid(.required("/body/appName")) }
        guard try kind() == .object else {
            let sent = try skipAndShow()
            try finish()
            throw .invalid(.invalid("/body", "must be object", sent: sent))
        }
        var appName: String?
        var sawAppName = false
        var instanceId: String?
        var sdk = SDKMetadata()
        var bucket: Bucket?
        try run { s throws(JSONSyntaxError) in try s.expect(UInt8(ascii: "{")) }
        var first = true
        while try run({ s throws(JSONSyntaxError) in try s.nextMember(first: first) }) {
            first = false
            let key = try run { s throws(JSONSyntaxError) in try s.readKey() }
            switch TopKey(key) {
            case .appName: sawAppName = true; appName = try string("/body/appName")
            case .instanceId: instanceId = try string("/body/instanceId")
            case .sdkVersion: sdk.sdkVersion = try string("/body/sdkVersion")
            case .platformName: sdk.platformName = try string("/body/platformName")
            case .platformVersion: sdk.platformVersion = try string("/body/platformVersion")
            case .yggdrasilVersion: sdk.yggdrasilVersion = try string("/body/yggdrasilVersion")
            case .specVersion: sdk.specVersion = try string("/body/specVersion")
            case .connectionId: sdk.connectionId = try string("/body/connectionId")
            case .sdkFlavor: sdk.sdkFlavor = try string("/body/sdkFlavor", maxLength: 256)
            case .sdkFlavorVersion: sdk.sdkFlavorVersion = try string("/body/sdkFlavorVersion", maxLength: 32)
            case .bucket: bucket = try self.bucket()
            case nil: try run { s throws(JSONSyntaxError) in try s.skipValue() }
            }
        }
        try finish()
        // Ajv checks `required` before the properties, so a missing appName is reported first.
        if !sawAppName { throw .invalid(.required("/body/appName")) }
        if let failure { throw .invalid(failure) }
        guard let appName, !appName.isEmpty else { throw .invalid(.invalid("/body/appName", "must not be empty", sent: "\"\"")) }
        let instance = (instanceId?.isEmpty ?? true) ? "default" : instanceId!
        return MetricsPost(appName: appName, instanceId: instance, sdk: sdk, bucket: bucket)
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

    /// `bucket`: an object, or absent; null, "", 0 and false mean absent.
    mutating func bucket() throws(DecodeStop) -> Bucket? {
        let path = "/body/bucket"
        switch try kind() {
        case .null:
            try run { s throws(JSONSyntaxError) in try s.readNull() }
            return nil
        case .object: break
        case .string, .number, .bool:
            scanner.skipWhitespace()
            let start = scanner.position
            let empty = try isNullish()
            if !empty { record(.invalid(path, "must be object,null", sent: scanner.text(from: start))) }
            return nil
        case .array:
            record(.invalid(path, "must be object,null", sent: try skipAndShow()))
            return nil
        }
        let failureBefore = failure
        var start: Int64?, stop: Int64?
        var toggles: [ToggleCounts]?
        var sawStart = false, sawStop = false, sawToggles = false
        try run { s throws(JSONSyntaxError) in try s.expect(UInt8(ascii: "{")) }
        var first = true
        while try run({ s throws(JSONSyntaxError) in try s.nextMember(first: first) }) {
            first = false
            let key = try run { s throws(JSONSyntaxError) in try s.readKey() }
            if keyIs(key, "start") { sawStart = true; start = try date("\(path)/start") }
            else if keyIs(key, "stop") { sawStop = true; stop = try date("\(path)/stop") }
            else if keyIs(key, "toggles") { sawToggles = true; toggles = try self.toggles("\(path)/toggles") }
            else { try run { s throws(JSONSyntaxError) in try s.skipValue() } }
        }
        // `required` is checked before the properties inside the bucket too.
        for (seen, name) in [(sawStart, "start"), (sawStop, "stop"), (sawToggles, "toggles")] where !seen {
            if failureBefore == nil { failure = .required("\(path)/\(name)") }
            return nil
        }
        guard let start, let stop, let toggles else { return nil }
        return Bucket(start: start, stop: stop, toggles: toggles)
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

    func keyIs(_ key: (raw: Slice<UnsafeBufferPointer<UInt8>>, escaped: Bool), _ name: StaticString) -> Bool {
        if !key.escaped { return key.raw.equals(name) }
        return JSONScanner.unescape(key.raw) == name.description
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

    mutating func toggles(_ path: @autoclosure () -> String) throws(DecodeStop) -> [ToggleCounts]? {
        guard try kind() == .object else {
            record(.invalid(path(), "must be object", sent: try skipAndShow()))
            return nil
        }
        var result: [ToggleCounts] = []
        try run { s throws(JSONSyntaxError) in try s.expect(UInt8(ascii: "{")) }
        var first = true
        while try run({ s throws(JSONSyntaxError) in try s.nextMember(first: first) }) {
            first = false
            let name = try run { s throws(JSONSyntaxError) in let n = try s.readString(); try s.expect(UInt8(ascii: ":")); return n }
            guard try kind() == .object else {
                record(.invalid("\(path())/\(pointerSegment(name))", "must be object", sent: try skipAndShow()))
                continue
            }
            if let t = try toggle(name, "\(path())/\(pointerSegment(name))") { result.append(t) }
        }
        return failure == nil ? result : nil
    }

    mutating func toggle(_ name: String, _ path: @autoclosure () -> String) throws(DecodeStop) -> ToggleCounts? {
        var counts = ToggleCounts(name: name, yes: 0, no: 0)
        var ok = true
        try run { s throws(JSONSyntaxError) in try s.expect(UInt8(ascii: "{")) }
        var first = true
        while try run({ s throws(JSONSyntaxError) in try s.nextMember(first: first) }) {
            first = false
            let key = try run { s throws(JSONSyntaxError) in try s.readKey() }
            if keyIs(key, "yes") {
                if let v = try count("\(path())/yes", integer: false) { counts.yes = v } else { ok = false }
            } else if keyIs(key, "no") {
                if let v = try count("\(path())/no", integer: true) { counts.no = v } else { ok = false }
            } else if keyIs(key, "variants") {
                if let v = try variants("\(path())/variants") { counts.variants = v } else { ok = false }
            } else {
                try run { s throws(JSONSyntaxError) in try s.skipValue() }
            }
        }
        return ok ? counts : nil
    }

    mutating func variants(_ path: @autoclosure () -> String) throws(DecodeStop) -> [VariantCount]? {
        switch try kind() {
        case .object: break
        case .array:
            record(.invalid(path(), "must be object,null", sent: try skipAndShow()))
            return nil
        default:
            scanner.skipWhitespace()
            let start = scanner.position
            if try isNullish() { return [] }
            record(.invalid(path(), "must be object,null", sent: scanner.text(from: start)))
            return nil
        }
        var result: [VariantCount] = []
        var ok = true
        try run { s throws(JSONSyntaxError) in try s.expect(UInt8(ascii: "{")) }
        var first = true
        while try run({ s throws(JSONSyntaxError) in try s.nextMember(first: first) }) {
            first = false
            let name = try run { s throws(JSONSyntaxError) in let n = try s.readString(); try s.expect(UInt8(ascii: ":")); return n }
            if let c = try count("\(path())/\(pointerSegment(name))", integer: true) {
                result.append(VariantCount(name: name, count: c))
            } else {
                ok = false
            }
        }
        return ok ? result : nil
    }

    /// A count: `yes` is a number, `no` and variants integers; all ≥ 0 and safe integers once
    /// rounded. Numeric strings, booleans and null are coerced as Ajv does.
    mutating func count(_ path: @autoclosure () -> String, integer: Bool) throws(DecodeStop) -> Int64? {
        scanner.skipWhitespace()
        let start = scanner.position
        let type = integer ? "integer" : "number"
        var value: Double
        switch try kind() {
        case .number: value = try run { s throws(JSONSyntaxError) in try s.readNumber() }.doubleValue
        case .string:
            let text = try run { s throws(JSONSyntaxError) in try s.readString() }
            let trimmed = text.trimmingASCIIWhitespace()
            guard !trimmed.isEmpty, let v = Double(trimmed), v.isFinite else {
                record(.invalid(path(), "must be \(type)", sent: scanner.text(from: start)))
                return nil
            }
            value = v
        case .bool: value = try run { s throws(JSONSyntaxError) in try s.readBool() } ? 1 : 0
        case .null:
            try run { s throws(JSONSyntaxError) in try s.readNull() }
            value = 0
        case .object, .array:
            record(.invalid(path(), "must be \(type)", sent: try skipAndShow()))
            return nil
        }
        if integer, value != value.rounded() {
            record(.invalid(path(), "must be integer", sent: scanner.text(from: start)))
            return nil
        }
        if value < 0 {
            record(.invalid(path(), "must be >= 0", sent: scanner.text(from: start)))
            return nil
        }
        guard value.isFinite, value <= MetricsPostDecoder.maxSafeInteger else {
            record(.invalid(path(), "must be a safe integer (at most 9007199254740991)", sent: scanner.text(from: start)))
            return nil
        }
        // A fractional yes is accepted by the server and rounded when stored.
        return Int64(value.rounded())
    }
}

private enum TopKey {
    case appName, instanceId, sdkVersion, platformName, platformVersion, yggdrasilVersion
    case specVersion, connectionId, sdkFlavor, sdkFlavorVersion, bucket

    init?(_ key: (raw: Slice<UnsafeBufferPointer<UInt8>>, escaped: Bool)) {
        let raw = key.escaped ? nil : key.raw
        func match(_ s: StaticString) -> Bool {
            if let raw { return raw.equals(s) }
            return JSONScanner.unescape(key.raw) == s.description
        }
        if match("appName") { self = .appName }
        else if match("instanceId") { self = .instanceId }
        else if match("bucket") { self = .bucket }
        else if match("sdkVersion") { self = .sdkVersion }
        else if match("platformName") { self = .platformName }
        else if match("platformVersion") { self = .platformVersion }
        else if match("yggdrasilVersion") { self = .yggdrasilVersion }
        else if match("specVersion") { self = .specVersion }
        else if match("connectionId") { self = .connectionId }
        else if match("sdkFlavor") { self = .sdkFlavor }
        else if match("sdkFlavorVersion") { self = .sdkFlavorVersion }
        else { return nil }
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
