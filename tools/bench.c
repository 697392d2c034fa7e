/* env2 bench: latency of inference (median of repeated runs) or throughput
 * of training steps for one configuration, as one JSON line; with --gemm,
 * the library's SGEMM on the 1x1-convolution shapes of EfficientNetV2-S. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "efficientnetv2.h"
#include "env2_cli.h"
#include "kernels/kernels.h"
#include "common.h"
#include "profile.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_layer_time(const void *a, const void *b)
{
    double x = ((const env2_prof_layer *)a)->sec, y = ((const env2_prof_layer *)b)->sec;
    return (x < y) - (x > y);
}

/* The convolution layers of the profile by shape, slowest first, with their
 * rate: where the time goes inside the conv families, and which shapes run
 * far below the GEMM's best. */
static void print_layers(int runs, double total_run)
{
    int nl = env2_prof_nlayers;
    if (!nl) return;
    env2_prof_layer *l = malloc((size_t)nl * sizeof *l);
    if (!l) return;
    memcpy(l, env2_prof_layers, (size_t)nl * sizeof *l);
    qsort(l, (size_t)nl, sizeof *l, cmp_layer_time);
    printf("\n%-24s %-30s %6s %10s %7s %8s\n", "convolution layers", "NxHxW Cin->Cout kK sS", "calls", "ms/run",
           "share", "GFLOP/s");
    for (int i = 0; i < nl; i++) {
        char shape[64];
        snprintf(shape, sizeof shape, "%dx%dx%d %d->%d k%d s%d", l[i].n, l[i].h, l[i].w, l[i].ci, l[i].co, l[i].k,
                 l[i].stride);
        printf("%-24s %-30s %6ld %10.3f %6.1f%% %8.1f\n", env2_prof_name(l[i].fam), shape, l[i].calls / runs,
               l[i].sec * 1e3 / runs, 100.0 * l[i].sec / total_run, l[i].sec > 0 ? l[i].flops / l[i].sec / 1e9 : 0.0);
    }
    free(l);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median_sorted(const double *t, int n)
{
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* ---- --gemm: k_sgemm on the V2-S 1x1-convolution shapes ------------------------
 * The MBConv stages 4-6 of EfficientNetV2-S (docs: ../shared/spec/efficientnetv2.md
 * section 1.3) and the head.  Each 1x1 convolution on an NHWC activation is one
 * GEMM C[rows][co] = x[rows][ci] * w[ci][co] with rows = batch * H * W, exactly
 * the call k_conv2d_fwd makes (src/kernels/conv.c); M = rows, N = Cout, K = Cin.
 * Identical shapes are merged; `count` is how often a shape occurs in one
 * forward pass, and the overall figure weights every shape by it. */
typedef struct gemm_shape {
    char layer[96];
    long M, N, K;
    int count;
    int act;      /* epilogue of the layer: SiLU after the expansion */
    int residual; /* projection of a block with a residual add */
    double med, gflops;
} gemm_shape;

static int add_shape(gemm_shape *v, int n, const char *layer, long M, long N, long K, int count, int act, int res)
{
    for (int i = 0; i < n; i++)
        if (v[i].M == M && v[i].N == N && v[i].K == K && v[i].act == act && v[i].residual == res) {
            v[i].count += count;
            size_t l = strlen(v[i].layer);
            snprintf(v[i].layer + l, sizeof v[i].layer - l, " + %s", layer);
            return n;
        }
    memset(&v[n], 0, sizeof v[n]);
    snprintf(v[n].layer, sizeof v[n].layer, "%s", layer);
    v[n].M = M;
    v[n].N = N;
    v[n].K = K;
    v[n].count = count;
    v[n].act = act;
    v[n].residual = res;
    return n + 1;
}

static int v2s_shapes(gemm_shape *v, int size, int batch)
{
    /* stage: repeats, stride, expansion, in, out (MBConv stages 4..6 of V2-S) */
    static const int st[3][5] = {{6, 2, 4, 64, 128}, {9, 1, 6, 128, 160}, {15, 2, 6, 160, 256}};
    int h = size;
    h = (h + 1) / 2; /* stem, stride 2 */
    h = (h + 1) / 2; /* stage 2 */
    h = (h + 1) / 2; /* stage 3 */
    int n = 0;
    char name[64];
    for (int s = 0; s < 3; s++) {
        int r = st[s][0], stride = st[s][1], e = st[s][2], ci = st[s][3], co = st[s][4];
        int h2 = (h + stride - 1) / stride;
        long m1 = (long)batch * h * h, m2 = (long)batch * h2 * h2;
        snprintf(name, sizeof name, "st%d b1 expand", s + 4);
        n = add_shape(v, n, name, m1, (long)ci * e, ci, 1, K_ACT_SILU, 0);
        snprintf(name, sizeof name, "st%d b1 project", s + 4);
        n = add_shape(v, n, name, m2, co, (long)ci * e, 1, K_ACT_NONE, stride == 1 && ci == co);
        if (r > 1) {
            snprintf(name, sizeof name, "st%d b2-%d expand", s + 4, r);
            n = add_shape(v, n, name, m2, (long)co * e, co, r - 1, K_ACT_SILU, 0);
            snprintf(name, sizeof name, "st%d b2-%d project", s + 4, r);
            n = add_shape(v, n, name, m2, co, (long)co * e, r - 1, K_ACT_NONE, 1);
        }
        h = h2;
    }
    n = add_shape(v, n, "head", (long)batch * h * h, 1280, 256, 1, K_ACT_SILU, 0);
    return n;
}

static int bench_gemm(int size, int batch, int threads, int runs, int epilogue)
{
    gemm_shape v[16];
    int n = v2s_shapes(v, size, batch);
    if (threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        threads = c > 0 ? (int)c : 1;
    }
    const double min_time = 0.3; /* seconds of timed calls per shape, at least `runs` calls */
    const int max_calls = 20000;
    double *t = malloc(max_calls * sizeof *t);
    double tot_flops = 0, tot_time = 0, max_rel_err = 0;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        gemm_shape *g = &v[i];
        /* From the library's allocator, on 64-byte lines as its weights and
         * activations are: with malloc's 16-byte alignment every 16-float
         * load of B and C straddled two lines, and on the Intel machine of
         * session 20 the shapes ran at 234-244 GFLOP/s (2 threads) against
         * 293-303. */
        float *A = env2_aligned_alloc((size_t)g->M * g->K * sizeof(float));
        float *B = env2_aligned_alloc((size_t)g->K * g->N * sizeof(float));
        float *C = env2_aligned_alloc((size_t)g->M * g->N * sizeof(float));
        float *R = env2_aligned_alloc((size_t)g->M * g->N * sizeof(float));
        float *sc = malloc((size_t)g->N * sizeof(float)), *bi = malloc((size_t)g->N * sizeof(float));
        if (!A || !B || !C || !R || !sc || !bi || !t) {
            fprintf(stderr, "env2 bench: out of memory\n");
            rc = 1;
        } else {
            for (long j = 0; j < g->M * g->K; j++) A[j] = (float)sin((double)j * 0.37);
            for (long j = 0; j < g->K * g->N; j++) B[j] = (float)cos((double)j * 0.11) / (float)g->K;
            for (long j = 0; j < g->M * g->N; j++) R[j] = (float)sin((double)j * 0.07);
            for (long j = 0; j < g->N; j++) {
                sc[j] = 1.0f + 0.01f * (float)(j % 7);
                bi[j] = 0.01f * (float)(j % 5);
            }
            k_epilogue ep = {sc, bi, g->act, g->residual ? R : NULL, g->N};
            const k_epilogue *e = epilogue ? &ep : NULL;
            for (int w = 0; w < 3; w++)
                k_sgemm(threads, 0, 0, g->M, g->N, g->K, 1.0f, A, g->K, B, g->N, 0.0f, C, g->N, e);
            int calls = 0;
            double t_start = now();
            while (calls < max_calls && (calls < runs || now() - t_start < min_time)) {
                double t0 = now();
                k_sgemm(threads, 0, 0, g->M, g->N, g->K, 1.0f, A, g->K, B, g->N, 0.0f, C, g->N, e);
                t[calls++] = now() - t0;
            }
            qsort(t, (size_t)calls, sizeof *t, cmp_d);
            g->med = median_sorted(t, calls);
            double flops = 2.0 * (double)g->M * g->N * g->K;
            g->gflops = flops / g->med / 1e9;
            tot_flops += flops * g->count;
            tot_time += g->med * g->count;
            /* sanity: the first rows against the reference GEMM */
            long mr = g->M < 32 ? g->M : 32;
            float *ref = malloc((size_t)mr * g->N * sizeof(float));
            if (ref) {
                k_sgemm_ref(0, 0, mr, g->N, g->K, 1.0f, A, g->K, B, g->N, 0.0f, ref, g->N, e);
                for (long j = 0; j < mr * g->N; j++) {
                    double d = fabs((double)C[j] - ref[j]) / (fabs((double)ref[j]) + 1e-3);
                    if (d > max_rel_err) max_rel_err = d;
                }
                free(ref);
            }
        }
        env2_aligned_free(A);
        env2_aligned_free(B);
        env2_aligned_free(C);
        env2_aligned_free(R);
        free(sc);
        free(bi);
    }
    free(t);
    if (rc) return rc;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"engine\": \"env2\", \"mode\": \"gemm\", \"model\": \"efficientnetv2-s 1x1 convs, stages 4-6 + head\", "
           "\"size\": %d, \"batch\": %d, \"threads\": %d, \"epilogue\": %s, \"simd\": \"%s\", \"shapes\": [",
           size, batch, threads, epilogue ? "true" : "false", k_simd_name(k_simd_level()));
    for (int i = 0; i < n; i++)
        printf("%s{\"layer\": \"%s\", \"M\": %ld, \"N\": %ld, \"K\": %ld, \"count\": %d, \"median_ms\": %.4f, "
               "\"gflops\": %.1f}",
               i ? ", " : "", v[i].layer, v[i].M, v[i].N, v[i].K, v[i].count, v[i].med * 1e3, v[i].gflops);
    printf("], \"gflops\": %.1f, \"total_ms\": %.3f, \"max_rel_err\": %.2e, \"peak_rss_mib\": %.1f, "
           "\"build\": \"%s\"}\n",
           tot_flops / tot_time / 1e9, tot_time * 1e3, max_rel_err, ru.ru_maxrss / 1024.0, env2_build_info());
    if (max_rel_err > 1e-3) {
        fprintf(stderr, "env2 bench: GEMM result differs from the reference (relative error %.2e)\n", max_rel_err);
        return 1;
    }
    return 0;
}

static const char *opt_name(int o)
{
    return o == ENV2_OPT_ADAMW ? "adamw" : o == ENV2_OPT_RMSPROP_TF ? "rmsprop" : "sgd";
}

int cmd_bench(int argc, char **argv)
{
    const char *arch = NULL;
    int size = 0, batch = 1, threads = 0, runs = 10, warmup = 2, train = 0, classes = 1000, in_ch = 3, profile = 0, winograd = 1;
    int gemm = 0, epilogue = 0, optimizer = ENV2_OPT_SGD, keep_act = -1;
    float wd = -1, smoothing = -1, dropout = -1, drop_path = -1;
    const char *stem = NULL, *head = NULL;
    int help = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            help = 1;
            break;
        }
        if (!strcmp(a, "--size") && i + 1 < argc) size = atoi(argv[++i]);
        else if (!strcmp(a, "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(a, "--warmup") && i + 1 < argc) warmup = atoi(argv[++i]);
        else if (!strcmp(a, "--classes") && i + 1 < argc) classes = atoi(argv[++i]);
        else if (!strcmp(a, "--in-channels") && i + 1 < argc) in_ch = atoi(argv[++i]);
        else if (!strcmp(a, "--stem") && i + 1 < argc) stem = argv[++i];
        else if (!strcmp(a, "--head") && i + 1 < argc) head = argv[++i];
        else if (!strcmp(a, "--arch") && i + 1 < argc) arch = argv[++i];
        else if (!strcmp(a, "--wd") && i + 1 < argc) wd = (float)atof(argv[++i]);
        else if (!strcmp(a, "--label-smoothing") && i + 1 < argc) smoothing = (float)atof(argv[++i]);
        else if (!strcmp(a, "--dropout") && i + 1 < argc) dropout = (float)atof(argv[++i]);
        else if (!strcmp(a, "--drop-path") && i + 1 < argc) drop_path = (float)atof(argv[++i]);
        else if (!strcmp(a, "--keep-activations") && i + 1 < argc) {
            const char *k = argv[++i];
            keep_act = cli_keep_activations(k);
            if (keep_act == -2) {
                fprintf(stderr, "env2 bench: --keep-activations %s: auto, on or off\n", k);
                return 2;
            }
        }
        else if (!strcmp(a, "--optimizer") && i + 1 < argc) {
            const char *o = argv[++i];
            if (!strcmp(o, "sgd")) optimizer = ENV2_OPT_SGD;
            else if (!strcmp(o, "adamw")) optimizer = ENV2_OPT_ADAMW;
            else if (!strcmp(o, "rmsprop")) optimizer = ENV2_OPT_RMSPROP_TF;
            else {
                fprintf(stderr, "env2 bench: unknown optimizer: %s (sgd, adamw, rmsprop)\n", o);
                return 2;
            }
        } else if (!strcmp(a, "--train")) train = 1;
        else if (!strcmp(a, "--profile")) profile = 1;
        else if (!strcmp(a, "--no-winograd")) winograd = 0;
        else if (!strcmp(a, "--gemm")) gemm = 1;
        else if (!strcmp(a, "--epilogue")) epilogue = 1;
        else if (a[0] != '-' && !arch) arch = a;
        else {
            fprintf(stderr, "env2 bench: unknown argument: %s\n", a);
            return 2;
        }
    }
    if (help || (!arch && !gemm) || runs < 1 || batch < 1 || threads < 0 || size < 0) {
        fprintf(help ? stdout : stderr,
                "usage: env2 bench VARIANT [--size N] [--batch B] [--threads T] [--runs R] [--warmup W] [--profile]\n"
                "         [--no-winograd]\n"
                "         [--train [--optimizer sgd|adamw|rmsprop] [--wd X] [--label-smoothing X]\n"
                "          [--keep-activations auto|on|off]]\n"
                "         [--classes N] [--in-channels C] [--dropout X] [--drop-path X]\n"
                "       env2 bench --arch STAGES [--stem C] [--head C] ... (a custom architecture)\n"
                "       env2 bench --gemm [--size 384] [--batch 1] [--threads T] [--runs R] [--epilogue]\n");
        return help ? 0 : 2;
    }
    if (gemm) return bench_gemm(size ? size : 384, batch, threads, runs, epilogue);
    env2_model_options o;
    env2_model_options_init(&o);
    o.num_threads = threads;
    o.winograd = winograd;
    o.num_classes = classes;
    o.in_channels = in_ch;
    if (stem) o.stem_channels = atoi(stem);
    if (head) o.head_channels = atoi(head);
    if (dropout >= 0) o.dropout = dropout;
    if (drop_path >= 0) o.drop_path_rate = drop_path;
    env2_model *m;
    if (env2_model_create(&m, arch, &o)) {
        fprintf(stderr, "env2 bench: %s\n", env2_last_error());
        return 1;
    }
    if (!size) size = env2_model_eval_size(m);
    size_t nx = (size_t)batch * in_ch * size * size;
    float *x = malloc(nx * sizeof(float)), *y = malloc(env2_model_output_size(m, batch) * sizeof(float));
    int32_t *labels = malloc((size_t)batch * sizeof(int32_t));
    double *t = malloc((size_t)runs * sizeof(double));
    env2_trainer *tr = NULL;
    int rc = 0;
    if (!x || !y || !labels || !t) {
        fprintf(stderr, "env2 bench: out of memory\n");
        rc = 1;
        goto out;
    }
    for (size_t i = 0; i < nx; i++) x[i] = (float)sin((double)i * 0.37);
    for (int i = 0; i < batch; i++) labels[i] = i % classes;
    if (train) {
        env2_trainer_options to;
        env2_trainer_options_init(&to);
        to.optimizer = optimizer;
        to.lr = 1e-3f;
        if (wd >= 0) to.weight_decay = wd;
        if (smoothing >= 0) to.label_smoothing = smoothing;
        to.keep_activations = keep_act;
        if (env2_trainer_create(&tr, m, &to)) {
            fprintf(stderr, "env2 bench: %s\n", env2_last_error());
            rc = 1;
            goto out;
        }
    }
    for (int r = -warmup; r < runs; r++) {
        if (r == 0 && profile) {
            env2_prof_reset();
            env2_prof_on = 1;
        }
        double t0 = now();
        env2_status s = train ? env2_train_step(tr, x, batch, size, size, ENV2_LAYOUT_NCHW, labels, NULL, NULL, NULL)
                              : env2_forward(m, x, batch, size, size, ENV2_LAYOUT_NCHW, y);
        double dt = now() - t0;
        if (s) {
            fprintf(stderr, "env2 bench: %s\n", env2_last_error());
            rc = 1;
            goto out;
        }
        if (r >= 0) t[r] = dt;
    }
    env2_prof_on = 0;
    double total_run = 0;
    for (int r = 0; r < runs; r++) total_run += t[r];
    qsort(t, (size_t)runs, sizeof *t, cmp_d);
    double med = median_sorted(t, runs);
    int64_t macs = 0;
    env2_model_macs(m, size, size, &macs);
    double flops = 2.0 * (double)macs * batch * (train ? 3.0 : 1.0);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    size_t ws = 0;
    if (train) env2_trainer_memory_needed(tr, batch, size, size, &ws, NULL);
    printf("{\"engine\": \"env2\", \"model\": \"%s\", \"mode\": \"%s\", \"batch\": %d, \"size\": %d, \"threads\": %d, "
           "\"runs\": %d, \"median_ms\": %.3f, \"min_ms\": %.3f, \"max_ms\": %.3f, \"images_per_s\": %.2f, "
           "\"gflops\": %.1f, \"params\": %lld, \"peak_rss_mib\": %.1f, \"optimizer\": \"%s\", "
           "\"train_workspace_mib\": %.1f, \"build\": \"%s\"}\n",
           env2_model_arch(m), train ? "train" : "infer", batch, size, env2_model_threads(m), runs, med * 1e3,
           t[0] * 1e3, t[runs - 1] * 1e3, batch / med, flops / med / 1e9, (long long)env2_model_num_params(m),
           ru.ru_maxrss / 1024.0, train ? opt_name(optimizer) : "", ws / 1048576.0, env2_build_info());
    if (profile) {
        /* per-family time per run; the remainder is framework overhead */
        double acc = 0;
        printf("%-26s %10s %7s %8s\n", "kernel family", "ms/run", "share", "calls");
        for (int f = 0; f < PROF_COUNT; f++) {
            if (!env2_prof_calls[f] && env2_prof_sec[f] == 0) continue;
            acc += env2_prof_sec[f];
            printf("%-26s %10.3f %6.1f%% %8ld\n", env2_prof_name(f), env2_prof_sec[f] * 1e3 / runs,
                   100.0 * env2_prof_sec[f] / total_run, env2_prof_calls[f] / runs);
        }
        printf("%-26s %10.3f %6.1f%%\n", "other (untimed)", (total_run - acc) * 1e3 / runs,
               100.0 * (total_run - acc) / total_run);
        print_layers(runs, total_run);
    }
out:
    env2_trainer_destroy(tr);
    env2_model_destroy(m);
    free(x);
    free(y);
    free(labels);
    free(t);
    return rc;
}
