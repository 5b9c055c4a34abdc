import Foundation
import TestSupport

/// What the test posted (and got 202 for), summed the way the upstream must receive it:
/// per (token, appName, featureName, hour timestamp): yes, no and each variant.
struct Ledger: Equatable, CustomStringConvertible {
    struct Key: Hashable, Comparable {
        var token: String, app: String, feature: String, hour: String
        static func < (a: Key, b: Key) -> Bool { (a.token, a.app, a.feature, a.hour) < (b.token, b.app, b.feature, b.hour) }
    }

    struct Sums: Equatable {
        var yes = 0, no = 0
        var variants: [String: Int] = [:]
    }

    var sums: [Key: Sums] = [:]

    mutating func add(_ key: Key, yes: Int, no: Int, variants: [String: Int]) {
        guard yes != 0 || no != 0 else { return }
        sums[key, default: Sums()].yes += yes
        sums[key, default: Sums()].no += no
        for (v, c) in variants where c != 0 { sums[key, default: Sums()].variants[v, default: 0] += c }
    }

    mutating func merge(_ other: Ledger) {
        for (k, s) in other.sums { add(k, yes: s.yes, no: s.no, variants: s.variants) }
    }

    /// Sums every metric entry of the bulk requests the upstream recorded.
    static func fromUpstream(_ requests: [FakeUpstream.Recorded]) -> Ledger {
        var l = Ledger()
        for r in requests where r.path.hasSuffix("/client/metrics/bulk") && r.status == 202 {
            let token = r.header("Authorization") ?? ""
            for m in r.json["metrics"] as? [[String: Any]] ?? [] {
                l.add(Key(token: token, app: m["appName"] as! String, feature: m["featureName"] as! String,
                          hour: m["timestamp"] as! String),
                      yes: m["yes"] as! Int, no: m["no"] as! Int, variants: m["variants"] as? [String: Int] ?? [:])
            }
        }
        return l
    }

    var description: String {
        sums.keys.sorted().map { k in "\(k.token.suffix(6)) \(k.app) \(k.feature) \(k.hour): \(sums[k]!)" }.joined(separator: "\n")
    }
}

/// Makes valid metric posts in the shapes real SDKs send, recording each in a ledger.
struct PostFactory {
    var rng: SeededRandom
    let apps: [String]
    let features = (0..<8).map { "feature-\($0)" }
    /// A fixed hour so tests do not depend on the clock: 2026-11-28T10:00Z and the hour before.
    static let hourMillis: Int64 = 1_795_860_000_000

    /// `label` names the poster (test and thread), so that each draws its own posts from the run's seed.
    init(apps: [String], label: String) {
        self.apps = apps
        rng = SeededRandom(label)
    }

    static func iso(_ ms: Int64) -> String {
        let d = Date(timeIntervalSince1970: Double(ms) / 1000)
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: d)
    }

    /// A post with random counts, its stop in the fixed hour or the one before, with `start`
    /// and `stop` in one of the formats SDKs use.
    mutating func post(token: String, instance: String, into ledger: inout Ledger) -> String {
        let app = apps.randomElement(using: &rng)!
        let earlier = Bool.random(using: &rng)
        let stopMs = Self.hourMillis - (earlier ? 1 : 0) + Int64.random(in: earlier ? -3_000_000...0 : 0...3_000_000, using: &rng)
        let hour = Self.iso(stopMs - ((stopMs % 3_600_000) + 3_600_000) % 3_600_000)
        let startMs = stopMs - 10_000
        let format = Int.random(in: 0..<4, using: &rng)
        func date(_ ms: Int64) -> String {
            switch format {
            case 0: return "\"\(Self.iso(ms).dropLast())000000Z\"" // nine fraction digits (Python)
            case 1: return "\(ms)" // epoch milliseconds
            case 2: // +02:00 offset (Go with a local zone)
                let local = Self.iso(ms + 7_200_000).dropLast()
                return "\"\(local)+02:00\""
            default: return "\"\(Self.iso(ms))\"" // milliseconds, Z (Node)
            }
        }
        var toggles: [String] = []
        for f in features.shuffled(using: &rng).prefix(Int.random(in: 1...5, using: &rng)) {
            let yes = Int.random(in: 0...20, using: &rng), no = Int.random(in: 0...20, using: &rng)
            var variants: [String: Int] = [:]
            if f.hasSuffix("0") || f.hasSuffix("1") {
                variants = ["blue": Int.random(in: 0...yes, using: &rng), "green": Int.random(in: 0...5, using: &rng)]
            }
            ledger.add(.init(token: token, app: app, feature: f, hour: hour), yes: yes, no: no, variants: variants)
            let v = variants.isEmpty ? "" : ",\"variants\":{" + variants.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",") + "}"
            toggles.append("\"\(f)\":{\"yes\":\(yes),\"no\":\(no)\(v)}")
        }
        return """
            {"appName":"\(app)","instanceId":"\(instance)","environment":"ignored","sdkVersion":"unleash-test:1.0",\
            "bucket":{"start":\(date(startMs)),"stop":\(date(stopMs)),"toggles":{\(toggles.joined(separator: ","))}}}
            """
    }

    /// Bodies each broken in a different way: none may change any count.
    static let badBodies: [(body: String, status: Int)] = [
        (#"{"appName":"app-0","bucket":{"start":"2026-11-28T10:00:00Z","stop":"2026-11-28T10:00:01Z","toggles":{"feature-0":{"yes":5,"no":1.5}}}}"#, 400),
        (#"{"appName":"app-0","bucket":{"start":"2026-11-28T10:00:00Z","stop":"2026-11-28T10:00:01Z","toggles":{"feature-0":{"yes":-1,"no":1}}}}"#, 400),
        (#"{"appName":"","bucket":{"start":"2026-11-28T10:00:00Z","stop":"2026-11-28T10:00:01Z","toggles":{"feature-0":{"yes":5,"no":1}}}}"#, 400),
        (#"{"appName":"app-0","bucket":{"start":"2026-11-28T10:00:00Z","stop":"yesterday","toggles":{"feature-0":{"yes":5}}}}"#, 400),
        (#"{"appName":"app-0","bucket":{"start":"2026-11-28T10:00:00Z","stop":"2026-11-28T10:00:01Z","toggles":{"feature-0":{"yes":5,"variants":{"a":1,"b":0.5}}}}}"#, 400),
        (#"{"appName":"app-0","bucket":{"start":"2026-11-28T10:00:00Z","stop":"2026-11-28T10:00:01Z","toggles":{"feature-0":{"yes":5}}"#, 400),
        (#"{"appName":"app-0","bucket":{"stop":"2026-11-28T10:00:01Z","toggles":{"feature-0":{"yes":5}}}}"#, 400),
        (#"{"appName":"app-0","bucket":{"start":"2026-11-28T10:00:00Z","stop":"2026-11-28T10:00:01Z","toggles":{"feature-0":{"yes":5}, "feature-1": 3}}}"#, 400),
    ]
}
