import CLibevent
import Glibc
import MetricsProxyCore
import Synchronization

/// fsyncs the journal every `[journal] fsync` interval on a thread of its own, as Redis does
/// with `appendfsync everysec`: the loop only writes into the page cache and never waits on
/// the disk. It holds its own duplicate of the segment's descriptor, so the loop may close or
/// replace the segment at any time; a replaced segment gets a last fsync before it is let go.
final class JournalSyncer: @unchecked Sendable {
    private let intervalMillis: Int64
    private var mutex = pthread_mutex_t()
    /// Guarded by `mutex`.
    private var fd: Int32 = -1
    private var retired: [Int32] = []
    /// Set by the loop after each append (no lock on the loop's path), taken by the thread.
    private let dirty = Atomic<Bool>(false)
    private var latencies = Histogram(bounds: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5])
    private var thread = pthread_t()

    init(intervalMillis: Int64) {
        self.intervalMillis = max(1, intervalMillis)
        pthread_mutex_init(&mutex, nil)
    }

    func start() {
        let me = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { arg in
            Unmanaged<JournalSyncer>.fromOpaque(arg!).takeUnretainedValue().run()
            return nil
        }, me)
    }

    /// The loop's journal now appends to `journalFD` (-1: none).
    func track(_ journalFD: Int32) {
        let copy = journalFD >= 0 ? dup(journalFD) : -1
        pthread_mutex_lock(&mutex)
        if fd >= 0 { retired.append(fd) }
        fd = copy
        pthread_mutex_unlock(&mutex)
        dirty.store(true, ordering: .releasing)
    }

    /// Something was appended since the last fsync.
    func markDirty() {
        dirty.store(true, ordering: .releasing)
    }

    var fsyncSeconds: Histogram {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return latencies
    }

    private func run() {
        // Below the event loop: the fsync's writeback competes with the loop for the CPU, and
        // the loop's answers should not wait for it. (Per-thread on Linux: nice applies to the
        // calling thread's id.)
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(mp_gettid()), 10)
        var pause = timespec(tv_sec: Int(intervalMillis / 1000), tv_nsec: Int(intervalMillis % 1000) * 1_000_000)
        while true {
            var rest = timespec()
            while nanosleep(&pause, &rest) != 0 && errno == EINTR { pause = rest }
            pause = timespec(tv_sec: Int(intervalMillis / 1000), tv_nsec: Int(intervalMillis % 1000) * 1_000_000)
            pthread_mutex_lock(&mutex)
            let old = retired
            retired = []
            let wasDirty = dirty.exchange(false, ordering: .acquiringAndReleasing)
            let current = wasDirty && fd >= 0 ? dup(fd) : -1
            pthread_mutex_unlock(&mutex)
            for o in old { fsync(o); close(o) }
            guard current >= 0 else { continue }
            var t0 = timespec(), t1 = timespec()
            clock_gettime(CLOCK_MONOTONIC, &t0)
            fsync(current)
            clock_gettime(CLOCK_MONOTONIC, &t1)
            close(current)
            let seconds = Double(t1.tv_sec - t0.tv_sec) + Double(t1.tv_nsec - t0.tv_nsec) / 1e9
            pthread_mutex_lock(&mutex)
            latencies.observe(seconds)
            pthread_mutex_unlock(&mutex)
        }
    }
}
