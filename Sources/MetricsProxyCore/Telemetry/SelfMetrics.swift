/// The proxy's own counters, rendered as Prometheus text (format 0.0.4) for `GET /metrics`.
public struct SelfMetrics: Sendable {
    /// Answers to metric posts, by status code; 202s counted apart (`accepted`), as every
    /// post would otherwise hash its status into the dictionary.
    public var posts: [Int: Int] = [:]
    public var accepted = 0
    public var postBytes = 0
    public var windowsClosed = 0
    /// Upstream requests by status code, or "error" when there was no answer.
    public var upstreamRequests: [String: Int] = [:]
    public var upstreamSeconds = Histogram(bounds: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])
    /// Batches given up on, by reason.
    public var batchesDropped: [String: Int] = [:]
    public var lastUpstreamSuccess: Double?
    public var configReloads: [String: Int] = ["success": 0, "failure": 0]
    /// Times accepting paused: `max_connections` reached, or no file descriptors left.
    public var acceptPauses: [String: Int] = ["max_connections": 0, "fd_limit": 0]
    /// Requests not received whole within `[listen] request_timeout`.
    public var requestsTimedOut = 0
    /// Connections the proxy closed to keep others served, by reason: `idle` and `slow` at
    /// `max_connections`, `min_rate` for a request below `[listen] min_rate`.
    public var connectionsShed: [String: Int] = ["idle": 0, "slow": 0, "min_rate": 0]
    /// Journal records merged again at start, and unreadable tails dropped (a post whose
    /// answer never left, or damage).
    public var journalReplayed = 0
    public var journalTorn = 0
    /// Journal records the replay could not merge again (a limit lowered between two runs):
    /// acknowledged once, so never dropped without a count.
    public var journalReplayRefused = 0

    /// One metric post answered with `status`, its body `bytes` long.
    public mutating func notePost(bytes: Int, status: Int) {
        postBytes += bytes
        if status == 202 { accepted += 1 } else { posts[status, default: 0] += 1 }
    }

    public static let dropReasons = ["max_size", "max_age", "memory_cap", "rejected", "corrupt"]

    public init() {}

    /// Values read from the running state when scraped.
    public struct Gauges: Sendable {
        public var windowKeys: Int
        public var spoolBatches: Int
        public var spoolBytes: Int
        public var spoolOldestAgeSeconds: Double
        public var version: String
        public var connections: Int
        /// SDK instances the registry remembers across windows.
        public var instancesRemembered: Int
        /// Impact series in the open window (histogram layouts kept apart count once each).
        public var impactSeries: Int
        /// Impact metrics of accepted posts dropped alone, by reason (`Ingest.impactDropped`).
        public var impactDropped: [ImpactDrop: Int]
        /// Batches another proxy resent that were answered 202 again, not merged twice.
        public var duplicateBatches = 0
        /// What accepted bulk posts carried that goes no further, by reason (`Ingest.bulkDropped`).
        public var bulkDropped: [String: Int] = [:]
        /// The open window's journal: bytes and records; appends that failed (answered 503),
        /// checkpoints written; the fsync thread's latencies. Nil when the journal is off.
        public var journal: Journal?

        public struct Journal: Sendable {
            public var bytes: Int
            public var records: Int
            public var appendFailures: Int
            public var checkpoints: Int
            public var fsyncSeconds: Histogram

            public init(bytes: Int, records: Int, appendFailures: Int, checkpoints: Int, fsyncSeconds: Histogram) {
                self.bytes = bytes
                self.records = records
                self.appendFailures = appendFailures
                self.checkpoints = checkpoints
                self.fsyncSeconds = fsyncSeconds
            }
        }

        public init(windowKeys: Int, spoolBatches: Int, spoolBytes: Int, spoolOldestAgeSeconds: Double, version: String,
                    connections: Int = 0, instancesRemembered: Int = 0, impactSeries: Int = 0, impactDropped: [ImpactDrop: Int] = [:]) {
            self.connections = connections
            self.impactSeries = impactSeries
            self.impactDropped = impactDropped
            self.instancesRemembered = instancesRemembered
            self.windowKeys = windowKeys
            self.spoolBatches = spoolBatches
            self.spoolBytes = spoolBytes
            self.spoolOldestAgeSeconds = spoolOldestAgeSeconds
            self.version = version
        }
    }

    public func render(_ g: Gauges) -> String {
        var out = ""
        func family(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        func sample(_ name: String, _ value: Double) { sample(name, [], value) }
        func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
            let l = labels.isEmpty ? "" : "{" + labels.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",") + "}"
            out += "\(name)\(l) \(format(value))\n"
        }
        family("metrics_proxy_posts_total", "counter", "Metric posts answered, by HTTP status code.")
        for code in Set(posts.keys).union([202, 400]).sorted() {
            let count = (posts[code] ?? 0) + (code == 202 ? accepted : 0)
            sample("metrics_proxy_posts_total", [("code", String(code))], Double(count))
        }
        family("metrics_proxy_impact_metrics_dropped_total", "counter",
               "Impact metrics of accepted posts dropped alone (the rest of the post kept), by reason.")
        for reason in ImpactDrop.allCases.sorted(by: { $0.rawValue < $1.rawValue }) {
            sample("metrics_proxy_impact_metrics_dropped_total", [("reason", reason.rawValue)], Double(g.impactDropped[reason] ?? 0))
        }
        family("metrics_proxy_impact_series", "gauge", "Impact metric series in the open window.")
        sample("metrics_proxy_impact_series", Double(g.impactSeries))
        family("metrics_proxy_duplicate_batches_total", "counter",
               "Batches another metrics-proxy resent (its answer lost) that were answered 202 again without a second merge.")
        sample("metrics_proxy_duplicate_batches_total", Double(g.duplicateBatches))
        family("metrics_proxy_bulk_dropped_total", "counter",
               "What accepted bulk posts carried that goes no further: entries for another environment than the token's (the server drops them too), seenTokens (not forwarded).")
        for reason in ["environment", "seen_tokens"] {
            sample("metrics_proxy_bulk_dropped_total", [("reason", reason)], Double(g.bulkDropped[reason] ?? 0))
        }
        family("metrics_proxy_post_bytes_total", "counter", "Bytes of metric post bodies received.")
        sample("metrics_proxy_post_bytes_total", Double(postBytes))
        family("metrics_proxy_connections", "gauge", "Client connections open.")
        sample("metrics_proxy_connections", Double(g.connections))
        family("metrics_proxy_accept_pauses_total", "counter", "Times accepting paused, by reason (max_connections, fd_limit).")
        for reason in acceptPauses.keys.sorted() { sample("metrics_proxy_accept_pauses_total", [("reason", reason)], Double(acceptPauses[reason]!)) }
        family("metrics_proxy_requests_timed_out_total", "counter", "Requests not received whole within listen.request_timeout (408).")
        sample("metrics_proxy_requests_timed_out_total", Double(requestsTimedOut))
        family("metrics_proxy_connections_shed_total", "counter",
               "Connections closed to keep others served: idle and slow at max_connections, min_rate below listen.min_rate.")
        for reason in connectionsShed.keys.sorted() { sample("metrics_proxy_connections_shed_total", [("reason", reason)], Double(connectionsShed[reason]!)) }
        family("metrics_proxy_window_keys", "gauge", "Distinct merge keys in the open window.")
        sample("metrics_proxy_window_keys", Double(g.windowKeys))
        family("metrics_proxy_instances_remembered", "gauge", "SDK instances remembered across windows ([limits] max_instances).")
        sample("metrics_proxy_instances_remembered", Double(g.instancesRemembered))
        family("metrics_proxy_windows_closed_total", "counter", "Windows closed and handed to the spool.")
        sample("metrics_proxy_windows_closed_total", Double(windowsClosed))
        family("metrics_proxy_upstream_requests_total", "counter", "Upstream metric requests, by status code (error: no answer).")
        for code in upstreamRequests.keys.sorted() { sample("metrics_proxy_upstream_requests_total", [("code", code)], Double(upstreamRequests[code]!)) }
        func histogram(_ name: String, _ help: String, _ h: Histogram) {
            family(name, "histogram", help)
            var cumulative = 0
            for (i, bound) in h.bounds.enumerated() {
                cumulative += h.counts[i]
                sample("\(name)_bucket", [("le", format(bound))], Double(cumulative))
            }
            sample("\(name)_bucket", [("le", "+Inf")], Double(h.count))
            sample("\(name)_sum", h.sum)
            sample("\(name)_count", Double(h.count))
        }
        histogram("metrics_proxy_upstream_request_seconds", "Duration of upstream metric requests.", upstreamSeconds)
        if let j = g.journal {
            family("metrics_proxy_journal_bytes", "gauge", "Bytes of journal holding the open window's posts.")
            sample("metrics_proxy_journal_bytes", Double(j.bytes))
            family("metrics_proxy_journal_records", "gauge", "Posts journalled in the open window (a checkpoint counts as its records).")
            sample("metrics_proxy_journal_records", Double(j.records))
            family("metrics_proxy_journal_replayed_records_total", "counter", "Journal records merged again at start.")
            sample("metrics_proxy_journal_replayed_records_total", Double(journalReplayed))
            family("metrics_proxy_journal_torn_records_total", "counter",
                   "Unreadable journal tails dropped at start (a post whose answer never left, or damage).")
            sample("metrics_proxy_journal_torn_records_total", Double(journalTorn))
            family("metrics_proxy_journal_replay_refused_total", "counter",
                   "Journal records the replay at start could not merge again (a limit lowered since they were taken).")
            sample("metrics_proxy_journal_replay_refused_total", Double(journalReplayRefused))
            family("metrics_proxy_journal_append_failures_total", "counter", "Posts answered 503 because the journal could not take them.")
            sample("metrics_proxy_journal_append_failures_total", Double(j.appendFailures))
            family("metrics_proxy_journal_checkpoints_total", "counter", "Open windows written whole to restart the journal ([journal] max_size).")
            sample("metrics_proxy_journal_checkpoints_total", Double(j.checkpoints))
            histogram("metrics_proxy_journal_fsync_seconds", "Duration of the journal's fsync, off the event loop.", j.fsyncSeconds)
        }
        family("metrics_proxy_spool_batches", "gauge", "Batches waiting in the spool.")
        sample("metrics_proxy_spool_batches", Double(g.spoolBatches))
        family("metrics_proxy_spool_bytes", "gauge", "Bytes of the batches waiting in the spool.")
        sample("metrics_proxy_spool_bytes", Double(g.spoolBytes))
        family("metrics_proxy_spool_oldest_age_seconds", "gauge", "Age of the oldest batch in the spool (0 when empty).")
        sample("metrics_proxy_spool_oldest_age_seconds", g.spoolOldestAgeSeconds)
        family("metrics_proxy_batches_dropped_total", "counter", "Batches given up on, by reason.")
        for r in Set(batchesDropped.keys).union(Self.dropReasons).sorted() {
            sample("metrics_proxy_batches_dropped_total", [("reason", r)], Double(batchesDropped[r] ?? 0))
        }
        family("metrics_proxy_last_upstream_success_timestamp_seconds", "gauge", "When the upstream last took a batch (0: never).")
        sample("metrics_proxy_last_upstream_success_timestamp_seconds", lastUpstreamSuccess ?? 0)
        family("metrics_proxy_config_reloads_total", "counter", "SIGHUP reloads of the configuration, by result.")
        for r in configReloads.keys.sorted() { sample("metrics_proxy_config_reloads_total", [("result", r)], Double(configReloads[r]!)) }
        family("metrics_proxy_build_info", "gauge", "The running version.")
        sample("metrics_proxy_build_info", [("version", g.version)], 1)
        return out
    }

    private func escape(_ s: String) -> String {
        var o = ""
        for c in s {
            switch c {
            case "\\": o += "\\\\"
            case "\"": o += "\\\""
            case "\n": o += "\\n"
            default: o.append(c)
            }
        }
        return o
    }

    private func format(_ v: Double) -> String {
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return String(v)
    }
}

public struct Histogram: Sendable {
    public let bounds: [Double]
    public private(set) var counts: [Int]
    public private(set) var sum = 0.0
    public private(set) var count = 0

    public init(bounds: [Double]) {
        self.bounds = bounds
        counts = Array(repeating: 0, count: bounds.count)
    }

    public mutating func observe(_ v: Double) {
        if let i = bounds.firstIndex(where: { v <= $0 }) { counts[i] += 1 }
        sum += v
        count += 1
    }
}
