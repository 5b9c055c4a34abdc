/// Turns a closed window into upstream requests: one per token (bulk) or per (token, appName,
/// hour) (metrics), each body kept under `maxBody` by splitting, applications first. Impact
/// metrics ride in the same bodies (`ImpactWriter`), except where the bulk endpoint would refuse
/// them: those go in single posts of their own, so that they can never cost a flag count.
public struct BatchBuilder: Sendable {
    public var mode: UpstreamMode
    public var maxBody: Int
    /// This proxy's instance id in `connectVia` (as Unleash Edge names itself there); nil: none.
    public var proxyInstance: String?

    public init(mode: UpstreamMode, maxBody: Int, proxyInstance: String? = nil) {
        self.mode = mode
        self.maxBody = maxBody
        self.proxyInstance = proxyInstance
    }

    /// `sequence` numbers windows so that batch ids sort in window order (the daemon uses the
    /// close time in epoch ms, so ids also sort across restarts).
    public func batches(from window: Window, sequence: UInt64, closedAt: Int64) -> [Batch] {
        var out: [Batch] = []
        let impact = impactWriter(window).byToken()
        let seen = Set(window.groups.keys.map(\.token)).union(window.instances.keys.map(\.token))
        for token in seen.union(impact.keys).sorted() {
            let series = impact[token] ?? [:]
            if mode == .bulk, let environment = Token.environment(of: token) {
                out += bulk(window, token: token, environment: environment, impact: series.values.flatMap { $0 }, closedAt: closedAt)
            } else {
                // A token that names no environment cannot use bulk: the server would file the
                // entries under an environment it then drops.
                out += singleApp(window, token: token, impact: series, closedAt: closedAt)
            }
        }
        let prefix = String(sequence, radix: 10)
        let padded = String(repeating: "0", count: max(0, 15 - prefix.count)) + prefix
        for i in out.indices {
            let n = String(i)
            out[i].id = "\(padded)-\(String(repeating: "0", count: max(0, 4 - n.count)) + n)"
            out[i].created = closedAt
        }
        return out
    }

    // MARK: bulk

    func bulk(_ window: Window, token: String, environment: String, impact series: [(ImpactTable.SeriesKey, ImpactTable.Series)],
              closedAt: Int64) -> [Batch] {
        let apps = window.instances.filter { $0.key.token == token }
            .sorted { ($0.key.appName, $0.key.instanceId) < ($1.key.appName, $1.key.instanceId) }
            .map { applicationJSON($0.key, $0.value, environment: environment) }
        // Every entry is written into one buffer; the packer takes them as slices of it.
        var w = JSONWriter(capacity: 160 * window.flagKeys)
        var ends: [Int] = []
        ends.reserveCapacity(window.flagKeys)
        for (key, group) in sortedGroups(window, token: token) {
            // Each entry is {"featureName":…,"appName":…,"environment":…,"timestamp":…,
            // "yes":…,"no":…,"variants":{…}}; the part shared by the group's entries is
            // encoded once.
            var shared = JSONWriter(capacity: 160)
            shared.beginObject()
            shared.key("appName"); shared.string(key.appName)
            shared.key("environment"); shared.string(environment)
            shared.key("timestamp"); shared.string(Timestamp.iso8601(key.hour))
            shared.key("yes")
            let middle = [UInt8(ascii: ",")] + shared.bytes.dropFirst() // `,"appName":…,"yes":`
            // Entries in the window's own order: the server does not care, and sorting 100,000
            // names was a third of the time to close a window.
            middle.withUnsafeBufferPointer { middle in
                group.toggles.forEachName { name, c in
                    w.appendRaw(#"{"featureName":"#)
                    w.appendQuoted(bytes: name)
                    w.appendRaw(middle)
                    w.appendInt(c.yes)
                    w.appendRaw(#","no":"#)
                    w.appendInt(c.no)
                    w.appendRaw(#","variants":"#)
                    variantsJSON(&w, c.variants)
                    w.appendRaw("}")
                    ends.append(w.bytes.count)
                }
            }
        }
        let all = w.bytes
        let metrics = ends.indices.map { all[(($0 == 0) ? 0 : ends[$0 - 1])..<ends[$0]] }
        let impact = impactWriter(window).rounds(series, splitUnsafe: true)
        func bodies(apps: [ArraySlice<UInt8>], metrics: [ArraySlice<UInt8>], impact: [ArraySlice<UInt8>]) -> [Batch] {
            pack(open: [UInt8(ascii: "{")], [
                Section(head: #""applications":["#, items: apps, required: true),
                Section(head: #","metrics":["#, items: metrics, required: true),
                Section(head: #","impactMetrics":["#, items: impact, required: false),
            ], close: "}").map {
                Batch(id: "", token: token, path: "/client/metrics/bulk", body: $0.body, created: 0, entries: $0.counts[1] + $0.counts[2])
            }
        }
        var out = bodies(apps: apps.map { $0[...] }, metrics: metrics, impact: impact.safe.first ?? [])
        // A series' second histogram layout, or its labels under a second appName, in bodies after.
        for round in impact.safe.dropFirst() { out += bodies(apps: [], metrics: [], impact: round) }
        // Metrics the bulk schema would refuse (a label value that reads as a number) go where
        // the server takes them: single posts, under the first appName that sent them.
        if let app = impact.unsafeApps.min() {
            for round in impact.unsafe {
                out += singlePosts(window, token: token, appName: app, start: window.opened, stop: closedAt, toggles: [], impact: round)
            }
        }
        return out
    }

    func applicationJSON(_ key: Window.InstanceKey, _ i: Window.Instance, environment: String) -> [UInt8] {
        var w = JSONWriter(capacity: 256)
        w.beginObject()
        w.key("appName"); w.string(key.appName)
        w.key("instanceId"); w.string(key.instanceId)
        // An instance relayed by another proxy or Edge keeps what its sender said of it.
        w.key("environment"); w.string(i.relayed?.environment ?? environment)
        // The server answers the whole request 400 without `started` and `interval`.
        w.key("interval"); w.double(i.interval ?? 0)
        w.key("started"); w.string(Timestamp.iso8601(i.started))
        w.key("strategies"); w.beginArray(); for s in i.strategies { w.string(s) }; w.endArray()
        w.key("sdkType"); w.string(i.relayed?.sdkType ?? "backend")
        if let projects = i.relayed?.projects {
            w.key("projects"); w.beginArray(); for p in projects { w.string(p) }; w.endArray()
        }
        // How the instance reaches Unleash, shown in its UI: through the proxies before this
        // one, nearest the SDK first, then this one.
        let via = i.relayed?.connectVia ?? []
        if proxyInstance != nil || !via.isEmpty {
            w.key("connectVia"); w.beginArray()
            for v in via {
                w.beginObject(); w.key("appName"); w.string(v.appName); w.key("instanceId"); w.string(v.instanceId); w.endObject()
            }
            if let proxyInstance {
                w.beginObject(); w.key("appName"); w.string(ProxyName.appName); w.key("instanceId"); w.string(proxyInstance); w.endObject()
            }
            w.endArray()
        }
        for field in SDKField.all {
            if let value = i.sdk[field] { w.key(field.name); w.string(value) }
        }
        w.endObject()
        return w.bytes
    }

    // MARK: metrics (single app)

    func singleApp(_ window: Window, token: String, impact series: [String: [(ImpactTable.SeriesKey, ImpactTable.Series)]],
                   closedAt: Int64) -> [Batch] {
        var out: [Batch] = []
        let groups = Dictionary(grouping: sortedGroups(window, token: token), by: \.0.appName)
        let writer = impactWriter(window)
        for app in Set(groups.keys).union(series.keys).sorted() {
            let impact = writer.rounds(series[app] ?? [], splitUnsafe: false).safe
            let appGroups = groups[app] ?? []
            for (i, (key, group)) in appGroups.enumerated() {
                let toggles = group.toggles.sorted(by: { $0.key < $1.key }).map { name, c -> ArraySlice<UInt8> in
                    var w = JSONWriter(capacity: 96)
                    w.beginObject()
                    w.key(name.text)
                    w.beginObject()
                    w.key("yes"); w.int(c.yes)
                    w.key("no"); w.int(c.no)
                    w.key("variants"); variantsJSON(&w, c.variants)
                    w.endObject()
                    w.endObject()
                    return w.bytes.dropFirst().dropLast() // `"name":{...}` without the braces
                }
                // Both ends inside the hour the counts belong to: the server files them by `stop`.
                // The app's impact metrics ride with its latest hour.
                out += singlePosts(window, token: token, appName: app, start: max(group.start, key.hour), stop: group.stop,
                                   toggles: toggles, impact: i == appGroups.count - 1 ? impact.first ?? [] : [])
            }
            for (r, round) in impact.enumerated() where r > 0 || appGroups.isEmpty {
                out += singlePosts(window, token: token, appName: app, start: window.opened, stop: closedAt, toggles: [], impact: round)
            }
        }
        return out
    }

    /// `POST /client/metrics` bodies in the SDKs' own shape for one app, under `maxBody`.
    func singlePosts(_ window: Window, token: String, appName: String, start: Int64, stop: Int64,
                     toggles: [ArraySlice<UInt8>], impact: [ArraySlice<UInt8>]) -> [Batch] {
        let instance = window.instances
            .filter { $0.key.token == token && $0.key.appName == appName }
            .min { $0.key.instanceId < $1.key.instanceId }
        var head = JSONWriter()
        head.beginObject()
        head.key("appName"); head.string(appName)
        head.key("instanceId"); head.string(instance?.key.instanceId ?? "default")
        // What the instance said about itself, as it would have posted it.
        for field in SDKField.all {
            if let v = instance?.value.sdk[field] { head.key(field.name); head.string(v) }
        }
        head.key("bucket"); head.beginObject()
        head.key("start"); head.string(Timestamp.iso8601(min(start, stop)))
        head.key("stop"); head.string(Timestamp.iso8601(stop))
        head.key("toggles")
        let sections = [Section(head: "{", items: toggles, tail: "}}", required: true),
                        Section(head: #","impactMetrics":["#, items: impact, required: false)]
        return pack(open: head.bytes, sections, close: "}").map {
            Batch(id: "", token: token, path: "/client/metrics", body: $0.body, created: 0, entries: $0.counts[0] + $0.counts[1])
        }
    }

    func impactWriter(_ window: Window) -> ImpactWriter {
        // Room for a body's own members around a metric.
        ImpactWriter(table: window.impact, maxFragment: max(1024, maxBody - 512))
    }

    // MARK: shared

    func sortedGroups(_ window: Window, token: String) -> [(Window.GroupKey, Window.Group)] {
        window.groups.filter { $0.key.token == token }
            .sorted { ($0.key.hour, $0.key.appName) < ($1.key.hour, $1.key.appName) }
            .map { ($0.key, $0.value) }
    }

    func variantsJSON(_ w: inout JSONWriter, _ variants: FeatureTable<Int64>) {
        w.beginObject()
        if variants.count == 1, let (name, count) = variants.first(where: { _ in true }) {
            w.key(name.text); w.int(count)
        } else if variants.count > 1 {
            for (name, count) in variants.sorted(by: { $0.key < $1.key }) { w.key(name.text); w.int(count) }
        }
        w.endObject()
    }

    /// Part of a body: `head`, the items joined by commas, `tail`. An optional section is
    /// left out of a body that has none of its items.
    struct Section {
        var head: [UInt8]
        var items: [ArraySlice<UInt8>]
        var tail: [UInt8]
        var required: Bool

        init(head: String, items: [ArraySlice<UInt8>], tail: String = "]", required: Bool) {
            self.head = Array(head.utf8)
            self.items = items
            self.tail = Array(tail.utf8)
            self.required = required
        }
    }

    /// Greedy packing of JSON fragments into bodies `open, sections…, close`, each at most
    /// `maxBody` bytes unless one fragment alone is larger. `counts`: items per section in the
    /// body. No items at all: no body.
    func pack(open: [UInt8], _ sections: [Section], close: String) -> [(body: [UInt8], counts: [Int])] {
        guard sections.contains(where: { !$0.items.isEmpty }) else { return [] }
        let close = Array(close.utf8)
        let overhead = open.count + close.count + sections.filter(\.required).reduce(0) { $0 + $1.head.count + $1.tail.count }
        var bodies: [(body: [UInt8], counts: [Int])] = []
        var taken = Array(repeating: [ArraySlice<UInt8>](), count: sections.count)
        var size = overhead
        func flush() {
            guard taken.contains(where: { !$0.isEmpty }) else { return }
            var b = open
            b.reserveCapacity(size)
            for (i, section) in sections.enumerated() where section.required || !taken[i].isEmpty {
                b += section.head
                for (k, item) in taken[i].enumerated() { if k > 0 { b.append(UInt8(ascii: ",")) }; b += item }
                b += section.tail
            }
            b += close
            bodies.append((b, taken.map(\.count)))
            taken = Array(repeating: [], count: sections.count)
            size = overhead
        }
        for (i, section) in sections.enumerated() {
            for item in section.items {
                func cost() -> Int {
                    item.count + (taken[i].isEmpty ? (section.required ? 0 : section.head.count + section.tail.count) : 1)
                }
                if size + cost() > maxBody, taken.contains(where: { !$0.isEmpty }) { flush() }
                size += cost()
                taken[i].append(item)
            }
        }
        flush()
        return bodies
    }
}

/// The appName a metrics-proxy gives itself in `connectVia`.
public enum ProxyName {
    public static let appName = "metrics-proxy"
}
