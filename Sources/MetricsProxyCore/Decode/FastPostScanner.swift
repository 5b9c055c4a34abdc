/// The fast path of `MetricsPostDecoder`: one pass over the bytes for posts in the shape SDKs
/// send (plain strings, a bucket object, integer counts, variants as an object). It accepts
/// only bodies the full decoder accepts with the same meaning; anything else (escapes,
/// coercions, null buckets, any error) makes it answer false, and the caller runs the full
/// decoder, which alone words errors.
public enum FastPostScanner {
    public static func scan(_ body: UnsafeBufferPointer<UInt8>, into p: inout FastPost) -> Bool {
        p.toggles.removeAll()
        p.variants.removeAll()
        p.longestName = 0
        p.instanceId = nil
        p.impact = nil
        p.impactRange = nil
        p.sdk.removeAll()
        for _ in p.sdkFields { p.sdk.append(nil) }
        guard let base = body.baseAddress else { return false }
        var r = PostReader(base: base, count: body.count, at: 0)
        guard r.readPost(into: &p, scanner: JSONScanner(body)) else { return false }
        r.skipWhitespace()
        return r.i == body.count
    }
}
