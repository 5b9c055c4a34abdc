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

    /// Opens `path` for appending (creating it, failing if it exists, when `create`).
    func openAppend(_ path: String, mode: UInt32, create: Bool) throws(FSError) -> Int32
    /// Writes all of `head`, then all of `body`, at the end of the file.
    func append(_ fd: Int32, path: String, _ head: UnsafeRawBufferPointer, _ body: UnsafeRawBufferPointer) throws(FSError)
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

    public func openAppend(_ path: String, mode: UInt32, create: Bool) throws(FSError) -> Int32 {
        let flags = O_WRONLY | O_APPEND | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0)
        let fd = open(path, flags, mode_t(mode))
        guard fd >= 0 else { throw fail(create ? "create" : "open", path) }
        return fd
    }

    public func append(_ fd: Int32, path: String, _ head: UnsafeRawBufferPointer, _ body: UnsafeRawBufferPointer) throws(FSError) {
        var parts = [iovec(iov_base: UnsafeMutableRawPointer(mutating: head.baseAddress), iov_len: head.count),
                     iovec(iov_base: UnsafeMutableRawPointer(mutating: body.baseAddress), iov_len: body.count)]
        var first = 0
        while first < 2 {
            if parts[first].iov_len == 0 { first += 1; continue }
            let n = parts[first...].withUnsafeBufferPointer { writev(fd, $0.baseAddress, Int32($0.count)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw fail("write", path)
            }
            // A short write (a full disk part way): go on from where it stopped.
            var left = n
            while left > 0, first < 2 {
                let take = min(left, parts[first].iov_len)
                parts[first].iov_base = parts[first].iov_base.map { $0 + take }
                parts[first].iov_len -= take
                left -= take
                if parts[first].iov_len == 0 { first += 1 }
            }
        }
    }

    public func truncate(_ fd: Int32, path: String, to size: Int) throws(FSError) {
        guard ftruncate(fd, off_t(size)) == 0 else { throw fail("ftruncate", path) }
    }

    public func closeFile(_ fd: Int32) { close(fd) }
}
