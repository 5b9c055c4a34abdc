import CLibevent
import Glibc
import MetricsProxyCore

/// One line per event on stderr, logfmt or JSON. Never pass a token: use `Token.fingerprint`.
public final class Logger {
    public var level: LogLevel
    public var format: LogFormat

    public init(level: LogLevel, format: LogFormat) {
        self.level = level
        self.format = format
    }

    public func debug(_ event: String, _ fields: [(String, String)] = []) { emit(.debug, event, fields) }
    public func info(_ event: String, _ fields: [(String, String)] = []) { emit(.info, event, fields) }
    public func warn(_ event: String, _ fields: [(String, String)] = []) { emit(.warn, event, fields) }
    public func error(_ event: String, _ fields: [(String, String)] = []) { emit(.error, event, fields) }

    public func emit(_ l: LogLevel, _ event: String, _ fields: [(String, String)]) {
        guard l >= level else { return }
        let all = [("ts", Timestamp.iso8601(nowMillis())), ("level", l.name), ("event", event)] + fields
        var line: String
        switch format {
        case .logfmt:
            line = all.map { "\($0.0)=\(logfmtValue($0.1))" }.joined(separator: " ")
        case .json:
            var w = JSONWriter()
            w.beginObject()
            for (k, v) in all { w.key(k); w.string(v) }
            w.endObject()
            line = String(decoding: w.bytes, as: UTF8.self)
        }
        line += "\n"
        line.utf8CString.withUnsafeBufferPointer { p in
            _ = write(2, p.baseAddress, p.count - 1)
        }
    }

    private func logfmtValue(_ v: String) -> String {
        let plain = !v.isEmpty && v.utf8.allSatisfy { $0 > 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "=") && $0 < 0x7F }
        if plain { return v }
        var w = JSONWriter()
        w.string(v)
        return String(decoding: w.bytes, as: UTF8.self)
    }
}

/// libevent's log callback takes no context pointer, so the logger it writes to is a global,
/// set once at start-up and used only on the loop thread.
nonisolated(unsafe) private var libeventLogger: Logger?

extension Logger {
    /// Routes libevent's own warnings and errors into this log (event_set_log_callback).
    func routeLibeventMessages() {
        libeventLogger = self
        event_set_log_callback { severity, message in
            let level: LogLevel = switch severity {
            case EVENT_LOG_DEBUG: .debug
            case EVENT_LOG_MSG: .info
            case EVENT_LOG_WARN: .warn
            default: .error
            }
            libeventLogger?.emit(level, "libevent", [("message", message.map { String(cString: $0) } ?? "")])
        }
    }
}

/// Wall-clock time in epoch milliseconds.
public func nowMillis() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// Monotonic time in milliseconds, for deadlines.
func monotonicMillis() -> Int64 { monotonicMicros() / 1000 }

/// Monotonic time in microseconds, for durations that can be shorter than a millisecond.
func monotonicMicros() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
}
