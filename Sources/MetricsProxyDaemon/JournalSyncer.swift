import CLibevent
import Glibc
import MetricsProxyCore
import Synchronization

/// The journal's disk waits, on a thread of its own so the event loop never has one: the
/// fsync every `[journal] fsync` interval, as Redis does with `appendfsync everysec` (the
/// loop only writes into the page cache), the fsync of the directory after a new segment,
/// and the removal of segments a checkpoint replaced, once the checkpoint is on disk. It holds
/// its own duplicate of the segment's descriptor, so the loop may close or replace the
/// segment at any time; a replaced segment gets a last fsync before it is let go.
final class JournalSyncer: SegmentRetirer, @unchecked Sendable {
    /// nil: `[journal] fsync = off`, no periodic fsync (checkpoints are still made durable
    /// before the segments they replace go).
    private let intervalMillis: Int64?
    private var mutex = pthread_mutex_t()
    /// Guarded by `mutex`.
    private var fd: Int32 = -1
    private var retired: [Int32] = []
    private var directory: String?
    private var jobs: [(id: UInt64, segments: [String], checkpoint: String, dir: String)] = []
    private var failures = 0
    /// Set by the loop after each append (no lock on the loop's path), taken by the thread.
    private let dirty = Atomic<Bool>(false)
    private let done = Atomic<UInt64>(0)
    /// Only its directory calls, which keep no state: safe on this thread.
    private let disk = PosixFileSystem()
    private var latencies = Histogram(bounds: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5])
    private var thread = pthread_t()

    init(intervalMillis: Int64?) {
        self.intervalMillis = intervalMillis.map { max(1, $0) }
        pthread_mutex_init(&mutex, nil)
    }

    func start() {
        let me = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { arg in
            Unmanaged<JournalSyncer>.fromOpaque(arg!).takeUnretainedValue().run()
            return nil
        }, me)
    }

    /// The loop's journal now appends to `journalFD` (-1: none), a new segment in `dir`.
    func track(_ journalFD: Int32, dir: String) {
        let copy = journalFD >= 0 ? dup(journalFD) : -1
        pthread_mutex_lock(&mutex)
        if fd >= 0 { retired.append(fd) }
        fd = copy
        if copy >= 0 { directory = dir }
        pthread_mutex_unlock(&mutex)
        dirty.store(true, ordering: .releasing)
    }

    /// Something was appended since the last fsync.
    func markDirty() {
        dirty.store(true, ordering: .releasing)
    }

    func retire(_ segments: [String], after checkpoint: String, dir: String, id: UInt64) {
        pthread_mutex_lock(&mutex)
        jobs.append((id, segments, checkpoint, dir))
        pthread_mutex_unlock(&mutex)
    }

    var retiredThrough: UInt64 { done.load(ordering: .acquiring) }

    var fsyncSeconds: Histogram {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return latencies
    }

    /// Removals that failed and wait for the next pass.
    var retireFailures: Int {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return failures
    }

    private func run() {
        // Below the event loop: the fsync's writeback competes with the loop for the CPU, and
        // the loop's answers should not wait for it. (Per-thread on Linux: nice applies to the
        // calling thread's id.)
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(mp_gettid()), 10)
        let every = intervalMillis ?? 1000
        var pause = timespec(tv_sec: Int(every / 1000), tv_nsec: Int(every % 1000) * 1_000_000)
        while true {
            var rest = timespec()
            while nanosleep(&pause, &rest) != 0 && errno == EINTR { pause = rest }
            pause = timespec(tv_sec: Int(every / 1000), tv_nsec: Int(every % 1000) * 1_000_000)
            pthread_mutex_lock(&mutex)
            let old = retired
            retired = []
            let newDirectory = directory
            directory = nil
            let wasDirty = dirty.exchange(false, ordering: .acquiringAndReleasing)
            let current = intervalMillis != nil && wasDirty && fd >= 0 ? dup(fd) : -1
            let pending = jobs
            pthread_mutex_unlock(&mutex)
            for o in old {
                if intervalMillis != nil { fsync(o) }
                close(o)
            }
            if current >= 0 {
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
            // The new segment's name, after its first records: within the interval, as they.
            if let newDirectory, intervalMillis != nil { try? disk.syncDirectory(newDirectory) }
            // In order: a job that fails stays first, and no later one is counted done.
            var finished = 0
            for job in pending {
                guard retire(job) else { break }
                done.store(job.id, ordering: .releasing)
                finished += 1
            }
            pthread_mutex_lock(&mutex)
            jobs.removeFirst(finished)
            if finished < pending.count { failures += 1 }
            pthread_mutex_unlock(&mutex)
        }
    }

    /// The checkpoint and its name on disk, then the segments it replaced gone. A checkpoint
    /// already removed was in a window the spool holds, with these segments: they go too.
    private func retire(_ job: (id: UInt64, segments: [String], checkpoint: String, dir: String)) -> Bool {
        let c = open(job.checkpoint, O_RDONLY | O_CLOEXEC)
        if c >= 0 {
            let synced = fsync(c) == 0
            close(c)
            guard synced else { return false }
        } else if errno != ENOENT {
            return false
        }
        do {
            try disk.syncDirectory(job.dir)
            for s in job.segments { try disk.remove(s) } // a segment already gone is no failure
            try disk.syncDirectory(job.dir)
            return true
        } catch {
            return false
        }
    }
}
