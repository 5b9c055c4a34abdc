/// The batches waiting to go upstream, oldest first per token, with the backoff state of each
/// token. One token's failures never hold back another's; at most `maxInFlight` requests are
/// out at once and they leave at most one per `minSpacingMillis`, so a backlog drains paced.
/// It decides; the forwarder acts.
///
/// Spooled batches are held without their bodies (the forwarder reads them from the spool);
/// batches the spool could not take keep their bodies here, counted against `maxBytes`.
public struct Outbox: Sendable {
    struct Queue: Sendable {
        var batches: [Batch] = []
        var inFlight = false
        /// Not before this time (epoch ms) after a failure.
        var notBefore: Int64 = 0
        var failures = 0
    }

    private(set) var queues: [String: Queue] = [:]
    /// Bodies held in memory (batches not spooled).
    public private(set) var bytes = 0
    public let maxBytes: Int
    public var policy: RetryPolicy
    public var maxInFlight: Int
    public var minSpacingMillis: Int64
    private var nextSendAt: Int64 = 0

    public init(policy: RetryPolicy, maxBytes: Int, maxInFlight: Int = 4, minSpacingMillis: Int64 = 0) {
        self.policy = policy
        self.maxBytes = maxBytes
        self.maxInFlight = maxInFlight
        self.minSpacingMillis = minSpacingMillis
    }

    public var count: Int { queues.values.reduce(0) { $0 + $1.batches.count } }
    public var isEmpty: Bool { queues.values.allSatisfy { $0.batches.isEmpty } }
    public var inFlight: Int { queues.values.filter(\.inFlight).count }
    /// Ids of the batches out now.
    public var inFlightIds: Set<String> { Set(queues.values.filter(\.inFlight).compactMap { $0.batches.first?.id }) }
    /// Batches whose bodies are only in memory and not out now: the spool should try them again.
    public var unspooled: [Batch] {
        queues.values.flatMap { q in q.batches.enumerated().filter { !$0.element.spooled && !(q.inFlight && $0.offset == 0) }.map(\.element) }
            .sorted { $0.id < $1.id }
    }

    /// Ids of every batch whose body is only in memory, in flight or not.
    public var memoryOnlyIds: Set<String> {
        Set(queues.values.flatMap { $0.batches.filter { !$0.spooled }.map(\.id) })
    }

    /// Queues batches; returns the in-memory ones dropped to stay under `maxBytes`.
    public mutating func add(_ batches: [Batch]) -> [Batch] {
        for b in batches {
            var q = queues[b.token, default: Queue()]
            let i = q.batches.firstIndex { $0.id > b.id && !(q.inFlight && $0.id == q.batches.first?.id) } ?? q.batches.endIndex
            q.batches.insert(b, at: max(i, q.inFlight ? 1 : 0))
            queues[b.token] = q
            if !b.spooled { bytes += b.body.count }
        }
        var dropped: [Batch] = []
        while bytes > maxBytes, let victim = unspooled.first {
            remove(victim.id, token: victim.token)
            dropped.append(victim)
        }
        return dropped
    }

    /// The spool took a batch that was held in memory: drop its body here.
    public mutating func markSpooled(_ id: String, token: String) {
        guard var q = queues[token], let i = q.batches.firstIndex(where: { $0.id == id }), !q.batches[i].spooled else { return }
        bytes -= q.batches[i].body.count
        q.batches[i].spooled = true
        q.batches[i].body = []
        queues[token] = q
    }

    /// Forgets a batch that is not in flight (dropped by a spool cap, found corrupt).
    public mutating func remove(_ id: String, token: String) {
        guard var q = queues[token], let i = q.batches.firstIndex(where: { $0.id == id }) else { return }
        precondition(!(q.inFlight && i == 0), "removing batch \(id) while it is in flight")
        if !q.batches[i].spooled { bytes -= q.batches[i].body.count }
        q.batches.remove(at: i)
        queues[token] = q
    }

    /// The batches to send now: each ready token's oldest, within the in-flight and pacing
    /// bounds; they are marked in flight and their attempt counted.
    public mutating func takeReady(now: Int64) -> [Batch] {
        var out: [Batch] = []
        var inFlightNow = inFlight
        let ready = queues.filter { !$0.value.inFlight && !$0.value.batches.isEmpty && $0.value.notBefore <= now }
            .sorted { $0.value.batches[0].id < $1.value.batches[0].id }
        for (token, _) in ready {
            guard inFlightNow < maxInFlight, nextSendAt <= now else { break }
            queues[token]!.inFlight = true
            queues[token]!.batches[0].attempts += 1
            out.append(queues[token]!.batches[0])
            inFlightNow += 1
            nextSendAt = max(nextSendAt, now) + minSpacingMillis
            if minSpacingMillis > 0 { break }
        }
        return out
    }

    /// Records the answer to a batch sent by `takeReady` and returns what to do. For
    /// `.delivered` and `.reject` the batch is gone from here; for `.split` it stays until the
    /// forwarder calls `replace`.
    @discardableResult
    public mutating func complete(_ batch: Batch, answer: UpstreamAnswer, now: Int64, random: Double) -> Disposition {
        guard var q = queues[batch.token], q.inFlight, q.batches.first?.id == batch.id else {
            preconditionFailure("answer for a batch that was not in flight: \(batch.id)")
        }
        q.inFlight = false
        let disposition = policy.classify(answer, failures: q.failures + 1, random: random)
        switch disposition {
        case .delivered, .reject:
            if !q.batches[0].spooled { bytes -= q.batches[0].body.count }
            q.batches.removeFirst()
            q.failures = 0
            q.notBefore = 0
        case .split:
            break
        case .retry(let after), .hold(let after):
            q.failures += 1
            q.notBefore = now + after.milliseconds
        }
        queues[batch.token] = q
        return disposition
    }

    /// Gives up on a batch taken by `takeReady` that could not be sent at all (its spool file
    /// turned out corrupt): it leaves the queue without counting as a failure.
    public mutating func abandon(_ batch: Batch) {
        guard var q = queues[batch.token], q.inFlight, q.batches.first?.id == batch.id else {
            preconditionFailure("abandoning a batch that was not in flight: \(batch.id)")
        }
        q.inFlight = false
        queues[batch.token] = q
        remove(batch.id, token: batch.token)
    }

    /// Puts the halves of a split batch in its place.
    public mutating func replace(_ id: String, token: String, with halves: [Batch]) {
        remove(id, token: token)
        _ = add(halves)
    }

    /// When the next batch becomes ready (epoch ms), if one is waiting.
    public func nextWake() -> Int64? {
        guard inFlight < maxInFlight else { return nil }
        guard let t = queues.values.filter({ !$0.inFlight && !$0.batches.isEmpty }).map(\.notBefore).min() else { return nil }
        return max(t, nextSendAt)
    }
}
