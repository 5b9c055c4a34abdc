import CLibevent
import Glibc
import MetricsProxyCore

/// The running proxy: one loop, the listeners, the open window, the forwarder. Callbacks only
/// carry out what the core decides.
public final class Daemon {
    private var config: Config
    /// Where the configuration was read from, for SIGHUP.
    private let configPath: String
    private let log: Logger
    private let loop: EventLoop
    private var server: HTTPServer!
    private let forwarder: Forwarder
    private let reverseProxy: ReverseProxy
    private var router: Router
    /// The open window with its journal: the one way a post gets in.
    private let durable: DurableWindow
    private let syncer: JournalSyncer?
    private var retireFailuresLogged = 0
    private var builder: BatchBuilder
    private var client: UpstreamClient
    private var windowSequence: UInt64 = 0
    private var windowTimer: LoopEvent!
    private var drainTimer: LoopEvent!
    private var signals: [LoopEvent] = []
    private var shuttingDown = false
    private var postsInWindow = 0
    private var keyCapLogged = false
    private var loopLogged = false
    /// The spool's (and a journal elsewhere's) `.lock`, held until the process ends.
    private var locks: [Int32] = []
    /// This proxy's name in `connectVia` and `X-Metrics-Proxy-Instance` (`ProxyIdentity`).
    let instanceId: String
    /// Impact metrics dropped (all reasons) when the open window opened, and whether this
    /// window has logged a drop yet.
    private var impactDroppedAtOpen = 0
    private var impactLogged = false
    /// The journal problem last logged, so a failing disk logs once, not once per post.
    private var journalProblem: String?
    private let telemetry: Telemetry

    /// Batches the spool could not take wait in memory up to this many bytes.
    static let memoryOutboxMaxBytes = 64 << 20

    public init(config: Config, configPath: String, log: Logger) throws(StartupError) {
        self.config = config
        self.configPath = configPath
        self.log = log
        log.routeLibeventMessages()
        // Past a file size limit (ulimit -f) a write fails with EFBIG, answered 503, instead
        // of killing the process (the journal's first segment is written before the loop runs).
        signal(SIGXFSZ, SIG_IGN)
        telemetry = Telemetry()
        loop = try EventLoop()
        client = try UpstreamClient(loop: loop, config: config.upstream)
        let spool = Spool(dir: config.spool.dir, fs: PosixFileSystem(), maxSize: config.spool.maxSize,
                          maxAgeMillis: config.spool.maxAge.milliseconds)
        forwarder = Forwarder(loop: loop, client: client, spool: spool, config: config, log: log, telemetry: telemetry)
        reverseProxy = ReverseProxy(client: client, log: log, maxInFlight: config.listen.forwardMaxInFlight)
        router = Router(prefix: config.listen.pathPrefix, forward: config.listen.forward)
        instanceId = ProxyIdentity.instanceId(host: Self.hostName, spoolDir: config.spool.dir)
        forwarder.proxyInstance = instanceId
        reverseProxy.proxyInstance = instanceId
        builder = BatchBuilder(mode: config.upstream.mode, maxBody: config.upstream.maxBody, proxyInstance: instanceId)
        let journal = config.journalDir.map { Journal(dir: $0, fs: PosixFileSystem(), maxSize: config.journal.maxSize) }
        durable = DurableWindow(config: config, journal: journal, opened: nowMillis())
        durable.identify(as: instanceId)
        if let journal {
            let syncer = JournalSyncer(intervalMillis: config.journal.fsync?.milliseconds)
            let dir = journal.dir
            journal.onDescriptorChange = { syncer.track($0, dir: dir) }
            journal.retirer = syncer
            self.syncer = syncer
        } else {
            syncer = nil
        }
        server = try HTTPServer(loop: loop, config: config, log: log, telemetry: telemetry) { [unowned self] in self.handle($0) }
        reverseProxy.connections = server.guardian
        for hp in config.listen.tcp { try server.listenTCP(hp) }
        if let path = config.listen.unix { try server.listenUnix(path: path, mode: config.listen.unixMode) }
        // After the listeners: a port in use fails without touching the spool. Requests are
        // served only once the loop runs, after the spool has been scanned.
        // Before the spool is touched (its open removes leftover temporary files).
        locks.append(try DirectoryLock.acquire(config.spool.dir, what: "spool.dir"))
        if let dir = config.journalDir, !dir.hasPrefix(config.spool.dir + "/") {
            locks.append(try DirectoryLock.acquire(dir, what: "journal.dir"))
        }
        try forwarder.openSpool()
        // Before any request is served: the window the last run acknowledged comes back.
        try recoverJournal()
        forwarder.queueSpooled()
        syncer?.start()
        forwarder.onProgress = { [unowned self] in if !self.durable.unreleased.isEmpty { self.releaseJournal() } }
        windowTimer = LoopEvent(loop: loop) { [unowned self] in self.windowElapsed() }
        drainTimer = LoopEvent(loop: loop) { [unowned self] in self.drainDeadline() }
        for sig in [SIGTERM, SIGINT] {
            signals.append(LoopEvent(loop: loop, signal: sig) { [unowned self] in self.shutdown(signal: sig) })
        }
        signals.append(LoopEvent(loop: loop, signal: SIGHUP) { [unowned self] in self.reload() })
        if config.upstream.url.scheme == .https && !config.upstream.tlsVerify {
            log.warn("TLS verification is OFF for the upstream: anyone on the path can read tokens and metrics",
                     [("upstream", config.upstream.url.description)])
        }
    }

    /// Serves until SIGTERM/SIGINT and a drain; returns the exit status.
    public func run() -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        // A window replayed from the journal closes when it would have without the restart,
        // so a proxy restarted more often than its window still forwards.
        let interval = config.window.interval.milliseconds
        windowTimer.schedule(afterMillis: max(0, min(interval, durable.window.opened + interval - nowMillis())))
        log.info("listening", [("addresses", server.addresses.joined(separator: ",")),
                               ("upstream", config.upstream.url.description), ("mode", config.upstream.mode.rawValue),
                               ("window", "\(config.window.interval.milliseconds)ms"), ("instance", instanceId),
                               ("version", Version.string)])
        forwarder.pump()
        loop.run()
        let unspooled = forwarder.outbox.unspooled.count
        if unspooled > 0 {
            log.error("exiting with batches neither delivered nor spooled; they are lost", [("batches", "\(unspooled)")])
        }
        if !forwarder.spool.entries.isEmpty {
            log.info("batches left in the spool for the next start", [("batches", "\(forwarder.spool.entries.count)"),
                                                                     ("dir", forwarder.spool.dir)])
        }
        log.info("stopped", [("delivered", "\(forwarder.delivered)")])
        return 0
    }

    // MARK: requests

    private func handle(_ req: HTTPRequest) {
        if let count = req.headerCount(atMost: config.limits.maxHeaders + 1), count > config.limits.maxHeaders {
            req.reply(431, ErrorBody.message("too many request headers (\(count) or more); metrics-proxy accepts \(config.limits.maxHeaders)"),
                      headers: [("Connection", "close")])
            return
        }
        // What every SDK sends, matched without making Strings of the method and URI.
        let route = router.prefix.isEmpty && req.isPost(exactly: "/api/client/metrics")
            ? .metrics : router.route(method: req.method, uri: req.uri)
        if server.guardian.isProbeOnly(req.connection) {
            switch route {
            case .health, .ready, .selfMetrics: break
            default:
                // Let in past max_connections for the probes only.
                req.reply(503, ErrorBody.message("metrics-proxy holds [listen] max_connections busy connections; retry"),
                          headers: [("Retry-After", "1"), ("Connection", "close")])
                return
            }
        }
        switch route {
        case .metrics: ingest(req, .metrics)
        case .bulk: ingest(req, .bulk)
        case .register where config.upstream.mode == .metrics, .forward:
            if req.header(ProxyIdentity.header) == instanceId {
                refuseLoop(req, Ingest.loopBody(instanceId: instanceId, via: "its \(ProxyIdentity.header) header"))
                return
            }
            // Single-app mode sends no applications[]: registrations go upstream as they are.
            reverseProxy.forward(req, upstreamPath: router.upstreamPath(uri: req.uri))
        case .register: ingest(req, .register)
        case .health: req.reply(200, Array("ok\n".utf8), contentType: "text/plain")
        case .ready:
            // Serving at all means the listeners are bound and the spool was scanned (both
            // happen before the loop runs); a draining proxy takes no more traffic.
            if shuttingDown {
                req.reply(503, Array("not ready: shutting down\n".utf8), contentType: "text/plain")
            } else {
                req.reply(200, Array("ready\n".utf8), contentType: "text/plain")
            }
        case .selfMetrics:
            let now = nowMillis()
            let window = durable.window
            var gauges = SelfMetrics.Gauges(windowKeys: window.keyCount, spoolBatches: forwarder.spool.entries.count,
                                            spoolBytes: forwarder.spool.bytes,
                                            spoolOldestAgeSeconds: Double(forwarder.spool.oldestAge(now: now) ?? 0) / 1000,
                                            version: Version.string, connections: server.guardian.count,
                                            instancesRemembered: window.registry.count,
                                            impactSeries: window.impact.keyCount, impactDropped: durable.ingest.impactDropped)
            gauges.duplicateBatches = durable.ingest.duplicateBatches
            gauges.bulkDropped = durable.ingest.bulkDropped
            if let j = durable.journal {
                gauges.journal = .init(bytes: j.bytes, records: j.records, appendFailures: durable.ingest.journalFailures,
                                       checkpoints: durable.checkpoints,
                                       fsyncSeconds: syncer?.fsyncSeconds ?? Histogram(bounds: []))
            }
            req.reply(200, Array(telemetry.metrics.render(gauges).utf8), contentType: "text/plain; version=0.0.4; charset=utf-8")
        case .methodNotAllowed(let allow):
            req.reply(405, ErrorBody.message("Method \(req.method) is not allowed here; use \(allow)"), headers: [("Allow", allow)])
        case .notForwarded:
            req.reply(404, ErrorBody.message(
                "Not forwarded: \(Router.normalize(req.uri)) is outside [listen] forward (\(router.forward.joined(separator: ", ")))"))
        case .notFound:
            req.reply(404, ErrorBody.message("Not found: \(Router.normalize(req.uri))"))
        }
    }

    /// A metrics post or registration: read, handed to the core's one way in, answered.
    private func ingest(_ req: HTTPRequest, _ kind: Ingest.Kind) {
        if shuttingDown {
            // The window is already closed: a post now would be lost. The SDK keeps it and retries.
            req.reply(503, ErrorBody.message("metrics-proxy is shutting down"), headers: [("Connection", "close")])
            return
        }
        let headers = req.postHeaders()
        let now = nowMillis()
        var bytes = 0
        let answer = req.withBody { body -> Ingest.Answer in
            bytes = body.count
            return durable.accept(kind, headers: headers, body: body, now: now) { req.header($0) }
        }
        if kind != .register { telemetry.metrics.notePost(bytes: bytes, status: answer.status) }
        switch answer {
        case .accepted:
            if kind != .register { postsInWindow += 1 }
            req.reply(202)
            if durable.journal != nil { journalled(now: now) }
            // Only the counts: a copy of the whole Ingest would retain its parts on every post.
            let impactDropped = durable.ingest.impactDropped
            let dropped = impactDropped.values.reduce(0, +)
            if dropped > impactDroppedAtOpen, !impactLogged {
                impactLogged = true // once per window; the window-closed line has the count
                log.warn("impact metrics dropped from accepted posts (the rest of each post kept); counted by reason on /metrics",
                         [("metric", "metrics_proxy_impact_metrics_dropped_total"),
                          ("reasons", impactDropped.keys.map(\.rawValue).sorted().joined(separator: ","))])
            }
        case .refused(let status, let body):
            log.debug("post refused", [("status", "\(status)"), ("path", Router.normalize(req.uri))])
            req.reply(Int32(status), body)
        case .invalid(let failure):
            log.debug("post invalid", [("path", Router.normalize(req.uri)), ("reason", failure.message)])
            req.reply(400, failure.responseBody(id: UUID4.make()))
        case .windowFull(let body):
            if !keyCapLogged {
                keyCapLogged = true
                log.warn("window key cap reached; posts with new keys get 503 until the window closes",
                         [("max_keys", "\(config.limits.maxKeys)")])
            }
            req.reply(503, body, headers: [("Retry-After", "\(max(1, config.window.interval.milliseconds / 1000))")])
        case .loop(let body):
            refuseLoop(req, body)
        case .unavailable(let body):
            if let failure = durable.ingest.journalFailure, journalProblem != failure.description {
                journalProblem = failure.description
                log.error("journal append failed; posts are answered 503 (the SDKs keep their counts and retry) until it works",
                          [("error", failure.description), ("metric", "metrics_proxy_journal_append_failures_total")])
            }
            req.reply(503, body, headers: [("Retry-After", "1")])
        }
    }

    /// 508 for a request this proxy sent itself; logged once per window.
    private func refuseLoop(_ req: HTTPRequest, _ body: [UInt8]) {
        if !loopLogged {
            loopLogged = true
            log.error("refused this proxy's own traffic: [upstream] url leads back to this proxy; batches stay spooled until it is fixed",
                      [("instance", instanceId), ("path", Router.normalize(req.uri))])
        }
        req.reply(508, body)
    }

    /// After a journalled post: the fsync thread has work, and a large journal is checkpointed.
    private func journalled(now: Int64) {
        syncer?.markDirty()
        if journalProblem != nil {
            journalProblem = nil
            log.info("journal appends recovered")
        }
        let started = monotonicMillis()
        switch durable.checkpointIfDue(now: now) {
        case .success(true):
            log.info("journal checkpoint", [("bytes", "\(durable.journal!.bytes)"), ("keys", "\(durable.window.keyCount)"),
                                            ("ms", "\(monotonicMillis() - started)")])
            if let failures = syncer?.retireFailures, failures > retireFailuresLogged {
                retireFailuresLogged = failures
                log.error("journal segments a checkpoint replaced could not be removed yet; retried every second, and removed with the window at the latest",
                          [("dir", durable.journal!.dir)])
            }
        case .success(false): break
        case .failure(let e):
            // The journal goes on growing; the next post tries again.
            if journalProblem != e.description {
                journalProblem = e.description
                log.error("journal checkpoint failed; the journal keeps growing until one succeeds", [("error", e.description)])
            }
        }
    }

    // MARK: journal

    /// Replays what the last run journalled but did not spool, and removes the segments the
    /// spool already covers.
    private func recoverJournal() throws(StartupError) {
        guard let journal = durable.journal else { return }
        let started = monotonicMillis()
        let r: DurableWindow.Recovery
        do {
            r = try durable.recover(spool: forwarder.spool, config: config)
        } catch {
            throw StartupError("journal \(journal.dir) is not usable: \(error)")
        }
        telemetry.metrics.journalReplayed = r.records
        telemetry.metrics.journalTorn = r.damaged.count
        telemetry.metrics.journalReplayRefused = r.refused
        postsInWindow = r.records
        for (segment, d) in r.damaged {
            log.warn("journal tail dropped (a post whose answer never left, or damage)",
                     [("file", journal.path(segment)), ("offset", "\(d.offset)"), ("bytes", "\(d.bytes)"), ("reason", d.reason)])
        }
        if !r.unspooled.isEmpty {
            log.warn("batches of a window spooled only in part removed; the journal replay makes them again",
                     [("batches", r.unspooled.joined(separator: ","))])
        }
        if r.refused > 0 {
            log.error("journal records the replay could not merge", [("records", "\(r.refused)")])
        }
        if !r.segments.isEmpty || !r.skipped.isEmpty {
            log.info("journal replayed", [("records", "\(r.records)"), ("segments", "\(r.segments.count)"), ("bytes", "\(r.bytes)"),
                                         ("already_spooled", "\(r.skipped.count)"), ("spooled_in_part", "\(r.unspooled.count)"), ("keys", "\(durable.window.keyCount)"),
                                         ("ms", "\(monotonicMillis() - started)")])
        }
    }

    /// Removes the journal segments of closed windows whose batches are all in the spool.
    private func releaseJournal() {
        if let e = durable.release(unspooled: forwarder.outbox.memoryOnlyIds) {
            log.error("cannot remove a spooled window's journal segment; a restart would count it again unless removed",
                      [("error", e.description)])
        }
    }

    // MARK: windows

    private func windowElapsed() {
        closeWindow()
        windowTimer.schedule(afterMillis: config.window.interval.milliseconds)
    }

    private func closeWindow() {
        let now = nowMillis()
        let window = durable.window
        // The registry goes on to the next window, empty or not.
        guard !window.isEmpty else {
            _ = durable.close(now: now, sequence: windowSequence, builder: builder, config: config)
            releaseJournal()
            return
        }
        // Close times number the windows, so batch ids sort in order across restarts too.
        windowSequence = max(UInt64(max(0, now)), windowSequence + 1)
        let started = monotonicMillis()
        let (batches, forgotten, failure) = durable.close(now: now, sequence: windowSequence, builder: builder, config: config)
        let serialized = monotonicMillis()
        if let failure {
            log.error("journal: cannot start a segment for the new window; posts are answered 503 until one starts",
                      [("error", failure.description)])
        }
        let (posts, keys, instances, impactSeries) = (postsInWindow, window.keyCount, window.instances.count, window.impact.keyCount)
        postsInWindow = 0
        keyCapLogged = false
        loopLogged = false
        let impactDropped = durable.ingest.impactDropped.values.reduce(0, +)
        let droppedInWindow = impactDropped - impactDroppedAtOpen
        impactDroppedAtOpen = impactDropped
        impactLogged = false
        // The spool first, then the journal segments go: a crash between the two finds the
        // segments named in the spooled batches and does not count them again.
        forwarder.enqueue(batches)
        releaseJournal()
        telemetry.metrics.windowsClosed += 1
        // Logged after the batches are in the spool (or, if the disk failed, held in memory).
        log.info("window closed", [("window", "\(windowSequence)"), ("posts", "\(posts)"), ("keys", "\(keys)"),
                                   ("instances", "\(instances)"), ("instances_remembered", "\(durable.window.registry.count)"),
                                   ("instances_forgotten", "\(forgotten)"),
                                   ("impact_series", "\(impactSeries)"), ("impact_metrics_dropped", "\(droppedInWindow)"),
                                   ("batches", "\(batches.count)"),
                                   ("spooled", "\(batches.filter { forwarder.spool.contains($0.id) }.count)"),
                                   ("serialize_ms", "\(serialized - started)"), ("close_ms", "\(monotonicMillis() - started)")])
    }

    // MARK: reload

    /// SIGHUP: the file is read and validated whole; only a valid one replaces the running
    /// configuration, and keys that need a restart keep their running values.
    private func reload() {
        let new: Config
        do {
            new = try ConfigLoader.load(path: configPath)
        } catch {
            telemetry.metrics.configReloads["failure", default: 0] += 1
            log.error("config reload failed; keeping the running configuration", [("error", error.description)])
            return
        }
        let restart = config.restartKeys(comparedTo: new)
        let applied = config.reloaded(with: new)
        if applied.upstream.url != config.upstream.url || applied.upstream.caFile != config.upstream.caFile
            || applied.upstream.tlsVerify != config.upstream.tlsVerify || applied.upstream.timeout != config.upstream.timeout {
            do {
                client = try UpstreamClient(loop: loop, config: applied.upstream)
            } catch {
                telemetry.metrics.configReloads["failure", default: 0] += 1
                log.error("config reload failed; keeping the running configuration", [("error", error.description)])
                return
            }
        }
        let intervalChanged = applied.window.interval != config.window.interval
        config = applied
        log.level = applied.log.level
        log.format = applied.log.format
        router = Router(prefix: applied.listen.pathPrefix, forward: applied.listen.forward)
        durable.reconfigure(applied)
        builder = BatchBuilder(mode: applied.upstream.mode, maxBody: applied.upstream.maxBody, proxyInstance: instanceId)
        server.update(applied)
        forwarder.update(applied, client: client)
        reverseProxy.client = client
        reverseProxy.maxInFlight = applied.listen.forwardMaxInFlight
        if intervalChanged && !shuttingDown { windowTimer.schedule(afterMillis: applied.window.interval.milliseconds) }
        telemetry.metrics.configReloads["success", default: 0] += 1
        log.info("config reloaded", [("file", configPath), ("window", "\(applied.window.interval.milliseconds)ms")])
        if !restart.isEmpty {
            log.warn("config keys changed that apply only after a restart", [("keys", restart.joined(separator: ","))])
        }
        if applied.upstream.url.scheme == .https && !applied.upstream.tlsVerify {
            log.warn("TLS verification is OFF for the upstream: anyone on the path can read tokens and metrics",
                     [("upstream", applied.upstream.url.description)])
        }
    }

    // MARK: shutdown

    private func shutdown(signal: Int32) {
        let name = signal == SIGTERM ? "SIGTERM" : "SIGINT"
        if shuttingDown {
            log.warn("second signal, exiting without waiting for the upstream", [("signal", name)])
            loop.stop()
            return
        }
        shuttingDown = true
        log.info("shutting down", [("signal", name), ("drain_timeout_ms", "\(config.upstream.drainTimeout.milliseconds)")])
        server.stopAccepting()
        windowTimer.cancel()
        closeWindow()
        forwarder.onDrained = { [unowned self] in self.loop.stop() }
        drainTimer.schedule(afterMillis: config.upstream.drainTimeout.milliseconds)
        forwarder.pump()
    }

    private func drainDeadline() {
        log.warn("drain timeout reached", [("batches_left", "\(forwarder.outbox.count)")])
        loop.stop()
    }
}

extension Daemon {
    /// This proxy's name in each instance's `connectVia` upstream: the host name (in
    /// Kubernetes, the pod's name), as Unleash Edge names itself.
    static let hostName: String = {
        var buf = [CChar](repeating: 0, count: 256)
        guard gethostname(&buf, buf.count - 1) == 0 else { return "metrics-proxy" }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }()
}

/// The proxy's counters, shared by the parts that count.
final class Telemetry {
    var metrics = SelfMetrics()
}
