/// proxy.conf text for tests: loopback on a free port, the Unix socket in a temp dir.
func testConfig(upstream: String, interval: String = "1s", extra: String = "", listen: String = "", upstreamExtra: String = "",
                spoolExtra: String = "") -> String {
    """
    [listen]
    tcp = 127.0.0.1:0
    unix = {UNIX}
    \(listen)
    [upstream]
    url = \(upstream)
    timeout = 2s
    drain_timeout = 5s
    \(upstreamExtra)
    [window]
    interval = \(interval)
    [spool]
    dir = {SPOOL}
    \(spoolExtra)
    [retry]
    initial = 200ms
    max = 1s
    [log]
    level = debug
    \(extra)
    """
}

let tokenA = "default:development.4f1c2d9e8a7b6c5d"
let tokenB = "default:production.9e8d7c6b5a4f3e2d"

/// The secret parts of the test tokens: none may appear in any proxy log.
let tokenSecrets = ["4f1c2d9e8a7b6c5d", "9e8d7c6b5a4f3e2d"]
