/* Per-family time accounting (see profile.h). */
#include <string.h>
#include <time.h>

#include "profile.h"

int env2_prof_on;
double env2_prof_sec[PROF_COUNT];
long env2_prof_calls[PROF_COUNT];
env2_prof_layer env2_prof_layers[PROF_LAYERS_MAX];
int env2_prof_nlayers;

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
        "optimizer+BN stats+EMA", "layout/input copy", "conv 3x3 (Winograd)", "conv small-K (direct)"};
    return f >= 0 && f < PROF_COUNT ? names[f] : "?";
}

void env2_prof_reset(void)
{
    memset(env2_prof_sec, 0, sizeof env2_prof_sec);
    memset(env2_prof_calls, 0, sizeof env2_prof_calls);
    env2_prof_nlayers = 0;
}

void env2_prof_layer_add(int fam, int n, int h, int w, int ci, int co, int k, int stride, double flops, double sec)
{
    env2_prof_layer *e = NULL;
    for (int i = 0; i < env2_prof_nlayers; i++) {
        env2_prof_layer *q = &env2_prof_layers[i];
        if (q->fam == fam && q->n == n && q->h == h && q->w == w && q->ci == ci && q->co == co && q->k == k &&
            q->stride == stride) {
            e = q;
            break;
        }
    }
    if (!e) {
        if (env2_prof_nlayers == PROF_LAYERS_MAX) return; /* the family totals still count it */
        e = &env2_prof_layers[env2_prof_nlayers++];
        memset(e, 0, sizeof *e);
        e->fam = fam;
        e->n = n;
        e->h = h;
        e->w = w;
        e->ci = ci;
        e->co = co;
        e->k = k;
        e->stride = stride;
    }
    e->calls++;
    e->sec += sec;
    e->flops += flops;
}
