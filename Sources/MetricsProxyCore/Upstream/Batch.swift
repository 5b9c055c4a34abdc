/// One request's worth of a closed window, ready to go upstream: the unit the forwarder
/// sends, retries and (later) spools.
public struct Batch: Sendable, Equatable {
    /// Sortable: the window's sequence number, then the batch's place in it.
    public var id: String
    /// The token it goes upstream with.
    public var token: String
    /// Appended to `upstream.url`, e.g. `/client/metrics/bulk`.
    public var path: String
    public var body: [UInt8]
    /// When its window closed (epoch ms).
    public var created: Int64
    public var attempts: Int = 0
    /// Metric entries (bulk) or toggles (metrics mode) inside, for logs.
    public var entries: Int
    /// On disk in the spool: the body is read back from there to send it, not kept in memory.
    public var spooled = false
    /// The journal segments whose posts this batch's window holds: at start, a segment the
    /// spool already covers is not replayed again.
    public var journal: [UInt64] = []
    /// How many batches its window made: the spool covers those segments only when it holds
    /// them all (a kill part way through spooling a window leaves some).
    public var windowBatches = 0

    public init(id: String, token: String, path: String, body: [UInt8], created: Int64, attempts: Int = 0, entries: Int) {
        self.id = id
        self.token = token
        self.path = path
        self.body = body
        self.created = created
        self.attempts = attempts
        self.entries = entries
    }
}

public enum UpstreamMode: String, Sendable {
    /// `POST {url}/client/metrics/bulk` per token: applications + metrics.
    case bulk
    /// `POST {url}/client/metrics` per (token, appName, hour): the SDKs' own shape.
    case metrics
}
