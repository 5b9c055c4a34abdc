/// The batches another metrics-proxy sent that this one took (answered 202), by sender and
/// batch id (`X-Metrics-Proxy-Instance`, `X-Metrics-Proxy-Batch`). A sender resends a batch
/// whose answer it did not get — a timeout, or this proxy killed between its journal append
/// and the 202 — and the batch is then answered 202 again without being merged twice: between
/// tiers, a batch counts once. Bounded: the oldest ids are forgotten first, long after a
/// sender's retries of them.
public struct RecentBatches: Sendable {
    /// The request header the journal keeps the key under (with the SDK fallback headers).
    static let journalHeader = "x-metrics-proxy-batch-key"

    private var keys = Set<String>()
    private var order: [String] = []
    private var next = 0
    public let capacity: Int

    public init(capacity: Int = 16_384) { self.capacity = capacity }

    /// The key of a request from another proxy; nil for anything else (an SDK, Edge).
    static func key(_ headers: Ingest.Headers) -> String? {
        guard let sender = headers.proxyInstance, let batch = headers.batch, !sender.isEmpty, !batch.isEmpty else { return nil }
        return sender + " " + batch
    }

    public func contains(_ key: String) -> Bool { keys.contains(key) }

    public var count: Int { keys.count }

    mutating func insert(_ key: String) {
        guard keys.insert(key).inserted else { return }
        if order.count < capacity {
            order.append(key)
        } else {
            keys.remove(order[next])
            order[next] = key
            next = (next + 1) % capacity
        }
    }
}
