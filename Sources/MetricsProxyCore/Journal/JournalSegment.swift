import Glibc

/// The journal on disk: a directory (0700) of segment files `<seq>.journal` (0600: they hold
/// tokens), numbered in the order they were started. The open window's posts are in the last
/// segments; a window close starts a new segment, and the closed window's segments are
/// removed once its batches are in the spool. A checkpoint writes the open window whole at the
/// head of a new segment, which names the segments it replaces; they are removed once it is
/// on disk (see `SegmentRetirer`). A checkpoint without its end marker is not replayed.
public final class Journal {
    public let dir: String
    /// Past this many bytes in the open window's segments, the window is checkpointed.
    public var maxSize: Int
    private let fs: FileSystem
    private var fd: Int32 = -1
    /// The segment being appended to.
    public private(set) var current: UInt64 = 0
    /// The segments holding the open window's records, oldest first; the current one last.
    public private(set) var window: [UInt64] = []
    /// Bytes and records in `window`'s segments.
    public private(set) var bytes = 0
    public private(set) var records = 0
    private var currentSize = 0
    /// `path(current)`, made once per segment rather than once per append.
    private var currentPath = ""
    /// The current segment's tail could not be repaired after a failed append: the next
    /// append starts a new segment rather than write after a torn record.
    private var needsNewSegment = false
    /// Segments a checkpoint replaced that the retirer may not have removed yet, and the
    /// checkpoint that replaced each.
    private var superseded: [(segment: UInt64, by: UInt64)] = []
    /// See `SegmentRetirer`; nil: replaced segments are removed at once, on this thread.
    public var retirer: SegmentRetirer?
    private var encoder = JournalEncoder()
    private let compact = CompactEncoder()
    /// Told the new descriptor whenever the segment being appended to changes (-1: none), for
    /// the thread that fsyncs it.
    public var onDescriptorChange: ((Int32) -> Void)?

    public init(dir: String, fs: FileSystem, maxSize: Int) {
        self.dir = dir
        self.fs = fs
        self.maxSize = maxSize
    }

    deinit { if fd >= 0 { fs.closeFile(fd) } }

    private func setDescriptor(_ new: Int32) {
        if fd >= 0 { fs.closeFile(fd) }
        fd = new
        onDescriptorChange?(new)
    }

    public func path(_ seq: UInt64) -> String {
        let s = String(seq)
        return "\(dir)/\(String(repeating: "0", count: max(0, 20 - s.count)) + s).journal"
    }

    /// Creates the directory, removes leftover temporary files, and lists the segments found,
    /// oldest first. New segments are numbered past them and past `after` (the numbers the
    /// spool's batches name), so a number is never used twice.
    public func open(after: UInt64 = 0) throws(FSError) -> [UInt64] {
        try fs.makeDirectory(dir, mode: 0o700)
        var found: [UInt64] = []
        for name in try fs.list(dir) {
            if name.hasSuffix(".tmp") {
                try fs.remove("\(dir)/\(name)")
            } else if name.hasSuffix(".journal"), let seq = UInt64(name.dropLast(".journal".count)) {
                found.append(seq)
            }
        }
        current = max(found.max() ?? 0, after)
        return found.sorted()
    }

    public func read(_ seq: UInt64) throws(FSError) -> [UInt8] { try fs.read(path(seq)) }

    /// Deletes segments whose records are in the spool or in a checkpoint.
    public func remove(_ segments: [UInt64]) throws(FSError) {
        guard !segments.isEmpty else { return }
        for s in segments { try fs.remove(path(s)) }
        try fs.syncDirectory(dir)
    }

    /// After replay: the open window holds the records of `replayed` (`bytes` and `records`
    /// of them), and new posts go to a fresh segment.
    public func begin(replayed: [UInt64], bytes: Int, records: Int) throws(FSError) {
        window = replayed
        self.bytes = bytes
        self.records = records
        do {
            try startSegment()
        } catch where [ENOSPC, EDQUOT, EFBIG].contains(error.code) {
            // A full disk is no reason not to start: posts are answered 503 until it has room.
            needsNewSegment = true
        }
    }

    private func startSegment() throws(FSError) {
        let seq = current + 1
        let new = try fs.openAppend(path(seq), mode: 0o600)
        let magic = Array(JournalSegment.magic.utf8)
        do throws(FSError) {
            if let failure = magic.withUnsafeBytes({ m -> FSError? in
                do throws(FSError) { try fs.append(new, path: path(seq), m, UnsafeRawBufferPointer(start: nil, count: 0)) } catch { return error }
                return nil
            }) { throw failure }
            if retirer == nil { try fs.syncDirectory(dir) }
        } catch {
            fs.closeFile(new)
            try? fs.remove(path(seq))
            throw error
        }
        setDescriptor(new)
        compact.reset()
        current = seq
        currentPath = path(seq)
        window.append(seq)
        currentSize = magic.count
        bytes += magic.count
        needsNewSegment = false
    }

    /// Appends one post. On failure nothing of it stays behind (the segment is cut back to
    /// where it was), and the next append starts a new segment.
    public func append(kind: Ingest.Kind, now: Int64, token: String, headers: Ingest.Headers,
                       sdkHeaders: [(name: String, value: String)], body: UnsafeRawBufferPointer) throws(FSError) {
        if needsNewSegment || fd < 0 { try startSegment() }
        encoder.encodePost(kind: kind, now: now, token: token, headers: headers, sdkHeaders: sdkHeaders, body: body)
        let head = encoder.head
        try write(head, body)
    }

    /// Appends a post the fast path read (without impact metrics) in the compact form.
    func appendCompact(_ p: FastPost, body: UnsafeBufferPointer<UInt8>, token: String, now: Int64, interval: String?,
                       sdkHeaders: [(name: String, value: String)]) throws(FSError) {
        if needsNewSegment || fd < 0 { try startSegment() }
        compact.encode(p, body: body, token: token, now: now, interval: interval, sdkHeaders: sdkHeaders)
        try write(compact.record)
    }

    private func write(_ head: [UInt8], _ body: UnsafeRawBufferPointer) throws(FSError) {
        if let failure = head.withUnsafeBytes({ h -> FSError? in
            do throws(FSError) { try write(h, body) } catch { return error }
            return nil
        }) { throw failure }
    }

    private func write(_ head: UnsafeRawBufferPointer, _ body: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) throws(FSError) {
        let size = head.count + body.count
        do throws(FSError) {
            try fs.append(fd, path: currentPath, head, body)
        } catch {
            // The strings this record defined are not on disk: a new segment starts afresh.
            needsNewSegment = true
            try? fs.truncate(fd, path: currentPath, to: currentSize)
            throw error
        }
        currentSize += size
        bytes += size
        records += 1
    }

    /// Window close: new posts go to a new segment. Returns the closed window's segments,
    /// which the caller removes once the window's batches are spooled, and the failure to
    /// start the new segment, if any (posts are then answered 503 until one starts).
    public func rotate() -> (closed: [UInt64], failure: FSError?) {
        pruneSuperseded()
        // Replaced segments not removed yet go with the window: the spool covers them now.
        let closed = superseded.map(\.segment) + window
        superseded = []
        window = []
        bytes = 0
        records = 0
        do throws(FSError) {
            try startSegment()
            return (closed, nil)
        } catch {
            setDescriptor(-1)
            needsNewSegment = true
            return (closed, error)
        }
    }

    /// Writes `snapshot` (the open window as posts) as a new segment that replaces the
    /// window's segments; new posts go after the snapshot, in the same segment. The snapshot
    /// is appended like any post (into the page cache: it survives the process at once), so
    /// the caller's thread does no fsync. The replaced segments go only once the checkpoint is
    /// on disk: at once through `fs` without a `retirer` (fsync of the checkpoint first), else
    /// on the retirer's thread; until then every checkpoint and window close names them too, so
    /// a crash before their removal never lets them count beside what replaced them.
    public func checkpoint(_ snapshot: [JournalRecord]) throws(FSError) {
        pruneSuperseded()
        let seq = current + 1
        let replaced = superseded.map(\.segment) + window
        var out = Array(JournalSegment.magic.utf8)
        var payload: [UInt8] = []
        withUnsafeBytes(of: UInt32(replaced.count).littleEndian) { payload += $0 }
        for s in replaced { withUnsafeBytes(of: s.littleEndian) { payload += $0 } }
        out += JournalEncoder.encode(.checkpoint, payload: payload)
        for r in snapshot { out += JournalEncoder.encode(r) }
        out += JournalEncoder.encode(.checkpointEnd, payload: [])
        let new = try fs.openAppend(path(seq), mode: 0o600)
        do throws(FSError) {
            if let failure = out.withUnsafeBytes({ o -> FSError? in
                do throws(FSError) { try fs.append(new, path: path(seq), o, UnsafeRawBufferPointer(start: nil, count: 0)) } catch { return error }
                return nil
            }) { throw failure }
            if retirer == nil {
                try fs.sync(new, path: path(seq))
                try fs.syncDirectory(dir)
            }
        } catch {
            fs.closeFile(new)
            try? fs.remove(path(seq))
            throw error
        }
        let old = window
        setDescriptor(new)
        compact.reset()
        currentPath = path(seq)
        current = seq
        window = [seq]
        currentSize = out.count
        bytes = out.count
        records = snapshot.count
        needsNewSegment = false
        if let retirer {
            superseded += old.map { (segment: $0, by: seq) }
            retirer.retire(old.map(path), after: path(seq), dir: dir, id: seq)
        } else {
            try remove(replaced)
            superseded = []
        }
    }

    /// Forgets superseded segments the retirer has removed.
    private func pruneSuperseded() {
        guard let retirer, !superseded.isEmpty else { return }
        let through = retirer.retiredThrough
        superseded.removeAll { $0.by <= through }
    }
}

/// Removes the segments a checkpoint replaced once the checkpoint and the directory are
/// fsynced, on a thread of its own (the daemon's `JournalSyncer`), so the event loop never
/// waits on the disk. With one, the journal also leaves the fsync of the directory after a
/// new segment to it: it must come within the fsync interval.
public protocol SegmentRetirer: AnyObject {
    /// Called on the loop, in checkpoint order; `id` grows with each call.
    func retire(_ segments: [String], after checkpoint: String, dir: String, id: UInt64)
    /// The last `id` whose segments are removed (every earlier one's too).
    var retiredThrough: UInt64 { get }
}

public enum JournalSegment {
    /// The first line of every segment. Format 2 checksums its records with CRC-32C (the
    /// CPU's crc32 instruction); format 1, which used zlib's CRC-32, is still read.
    public static let magic = "metrics-proxy-journal 2\n"
    public static let magicFormat1 = "metrics-proxy-journal 1\n"
}
