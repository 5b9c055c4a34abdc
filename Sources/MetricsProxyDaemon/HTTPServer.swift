import CLibevent
import Glibc
import MetricsProxyCore

/// Owns the `evhttp` and its listening sockets (TCP and Unix), and hands every request to
/// `handle`, on the loop thread.
final class HTTPServer {
    private let http: OpaquePointer
    private let handle: (HTTPRequest) -> Void
    /// Counts, caps and times the connections; freed after the evhttp.
    private(set) var guardian: ConnectionGuard!
    private var bound: [OpaquePointer] = []
    private var unixPath: String?
    /// What each listener is bound to, for logs and tests (`127.0.0.1:43127`, `unix:/path`).
    private(set) var addresses: [String] = []

    init(loop: EventLoop, config: Config, log: Logger, telemetry: Telemetry,
         handle: @escaping (HTTPRequest) -> Void) throws(StartupError) {
        guard let http = evhttp_new(loop.base) else { throw StartupError("cannot create the HTTP server") }
        self.http = http
        self.handle = handle
        guardian = ConnectionGuard(loop: loop, http: http, maxConnections: config.listen.maxConnections,
                                   requestTimeoutMillis: config.listen.requestTimeout.milliseconds,
                                   minRate: config.listen.minRate, log: log, telemetry: telemetry)
        update(config)
        // An empty 202 carries no Content-Type, as the Unleash server's does (libevent would
        // otherwise add text/html).
        evhttp_set_default_content_type(http, nil)
        // Let every method through so known paths can answer 405 with Allow (libevent says 501).
        let methods = EVHTTP_REQ_GET.rawValue | EVHTTP_REQ_POST.rawValue | EVHTTP_REQ_HEAD.rawValue
            | EVHTTP_REQ_PUT.rawValue | EVHTTP_REQ_DELETE.rawValue | EVHTTP_REQ_OPTIONS.rawValue
            | EVHTTP_REQ_PATCH.rawValue
        evhttp_set_allowed_methods(http, UInt16(methods))
        // `self` outlives the evhttp, which is freed in deinit: an unretained pointer is safe.
        evhttp_set_gencb(http, { req, arg in
            guard let req else { return }
            let me = Unmanaged<HTTPServer>.fromOpaque(arg!).takeUnretainedValue()
            me.guardian.requestRead(on: evhttp_request_get_connection(req))
            me.handle(HTTPRequest(raw: req))
        }, Unmanaged.passUnretained(self).toOpaque())
    }

    /// Applies (reloaded) limits; body, header and idle limits apply to connections accepted
    /// from now on.
    func update(_ config: Config) {
        evhttp_set_max_body_size(http, config.listen.maxBody)
        evhttp_set_max_headers_size(http, config.limits.maxHeaderSize)
        evhttp_set_timeout(http, Int32(max(1, config.listen.idleTimeout.milliseconds / 1000)))
        guardian.maxConnections = config.listen.maxConnections
        guardian.requestTimeoutMillis = config.listen.requestTimeout.milliseconds
        guardian.minRate = config.listen.minRate
    }

    deinit {
        // The listeners go first in evhttp_free, then every connection (whose close the guard
        // still hears).
        guardian.detach(http: http)
        evhttp_free(http)
        removeUnixSocketFile()
    }

    func listenTCP(_ hp: HostPort) throws(StartupError) {
        guard let handle = evhttp_bind_socket_with_handle(http, hp.host, hp.port) else {
            throw StartupError("cannot listen on \(hp): \(String(cString: strerror(errno)))")
        }
        bound.append(handle)
        guardian.watch(listener: evhttp_bound_socket_get_listener(handle))
        let fd = evhttp_bound_socket_get_fd(handle)
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let port: UInt16 = withUnsafeMutablePointer(to: &ss) { p in
            _ = p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
            if p.pointee.ss_family == sa_family_t(AF_INET6) {
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
            }
            return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
        }
        addresses.append(HostPort(host: hp.host, port: port).description)
    }

    /// Binds a Unix socket with `mode`. A stale socket file is replaced; a live one (another
    /// process answers on it) is an error, as is any other kind of file at the path.
    func listenUnix(path: String, mode: UInt32) throws(StartupError) {
        try Self.checkSocketDirectory(of: path)
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                throw StartupError("cannot listen on unix:\(path): a file that is not a socket is in the way")
            }
            if Self.socketAnswers(path) {
                throw StartupError("cannot listen on unix:\(path): another process is listening on it")
            }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw StartupError("cannot create a Unix socket: \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        guard mp_unix_sockaddr(&addr, path) == 0 else { close(fd); throw StartupError("unix socket path too long: \(path)") }
        let ok = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard ok == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw StartupError("cannot listen on unix:\(path): \(why)")
        }
        unixPath = path
        guard chmod(path, mode_t(mode)) == 0, listen(fd, 511) == 0, evutil_make_socket_nonblocking(fd) == 0,
              let handle = evhttp_accept_socket_with_handle(http, fd) else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw StartupError("cannot listen on unix:\(path): \(why)")
        }
        bound.append(handle)
        guardian.watch(listener: evhttp_bound_socket_get_listener(handle))
        addresses.append("unix:\(path)")
    }

    /// Stops accepting new connections; requests already read are still answered.
    func stopAccepting() {
        guardian.forgetListeners()
        for handle in bound { evhttp_del_accept_socket(http, handle) }
        bound = []
        removeUnixSocketFile()
    }

    private func removeUnixSocketFile() {
        if let unixPath { unlink(unixPath) }
        unixPath = nil
    }

    /// The socket's directory must belong to us (or root) and not be writable by others:
    /// anyone who can write there could replace the socket and read every SDK's token. A
    /// missing directory (one level) is created 0750.
    static func checkSocketDirectory(of path: String) throws(StartupError) {
        let dir = socketDirectory(of: path)
        var st = stat()
        if stat(dir, &st) != 0 {
            guard errno == ENOENT, mkdir(dir, 0o750) == 0 else {
                throw StartupError("cannot listen on unix:\(path): directory \(dir): \(String(cString: strerror(errno)))")
            }
        }
        if let problem = socketDirectoryProblem(dir) { throw StartupError("cannot listen on unix:\(path): \(problem)") }
    }

    /// The directory a socket path is in.
    static func socketDirectory(of path: String) -> String {
        let dir = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return dir.isEmpty ? (path.hasPrefix("/") ? "/" : ".") : dir
    }

    /// Why this proxy may not put its socket in the existing directory `dir`: whoever else can
    /// write there could put a socket of their own in its place and read the SDKs' tokens.
    static func socketDirectoryProblem(_ dir: String) -> String? {
        var st = stat()
        guard stat(dir, &st) == 0 else { return "directory \(dir): \(String(cString: strerror(errno)))" }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { return "\(dir) is not a directory" }
        let mode = String(st.st_mode & 0o7777, radix: 8)
        if st.st_mode & S_IWOTH != 0 {
            return "directory \(dir) is writable by every user (mode \(mode)); put the socket in a directory only this user can write, such as a subdirectory the proxy creates"
        }
        guard st.st_uid == geteuid() || st.st_uid == 0 else {
            return "directory \(dir) belongs to another user (uid \(st.st_uid))"
        }
        guard access(dir, W_OK | X_OK) == 0 else {
            // What a hostPath directory the kubelet made looks like (root, 0755) to a proxy that
            // does not run as root.
            return "directory \(dir) (owner uid \(st.st_uid), mode \(mode)) does not let this proxy (uid \(geteuid())) "
                + "create its socket; make it the proxy's (chown \(geteuid()) \(dir); the DaemonSet's init container does this)"
        }
        return nil
    }

    private static func socketAnswers(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_un()
        guard mp_unix_sockaddr(&addr, path) == 0 else { return false }
        return withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        } == 0
    }
}
