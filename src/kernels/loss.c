/* Softmax cross-entropy with label smoothing.
 *
 * Per row, in double: lse = max + log(sum exp(z - max)) (never overflows),
 * loss = sum_k t'_k (lse - z_k), dlogits = (softmax - t') / n.  Rows are
 * processed in order and summed in double, so the result is deterministic.
 *
 * A hard label outside [0, K) cannot be reported from here; that row makes
 * the returned loss NaN (the trainer's numeric check then fails the step)
 * and its gradient row is zero. */
#include <math.h>
#include <stddef.h>

#include "kernels.h"

static int argmax_f(const float *v, int K)
{
    int best = 0;
    for (int k = 1; k < K; k++)
        if (v[k] > v[best]) best = k; /* strict: ties keep the lowest index */
    return best;
}

double k_xent(int n, int K, const float *logits, const int32_t *labels, const float *targets, float smoothing,
              float *dlogits, int32_t *correct)
{
    if (correct) *correct = 0;
    if (n <= 0 || K <= 0) return 0.0;
    const double eps = smoothing, off = eps / K, on = 1.0 - eps, invn = 1.0 / n;
    double total = 0.0;
    int32_t ok = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (long)i * K;
        float *d = dlogits ? dlogits + (long)i * K : NULL;
        int label = -1;
        if (labels) {
            label = labels[i];
            if (label < 0 || label >= K) {
                total = NAN;
                if (d)
                    for (int k = 0; k < K; k++) d[k] = 0.0f;
                continue;
            }
        }
        int am = argmax_f(z, K);
        int truth = labels ? label : argmax_f(targets + (long)i * K, K);
        if (am == truth) ok++;
        double mx = z[am], se = 0.0;
        for (int k = 0; k < K; k++) se += exp((double)z[k] - mx);
        double lse = mx + log(se), row = 0.0;
        for (int k = 0; k < K; k++) {
            double t = labels ? (k == label ? 1.0 : 0.0) : (double)targets[(long)i * K + k];
            double ts = on * t + off;
            row += ts * (lse - z[k]);
            if (d) d[k] = (float)((exp((double)z[k] - lse) - ts) * invn);
        }
        total += row;
    }
    if (correct) *correct = ok;
    return total * invn;
}
