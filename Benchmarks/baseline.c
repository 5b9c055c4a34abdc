/* The benchmark's baseline: a bare libevent evhttp server that answers every request 202
   without reading the body. Whatever metrics-proxy does beyond this is its own cost.
   Build: cc -O2 -o baseline baseline.c $(pkg-config --cflags --libs libevent)
   Run:   ./baseline PORT
   (bench.py also runs it with EVENT_EPOLL_USE_CHANGELIST=1, the epoll setting the proxy uses.) */
#include <event2/event.h>
#include <event2/http.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static void answer(struct evhttp_request *req, void *arg) {
    (void)arg;
    evhttp_send_reply(req, 202, "Accepted", NULL);
}

static void stop(evutil_socket_t sig, short events, void *base) {
    (void)sig; (void)events;
    event_base_loopbreak(base);
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 4280;
    struct event_base *base = event_base_new();
    struct evhttp *http = evhttp_new(base);
    evhttp_set_max_body_size(http, 102400);
    evhttp_set_gencb(http, answer, NULL);
    if (evhttp_bind_socket(http, "127.0.0.1", (unsigned short)port) != 0) {
        fprintf(stderr, "baseline: cannot listen on 127.0.0.1:%d\n", port);
        return 1;
    }
    struct event *term = evsignal_new(base, SIGTERM, stop, base);
    event_add(term, NULL);
    event_base_dispatch(base);
    event_free(term);
    evhttp_free(http);
    event_base_free(base);
    return 0;
}
