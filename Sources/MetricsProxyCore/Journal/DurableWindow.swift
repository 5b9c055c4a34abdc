/// The open window and its journal, kept in step so that a 202 survives the process: every
/// accepted post is journalled before it is merged (`accept`), the window is rebuilt from the
/// journal at start (`recover`), a close hands over the journal segments with the batches
/// (`close`) and removes them only once those batches are in the spool (`release`), and a
/// large journal is folded into a checkpoint (`checkpointIfDue`). Without a journal
/// (`[journal] dir = off`) it is the window alone.
public final class DurableWindow {
    public private(set) var window: Window
    public private(set) var ingest: Ingest
    public let journal: Journal?
    /// Closed windows whose segments wait until every one of their batches is spooled.
    public private(set) var unreleased: [(segments: [UInt64], batches: Set<String>)] = []
    /// Bytes of the last checkpoint: the next is due when the journal has grown well past it.
    private var snapshotBytes = 0
    public private(set) var checkpoints = 0

    public init(config: Config, journal: Journal?, opened: Int64) {
        window = Window(opened: opened, registry: InstanceRegistry(config))
        ingest = Ingest(config)
        self.journal = journal
    }

    /// This proxy's id: posts that carry it are its own traffic come back (`Ingest.instanceId`).
    public func identify(as instanceId: String) { ingest.instanceId = instanceId }

    public func reconfigure(_ config: Config) {
        ingest.reconfigure(config)
        journal?.maxSize = config.journal.maxSize
    }

    // MARK: start

    public struct Recovery: Sendable, Equatable {
        /// Segments replayed, and the posts in them merged again.
        public var segments: [UInt64] = []
        public var records = 0
        public var bytes = 0
        /// Segments whose window the spool already holds, or a checkpoint replaced: removed.
        public var skipped: [UInt64] = []
        /// Unreadable tails (a post never answered, or damage): segment, offset, bytes, why.
        public var damaged: [(segment: UInt64, damage: JournalReader.Damage)] = []
        /// Records the replay could not merge (none, unless the file was tampered with).
        public var refused = 0
        /// Spooled batches of a window the spool held only in part, removed: the replay
        /// rebuilds their window.
        public var unspooled: [String] = []

        public static func == (a: Recovery, b: Recovery) -> Bool {
            a.segments == b.segments && a.records == b.records && a.bytes == b.bytes && a.skipped == b.skipped
                && a.refused == b.refused && a.unspooled == b.unspooled && a.damaged.map(\.segment) == b.damaged.map(\.segment)
                && a.damaged.map(\.damage) == b.damaged.map(\.damage)
        }
    }

    /// Replays the journal into the open window, before any request is served. Segments whose
    /// window the spool holds whole (every batch of it: the process stopped after spooling it
    /// but before removing them) and those a complete checkpoint replaced are removed; every
    /// other one is merged in order. Batches of a window the spool holds only in part (the
    /// process stopped while spooling it) are removed from the spool, as the replay makes them
    /// again: `Recovery.unspooled` names them. Then new posts go to a fresh segment.
    public func recover(spool: Spool, config: Config) throws(FSError) -> Recovery {
        guard let journal else { return Recovery() }
        var r = Recovery()
        let found = try journal.open(after: spool.entries.flatMap(\.journal).max() ?? 0)
        let existing = Set(found)
        var spooled = Set<UInt64>()
        for (segments, batches) in Dictionary(grouping: spool.entries.filter { !$0.journal.isEmpty }, by: \.journal) {
            if batches.count >= batches[0].windowBatches {
                spooled.formUnion(segments)
            } else if !existing.isDisjoint(with: segments) {
                for b in batches {
                    try spool.remove(b.id)
                    r.unspooled.append(b.id)
                }
            }
        }
        var contents: [(seq: UInt64, bytes: [UInt8], usable: Bool)] = []
        var replaced = Set<UInt64>()
        for seq in found where !spooled.contains(seq) {
            let bytes = try journal.read(seq)
            // A checkpoint counts only when it is whole: else the segments it names stand, and
            // it is not replayed at all.
            let checkpoint = JournalReader.checkpoint(in: bytes)
            if let c = checkpoint, c.complete { replaced.formUnion(c.supersedes) }
            contents.append((seq, bytes, checkpoint?.complete ?? true))
        }
        var replay = Ingest(Self.replayConfig(config))
        replay.intake.limits.impactNameLength = config.limits.maxNameLength
        // The rebuilt window opened when its first post arrived, so it closes on time.
        func opening(at now: Int64) {
            if window.isEmpty && r.records == 0 { window = Window(opened: now, registry: window.registry) }
        }
        // Batches other proxies sent that the journal holds: a resend of one is not merged again.
        func remember(_ headers: [(name: String, value: String)]) {
            for (name, value) in headers where name == RecentBatches.journalHeader { ingest.recentBatches.insert(value) }
        }
        for (seq, bytes, usable) in contents {
            if replaced.contains(seq) { continue }
            let damage = JournalReader.read(bytes) { item in
                guard usable else { return }
                if case .compact(let d, let post, let body) = item {
                    opening(at: d.now)
                    replay.merge(d, post, body: body, into: &window)
                    r.records += 1
                    remember(d.sdkHeaders)
                    return
                }
                guard case .post(let p, let body) = item else { return }
                opening(at: p.now)
                let answer = body.withUnsafeBufferPointer {
                    replay.accept(p.kind, headers: p.headers.with(authorization: p.token), body: $0, into: &window,
                                  now: p.now) { name in p.sdkHeaders.first { $0.name == name }?.value }
                }
                if answer == .accepted {
                    r.records += 1
                    remember(p.sdkHeaders)
                } else {
                    r.refused += 1
                }
            }
            if let damage { r.damaged.append((seq, damage)) }
            r.segments.append(seq)
            // What was written, without the space reserved after it (zeros).
            var end = bytes.count - (damage?.bytes ?? 0)
            while end > 0 && bytes[end - 1] == 0 { end -= 1 }
            r.bytes += end
        }
        r.skipped = found.filter { spooled.contains($0) || replaced.contains($0) }
        try journal.remove(r.skipped)
        try journal.begin(replayed: r.segments, bytes: r.bytes, records: r.records)
        return r
    }

    /// What a replayed post is held to: it was accepted once, so no cap, length or token rule
    /// of the configuration now (which may have changed) turns it away. Impact metrics are
    /// still trimmed by `max_name_length` (`recover` sets it), as the live post was.
    static func replayConfig(_ config: Config) -> Config {
        var c = config
        let unbounded = Int.max / 4 // room for the `+ 1`s of the checks
        c.listen.maxBody = unbounded
        c.listen.allowTokens = []
        c.upstream.token = nil
        c.limits.maxKeys = unbounded
        c.limits.maxTogglesPerPost = unbounded
        c.limits.maxNameLength = unbounded
        return c
    }

    // MARK: posts

    public func accept(_ kind: Ingest.Kind, headers: Ingest.Headers, body: UnsafeBufferPointer<UInt8>, now: Int64,
                       header: (String) -> String?) -> Ingest.Answer {
        ingest.accept(kind, headers: headers, body: body, into: &window, now: now, journal: journal, header: header)
    }

    public func accept(_ kind: Ingest.Kind, headers: Ingest.Headers, body: [UInt8], now: Int64,
                       header: (String) -> String? = { _ in nil }) -> Ingest.Answer {
        body.withUnsafeBufferPointer { accept(kind, headers: headers, body: $0, now: now, header: header) }
    }

    /// Past `[journal] max_size` (and well past the last checkpoint), writes the window whole
    /// as a new segment and removes the ones it replaces, so replay stays short.
    public func checkpointIfDue(now: Int64) -> Result<Bool, FSError> {
        guard let journal, journal.bytes > max(journal.maxSize, 2 * snapshotBytes) else { return .success(false) }
        do throws(FSError) {
            try journal.checkpoint(Snapshot.records(window, now: now))
        } catch {
            return .failure(error)
        }
        snapshotBytes = journal.bytes
        checkpoints += 1
        return .success(true)
    }

    // MARK: close

    /// Closes the window: its batches, each naming the journal segments it came from; the
    /// next window starts with the registry and a new segment. The caller spools the batches,
    /// then calls `release`.
    public func close(now: Int64, sequence: UInt64, builder: BatchBuilder, config: Config)
        -> (batches: [Batch], forgotten: Int, failure: FSError?) {
        var batches = window.isEmpty ? [] : builder.batches(from: window, sequence: sequence, closedAt: now)
        var failure: FSError? = nil
        if let journal, journal.records > 0 {
            let (closed, f) = journal.rotate()
            failure = f
            for i in batches.indices {
                batches[i].journal = closed
                batches[i].windowBatches = batches.count
            }
            unreleased.append((closed, Set(batches.map(\.id))))
            snapshotBytes = 0
        }
        let forgotten: Int
        (window, forgotten) = window.next(opened: now, config: config)
        return (batches, forgotten, failure)
    }

    /// Removes the segments of closed windows none of whose batches is still only in memory
    /// (`unspooled`): the spool holds them now, or they were delivered.
    public func release(unspooled: Set<String>) -> FSError? {
        guard let journal else { return nil }
        var failure: FSError? = nil
        unreleased.removeAll { entry in
            // A split or separated batch goes on under its id with a suffix.
            guard !unspooled.contains(where: { id in entry.batches.contains { id.hasPrefix($0) } }) else { return false }
            do throws(FSError) { try journal.remove(entry.segments); return true } catch { failure = error; return false }
        }
        return failure
    }
}

extension Ingest.Headers {
    func with(authorization: String) -> Ingest.Headers {
        var h = self
        h.authorization = authorization
        return h
    }
}

extension Ingest {
    /// Merges a compact journal record as the fast path merged the post: its impact metrics,
    /// if any, read again from their JSON and trimmed by the same limits.
    mutating func merge(_ d: CompactDecoder.Decoded, _ post: FastPost, body: UnsafeBufferPointer<UInt8>, into window: inout Window) {
        var metrics: [ImpactMetric] = []
        if let json = d.impact {
            var impact = json.withUnsafeBufferPointer { b -> ImpactMetrics in
                var decoding = Decoding(scanner: JSONScanner(b))
                return (try? decoding.impactMetrics()) ?? ImpactMetrics()
            }
            intake.limits.trim(&impact)
            metrics = impact.metrics
        }
        window.merge(post, body: body, token: d.token, interval: d.interval.flatMap(Double.init), now: d.now,
                     header: { name in d.sdkHeaders.first { $0.name == name }?.value }, impact: metrics)
    }
}
