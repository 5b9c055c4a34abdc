// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "metrics-proxy",
    products: [
        .executable(name: "metrics-proxy", targets: ["metrics-proxy"]),
    ],
    targets: [
        // Debian's libevent 2.1.12 (evhttp, bufferevent_openssl) and OpenSSL 3.
        .systemLibrary(
            name: "CLibevent",
            pkgConfig: "libevent_openssl",
            providers: [.apt(["libevent-dev", "libssl-dev", "pkg-config"])]
        ),
        // zlib, for gzip/deflate request bodies and gzip upstream bodies.
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .target(
            name: "MetricsProxyCore",
            dependencies: ["CZlib"]
        ),
        .target(
            name: "MetricsProxyDaemon",
            dependencies: ["CLibevent", "MetricsProxyCore"]
        ),
        .executableTarget(
            name: "metrics-proxy",
            dependencies: ["MetricsProxyDaemon", "MetricsProxyCore"]
        ),
        // Seeded randomness for both test targets (the seed is printed when a test fails).
        .target(
            name: "TestSupport",
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "MetricsProxyCoreTests",
            dependencies: ["MetricsProxyCore", "TestSupport"]
        ),
        .testTarget(
            name: "MetricsProxyDaemonTests",
            dependencies: ["MetricsProxyCore", "TestSupport"]
        ),
    ]
)
