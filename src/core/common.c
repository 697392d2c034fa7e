/* Errors, allocation and the counter-based RNG. */
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE /* MADV_HUGEPAGE */
#endif
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

env2_status env2_fail(env2_err *e, env2_status code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void env2_err_clear(env2_err *e)
{
    if (e) e->msg[0] = '\0';
}

env2_status env2_err_prefix(env2_err *e, env2_status code, const char *fmt, ...)
{
    if (e) {
        char prefix[256], old[sizeof e->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        size_t pl = strlen(prefix);
        memcpy(old, e->msg, sizeof old);
        if (pl > sizeof e->msg - 3) pl = sizeof e->msg - 3;
        memcpy(e->msg, prefix, pl);
        e->msg[pl] = ':';
        e->msg[pl + 1] = ' ';
        size_t rest = sizeof e->msg - pl - 3, ol = strlen(old);
        if (ol > rest) ol = rest;
        memcpy(e->msg + pl + 2, old, ol);
        e->msg[pl + 2 + ol] = '\0';
    }
    return code;
}

static _Thread_local env2_err tls_err;
env2_err *env2_tls_err(void) { return &tls_err; }

long env2_fail_alloc_after = -1;
long env2_alloc_count = 0;

static int alloc_should_fail(void)
{
    env2_alloc_count++;
    if (env2_fail_alloc_after < 0) return 0;
    if (env2_fail_alloc_after == 0) return 1;
    env2_fail_alloc_after--;
    return 0;
}

void *env2_malloc(size_t bytes)
{
    if (alloc_should_fail()) return NULL;
    return malloc(bytes ? bytes : 1);
}

void *env2_calloc(size_t count, size_t size)
{
    if (alloc_should_fail()) return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}

void *env2_realloc(void *p, size_t bytes)
{
    if (alloc_should_fail()) return NULL;
    return realloc(p, bytes ? bytes : 1);
}

ENV2_API void env2_free(void *p) { free(p); }

void *env2_aligned_alloc(size_t bytes)
{
    void *p;
    if (alloc_should_fail()) return NULL;
    size_t align = 64;
    bytes = (bytes + 63) & ~(size_t)63;
    if (bytes == 0) bytes = 64;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    /* Large buffers (the weights, the workspaces) on 2 MiB pages where the
     * kernel grants them (transparent huge pages in "madvise" mode, Debian's
     * default): the 1x1 layers read the weights at a row stride of several
     * KiB, a new 4 KiB page every row.  V2-S, 2 threads, alternating
     * processes (docs/PERFORMANCE.md, session 16): inference 1-4 % faster,
     * training bs32 @128 4 %; peak RSS at 384 115 against 113 MiB. */
    const size_t huge = (size_t)2 << 20;
    if (bytes >= 2 * huge) {
        align = huge;
        bytes = (bytes + huge - 1) & ~(huge - 1);
    }
#endif
    p = aligned_alloc(align, bytes);
    if (!p) return NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (align == huge) (void)madvise(p, bytes, MADV_HUGEPAGE); /* before the pages are touched */
#endif
    memset(p, 0, bytes);
    return p;
}

void env2_aligned_free(void *p) { free(p); }

char *env2_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = env2_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* splitmix64 finaliser applied to a combination of the three keys: cheap,
 * statistically good for this purpose, and a pure function of its inputs. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t env2_rng_u64(uint64_t seed, uint64_t stream, uint64_t counter)
{
    uint64_t k = mix64(seed + 0x9e3779b97f4a7c15ULL);
    k = mix64(k ^ (stream * 0xd1b54a32d192ed03ULL));
    return mix64(k + counter * 0x9e3779b97f4a7c15ULL);
}

float env2_rng_uniform(uint64_t seed, uint64_t stream, uint64_t counter)
{
    return (float)(env2_rng_u64(seed, stream, counter) >> 40) * (1.0f / 16777216.0f);
}

float env2_rng_normal(uint64_t seed, uint64_t stream, uint64_t counter)
{
    uint64_t r = env2_rng_u64(seed, stream, counter);
    /* two 32-bit halves -> two uniforms; u1 in (0, 1] so log() is finite */
    double u1 = ((double)(r >> 32) + 1.0) / 4294967296.0;
    double u2 = (double)(r & 0xffffffffu) / 4294967296.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint32_t env2_rng_below(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t n)
{
    if (n == 0) return 0;
    /* multiply-shift: bias is below 2^-32, irrelevant here */
    return (uint32_t)(((env2_rng_u64(seed, stream, counter) >> 32) * (uint64_t)n) >> 32);
}

double env2_rng_gamma(env2_rng *r, double a)
{
    if (a < 1.0) {
        /* boost: Gamma(a) = Gamma(a+1) * U^(1/a) */
        double u = env2_rng_next_uniform(r);
        if (u <= 0.0) u = 1e-12;
        return env2_rng_gamma(r, a + 1.0) * pow(u, 1.0 / a);
    }
    double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (int tries = 0; tries < 1000; tries++) {
        double x = env2_rng_next_normal(r), v = 1.0 + c * x;
        if (v <= 0.0) continue;
        v = v * v * v;
        double u = env2_rng_next_uniform(r);
        if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
        if (u > 0.0 && log(u) < 0.5 * x * x + d * (1.0 - v + log(v))) return d * v;
    }
    return d; /* practically unreachable; keeps the function total */
}

double env2_rng_beta(env2_rng *r, double a, double b)
{
    double x = env2_rng_gamma(r, a), y = env2_rng_gamma(r, b);
    if (x + y <= 0.0) return 0.5;
    return x / (x + y);
}
