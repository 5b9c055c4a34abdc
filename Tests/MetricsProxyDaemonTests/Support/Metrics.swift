import Foundation
import XCTest

/// One sample of /metrics as prometheus_client's parser read it.
struct MetricSample { var name: String; var labels: [String: String]; var value: Double; var type: String }

extension XCTestCase {
    /// Scrapes /metrics and parses it with prometheus_client's parser.
    func scrape(_ proxy: ProxyProcess) throws -> [MetricSample] {
        let r = try proxy.tcp().request("GET", "/metrics")
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", Paths.fixtures.appendingPathComponent("parse_metrics.py").path]
        let input = Pipe(), output = Pipe()
        p.standardInput = input
        p.standardOutput = output
        try p.run()
        input.fileHandleForWriting.write(Data(r.body))
        try input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, "the Prometheus parser rejected: \(r.text)")
        let list = (try JSONSerialization.jsonObject(with: data) as? [[String: Any]]) ?? []
        return list.map { MetricSample(name: $0["name"] as! String, labels: $0["labels"] as! [String: String],
                                 value: $0["value"] as! Double, type: $0["type"] as! String) }
    }

    func value(_ samples: [MetricSample], _ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }
}
