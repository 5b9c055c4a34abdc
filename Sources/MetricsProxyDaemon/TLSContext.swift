import CLibevent
import Glibc
import MetricsProxyCore

/// Owns the client `SSL_CTX`: certificate-chain verification on by default, the system CAs
/// plus `ca_file`. Connections made from it also check the host name (see `makeSSL`).
final class TLSContext {
    let ctx: OpaquePointer
    let verify: Bool

    init(caFile: String?, verify: Bool) throws(StartupError) {
        guard let ctx = SSL_CTX_new(TLS_client_method()) else { throw StartupError("cannot create a TLS context") }
        self.ctx = ctx
        self.verify = verify
        _ = mp_ssl_ctx_min_tls12(ctx)
        mp_ssl_ctx_ignore_unexpected_eof(ctx)
        SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nil)
        SSL_CTX_set_default_verify_paths(ctx)
        if let caFile, SSL_CTX_load_verify_locations(ctx, caFile, nil) != 1 {
            throw StartupError("cannot load upstream.ca_file \(caFile): \(Self.lastError())")
        }
    }

    deinit { SSL_CTX_free(ctx) }

    /// A new `SSL*` for one connection to `host`, with SNI and the host-name (or IP) check.
    /// The bufferevent made with BEV_OPT_CLOSE_ON_FREE owns it from then on.
    func makeSSL(host: String) -> OpaquePointer? {
        guard let ssl = SSL_new(ctx) else { return nil }
        if isIPLiteral(host) {
            if verify { X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) }
        } else {
            _ = mp_ssl_set_sni(ssl, host)
            if verify { SSL_set1_host(ssl, host) }
        }
        return ssl
    }

    static func lastError() -> String {
        let e = ERR_get_error()
        guard e != 0 else { return "unknown error" }
        return opensslErrorText(e)
    }
}

func isIPLiteral(_ host: String) -> Bool {
    var v4 = in_addr(), v6 = in6_addr()
    return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
}

/// OpenSSL's text for an error code.
func opensslErrorText(_ e: UInt) -> String {
    var buf = [CChar](repeating: 0, count: 256)
    ERR_error_string_n(e, &buf, buf.count)
    return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}
