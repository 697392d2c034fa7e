/* env2 bench: latency of inference (median of repeated runs) or throughput
 * of training steps for one configuration, as one JSON line. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "efficientnetv2.h"
#include "env2_cli.h"
#include "profile.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int cmd_bench(int argc, char **argv)
{
    const char *arch = NULL;
    int size = 0, batch = 1, threads = 0, runs = 10, warmup = 2, train = 0, classes = 1000, in_ch = 3, profile = 0;
    const char *stem = NULL, *head = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
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
        else if (!strcmp(a, "--train")) train = 1;
        else if (!strcmp(a, "--profile")) profile = 1;
        else if (a[0] != '-' && !arch) arch = a;
        else {
            fprintf(stderr, "env2 bench: unknown argument: %s\n", a);
            return 2;
        }
    }
    if (!arch || runs < 1 || batch < 1 || threads < 0) {
        fprintf(stderr, "usage: env2 bench VARIANT [--size N] [--batch B] [--threads T] [--runs R] [--train] [--profile]\n");
        return 2;
    }
    env2_model_options o;
    env2_model_options_init(&o);
    o.num_threads = threads;
    o.num_classes = classes;
    o.in_channels = in_ch;
    if (stem) o.stem_channels = atoi(stem);
    if (head) o.head_channels = atoi(head);
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
        to.optimizer = ENV2_OPT_SGD;
        to.lr = 1e-3f;
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
    double med = runs % 2 ? t[runs / 2] : 0.5 * (t[runs / 2 - 1] + t[runs / 2]);
    int64_t macs = 0;
    env2_model_macs(m, size, size, &macs);
    double flops = 2.0 * (double)macs * batch * (train ? 3.0 : 1.0);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"engine\": \"env2\", \"model\": \"%s\", \"mode\": \"%s\", \"batch\": %d, \"size\": %d, \"threads\": %d, "
           "\"runs\": %d, \"median_ms\": %.3f, \"min_ms\": %.3f, \"max_ms\": %.3f, \"images_per_s\": %.2f, "
           "\"gflops\": %.1f, \"peak_rss_mib\": %.1f, \"build\": \"%s\"}\n",
           env2_model_arch(m), train ? "train" : "infer", batch, size, env2_model_threads(m), runs, med * 1e3,
           t[0] * 1e3, t[runs - 1] * 1e3, batch / med, flops / med / 1e9, ru.ru_maxrss / 1024.0, env2_build_info());
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
