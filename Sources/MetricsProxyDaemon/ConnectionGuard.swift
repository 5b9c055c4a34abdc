import CLibevent
import Glibc

/// Every connection the server holds: counted, capped and timed. libevent 2.1's evhttp has
/// no connection cap and its timeout is per read, so a client dripping one byte a second would
/// hold a connection forever. The guard makes each connection's bufferevent itself
/// (`evhttp_set_bevcb`), learns its `evhttp_connection` one loop turn later (evhttp sets
/// itself as the bufferevent's callback argument), watches its input for the first byte of
/// each request, and cuts off a request that is not read whole within `requestTimeoutMillis`
/// or falls below `minRate` bytes a second. At `maxConnections` it closes the connection that
/// costs most for least (the longest-idle keep-alive connection, else the slowest unfinished
/// request), so that one client leaking or dripping connections cannot lock the others (and
/// the kubelet's probes) out; it pauses the listeners only when every connection is
/// mid-request and keeping up, or when accept fails for want of file descriptors.
final class ConnectionGuard {
    private final class Connection {
        let bev: OpaquePointer
        var evcon: OpaquePointer?
        var inputCallback: OpaquePointer?
        /// When the first byte of the request being read arrived (monotonic ms); nil while
        /// the connection is idle or its request is being answered.
        var requestStarted: Int64?
        var closeHandlers: [Int: () -> Void] = [:]
        /// Accepted, or its last request read (monotonic ms): how long it has been idle.
        var lastActive = monotonicMillis()
        /// Counts the bytes of a request that has taken longer than a second: attached only
        /// then, as every callback on the input costs each post (see `watchInput`).
        var rateCallback: OpaquePointer?
        var rateSince: Int64 = 0
        var received = 0
        /// The rate of the last whole span measured (bytes a second).
        var lastRate: Int?
        /// Being closed by the guard: not a candidate again.
        var closing = false
        /// Accepted past the cap into the reserve for probes: may only ask `/healthz`,
        /// `/readyz` or `/metrics`.
        var probeOnly = false

        init(bev: OpaquePointer) { self.bev = bev }
    }

    var maxConnections: Int
    var requestTimeoutMillis: Int64
    /// `[listen] min_rate`, bytes a second; 0: off.
    var minRate: Int
    /// How old a request is before its rate is measured, and the span it is measured over.
    static let rateGraceMillis: Int64 = 1000
    /// How long a connection must have been idle to be closed to make room.
    static let idleGraceMillis: Int64 = 250
    /// Connections accepted past the cap when none can be closed to make room, for the
    /// kubelet's probes and Prometheus only: so that a proxy busy with `max_connections`
    /// uploads is not restarted for a probe that timed out.
    static let probeReserve = 8
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
    private var lastShedWarning = Int64.min / 2

    /// True at most once a minute per kind of warning (the count is in /metrics).
    private func warnNow(_ last: inout Int64) -> Bool {
        let now = monotonicMillis()
        guard now - last >= 60_000 else { return false }
        last = now
        return true
    }
    private var nextHandlerID = 0
    /// Connections in the reserve for probes now.
    private var probeOnlyCount = 0
    private var settle: LoopEvent!
    private var sweep: LoopEvent!
    private var resumeAfterDescriptorShortage: LoopEvent!

    /// Open connections, those still being set up included.
    var count: Int { connections.count + pending.count }

    init(loop: EventLoop, http: OpaquePointer, maxConnections: Int, requestTimeoutMillis: Int64, minRate: Int, log: Logger,
         telemetry: Telemetry) {
        self.maxConnections = maxConnections
        self.requestTimeoutMillis = requestTimeoutMillis
        self.minRate = minRate
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

    private var sweepInterval: Int64 { max(100, min(minRate > 0 ? 500 : 1000, requestTimeoutMillis / 4)) }

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

    /// At the cap, accepting goes on as long as a connection could be closed to make room, and
    /// each arrival past the cap closes one (the victim closes within the loop turn). It pauses
    /// only when none could: every connection is mid-request and young or keeping up (the
    /// sweep looks again), or accept failed for want of descriptors.
    private func updateAccepting() {
        var mustPause = false
        if count >= maxConnections {
            let closing = connections.values.reduce(0) { $0 + ($1.closing ? 1 : 0) }
            var over = count - closing - maxConnections
            while over > 0, let v = victim() {
                shed(v.connection, v.reason)
                guard v.connection.closing else { break }
                over -= 1
            }
            // No room to make: the reserve for probes, then a pause.
            mustPause = victim() == nil && count >= maxConnections + Self.probeReserve
        }
        if mustPause && !pausedForCap {
            telemetry.metrics.acceptPauses["max_connections", default: 0] += 1
            // At the cap the listeners flip with every close: one line a minute is enough.
            if warnNow(&lastCapWarning) {
                log.warn("connection cap reached and every connection busy; new connections wait in the listen backlog",
                         [("max_connections", "\(maxConnections)")])
            }
        }
        pausedForCap = mustPause
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
                c.probeOnly = connections.count >= maxConnections && victim() == nil
                if c.probeOnly { probeOnlyCount += 1 }
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
        if c.probeOnly { probeOnlyCount -= 1 }
        removeInputCallback(c)
        removeRateCallback(c)
        let handlers = c.closeHandlers
        c.closeHandlers = [:]
        for (_, h) in handlers.sorted(by: { $0.key < $1.key }) { h() }
        if pausedForCap || c.closing || count >= maxConnections { updateAccepting() }
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
        c.lastActive = monotonicMillis()
        if c.rateCallback != nil { removeRateCallback(c) }
        if c.inputCallback == nil { watchInput(c) }
    }

    /// Counts what arrives for a request that has taken more than a second so far.
    private func watchRate(_ c: Connection, now: Int64) {
        c.rateSince = now
        c.received = 0
        c.lastRate = nil
        c.rateCallback = evbuffer_add_cb(bufferevent_get_input(c.bev), { _, info, arg in
            guard let info else { return }
            Unmanaged<Connection>.fromOpaque(arg!).takeUnretainedValue().received += info.pointee.n_added
        }, Unmanaged.passUnretained(c).toOpaque())
    }

    private func removeRateCallback(_ c: Connection) {
        if let cb = c.rateCallback { evbuffer_remove_cb_entry(bufferevent_get_input(c.bev), cb) }
        c.rateCallback = nil
    }

    /// Bytes a second over the span being measured once it is a second long, else over the
    /// last whole span; nil while nothing has been measured.
    private func rate(_ c: Connection, now: Int64) -> Int? {
        guard c.rateCallback != nil, now - c.rateSince >= Self.rateGraceMillis else { return c.lastRate }
        return Int(Int64(c.received) * 1000 / (now - c.rateSince))
    }

    // MARK: shedding

    enum ShedReason: String { case idle, slow }

    /// The connection to close to make room: the longest-idle keep-alive connection, else the
    /// unfinished request with the least progress (a second or more old, below `minRate`, or
    /// with nothing received at all when there is no minimum). None when every connection is
    /// mid-request and keeping up.
    private func victim() -> (connection: Connection, reason: ShedReason)? {
        let now = monotonicMillis()
        var idle: Connection?
        var slow: (Connection, Int)?
        for c in connections.values where !c.closing && c.evcon != nil {
            if let started = c.requestStarted {
                guard now - started >= Self.rateGraceMillis else { continue }
                let measured = rate(c, now: now)
                // Being measured (the sweep attaches the counter at a second old, and cuts it
                // itself if it falls below min_rate): not judged until the first span is over,
                // however late the sweep timer ran.
                if measured == nil, minRate > 0 { continue }
                // Never measured (min_rate off): nothing known of it but its age.
                let r = measured ?? 0
                guard r < max(minRate, 1) else { continue }
                if slow == nil || r < slow!.1 || (r == slow!.1 && started < slow!.0.requestStarted!) { slow = (c, r) }
            } else if c.closeHandlers.isEmpty, now - c.lastActive >= Self.idleGraceMillis,
                      idle == nil || c.lastActive < idle!.lastActive {
                // Idle: no request being read, none being answered (a forward holds a handler),
                // and not just accepted (its request may be on the way).
                idle = c
            }
        }
        if let idle { return (idle, .idle) }
        return slow.map { ($0.0, .slow) }
    }

    private func shed(_ c: Connection, _ reason: ShedReason) {
        guard bufferevent_getfd(c.bev) >= 0 else { return }
        c.closing = true
        telemetry.metrics.connectionsShed[reason.rawValue, default: 0] += 1
        if warnNow(&lastShedWarning) {
            log.warn("connection cap reached; closing the connections that cost most for least to make room",
                     [("max_connections", "\(maxConnections)"), ("first_reason", reason.rawValue)])
        }
        if reason == .slow { cut(c, status: "408 Request Timeout", why: "request too slow") } else { cut(c, status: nil, why: nil) }
    }

    /// Answers `status` (if any) and shuts the connection down; libevent then frees it as for a
    /// client that left.
    private func cut(_ c: Connection, status: String?, why: String?) {
        c.requestStarted = nil
        removeRateCallback(c)
        let fd = bufferevent_getfd(c.bev)
        guard fd >= 0 else { return }
        if let status, let why {
            let body = #"{"message":"\#(why)"}"#
            let answer = "HTTP/1.1 \(status)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
            _ = answer.withCString { send(fd, $0, strlen($0), Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
        }
        shutdown(fd, Int32(SHUT_RDWR))
    }

    /// Whether `evcon` was accepted into the reserve for probes (past the cap).
    func isProbeOnly(_ evcon: OpaquePointer?) -> Bool {
        // Nearly always none: no lookup per request then.
        guard probeOnlyCount > 0, let evcon else { return false }
        return connections[evcon]?.probeOnly ?? false
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

    /// A request not read whole within `requestTimeoutMillis` of its first byte, or keeping up
    /// less than `minRate` bytes a second once a second old, gets 408 and the connection is
    /// shut down; libevent then frees it as for a client that left.
    private func expireSlowRequests() {
        sweep.schedule(afterMillis: sweepInterval)
        let now = monotonicMillis()
        for c in connections.values where !c.closing {
            guard let started = c.requestStarted else { continue }
            if now - started > requestTimeoutMillis {
                cut(c, status: "408 Request Timeout", why: "request not received in time")
                telemetry.metrics.requestsTimedOut += 1
                log.debug("request deadline passed; connection closed", [("timeout_ms", "\(requestTimeoutMillis)")])
                continue
            }
            guard minRate > 0, now - started >= Self.rateGraceMillis else { continue }
            if c.rateCallback == nil { watchRate(c, now: now); continue }
            guard let r = rate(c, now: now) else { continue }
            if r < minRate {
                c.closing = bufferevent_getfd(c.bev) >= 0
                cut(c, status: "408 Request Timeout", why: "request too slow")
                telemetry.metrics.connectionsShed["min_rate", default: 0] += 1
                log.debug("request below min_rate; connection closed", [("bytes_per_second", "\(r)"), ("min_rate", "\(minRate)")])
            } else {
                // Measured afresh each span: a request must keep up, not only have started well.
                c.lastRate = r
                c.rateSince = now
                c.received = 0
            }
        }
        // At the cap: a request may have fallen behind, or a connection gone idle, since.
        if count >= maxConnections { updateAccepting() }
    }
}
