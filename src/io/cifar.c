/* CIFAR-10 and CIFAR-100 binary batches.  Each record is the label byte(s)
 * followed by a 32x32 image as three planes (R, G, B); the planes are
 * interleaved here into the HWC layout the rest of the library uses. */
#include <string.h>

#include "io/io.h"

#define CIFAR_PIXELS (32 * 32)
#define CIFAR_IMAGE (3 * CIFAR_PIXELS)

env2_status cifar_load_memory(const void *buf, size_t len, int cifar100, uint8_t **images, int32_t **labels,
                              int64_t *count, env2_err *e)
{
    if ((!buf && len) || !images || !labels || !count)
        return env2_fail(e, ENV2_E_INVALID_ARG, "cifar_load: NULL argument");
    const unsigned char *b = buf;
    size_t rec = (cifar100 ? 2 : 1) + CIFAR_IMAGE, n = len / rec;
    const char *which = cifar100 ? "CIFAR-100" : "CIFAR-10";
    if (len == 0) return env2_fail(e, ENV2_E_FORMAT, "cifar: empty file");
    if (len % rec)
        return env2_fail(e, ENV2_E_FORMAT, "cifar: %zu bytes is not a whole number of %zu-byte %s records (truncated?)",
                         len, rec, which);
    int classes = cifar100 ? 100 : 10;
    for (size_t i = 0; i < n; i++) {
        unsigned lab = b[i * rec + (cifar100 ? 1 : 0)];
        if ((int)lab >= classes)
            return env2_fail(e, ENV2_E_FORMAT, "cifar: record %zu has label %u, %s labels are 0..%d (wrong format?)", i,
                             lab, which, classes - 1);
    }
    uint8_t *im = env2_malloc(n * CIFAR_IMAGE);
    int32_t *lb = env2_malloc(n * sizeof(int32_t));
    if (!im || !lb) {
        env2_free(im);
        env2_free(lb);
        return env2_fail(e, ENV2_E_NOMEM, "cifar: out of memory for %zu images", n);
    }
    for (size_t i = 0; i < n; i++) {
        const unsigned char *r = b + i * rec;
        lb[i] = r[cifar100 ? 1 : 0];
        const unsigned char *px = r + (cifar100 ? 2 : 1);
        uint8_t *o = im + i * CIFAR_IMAGE;
        for (int p = 0; p < CIFAR_PIXELS; p++) {
            o[3 * p + 0] = px[p];
            o[3 * p + 1] = px[CIFAR_PIXELS + p];
            o[3 * p + 2] = px[2 * CIFAR_PIXELS + p];
        }
    }
    *images = im;
    *labels = lb;
    *count = (int64_t)n;
    return ENV2_OK;
}

env2_status cifar_load(const char *path, int cifar100, uint8_t **images, int32_t **labels, int64_t *count,
                       env2_err *e)
{
    unsigned char *buf;
    size_t len;
    if (!images || !labels || !count) return env2_fail(e, ENV2_E_INVALID_ARG, "cifar_load: NULL argument");
    env2_status st = io_read_maybe_gz(path, &buf, &len, e);
    if (st) return st;
    st = cifar_load_memory(buf, len, cifar100, images, labels, count, e);
    env2_free(buf);
    if (st) return env2_err_prefix(e, st, "%s", path);
    return ENV2_OK;
}
