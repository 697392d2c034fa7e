/* Run-time choice of the SIMD code path.
 *
 * The level is decided once (CPU features, then the ENV2_SIMD environment
 * variable) and can be lowered by k_simd_force so that tests exercise every
 * path on one machine.  Reads and writes are atomic so that a forced level set
 * by one thread is seen whole by kernels running in others. */
#include "kernels_internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define LEVEL_UNSET (-1)

static atomic_int detected_level = LEVEL_UNSET;
static atomic_int current_level = LEVEL_UNSET;

static int detect_cpu(void)
{
#if K_HAVE_X86_PATHS
    __builtin_cpu_init();
    /* The AVX-512 files are compiled with F, BW, VL and DQ enabled, so the
     * compiler may use any of them there; the libgcc/compiler-rt checks also
     * confirm that the OS saves the zmm state. */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("avx2"))
        return K_SIMD_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return K_SIMD_AVX2;
#endif
    return K_SIMD_GENERIC;
}

int k_simd_detect(void)
{
    int d = atomic_load_explicit(&detected_level, memory_order_relaxed);
    if (d == LEVEL_UNSET) {
        d = detect_cpu();
        atomic_store_explicit(&detected_level, d, memory_order_relaxed);
    }
    return d;
}

static int clamp_level(int level)
{
    int d = k_simd_detect();
    if (level < K_SIMD_GENERIC) level = K_SIMD_GENERIC;
    return level < d ? level : d;
}

int k_simd_level(void)
{
    int l = atomic_load_explicit(&current_level, memory_order_relaxed);
    if (l == LEVEL_UNSET) {
        const char *env = getenv("ENV2_SIMD");
        l = k_simd_detect();
        if (env) {
            if (strcmp(env, "generic") == 0) l = K_SIMD_GENERIC;
            else if (strcmp(env, "avx2") == 0) l = clamp_level(K_SIMD_AVX2);
            else if (strcmp(env, "avx512") == 0) l = clamp_level(K_SIMD_AVX512);
        }
        /* A concurrent k_simd_force wins over the environment default. */
        int expected = LEVEL_UNSET;
        if (!atomic_compare_exchange_strong(&current_level, &expected, l)) l = expected;
    }
    return l;
}

static void vmul_generic(const float *a, const float *b, float *dst, long n)
{
    SIMD_LOOP
    for (long k = 0; k < n; k++) dst[k] = a[k] * b[k];
}

k_vmul_fn k_vmul_pick(void)
{
#if K_HAVE_X86_PATHS
    int level = k_simd_level();
    if (level >= K_SIMD_AVX512) return k_vmul_avx512;
    if (level >= K_SIMD_AVX2) return k_vmul_avx2;
#endif
    return vmul_generic;
}

static void colsum_generic(const float *x, long rows, long ldx, long n, float *sums)
{
    for (long c = 0; c < n; c++) sums[c] = x[c];
    for (long r = 1; r < rows; r++) {
        const float *p = x + r * ldx;
        SIMD_LOOP
        for (long c = 0; c < n; c++) sums[c] += p[c];
    }
}

k_colsum_fn k_colsum_pick(void)
{
#if K_HAVE_X86_PATHS
    int level = k_simd_level();
    if (level >= K_SIMD_AVX512) return k_colsum_avx512;
    if (level >= K_SIMD_AVX2) return k_colsum_avx2;
#endif
    return colsum_generic;
}

static void colsum_pd_generic(const float *x, long rows, long ldx, long n, double *sums)
{
    for (long c = 0; c < n; c++) sums[c] = 0.0;
    for (long r = 0; r < rows; r++) {
        const float *p = x + r * ldx;
        for (long c = 0; c < n; c++) sums[c] += p[c];
    }
}

k_colsum_pd_fn k_colsum_pd_pick(void)
{
#if K_HAVE_X86_PATHS
    int level = k_simd_level();
    if (level >= K_SIMD_AVX512) return k_colsum_pd_avx512;
    if (level >= K_SIMD_AVX2) return k_colsum_pd_avx2;
#endif
    return colsum_pd_generic;
}

int k_simd_force(int level)
{
    int l = clamp_level(level);
    atomic_store(&current_level, l);
    return l;
}

const char *k_simd_name(int level)
{
    switch (level) {
    case K_SIMD_AVX512: return "avx512";
    case K_SIMD_AVX2: return "avx2";
    case K_SIMD_GENERIC: return "generic";
    default: return "unknown";
    }
}
