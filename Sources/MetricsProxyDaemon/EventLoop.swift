import CLibevent
import Glibc

/// Owns the `event_base` and the `evdns_base`: the one thread everything runs on.
final class EventLoop {
    let base: OpaquePointer
    /// Non-blocking name resolution; nil when no resolver could be set up (then libevent
    /// falls back to a blocking getaddrinfo, which is fine for IP literals).
    let dns: OpaquePointer?

    init() throws(StartupError) {
        // epoll's change list: libevent batches each loop turn's event changes into as few
        // epoll_ctl calls as it can. evhttp enables and disables reading and writing around
        // every request; with the list a post costs 2 epoll_ctl calls instead of 4 (strace -c
        // under wrk load), about a fifth of the proxy's CPU per post. libevent warns that
        // the list is unsafe with descriptors cloned by dup(); the proxy clones none.
        guard let cfg = event_config_new() else { throw StartupError("cannot create the libevent event base") }
        defer { event_config_free(cfg) }
        event_config_set_flag(cfg, Int32(EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST.rawValue))
        guard let base = event_base_new_with_config(cfg) else { throw StartupError("cannot create the libevent event base") }
        self.base = base
        dns = evdns_base_new(base, Int32(EVDNS_BASE_INITIALIZE_NAMESERVERS))
    }

    deinit {
        if let dns { evdns_base_free(dns, 0) }
        event_base_free(base)
    }

    func run() { event_base_dispatch(base) }
    func stop() { event_base_loopbreak(base) }
}

/// A fatal start-up error: one line, and the process exits non-zero.
public struct StartupError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

/// A timer or signal event. It owns its `event` and calls `fire` on the loop thread.
final class LoopEvent {
    private var event: OpaquePointer?
    private let fire: () -> Void

    /// A timer: call `schedule` to arm it.
    init(loop: EventLoop, fire: @escaping () -> Void) {
        self.fire = fire
        // The event holds an unretained pointer to self: the event is freed in deinit, so it
        // can never outlive the object it points to.
        event = event_new(loop.base, -1, 0, { _, _, arg in
            Unmanaged<LoopEvent>.fromOpaque(arg!).takeUnretainedValue().fire()
        }, Unmanaged.passUnretained(self).toOpaque())
    }

    /// A signal handler, active at once.
    init(loop: EventLoop, signal: Int32, fire: @escaping () -> Void) {
        self.fire = fire
        event = event_new(loop.base, signal, Int16(EV_SIGNAL | EV_PERSIST), { _, _, arg in
            Unmanaged<LoopEvent>.fromOpaque(arg!).takeUnretainedValue().fire()
        }, Unmanaged.passUnretained(self).toOpaque())
        event_add(event, nil)
    }

    /// Arms (or re-arms) the timer to fire once after `millis`.
    func schedule(afterMillis millis: Int64) {
        var tv = timeval(tv_sec: Int(max(0, millis) / 1000), tv_usec: Int(max(0, millis) % 1000) * 1000)
        event_add(event, &tv)
    }

    func cancel() { event_del(event) }

    /// Runs the callback in the next loop turn.
    func activateNow() { event_active(event, Int32(EV_TIMEOUT), 0) }

    var isPending: Bool { event_pending(event, Int16(EV_TIMEOUT), nil) != 0 }

    deinit { event_free(event) }
}
