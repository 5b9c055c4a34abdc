/// The batches waiting to go upstream, oldest first per token, with the backoff state of each
/// token. One token's failures never hold back another's. It decides; the forwarder acts.
///
/// This is the in-memory outbox; the disk spool will keep the same order and answers.
public struct Outbox: Sendable {
    struct Queue: Sendable {
        var batches: [Batch] = []
        var inFlight = false
        /// Not before this time (epoch ms) after a failure.
        var notBefore: Int64 = 0
        var failures = 0
    }

    private(set) var queues: [String: Queue] = [:]
    public private(set) var bytes = 0
    /// Past this many body bytes the oldest batches are dropped.
    public let maxBytes: Int
    public var policy: RetryPolicy

    public init(policy: RetryPolicy, maxBytes: Int) {
        self.policy = policy
        self.maxBytes = maxBytes
    }

    public var count: Int { queues.values.reduce(0) { $0 + $1.batches.count } }
    public var isEmpty: Bool { queues.values.allSatisfy { $0.batches.isEmpty } }
    public var inFlight: Int { queues.values.filter(\.inFlight).count }

    /// Queues a closed window's batches; returns the batches dropped to stay under `maxBytes`.
    public mutating func add(_ batches: [Batch]) -> [Batch] {
        for b in batches {
            queues[b.token, default: Queue()].batches.append(b)
            bytes += b.body.count
        }
        var dropped: [Batch] = []
        while bytes > maxBytes, let oldest = oldestIdle() {
            let b = queues[oldest]!.batches.removeFirst()
            bytes -= b.body.count
            dropped.append(b)
        }
        return dropped
    }

    private func oldestIdle() -> String? {
        queues.filter { !$0.value.batches.isEmpty && !($0.value.inFlight && $0.value.batches.count == 1) }
            .min { ($0.value.batches[$0.value.inFlight ? 1 : 0].id) < ($1.value.batches[$1.value.inFlight ? 1 : 0].id) }?.key
    }

    /// The batches to send now: each ready token's oldest; they are marked in flight.
    public mutating func takeReady(now: Int64) -> [Batch] {
        var out: [Batch] = []
        for token in queues.keys.sorted() {
            var q = queues[token]!
            guard !q.inFlight, let head = q.batches.first, q.notBefore <= now else { continue }
            q.inFlight = true
            q.batches[0].attempts += 1
            queues[token] = q
            out.append(head.withAttempts(q.batches[0].attempts))
        }
        return out
    }

    /// Records the answer to a batch sent by `takeReady`; returns what was decided.
    @discardableResult
    public mutating func complete(_ batch: Batch, answer: UpstreamAnswer, now: Int64, random: Double) -> Disposition {
        guard var q = queues[batch.token], q.inFlight, let i = q.batches.firstIndex(where: { $0.id == batch.id }) else {
            preconditionFailure("answer for a batch that was not in flight: \(batch.id)")
        }
        q.inFlight = false
        let disposition = policy.classify(answer, failures: q.failures + 1, random: random)
        switch disposition {
        case .delivered, .reject:
            bytes -= q.batches[i].body.count
            q.batches.remove(at: i)
            q.failures = 0
            q.notBefore = 0
        case .split:
            let halves = BatchSplitter.split(q.batches[i])
            if halves.count == 2 {
                q.batches.replaceSubrange(i...i, with: halves)
                bytes += halves[0].body.count + halves[1].body.count - batch.body.count
            } else {
                // Nothing left to split: the upstream will never take it.
                bytes -= q.batches[i].body.count
                q.batches.remove(at: i)
                queues[batch.token] = q
                return .reject
            }
        case .retry(let after), .hold(let after):
            q.failures += 1
            q.notBefore = now + after.milliseconds
        }
        queues[batch.token] = q
        return disposition
    }

    /// When the next batch becomes ready (epoch ms), if one is waiting and none is in flight.
    public func nextWake() -> Int64? {
        queues.values.filter { !$0.inFlight && !$0.batches.isEmpty }.map(\.notBefore).min()
    }
}

extension Batch {
    func withAttempts(_ n: Int) -> Batch {
        var b = self
        b.attempts = n
        return b
    }
}
