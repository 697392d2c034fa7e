/* Progressive learning with the public API: a small EfficientNetV2 learns to
 * tell horizontal from vertical stripes while the image size and dropout grow
 * stage by stage (the paper's Algorithm 1).  Synthetic data keeps the example
 * self-contained; `env2 train` does the same on real datasets. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <efficientnetv2.h>

static void make_batch(float *x, int32_t *y, int n, int s, unsigned step)
{
    for (int i = 0; i < n; i++) {
        int label = (int)((i + step) % 2);
        float phase = (float)((step * 31 + (unsigned)i * 17) % 7);
        for (int r = 0; r < s; r++)
            for (int c = 0; c < s; c++) x[(size_t)i * s * s + r * s + c] = sinf(0.9f * (label ? r : c) + phase);
        y[i] = label;
    }
}

int main(void)
{
    env2_model_options mo;
    env2_model_options_init(&mo);
    mo.num_classes = 2;
    mo.in_channels = 1;
    mo.head_channels = 64;
    env2_model *m;
    if (env2_model_create(&m, "r1_k3_s1_e1_i16_o16_c1 r1_k3_s2_e4_i16_o24_c1 r1_k3_s2_e4_i24_o32_se0.25", &mo))
        return fprintf(stderr, "%s\n", env2_last_error()), 1;
    env2_trainer_options to;
    env2_trainer_options_init(&to);
    to.optimizer = ENV2_OPT_ADAMW;
    to.lr = 3e-3f;
    to.lr_schedule = ENV2_LR_CONSTANT;
    env2_trainer *t;
    if (env2_trainer_create(&t, m, &to)) return fprintf(stderr, "%s\n", env2_last_error()), 1;
    const int steps = 60, n = 16;
    env2_schedule *sched; /* 3 stages over the steps: 16 -> 32 pixels, dropout 0 -> 0.2 */
    env2_schedule_create(&sched, 3, steps, 16, 32, 8);
    env2_schedule_set_range(sched, ENV2_REG_DROPOUT, 0.0f, 0.2f);
    float *x = malloc(sizeof(float) * n * 32 * 32);
    int32_t y[16];
    for (int step = 0; step < steps; step++) {
        int32_t stage, size, correct;
        float dropout, loss;
        env2_schedule_at(sched, step, &stage, &size);
        env2_schedule_value(sched, step, ENV2_REG_DROPOUT, &dropout);
        env2_trainer_set_param(t, ENV2_PARAM_DROPOUT, dropout);
        make_batch(x, y, n, size, (unsigned)step);
        if (env2_train_step(t, x, n, size, size, ENV2_LAYOUT_NCHW, y, NULL, &loss, &correct))
            return fprintf(stderr, "%s\n", env2_last_error()), 1;
        if (step % 10 == 9) printf("step %2d stage %d size %2d loss %.4f acc %d/%d\n", step + 1, stage, size, loss, correct, n);
    }
    free(x);
    env2_schedule_destroy(sched);
    env2_trainer_destroy(t);
    env2_model_destroy(m);
    return 0;
}
