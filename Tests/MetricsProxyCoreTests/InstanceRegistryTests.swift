import Foundation
import XCTest
@testable import MetricsProxyCore

/// The instance registry: what an SDK said about itself outlives the window that heard it.
final class InstanceRegistryTests: XCTestCase {
    let token = "default:development.abc"
    let headers = Ingest.Headers(contentType: "application/json", authorization: "default:development.abc")
    let register = Array(#"{"appName": "shop", "instanceId": "pod-1", "sdkVersion": "unleash-python-sdk:6.9.1", "interval": 15000, "started": "2026-11-28T09:00:00.000Z", "strategies": ["default", "flexibleRollout"]}"#.utf8)
    let post = Array(#"{"appName": "shop", "instanceId": "pod-1", "bucket": {"start": "2026-11-28T10:00:00Z", "stop": "2026-11-28T10:00:30Z", "toggles": {"f": {"yes": 1, "no": 0, "variants": {}}}}}"#.utf8)
    let registeredAt = Int64(1_795_856_400_000) // 2026-11-28T09:00:00Z

    func application(_ window: Window, proxy: String? = nil) throws -> [String: Any] {
        let batch = try XCTUnwrap(BatchBuilder(mode: .bulk, maxBody: 1 << 20, proxyInstance: proxy)
            .batches(from: window, sequence: 1, closedAt: 0).first)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(batch.body)) as? [String: Any])
        return try XCTUnwrap((json["applications"] as? [[String: Any]])?.first)
    }

    /// Registered once, then posting in five later windows (read by either decoder): each
    /// window's entry reports the SDK's own start time, strategies, interval and version.
    func testRegistrationIsReportedInEveryLaterWindow() throws {
        for fastPath in [true, false] {
            var ingest = Ingest(Config(), fastPath: fastPath)
            var window = Window(opened: 0, registry: InstanceRegistry(Config()))
            let t0 = registeredAt + 3_600_000
            XCTAssertEqual(ingest.accept(.register, headers: headers, body: register, into: &window, now: t0), .accepted)
            for n in 1...5 {
                let opened = t0 + Int64(n) * 60_000
                window = window.next(opened: opened, config: Config()).window
                XCTAssertEqual(ingest.accept(.metrics, headers: headers, body: post, into: &window, now: opened + 1), .accepted)
                let app = try application(window)
                XCTAssertEqual(app["started"] as? String, "2026-11-28T09:00:00.000Z", "window \(n), fast path \(fastPath)")
                XCTAssertEqual(app["strategies"] as? [String], ["default", "flexibleRollout"], "window \(n)")
                XCTAssertEqual(app["interval"] as? Int, 15000, "window \(n)")
                XCTAssertEqual(app["sdkVersion"] as? String, "unleash-python-sdk:6.9.1", "window \(n)")
            }
        }
    }

    /// An instance that never registered keeps the time the proxy first saw it.
    func testFirstSeenTimeIsKeptWithoutARegistration() throws {
        var ingest = Ingest(Config())
        var window = Window(opened: 0)
        XCTAssertEqual(ingest.accept(.metrics, headers: headers, body: post, into: &window, now: registeredAt), .accepted)
        window = window.next(opened: registeredAt + 60_000, config: Config()).window
        XCTAssertEqual(ingest.accept(.metrics, headers: headers, body: post, into: &window, now: registeredAt + 60_001), .accepted)
        XCTAssertEqual(try application(window)["started"] as? String, "2026-11-28T09:00:00.000Z")
    }

    /// Each entry names the proxy in `connectVia`, as Unleash Edge does.
    func testApplicationsNameTheProxyInConnectVia() throws {
        var window = Window(opened: 0)
        window.noteInstance(token: token, appName: "shop", instanceId: "pod-1", sdk: SDKMetadata(), interval: nil,
                            started: nil, strategies: nil, now: 0)
        let via = try XCTUnwrap(try application(window, proxy: "node-7")["connectVia"] as? [[String: String]])
        XCTAssertEqual(via, [["appName": "metrics-proxy", "instanceId": "node-7"]])
        XCTAssertNil(try application(window)["connectVia"])
    }

    /// Bounded by age (unseen longer than instance_max_age) and by count (the longest unseen first).
    func testForgetsByAgeThenLongestUnseenPastTheCount() throws {
        var config = Config()
        config.limits.maxInstances = 2
        config.limits.instanceMaxAge = .seconds(3600)
        var window = Window(opened: 0, registry: InstanceRegistry(config))
        for (i, seen) in [Int64(1_000), 2_000, 3_000].enumerated() {
            window.noteInstance(token: token, appName: "a", instanceId: "i\(i)", sdk: SDKMetadata(), interval: nil,
                                started: nil, strategies: nil, now: seen)
        }
        let (next, forgotten) = window.next(opened: 4_000, config: config)
        XCTAssertEqual(forgotten, 1)
        XCTAssertEqual(next.registry.count, 2)
        XCTAssertNil(next.registry.instance(Window.InstanceKey(token: token, appName: "a", instanceId: "i0")), "the longest unseen")
        XCTAssertTrue(next.instances.isEmpty, "the new window has seen nobody yet")
        let (later, gone) = next.next(opened: 3_000 + 3_600_000 + 1, config: config)
        XCTAssertEqual(gone, 2, "both unseen for longer than an hour")
        XCTAssertEqual(later.registry.count, 0)
    }
}
