/// The open window written whole as posts, for a checkpoint: one registration per instance
/// (what the SDK said about itself), then the window's counts and impact metrics as the
/// single-app posts of metrics mode. Replayed through `Ingest` like any post, they rebuild
/// the same keys, counts, series and instances.
enum Snapshot {
    static func records(_ window: Window, now: Int64) -> [JournalRecord] {
        var out: [JournalRecord] = []
        let json = Ingest.Headers(contentType: "application/json")
        let instances = window.instances.sorted { ($0.key.token, $0.key.appName, $0.key.instanceId) < ($1.key.token, $1.key.appName, $1.key.instanceId) }
        // Instances another proxy or Edge relayed keep their sender's fields in a bulk post: the
        // `applications[]` entry this proxy would send, without itself in `connectVia`.
        let asSent = BatchBuilder(mode: .bulk, maxBody: Int.max / 4)
        var relayed: [String: [UInt8]] = [:]
        for (key, i) in instances {
            if let r = i.relayed {
                relayed[key.token, default: []] += (relayed[key.token] == nil ? [] : [UInt8(ascii: ",")])
                    + asSent.applicationJSON(key, i, environment: r.environment)
                continue
            }
            var w = JSONWriter(capacity: 256)
            w.beginObject()
            w.key("appName"); w.string(key.appName)
            w.key("instanceId"); w.string(key.instanceId)
            w.key("interval"); w.double(i.interval ?? 0)
            w.key("started"); w.string(Timestamp.iso8601(i.started))
            w.key("strategies"); w.beginArray(); for s in i.strategies { w.string(s) }; w.endArray()
            for field in SDKField.all {
                if let value = i.sdk[field] { w.key(field.name); w.string(value) }
            }
            w.endObject()
            out.append(JournalRecord(kind: .register, now: now, token: key.token, headers: json, body: w.bytes))
        }
        for (token, apps) in relayed.sorted(by: { $0.key < $1.key }) {
            let body = Array(#"{"applications":["#.utf8) + apps + Array(#"],"metrics":[]}"#.utf8)
            out.append(JournalRecord(kind: .bulk, now: now, token: token, headers: json, body: body))
        }
        // One body per (token, appName, hour): nothing split.
        let builder = BatchBuilder(mode: .metrics, maxBody: Int.max / 4)
        let impact = builder.impactWriter(window).byToken()
        let tokens = Set(window.groups.keys.map(\.token)).union(impact.keys)
        for token in tokens.sorted() {
            var byApp = impact[token] ?? [:]
            // Impact metrics a bulk post brought are filed under no SDK's appName: they go back
            // in bulk posts, where a single-app post would add an instance.
            let relayedImpact = byApp.removeValue(forKey: ProxyName.appName)
            for b in builder.singleApp(window, token: token, impact: byApp, closedAt: now) {
                out.append(JournalRecord(kind: .metrics, now: now, token: token, headers: json, body: b.body))
            }
            for round in relayedImpact.map({ builder.impactWriter(window).rounds($0, splitUnsafe: false).safe }) ?? [] {
                let metrics = round.enumerated().flatMap { i, m in (i == 0 ? [] : [UInt8(ascii: ",")]) + m }
                let body = Array(#"{"applications":[],"metrics":[],"impactMetrics":["#.utf8) + metrics + Array("]}".utf8)
                out.append(JournalRecord(kind: .bulk, now: now, token: token, headers: json, body: body))
            }
        }
        return out
    }
}
