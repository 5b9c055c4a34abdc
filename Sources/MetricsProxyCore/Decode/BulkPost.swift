/// One `POST /api/client/metrics/bulk`, validated: what another metrics-proxy or Unleash Edge
/// sends, merged into the window like SDK posts.
public struct BulkPost: Sendable, Equatable {
    /// A proxy or Edge an instance's metrics came through, nearest the SDK first.
    public struct Via: Sendable, Hashable {
        public var appName: String
        public var instanceId: String

        public init(appName: String, instanceId: String) {
            self.appName = appName
            self.instanceId = instanceId
        }
    }

    /// An `applications[]` entry: one SDK instance as the sender's registry knew it.
    public struct Application: Sendable, Equatable {
        public var appName: String
        public var instanceId: String
        public var environment: String
        public var sdk = SDKMetadata()
        public var interval: Double?
        /// Epoch ms.
        public var started: Int64?
        public var strategies: [String]?
        public var projects: [String]?
        /// `frontend` or `backend`; nil when absent or null.
        public var sdkType: String?
        public var connectVia: [Via] = []
    }

    /// A `metrics[]` entry: one feature's counts for one app and hour.
    public struct Entry: Sendable, Equatable {
        public var featureName: String
        public var appName: String
        public var environment: String
        /// Epoch ms; nil when the sender gave none (the window files it at arrival).
        public var timestamp: Int64?
        public var yes: Int64
        public var no: Int64
        public var variants: [VariantCount]
    }

    public var applications: [Application] = []
    public var metrics: [Entry] = []
    public var impact = ImpactMetrics()
    /// How many `seenTokens` the sender listed (Unleash Edge: the tokens its SDKs used). Not
    /// kept: they are secrets, and the proxy does not forward them (counted on /metrics).
    public var seenTokens = 0
}

public enum BulkPostDecoder {
    /// The server's rules (SERVER.md §6): its OpenAPI schema with Ajv's coercions (`yes` and
    /// `no` integers, `variants` an object that may not be null), then the Joi checks of its
    /// handler (non-empty `appName` and `environment` in `metrics[]`, safe integers, and an
    /// application that is not a frontend SDK with an `sdkVersion` needs `started` and
    /// `interval`). Unknown fields are ignored.
    public static func decode(_ body: UnsafeBufferPointer<UInt8>) throws(ValidationFailure) -> BulkPost {
        var d = Decoding(scanner: JSONScanner(body))
        return try d.complete { d throws(DecodeStop) in try d.bulk() }
    }

    public static func decode(_ body: [UInt8]) throws(ValidationFailure) -> BulkPost {
        var result: Result<BulkPost, ValidationFailure>!
        body.withUnsafeBufferPointer { p in result = Result { () throws(ValidationFailure) in try decode(p) } }
        return try result.get()
    }
}

extension Decoding {
    mutating func bulk() throws(DecodeStop) -> BulkPost {
        try bodyObject(required: "/body/applications")
        var post = BulkPost()
        var sawApplications = false, sawMetrics = false
        try run { s throws(JSONSyntaxError) in try s.expect(UInt8(ascii: "{")) }
        var first = true
        while try run({ s throws(JSONSyntaxError) in try s.nextMember(first: first) }) {
            first = false
            let key = try run { s throws(JSONSyntaxError) in try s.readKey() }
            if keyIs(key, "applications") {
                sawApplications = true
                try array("/body/applications") { d, i throws(DecodeStop) in
                    if let a = try d.bulkApplication("/body/applications/\(i)") { post.applications.append(a) }
                }
            } else if keyIs(key, "metrics") {
                sawMetrics = true
                try array("/body/metrics") { d, i throws(DecodeStop) in
                    if let e = try d.bulkEntry("/body/metrics/\(i)") { post.metrics.append(e) }
                }
            } else if keyIs(key, "impactMetrics") {
                post.impact = try impactMetrics()
            } else if keyIs(key, "seenTokens") {
                // Edge's list of tokens its SDKs used; the server marks them seen.
                try array("/body/seenTokens") { d, i throws(DecodeStop) in
                    _ = try d.string("/body/seenTokens/\(i)")
                    post.seenTokens += 1
                }
            } else {
                try run { s throws(JSONSyntaxError) in try s.skipValue() }
            }
        }
        try finish()
        // Ajv checks `required` before the properties.
        if !sawApplications { throw .invalid(.required("/body/applications")) }
        if !sawMetrics { throw .invalid(.required("/body/metrics")) }
        return post
    }

    /// An array whose elements `element` reads (with their index); anything else is recorded.
    private mutating func array(_ path: @autoclosure () -> String,
                                _ element: (inout Decoding, Int) throws(DecodeStop) -> Void) throws(DecodeStop) {
        guard try kind() == .array else {
            record(.invalid(path(), "must be array", sent: try skipAndShow()))
            return
        }
        var i = 0
        try forEachElement { d throws(DecodeStop) in
            try element(&d, i)
            i += 1
        }
    }

    /// Reads an object's members, calling `member` with each key; false if it was not an object.
    private mutating func object(_ path: @autoclosure () -> String,
                                 _ member: (inout Decoding, (raw: Slice<UnsafeBufferPointer<UInt8>>, escaped: Bool)) throws(DecodeStop) -> Void)
        throws(DecodeStop) -> Bool {
        guard try kind() == .object else {
            record(.invalid(path(), "must be object", sent: try skipAndShow()))
            return false
        }
        try run { s throws(JSONSyntaxError) in try s.expect(UInt8(ascii: "{")) }
        var first = true
        while try run({ s throws(JSONSyntaxError) in try s.nextMember(first: first) }) {
            first = false
            let key = try run { s throws(JSONSyntaxError) in try s.readKey() }
            try member(&self, key)
        }
        return true
    }

    mutating func bulkApplication(_ path: String) throws(DecodeStop) -> BulkPost.Application? {
        var appName: String?, instanceId: String?, environment: String?
        var sawAppName = false, sawInstanceId = false, sawEnvironment = false
        var a = BulkPost.Application(appName: "", instanceId: "", environment: "")
        let before = failure
        let isObject = try object(path) { d, key throws(DecodeStop) in
            if d.keyIs(key, "appName") { sawAppName = true; appName = try d.string("\(path)/appName") }
            else if d.keyIs(key, "instanceId") { sawInstanceId = true; instanceId = try d.string("\(path)/instanceId") }
            else if d.keyIs(key, "environment") { sawEnvironment = true; environment = try d.string("\(path)/environment") }
            else if d.keyIs(key, "interval") { a.interval = try d.number("\(path)/interval") }
            else if d.keyIs(key, "started") { a.started = try d.date("\(path)/started", fractions: true) }
            else if d.keyIs(key, "strategies") { a.strategies = try d.stringArray("\(path)/strategies") }
            else if d.keyIs(key, "projects") { a.projects = try d.stringArray("\(path)/projects") }
            else if d.keyIs(key, "sdkType") { a.sdkType = try d.sdkType("\(path)/sdkType") }
            else if d.keyIs(key, "connectVia") { a.connectVia = try d.connectVia("\(path)/connectVia") ?? [] }
            else if let f = SDKField.all.first(where: { d.keyIs(key, $0.key) }) {
                a.sdk[f] = try d.string("\(path)/\(f.name)", maxLength: f.schemaMaxLength)
            } else {
                try d.run { s throws(JSONSyntaxError) in try s.skipValue() }
            }
        }
        guard isObject else { return nil }
        guard present([(sawAppName, "appName"), (sawInstanceId, "instanceId"), (sawEnvironment, "environment")], at: path,
                      failureBefore: before) else { return nil }
        guard failure == nil, let appName, let instanceId, let environment else { return nil }
        // The handler's Joi check (`clientRegisterSchema`), skipped only for a frontend SDK that
        // names its version.
        if !(a.sdkType == "frontend" && a.sdk[SDKField.named("sdkVersion")!] != nil) {
            guard !appName.isEmpty else { record(.invalid("\(path)/appName", "must not be empty", sent: "\"\"")); return nil }
            guard a.started != nil else { record(.required("\(path)/started")); return nil }
            guard a.interval != nil else { record(.required("\(path)/interval")); return nil }
        }
        a.appName = appName
        a.instanceId = instanceId.isEmpty ? "default" : instanceId
        a.environment = environment
        return a
    }

    /// `sdkType`: `frontend`, `backend` or null.
    mutating func sdkType(_ path: String) throws(DecodeStop) -> String? {
        if try kind() == .null {
            try run { s throws(JSONSyntaxError) in try s.readNull() }
            return nil
        }
        scanner.skipWhitespace()
        let start = scanner.position
        guard let v = try string(path) else { return nil }
        guard v == "frontend" || v == "backend" else {
            record(.invalid(path, "must be equal to one of the allowed values: \"frontend\", \"backend\", null", sent: scanner.text(from: start)))
            return nil
        }
        return v
    }

    mutating func connectVia(_ path: String) throws(DecodeStop) -> [BulkPost.Via]? {
        var out: [BulkPost.Via] = []
        try array(path) { d, i throws(DecodeStop) in
            var appName: String?, instanceId: String?
            var sawAppName = false, sawInstanceId = false
            let before = d.failure
            guard try d.object("\(path)/\(i)", { d, key throws(DecodeStop) in
                if d.keyIs(key, "appName") { sawAppName = true; appName = try d.string("\(path)/\(i)/appName") }
                else if d.keyIs(key, "instanceId") { sawInstanceId = true; instanceId = try d.string("\(path)/\(i)/instanceId") }
                else { try d.run { s throws(JSONSyntaxError) in try s.skipValue() } }
            }) else { return }
            guard d.present([(sawAppName, "appName"), (sawInstanceId, "instanceId")], at: "\(path)/\(i)", failureBefore: before) else { return }
            if let appName, let instanceId { out.append(BulkPost.Via(appName: appName, instanceId: instanceId)) }
        }
        return failure == nil ? out : nil
    }

    mutating func bulkEntry(_ path: String) throws(DecodeStop) -> BulkPost.Entry? {
        var featureName: String?, appName: String?, environment: String?
        var sawFeature = false, sawAppName = false, sawEnvironment = false
        var e = BulkPost.Entry(featureName: "", appName: "", environment: "", timestamp: nil, yes: 0, no: 0, variants: [])
        let before = failure
        let isObject = try object(path) { d, key throws(DecodeStop) in
            if d.keyIs(key, "featureName") { sawFeature = true; featureName = try d.string("\(path)/featureName") }
            else if d.keyIs(key, "appName") { sawAppName = true; appName = try d.string("\(path)/appName") }
            else if d.keyIs(key, "environment") { sawEnvironment = true; environment = try d.string("\(path)/environment") }
            else if d.keyIs(key, "timestamp") { e.timestamp = try d.date("\(path)/timestamp") }
            else if d.keyIs(key, "yes") { e.yes = try d.count("\(path)/yes", integer: true) ?? 0 }
            else if d.keyIs(key, "no") { e.no = try d.count("\(path)/no", integer: true) ?? 0 }
            else if d.keyIs(key, "variants") {
                // Unlike an SDK post's, a bulk entry's variants may not be null.
                if try d.kind() == .object {
                    e.variants = try d.variants("\(path)/variants") ?? []
                } else {
                    d.record(.invalid("\(path)/variants", "must be object", sent: try d.skipAndShow()))
                }
            } else {
                try d.run { s throws(JSONSyntaxError) in try s.skipValue() }
            }
        }
        guard isObject else { return nil }
        guard present([(sawFeature, "featureName"), (sawAppName, "appName"), (sawEnvironment, "environment")], at: path,
                      failureBefore: before) else { return nil }
        guard failure == nil, let featureName, let appName, let environment else { return nil }
        // The handler's Joi check (`clientMetricsEnvBulkSchema`): a feature name may be empty.
        guard !appName.isEmpty else { record(.invalid("\(path)/appName", "must not be empty", sent: "\"\"")); return nil }
        guard !environment.isEmpty else { record(.invalid("\(path)/environment", "must not be empty", sent: "\"\"")); return nil }
        e.featureName = featureName
        e.appName = appName
        e.environment = environment
        return e
    }
}
