/* Per-family time accounting (see profile.h). */
#include <string.h>
#include <time.h>

#include "profile.h"

int env2_prof_on;
double env2_prof_sec[PROF_COUNT];
long env2_prof_calls[PROF_COUNT];

double env2_prof_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *env2_prof_name(int f)
{
    static const char *const names[PROF_COUNT] = {
        "conv 1x1 (GEMM)", "conv kxk (im2col+GEMM)", "depthwise", "conv backward", "depthwise backward",
        "batch norm + SiLU", "squeeze-excite", "residual/drop-path", "pool+dropout+fc+loss",
        "optimizer+BN stats+EMA", "layout/input copy"};
    return f >= 0 && f < PROF_COUNT ? names[f] : "?";
}

void env2_prof_reset(void)
{
    memset(env2_prof_sec, 0, sizeof env2_prof_sec);
    memset(env2_prof_calls, 0, sizeof env2_prof_calls);
}
