/* Minimal test harness: each test program includes this, registers checks
 * with CHECK*, and ends main() with `return test_summary();`, which prints
 * "N passed, N failed" (the line make test sums up). */
#ifndef ENV2_TEST_HARNESS_H
#define ENV2_TEST_HARNESS_H
#include <math.h>
#include <stdio.h>
#include <string.h>

static int test_passed_, test_failed_;

/* Reproducible test data: an LCG each program seeds through test_rng_state
 * (uniform floats in [-1, 1)), and allocation that ends the test program
 * on failure. */
#include <stdint.h>
#include <stdlib.h>
static uint64_t test_rng_state = 0x9E3779B97F4A7C15ull;
static inline float frand(void)
{
    test_rng_state = test_rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((test_rng_state >> 40) & 0xFFFFFF) / 16777216.0f * 2.0f - 1.0f;
}
static inline float *falloc(long n)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}
static inline float *frandom(long n)
{
    float *p = falloc(n);
    for (long i = 0; i < n; i++) p[i] = frand();
    return p;
}
static inline float *fcopy(const float *s, long n)
{
    float *p = falloc(n);
    memcpy(p, s, (size_t)(n > 0 ? n : 1) * sizeof(float));
    return p;
}


#define CHECK(cond)                                                              \
    do {                                                                         \
        if (cond) test_passed_++;                                                \
        else { test_failed_++; fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); } \
    } while (0)

#define CHECK_MSG(cond, ...)                                                     \
    do {                                                                         \
        if (cond) test_passed_++;                                                \
        else { test_failed_++; fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
               fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); }              \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                       \
    do {                                                                         \
        long long a_ = (long long)(a), b_ = (long long)(b);                      \
        CHECK_MSG(a_ == b_, "%lld != %lld", a_, b_);                             \
    } while (0)

/* |a-b| <= tol * max(1, scale) */
#define CHECK_NEAR(a, b, tol)                                                    \
    do {                                                                         \
        double a_ = (double)(a), b_ = (double)(b);                               \
        CHECK_MSG(fabs(a_ - b_) <= (tol), "%.9g vs %.9g (tol %.3g)", a_, b_, (double)(tol)); \
    } while (0)

/* max |a_i - b_i| relative to max |b_i| */
static inline double test_max_rel_diff(const float *a, const float *b, long n)
{
    double md = 0, mb = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > md || d != d) md = (d != d) ? INFINITY : d;
        if (fabs((double)b[i]) > mb) mb = fabs((double)b[i]);
    }
    return md / (mb > 0 ? mb : 1.0);
}

static inline int test_summary(void)
{
    printf("%d passed, %d failed\n", test_passed_, test_failed_);
    return test_failed_ ? 1 : 0;
}
#endif
