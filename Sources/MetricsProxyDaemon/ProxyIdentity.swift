import Glibc

/// How a metrics-proxy names itself to the proxy or Unleash it forwards to: in `connectVia` of
/// every instance it reports, and in the `X-Metrics-Proxy-Instance` header of every request.
/// A proxy that finds its own name in a request it received refuses it (508): its upstream
/// leads back to itself, and merging its own traffic would count it again at every turn.
enum ProxyIdentity {
    static let header = "X-Metrics-Proxy-Instance"
    /// The batch's id, which an upstream metrics-proxy uses to take a resent batch only once.
    static let batchHeader = "X-Metrics-Proxy-Batch"

    /// `<host name>-<6 hex digits of the spool directory's path>`: stable across restarts, and
    /// distinct for two proxies on one host (each needs a spool directory of its own). In
    /// Kubernetes the host name is the pod's name.
    static func instanceId(host: String, spoolDir: String) -> String {
        var path = spoolDir
        if !path.hasPrefix("/"), let cwd = getcwd(nil, 0) {
            path = String(cString: cwd) + "/" + path
            free(cwd)
        }
        var h: UInt32 = 0x811c_9dc5
        for b in path.utf8 { h = (h ^ UInt32(b)) &* 0x0100_0193 }
        let hex = String(h & 0xff_ffff, radix: 16)
        return host + "-" + String(repeating: "0", count: 6 - hex.count) + hex
    }
}

/// Holds `<dir>/.lock` (flock) for the life of the process: two proxies on one spool
/// directory would send each other's batches and replay each other's journal, and would
/// share an instance id. The lock goes with the process, however it ends.
enum DirectoryLock {
    static func acquire(_ dir: String, what: String) throws(StartupError) -> Int32 {
        if mkdir(dir, 0o700) != 0 && errno != EEXIST {
            throw StartupError("\(what) \(dir) cannot be created: \(String(cString: strerror(errno)))")
        }
        let path = dir + "/.lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StartupError("\(what) \(dir) is not usable: \(path): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let busy = errno == EWOULDBLOCK
            let reason = String(cString: strerror(errno))
            close(fd)
            throw StartupError(busy
                ? "\(what) \(dir) is in use by another metrics-proxy (it holds \(path)); each proxy needs a directory of its own"
                : "\(what) \(dir) cannot be locked: \(reason)")
        }
        return fd
    }
}
