/* The library's thread pool: env2_par_run(nv, fn, arg) runs fn(arg, v, nv)
 * for every v in [0, nv).
 *
 * Why not fork/join with one fixed task per thread (OpenMP's model): on a
 * shared machine a worker that the OS has descheduled holds up the end of
 * every region, and a training step has hundreds of regions, so a second
 * busy process made 2-thread runs 10-30x slower than 1 thread.  Here the
 * tasks are claimed one at a time by whoever is running: the caller claims
 * tasks itself until none are left, and then waits only for tasks that a
 * worker has claimed and is executing.  A worker that wakes up late finds
 * nothing left and goes back to waiting.
 *
 * v is a "virtual thread" id: the kernels partition their work by (v, nv)
 * exactly as they did by (thread, thread count), so the result never depends
 * on which OS thread ran which task, nor on how many were available.
 *
 * The claim protocol.  One 64-bit atomic word holds (generation, nv, next
 * unclaimed v).  The job itself (fn, arg) sits in a plain slot owned by the
 * pool.  A task is claimed by a compare-and-swap of the whole word from
 * (g, nv, i) to (g, nv, i + 1) with i < nv, and only a thread whose CAS
 * succeeded reads the slot.  That makes a stale worker harmless: a worker
 * that loaded the word of job g and was then descheduled fails its CAS once
 * job g + 1 is published (the generation differs), and never calls fn with
 * the wrong job.
 *
 * Memory ordering:
 *  - The owner writes the slot and resets `done`, then stores the new word
 *    (seq_cst, which includes release).  A worker's successful CAS is an
 *    acquire that reads a value in the release sequence of that store (the
 *    later CASes are read-modify-writes and extend it), so it sees the slot.
 *  - The owner rewrites the slot only after it has counted every task of the
 *    current job as finished: workers add to `done` with release after fn
 *    returns (their slot reads come before that), the owner reads `done`
 *    with acquire.  So every slot read of job g happens before the slot
 *    writes of job g + 1, and fn's writes are visible to the caller when
 *    env2_par_run returns.  A task of job g cannot be claimed after the
 *    owner moved on: the owner moves on only when next == nv.
 *  - Successive owners (different user threads) are ordered by the owner
 *    mutex.
 *  - Sleeping: a worker increments `sleepers` and then re-reads the word,
 *    the owner stores the word and then reads `sleepers`, all seq_cst.  In
 *    the single total order either the owner sees the sleeper (and signals
 *    it under sleep_mu, which the worker holds from before its increment
 *    until it is inside pthread_cond_wait) or the worker sees the new job;
 *    no wake-up is lost.
 *
 * Generations wrap after 2^40 jobs; a CAS could only be fooled by a worker
 * that stayed descheduled between one load and its CAS for that many jobs.
 *
 * Concurrency between user threads: one region runs on the pool at a time.
 * A caller that finds the pool busy (trylock fails), a nested call from
 * inside a task, a build with ENV2_NO_THREADS, or a failure to start any
 * worker runs all nv tasks on the calling thread: same tasks, same results.
 *
 * Nothing here allocates once the pool has as many workers as the largest
 * nv seen so far asked for. */
#include "common.h"

#include <stdatomic.h>
#include <stdlib.h>

#ifndef ENV2_NO_THREADS
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#endif
#include <unistd.h>

int env2_max_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) return 1;
    return n > 1024 ? 1024 : (int)n;
}

void env2_steal_init(env2_steal *st, long n, int nth)
{
    st->nr = nth < 1 ? 1 : nth > ENV2_STEAL_MAX ? ENV2_STEAL_MAX : nth;
    for (int i = 0; i < st->nr; i++) {
        long lo, hi;
        env2_range(n, i, st->nr, &lo, &hi);
        atomic_store_explicit(&st->r[i].w, (uint64_t)lo << 32 | (uint64_t)hi, memory_order_relaxed);
    }
}

int env2_steal_next(env2_steal *st, int ith, long *u)
{
    const int own = ith % st->nr;
    /* claiming needs no ordering: units touch disjoint data, and the pool's
     * end of region publishes their results */
    for (int k = 0; k < st->nr; k++) {
        const int v = (own + k) % st->nr;
        uint64_t w = atomic_load_explicit(&st->r[v].w, memory_order_relaxed);
        for (;;) {
            uint64_t f = w >> 32, b = w & 0xffffffffu;
            if (f >= b) break;
            uint64_t nw = k == 0 ? (f + 1) << 32 | b : f << 32 | (b - 1);
            if (atomic_compare_exchange_weak_explicit(&st->r[v].w, &w, nw, memory_order_relaxed,
                                                      memory_order_relaxed)) {
                *u = (long)(k == 0 ? f : b - 1);
                return 1;
            }
        }
    }
    return 0;
}

/* Set while this thread runs a task, so that a region started from inside
 * a task runs serially instead of waiting on the pool it is part of. */
static _Thread_local int tl_in_task;

int env2_pool_test_fail_create;

static void run_serial(int nv, env2_par_fn fn, void *arg)
{
    int outer = tl_in_task;
    tl_in_task = 1;
    for (int v = 0; v < nv; v++) fn(arg, v, nv);
    tl_in_task = outer;
}

#ifdef ENV2_NO_THREADS

const char *env2_par_backend(void) { return "serial"; }

void env2_par_run(int nv, env2_par_fn fn, void *arg)
{
    if (nv <= 1) {
        fn(arg, 0, 1);
        return;
    }
    run_serial(nv, fn, arg);
}

#else

const char *env2_par_backend(void) { return "pool"; }

/* Claim word: bits 0..11 next unclaimed v, 12..23 nv, 24..63 generation. */
#define NV_BITS 12
#define NV_MAX ((1 << NV_BITS) - 1)
static inline uint64_t word_make(uint64_t gen, int nv) { return gen << (2 * NV_BITS) | (uint64_t)nv << NV_BITS; }
static inline int word_next(uint64_t w) { return (int)(w & NV_MAX); }
static inline int word_nv(uint64_t w) { return (int)((w >> NV_BITS) & NV_MAX); }
/* Worker `id` serves only jobs with nv > id + 1: a region of nv tasks needs
 * the caller and nv - 1 workers, and keeping it to the same nv - 1 keeps the
 * others asleep (and their per-thread buffers untouched) after a larger
 * region once made the pool bigger. */
static inline int word_open_for(uint64_t w, int id) { return word_next(w) < word_nv(w) && id + 1 < word_nv(w); }

/* How long an idle worker polls the claim word before it sleeps.  Long
 * while it has its core to itself: a sleeping worker wakes up tens of
 * microseconds after the next region is published, and on small models,
 * whose regions are that short, a 20 us poll made inference ~10% slower
 * than a 1 ms one.  Short for a while once the OS has taken the core away
 * in the middle of a poll (another process wants it): a sleeping worker
 * then gets the core back as soon as it is woken, whereas a polling one
 * uses up its share of the core and is preempted in the middle of a task,
 * which the caller has to wait for (with one other busy process, 2 threads
 * ran 1.2-1.5x slower with a fixed 0.1 ms poll than with 20 us). */
#define SPIN_LONG_NS 1000000
#define SPIN_SHORT_NS 20000
/* A gap this long between two polls means the worker was descheduled. */
#define PREEMPTED_NS 50000
/* Idle periods that use the short poll after a preemption was seen. */
#define SHORT_PERIODS 256
/* The caller's wait for tasks in flight polls this many times before it
 * starts yielding its core (to the worker it waits for, if they share it). */
#define OWNER_SPINS 2000

/* One per worker, allocated once and never moved (a thread may be waiting
 * on its condition variable). */
typedef struct worker {
    pthread_cond_t cv;
    int id;
    int asleep; /* under sleep_mu */
} worker;

static struct pool {
    pthread_mutex_t owner;    /* held by the thread whose region is on the pool */
    pthread_mutex_t sleep_mu; /* guards worker.asleep and the sleeping */
    /* owner-only state, and the job slot (see the ordering notes above) */
    env2_par_fn fn;
    void *arg;
    uint64_t gen;
    worker **w;
    int nthreads, cap, create_failed;
    /* hot words on their own cache lines */
    _Alignas(64) _Atomic uint64_t claim;
    _Alignas(64) atomic_int done; /* tasks of the current job finished by workers */
    _Alignas(64) atomic_int sleepers;
} P = {.owner = PTHREAD_MUTEX_INITIALIZER, .sleep_mu = PTHREAD_MUTEX_INITIALIZER};

static inline void cpu_relax(void)
{
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    __builtin_ia32_pause();
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
    __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Blocks until a job this worker serves has an unclaimed task. */
static void worker_sleep(worker *me)
{
    pthread_mutex_lock(&P.sleep_mu);
    me->asleep = 1;
    atomic_fetch_add(&P.sleepers, 1);
    while (!word_open_for(atomic_load(&P.claim), me->id)) pthread_cond_wait(&me->cv, &P.sleep_mu);
    atomic_fetch_sub(&P.sleepers, 1);
    me->asleep = 0;
    pthread_mutex_unlock(&P.sleep_mu);
}

static void *worker_main(void *self)
{
    worker *me = self;
    int64_t idle_since = 0, last_poll = 0;
    unsigned polls = 0;
    int short_left = 0;
    for (;;) {
        uint64_t w = atomic_load_explicit(&P.claim, memory_order_relaxed);
        if (word_open_for(w, me->id)) {
            idle_since = 0;
            if (!atomic_compare_exchange_weak_explicit(&P.claim, &w, w + 1, memory_order_acquire,
                                                       memory_order_relaxed))
                continue;
            /* claimed (generation, v): the slot holds this job until we report it done */
            env2_par_fn fn = P.fn;
            void *arg = P.arg;
            tl_in_task = 1;
            fn(arg, word_next(w), word_nv(w));
            tl_in_task = 0;
            atomic_fetch_add_explicit(&P.done, 1, memory_order_release);
            continue;
        }
        cpu_relax();
        if (++polls % 64) continue;
        int64_t t = now_ns();
        if (!idle_since) {
            idle_since = t;
        } else if (t - last_poll > PREEMPTED_NS) {
            short_left = SHORT_PERIODS;
            worker_sleep(me);
            idle_since = 0;
        } else if (t - idle_since > (short_left ? SPIN_SHORT_NS : SPIN_LONG_NS)) {
            if (short_left) short_left--;
            worker_sleep(me);
            idle_since = 0;
        }
        last_poll = t;
    }
    return NULL;
}

/* Wakes the sleeping workers that serve a job of nv tasks. */
static void wake(int nv)
{
    int n = nv - 1 < P.nthreads ? nv - 1 : P.nthreads;
    pthread_mutex_lock(&P.sleep_mu);
    for (int i = 0; i < n; i++)
        if (P.w[i]->asleep) pthread_cond_signal(&P.w[i]->cv);
    pthread_mutex_unlock(&P.sleep_mu);
}

/* After fork() the child has only the forking thread: it starts with no
 * workers (the parent's worker structs are abandoned; their condition
 * variables still count the parent's sleepers as waiters).  sleep_mu is
 * taken around fork so that it is not copied locked.  A region running in
 * another thread at fork time leaves `owner` locked in the child, whose
 * regions then simply run serially. */
static void fork_prepare(void) { pthread_mutex_lock(&P.sleep_mu); }
static void fork_parent(void) { pthread_mutex_unlock(&P.sleep_mu); }
static void fork_child(void)
{
    pthread_mutex_unlock(&P.sleep_mu);
    atomic_store(&P.sleepers, 0);
    P.nthreads = 0;
    P.create_failed = 0;
}
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void register_atfork(void) { pthread_atfork(fork_prepare, fork_parent, fork_child); }

/* Starts workers until there are `want` (called with the owner mutex held).
 * Workers block all signals: the application's handlers run on its own
 * threads.  A failure stops growth for good; the workers already running
 * keep serving (the claim protocol works with any number of them). */
static void grow(int want)
{
    if (P.nthreads >= want || P.create_failed) return;
    pthread_once(&atfork_once, register_atfork);
    if (want > P.cap) {
        worker **t = realloc(P.w, (size_t)want * sizeof *t);
        if (!t) {
            P.create_failed = 1;
            return;
        }
        P.w = t;
        P.cap = want;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t at;
    int ok = pthread_attr_init(&at) == 0;
    if (ok) pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    while (ok && P.nthreads < want) {
        worker *k = calloc(1, sizeof *k);
        if (!k) break;
        if (pthread_cond_init(&k->cv, NULL) != 0) {
            free(k);
            break;
        }
        k->id = P.nthreads;
        pthread_t th;
        if (env2_pool_test_fail_create || pthread_create(&th, &at, worker_main, k) != 0) {
            pthread_cond_destroy(&k->cv);
            free(k);
            break;
        }
        P.w[P.nthreads++] = k;
    }
    if (ok) pthread_attr_destroy(&at);
    if (P.nthreads < want) P.create_failed = 1;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void env2_par_run(int nv, env2_par_fn fn, void *arg)
{
    if (nv <= 1) {
        fn(arg, 0, 1);
        return;
    }
    if (tl_in_task || nv > NV_MAX || pthread_mutex_trylock(&P.owner) != 0) {
        run_serial(nv, fn, arg);
        return;
    }
    grow(nv - 1);
    if (P.nthreads == 0) {
        pthread_mutex_unlock(&P.owner);
        run_serial(nv, fn, arg);
        return;
    }
    /* publish: the previous job is complete, no thread reads the slot now */
    P.fn = fn;
    P.arg = arg;
    atomic_store_explicit(&P.done, 0, memory_order_relaxed);
    P.gen++;
    atomic_store(&P.claim, word_make(P.gen, nv));
    if (atomic_load(&P.sleepers) > 0) wake(nv);
    /* the caller works through the job like any worker */
    int mine = 0;
    tl_in_task = 1;
    for (;;) {
        uint64_t w = atomic_load_explicit(&P.claim, memory_order_relaxed);
        if (word_next(w) >= word_nv(w)) break;
        if (!atomic_compare_exchange_weak_explicit(&P.claim, &w, w + 1, memory_order_relaxed, memory_order_relaxed))
            continue;
        fn(arg, word_next(w), nv);
        mine++;
    }
    tl_in_task = 0;
    /* every task is claimed: wait only for those running on workers */
    const int others = nv - mine;
    for (int spins = 0; atomic_load_explicit(&P.done, memory_order_acquire) < others; spins++) {
        if (spins < OWNER_SPINS) cpu_relax();
        else sched_yield();
    }
    pthread_mutex_unlock(&P.owner);
}

#endif
