import Glibc

/// A failed file operation: the errno, what was attempted, on which path.
public struct FSError: Error, Equatable, CustomStringConvertible {
    public var code: Int32
    public var operation: String
    public var path: String

    public init(code: Int32, operation: String, path: String) {
        self.code = code
        self.operation = operation
        self.path = path
    }

    public var description: String { "\(operation) \(path): \(String(cString: strerror(code)))" }
}

/// The spool's seam to the disk: every file operation it makes, so tests can script
/// ENOSPC, EIO and torn writes without filling a disk.
public protocol FileSystem: AnyObject {
    func makeDirectory(_ path: String, mode: UInt32) throws(FSError)
    /// Names (not paths) of the entries of a directory.
    func list(_ dir: String) throws(FSError) -> [String]
    func read(_ path: String) throws(FSError) -> [UInt8]
    /// Creates `path` (failing if it exists), writes all of `bytes`, fsyncs and closes it.
    func writeNew(_ path: String, _ bytes: [UInt8], mode: UInt32) throws(FSError)
    func rename(_ from: String, _ to: String) throws(FSError)
    /// fsync on the directory, so a rename in it survives a crash.
    func syncDirectory(_ dir: String) throws(FSError)
    func remove(_ path: String) throws(FSError)

    // The journal's appends.

    /// Creates `path` (failing if it exists) for appending. What an append wrote is in the
    /// page cache when it returns (it survives the process); the file may end in zero bytes
    /// that readers treat as its end.
    func openAppend(_ path: String, mode: UInt32) throws(FSError) -> Int32
    /// Writes all of `head`, then all of `body`, at the end of the file.
    func append(_ fd: Int32, path: String, _ head: UnsafeRawBufferPointer, _ body: UnsafeRawBufferPointer) throws(FSError)
    /// fsync on a file opened by `openAppend`: what was appended is on disk.
    func sync(_ fd: Int32, path: String) throws(FSError)
    /// Cuts the file back to `size` bytes (a failed append leaves nothing behind).
    func truncate(_ fd: Int32, path: String, to size: Int) throws(FSError)
    func closeFile(_ fd: Int32)
}

/// The real disk, through POSIX calls.
public final class PosixFileSystem: FileSystem {
    public init() {}

    private func fail(_ op: String, _ path: String) -> FSError { FSError(code: errno, operation: op, path: path) }

    public func makeDirectory(_ path: String, mode: UInt32) throws(FSError) {
        if mkdir(path, mode_t(mode)) != 0 {
            guard errno == EEXIST else { throw fail("mkdir", path) }
            var st = stat()
            guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { throw FSError(code: ENOTDIR, operation: "mkdir", path: path) }
        }
        // An existing directory gets the mode it must have (it holds tokens).
        guard chmod(path, mode_t(mode)) == 0 else { throw fail("chmod", path) }
    }

    public func list(_ dir: String) throws(FSError) -> [String] {
        guard let d = opendir(dir) else { throw fail("opendir", dir) }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            // Read the name in place: a dirent is only as long as its name (d_reclen), so
            // copying the struct's whole 256-byte d_name reads past the last entry (ASan).
            let name = String(cString: (UnsafeRawPointer(e) + MemoryLayout<dirent>.offset(of: \dirent.d_name)!)
                .assumingMemoryBound(to: CChar.self))
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    public func read(_ path: String) throws(FSError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw fail("open", path) }
        defer { close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = Glibc.read(fd, &buf, buf.count)
            if n < 0 { if errno == EINTR { continue }; throw fail("read", path) }
            if n == 0 { return out }
            out += buf[0..<n]
        }
    }

    public func writeNew(_ path: String, _ bytes: [UInt8], mode: UInt32) throws(FSError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode_t(mode))
        guard fd >= 0 else { throw fail("create", path) }
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                let e = fail("write", path)
                close(fd)
                throw e
            }
            off += n
        }
        if fsync(fd) != 0 { let e = fail("fsync", path); close(fd); throw e }
        if close(fd) != 0 { throw fail("close", path) }
    }

    public func rename(_ from: String, _ to: String) throws(FSError) {
        guard Glibc.rename(from, to) == 0 else { throw fail("rename", from) }
    }

    public func syncDirectory(_ dir: String) throws(FSError) {
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw fail("open", dir) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw fail("fsync", dir) }
    }

    public func remove(_ path: String) throws(FSError) {
        guard unlink(path) == 0 || errno == ENOENT else { throw fail("unlink", path) }
    }

    /// An append-only file written through a shared mapping: an append is a copy into the page
    /// cache, with no system call, and survives the process the moment the copy is done. The
    /// file grows in `chunk`s reserved with `posix_fallocate` (a full disk fails there, never as
    /// a fault on a mapped page), so it ends in zeros, where readers stop.
    private final class Mapped {
        let base: UnsafeMutableRawPointer
        /// Bytes reserved (the file's size) and bytes written.
        var reserved = 0
        var used = 0
        /// Bytes from the start unmapped already (written, and left to the page cache).
        var released = 0
        /// Bytes from the start made ready for writing (page aligned, or the file's end).
        var populated = 0

        init(base: UnsafeMutableRawPointer) {
            self.base = base
        }
    }

    /// Address space reserved per appended file: an append past it fails (EFBIG). The journal's
    /// checkpoints (`[journal] max_size`, at most 512 MiB) keep segments well below it.
    static let mappingSize = 1 << 30
    static let chunk = 1 << 20
    static let page = 4096
    /// Pages are made ready (and written ones released) this many bytes at a time: one call
    /// instead of a fault per page, in steps small enough not to hold the loop up noticeably.
    static let populateStep = 64 << 10
    private static let zeros = [UInt8](repeating: 0, count: populateStep)
    private var mapped: [Int32: Mapped] = [:]

    public func openAppend(_ path: String, mode: UInt32) throws(FSError) -> Int32 {
        let fd = open(path, O_RDWR | O_CLOEXEC | O_CREAT | O_EXCL, mode_t(mode))
        guard fd >= 0 else { throw fail("create", path) }
        // Only the address space is reserved here; pages past the file's size are never touched.
        guard let base = mmap(nil, Self.mappingSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), base != MAP_FAILED else {
            let e = fail("mmap", path)
            close(fd)
            throw e
        }
        // No readahead: the pages are written, never read. With it, the first fault past each
        // `chunk` read ahead (zeroed and cached) many pages at once, which held the loop up
        // for about half a millisecond every ~3,000 posts (measured: see the README).
        _ = madvise(base, Self.mappingSize, MADV_RANDOM)
        mapped[fd] = Mapped(base: base)
        return fd
    }

    public func append(_ fd: Int32, path: String, _ head: UnsafeRawBufferPointer, _ body: UnsafeRawBufferPointer) throws(FSError) {
        guard let m = mapped[fd] else { throw FSError(code: EBADF, operation: "write", path: path) }
        let n = head.count + body.count
        guard m.used + n <= Self.mappingSize else { throw FSError(code: EFBIG, operation: "write", path: path) }
        if m.used + n > m.reserved {
            let need = m.used + n - m.reserved
            var grow = max(Self.chunk, need)
            var r = posix_fallocate(fd, off_t(m.reserved), off_t(grow))
            if [ENOSPC, EDQUOT, EFBIG].contains(r) && grow > need {
                // A nearly full disk: only what this append needs.
                grow = need
                r = posix_fallocate(fd, off_t(m.reserved), off_t(grow))
            }
            guard r == 0 else { throw FSError(code: r, operation: "fallocate", path: path) }
            m.reserved += grow
        }
        if m.used + n > m.populated {
            // Pages already written are left to the page cache (where they stay, and are
            // written back): unmapped, they no longer count in this process's memory.
            let done = m.used & ~(Self.page - 1)
            if done > m.released {
                _ = madvise(m.base + m.released, done - m.released, MADV_DONTNEED)
                m.released = done
            }
            // The next pages are put in the page cache by writing zeros over them, one call a
            // step, before the copies below touch them: a write makes the pages without
            // reading anything, and the copies then only map them. Faulting them in from the
            // mapping made each page alone, reading it first: 1.1 ms a MiB against 0.3
            // (`Benchmarks/append.c`). Never past the page holding the file's end: beyond it
            // the mapping has no file.
            let end = min((m.reserved + Self.page - 1) & ~(Self.page - 1),
                          max(m.populated + Self.populateStep, (m.used + n + Self.page - 1) & ~(Self.page - 1)))
            var from = m.populated // past everything written: `populated` is never behind `used`
            while from < min(end, m.reserved) {
                let written = Self.zeros.withUnsafeBytes { z in pwrite(fd, z.baseAddress, min(z.count, min(end, m.reserved) - from), off_t(from)) }
                guard written > 0 else { break } // the copies fault the pages in as before
                from += written
            }
            m.populated = end
        }
        if head.count > 0 { (m.base + m.used).copyMemory(from: head.baseAddress!, byteCount: head.count) }
        if body.count > 0 { (m.base + m.used + head.count).copyMemory(from: body.baseAddress!, byteCount: body.count) }
        m.used += n
    }

    public func sync(_ fd: Int32, path: String) throws(FSError) {
        guard fsync(fd) == 0 else { throw fail("fsync", path) }
    }

    public func truncate(_ fd: Int32, path: String, to size: Int) throws(FSError) {
        guard let m = mapped[fd], size <= m.used else { throw FSError(code: EBADF, operation: "ftruncate", path: path) }
        // Zeros, as the reserved tail reads: the reader stops there.
        (m.base + size).initializeMemory(as: UInt8.self, repeating: 0, count: m.used - size)
        m.used = size
    }

    /// Closes the file. The reserved tail stays (zeros, where readers stop): a closed segment
    /// is removed soon after, and cutting it back here made the loop wait on the disk (an
    /// ftruncate frees blocks, which with `discard` is a synchronous trim).
    public func closeFile(_ fd: Int32) {
        if let m = mapped.removeValue(forKey: fd) { munmap(m.base, Self.mappingSize) }
        close(fd)
    }
}
