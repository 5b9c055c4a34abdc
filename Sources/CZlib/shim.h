#ifndef METRICS_PROXY_CZLIB_SHIM_H
#define METRICS_PROXY_CZLIB_SHIM_H
#include <zlib.h>

/* inflateInit2 / deflateInit2 are macros (they pass the zlib version and struct size). */
static inline int mp_inflate_init2(z_stream *s, int window_bits) {
    return inflateInit2(s, window_bits);
}
static inline int mp_deflate_init2(z_stream *s, int level, int window_bits) {
    return deflateInit2(s, level, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY);
}

/* CRC-32C (Castagnoli), the journal's record checksum since its format 2: the CPU's crc32
   instruction where it has one (x86-64 with SSE 4.2, ARMv8 with CRC), else a bitwise loop.
   zlib's crc32 (format 1) cost about 4 instructions a byte; this is one per 8 bytes.
   Chains as zlib's does: mp_crc32c(mp_crc32c(0, a), b) is the CRC of a then b. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t mp_crc32c_portable(uint32_t crc, const void *data, size_t n) {
    const uint8_t *p = (const uint8_t *)data;
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

#if defined(__x86_64__)
#include <cpuid.h>
__attribute__((target("sse4.2"))) static inline uint32_t mp_crc32c_instruction(uint32_t crc, const void *data, size_t n) {
    const uint8_t *p = (const uint8_t *)data;
    uint64_t c = ~crc & 0xffffffffu;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return ~c32;
}
#elif defined(__aarch64__)
#include <sys/auxv.h>
__attribute__((target("crc"))) static inline uint32_t mp_crc32c_instruction(uint32_t crc, const void *data, size_t n) {
    const uint8_t *p = (const uint8_t *)data;
    uint32_t c = ~crc;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_arm_crc32cd(c, v);
    }
    while (n--) c = __builtin_arm_crc32cb(c, *p++);
    return ~c;
}
#else
static inline uint32_t mp_crc32c_instruction(uint32_t crc, const void *data, size_t n) { return mp_crc32c_portable(crc, data, n); }
#endif

/* Whether the CPU has the instruction: asked once (cpuid can trap to the hypervisor). */
static inline int mp_crc32c_has_instruction(void) {
    static int known = -1;
    int k = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (k < 0) {
#if defined(__x86_64__)
        unsigned a, b, c, d;
        k = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_2) ? 1 : 0;
#elif defined(__aarch64__)
        k = (getauxval(AT_HWCAP) & (1ul << 7)) ? 1 : 0; /* HWCAP_CRC32 */
#else
        k = 0;
#endif
        __atomic_store_n(&known, k, __ATOMIC_RELAXED);
    }
    return k;
}

static inline uint32_t mp_crc32c(uint32_t crc, const void *data, size_t n) {
    return mp_crc32c_has_instruction() ? mp_crc32c_instruction(crc, data, n) : mp_crc32c_portable(crc, data, n);
}
#endif
