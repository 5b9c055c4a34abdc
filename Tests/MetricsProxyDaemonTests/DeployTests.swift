import Foundation
import XCTest

/// deploy/ parses and agrees with proxy.conf (ports, socket path, probe paths, config keys)
/// and with the metrics the proxy really exposes; its Kubernetes manifests (the sidecar and the
/// node agent's DaemonSet) validate against the Kubernetes API schemas (kubernetes-validate).
final class DeployTests: XCTestCase {
    func check(deploy: URL) throws -> (status: Int32, output: String, configMap: String, daemonSetConfigMap: String) {
        let upstream = try FakeUpstream()
        let proxy = try ProxyProcess(config: testConfig(upstream: upstream.url))
        let dir = Paths.tempDir("deploy-check")
        let scrape = dir.appendingPathComponent("metrics.txt")
        try Data(try proxy.tcp().request("GET", "/metrics").body).write(to: scrape)
        let configMap = dir.appendingPathComponent("configmap-proxy.conf")
        let daemonSetConfigMap = dir.appendingPathComponent("daemonset-configmap-proxy.conf")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", Paths.fixtures.appendingPathComponent("check_deploy.py").path,
                       "--deploy", deploy.path, "--conf", Paths.repo.appendingPathComponent("proxy.conf").path,
                       "--metrics", scrape.path, "--extract-configmap", configMap.path,
                       "--extract-daemonset-configmap", daemonSetConfigMap.path]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, text, configMap.path, daemonSetConfigMap.path)
    }

    func testDeployFilesAgreeWithProxyConfAndTheMetrics() throws {
        let r = try check(deploy: Paths.repo.appendingPathComponent("deploy"))
        XCTAssertEqual(r.status, 0, r.output)
        // The sidecar's and the node agent's proxy.conf are valid for the real binary.
        for conf in [r.configMap, r.daemonSetConfigMap] {
            let valid = try runProxy(["--check-config", "--config", conf],
                                     environment: ["UNLEASH_URL": "https://unleash.example.com/api", "UNLEASH_TOKEN": "x"])
            XCTAssertEqual(valid.status, 0, valid.stderr)
        }
    }

    /// The check run on a copy of deploy/ whose `manifest` was changed by `edit`.
    func checkBroken(_ manifest: String, _ edit: (String) -> String) throws -> (status: Int32, output: String) {
        let copy = Paths.tempDir("deploy-copy").appendingPathComponent("deploy")
        try FileManager.default.copyItem(at: Paths.repo.appendingPathComponent("deploy"), to: copy)
        let file = copy.appendingPathComponent("kubernetes/\(manifest)")
        let text = try String(contentsOf: file, encoding: .utf8)
        let changed = edit(text)
        XCTAssertNotEqual(changed, text, "\(manifest) changed; update this test")
        try changed.write(to: file, atomically: true, encoding: .utf8)
        let r = try check(deploy: copy)
        return (r.status, r.output)
    }

    func testTheCheckCatchesADisagreement() throws {
        // The readiness probe on the wrong port must fail the check.
        let r = try checkBroken("metrics-proxy-sidecar.yaml") {
            $0.replacingOccurrences(of: "path: /readyz\n              port: 4243", with: "path: /readyz\n              port: 8080")
        }
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.output.contains("readinessProbe"), r.output)
    }

    func testTheCheckCatchesABrokenDaemonSet() throws {
        // A Service that lost internalTrafficPolicy: Local and a DaemonSet with a field
        // Kubernetes does not know must fail the check, naming both.
        let policy = "  internalTrafficPolicy: Local\n"
        let grace = "      terminationGracePeriodSeconds: 45\n"
        let r = try checkBroken("metrics-proxy-daemonset.yaml") {
            $0.replacingOccurrences(of: policy, with: "").replacingOccurrences(of: grace, with: grace + "      containerz: []\n")
        }
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.output.contains("internalTrafficPolicy"), r.output)
        XCTAssertTrue(r.output.contains("kubernetes-validate") && r.output.contains("'containerz' was unexpected"), r.output)
    }
}

/// The README's configuration reference is generated from the proxy's key table and
/// proxy.conf's comments, and must not drift from either.
final class DocumentationTests: XCTestCase {
    func testReadmeConfigurationReferenceMatchesKeyTableAndProxyConf() throws {
        let keys = try runProxy(["--config-keys"])
        XCTAssertEqual(keys.status, 0)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", Paths.fixtures.appendingPathComponent("config_reference.py").path,
                       Paths.repo.appendingPathComponent("proxy.conf").path, "-"]
        let input = Pipe(), out = Pipe(), err = Pipe()
        p.standardInput = input
        p.standardOutput = out
        p.standardError = err
        try p.run()
        input.fileHandleForWriting.write(Data(keys.stdout.utf8))
        try input.fileHandleForWriting.close()
        let generated = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let problems = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, "proxy.conf and the key table disagree:\n\(problems)")
        let readme = try String(contentsOf: Paths.repo.appendingPathComponent("README.md"), encoding: .utf8)
        let start = try XCTUnwrap(readme.range(of: "<!-- config-reference:start -->\n"))
        let end = try XCTUnwrap(readme.range(of: "<!-- config-reference:end -->"))
        XCTAssertEqual(String(readme[start.upperBound..<end.lowerBound]), generated,
                       "regenerate with: metrics-proxy --config-keys | python3 Tests/Fixtures/config_reference.py proxy.conf -")
        XCTAssertEqual(generated.split(separator: "\n").count, keys.stdout.split(separator: "\n").count + 2)
    }
}
