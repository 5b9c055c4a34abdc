/// Turns a closed window into upstream requests: one per token (bulk) or per (token, appName,
/// hour) (metrics), each body kept under `maxBody` by splitting, applications first.
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
        let tokens = Set(window.groups.keys.map(\.token)).union(window.instances.keys.map(\.token)).sorted()
        for token in tokens {
            if mode == .bulk, let environment = Token.environment(of: token) {
                out += bulk(window, token: token, environment: environment)
            } else {
                // A token that names no environment cannot use bulk: the server would file the
                // entries under an environment it then drops.
                out += singleApp(window, token: token)
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

    func bulk(_ window: Window, token: String, environment: String) -> [Batch] {
        let apps = window.instances.filter { $0.key.token == token }
            .sorted { ($0.key.appName, $0.key.instanceId) < ($1.key.appName, $1.key.instanceId) }
            .map { applicationJSON($0.key, $0.value, environment: environment) }
        // Every entry is written into one buffer; the packer takes them as slices of it.
        var w = JSONWriter(capacity: 160 * window.keyCount)
        var ends: [Int] = []
        ends.reserveCapacity(window.keyCount)
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
        let bodies = pack(first: apps.map { $0[...] }, then: metrics,
                          open: Array(#"{"applications":["#.utf8), middle: Array(#"],"metrics":["#.utf8),
                          close: Array("]}".utf8))
        return bodies.map { Batch(id: "", token: token, path: "/client/metrics/bulk", body: $0.body, created: 0, entries: $0.secondCount) }
    }

    func applicationJSON(_ key: Window.InstanceKey, _ i: Window.Instance, environment: String) -> [UInt8] {
        var w = JSONWriter(capacity: 256)
        w.beginObject()
        w.key("appName"); w.string(key.appName)
        w.key("instanceId"); w.string(key.instanceId)
        w.key("environment"); w.string(environment)
        // The server answers the whole request 400 without `started` and `interval`.
        w.key("interval"); w.double(i.interval ?? 0)
        w.key("started"); w.string(Timestamp.iso8601(i.started))
        w.key("strategies"); w.beginArray(); for s in i.strategies { w.string(s) }; w.endArray()
        w.key("sdkType"); w.string("backend")
        if let proxyInstance {
            // How the instance reaches Unleash, shown in its UI: through this proxy.
            w.key("connectVia"); w.beginArray(); w.beginObject()
            w.key("appName"); w.string("metrics-proxy")
            w.key("instanceId"); w.string(proxyInstance)
            w.endObject(); w.endArray()
        }
        for field in SDKField.all {
            if let value = i.sdk[field] { w.key(field.name); w.string(value) }
        }
        w.endObject()
        return w.bytes
    }

    // MARK: metrics (single app)

    func singleApp(_ window: Window, token: String) -> [Batch] {
        var out: [Batch] = []
        for (key, group) in sortedGroups(window, token: token) {
            let instance = window.instances
                .filter { $0.key.token == token && $0.key.appName == key.appName }
                .min { $0.key.instanceId < $1.key.instanceId }
            var head = JSONWriter()
            head.beginObject()
            head.key("appName"); head.string(key.appName)
            head.key("instanceId"); head.string(instance?.key.instanceId ?? "default")
            // What the instance said about itself, as it would have posted it.
            for field in SDKField.all {
                if let v = instance?.value.sdk[field] { head.key(field.name); head.string(v) }
            }
            head.key("bucket"); head.beginObject()
            // Both ends inside the hour the counts belong to: the server files them by `stop`.
            head.key("start"); head.string(Timestamp.iso8601(max(group.start, key.hour)))
            head.key("stop"); head.string(Timestamp.iso8601(group.stop))
            head.key("toggles")
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
            let bodies = pack(first: [], then: toggles, open: head.bytes + Array("{".utf8), middle: [],
                              close: Array("}}}".utf8))
            out += bodies.map { Batch(id: "", token: token, path: "/client/metrics", body: $0.body, created: 0, entries: $0.secondCount) }
        }
        return out
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

    /// Greedy packing of JSON fragments into bodies `open first,… middle then,… close`, each at
    /// most `maxBody` bytes unless one fragment alone is larger. Empty input gives one body
    /// only when `first` is non-empty or nothing at all was asked.
    func pack(first: [ArraySlice<UInt8>], then second: [ArraySlice<UInt8>], open: [UInt8], middle: [UInt8], close: [UInt8]) -> [(body: [UInt8], secondCount: Int)] {
        if first.isEmpty && second.isEmpty { return [] }
        let overhead = open.count + middle.count + close.count
        var bodies: [(body: [UInt8], secondCount: Int)] = []
        var firsts: [ArraySlice<UInt8>] = [], seconds: [ArraySlice<UInt8>] = []
        var size = overhead
        func flush() {
            guard !firsts.isEmpty || !seconds.isEmpty else { return }
            var b = open
            b.reserveCapacity(size)
            for (i, f) in firsts.enumerated() { if i > 0 { b.append(UInt8(ascii: ",")) }; b += f }
            b += middle
            for (i, s) in seconds.enumerated() { if i > 0 { b.append(UInt8(ascii: ",")) }; b += s }
            b += close
            bodies.append((b, seconds.count))
            firsts = []; seconds = []; size = overhead
        }
        for f in first {
            let add = f.count + (firsts.isEmpty ? 0 : 1)
            if size + add > maxBody, !firsts.isEmpty { flush() }
            size += f.count + (firsts.isEmpty ? 0 : 1)
            firsts.append(f)
        }
        for s in second {
            let add = s.count + (seconds.isEmpty ? 0 : 1)
            if size + add > maxBody, !(firsts.isEmpty && seconds.isEmpty) { flush() }
            size += s.count + (seconds.isEmpty ? 0 : 1)
            seconds.append(s)
        }
        flush()
        return bodies
    }
}
