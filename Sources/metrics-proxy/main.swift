import Glibc
import MetricsProxyCore
import MetricsProxyDaemon

/// `metrics-proxy [--config FILE] [--check-config] [--config-keys] [--version] [--help]`
let usage = """
    Usage: metrics-proxy [--config FILE] [--check-config] [--config-keys] [--version] [--help]

    Accepts Unleash SDK metric posts, merges them per window and forwards one combined
    payload per token to the upstream Unleash.

      --config FILE    the configuration file (default: ./proxy.conf)
      --check-config   validate the configuration, and that the spool and journal
                       directories can be written, and exit (0 when valid)
      --config-keys    list every proxy.conf key: section, key, default, live or restart
      --version        print the version and exit
      --help           print this help and exit

    """

func fail(_ message: String) -> Never {
    let line = "metrics-proxy: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(2)
}

var configPath = "./proxy.conf"
var checkOnly = false
var args = CommandLine.arguments.dropFirst()
while let arg = args.popFirst() {
    switch arg {
    case "--config", "-c":
        guard let v = args.popFirst() else { fail("--config needs a file") }
        configPath = v
    case _ where arg.hasPrefix("--config="): configPath = String(arg.dropFirst("--config=".count))
    case "--check-config": checkOnly = true
    case "--config-keys": print(ConfigKey.listing, terminator: ""); exit(0)
    case "--version": print("metrics-proxy \(Version.string)"); exit(0)
    case "--help", "-h": print(usage, terminator: ""); exit(0)
    default: fail("unknown argument \(arg) (see --help)")
    }
}

let config: Config
do {
    config = try checkOnly ? ConfigLoader.check(path: configPath) : ConfigLoader.load(path: configPath)
} catch {
    fail(error.description)
}
if checkOnly {
    print("\(configPath): OK")
    exit(0)
}
let log = Logger(level: config.log.level, format: config.log.format)
do {
    let daemon = try Daemon(config: config, configPath: configPath, log: log)
    exit(daemon.run())
} catch {
    fail(error.description)
}
