import Glibc

/// The one way in: every metrics post and registration reaches the open window through
/// `accept`, which owns every rule of ingest — the body checks and decoders (`Intake`), the
/// fast path and its scratch space, `[limits]` and the key cap, the fill of SDK fields from
/// request headers, and both merges. The daemon reads the headers and the body, calls it,
/// and writes the answer.
public struct Ingest {
    public enum Kind: Sendable {
        case metrics, register
        /// `POST /api/client/metrics/bulk`: another metrics-proxy's or Unleash Edge's window.
        case bulk
    }

    /// The request headers ingest decides on, read once per request by the caller.
    public struct Headers: Sendable, Equatable {
        public var contentType: String?
        public var contentEncoding: String?
        public var authorization: String?
        /// `unleash-interval`: the SDK's metrics interval, kept with its instance.
        public var interval: String?
        /// `X-Metrics-Proxy-Instance`: the metrics-proxy that forwarded this request, if one did.
        public var proxyInstance: String?
        /// `X-Metrics-Proxy-Batch`: that proxy's id for the batch (`RecentBatches`).
        public var batch: String?

        public init(contentType: String? = nil, contentEncoding: String? = nil, authorization: String? = nil,
                    interval: String? = nil, proxyInstance: String? = nil, batch: String? = nil) {
            self.contentType = contentType
            self.contentEncoding = contentEncoding
            self.authorization = authorization
            self.interval = interval
            self.proxyInstance = proxyInstance
            self.batch = batch
        }
    }

    public enum Answer: Sendable, Equatable {
        /// 202: the post is in the window.
        case accepted
        /// An answer with a JSON body.
        case refused(status: Int, body: [UInt8])
        /// 400; the body needs a fresh id.
        case invalid(ValidationFailure)
        /// 503: the window holds `[limits] max_keys` and the post would add to them. The SDK
        /// keeps its counts and retries once the window has closed.
        case windowFull(body: [UInt8])
        /// 508: the post is this proxy's own traffic come back (its upstream leads to itself);
        /// merging it would count it again at every turn of the loop.
        case loop(body: [UInt8])
        /// 503: the post could not be journalled (a full or failing disk), so it is not
        /// acknowledged; the SDK keeps its counts and retries.
        case unavailable(body: [UInt8])

        public var status: Int {
            switch self {
            case .accepted: return 202
            case .refused(let status, _): return status
            case .invalid: return 400
            case .windowFull, .unavailable: return 503
            case .loop: return 508
            }
        }
    }

    var intake: Intake
    var maxKeys: Int
    /// This proxy's id in `connectVia` and `X-Metrics-Proxy-Instance` (the daemon's); a post
    /// that carries it has come back to the proxy that sent it. nil: not checked (replay).
    public var instanceId: String?
    /// Batches taken from other proxies, so that one resent is not merged twice.
    public internal(set) var recentBatches = RecentBatches()
    /// Resent batches answered 202 again without a second merge.
    public private(set) var duplicateBatches = 0
    /// What accepted bulk posts carried that goes no further, by reason: `environment` (entries
    /// for another environment than the token's, which the server drops too), `seen_tokens`
    /// (Edge's list of tokens seen, not forwarded).
    public private(set) var bulkDropped: [String: Int] = [:]
    /// The fast path's scratch space, reused for every post (its lists are classes: a copy of
    /// `Ingest` shares them, so one `Ingest` serves one loop). Nil when the fast path is off.
    private var scratch: FastPost?

    /// `fastPath: false` reads every post with the full decoder: the decoder fuzzer runs
    /// both and checks they agree.
    public init(_ config: Config, fastPath: Bool = true) {
        intake = Intake(maxBody: config.listen.maxBody, upstreamToken: config.upstream.token, limits: PostLimits(config))
        maxKeys = config.limits.maxKeys
        scratch = fastPath ? FastPost() : nil
    }

    public var fastPath: Bool { scratch != nil }

    /// Impact metrics of accepted posts dropped alone, by reason (the rest of each post was
    /// kept): counted here and on /metrics, never lost without a trace.
    public private(set) var impactDropped: [ImpactDrop: Int] = [:]
    /// The last journal append that failed (its post was answered 503), for the log.
    public private(set) var journalFailure: FSError?
    public private(set) var journalFailures = 0

    /// Takes a reloaded configuration, keeping the scratch space and the counts.
    public mutating func reconfigure(_ config: Config) {
        // `instanceId` stays: it is the daemon's, not the file's.
        intake = Ingest(config).intake
        maxKeys = config.limits.maxKeys
    }

    /// Decides `body` (as received: it may be gzip or deflate), and merges it into `window`
    /// when it is accepted; nothing else touches the window. `header` looks up any other
    /// request header, and is asked only when an SDK field is missing from the body. With a
    /// `journal`, an accepted post is appended to it before it is merged; if the append fails
    /// the post is answered `.unavailable` and the window is untouched.
    public mutating func accept(_ kind: Kind, headers: Headers, body: UnsafeBufferPointer<UInt8>, into window: inout Window,
                                now: Int64, journal: Journal? = nil, header: (String) -> String?) -> Answer {
        if let instanceId, headers.proxyInstance == instanceId { return loop(via: "its X-Metrics-Proxy-Instance header") }
        guard let batch = RecentBatches.key(headers) else {
            return decide(kind, headers: headers, body: body, into: &window, now: now, journal: journal, batch: nil, header: header)
        }
        if recentBatches.contains(batch) {
            duplicateBatches += 1
            return .accepted
        }
        let answer = decide(kind, headers: headers, body: body, into: &window, now: now, journal: journal, batch: batch, header: header)
        if answer == .accepted { recentBatches.insert(batch) }
        return answer
    }

    /// `accept` once the request is known to be new: checks, journal, merge.
    private mutating func decide(_ kind: Kind, headers: Headers, body: UnsafeBufferPointer<UInt8>, into window: inout Window,
                                 now: Int64, journal: Journal?, batch: String?, header: (String) -> String?) -> Answer {
        let interval = headers.interval.flatMap(Double.init)
        var noFastPath: FastPost? = nil // registrations are read by the full decoder
        let outcome = kind == .metrics ? intake.evaluate(kind, headers, body: body, fast: &scratch)
            : intake.evaluate(kind, headers, body: body, fast: &noFastPath)
        switch outcome {
        case .fastMetrics(let token):
            var impact = scratch!.impact ?? ImpactMetrics()
            if !impact.metrics.isEmpty { intake.limits.trim(&impact) }
            if window.wouldExceed(maxKeys, fast: scratch!, body: body, token: token, impact: impact.metrics) { return windowFull }
            // The common post goes to the journal as its counts and names, not its body.
            if let journal, let failed = recordCompact(token, headers, body, now, journal, batch, header) { return failed }
            // Merged now, while the body the post was read from is still valid.
            let dropped = window.merge(scratch!, body: body, token: token, interval: interval, now: now, header: header,
                                       impact: impact.metrics)
            if !impact.isEmpty {
                impactDropped.merge(impact.dropped, uniquingKeysWith: +)
                impactDropped.merge(dropped, uniquingKeysWith: +)
            }
            return .accepted
        case .metrics(var post, let token):
            intake.limits.trim(&post.impact)
            if window.wouldExceed(maxKeys, post: post, token: token) { return windowFull }
            if let journal, let failed = record(kind, token, headers, body, now, journal, batch, header) { return failed }
            post.sdk.fillFromHeaders(header)
            let dropped = window.merge(post, token: token, interval: interval, now: now)
            impactDropped.merge(post.impact.dropped, uniquingKeysWith: +)
            impactDropped.merge(dropped, uniquingKeysWith: +)
            return .accepted
        case .register(var r, let token):
            if window.wouldAddInstance(beyond: maxKeys, token: token, appName: r.appName, instanceId: r.instanceId) {
                return windowFull
            }
            if let journal, let failed = record(kind, token, headers, body, now, journal, batch, header) { return failed }
            r.sdk.fillFromHeaders(header)
            window.noteInstance(token: token, appName: r.appName, instanceId: r.instanceId, sdk: r.sdk, interval: r.interval,
                                started: r.started, strategies: r.strategies, now: now)
            return .accepted
        case .bulk(var post, let token):
            if let instanceId, post.applications.contains(where: { $0.connectVia.contains(BulkPost.Via(appName: ProxyName.appName, instanceId: instanceId)) }) {
                return loop(via: "connectVia of its applications")
            }
            intake.limits.trim(&post.impact)
            let environment = Token.environment(of: token)
            if window.wouldExceed(maxKeys, bulk: post, token: token, environment: environment, now: now) { return windowFull }
            if let journal, let failed = record(kind, token, headers, body, now, journal, batch, header) { return failed }
            let dropped = window.merge(post, token: token, environment: environment, now: now)
            if let environment {
                bulkDropped["environment", default: 0] += post.metrics.reduce(0) { $0 + ($1.environment == environment ? 0 : 1) }
            }
            bulkDropped["seen_tokens", default: 0] += post.seenTokens
            impactDropped.merge(post.impact.dropped, uniquingKeysWith: +)
            impactDropped.merge(dropped, uniquingKeysWith: +)
            return .accepted
        case .refused(let status, let body): return .refused(status: status, body: body)
        case .invalid(let failure): return .invalid(failure)
        }
    }

    private func loop(via: String) -> Answer { .loop(body: Self.loopBody(instanceId: instanceId ?? "", via: via)) }

    /// The 508's body: the proxy met its own traffic, found by `via`.
    public static func loopBody(instanceId: String, via: String) -> [UInt8] {
        ErrorBody.message("metrics-proxy \(instanceId) received its own traffic back (\(via) names it): "
            + "its upstream leads back to itself; point [upstream] url at another proxy or at Unleash")
    }

    /// `accept` on a body held in an array (tests, fuzzers).
    public mutating func accept(_ kind: Kind, headers: Headers, body: [UInt8], into window: inout Window, now: Int64,
                                journal: Journal? = nil, header: (String) -> String? = { _ in nil }) -> Answer {
        body.withUnsafeBufferPointer { accept(kind, headers: headers, body: $0, into: &window, now: now, journal: journal, header: header) }
    }

    /// Appends a post the fast path read, without impact metrics, in the journal's compact form.
    private mutating func recordCompact(_ token: String, _ headers: Headers, _ body: UnsafeBufferPointer<UInt8>, _ now: Int64,
                                        _ journal: Journal, _ batch: String?, _ header: (String) -> String?) -> Answer? {
        // Only the fields the body leaves out can be filled from headers.
        var sdkHeaders = Self.fallbackHeaders(header) { scratch!.sdk[$0.index] == nil }
        // A replay takes the batch back among the recent ones.
        if let batch { sdkHeaders.append((RecentBatches.journalHeader, batch)) }
        do {
            try journal.appendCompact(scratch!, body: body, token: token, now: now, interval: headers.interval, sdkHeaders: sdkHeaders)
            return nil
        } catch {
            return journalFailed(error)
        }
    }

    /// The request headers that stand in for SDK fields (`SDKField.header`) the request
    /// carried, of the fields `wanted`: what a replay needs to fill them again.
    private static func fallbackHeaders(_ header: (String) -> String?, wanted: (SDKField) -> Bool) -> [(name: String, value: String)] {
        var out: [(name: String, value: String)] = []
        for f in SDKField.all where wanted(f) {
            if let h = f.header, let v = header(h) { out.append((h, v)) }
        }
        return out
    }

    private mutating func journalFailed(_ error: FSError) -> Answer {
        journalFailure = error
        journalFailures += 1
        return .unavailable(body: ErrorBody.message("metrics-proxy cannot journal this post (\(error.code == ENOSPC ? "disk full" : "disk error")); retry"))
    }

    /// Appends an accepted post to the journal: the body as received, the token it is filed
    /// under, and the headers ingest may read for it. Returns the answer if that failed.
    private mutating func record(_ kind: Kind, _ token: String, _ headers: Headers, _ body: UnsafeBufferPointer<UInt8>, _ now: Int64,
                                 _ journal: Journal, _ batch: String?, _ header: (String) -> String?) -> Answer? {
        // A bulk post's instances carry their own fields; the sender's headers are not theirs.
        var sdkHeaders = kind == .bulk ? [] : Self.fallbackHeaders(header) { _ in true }
        if let batch { sdkHeaders.append((RecentBatches.journalHeader, batch)) }
        do {
            try journal.append(kind: kind, now: now, token: token, headers: headers, sdkHeaders: sdkHeaders,
                               body: UnsafeRawBufferPointer(body))
            return nil
        } catch {
            return journalFailed(error)
        }
    }

    private var windowFull: Answer {
        .windowFull(body: ErrorBody.message("metrics-proxy holds \(maxKeys) distinct keys in this window; retry after it closes"))
    }
}
