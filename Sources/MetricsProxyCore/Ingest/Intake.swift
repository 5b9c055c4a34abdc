/// What a metrics or register post is, decided from its headers and bytes in the Unleash
/// server's order: body parsing (charset, encoding, size, JSON syntax), then the token, then
/// the content type, then the schema, then `[limits]`. `Ingest.accept` merges what it accepts.
struct Intake: Sendable {
    enum Outcome: Sendable, Equatable {
        /// A valid metrics post read by the fast path into the caller's `FastPost`.
        case fastMetrics(token: String)
        case metrics(MetricsPost, token: String)
        case register(Registration, token: String)
        case bulk(BulkPost, token: String)
        /// An answer with a JSON body.
        case refused(status: Int, body: [UInt8])
        /// A 400 whose body needs a fresh id.
        case invalid(ValidationFailure)
    }

    var maxBody: Int
    var upstreamToken: String?
    var limits: PostLimits

    init(maxBody: Int, upstreamToken: String?, limits: PostLimits) {
        self.maxBody = maxBody
        self.upstreamToken = upstreamToken
        self.limits = limits
    }

    /// With `fast`, a metrics post in the common shape is read into it (nothing allocated)
    /// and answered `.fastMetrics`; the caller merges it while `body` is still valid.
    func evaluate(_ kind: Ingest.Kind, _ headers: Ingest.Headers, body: UnsafeBufferPointer<UInt8>,
                  fast: inout FastPost?) -> Outcome {
        let (contentType, contentEncoding, authorization) = (headers.contentType, headers.contentEncoding, headers.authorization)
        let isJSON = Self.isJSON(contentType)
        if fast != nil, isJSON, contentEncoding == nil, body.count <= maxBody,
           contentType == "application/json"
            || Self.parameter("charset", in: contentType!).map({ $0.lowercased().hasPrefix("utf-") }) ?? true,
           FastPostScanner.scan(body, into: &fast!), limits.admits(fast!, body: body) {
            // A valid body: what is left to check is the token, as the server does.
            guard let token = upstreamToken ?? Token.fromAuthorization(authorization) else { return Self.tokenRequired }
            guard limits.allows(authorization: authorization) else { return Self.tokenNotAllowed }
            return .fastMetrics(token: token)
        }
        var parsed: Result<Decoded, ValidationFailure>?
        if isJSON {
            if let charset = Self.parameter("charset", in: contentType!), !charset.lowercased().hasPrefix("utf-") {
                return .refused(status: 415, body: ErrorBody.message("unsupported charset \"\(charset.uppercased())\""))
            }
            let encoding = (contentEncoding ?? "identity").trimmingASCIIWhitespace().lowercased()
            switch encoding {
            case "identity", "":
                guard body.count <= maxBody else { return .refused(status: 413, body: ErrorBody.message("request entity too large")) }
                parsed = decode(kind, body)
            case "gzip", "x-gzip", "deflate":
                do throws(BodyInflater.Failure) {
                    let inflated = try BodyInflater.inflate(body, gzip: encoding != "deflate", limit: maxBody)
                    parsed = inflated.withUnsafeBufferPointer { decode(kind, $0) }
                } catch {
                    guard case .corrupt(let why) = error else {
                        return .refused(status: 413, body: ErrorBody.message("request entity too large"))
                    }
                    var f = ValidationFailure(path: "/body", message: "The request body (`/body`) could not be decompressed (\(encoding)): \(why).")
                    f.isSyntax = true
                    return .invalid(f)
                }
            default:
                return .refused(status: 415, body: ErrorBody.message("unsupported content encoding \"\(encoding)\""))
            }
            if case .failure(let f) = parsed, f.isSyntax { return .invalid(f) }
        }
        guard let token = upstreamToken ?? Token.fromAuthorization(authorization) else { return Self.tokenRequired }
        guard limits.allows(authorization: authorization) else { return Self.tokenNotAllowed }
        guard isJSON, let parsed else { return .refused(status: 415, body: Self.contentTypeError(contentType)) }
        switch parsed {
        case .failure(let f): return .invalid(f)
        case .success(.metrics(let post)): return limits.refusal(for: post) ?? .metrics(post, token: token)
        case .success(.register(let r)): return limits.refusal(for: r) ?? .register(r, token: token)
        case .success(.bulk(let b)): return limits.refusal(for: b) ?? .bulk(b, token: token)
        }
    }

    static let tokenRequired = Outcome.refused(status: 401, body: ErrorBody.message(
        "This endpoint requires an API token. Please add an authorization header to your request with a valid token"))

    /// `[listen] allow_tokens` is set and the request's token is not in it.
    static let tokenNotAllowed = Outcome.refused(status: 401, body: ErrorBody.message(
        "This token is not accepted by this metrics-proxy ([listen] allow_tokens)"))

    enum Decoded { case metrics(MetricsPost), register(Registration), bulk(BulkPost) }

    func decode(_ kind: Ingest.Kind, _ body: UnsafeBufferPointer<UInt8>) -> Result<Decoded, ValidationFailure> {
        do throws(ValidationFailure) {
            switch kind {
            case .metrics: return .success(.metrics(try MetricsPostDecoder.decode(body)))
            case .register: return .success(.register(try RegistrationDecoder.decode(body)))
            case .bulk: return .success(.bulk(try BulkPostDecoder.decode(body)))
            }
        } catch {
            return .failure(error)
        }
    }

    /// `application/json`, any case, parameters allowed.
    static func isJSON(_ contentType: String?) -> Bool {
        guard let ct = contentType else { return false }
        if ct == "application/json" { return true } // what SDKs send: no parsing needed
        let mime = ct.split(separator: ";", maxSplits: 1).first.map { $0.trimmingASCIIWhitespace().lowercased() }
        return mime == "application/json"
    }

    static func parameter(_ name: String, in header: String) -> String? {
        for part in header.split(separator: ";").dropFirst() {
            let kv = part.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, kv[0].trimmingASCIIWhitespace().lowercased() == name else { continue }
            var v = kv[1].trimmingASCIIWhitespace()
            if v.hasPrefix("\""), v.hasSuffix("\""), v.count >= 2 { v = String(v.dropFirst().dropLast()) }
            return v
        }
        return nil
    }

    static func contentTypeError(_ contentType: String?) -> [UInt8] {
        let given = contentType.map { $0.isEmpty ? "you didn't provide one" : $0 } ?? "you didn't provide one"
        let text = "We do not accept the content-type you provided (\(given)). Try using one of the content-types we do accept instead (application/json) and make sure the body is in the corresponding format."
        var w = JSONWriter()
        w.beginObject()
        w.key("id"); w.string(UUID4.make())
        w.key("name"); w.string("ContentTypeError")
        w.key("message"); w.string(text)
        w.key("details"); w.beginArray(); w.beginObject(); w.key("message"); w.string(text); w.endObject(); w.endArray()
        w.endObject()
        return w.bytes
    }
}
