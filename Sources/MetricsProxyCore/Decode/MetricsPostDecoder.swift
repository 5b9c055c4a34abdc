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

/// The metrics post: its top level, bucket, toggles, variants and counts.
extension Decoding {
    mutating func top() throws(DecodeStop) -> MetricsPost {
        try bodyObject()
        var appName: String?
        var sawAppName = false
        var instanceId: String?
        var sdk = SDKMetadata()
        var bucket: Bucket?
        var impact = ImpactMetrics()
        try run { s throws(JSONSyntaxError) in try s.expect(UInt8(ascii: "{")) }
        var first = true
        while try run({ s throws(JSONSyntaxError) in try s.nextMember(first: first) }) {
            first = false
            let key = try run { s throws(JSONSyntaxError) in try s.readKey() }
            switch TopKey(key) {
            case .appName: sawAppName = true; appName = try string("/body/appName")
            case .instanceId: instanceId = try string("/body/instanceId")
            case .sdk(let f): try sdkField(f, into: &sdk)
            case .bucket: bucket = try self.bucket()
            case .impactMetrics: impact = try impactMetrics()
            case nil: try run { s throws(JSONSyntaxError) in try s.skipValue() }
            }
        }
        try finish()
        // Ajv checks `required` before the properties, so a missing appName is reported first.
        if !sawAppName { throw .invalid(.required("/body/appName")) }
        if let failure { throw .invalid(failure) }
        guard let appName, !appName.isEmpty else { throw .invalid(.invalid("/body/appName", "must not be empty", sent: "\"\"")) }
        let instance = (instanceId?.isEmpty ?? true) ? "default" : instanceId!
        var post = MetricsPost(appName: appName, instanceId: instance, sdk: sdk, bucket: bucket)
        post.impact = impact
        return post
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
        guard present([(sawStart, "start"), (sawStop, "stop"), (sawToggles, "toggles")], at: path, failureBefore: failureBefore) else {
            return nil
        }
        guard let start, let stop, let toggles else { return nil }
        return Bucket(start: start, stop: stop, toggles: toggles)
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
    case appName, instanceId, bucket, impactMetrics
    case sdk(SDKField)

    init?(_ key: (raw: Slice<UnsafeBufferPointer<UInt8>>, escaped: Bool)) {
        let raw = key.escaped ? nil : key.raw
        func match(_ s: StaticString) -> Bool {
            if let raw { return raw.equals(s) }
            return JSONScanner.unescape(key.raw) == s.description
        }
        if match("appName") { self = .appName }
        else if match("instanceId") { self = .instanceId }
        else if match("bucket") { self = .bucket }
        else if match("impactMetrics") { self = .impactMetrics }
        else if let f = SDKField.all.first(where: { match($0.key) }) { self = .sdk(f) }
        else { return nil }
    }
}
