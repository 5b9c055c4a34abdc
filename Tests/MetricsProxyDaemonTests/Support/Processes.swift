import Foundation
import XCTest

/// Where the repository and the built binary are.
enum Paths {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let fixtures = repo.appendingPathComponent("Tests/Fixtures")
    /// `metrics-proxy` next to the test bundle, unless METRICS_PROXY_BIN says otherwise.
    static var binary: URL {
        if let p = ProcessInfo.processInfo.environment["METRICS_PROXY_BIN"] { return URL(fileURLWithPath: p) }
        let exe = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
        return exe.deletingLastPathComponent().appendingPathComponent("metrics-proxy")
    }

    static func tempDir(_ name: String) -> URL {
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("mp-\(name)-\(UUID().uuidString.prefix(8))")
        try! FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }
}

/// Polls for up to `seconds`; true if the condition came true (no failure when it did not).
func waitForQuietly(seconds: TimeInterval, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        usleep(20_000)
    }
    return false
}

/// Polls `condition` until it holds or `timeout` passes: waiting on an event, never a fixed sleep.
@discardableResult
func waitFor(_ what: String, timeout: TimeInterval = 10, file: StaticString = #filePath, line: UInt = #line,
             _ condition: () throws -> Bool) rethrows -> Bool {
    if try waitForQuietly(seconds: timeout, condition) { return true }
    XCTFail("timed out after \(timeout)s waiting for \(what)", file: file, line: line)
    return false
}

/// The real `metrics-proxy` binary, started with a config file written for the test.
final class ProxyProcess {
    let process = Process()
    let dir: URL
    let logURL: URL
    let configURL: URL
    private(set) var tcpPort: UInt16 = 0
    let unixPath: String

    /// The spool directory, kept across restarts when passed to the next ProxyProcess.
    let spoolDir: String

    /// `config` is proxy.conf text; `{UNIX}` in it is replaced by a socket path in a temp dir,
    /// `{SPOOL}` by `spoolDir` (a fresh one unless given).
    /// `maxOpenFiles` starts it under `ulimit -n` (the shell execs it, so the pid is the proxy's),
    /// `maxFileBlocks` under `ulimit -f` (512-byte blocks in sh: no file may grow past it, a full disk for one process).
    init(config: String, name: String = "proxy", spoolDir: String? = nil, environment: [String: String] = [:],
         waitUntilListening: Bool = true, maxOpenFiles: Int? = nil, maxFileBlocks: Int? = nil) throws {
        dir = Paths.tempDir(name)
        unixPath = dir.appendingPathComponent("proxy.sock").path
        self.spoolDir = spoolDir ?? dir.appendingPathComponent("spool").path
        configURL = dir.appendingPathComponent("proxy.conf")
        logURL = dir.appendingPathComponent("proxy.log")
        try config.replacingOccurrences(of: "{UNIX}", with: unixPath).replacingOccurrences(of: "{SPOOL}", with: self.spoolDir)
            .write(to: configURL, atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        if maxOpenFiles != nil || maxFileBlocks != nil {
            let limits = [maxOpenFiles.map { "ulimit -n \($0)" }, maxFileBlocks.map { "ulimit -f \($0)" }].compactMap { $0 }
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", (limits + ["exec \"$0\" \"$@\""]).joined(separator: " && "), Paths.binary.path,
                                 "--config", configURL.path]
        } else {
            process.executableURL = Paths.binary
            process.arguments = ["--config", configURL.path]
        }
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        // Tests/sanitizers.sh checks the proxy for leaks but not the test runner.
        if let asan = env["METRICS_PROXY_ASAN_OPTIONS"] { env["ASAN_OPTIONS"] = asan }
        process.environment = env
        process.standardError = try FileHandle(forWritingTo: logURL)
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        if waitUntilListening {
            let listening = { (line: Substring) in line.contains("event=listening") || line.contains(#""event":"listening""#) }
            waitFor("the proxy to listen", timeout: 15) { log.split(separator: "\n").contains(where: listening) || !process.isRunning }
            guard let line = log.split(separator: "\n").first(where: listening) else {
                throw HTTPClient.Failure(description: "proxy did not start: \(log)")
            }
            if let r = line.range(of: #"127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                tcpPort = UInt16(line[r].split(separator: ":")[1])!
            }
        }
    }

    deinit {
        // Cleanup only: a test that wants a graceful stop sends SIGTERM itself.
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
        // No test's token may ever reach a log line (tokens are shown as a short hash).
        let text = log
        for secret in tokenSecrets where text.contains(secret) {
            XCTFail("a token reached the log of \(configURL.path)")
        }
        // Under Tests/sanitizers.sh the proxy is instrumented: any report fails the test.
        for sanitizer in ["AddressSanitizer", "LeakSanitizer", "ThreadSanitizer"] where text.contains(sanitizer) {
            XCTFail("\(sanitizer) reported in the proxy's log:\n\(text.suffix(30000))")
        }
        try? FileManager.default.removeItem(at: dir)
    }

    /// The batch files waiting in the spool (not corrupt/ or rejected/).
    var spooledFiles: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: spoolDir)) ?? []).filter { $0.hasSuffix(".batch") }.sorted()
    }

    var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    func tcp() -> HTTPClient { HTTPClient(.tcp("127.0.0.1", tcpPort)) }
    func unix() -> HTTPClient { HTTPClient(.unix(unixPath)) }

    func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

    /// Open file descriptors of the proxy process.
    var openFiles: Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process.processIdentifier)/fd"))?.count ?? -1 }

    /// CPU time (user + system) the proxy has used, in seconds.
    var cpuSeconds: Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return -1 }
        let f = stat[stat.index(after: close)...].split(separator: " ")
        return (Double(f[11])! + Double(f[12])!) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Waits for the process to exit and returns its status.
    func waitForExit(timeout: TimeInterval = 20) -> Int32? {
        guard waitFor("the proxy to exit", timeout: timeout, { !process.isRunning }) else { return nil }
        return process.terminationStatus
    }
}

/// Runs `metrics-proxy` with arguments to completion (for --check-config and start-up errors).
func runProxy(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
    let p = Process()
    p.executableURL = Paths.binary
    p.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    p.environment = env
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

/// Runs `body` for 0..<n on n threads at once (not a pool sized to the cores: every poster
/// must be connected at the same time) and returns the results in order.
func parallel<T: Sendable>(_ n: Int, _ body: @escaping @Sendable (Int) -> T) -> [T] {
    let results = ParallelResults<T>()
    let group = DispatchGroup()
    for i in 0..<n {
        group.enter()
        let t = Thread {
            let v = body(i)
            results.lock.lock(); results.values[i] = v; results.lock.unlock()
            group.leave()
        }
        t.start()
    }
    group.wait()
    return (0..<n).map { results.values[$0]! }
}

private final class ParallelResults<T>: @unchecked Sendable {
    let lock = NSLock()
    var values: [Int: T] = [:]
}

/// Runs one of the repository's Python scripts (a path from the repository's root) and returns
/// its exit status and everything it printed, which is also printed for the test log.
func runPythonScript(_ path: String, _ arguments: [String]) throws -> (status: Int32, report: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", Paths.repo.appendingPathComponent(path).path] + arguments
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let report = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    print(report)
    return (p.terminationStatus, report)
}
