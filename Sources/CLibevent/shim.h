#ifndef METRICS_PROXY_CLIBEVENT_SHIM_H
#define METRICS_PROXY_CLIBEVENT_SHIM_H

/* System headers first: libevent's event-config.h defines _GNU_SOURCE, and glibc's
   features.h must be read without it, as Swift's Glibc module reads it, or the two modules
   disagree on structs such as fd_set and a clean build fails. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <sys/types.h>
#include <sys/time.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <sys/syscall.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

/* The calling thread's id (for setpriority on one thread): SYS_gettid is a macro. */
static inline pid_t mp_gettid(void) {
    return (pid_t)syscall(SYS_gettid);
}

/* SSL_set_tlsext_host_name is a ctrl macro: Swift cannot import it. */
static inline int mp_ssl_set_sni(SSL *ssl, const char *host) {
    return (int)SSL_set_tlsext_host_name(ssl, host);
}

/* SSL_OP_IGNORE_UNEXPECTED_EOF is built with SSL_OP_BIT(): OpenSSL 3 otherwise reports a
   close without close_notify as an error libevent 2.1 does not recognise. */
static inline void mp_ssl_ctx_ignore_unexpected_eof(SSL_CTX *ctx) {
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
}

/* SSL_CTX_set_min_proto_version is a ctrl macro. */
static inline int mp_ssl_ctx_min_tls12(SSL_CTX *ctx) {
    return (int)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
}

/* struct sockaddr_un's sun_path is a fixed C array, awkward to fill from Swift. */
static inline int mp_unix_sockaddr(struct sockaddr_un *addr, const char *path) {
    size_t n = strlen(path);
    if (n >= sizeof(addr->sun_path)) return -1;
    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    memcpy(addr->sun_path, path, n + 1);
    return 0;
}

#endif
