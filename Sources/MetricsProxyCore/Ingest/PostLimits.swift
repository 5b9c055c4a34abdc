/// What one post may hold beyond the Unleash server's own rules: `[limits]` and
/// `[listen] allow_tokens`. Checked after the schema, so a post that breaks the schema gets
/// the server's answer first.
public struct PostLimits: Sendable, Equatable {
    public var maxToggles: Int
    public var maxNameLength: Int
    /// Empty: every token is accepted.
    public var allowTokens: Set<String>

    /// The length past which an impact metric is dropped alone (`trim`): `maxNameLength`,
    /// except in a journal replay, which refuses nothing but drops what the live post dropped.
    public var impactNameLength: Int

    public init(maxToggles: Int, maxNameLength: Int, allowTokens: Set<String> = []) {
        self.maxToggles = maxToggles
        self.maxNameLength = maxNameLength
        impactNameLength = maxNameLength
        self.allowTokens = allowTokens
    }

    public init(_ config: Config) {
        self.init(maxToggles: config.limits.maxTogglesPerPost, maxNameLength: config.limits.maxNameLength,
                  allowTokens: Set(config.listen.allowTokens))
    }

    /// Whether the request's own token (not `upstream.token`) may post here.
    func allows(authorization: String?) -> Bool {
        guard !allowTokens.isEmpty else { return true }
        guard let token = Token.fromAuthorization(authorization) else { return false }
        return allowTokens.contains(token)
    }

    /// The fast path's check: true when everything is within the limits. Otherwise the full
    /// decoder reads the post again and `refusal(for:)` words the answer.
    ///
    /// A name is kept, and measured by the full decoder, after invalid UTF-8 in it is repaired
    /// (each bad sequence becomes U+FFFD, three bytes): a name whose bytes could grow past the
    /// limit that way, and are not all ASCII, is left to the full decoder (found by the
    /// decoder fuzzer: 200 bytes of 0xFF passed here and failed there).
    func admits(_ p: FastPost, body: UnsafeBufferPointer<UInt8>) -> Bool {
        func fits(_ r: Range<Int>?) -> Bool {
            guard let r else { return true }
            return r.count <= maxNameLength && (r.count * 3 <= maxNameLength || body[r].allSatisfy { $0 < 0x80 })
        }
        guard p.toggles.count <= maxToggles, fits(p.appName), fits(p.instanceId), p.sdk.allSatisfy(fits) else { return false }
        if p.longestName * 3 <= maxNameLength { return true }
        guard p.longestName <= maxNameLength else { return false }
        return p.toggles.allSatisfy { fits($0.name) } && p.variants.allSatisfy { fits($0.name) }
    }

    /// 413 for too many features, 400 naming the first name that is too long, nil when the
    /// post is within the limits. Lengths are in UTF-8 bytes.
    func refusal(for post: MetricsPost) -> Intake.Outcome? {
        if let b = post.bucket, b.toggles.count > maxToggles {
            return .refused(status: 413, body: ErrorBody.message(
                "bucket.toggles holds \(b.toggles.count) features; metrics-proxy accepts at most \(maxToggles) in one post"))
        }
        if let f = tooLong("/body/appName", post.appName) ?? tooLong("/body/instanceId", post.instanceId)
            ?? sdkFieldTooLong(post.sdk) {
            return .invalid(f)
        }
        for t in post.bucket?.toggles ?? [] {
            // The path is worded only for a name that is too long: building it for every name
            // was half the cost of reading a post with the full decoder.
            func path() -> String { "/body/bucket/toggles/\(pointerSegment(t.name))" }
            if let f = tooLong(path(), t.name) { return .invalid(f) }
            for v in t.variants {
                if let f = tooLong("\(path())/variants/\(pointerSegment(v.name))", v.name) { return .invalid(f) }
            }
        }
        return nil
    }

    /// Drops the impact metrics whose name, or a label name or value, is longer than
    /// `maxNameLength` (each alone: the rest of the post stands).
    func trim(_ impact: inout ImpactMetrics) {
        let before = impact.metrics.count
        impact.metrics.removeAll { m in
            m.name.utf8.count > impactNameLength
                || m.samples.contains { $0.labels.contains { $0.key.utf8.count > impactNameLength || $0.value.utf8.count > impactNameLength } }
        }
        impact.drop(.tooLong, before - impact.metrics.count)
    }

    func refusal(for r: Registration) -> Intake.Outcome? {
        if let f = tooLong("/body/appName", r.appName) ?? tooLong("/body/instanceId", r.instanceId) ?? sdkFieldTooLong(r.sdk) {
            return .invalid(f)
        }
        return nil
    }

    /// As for an SDK post: `metrics[]` counts as the toggles, and every name the window keeps
    /// is measured.
    func refusal(for b: BulkPost) -> Intake.Outcome? {
        if b.metrics.count > maxToggles {
            return .refused(status: 413, body: ErrorBody.message(
                "metrics holds \(b.metrics.count) entries; metrics-proxy accepts at most \(maxToggles) in one post"))
        }
        for (i, a) in b.applications.enumerated() {
            let path = "/body/applications/\(i)"
            if let f = tooLong("\(path)/appName", a.appName) ?? tooLong("\(path)/instanceId", a.instanceId)
                ?? tooLong("\(path)/environment", a.environment) ?? sdkFieldTooLong(a.sdk, under: path) {
                return .invalid(f)
            }
        }
        for (i, e) in b.metrics.enumerated() {
            func path() -> String { "/body/metrics/\(i)" }
            if let f = tooLong("\(path())/featureName", e.featureName) ?? tooLong("\(path())/appName", e.appName) {
                return .invalid(f)
            }
            for v in e.variants {
                if let f = tooLong("\(path())/variants/\(pointerSegment(v.name))", v.name) { return .invalid(f) }
            }
        }
        return nil
    }

    private func sdkFieldTooLong(_ sdk: SDKMetadata, under path: String = "/body") -> ValidationFailure? {
        for field in SDKField.all {
            if let value = sdk[field], let f = tooLong("\(path)/\(field.name)", value) { return f }
        }
        return nil
    }

    private func tooLong(_ path: @autoclosure () -> String, _ value: String) -> ValidationFailure? {
        let n = value.utf8.count
        guard n > maxNameLength else { return nil }
        return .invalid(path(), "must be at most \(maxNameLength) bytes long in metrics-proxy", sent: "a string of \(n) bytes")
    }
}
