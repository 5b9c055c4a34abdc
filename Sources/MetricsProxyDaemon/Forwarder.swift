import CLibevent
import MetricsProxyCore

/// Sends the outbox's batches upstream as the outbox decides: oldest first per token, one in
/// flight per token, backing off after failures. Logs one line per upstream state change.
final class Forwarder {
    private(set) var outbox: Outbox
    private let client: UpstreamClient
    private let log: Logger
    private let gzip: Bool
    private var wake: LoopEvent!
    /// Per token: the last failure logged, so a run of the same failure logs once.
    private var lastProblem: [String: String] = [:]
    /// Called whenever the outbox becomes empty with nothing in flight.
    var onDrained: (() -> Void)?
    /// Counters for logs and tests.
    private(set) var delivered = 0, rejected = 0, dropped = 0

    init(loop: EventLoop, client: UpstreamClient, policy: RetryPolicy, maxBytes: Int, gzip: Bool, log: Logger) {
        outbox = Outbox(policy: policy, maxBytes: maxBytes)
        self.client = client
        self.log = log
        self.gzip = gzip
        wake = LoopEvent(loop: loop) { [unowned self] in self.pump() }
    }

    var isIdle: Bool { outbox.isEmpty && outbox.inFlight == 0 }

    func enqueue(_ batches: [Batch]) {
        for b in outbox.add(batches) {
            dropped += 1
            log.error("batch dropped", [("reason", "outbox full"), ("batch", b.id), ("token", Token.fingerprint(b.token)),
                                        ("bytes", "\(b.body.count)")])
        }
        pump()
    }

    /// Sends whatever is ready now and arms the timer for the next retry.
    func pump() {
        for batch in outbox.takeReady(now: nowMillis()) { send(batch) }
        wake.cancel()
        if let next = outbox.nextWake() { wake.schedule(afterMillis: next - nowMillis()) }
        if isIdle { onDrained?() }
    }

    private func send(_ batch: Batch) {
        // The batch id lets an operator match upstream requests to the proxy's log lines.
        var headers = [("Content-Type", "application/json"), ("Authorization", batch.token),
                       ("X-Metrics-Proxy-Batch", batch.id)]
        var body = batch.body
        if gzip {
            body = BodyInflater.gzip(body)
            headers.append(("Content-Encoding", "gzip"))
        }
        let started = monotonicMillis()
        client.send(.init(path: batch.path, headers: headers, body: body)) { [weak self] answer in
            self?.finished(batch, answer, millis: monotonicMillis() - started)
        }
    }

    private func finished(_ batch: Batch, _ answer: UpstreamAnswer, millis: Int64) {
        let disposition = outbox.complete(batch, answer: answer, now: nowMillis(), random: Double.random(in: 0..<1))
        let token = Token.fingerprint(batch.token)
        var fields = [("batch", batch.id), ("token", token), ("path", batch.path), ("attempt", "\(batch.attempts)"),
                      ("ms", "\(millis)")]
        switch answer {
        case .status(let code, _): fields.append(("status", "\(code)"))
        case .noAnswer(let why): fields.append(("error", why))
        }
        switch disposition {
        case .delivered:
            delivered += 1
            if lastProblem.removeValue(forKey: batch.token) != nil { log.info("upstream recovered", fields) }
            log.debug("batch delivered", fields + [("entries", "\(batch.entries)"), ("bytes", "\(batch.body.count)")])
        case .reject:
            rejected += 1
            log.error("batch rejected by upstream", fields)
        case .split:
            log.warn("batch too large for upstream, split in two", fields)
        case .retry(let after), .hold(let after):
            let problem = fields.last!.1
            if lastProblem[batch.token] != problem {
                lastProblem[batch.token] = problem
                let loud = { if case .hold = disposition { return true } else { return false } }()
                log.emit(loud ? .error : .warn, loud ? "upstream refuses the token; check upstream.url and the token"
                                                     : "upstream unavailable, will retry",
                         fields + [("retry_in_ms", "\(after.milliseconds)")])
            }
        }
        pump()
    }
}
