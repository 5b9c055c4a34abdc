/// The outbox on disk: one file per batch, written before it is sent and deleted only after
/// the upstream took it. Only an index of the files (no bodies) stays in memory, so a large
/// backlog replays one batch at a time.
///
/// Layout: `dir/<id>.batch` (0600), `dir/corrupt/` for files that fail their checksum or do
/// not parse, `dir/rejected/` for batches the upstream answered 400. `dir` is 0700.
public final class Spool {
    /// What is known of a spooled batch without reading it.
    public struct Entry: Sendable, Equatable {
        public var id: String
        public var token: String
        public var path: String
        /// Bytes of the file (header and body), what the caps count.
        public var fileBytes: Int
        public var created: Int64
        public var entries: Int
        /// The journal segments its window came from, and how many batches that window made.
        public var journal: [UInt64] = []
        public var windowBatches = 0
    }

    public enum DropReason: String, Sendable, CaseIterable {
        case maxSize = "max_size", maxAge = "max_age"
    }

    public let dir: String
    public var maxSize: Int
    public var maxAgeMillis: Int64
    private let fs: FileSystem
    /// Oldest first (ids sort by creation).
    public private(set) var entries: [Entry] = []
    public private(set) var bytes = 0
    public private(set) var corruptCount = 0
    public private(set) var rejectedCount = 0
    public private(set) var dropped: [DropReason: Int] = [:]

    public init(dir: String, fs: FileSystem, maxSize: Int, maxAgeMillis: Int64) {
        self.dir = dir
        self.fs = fs
        self.maxSize = maxSize
        self.maxAgeMillis = maxAgeMillis
    }

    private func file(_ id: String) -> String { "\(dir)/\(id).batch" }

    /// Creates the directories, removes leftover temporary files, and indexes every batch,
    /// reading them one at a time; a file that does not verify is moved to `corrupt/`.
    /// Returns the names set aside, for the log.
    public func open() throws(FSError) -> [(name: String, reason: String)] {
        try fs.makeDirectory(dir, mode: 0o700)
        try fs.makeDirectory("\(dir)/corrupt", mode: 0o700)
        try fs.makeDirectory("\(dir)/rejected", mode: 0o700)
        var setAside: [(String, String)] = []
        for name in try fs.list(dir).sorted() {
            if name.hasSuffix(".tmp") {
                try fs.remove("\(dir)/\(name)")
            } else if name.hasSuffix(".batch") {
                let path = "\(dir)/\(name)"
                do {
                    let bytes = try fs.read(path)
                    let b = try SpoolFile.decode(bytes)
                    guard "\(b.id).batch" == name else { throw SpoolFile.Corrupt(reason: "id \(b.id) does not match the file name") }
                    entries.append(Entry(id: b.id, token: b.token, path: b.path, fileBytes: bytes.count, created: b.created,
                                         entries: b.entries, journal: b.journal, windowBatches: b.windowBatches))
                    self.bytes += bytes.count
                } catch let e as SpoolFile.Corrupt {
                    try setAsideCorrupt(name)
                    setAside.append((name, e.reason))
                } catch let e as FSError {
                    throw e
                } catch {
                    preconditionFailure("unexpected error \(error)")
                }
            }
        }
        return setAside
    }

    private func setAsideCorrupt(_ name: String) throws(FSError) {
        try fs.rename("\(dir)/\(name)", "\(dir)/corrupt/\(name)")
        try fs.syncDirectory(dir)
        corruptCount += 1
    }

    /// Writes the batch durably: temporary file, fsync, rename, fsync of the directory.
    public func store(_ batch: Batch) throws(FSError) {
        precondition(!entries.contains { $0.id == batch.id }, "batch \(batch.id) spooled twice")
        let bytes = SpoolFile.encode(batch)
        let tmp = "\(dir)/\(batch.id).tmp"
        do {
            try fs.writeNew(tmp, bytes, mode: 0o600)
            try fs.rename(tmp, file(batch.id))
            try fs.syncDirectory(dir)
        } catch {
            try? fs.remove(tmp)
            throw error
        }
        let entry = Entry(id: batch.id, token: batch.token, path: batch.path, fileBytes: bytes.count,
                          created: batch.created, entries: batch.entries, journal: batch.journal,
                          windowBatches: batch.windowBatches)
        let i = entries.firstIndex { $0.id > batch.id } ?? entries.endIndex
        entries.insert(entry, at: i)
        self.bytes += bytes.count
    }

    public enum LoadFailure: Error {
        case corrupt(String)
        case io(FSError)
    }

    /// Reads a spooled batch back; a file that no longer verifies is set aside and forgotten.
    public func load(_ id: String) throws(LoadFailure) -> Batch {
        let bytes: [UInt8]
        do { bytes = try fs.read(file(id)) } catch { throw .io(error) }
        do {
            return try SpoolFile.decode(bytes)
        } catch {
            forget(id)
            try? setAsideCorrupt("\(id).batch")
            throw .corrupt(error.reason)
        }
    }

    /// Deletes a delivered batch.
    public func remove(_ id: String) throws(FSError) {
        try fs.remove(file(id))
        forget(id)
    }

    /// Moves a batch the upstream will never take to `rejected/`.
    public func reject(_ id: String) throws(FSError) {
        try fs.rename(file(id), "\(dir)/rejected/\(id).batch")
        try fs.syncDirectory(dir)
        forget(id)
        rejectedCount += 1
    }

    private func forget(_ id: String) {
        guard let i = entries.firstIndex(where: { $0.id == id }) else { return }
        bytes -= entries[i].fileBytes
        entries.remove(at: i)
    }

    public func contains(_ id: String) -> Bool { entries.contains { $0.id == id } }

    /// Drops the oldest batches past `max_age`, then past `max_size`, skipping `busy` ones
    /// (in flight). Returns what was dropped and why.
    public func enforceCaps(now: Int64, busy: Set<String>) -> [(Entry, DropReason)] {
        var out: [(Entry, DropReason)] = []
        for e in entries where now - e.created > maxAgeMillis && !busy.contains(e.id) {
            if (try? fs.remove(file(e.id))) != nil {
                forget(e.id)
                out.append((e, .maxAge))
            }
        }
        var i = 0
        while bytes > maxSize, i < entries.count {
            let e = entries[i]
            if busy.contains(e.id) { i += 1; continue }
            if (try? fs.remove(file(e.id))) != nil {
                forget(e.id)
                out.append((e, .maxSize))
            } else {
                i += 1
            }
        }
        for (_, r) in out { dropped[r, default: 0] += 1 }
        return out
    }

    /// Age of the oldest batch, in ms.
    public func oldestAge(now: Int64) -> Int64? { entries.map(\.created).min().map { now - $0 } }
}
