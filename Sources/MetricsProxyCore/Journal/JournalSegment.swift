import Glibc

/// The journal on disk: a directory (0700) of segment files `<seq>.journal` (0600: they hold
/// tokens), numbered in the order they were started. The open window's posts are in the last
/// segments; a window close starts a new segment, and the closed window's segments are
/// removed once its batches are in the spool. A checkpoint writes the open window whole into
/// a new segment (`*.tmp`, fsync, rename), which then names the segments it replaces.
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
        let new = try fs.openAppend(path(seq), mode: 0o600, create: true)
        let magic = Array(JournalSegment.magic.utf8)
        do throws(FSError) {
            if let failure = magic.withUnsafeBytes({ m -> FSError? in
                do throws(FSError) { try fs.append(new, path: path(seq), m, UnsafeRawBufferPointer(start: nil, count: 0)) } catch { return error }
                return nil
            }) { throw failure }
            try fs.syncDirectory(dir)
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
        let closed = window
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
    /// window's segments, then removes them; new posts go after the snapshot.
    public func checkpoint(_ snapshot: [JournalRecord]) throws(FSError) {
        let seq = current + 1
        var out = Array(JournalSegment.magic.utf8)
        var payload: [UInt8] = []
        withUnsafeBytes(of: UInt32(window.count).littleEndian) { payload += $0 }
        for s in window { withUnsafeBytes(of: s.littleEndian) { payload += $0 } }
        out += JournalEncoder.encode(.checkpoint, payload: payload)
        for r in snapshot { out += JournalEncoder.encode(r) }
        out += JournalEncoder.encode(.checkpointEnd, payload: [])
        let tmp = path(seq) + ".tmp"
        do throws(FSError) {
            try fs.writeNew(tmp, out, mode: 0o600)
            try fs.rename(tmp, path(seq))
            try fs.syncDirectory(dir)
        } catch {
            try? fs.remove(tmp)
            throw error
        }
        let new: Int32
        do { new = try fs.openAppend(path(seq), mode: 0o600, create: false) } catch {
            // The checkpoint stands for the window; posts wait for a segment they can go in.
            let replaced = window
            window = [seq]
            current = seq
            setDescriptor(-1)
            needsNewSegment = true
            try? remove(replaced)
            throw error
        }
        let replaced = window
        setDescriptor(new)
        compact.reset()
        currentPath = path(seq)
        current = seq
        window = [seq]
        currentSize = out.count
        bytes = out.count
        records = snapshot.count
        needsNewSegment = false
        try remove(replaced)
    }
}

public enum JournalSegment {
    /// The first line of every segment.
    public static let magic = "metrics-proxy-journal 1\n"
}
