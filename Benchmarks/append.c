/* What the journal's appends cost the kernel: 32 MiB of 360-byte records (a compact 50-toggle
   post) appended to a new file in the working directory, reserved a MiB at a time with
   posix_fallocate as the journal does, five ways. Run by run.sh; alone:
       cc -O2 -o append Benchmarks/append.c && ./append
   The journal writes through a shared mapping (no system call per post) and now puts each
   64 KiB step in the page cache by writing zeros over it first ("zeros written ahead"). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define TOTAL (32 << 20)
#define RECORD 360
#define STEP (64 << 10)
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

enum { FAULTED, POPULATED, ZEROS_AHEAD, PWRITE_EACH, PWRITE_BATCHED, WAYS };
static const char *names[WAYS] = {
    "mapping, each page faulted in by the copy",
    "mapping, MADV_POPULATE_WRITE per 64 KiB",
    "mapping, zeros written ahead per 64 KiB (the journal)",
    "pwrite per record",
    "pwrite per 64 KiB of records",
};

static double run(int way) {
    static char zeros[STEP], batch[STEP + RECORD];
    char record[RECORD], path[] = "append-bench.tmp";
    memset(record, 7, sizeof record);
    unlink(path);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) { perror(path); exit(1); }
    char *base = mmap(NULL, 1 << 30, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) { perror("mmap"); exit(1); }
    madvise(base, 1 << 30, MADV_RANDOM);
    size_t used = 0, reserved = 0, ready = 0, released = 0, filled = 0;
    double t0 = now();
    while (used + RECORD <= TOTAL) {
        if (used + RECORD > reserved) {
            posix_fallocate(fd, reserved, 1 << 20);
            reserved += 1 << 20;
        }
        if (way <= ZEROS_AHEAD) {
            if (used + RECORD > ready) {
                size_t done = used & ~4095ul, end = ready + STEP < reserved ? ready + STEP : reserved;
                if (done > released) { madvise(base + released, done - released, MADV_DONTNEED); released = done; }
                if (way == POPULATED) madvise(base + ready, end - ready, MADV_POPULATE_WRITE);
                if (way == ZEROS_AHEAD) pwrite(fd, zeros, end - (ready > used ? ready : used), ready > used ? ready : used);
                ready = end;
            }
            memcpy(base + used, record, RECORD);
        } else {
            memcpy(batch + filled, record, RECORD);
            filled += RECORD;
            if (way == PWRITE_EACH || filled >= STEP) { pwrite(fd, batch, filled, used + RECORD - filled); filled = 0; }
        }
        used += RECORD;
    }
    double took = now() - t0;
    munmap(base, 1 << 30);
    close(fd);
    unlink(path);
    return took;
}

int main(void) {
    double best[WAYS];
    for (int w = 0; w < WAYS; w++) best[w] = 1e9;
    for (int round = 0; round < 3; round++)
        for (int w = 0; w < WAYS; w++) { double t = run(w); if (t < best[w]) best[w] = t; }
    printf("appending 32 MiB of %d-byte records (best of 3; ratio: the time against pwrite per 64 KiB):\n\n", RECORD);
    printf("| way | ms per MiB | µs per record | ratio |\n|---|---|---|---|\n");
    for (int w = 0; w < WAYS; w++)
        printf("| %s | %.3f | %.3f | %.1f |\n", names[w], best[w] * 1000 / 32, best[w] * 1e6 / (TOTAL / RECORD), best[w] / best[PWRITE_BATCHED]);
    return 0;
}
