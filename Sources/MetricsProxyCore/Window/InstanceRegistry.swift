/// What each SDK instance said about itself (its registration's `started`, `strategies` and
/// `interval`, and its SDK fields), kept across windows. An SDK registers once, at start: without
/// this, every window after the first would report the time that window first saw the instance
/// and no strategies. Bounded: an instance unseen for `maxAgeMillis` is forgotten when a window
/// closes, and past `maxCount` the longest unseen go first (`[limits] max_instances`,
/// `instance_max_age`).
public struct InstanceRegistry: Sendable {
    struct Entry: Sendable, Equatable {
        var instance: Window.Instance
        /// The start of the last window that saw it, or the last time it said something new (epoch ms).
        var lastSeen: Int64
    }

    private(set) var entries: [Window.InstanceKey: Entry] = [:]
    public var maxCount: Int
    public var maxAgeMillis: Int64

    public init(maxCount: Int, maxAgeMillis: Int64) {
        self.maxCount = maxCount
        self.maxAgeMillis = maxAgeMillis
    }

    public init(_ config: Config) {
        self.init(maxCount: config.limits.maxInstances, maxAgeMillis: config.limits.instanceMaxAge.milliseconds)
    }

    /// Instances remembered.
    public var count: Int { entries.count }

    /// What the registry holds for `key`, if anything.
    public func instance(_ key: Window.InstanceKey) -> Window.Instance? { entries[key]?.instance }

    /// Merges what an instance says now into what it said before (what it says now wins; what it
    /// leaves out is kept) and returns the result. A new instance started `now` unless it says when.
    mutating func note(_ key: Window.InstanceKey, sdk: SDKMetadata, interval: Double?, started: Int64?,
                       strategies: [String]?, relayed: Window.Relayed? = nil, now: Int64) -> Window.Instance {
        guard var entry = entries[key] else {
            let instance = Window.Instance(sdk: sdk, interval: interval, started: started ?? now, strategies: strategies ?? [],
                                           relayed: relayed)
            entries[key] = Entry(instance: instance, lastSeen: now)
            return instance
        }
        var merged = sdk
        merged.fillGaps(from: entry.instance.sdk)
        entry.instance.sdk = merged
        if let interval { entry.instance.interval = interval }
        if let started { entry.instance.started = started }
        if let strategies { entry.instance.strategies = strategies }
        if let relayed { entry.instance.relayed = relayed }
        entry.lastSeen = max(entry.lastSeen, now)
        entries[key] = entry
        return entry.instance
    }

    /// Forgets the instances unseen for longer than `maxAgeMillis`, then the longest unseen past
    /// `maxCount`; returns how many it forgot.
    @discardableResult
    mutating func evict(now: Int64) -> Int {
        let before = entries.count
        entries = entries.filter { now - $0.value.lastSeen <= maxAgeMillis }
        if entries.count > maxCount {
            let oldest = entries.sorted { $0.value.lastSeen < $1.value.lastSeen }.prefix(entries.count - maxCount)
            for (key, _) in oldest { entries[key] = nil }
        }
        return before - entries.count
    }
}
