/// One SDK's `POST /api/client/register`, validated.
public struct Registration: Sendable, Equatable {
    public var appName: String
    public var instanceId: String
    public var sdk: SDKMetadata
    public var interval: Double
    /// Epoch ms.
    public var started: Int64
    public var strategies: [String]
}

public enum RegistrationDecoder {
    /// The server's rules: `appName` (non-empty), `interval` (number ≥ 0), `started` (date) and
    /// `strategies` (array; non-strings dropped) are required; unknown fields are ignored.
    public static func decode(_ body: UnsafeBufferPointer<UInt8>) throws(ValidationFailure) -> Registration {
        var d = Decoding(scanner: JSONScanner(body))
        return try d.complete { d throws(DecodeStop) in try d.registration() }
    }
}

extension Decoding {
    mutating func registration() throws(DecodeStop) -> Registration {
        try bodyObject()
        var appName: String?, instanceId: String?, interval: Double?, started: Int64?, strategies: [String]?
        var sdk = SDKMetadata()
        var sawAppName = false
        try run { s throws(JSONSyntaxError) in try s.expect(UInt8(ascii: "{")) }
        var first = true
        while try run({ s throws(JSONSyntaxError) in try s.nextMember(first: first) }) {
            first = false
            let key = try run { s throws(JSONSyntaxError) in try s.readKey() }
            if keyIs(key, "appName") { sawAppName = true; appName = try string("/body/appName") }
            else if keyIs(key, "instanceId") { instanceId = try string("/body/instanceId") }
            else if let f = SDKField.all.first(where: { keyIs(key, $0.key) }) { try sdkField(f, into: &sdk) }
            else if keyIs(key, "interval") { interval = try number("/body/interval") }
            else if keyIs(key, "started") { started = try date("/body/started", fractions: true) }
            else if keyIs(key, "strategies") { strategies = try stringArray("/body/strategies") }
            else { try run { s throws(JSONSyntaxError) in try s.skipValue() } }
        }
        try finish()
        if !sawAppName { throw .invalid(.required("/body/appName")) }
        guard interval != nil || failure != nil else { throw .invalid(.required("/body/interval")) }
        guard started != nil || failure != nil else { throw .invalid(.required("/body/started")) }
        guard strategies != nil || failure != nil else { throw .invalid(.required("/body/strategies")) }
        if let failure { throw .invalid(failure) }
        guard let appName, !appName.isEmpty else { throw .invalid(.invalid("/body/appName", "must not be empty", sent: "\"\"")) }
        let instance = (instanceId?.isEmpty ?? true) ? "default" : instanceId!
        return Registration(appName: appName, instanceId: instance, sdk: sdk, interval: interval!,
                            started: started!, strategies: strategies!)
    }

    /// A number ≥ 0 (Ajv coercion as for counts, fractions allowed).
    mutating func number(_ path: @autoclosure () -> String) throws(DecodeStop) -> Double? {
        scanner.skipWhitespace()
        let start = scanner.position
        var value: Double
        switch try kind() {
        case .number: value = try run { s throws(JSONSyntaxError) in try s.readNumber() }.doubleValue
        case .string:
            let t = try run { s throws(JSONSyntaxError) in try s.readString() }.trimmingASCIIWhitespace()
            guard !t.isEmpty, let v = Double(t) else {
                record(.invalid(path(), "must be number", sent: scanner.text(from: start)))
                return nil
            }
            value = v
        case .bool: value = try run { s throws(JSONSyntaxError) in try s.readBool() } ? 1 : 0
        case .null: try run { s throws(JSONSyntaxError) in try s.readNull() }; value = 0
        case .object, .array:
            record(.invalid(path(), "must be number", sent: try skipAndShow()))
            return nil
        }
        guard value.isFinite, value >= 0 else {
            record(.invalid(path(), "must be >= 0", sent: scanner.text(from: start)))
            return nil
        }
        return value
    }

    mutating func stringArray(_ path: @autoclosure () -> String) throws(DecodeStop) -> [String]? {
        guard try kind() == .array else {
            record(.invalid(path(), "must be array", sent: try skipAndShow()))
            return nil
        }
        var out: [String] = []
        try forEachElement { d throws(DecodeStop) in
            if try d.kind() == .string {
                out.append(try d.run { s throws(JSONSyntaxError) in try s.readString() })
            } else {
                try d.run { s throws(JSONSyntaxError) in try s.skipValue() }
            }
        }
        return out
    }
}
