/* Trains a small model for a few steps with dropout, drop-path, EMA and a
 * size change, then saves the weights to argv[1].  make check-determinism
 * builds it with the thread pool and with THREADS=0, runs it at 1, 2 and 3
 * threads and requires byte-identical files.  With a third argument "first" it stops after half
 * the steps and writes a checkpoint (argv[1]) instead; with "resume CKPT" it
 * continues from that checkpoint in a new process. */
#include <string.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "efficientnetv2.h"

int main(int argc, char **argv)
{
    if (argc < 3) return fprintf(stderr, "usage: train_dump OUT.safetensors THREADS [first | resume CKPT]\n"), 2;
    int first = argc > 3 && !strcmp(argv[3], "first"), resume = argc > 4 && !strcmp(argv[3], "resume");
    env2_model_options mo;
    env2_model_options_init(&mo);
    mo.num_classes = 5;
    mo.in_channels = 3;
    mo.head_channels = 48;
    mo.seed = 7;
    mo.num_threads = atoi(argv[2]);
    mo.dropout = 0.2f;
    mo.drop_path_rate = 0.3f;
    env2_model *m;
    if (env2_model_create(&m, "r1_k3_s1_e1_i16_o16_c1 r2_k3_s2_e4_i16_o24_c1 r2_k3_s2_e4_i24_o40_se0.25", &mo))
        return fprintf(stderr, "%s\n", env2_last_error()), 1;
    env2_trainer_options to;
    env2_trainer_options_init(&to);
    to.optimizer = ENV2_OPT_RMSPROP_TF;
    to.lr = 1e-3f;
    to.ema_decay = 0.99f;
    to.seed = 3;
    env2_trainer *t;
    if (env2_trainer_create(&t, m, &to)) return fprintf(stderr, "%s\n", env2_last_error()), 1;
    enum { N = 8 };
    static float x[N * 3 * 40 * 40];
    int32_t y[N];
    if (resume && env2_trainer_resume(t, argv[4], NULL, 0)) return fprintf(stderr, "%s\n", env2_last_error()), 1;
    for (int step = resume ? 3 : 0; step < (first ? 3 : 6); step++) {
        int s = step % 2 ? 40 : 33;
        for (int i = 0; i < N * 3 * s * s; i++) x[i] = sinf(0.37f * (float)i + (float)step);
        for (int i = 0; i < N; i++) y[i] = (i + step) % 5;
        if (env2_train_step(t, x, N, s, s, ENV2_LAYOUT_NCHW, y, NULL, NULL, NULL))
            return fprintf(stderr, "%s\n", env2_last_error()), 1;
    }
    int rc;
    if (first) {
        rc = env2_trainer_save(t, argv[1], NULL) ? 1 : 0;
    } else {
        env2_trainer_apply_ema(t);
        rc = env2_model_save(m, argv[1]) ? 1 : 0;
    }
    env2_trainer_destroy(t);
    env2_model_destroy(m);
    return rc;
}
