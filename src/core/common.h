/* Internal foundation shared by every part of the library: status codes with
 * detail text, aligned allocation, static work partitioning for threads and the
 * counter-based random number generator.  Nothing here is exported. */
#ifndef ENV2_COMMON_H
#define ENV2_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdatomic.h>

#include "efficientnetv2.h"

#if defined(__GNUC__) || defined(__clang__)
#define ENV2_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define ENV2_UNUSED __attribute__((unused))
#else
#define ENV2_PRINTF(a, b)
#define ENV2_UNUSED
#endif

/* ---- errors ------------------------------------------------------------
 * Internal functions return an env2_status and, on failure, write a message
 * into an env2_err the caller owns (handles keep one; free functions use a
 * thread-local one).  `e` may be NULL when the caller does not want text. */
typedef struct env2_err {
    char msg[512];
} env2_err;

/* Formats the message into e (if not NULL) and returns code, so that the
 * usual form is `return env2_fail(e, ENV2_E_FORMAT, "...", ...);`. */
env2_status env2_fail(env2_err *e, env2_status code, const char *fmt, ...) ENV2_PRINTF(3, 4);
void env2_err_clear(env2_err *e);
/* Prefixes the existing message with "<prefix>: " (for context such as a
 * file name) and returns code. */
env2_status env2_err_prefix(env2_err *e, env2_status code, const char *fmt, ...) ENV2_PRINTF(3, 4);

/* Thread-local detail text for calls that have no handle to hold it
 * (failed creation, free functions); read through env2_last_error(NULL). */
env2_err *env2_tls_err(void);

/* ---- memory --------------------------------------------------------------
 * All large buffers are 64-byte aligned so that AVX-512 loads never split a
 * cache line at the start of a row.  Fault injection: tests set
 * env2_fail_alloc_after to N >= 0 so that the N+1-th allocation fails. */
void *env2_malloc(size_t bytes);
void *env2_calloc(size_t count, size_t size);
void *env2_realloc(void *p, size_t bytes); /* unaligned; for small growing arrays */
void *env2_aligned_alloc(size_t bytes);     /* zero-initialised */
void env2_aligned_free(void *p);
void env2_free(void *p);
extern long env2_fail_alloc_after;           /* -1 = never fail */
extern long env2_alloc_count;                /* allocations so far (tests: steady state allocates nothing) */
char *env2_strdup(const char *s);

/* ---- threads -------------------------------------------------------------
 * Work is split statically: task `ith` of `nth` takes [lo, hi) of `total`.
 * Every reduction that feeds training is done in fixed chunks combined in a
 * fixed order, so results do not depend on the thread count. */
static inline void env2_range(long total, int ith, int nth, long *lo, long *hi)
{
    long base = total / nth, rem = total % nth;
    *lo = ith * base + (ith < rem ? ith : rem);
    *hi = *lo + base + (ith < rem ? 1 : 0);
}
/* A parallel region (src/core/pool.c): fn(arg, v, nv) runs once for every
 * v in [0, nv), on the calling thread and the library's worker threads, in
 * any order and any assignment of tasks to threads; the call returns when
 * all have finished.  Kernels split their work by (v, nv) as they would by
 * (thread, thread count), so results depend on nv only.  nv <= 1 runs
 * fn(arg, 0, 1) directly.  Safe to call from several threads at once (a
 * caller that finds the pool busy runs its tasks itself) and from inside a
 * task (runs serially). */
typedef void (*env2_par_fn)(void *arg, int v, int nv);
void env2_par_run(int nv, env2_par_fn fn, void *arg);
const char *env2_par_backend(void); /* "pool", or "serial" when built with ENV2_NO_THREADS */
/* Balanced ranges with stealing, for regions whose units of work give the
 * same bits whichever thread computes them.  Task ith of nth first takes the
 * units of its own range [env2_range of n] from the front, in order, so that
 * a thread keeps the rows the layer before left in its cache; once its range
 * is empty it takes units from the back of the others' ranges.  A late or
 * slower thread (a worker that was asleep, a vCPU whose sibling is busy)
 * then costs at most the unit it is running, not the rest of its share.
 * Each range is one atomic word (front << 32 | back) on its own cache line;
 * with more than ENV2_STEAL_MAX tasks, tasks share ranges (ith mod the
 * count).  env2_steal_init runs before the region (the pool's publish makes
 * it visible); n < 2^31. */
#define ENV2_STEAL_MAX 16
typedef struct env2_steal {
    struct {
        _Alignas(64) _Atomic uint64_t w;
    } r[ENV2_STEAL_MAX];
    int nr;
} env2_steal;
void env2_steal_init(env2_steal *st, long n, int nth);
/* The next unit for task ith into *u; 0 when no unit is left anywhere. */
int env2_steal_next(env2_steal *st, int ith, long *u);
/* Test hook: nonzero makes starting a worker thread fail, as pthread_create
 * can; the pool then stops growing and regions run on the threads it has. */
extern int env2_pool_test_fail_create;
int env2_max_threads(void);         /* what "0 = all cores" resolves to: online processors */

/* ---- randomness ----------------------------------------------------------
 * Counter-based: every random number is a pure function of (seed, stream,
 * counter), so any value can be regenerated in any order or thread and a run
 * resumes exactly from its step count.  Streams separate the consumers. */
enum {
    ENV2_STREAM_INIT = 1,
    ENV2_STREAM_DROPOUT = 2,
    ENV2_STREAM_DROPPATH = 3,
    ENV2_STREAM_AUGMENT = 4,
    ENV2_STREAM_MIXUP = 5,
    ENV2_STREAM_SHUFFLE = 6,
    ENV2_STREAM_SPLIT = 7
};
uint64_t env2_rng_u64(uint64_t seed, uint64_t stream, uint64_t counter);
/* uniform in [0, 1) with 24 random bits, exactly representable in float */
float env2_rng_uniform(uint64_t seed, uint64_t stream, uint64_t counter);
/* standard normal (Box-Muller on two derived uniforms) */
float env2_rng_normal(uint64_t seed, uint64_t stream, uint64_t counter);
/* uniform integer in [0, n) */
uint32_t env2_rng_below(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t n);

/* Sequential generator over the same function, for code that draws many
 * numbers in order (augmentation of one image, Beta sampling). */
typedef struct env2_rng {
    uint64_t seed, stream, counter;
} env2_rng;
static inline env2_rng env2_rng_make(uint64_t seed, uint64_t stream, uint64_t start)
{
    env2_rng r = {seed, stream, start};
    return r;
}
static inline float env2_rng_next_uniform(env2_rng *r) { return env2_rng_uniform(r->seed, r->stream, r->counter++); }
static inline float env2_rng_next_normal(env2_rng *r) { return env2_rng_normal(r->seed, r->stream, r->counter++); }
static inline uint32_t env2_rng_next_below(env2_rng *r, uint32_t n) { return env2_rng_below(r->seed, r->stream, r->counter++, n); }
/* Gamma(a, 1) and Beta(a, a) samples (Marsaglia-Tsang), for Mixup/CutMix. */
double env2_rng_gamma(env2_rng *r, double a);
double env2_rng_beta(env2_rng *r, double a, double b);

/* Round-half-to-even float -> int helpers and clamps used across modules. */
static inline int env2_clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }
static inline float env2_clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

#endif
