/// One SDK's `POST /api/client/metrics`, validated: what the window merges.
public struct MetricsPost: Sendable, Equatable {
    public var appName: String
    /// `default` when the SDK sent none, null or "" (as the server's Joi schema does).
    public var instanceId: String
    public var sdk: SDKMetadata
    /// nil for impact-metrics-only posts (`bucket` missing or null).
    public var bucket: Bucket?
    /// The post's `impactMetrics`: those kept, and those dropped alone (with the reason).
    public var impact = ImpactMetrics()

    public init(appName: String, instanceId: String, sdk: SDKMetadata = SDKMetadata(), bucket: Bucket?) {
        self.appName = appName
        self.instanceId = instanceId
        self.sdk = sdk
        self.bucket = bucket
    }
}

public struct Bucket: Sendable, Equatable {
    /// Epoch milliseconds.
    public var start: Int64
    public var stop: Int64
    public var toggles: [ToggleCounts]

    public init(start: Int64, stop: Int64, toggles: [ToggleCounts]) {
        self.start = start
        self.stop = stop
        self.toggles = toggles
    }
}

public struct ToggleCounts: Sendable, Equatable {
    public var name: String
    public var yes: Int64
    public var no: Int64
    public var variants: [VariantCount]

    public init(name: String, yes: Int64, no: Int64, variants: [VariantCount] = []) {
        self.name = name
        self.yes = yes
        self.no = no
        self.variants = variants
    }
}

public struct VariantCount: Sendable, Equatable {
    public var name: String
    public var count: Int64

    public init(name: String, count: Int64) {
        self.name = name
        self.count = count
    }
}
