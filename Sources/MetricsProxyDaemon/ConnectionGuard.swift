import CLibevent
import Glibc

/// Every connection the server holds: counted, capped and timed. libevent 2.1's evhttp has
/// no connection cap and its timeout is per read, so a client dripping one byte a second would
/// hold a connection forever. The guard makes each connection's bufferevent itself
/// (`evhttp_set_bevcb`), learns its `evhttp_connection` one loop turn later (evhttp sets
/// itself as the bufferevent's callback argument), watches its input for the first byte of
/// each request, and pauses the listeners while `maxConnections` are open or accept fails
/// for want of file descriptors.
final class ConnectionGuard {
    private final class Connection {
        let bev: OpaquePointer
        var evcon: OpaquePointer?
        var inputCallback: OpaquePointer?
        /// When the first byte of the request being read arrived (monotonic ms); nil while
        /// the connection is idle or its request is being answered.
        var requestStarted: Int64?
        var closeHandlers: [Int: () -> Void] = [:]

        init(bev: OpaquePointer) { self.bev = bev }
    }

    var maxConnections: Int
    var requestTimeoutMillis: Int64
    private let log: Logger
    private let telemetry: Telemetry
    /// Bufferevents handed to evhttp in this loop turn, not yet matched to their connection.
    private var pending: [Connection] = []
    private var connections: [OpaquePointer: Connection] = [:]
    private var listeners: [OpaquePointer] = []
    private var pausedForCap = false
    private var pausedForDescriptors = false
    private var lastCapWarning = Int64.min / 2
    private var lastDescriptorWarning = Int64.min / 2

    /// True at most once a minute per kind of warning (the count is in /metrics).
    private func warnNow(_ last: inout Int64) -> Bool {
        let now = monotonicMillis()
        guard now - last >= 60_000 else { return false }
        last = now
        return true
    }
    private var nextHandlerID = 0
    private var settle: LoopEvent!
    private var sweep: LoopEvent!
    private var resumeAfterDescriptorShortage: LoopEvent!

    /// Open connections, those still being set up included.
    var count: Int { connections.count + pending.count }

    init(loop: EventLoop, http: OpaquePointer, maxConnections: Int, requestTimeoutMillis: Int64, log: Logger,
         telemetry: Telemetry) {
        self.maxConnections = maxConnections
        self.requestTimeoutMillis = requestTimeoutMillis
        self.log = log
        self.telemetry = telemetry
        settle = LoopEvent(loop: loop) { [unowned self] in self.matchPending() }
        sweep = LoopEvent(loop: loop) { [unowned self] in self.expireSlowRequests() }
        resumeAfterDescriptorShortage = LoopEvent(loop: loop) { [unowned self] in
            self.pausedForDescriptors = false
            self.updateAccepting()
        }
        sweep.schedule(afterMillis: sweepInterval)
        // The guard lives as long as the evhttp (both owned by HTTPServer, the evhttp freed
        // first): an unretained pointer is safe.
        evhttp_set_bevcb(http, { base, arg in
            Unmanaged<ConnectionGuard>.fromOpaque(arg!).takeUnretainedValue().accepted(base: base!)
        }, Unmanaged.passUnretained(self).toOpaque())
        ConnectionGuard.byServer[http] = Unmanaged.passUnretained(self)
    }

    /// Forgets the evhttp this guard watched (called just before it is freed).
    func detach(http: OpaquePointer) {
        ConnectionGuard.byServer[http] = nil
        listeners = []
    }

    private var sweepInterval: Int64 { max(100, min(1000, requestTimeoutMillis / 4)) }

    // MARK: listeners

    func watch(listener: OpaquePointer) {
        listeners.append(listener)
        evconnlistener_set_error_cb(listener) { _, http in
            guard let http, let me = ConnectionGuard.byServer[OpaquePointer(http)] else { return }
            me.takeUnretainedValue().acceptFailed(errno)
        }
        updateAccepting()
    }

    func forgetListeners() { listeners = [] }

    /// The listener's error callback gets the evhttp as its argument (evhttp owns the
    /// listener's callbacks), so the guard is found through it. Loop thread only.
    nonisolated(unsafe) private static var byServer: [OpaquePointer: Unmanaged<ConnectionGuard>] = [:]

    private func acceptFailed(_ error: Int32) {
        guard error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM else {
            log.debug("accept failed", [("error", String(cString: strerror(error)))])
            return
        }
        // Level-triggered: retrying at once would spin. Pause, let connections finish, retry.
        if !pausedForDescriptors {
            telemetry.metrics.acceptPauses["fd_limit", default: 0] += 1
            if warnNow(&lastDescriptorWarning) {
                log.warn("accept failed; pausing new connections for 250ms at a time",
                         [("error", String(cString: strerror(error))), ("connections", "\(count)")])
            }
        }
        pausedForDescriptors = true
        updateAccepting()
        resumeAfterDescriptorShortage.schedule(afterMillis: 250)
    }

    private func updateAccepting() {
        let capReached = count >= maxConnections
        if capReached && !pausedForCap {
            telemetry.metrics.acceptPauses["max_connections", default: 0] += 1
            // At the cap the listeners flip with every close: one line a minute is enough.
            if warnNow(&lastCapWarning) {
                log.warn("connection cap reached; new connections wait in the listen backlog",
                         [("max_connections", "\(maxConnections)")])
            }
        }
        pausedForCap = capReached
        for l in listeners {
            if pausedForCap || pausedForDescriptors { evconnlistener_disable(l) } else { evconnlistener_enable(l) }
        }
    }

    // MARK: connections

    private func accepted(base: OpaquePointer) -> OpaquePointer? {
        // What evhttp makes when no callback is set, plus a reference of ours that keeps the
        // bufferevent readable until `matchPending` has looked at it.
        guard let bev = bufferevent_socket_new(base, -1, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue)) else { return nil }
        bufferevent_incref(bev)
        let c = Connection(bev: bev)
        watchInput(c)
        pending.append(c)
        settle.activateNow()
        if count >= maxConnections { updateAccepting() }
        return bev
    }

    private func matchPending() {
        let batch = pending
        pending = []
        for c in batch {
            var readcb: bufferevent_data_cb?
            var arg: UnsafeMutableRawPointer?
            bufferevent_getcb(c.bev, &readcb, nil, nil, &arg)
            if readcb != nil, let arg {
                let evcon = OpaquePointer(arg)
                c.evcon = evcon
                connections[evcon] = c
                evhttp_connection_set_closecb(evcon, { evcon, arg in
                    guard let evcon else { return }
                    Unmanaged<ConnectionGuard>.fromOpaque(arg!).takeUnretainedValue().closed(evcon)
                }, Unmanaged.passUnretained(self).toOpaque())
            } else {
                // evhttp already let go of it (the client left at once).
                removeInputCallback(c)
            }
            bufferevent_decref(c.bev)
        }
        updateAccepting()
    }

    private func closed(_ evcon: OpaquePointer) {
        guard let c = connections.removeValue(forKey: evcon) else { return }
        removeInputCallback(c)
        let handlers = c.closeHandlers
        c.closeHandlers = [:]
        for (_, h) in handlers.sorted(by: { $0.key < $1.key }) { h() }
        if pausedForCap { updateAccepting() }
    }

    /// Hears the first bytes of the connection's next request. The callback removes itself
    /// once it has fired: evhttp drains the input a line at a time, and libevent walks the
    /// buffer's callbacks on every change while any is registered, even a disabled one
    /// (~900 instructions a post).
    private func watchInput(_ c: Connection) {
        c.inputCallback = evbuffer_add_cb(bufferevent_get_input(c.bev), { buffer, info, arg in
            guard let info, info.pointee.n_added > 0 else { return }
            let c = Unmanaged<Connection>.fromOpaque(arg!).takeUnretainedValue()
            if c.requestStarted == nil { c.requestStarted = monotonicMillis() }
            // libevent keeps the next entry before calling, so an entry may remove itself.
            if let cb = c.inputCallback { evbuffer_remove_cb_entry(buffer, cb) }
            c.inputCallback = nil
        }, Unmanaged.passUnretained(c).toOpaque())
    }

    private func removeInputCallback(_ c: Connection) {
        if let cb = c.inputCallback { evbuffer_remove_cb_entry(bufferevent_get_input(c.bev), cb) }
        c.inputCallback = nil
    }

    /// A whole request has been read from `evcon`: its clock stops until the next one starts.
    func requestRead(on evcon: OpaquePointer?) {
        guard let evcon, let c = connections[evcon] else { return }
        c.requestStarted = nil
        if c.inputCallback == nil { watchInput(c) }
    }

    /// Calls `handler` once when `evcon` closes; returns a handle for `cancelOnClose`.
    func onClose(_ evcon: OpaquePointer, _ handler: @escaping () -> Void) -> Int? {
        guard let c = connections[evcon] else { return nil }
        nextHandlerID += 1
        c.closeHandlers[nextHandlerID] = handler
        return nextHandlerID
    }

    func cancelOnClose(_ evcon: OpaquePointer, _ id: Int) {
        connections[evcon]?.closeHandlers[id] = nil
    }

    // MARK: deadline

    /// A request not read whole within `requestTimeoutMillis` of its first byte gets 408 and
    /// the connection is shut down; libevent then frees it as for a client that left.
    private func expireSlowRequests() {
        sweep.schedule(afterMillis: sweepInterval)
        let now = monotonicMillis()
        for c in connections.values {
            guard let started = c.requestStarted, now - started > requestTimeoutMillis else { continue }
            c.requestStarted = nil
            let fd = bufferevent_getfd(c.bev)
            guard fd >= 0 else { continue }
            let body = #"{"message":"request not received in time"}"#
            let answer = "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
            _ = answer.withCString { send(fd, $0, strlen($0), Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
            shutdown(fd, Int32(SHUT_RDWR))
            telemetry.metrics.requestsTimedOut += 1
            log.debug("request deadline passed; connection closed", [("timeout_ms", "\(requestTimeoutMillis)")])
        }
    }
}
