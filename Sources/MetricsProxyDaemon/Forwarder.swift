import CLibevent
import MetricsProxyCore

/// Carries batches from a closed window to the upstream: each is written to the spool first,
/// then sent from there as the outbox decides (oldest first per token, bounded in flight and
/// paced), and deleted from the spool only after a 2xx. Logs one line per upstream state
/// change, not one per retry.
final class Forwarder {
    private(set) var outbox: Outbox
    let spool: Spool
    private var client: UpstreamClient
    private let log: Logger
    /// This proxy's id, sent with every batch (`ProxyIdentity`).
    var proxyInstance = ""
    private var gzip: Bool
    private var wake: LoopEvent!
    private var spoolRetry: LoopEvent!
    /// Per token: the last failure logged, so a run of the same failure logs once.
    private var lastProblem: [String: String] = [:]
    private var spoolProblem: String?
    /// Called whenever nothing is waiting and nothing is in flight.
    var onDrained: (() -> Void)?
    /// Called when batches held only in memory may have reached the spool or the upstream.
    var onProgress: (() -> Void)?
    /// Batches delivered since start, for the exit log (the rest is counted in Telemetry).
    private(set) var delivered = 0

    private let telemetry: Telemetry

    init(loop: EventLoop, client: UpstreamClient, spool: Spool, config: Config, log: Logger, telemetry: Telemetry) {
        self.telemetry = telemetry
        let spacing = Self.spacing(config.spool.replayRate)
        outbox = Outbox(policy: RetryPolicy(config.retry), maxBytes: Daemon.memoryOutboxMaxBytes,
                        maxInFlight: config.upstream.maxInFlight, minSpacingMillis: spacing)
        self.spool = spool
        self.client = client
        self.log = log
        gzip = config.upstream.gzip
        wake = LoopEvent(loop: loop) { [unowned self] in self.pump() }
        spoolRetry = LoopEvent(loop: loop) { [unowned self] in self.retrySpooling() }
    }

    var isIdle: Bool { outbox.isEmpty && outbox.inFlight == 0 }

    /// Applies a reloaded configuration; requests in flight finish on the old client.
    func update(_ config: Config, client: UpstreamClient) {
        self.client = client
        gzip = config.upstream.gzip
        outbox.policy = RetryPolicy(config.retry)
        outbox.maxInFlight = config.upstream.maxInFlight
        outbox.minSpacingMillis = Self.spacing(config.spool.replayRate)
        spool.maxSize = config.spool.maxSize
        spool.maxAgeMillis = config.spool.maxAge.milliseconds
        applyCaps()
        pump()
    }

    static func spacing(_ rate: Double) -> Int64 { rate > 0 ? Int64(1000 / rate) : 0 }

    /// Indexes what an earlier run left in the spool.
    func openSpool() throws(StartupError) {
        let aside: [(name: String, reason: String)]
        do { aside = try spool.open() } catch {
            throw StartupError("spool \(spool.dir) is not usable: \(error)")
        }
        for (name, reason) in aside {
            telemetry.metrics.batchesDropped["corrupt", default: 0] += 1
            log.error("spool file set aside", [("file", name), ("reason", reason), ("moved_to", "\(spool.dir)/corrupt")])
        }
    }

    /// Queues what the spool holds (after the journal's replay has taken out a window spooled
    /// only in part); it is sent before anything new.
    func queueSpooled() {
        let found = spool.entries.map {
            var b = Batch(id: $0.id, token: $0.token, path: $0.path, body: [], created: $0.created, entries: $0.entries)
            b.spooled = true
            return b
        }
        _ = outbox.add(found)
        if !found.isEmpty {
            log.info("spool replay", [("batches", "\(found.count)"), ("bytes", "\(spool.bytes)")])
        }
        applyCaps()
    }

    func enqueue(_ batches: [Batch]) {
        let kept = batches.map(spoolOrKeep)
        for b in outbox.add(kept) {
            telemetry.metrics.batchesDropped["memory_cap", default: 0] += 1
            log.error("batch dropped", [("reason", "memory cap while the spool is failing"), ("batch", b.id),
                                        ("token", Token.fingerprint(b.token)), ("bytes", "\(b.body.count)")])
        }
        applyCaps()
        pump()
    }

    /// Writes a batch to the spool; if the disk fails, keeps it in memory and tries again later.
    private func spoolOrKeep(_ batch: Batch) -> Batch {
        do {
            try spool.store(batch)
            spoolRecovered()
            var b = batch
            b.spooled = true
            b.body = []
            return b
        } catch {
            spoolFailed(error, batch: batch.id)
            return batch
        }
    }

    private func retrySpooling() {
        for b in outbox.unspooled {
            do {
                try spool.store(b)
                outbox.markSpooled(b.id, token: b.token)
                spoolRecovered()
            } catch {
                spoolFailed(error, batch: b.id)
                onProgress?()
                return
            }
        }
        applyCaps()
        onProgress?()
    }

    private func spoolFailed(_ error: FSError, batch: String) {
        if spoolProblem != error.description {
            spoolProblem = error.description
            log.error("spool write failed; keeping batches in memory and retrying", [("batch", batch), ("error", error.description)])
        }
        if !spoolRetry.isPending { spoolRetry.schedule(afterMillis: 1000) }
    }

    private func spoolRecovered() {
        guard spoolProblem != nil else { return }
        spoolProblem = nil
        log.info("spool writes recovered")
    }

    private func applyCaps() {
        for (e, reason) in spool.enforceCaps(now: nowMillis(), busy: outbox.inFlightIds) {
            outbox.remove(e.id, token: e.token)
            telemetry.metrics.batchesDropped[reason.rawValue, default: 0] += 1
            log.error("batch dropped", [("reason", reason.rawValue), ("batch", e.id), ("token", Token.fingerprint(e.token)),
                                        ("bytes", "\(e.fileBytes)")])
        }
    }

    /// Sends whatever is ready now and arms the timer for the next send.
    func pump() {
        for batch in outbox.takeReady(now: nowMillis()) { send(batch) }
        wake.cancel()
        if let next = outbox.nextWake() { wake.schedule(afterMillis: next - nowMillis()) }
        if isIdle { onDrained?() }
    }

    private func send(_ queued: Batch) {
        var batch = queued
        if batch.spooled {
            do throws(Spool.LoadFailure) {
                batch.body = try spool.load(batch.id).body
            } catch {
                switch error {
                case .corrupt(let why):
                            telemetry.metrics.batchesDropped["corrupt", default: 0] += 1
                    log.error("spool file set aside", [("file", "\(batch.id).batch"), ("reason", why)])
                    outbox.abandon(batch)
                case .io(let e):
                    finished(batch, .noAnswer("spool read failed: \(e)"), micros: nil)
                }
                return
            }
        }
        var headers = [("Content-Type", "application/json"), ("Authorization", batch.token),
                       // The batch id lets an operator match upstream requests to the proxy's log.
                       (ProxyIdentity.batchHeader, batch.id),
                       // Lets a metrics-proxy upstream refuse the batch if it is this proxy.
                       (ProxyIdentity.header, proxyInstance)]
        var body = batch.body
        if gzip {
            body = BodyInflater.gzip(body)
            headers.append(("Content-Encoding", "gzip"))
        }
        let started = monotonicMicros()
        client.send(.init(path: batch.path, headers: headers, body: body)) { [weak self] answer in
            self?.finished(batch, answer, micros: monotonicMicros() - started)
        }
    }

    /// `batch` carries its body (read for sending), which a split needs. `micros`: how long the
    /// request took; nil when none was sent.
    private func finished(_ batch: Batch, _ answer: UpstreamAnswer, micros: Int64?) {
        let disposition = outbox.complete(batch, answer: answer, now: nowMillis(), random: Double.random(in: 0..<1))
        let token = Token.fingerprint(batch.token)
        var fields = [("batch", batch.id), ("token", token), ("path", batch.path), ("attempt", "\(batch.attempts)"),
                      ("ms", "\((micros ?? 0) / 1000)")]
        switch answer {
        case .status(let code, _):
            fields.append(("status", "\(code)"))
            telemetry.metrics.upstreamRequests[String(code), default: 0] += 1
        case .noAnswer(let why):
            fields.append(("error", why))
            telemetry.metrics.upstreamRequests["error", default: 0] += 1
        }
        // Every request sent is observed, also one answered within a millisecond (the count
        // once missed those, and fell behind metrics_proxy_upstream_requests_total).
        if let micros { telemetry.metrics.upstreamSeconds.observe(Double(micros) / 1_000_000) }
        switch disposition {
        case .delivered:
            delivered += 1
            telemetry.metrics.lastUpstreamSuccess = Double(nowMillis()) / 1000
            if batch.spooled { removeFromSpool(batch.id) }
            if lastProblem.removeValue(forKey: batch.token) != nil { log.info("upstream recovered", fields) }
            log.debug("batch delivered", fields + [("entries", "\(batch.entries)"), ("bytes", "\(batch.body.count)")])
        case .reject:
            if let (flags, impact) = BatchSplitter.separateImpact(batch) {
                // The flag counts must not pay for impact metrics the upstream refused: they
                // are sent again alone, the impact metrics set aside.
                log.warn("upstream refused a batch holding impact metrics; sending its flag counts alone", fields)
                _ = outbox.add([spoolOrKeep(flags)])
                if batch.spooled { removeFromSpool(batch.id) }
                reject(spoolOrKeep(impact), fields + [("part", "impact metrics")])
                break
            }
            reject(batch, fields)
        case .split:
            let halves = BatchSplitter.split(batch)
            guard halves.count == 2 else {
                outbox.remove(batch.id, token: batch.token)
                reject(batch, fields + [("note", "a single entry is too large for the upstream")])
                break
            }
            log.warn("batch too large for upstream, split in two", fields)
            outbox.replace(batch.id, token: batch.token, with: halves.map(spoolOrKeep))
            if batch.spooled { removeFromSpool(batch.id) }
        case .retry(let after), .hold(let after):
            log.debug("batch attempt failed", fields + [("retry_in_ms", "\(after.milliseconds)")])
            let problem = fields.last!.1
            if lastProblem[batch.token] != problem {
                lastProblem[batch.token] = problem
                if case .hold = disposition {
                    log.error("upstream refuses the token; batches are kept, check the token and upstream.url",
                              fields + [("retry_in_ms", "\(after.milliseconds)")])
                } else {
                    log.warn("upstream unavailable, will retry", fields + [("retry_in_ms", "\(after.milliseconds)")])
                }
            }
        }
        if !batch.spooled { onProgress?() }
        pump()
    }

    private func reject(_ batch: Batch, _ fields: [(String, String)]) {
        telemetry.metrics.batchesDropped["rejected", default: 0] += 1
        if batch.spooled {
            do { try spool.reject(batch.id) } catch {
                log.error("cannot move a rejected batch aside", [("batch", batch.id), ("error", error.description)])
            }
        }
        log.error("batch rejected by upstream", fields + [("moved_to", "\(spool.dir)/rejected")])
    }

    private func removeFromSpool(_ id: String) {
        do { try spool.remove(id) } catch {
            // The file stays: a restart would send it again (a duplicate upstream).
            log.error("cannot delete a delivered batch from the spool", [("batch", id), ("error", error.description)])
        }
    }
}
