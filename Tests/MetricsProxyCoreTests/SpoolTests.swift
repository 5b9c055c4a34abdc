import Glibc
import XCTest
@testable import MetricsProxyCore

/// A file system in memory whose next operations can be told to fail, or to tear a write; or
/// that dies (a kill -9) at its `crashAt`-th change to the disk: that change is half done, and
/// every operation after it fails until `revive()`. What it holds then is what the disk holds.
final class ScriptedFileSystem: FileSystem {
    var files: [String: [UInt8]] = [:]
    var dirs: Set<String> = []
    /// errno for the next `writeNew` calls (one per element), e.g. ENOSPC.
    var writeFaults: [Int32] = []
    /// errno for the next `append` calls, e.g. ENOSPC (nothing is written).
    var appendFaults: [Int32] = []
    /// Write only this many bytes and then fail with EIO (a crash mid-write looks the same).
    var tearNextWriteAt: Int?
    var readFaults: [Int32] = []
    /// Changes to the disk so far, and the one the process dies at.
    private(set) var changes = 0
    var crashAt: Int?
    private(set) var crashed = false
    private var descriptors: [Int32: String] = [:]
    private var nextDescriptor: Int32 = 3

    init() {}

    /// What another process would find on this disk now.
    init(copying other: ScriptedFileSystem) {
        files = other.files
        dirs = other.dirs
    }

    /// A fresh process on the same disk.
    func revive() {
        crashed = false
        crashAt = nil
        descriptors = [:]
    }

    /// Counts a change; at `crashAt` it dies, doing `half` first (a torn write).
    private func change(_ op: String, _ path: String, half: () -> Void = {}) throws(FSError) {
        if crashed { throw FSError(code: EIO, operation: "\(op) after the crash", path: path) }
        changes += 1
        if let c = crashAt, changes >= c {
            half()
            crashed = true
            throw FSError(code: EIO, operation: "\(op) (crash)", path: path)
        }
    }

    func makeDirectory(_ path: String, mode: UInt32) throws(FSError) {
        try change("mkdir", path)
        dirs.insert(path)
    }
    func list(_ dir: String) throws(FSError) -> [String] {
        if crashed { throw FSError(code: EIO, operation: "list after the crash", path: dir) }
        return files.keys.filter { $0.hasPrefix(dir + "/") && !$0.dropFirst(dir.count + 1).contains("/") }.map { String($0.dropFirst(dir.count + 1)) }
    }
    func read(_ path: String) throws(FSError) -> [UInt8] {
        if crashed { throw FSError(code: EIO, operation: "read after the crash", path: path) }
        if !readFaults.isEmpty { throw FSError(code: readFaults.removeFirst(), operation: "read", path: path) }
        guard let f = files[path] else { throw FSError(code: ENOENT, operation: "open", path: path) }
        return f
    }
    func writeNew(_ path: String, _ bytes: [UInt8], mode: UInt32) throws(FSError) {
        XCTAssertEqual(mode, 0o600)
        try change("write", path) { files[path] = Array(bytes.prefix(bytes.count / 2)) }
        if !writeFaults.isEmpty { throw FSError(code: writeFaults.removeFirst(), operation: "write", path: path) }
        if let n = tearNextWriteAt {
            tearNextWriteAt = nil
            files[path] = Array(bytes.prefix(n))
            throw FSError(code: EIO, operation: "write", path: path)
        }
        files[path] = bytes
    }
    func rename(_ from: String, _ to: String) throws(FSError) {
        try change("rename", from)
        guard let f = files.removeValue(forKey: from) else { throw FSError(code: ENOENT, operation: "rename", path: from) }
        files[to] = f
    }
    func syncDirectory(_ dir: String) throws(FSError) { try change("fsync", dir) }
    func remove(_ path: String) throws(FSError) {
        try change("unlink", path)
        files[path] = nil
    }
    func openAppend(_ path: String, mode: UInt32) throws(FSError) -> Int32 {
        XCTAssertEqual(mode, 0o600)
        try change("open", path) { files[path] = [] }
        guard files[path] == nil else { throw FSError(code: EEXIST, operation: "create", path: path) }
        files[path] = []
        nextDescriptor += 1
        descriptors[nextDescriptor] = path
        return nextDescriptor
    }
    func append(_ fd: Int32, path: String, _ head: UnsafeRawBufferPointer, _ body: UnsafeRawBufferPointer) throws(FSError) {
        guard let file = descriptors[fd] else { throw FSError(code: EBADF, operation: "write", path: path) }
        let all = Array(head) + Array(body)
        try change("write", file) { files[file, default: []] += all.prefix(all.count / 2) }
        if !appendFaults.isEmpty { throw FSError(code: appendFaults.removeFirst(), operation: "write", path: path) }
        files[file, default: []] += all
    }
    func sync(_ fd: Int32, path: String) throws(FSError) {
        guard let file = descriptors[fd] else { throw FSError(code: EBADF, operation: "fsync", path: path) }
        try change("fsync", file)
    }
    func truncate(_ fd: Int32, path: String, to size: Int) throws(FSError) {
        guard let file = descriptors[fd] else { throw FSError(code: EBADF, operation: "ftruncate", path: path) }
        try change("ftruncate", file)
        files[file] = Array(files[file, default: []].prefix(size))
    }
    func closeFile(_ fd: Int32) { descriptors[fd] = nil }
}

final class SpoolTests: XCTestCase {
    func batch(_ id: String, token: String = "p:development.s", body: String = #"{"applications":[],"metrics":[]}"#, created: Int64 = 1000) -> Batch {
        Batch(id: id, token: token, path: "/client/metrics/bulk", body: Array(body.utf8), created: created, entries: 0)
    }

    func testFileRoundTripAndEveryTearOrFlipIsCaught() throws {
        let b = batch("000001795860000000-0001", body: #"{"applications":[],"metrics":[{"featureName":"f"}]}"#)
        let bytes = SpoolFile.encode(b)
        XCTAssertEqual(try SpoolFile.decode(bytes), b)
        for cut in 0..<bytes.count {
            XCTAssertThrowsError(try SpoolFile.decode(Array(bytes.prefix(cut))), "truncated at \(cut)")
        }
        for i in stride(from: 0, to: bytes.count, by: 3) {
            var flipped = bytes
            flipped[i] ^= 0x04
            XCTAssertThrowsError(try SpoolFile.decode(flipped), "bit flipped at byte \(i)")
        }
    }

    func testOpenRemovesTempFilesSetsAsideCorruptAndIndexesInOrder() throws {
        let fs = ScriptedFileSystem()
        fs.files["/s/000000000000002-0000.batch"] = SpoolFile.encode(batch("000000000000002-0000"))
        fs.files["/s/000000000000001-0000.batch"] = SpoolFile.encode(batch("000000000000001-0000"))
        fs.files["/s/000000000000003-0000.batch"] = Array(SpoolFile.encode(batch("000000000000003-0000")).dropLast(2))
        fs.files["/s/000000000000004-0000.tmp"] = [1, 2, 3]
        let spool = Spool(dir: "/s", fs: fs, maxSize: 1 << 20, maxAgeMillis: 1 << 40)
        let aside = try spool.open()
        XCTAssertEqual(aside.map(\.name), ["000000000000003-0000.batch"])
        XCTAssertEqual(spool.entries.map(\.id), ["000000000000001-0000", "000000000000002-0000"])
        XCTAssertNotNil(fs.files["/s/corrupt/000000000000003-0000.batch"])
        XCTAssertNil(fs.files["/s/000000000000004-0000.tmp"])
        XCTAssertEqual(spool.corruptCount, 1)
        XCTAssertTrue(fs.dirs.isSuperset(of: ["/s", "/s/corrupt", "/s/rejected"]))
    }

    func testENOSPCAndEIOLeaveNothingBehindAndTheNextWriteWorks() throws {
        let fs = ScriptedFileSystem()
        let spool = Spool(dir: "/s", fs: fs, maxSize: 1 << 20, maxAgeMillis: 1 << 40)
        _ = try spool.open()
        fs.writeFaults = [ENOSPC, EIO]
        XCTAssertThrowsError(try spool.store(batch("1"))) { XCTAssertEqual(($0 as? FSError)?.code, ENOSPC) }
        XCTAssertThrowsError(try spool.store(batch("1"))) { XCTAssertEqual(($0 as? FSError)?.code, EIO) }
        fs.tearNextWriteAt = 10
        XCTAssertThrowsError(try spool.store(batch("1")))
        XCTAssertEqual(fs.files.keys.filter { $0.hasPrefix("/s/") }, [], "no torn or temporary file is left")
        XCTAssertEqual(spool.entries, [])
        try spool.store(batch("1"))
        XCTAssertEqual(try spool.load("1"), batch("1"))
    }

    func testLoadOfAFileDamagedLaterSetsItAside() throws {
        let fs = ScriptedFileSystem()
        let spool = Spool(dir: "/s", fs: fs, maxSize: 1 << 20, maxAgeMillis: 1 << 40)
        _ = try spool.open()
        try spool.store(batch("1"))
        fs.files["/s/1.batch"]![40] ^= 1
        XCTAssertThrowsError(try spool.load("1"))
        XCTAssertNotNil(fs.files["/s/corrupt/1.batch"])
        XCTAssertFalse(spool.contains("1"))
        fs.readFaults = [EIO]
        try spool.store(batch("2"))
        XCTAssertThrowsError(try spool.load("2")) { e in
            guard case .io = e as! Spool.LoadFailure else { return XCTFail("an I/O error is not corruption") }
        }
        XCTAssertTrue(spool.contains("2"), "an I/O error keeps the batch")
    }

    func testCapsDropOldestFirstAndNeverInFlight() throws {
        let fs = ScriptedFileSystem()
        let one = SpoolFile.encode(batch("x")).count
        let spool = Spool(dir: "/s", fs: fs, maxSize: one * 3, maxAgeMillis: 10_000)
        _ = try spool.open()
        for i in 1...5 { try spool.store(batch("\(i)", created: Int64(i) * 1000)) }
        let dropped = spool.enforceCaps(now: 5000, busy: ["1"])
        XCTAssertEqual(dropped.map(\.0.id), ["2", "3"])
        XCTAssertEqual(dropped.map(\.1), [.maxSize, .maxSize])
        XCTAssertEqual(spool.entries.map(\.id), ["1", "4", "5"])
        XCTAssertLessThanOrEqual(spool.bytes, one * 3)
        let aged = spool.enforceCaps(now: 14_500, busy: [])
        XCTAssertEqual(aged.map(\.0.id), ["1", "4"])
        XCTAssertEqual(spool.dropped, [.maxSize: 2, .maxAge: 2])
    }

    func testRejectMovesToRejected() throws {
        let fs = ScriptedFileSystem()
        let spool = Spool(dir: "/s", fs: fs, maxSize: 1 << 20, maxAgeMillis: 1 << 40)
        _ = try spool.open()
        try spool.store(batch("1"))
        try spool.reject("1")
        XCTAssertNotNil(fs.files["/s/rejected/1.batch"])
        XCTAssertEqual(spool.rejectedCount, 1)
        XCTAssertEqual(spool.bytes, 0)
    }

    func testPosixFileSystemWritesPrivateFilesInAPrivateDirectory() throws {
        let dir = "/tmp/mp-spool-test-\(getpid())"
        defer { _ = try? PosixFileSystem().list(dir).forEach { unlink("\(dir)/\($0)") }; rmdir("\(dir)/corrupt"); rmdir("\(dir)/rejected"); rmdir(dir) }
        let spool = Spool(dir: dir, fs: PosixFileSystem(), maxSize: 1 << 20, maxAgeMillis: 1 << 40)
        _ = try spool.open()
        try spool.store(batch("1"))
        var st = stat()
        XCTAssertEqual(stat(dir, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o700)
        XCTAssertEqual(stat("\(dir)/1.batch", &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        XCTAssertEqual(try Spool(dir: dir, fs: PosixFileSystem(), maxSize: 1 << 20, maxAgeMillis: 1 << 40).open().count, 0)
        try spool.remove("1")
        XCTAssertEqual(stat("\(dir)/1.batch", &st), -1)
    }

    /// The journal's appends through the mapping: what was appended reads back byte for byte,
    /// across the 64 KiB steps whose pages are made ready by writing zeros (never over what is
    /// written) and the 1 MiB steps of the file's growth, with appends larger than a step. The
    /// file may end in zeros (reserved space).
    func testPosixAppendsReadBackExactlyAcrossEveryStep() throws {
        let path = "/tmp/mp-append-test-\(getpid())"
        defer { unlink(path) }
        let fs = PosixFileSystem()
        var expected: [UInt8] = []
        var rng = SystemRandomNumberGenerator()
        func append(_ fd: Int32, _ n: Int) throws {
            let head = (0..<min(n, 13)).map { _ in UInt8.random(in: 1...255, using: &rng) }
            let body = (0..<(n - head.count)).map { _ in UInt8.random(in: 1...255, using: &rng) }
            try head.withUnsafeBytes { h in try body.withUnsafeBytes { b in try fs.append(fd, path: path, h, b) } }
            expected += head + body
        }
        let fd = try fs.openAppend(path, mode: 0o600)
        try append(fd, 25) // not page aligned from here on
        for i in 0..<9000 { try append(fd, 100 + (i * 37) % 400) }
        try append(fd, 150_000) // past a whole step at once
        for i in 0..<300 { try append(fd, 50 + i) }
        fs.closeFile(fd)
        let read = try fs.read(path)
        XCTAssertGreaterThan(expected.count, 2 << 20)
        XCTAssertEqual(Array(read.prefix(expected.count)), expected)
        XCTAssertTrue(read.dropFirst(expected.count).allSatisfy { $0 == 0 }, "only zeros past the appends")
    }
}
