/* The thread pool (env2_par_run, src/core/pool.c): every task runs exactly
 * once with the nv it was asked for, results equal serial execution, two
 * user threads and nested regions work, a busy competing thread does not
 * make a 2-thread region loop much slower than 1 thread, steady state does
 * not allocate, and a failed pthread_create or a fork() leaves a working
 * (serial) pool.  env2_steal hands out every unit exactly once, and a late
 * task's units go to the others.  Kernels at odd thread counts are compared bit for bit
 * with 1 thread. */
#define _GNU_SOURCE 1 /* mallinfo2 */
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "harness.h"
#include "kernels/kernels.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ---- every v exactly once ------------------------------------------------------- */
enum { MAXV = 64 };
typedef struct count_job {
    atomic_int hits[MAXV];
    atomic_int bad_nv;
    int nv;
} count_job;

static void count_fn(void *arg, int v, int nv)
{
    count_job *j = arg;
    if (nv != j->nv || v < 0 || v >= nv) {
        atomic_fetch_add(&j->bad_nv, 1);
        return;
    }
    atomic_fetch_add(&j->hits[v], 1);
}

/* Runs `reps` regions of nv tasks; returns the number of regions in which
 * some task did not run exactly once or saw the wrong nv. */
static int count_regions(int nv, int reps)
{
    int bad = 0;
    count_job j;
    for (int r = 0; r < reps; r++) {
        for (int v = 0; v < MAXV; v++) atomic_init(&j.hits[v], 0);
        atomic_init(&j.bad_nv, 0);
        j.nv = nv < 1 ? 1 : nv;
        env2_par_run(nv, count_fn, &j);
        int ok = atomic_load(&j.bad_nv) == 0;
        for (int v = 0; v < MAXV; v++) ok &= atomic_load(&j.hits[v]) == (v < j.nv);
        bad += !ok;
    }
    return bad;
}

static void test_each_once(void)
{
    static const int nvs[] = {0, 1, 2, 3, 4, 5, 7, 8, 13, 64};
    for (size_t i = 0; i < sizeof nvs / sizeof nvs[0]; i++)
        CHECK_MSG(count_regions(nvs[i], 300) == 0, "nv %d: a task ran twice, never or with a wrong nv", nvs[i]);
    /* alternating sizes: a stale worker must never run a task of the wrong job */
    int bad = 0;
    for (int r = 0; r < 2000; r++) bad += count_regions(r % 3 == 0 ? 2 : r % 3 == 1 ? 5 : 3, 1);
    CHECK_EQ_INT(bad, 0);
}

/* ---- same results as serial ------------------------------------------------------- */
/* Each task sums its range of x in float (order-sensitive) into part[v]. */
typedef struct sum_job {
    const float *x;
    long n;
    float part[MAXV];
} sum_job;

static void sum_fn(void *arg, int v, int nv)
{
    sum_job *j = arg;
    long lo, hi;
    env2_range(j->n, v, nv, &lo, &hi);
    float s = 0.0f;
    for (long i = lo; i < hi; i++) s += j->x[i] * (float)(i % 7 + 1);
    j->part[v] = s;
}

static void test_same_as_serial(void)
{
    const long n = 100003;
    float *x = frandom(n);
    for (int nv = 1; nv <= 9; nv += 2) {
        sum_job a = {x, n, {0}}, b = {x, n, {0}};
        env2_par_run(nv, sum_fn, &a);
        for (int v = 0; v < nv; v++) sum_fn(&b, v, nv);
        CHECK_MSG(memcmp(a.part, b.part, sizeof a.part) == 0, "nv %d differs from serial execution", nv);
    }
    free(x);
}

/* ---- env2_steal: balanced ranges with stealing ------------------------------------ */
enum { STEAL_N = 3000 };
typedef struct steal_job {
    env2_steal st;
    long n;
    atomic_int hits[STEAL_N];
    atomic_int by[MAXV]; /* units each task took */
    atomic_int done0;    /* task 0 has returned */
    int late1;           /* task 1 starts only after task 0 returned */
} steal_job;

static void steal_fn(void *arg, int v, int nv)
{
    steal_job *j = arg;
    (void)nv;
    if (j->late1 && v == 1) {
        double t0 = now_s();
        while (!atomic_load(&j->done0) && now_s() - t0 < 5.0) sched_yield();
    }
    long u;
    while (env2_steal_next(&j->st, v, &u)) {
        if (u >= 0 && u < j->n) atomic_fetch_add(&j->hits[u], 1);
        atomic_fetch_add(&j->by[v], 1);
        if (u % 64 == 0) sched_yield(); /* let the other tasks interleave */
    }
    if (v == 0) atomic_store(&j->done0, 1);
}

static steal_job *steal_run(long n, int nv, int late1)
{
    steal_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->n = n;
    j->late1 = late1;
    env2_steal_init(&j->st, n, nv);
    env2_par_run(nv, steal_fn, j);
    return j;
}

static void test_steal(void)
{
    static const long ns[] = {0, 1, 5, 17, 100, STEAL_N};
    static const int nvs[] = {1, 2, 3, 5, ENV2_STEAL_MAX, ENV2_STEAL_MAX + 3, 40};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof nvs / sizeof nvs[0]; b++)
            for (int rep = 0; rep < 20; rep++) {
                steal_job *j = steal_run(ns[a], nvs[b], 0);
                if (!j) continue;
                int ok = 1, total = 0;
                for (long u = 0; u < j->n; u++) ok &= atomic_load(&j->hits[u]) == 1;
                for (int v = 0; v < MAXV; v++) total += atomic_load(&j->by[v]);
                CHECK_MSG(ok && total == j->n, "steal n %ld nv %d: a unit ran twice or never", ns[a], nvs[b]);
                free(j);
                if (!ok) return;
            }
    /* one task alone takes its own range in order, then the others' from the back */
    env2_steal st;
    env2_steal_init(&st, 10, 3); /* ranges [0,4) [4,7) [7,10) */
    static const long want[] = {4, 5, 6, 9, 8, 7, 3, 2, 1, 0};
    long u;
    int order_ok = 1;
    for (int k = 0; k < 10; k++) order_ok &= env2_steal_next(&st, 1, &u) && u == want[k];
    CHECK_MSG(order_ok && !env2_steal_next(&st, 1, &u) && !env2_steal_next(&st, 0, &u), "steal order of a lone task");
    /* a task that starts after the others finished finds nothing left: the
     * units of a late thread are done by the ones that are running */
    steal_job *j = steal_run(STEAL_N, 2, 1);
    if (j) {
        CHECK_EQ_INT(atomic_load(&j->by[0]), STEAL_N);
        CHECK_EQ_INT(atomic_load(&j->by[1]), 0);
        free(j);
    }
}

/* Kernels at odd thread counts against 1 thread, bit for bit. */
static int same_bits(const float *a, const float *b, long n) { return memcmp(a, b, (size_t)n * sizeof(float)) == 0; }

static void test_kernels_odd(void)
{
    const long M = 301, N = 203, K = 517;
    float *A = frandom(M * K), *B = frandom(K * N), *C1 = falloc(M * N), *Ct = falloc(M * N);
    k_sgemm(1, 0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C1, N, NULL);
    for (int nt = 3; nt <= 7; nt += 2) {
        k_sgemm(nt, 0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, Ct, N, NULL);
        CHECK_MSG(same_bits(C1, Ct, M * N), "sgemm %d threads != 1 thread", nt);
    }
    free(A), free(B), free(C1), free(Ct);

    /* 3x3 stride-2 convolution backward (col2im and the dw band split) */
    k_conv_shape s;
    k_conv_shape_init(&s, 3, 19, 17, 24, 40, 3, 2, 0);
    long xn = (long)s.n * s.h * s.w * s.ci, yn = (long)s.n * s.ho * s.wo * s.co, wn = 9L * s.ci * s.co;
    float *x = frandom(xn), *dy = frandom(yn), *w = frandom(wn);
    float *ws = falloc((long)k_conv2d_workspace(&s, 7) + 16);
    float *dx1 = falloc(xn), *dxt = falloc(xn), *dw1 = falloc(wn), *dwt = falloc(wn);
    memset(dw1, 0, (size_t)wn * sizeof(float));
    k_conv2d_bwd_data(1, &s, dy, w, dx1, ws, 0);
    k_conv2d_bwd_weight(1, &s, x, dy, dw1, ws, 0);
    for (int nt = 3; nt <= 5; nt += 2) {
        memset(dwt, 0, (size_t)wn * sizeof(float));
        k_conv2d_bwd_data(nt, &s, dy, w, dxt, ws, 0);
        k_conv2d_bwd_weight(nt, &s, x, dy, dwt, ws, 0);
        CHECK_MSG(same_bits(dx1, dxt, xn), "conv bwd_data %d threads != 1 thread", nt);
        CHECK_MSG(same_bits(dw1, dwt, wn), "conv bwd_weight %d threads != 1 thread", nt);
    }
    free(x), free(dy), free(w), free(ws), free(dx1), free(dxt), free(dw1), free(dwt);

    /* batch-norm statistics (block reduction) and the fused backward */
    const long rows = 3000;
    const int Cn = 40;
    float *bx = frandom(rows * Cn), *bdy = frandom(rows * Cn), *g = frandom(Cn), *be = frandom(Cn);
    float *y1 = falloc(rows * Cn), *yt = falloc(rows * Cn), *da = falloc(rows * Cn);
    float *dx1b = falloc(rows * Cn), *dxtb = falloc(rows * Cn);
    float m1[40], r1[40], v1[40], mt[40], rt[40], vt[40], dg1[40] = {0}, db1[40] = {0}, dgt[40], dbt[40];
    k_bn_act_fwd_train(1, rows, Cn, bx, g, be, 1e-3f, K_ACT_SILU, y1, m1, r1, v1);
    k_bn_act_bwd(1, rows, Cn, bx, bdy, g, be, m1, r1, K_ACT_SILU, da, dx1b, dg1, db1);
    for (int nt = 3; nt <= 7; nt += 2) {
        memset(dgt, 0, sizeof dgt);
        memset(dbt, 0, sizeof dbt);
        k_bn_act_fwd_train(nt, rows, Cn, bx, g, be, 1e-3f, K_ACT_SILU, yt, mt, rt, vt);
        k_bn_act_bwd(nt, rows, Cn, bx, bdy, g, be, mt, rt, K_ACT_SILU, da, dxtb, dgt, dbt);
        int same = same_bits(y1, yt, rows * Cn) && !memcmp(m1, mt, sizeof m1) && !memcmp(r1, rt, sizeof r1) &&
                   !memcmp(v1, vt, sizeof v1) && same_bits(dx1b, dxtb, rows * Cn) && !memcmp(dg1, dgt, sizeof dg1) &&
                   !memcmp(db1, dbt, sizeof db1);
        CHECK_MSG(same, "batch norm %d threads != 1 thread", nt);
    }
    free(bx), free(bdy), free(g), free(be), free(y1), free(yt), free(da), free(dx1b), free(dxtb);
}

/* ---- two user threads at once ------------------------------------------------------ */
typedef struct user_arg {
    int nv, bad;
    const float *A, *B, *Cref;
    long M, N, K;
} user_arg;

static void *user_thread(void *p)
{
    user_arg *u = p;
    float *C = falloc(u->M * u->N);
    for (int r = 0; r < 300; r++) {
        u->bad += count_regions(u->nv + r % 2, 1);
        if (r % 10 == 0) {
            k_sgemm(u->nv, 0, 0, u->M, u->N, u->K, 1.0f, u->A, u->K, u->B, u->N, 0.0f, C, u->N, NULL);
            u->bad += !same_bits(C, u->Cref, u->M * u->N);
        }
    }
    free(C);
    return NULL;
}

static void test_two_callers(void)
{
    const long M = 256, N = 96, K = 160;
    float *A = frandom(M * K), *B = frandom(K * N), *Cref = falloc(M * N);
    k_sgemm(1, 0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, Cref, N, NULL);
    user_arg u[2] = {{2, 0, A, B, Cref, M, N, K}, {3, 0, A, B, Cref, M, N, K}};
    pthread_t t[2];
    int started = 0;
    for (int i = 0; i < 2; i++) started += pthread_create(&t[i], NULL, user_thread, &u[i]) == 0;
    CHECK_EQ_INT(started, 2);
    for (int i = 0; i < started; i++) pthread_join(t[i], NULL);
    CHECK_EQ_INT(u[0].bad, 0);
    CHECK_EQ_INT(u[1].bad, 0);
    free(A), free(B), free(Cref);
}

/* ---- nested regions run serially on the task's thread ------------------------------- */
typedef struct nest_job {
    atomic_int inner_hits[MAXV * MAXV];
    atomic_int foreign; /* inner tasks that ran on another thread than their outer task */
} nest_job;

typedef struct inner_arg {
    nest_job *j;
    int outer;
    pthread_t self;
} inner_arg;

static void inner_fn(void *arg, int v, int nv)
{
    inner_arg *a = arg;
    (void)nv;
    if (!pthread_equal(pthread_self(), a->self)) atomic_fetch_add(&a->j->foreign, 1);
    atomic_fetch_add(&a->j->inner_hits[a->outer * MAXV + v], 1);
}

static void outer_fn(void *arg, int v, int nv)
{
    (void)nv;
    inner_arg a = {arg, v, pthread_self()};
    env2_par_run(4, inner_fn, &a);
}

static void test_nested(void)
{
    static nest_job j;
    for (int i = 0; i < MAXV * MAXV; i++) atomic_init(&j.inner_hits[i], 0);
    atomic_init(&j.foreign, 0);
    for (int r = 0; r < 50; r++) env2_par_run(3, outer_fn, &j);
    int ok = 1;
    for (int o = 0; o < 3; o++)
        for (int v = 0; v < 4; v++) ok &= atomic_load(&j.inner_hits[o * MAXV + v]) == 50;
    CHECK(ok);
    CHECK_EQ_INT(atomic_load(&j.foreign), 0);
}

/* ---- a competing busy thread ---------------------------------------------------------
 * A thread spinning in this process takes one of the (two) cores.  With a
 * fork/join region per call, every region would wait for the descheduled
 * second thread (10-30x slower); with claimed tasks the caller does the work
 * itself.  The bound (3x the 1-thread time, measured under the same
 * contention, best of several loops, three attempts) leaves room for a noisy
 * machine. */
static atomic_int spin_stop;
static void *spinner(void *unused)
{
    (void)unused;
    volatile unsigned long x = 0;
    while (!atomic_load_explicit(&spin_stop, memory_order_relaxed)) x++;
    return NULL;
}

typedef struct busy_job {
    const float *x;
    long n;
    float part[MAXV];
} busy_job;

static void busy_fn(void *arg, int v, int nv)
{
    busy_job *j = arg;
    long lo, hi;
    env2_range(j->n, v, nv, &lo, &hi);
    float s = 0.0f;
    for (int rep = 0; rep < 8; rep++)
        for (long i = lo; i < hi; i++) s = s * 0.999f + j->x[i];
    j->part[v] = s;
}

static double region_loop(int nv, busy_job *j)
{
    double t0 = now_s();
    for (int r = 0; r < 600; r++) env2_par_run(nv, busy_fn, j);
    return now_s() - t0;
}

static void test_contention(void)
{
    busy_job j = {NULL, 4096, {0}};
    float *x = frandom(j.n);
    j.x = x;
    region_loop(2, &j); /* warm-up: workers started */
    double ratio = 0;
    for (int attempt = 0; attempt < 3; attempt++) {
        atomic_store(&spin_stop, 0);
        pthread_t sp;
        if (pthread_create(&sp, NULL, spinner, NULL) != 0) {
            CHECK_MSG(0, "could not start the competing thread");
            break;
        }
        double t1 = 1e9, t2 = 1e9;
        for (int k = 0; k < 4; k++) {
            double a = region_loop(1, &j), b = region_loop(2, &j);
            if (a < t1) t1 = a;
            if (b < t2) t2 = b;
        }
        atomic_store(&spin_stop, 1);
        pthread_join(sp, NULL);
        ratio = t2 / t1;
        printf("contention: 1 thread %.2f ms, 2 threads %.2f ms per 600 regions (ratio %.2f)\n", t1 * 1e3, t2 * 1e3,
               ratio);
        if (ratio < 3.0) break;
    }
    CHECK_MSG(ratio < 3.0, "2 threads with a competing busy thread took %.1fx the 1-thread time", ratio);
    free(x);
}

/* ---- steady state allocates nothing ---------------------------------------------------- */
static size_t heap_in_use(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    return mallinfo2().uordblks;
#else
    return 0;
#endif
}

/* A region whose tasks wait (up to half a second) until all nv have
 * started, so that each runs on a different pool thread, and then run a
 * GEMM there: every thread gets its GEMM packing buffer, which it allocates
 * at its first GEMM. */
typedef struct every_thread_job {
    atomic_int started;
    const float *A, *B;
    float *C;
    long M, N, K;
} every_thread_job;

static void every_thread_fn(void *arg, int v, int nv)
{
    every_thread_job *j = arg;
    atomic_fetch_add(&j->started, 1);
    double t0 = now_s();
    if (!strcmp(env2_par_backend(), "pool"))
        while (atomic_load(&j->started) < nv && now_s() - t0 < 0.5) continue;
    long lo, hi;
    env2_range(j->M, v, nv, &lo, &hi);
    k_sgemm(1, 0, 0, hi - lo, j->N, j->K, 1.0f, j->A + lo * j->K, j->K, j->B, j->N, 0.0f, j->C + lo * j->N, j->N,
            NULL);
}

static void test_no_alloc(void)
{
    const long M = 200, N = 64, K = 96;
    float *A = frandom(M * K), *B = frandom(K * N), *C = falloc(M * N);
    sum_job sj = {A, M * K, {0}};
    every_thread_job ej = {0, A, B, C, M, N, K};
    atomic_init(&ej.started, 0);
    env2_par_run(5, every_thread_fn, &ej);
    for (int r = 0; r < 20; r++) {
        for (int nv = 2; nv <= 5; nv++) {
            env2_par_run(nv, sum_fn, &sj);
            k_sgemm(nv, 0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N, NULL);
        }
    }
    size_t before = heap_in_use();
    long counted = env2_alloc_count;
    for (int r = 0; r < 200; r++)
        for (int nv = 2; nv <= 5; nv++) {
            env2_par_run(nv, sum_fn, &sj);
            k_sgemm(nv, 0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N, NULL);
        }
    CHECK_EQ_INT(env2_alloc_count - counted, 0);
    CHECK_EQ_INT((long long)heap_in_use() - (long long)before, 0);
    free(A), free(B), free(C);
}

/* ---- pthread_create failure and fork, each in a child process ---------------------------- */
static int child_regions_ok(void)
{
    int bad = 0;
    for (int nv = 2; nv <= 5; nv++) bad += count_regions(nv, 50);
    return bad == 0;
}

/* Runs body in a child process (killed after 20 s, so a hang fails); 1 if it
 * exited with status 0. */
static int in_child(int (*body)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) {
        alarm(20);
        _exit(body() ? 0 : 1);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid) return 0;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static int create_fails(void)
{
    env2_pool_test_fail_create = 1;
    return child_regions_ok();
}

int main(void)
{
    /* before this process has any worker: a pool whose threads cannot start */
    CHECK_MSG(in_child(create_fails), "regions with failing pthread_create");
    test_each_once();
    test_same_as_serial();
    test_steal();
    test_kernels_odd();
    test_two_callers();
    test_nested();
    /* after fork() the child has no workers, the pool must still serve it */
    CHECK_MSG(in_child(child_regions_ok), "regions in a child forked while the pool has workers");
    test_no_alloc();
    test_contention();
    return test_summary();
}
