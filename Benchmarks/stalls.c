/* Answer gaps: drives a server like `wrk -t2 -c50` (two threads, 25 keep-alive connections
   each, a new POST as soon as the answer to the last one is in) and records when each answer
   arrived. A stretch of more than 0.5 ms in which no connection got an answer is a stall of
   the server (or of the machine): it shows what a p99 at saturation hides in its noise, and
   where (`bench.py` prints them for the baseline and the proxy side by side).
   Usage: stalls PORT SECONDS BODIES   (BODIES: token<TAB>body per line, as post.lua reads)
   Prints one line: requests, rps, latency percentiles (ms), gaps over 0.5 and 1 ms, and
   the time spent in gaps over 0.5 ms. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONNECTIONS 25
#define MAX_ANSWERS (1 << 23)

static int port, seconds, requests_count;
static char **requests;
static int *request_length;

struct thread_data { long id; uint64_t *done; uint32_t *latency; size_t n; };
struct connection { int fd, next; uint64_t sent; char in[4096]; int have; };

static uint64_t now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

static void send_next(struct connection *c) {
    c->sent = now_us();
    if (write(c->fd, requests[c->next], request_length[c->next]) != request_length[c->next]) { perror("write"); exit(1); }
    c->next = (c->next + 1) % requests_count;
}

static void *drive(void *arg) {
    struct thread_data *t = arg;
    int ep = epoll_create1(0);
    static __thread struct connection cs[CONNECTIONS];
    for (int i = 0; i < CONNECTIONS; i++) {
        struct connection *c = &cs[i];
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); exit(1); }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->next = (int)((t->id * 17 + i * 31) % requests_count);
        c->have = 0;
        struct epoll_event e = { .events = EPOLLIN, .data.ptr = c };
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
        send_next(c);
    }
    uint64_t end = now_us() + (uint64_t)seconds * 1000000u;
    struct epoll_event ready[64];
    while (now_us() < end) {
        int k = epoll_wait(ep, ready, 64, 100);
        for (int j = 0; j < k; j++) {
            struct connection *c = ready[j].data.ptr;
            ssize_t r = read(c->fd, c->in + c->have, sizeof c->in - 1 - c->have);
            if (r <= 0) { fprintf(stderr, "stalls: connection closed\n"); exit(1); }
            c->have += (int)r;
            c->in[c->have] = 0;
            char *head_end = strstr(c->in, "\r\n\r\n");
            if (!head_end) continue;
            char *length = strcasestr(c->in, "content-length:");
            int total = (int)(head_end + 4 - c->in) + (length && length < head_end ? atoi(length + 15) : 0);
            if (c->have < total) continue;
            if (strncmp(c->in, "HTTP/1.1 202", 12) != 0) { fprintf(stderr, "stalls: answer %.12s\n", c->in); exit(1); }
            uint64_t at = now_us();
            if (t->n < MAX_ANSWERS) { t->done[t->n] = at; t->latency[t->n] = (uint32_t)(at - c->sent); t->n++; }
            memmove(c->in, c->in + total, c->have - total);
            c->have -= total;
            send_next(c);
        }
    }
    return NULL;
}

static int by_u64(const void *a, const void *b) { uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b; return x < y ? -1 : x > y; }
static int by_u32(const void *a, const void *b) { uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b; return x < y ? -1 : x > y; }

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: stalls PORT SECONDS BODIES\n"); return 2; }
    port = atoi(argv[1]);
    seconds = atoi(argv[2]);
    FILE *f = fopen(argv[3], "r");
    if (!f) { perror(argv[3]); return 1; }
    requests = malloc(sizeof(char *) * 4096);
    request_length = malloc(sizeof(int) * 4096);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0 && requests_count < 4096) {
        if (line[n - 1] == '\n') line[--n] = 0;
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        *tab = 0;
        size_t body = strlen(tab + 1);
        requests[requests_count] = malloc(body + strlen(line) + 256);
        request_length[requests_count] = sprintf(requests[requests_count],
            "POST /api/client/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Authorization: %s\r\nContent-Length: %zu\r\n\r\n%s", line, body, tab + 1);
        requests_count++;
    }
    struct thread_data t[2];
    pthread_t threads[2];
    for (long i = 0; i < 2; i++) {
        t[i] = (struct thread_data){ .id = i, .done = malloc(sizeof(uint64_t) * MAX_ANSWERS), .latency = malloc(sizeof(uint32_t) * MAX_ANSWERS) };
        pthread_create(&threads[i], NULL, drive, &t[i]);
    }
    for (int i = 0; i < 2; i++) pthread_join(threads[i], NULL);
    size_t total = t[0].n + t[1].n;
    uint64_t *done = malloc(sizeof(uint64_t) * total);
    uint32_t *latency = malloc(sizeof(uint32_t) * total);
    memcpy(done, t[0].done, t[0].n * sizeof(uint64_t));
    memcpy(done + t[0].n, t[1].done, t[1].n * sizeof(uint64_t));
    memcpy(latency, t[0].latency, t[0].n * sizeof(uint32_t));
    memcpy(latency + t[0].n, t[1].latency, t[1].n * sizeof(uint32_t));
    qsort(done, total, sizeof(uint64_t), by_u64);
    qsort(latency, total, sizeof(uint32_t), by_u32);
    size_t gaps_half = 0, gaps_one = 0;
    uint64_t gap_us = 0;
    for (size_t i = 1; i < total; i++) {
        uint64_t g = done[i] - done[i - 1];
        if (g > 500) { gaps_half++; gap_us += g; }
        if (g > 1000) gaps_one++;
    }
    double span = (done[total - 1] - done[0]) / 1e6;
    printf("requests=%zu rps=%.0f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f gaps_over_0.5ms=%zu gaps_over_1ms=%zu gap_ms=%.1f\n",
           total, total / span, latency[total / 2] / 1e3, latency[total * 9 / 10] / 1e3, latency[total * 99 / 100] / 1e3,
           latency[total * 999 / 1000] / 1e3, gaps_half, gaps_one, gap_us / 1e3);
    return 0;
}
