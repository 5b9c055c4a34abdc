/// The open window: every accepted post merged by (token, appName, environment, featureName,
/// UTC hour of `bucket.stop`), and every instance seen. Memory grows with distinct keys, not
/// with posts. The environment follows from the token, so it is not stored twice.
public struct Window: Sendable {
    /// The counts of one (token, appName, hour): per feature, yes, no and each variant summed.
    public struct Group: Sendable, Equatable {
        public var toggles = FeatureTable<Counts>()
        /// Earliest `start` and latest `stop` merged into this group (epoch ms).
        public var start: Int64
        public var stop: Int64
    }

    public struct Counts: Sendable, Equatable {
        public var yes: Int64 = 0
        public var no: Int64 = 0
        public var variants = FeatureTable<Int64>()

        public init(yes: Int64 = 0, no: Int64 = 0, variants: FeatureTable<Int64> = FeatureTable()) {
            self.yes = yes
            self.no = no
            self.variants = variants
        }
    }

    public struct GroupKey: Hashable, Sendable {
        public var token: String
        public var appName: String
        /// Start of the UTC hour of `bucket.stop`, epoch ms.
        public var hour: Int64

        /// One word from `NameHash` for the hasher: SipHash over the strings' bytes was a
        /// third of the cost of finding the group (and the instance) of every post.
        public func hash(into hasher: inout Hasher) {
            hasher.combine(NameHash.fold(NameHash.fold(NameHash.of(token), NameHash.of(appName)), UInt64(bitPattern: hour)))
        }
    }

    public struct InstanceKey: Hashable, Sendable {
        public var token: String
        public var appName: String
        public var instanceId: String

        /// As for `GroupKey`.
        public func hash(into hasher: inout Hasher) {
            hasher.combine(NameHash.fold(NameHash.fold(NameHash.of(token), NameHash.of(appName)), NameHash.of(instanceId)))
        }
    }

    /// One SDK instance as it goes upstream in `applications[]`: what the registry holds for it.
    public struct Instance: Sendable, Equatable {
        public var sdk: SDKMetadata
        /// The SDK's metrics interval as it reported it (`/register` body or `unleash-interval`).
        public var interval: Double?
        /// When the SDK started (`/register`), else when the proxy first saw it (epoch ms).
        public var started: Int64
        public var strategies: [String]
        /// What a bulk post (from another metrics-proxy or Unleash Edge) said of the instance
        /// beyond the SDK's own fields; nil for an SDK that posts here itself.
        public var relayed: Relayed? = nil
    }

    /// An instance's fields that only a bulk post carries, kept as the sender gave them.
    public struct Relayed: Sendable, Equatable {
        public var environment: String
        public var sdkType: String?
        public var projects: [String]?
        /// The proxies and Edges its metrics came through, nearest the SDK first; this proxy
        /// adds itself when it forwards them.
        public var connectVia: [BulkPost.Via]
    }

    public private(set) var groups: [GroupKey: Group] = [:]
    /// The instances seen in this window, as the registry knows them.
    public private(set) var instances: [InstanceKey: Instance] = [:]
    /// What every instance said about itself, carried from window to window (`next(opened:config:)`).
    public private(set) var registry: InstanceRegistry
    /// The impact metrics merged by series.
    public private(set) var impact = ImpactTable()
    /// Distinct (token, appName, hour, featureName) keys.
    public private(set) var flagKeys = 0
    /// What `[limits] max_keys` bounds: flag keys and impact series.
    public var keyCount: Int { flagKeys + impact.keyCount }
    /// When this window opened (epoch ms).
    public let opened: Int64

    /// A window alone (tests, fuzzers) remembers every instance; the daemon's first window gets
    /// the configured bounds, and `next` carries them on.
    public init(opened: Int64, registry: InstanceRegistry = InstanceRegistry(maxCount: .max, maxAgeMillis: .max)) {
        self.opened = opened
        self.registry = registry
    }

    /// The window after this one: empty, with the registry carried over (bounded by `config`'s
    /// `[limits] max_instances` and `instance_max_age`). Also the number of instances forgotten.
    public func next(opened: Int64, config: Config) -> (window: Window, forgotten: Int) {
        var registry = self.registry
        registry.maxCount = config.limits.maxInstances
        registry.maxAgeMillis = config.limits.instanceMaxAge.milliseconds
        let forgotten = registry.evict(now: opened)
        return (Window(opened: opened, registry: registry), forgotten)
    }

    public var isEmpty: Bool { groups.isEmpty && instances.isEmpty && impact.isEmpty }

    /// Whether merging would take the window past `maxKeys` distinct keys. Names are looked
    /// up only when the post could reach the cap at all.
    func wouldExceed(_ maxKeys: Int, token: String, appName: String, stop: Int64, names: [FeatureName], plus: Int = 0) -> Bool {
        let group = groups[GroupKey(token: token, appName: appName, hour: Timestamp.hourStart(stop))]
        var new = Set<FeatureName>()
        for n in names where group?.toggles[n] == nil { new.insert(n.owned) }
        return keyCount + plus + new.count > maxKeys
    }

    /// Instances are bounded by the same cap: each one is kept until the window closes.
    func wouldAddInstance(beyond maxKeys: Int, token: String, appName: String, instanceId: String) -> Bool {
        instances.count >= maxKeys && instances[InstanceKey(token: token, appName: appName, instanceId: instanceId)] == nil
    }

    /// How many keys merging `metrics` would add: 0 without looking them up when all their
    /// samples would fit beside up to `flagKeys` new flag keys.
    private func newImpactKeys(_ metrics: [ImpactMetric], token: String, appName: @autoclosure () -> String,
                               flagKeys: Int, maxKeys: Int) -> Int {
        let samples = metrics.reduce(0) { $0 + $1.samples.count }
        guard samples > 0, keyCount + flagKeys + samples > maxKeys else { return 0 }
        return impact.newKeys(metrics, token: token, appName: appName())
    }

    /// For a post read by the full decoder.
    func wouldExceed(_ maxKeys: Int, post: MetricsPost, token: String) -> Bool {
        if wouldAddInstance(beyond: maxKeys, token: token, appName: post.appName, instanceId: post.instanceId) { return true }
        let impactKeys = newImpactKeys(post.impact.metrics, token: token, appName: post.appName,
                                       flagKeys: post.bucket?.toggles.count ?? 0, maxKeys: maxKeys)
        guard let b = post.bucket, keyCount + impactKeys + b.toggles.count > maxKeys else { return keyCount + impactKeys > maxKeys }
        let names = b.toggles.filter { $0.yes != 0 || $0.no != 0 }.map { FeatureName($0.name) }
        return wouldExceed(maxKeys, token: token, appName: post.appName, stop: b.stop, names: names, plus: impactKeys)
    }

    /// For a post read by the fast path from `body`, with its impact metrics read apart.
    func wouldExceed(_ maxKeys: Int, fast p: FastPost, body: UnsafeBufferPointer<UInt8>, token: String,
                     impact: [ImpactMetric] = []) -> Bool {
        func text(_ r: Range<Int>) -> String { String(decoding: UnsafeBufferPointer(rebasing: body[r]), as: UTF8.self) }
        if instances.count >= maxKeys,
           wouldAddInstance(beyond: maxKeys, token: token, appName: text(p.appName),
                            instanceId: (p.instanceId?.isEmpty ?? true) ? "default" : text(p.instanceId!)) {
            return true
        }
        let impactKeys = newImpactKeys(impact, token: token, appName: text(p.appName), flagKeys: p.toggles.count, maxKeys: maxKeys)
        guard keyCount + impactKeys + p.toggles.count > maxKeys else { return false }
        let names = p.toggles.filter { $0.yes != 0 || $0.no != 0 }
            .map { t in
                let bytes = UnsafeBufferPointer(rebasing: body[t.name])
                return FeatureName(borrowing: bytes, hash: NameHash.of(bytes))
            }
        let appName = String(decoding: UnsafeBufferPointer(rebasing: body[p.appName]), as: UTF8.self)
        return wouldExceed(maxKeys, token: token, appName: appName, stop: p.stop, names: names, plus: impactKeys)
    }

    /// Merges an accepted post. `interval` is the `unleash-interval` header, if any. Returns
    /// the impact metrics dropped in the merge (type clashes, overflows).
    @discardableResult
    mutating func merge(_ post: MetricsPost, token: String, interval: Double?, now: Int64) -> [ImpactDrop: Int] {
        noteInstance(token: token, appName: post.appName, instanceId: post.instanceId, sdk: post.sdk,
                     interval: interval, started: nil, strategies: nil, now: now)
        let dropped = post.impact.metrics.isEmpty ? [:] : impact.merge(post.impact.metrics, token: token, appName: post.appName)
        guard let bucket = post.bucket else { return dropped }
        let key = GroupKey(token: token, appName: post.appName, hour: Timestamp.hourStart(bucket.stop))
        var added = 0
        func apply(_ group: inout Group) {
            group.start = min(group.start, bucket.start)
            group.stop = max(group.stop, bucket.stop)
            let before = group.toggles.count
            for t in bucket.toggles where t.yes != 0 || t.no != 0 {
                var name = t.name
                _ = name.withUTF8 { b in group.toggles.update(b, hash: NameHash.of(b), initial: { Counts() }) { $0.add(t) } }
            }
            added = group.toggles.count - before
        }
        // The default-value subscript mutates in place: the group's dictionaries are not copied.
        apply(&groups[key, default: Group(start: bucket.start, stop: bucket.stop)])
        flagKeys += added
        return dropped
    }

    /// Records a registration (`/register`) or an instance seen on a metrics post, in the
    /// registry and in this window.
    mutating func noteInstance(token: String, appName: String, instanceId: String, sdk: SDKMetadata,
                               interval: Double?, started: Int64?, strategies: [String]?, relayed: Relayed? = nil, now: Int64) {
        let key = InstanceKey(token: token, appName: appName, instanceId: instanceId)
        // The common case: an instance posting again with nothing new to say about itself.
        if started == nil, strategies == nil, relayed == nil, let existing = instances[key], existing.sdk == sdk,
           interval == nil || existing.interval == interval {
            return
        }
        instances[key] = registry.note(key, sdk: sdk, interval: interval, started: started, strategies: strategies,
                                       relayed: relayed, now: now)
    }
}

extension Window.Counts {
    mutating func add(_ t: ToggleCounts) {
        yes = yes.addingSaturating(t.yes)
        no = no.addingSaturating(t.no)
        for v in t.variants where v.count != 0 {
            var name = v.name
            _ = name.withUTF8 { b in variants.update(b, hash: NameHash.of(b), initial: { 0 }) { $0.addSaturating(v.count) } }
        }
    }

    /// `variantList` is the post's list of variants, which `t.variants` indexes.
    @inline(__always)
    mutating func add(_ t: FastPost.Toggle, _ variantList: UnsafeBufferPointer<FastPost.Variant>, _ body: UnsafeBufferPointer<UInt8>) {
        yes = yes.addingSaturating(t.yes)
        no = no.addingSaturating(t.no)
        guard !t.variants.isEmpty else { return }
        variants.makeUnique()
        var hint = 0
        for i in t.variants {
            let v = variantList[i]
            guard v.count != 0 else { continue }
            variants.updateOwned(UnsafeBufferPointer(rebasing: body[v.name]), hint: &hint, initial: { 0 }) { $0.addSaturating(v.count) }
        }
    }
}

extension Window {
    /// Merges a post read by `FastPostScanner`; `body` is the bytes it was read from.
    /// `header` looks up a request header, asked only for an instance whose registration changes.
    @discardableResult
    mutating func merge(_ p: FastPost, body: UnsafeBufferPointer<UInt8>, token: String, interval: Double?, now: Int64,
                        header: (String) -> String?, impact metrics: [ImpactMetric] = []) -> [ImpactDrop: Int] {
        func text(_ r: Range<Int>?) -> String? { r.map { String(decoding: UnsafeBufferPointer(rebasing: body[$0]), as: UTF8.self) } }
        func same(_ s: String?, _ r: Range<Int>?) -> Bool {
            guard let s, let r else { return s == nil && r == nil }
            var t = s
            return t.withUTF8 { a in a.count == r.count && (r.isEmpty || sameBytes(a.baseAddress!, body.baseAddress! + r.lowerBound, r.count)) }
        }
        let appName = text(p.appName)!
        let instanceId = (p.instanceId?.isEmpty ?? true) ? "default" : text(p.instanceId)!
        let ikey = InstanceKey(token: token, appName: appName, instanceId: instanceId)
        if let e = instances[ikey], interval == nil || e.interval == interval,
           p.sdkFields.allSatisfy({ f in p.sdk[f.index] == nil || same(e.sdk[f], p.sdk[f.index]) }) {
            // Known instance, nothing new about it.
        } else {
            var sdk = SDKMetadata()
            for f in SDKField.all { sdk[f] = text(p.sdk[f.index]) }
            sdk.fillFromHeaders(header)
            noteInstance(token: token, appName: appName, instanceId: instanceId, sdk: sdk, interval: interval,
                         started: nil, strategies: nil, now: now)
        }
        let key = GroupKey(token: token, appName: appName, hour: Timestamp.hourStart(p.stop))
        var added = 0
        func apply(_ group: inout Group) {
            group.start = min(group.start, p.start)
            group.stop = max(group.stop, p.stop)
            let before = group.toggles.count
            group.toggles.makeUnique()
            var hint = 0
            p.toggles.withElements { toggles in
                p.variants.withElements { variantList in
                    for t in toggles where t.yes != 0 || t.no != 0 {
                        // Updated in place; a new name is copied into the table.
                        group.toggles.updateOwned(UnsafeBufferPointer(rebasing: body[t.name]), hint: &hint, initial: { Counts() }) {
                            $0.add(t, variantList, body)
                        }
                    }
                }
            }
            added = group.toggles.count - before
        }
        apply(&groups[key, default: Group(start: p.start, stop: p.stop)])
        flagKeys += added
        return metrics.isEmpty ? [:] : impact.merge(metrics, token: token, appName: appName)
    }
}

extension Window {
    /// The entries of a bulk post the window keeps: those of the token's `environment` (the
    /// server drops the others, still answering 202; nil when the token names none) with a
    /// count (the server drops 0/0 entries too).
    static func kept(_ b: BulkPost, environment: String?) -> [BulkPost.Entry] {
        b.metrics.filter { e in (environment == nil || e.environment == environment) && (e.yes != 0 || e.no != 0) }
    }

    /// Whether merging a bulk post would take the window past `maxKeys` (flag keys, impact
    /// series and instances).
    func wouldExceed(_ maxKeys: Int, bulk b: BulkPost, token: String, environment: String?, now: Int64) -> Bool {
        let newInstances = Set(b.applications.map { InstanceKey(token: token, appName: $0.appName, instanceId: $0.instanceId) })
            .filter { instances[$0] == nil }.count
        if newInstances > 0, instances.count + newInstances > maxKeys { return true }
        let kept = Self.kept(b, environment: environment)
        let impactKeys = newImpactKeys(b.impact.metrics, token: token, appName: ProxyName.appName, flagKeys: kept.count, maxKeys: maxKeys)
        guard keyCount + impactKeys + kept.count > maxKeys else { return false }
        var new = Set<String>()
        for e in kept {
            let key = GroupKey(token: token, appName: e.appName, hour: Timestamp.hourStart(e.timestamp ?? now))
            if groups[key]?.toggles[FeatureName(e.featureName)] == nil { new.insert("\(key.appName)\u{0}\(key.hour)\u{0}\(e.featureName)") }
        }
        return keyCount + impactKeys + new.count > maxKeys
    }

    /// Merges an accepted bulk post: its kept entries by (token, appName, hour of `timestamp`,
    /// or of `now` where it has none), its applications into the registry as the sender
    /// described them, its impact metrics by series. Returns the impact metrics dropped.
    @discardableResult
    mutating func merge(_ b: BulkPost, token: String, environment: String?, now: Int64) -> [ImpactDrop: Int] {
        for a in b.applications {
            let relayed = Relayed(environment: a.environment, sdkType: a.sdkType, projects: a.projects, connectVia: a.connectVia)
            noteInstance(token: token, appName: a.appName, instanceId: a.instanceId, sdk: a.sdk, interval: a.interval,
                         started: a.started, strategies: a.strategies, relayed: relayed, now: now)
        }
        for e in Self.kept(b, environment: environment) {
            let at = e.timestamp ?? now
            let key = GroupKey(token: token, appName: e.appName, hour: Timestamp.hourStart(at))
            let t = ToggleCounts(name: e.featureName, yes: e.yes, no: e.no, variants: e.variants)
            var added = false
            func apply(_ group: inout Group) {
                group.start = min(group.start, at)
                group.stop = max(group.stop, at)
                var name = e.featureName
                added = name.withUTF8 { n in group.toggles.update(n, hash: NameHash.of(n), initial: { Counts() }) { $0.add(t) } }
            }
            apply(&groups[key, default: Group(start: at, stop: at)])
            if added { flagKeys += 1 }
        }
        // Filed under `metrics-proxy`: the bulk body names no appName (the SDKs' own `appName`
        // label stays in each sample), and the server keys a series by its labels alone. One
        // name for every sender merges the same labels from any of them into one series, where
        // an appName per sender would send them in bodies of their own.
        return b.impact.metrics.isEmpty ? [:] : impact.merge(b.impact.metrics, token: token, appName: ProxyName.appName)
    }
}

extension Int64 {
    mutating func addSaturating(_ other: Int64) { self = addingSaturating(other) }

    func addingSaturating(_ other: Int64) -> Int64 {
        let (r, overflow) = addingReportingOverflow(other)
        return overflow ? .max : r
    }
}
