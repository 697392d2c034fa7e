/* In-memory datasets, deterministic shuffling and splitting, and the batcher
 * with its prefetch thread. */
#include "train/data.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/io.h"
#include "train/augment.h"

/* ---- datasets ------------------------------------------------------------ */

void dataset_free(env2_dataset *d)
{
    if (!d) return;
    env2_free(d->images);
    env2_free(d->labels);
    memset(d, 0, sizeof *d);
}

env2_status dataset_validate(const env2_dataset *d, const char *what, env2_err *e)
{
    if (!d || !d->images || !d->labels || d->n < 1)
        return env2_fail(e, ENV2_E_FORMAT, "%s: no images", what);
    if (d->n > DATA_MAX_COUNT)
        return env2_fail(e, ENV2_E_SHAPE, "%s: %lld images, more than the %lld supported", what, (long long)d->n,
                         DATA_MAX_COUNT);
    if (d->h < 1 || d->h > DATA_MAX_SIDE || d->w < 1 || d->w > DATA_MAX_SIDE || d->c < 1 ||
        d->c > DATA_MAX_CHANNELS)
        return env2_fail(e, ENV2_E_SHAPE, "%s: images are %dx%d with %d channels; sides must be 1..%d and channels 1..%d",
                         what, d->h, d->w, d->c, DATA_MAX_SIDE, DATA_MAX_CHANNELS);
    if (d->num_classes < 1 || d->num_classes > DATA_MAX_CLASSES)
        return env2_fail(e, ENV2_E_INVALID_ARG, "%s: %d classes, must be 1..%d", what, d->num_classes,
                         DATA_MAX_CLASSES);
    for (int64_t i = 0; i < d->n; i++)
        if (d->labels[i] < 0 || d->labels[i] >= d->num_classes)
            return env2_fail(e, ENV2_E_FORMAT, "%s: label %d at index %lld is outside 0..%d", what,
                             (int)d->labels[i], (long long)i, d->num_classes - 1);
    return ENV2_OK;
}

/* io messages usually name the file already; make sure they do. */
static env2_status with_path(env2_err *e, env2_status st, const char *path)
{
    if (e && !strstr(e->msg, path)) return env2_err_prefix(e, st, "%s", path);
    return st;
}

static int file_exists(const char *path)
{
    struct stat s;
    return stat(path, &s) == 0 && S_ISREG(s.st_mode);
}

static int dir_exists(const char *path)
{
    struct stat s;
    return stat(path, &s) == 0 && S_ISDIR(s.st_mode);
}

static uint8_t *copy_bytes(const void *src, size_t n)
{
    uint8_t *p = env2_malloc(n);
    if (p && n) memcpy(p, src, n);
    return p;
}

env2_status dataset_load_idx(const char *images_path, const char *labels_path, int num_classes, env2_dataset *d,
                             env2_err *e)
{
    idx_array im, lb;
    env2_dataset t;
    env2_status st;
    memset(&im, 0, sizeof im);
    memset(&lb, 0, sizeof lb);
    memset(&t, 0, sizeof t);
    st = idx_load(images_path, &im, e);
    if (st != ENV2_OK) return with_path(e, st, images_path);
    st = idx_load(labels_path, &lb, e);
    if (st != ENV2_OK) {
        idx_free(&im);
        return with_path(e, st, labels_path);
    }
    if (im.ndim != 3 && im.ndim != 4) {
        st = env2_fail(e, ENV2_E_SHAPE, "%s: images must have 3 or 4 dimensions, found %d", images_path, im.ndim);
        goto done;
    }
    if (lb.ndim != 1) {
        st = env2_fail(e, ENV2_E_SHAPE, "%s: labels must have 1 dimension, found %d", labels_path, lb.ndim);
        goto done;
    }
    if (im.dims[0] != lb.dims[0]) {
        st = env2_fail(e, ENV2_E_SHAPE, "%s holds %lld images but %s holds %lld labels", images_path,
                       (long long)im.dims[0], labels_path, (long long)lb.dims[0]);
        goto done;
    }
    for (int k = 1; k < im.ndim; k++)
        if (im.dims[k] < 1 || im.dims[k] > DATA_MAX_SIDE) {
            st = env2_fail(e, ENV2_E_SHAPE, "%s: dimension %d is %lld", images_path, k, (long long)im.dims[k]);
            goto done;
        }
    if (im.dims[0] < 1 || im.dims[0] > DATA_MAX_COUNT) {
        st = env2_fail(e, ENV2_E_SHAPE, "%s: %lld images", images_path, (long long)im.dims[0]);
        goto done;
    }
    t.n = im.dims[0];
    t.h = (int)im.dims[1];
    t.w = (int)im.dims[2];
    t.c = im.ndim == 4 ? (int)im.dims[3] : 1;
    t.num_classes = num_classes;
    {
        size_t bytes = (size_t)t.n * (size_t)t.h * (size_t)t.w * (size_t)t.c;
        t.images = copy_bytes(im.data, bytes);
        t.labels = env2_malloc((size_t)t.n * sizeof(int32_t));
        if (!t.images || !t.labels) {
            st = env2_fail(e, ENV2_E_NOMEM, "%s: out of memory for %lld images", images_path, (long long)t.n);
            goto done;
        }
        for (int64_t i = 0; i < t.n; i++) t.labels[i] = lb.data[i];
    }
    st = dataset_validate(&t, labels_path, e);
done:
    idx_free(&im);
    idx_free(&lb);
    if (st != ENV2_OK) {
        dataset_free(&t);
        return st;
    }
    *d = t;
    return ENV2_OK;
}

env2_status dataset_load_cifar(const char *const *paths, int npaths, int cifar100, env2_dataset *d, env2_err *e)
{
    env2_dataset t;
    const size_t img = 32 * 32 * 3;
    memset(&t, 0, sizeof t);
    t.h = t.w = 32;
    t.c = 3;
    t.num_classes = cifar100 ? 100 : 10;
    for (int f = 0; f < npaths; f++) {
        uint8_t *im = NULL, *ni;
        int32_t *lb = NULL, *nl;
        int64_t count = 0;
        env2_status st = cifar_load(paths[f], cifar100, &im, &lb, &count, e);
        if (st != ENV2_OK) {
            dataset_free(&t);
            return with_path(e, st, paths[f]);
        }
        if (count < 1 || t.n + count > DATA_MAX_COUNT) {
            env2_free(im);
            env2_free(lb);
            dataset_free(&t);
            return env2_fail(e, ENV2_E_FORMAT, "%s: %lld records", paths[f], (long long)count);
        }
        ni = env2_realloc(t.images, (size_t)(t.n + count) * img);
        if (ni) t.images = ni;
        nl = ni ? env2_realloc(t.labels, (size_t)(t.n + count) * sizeof(int32_t)) : NULL;
        if (nl) t.labels = nl;
        if (!ni || !nl) {
            env2_free(im);
            env2_free(lb);
            dataset_free(&t);
            return env2_fail(e, ENV2_E_NOMEM, "%s: out of memory", paths[f]);
        }
        memcpy(t.images + (size_t)t.n * img, im, (size_t)count * img);
        memcpy(t.labels + t.n, lb, (size_t)count * sizeof(int32_t));
        t.n += count;
        env2_free(im);
        env2_free(lb);
        for (int64_t i = t.n - count; i < t.n; i++)
            if (t.labels[i] < 0 || t.labels[i] >= t.num_classes) {
                env2_status st2 = env2_fail(e, ENV2_E_FORMAT, "%s: label %d at index %lld is outside 0..%d", paths[f],
                                            (int)t.labels[i], (long long)(i - (t.n - count)), t.num_classes - 1);
                dataset_free(&t);
                return st2;
            }
    }
    {
        env2_status st = dataset_validate(&t, npaths > 0 ? paths[0] : "cifar", e);
        if (st != ENV2_OK) {
            dataset_free(&t);
            return st;
        }
    }
    *d = t;
    return ENV2_OK;
}

env2_status dataset_load_npy(const char *images_path, const char *labels_path, int num_classes, env2_dataset *d,
                             env2_err *e)
{
    npy_array im, lb;
    int32_t *labels = NULL;
    env2_dataset t;
    env2_status st;
    int64_t nlab;
    memset(&im, 0, sizeof im);
    memset(&lb, 0, sizeof lb);
    memset(&t, 0, sizeof t);
    st = npy_load(images_path, &im, e);
    if (st != ENV2_OK) return with_path(e, st, images_path);
    st = npy_load(labels_path, &lb, e);
    if (st != ENV2_OK) {
        npy_free(&im);
        return with_path(e, st, labels_path);
    }
    if (im.dtype != ST_U8) {
        st = env2_fail(e, ENV2_E_DTYPE, "%s: images must be uint8", images_path);
        goto done;
    }
    if (im.ndim != 3 && im.ndim != 4) {
        st = env2_fail(e, ENV2_E_SHAPE, "%s: images must be [N,H,W] or [N,H,W,C], found %d dimensions", images_path,
                       im.ndim);
        goto done;
    }
    /* [N] or the column vector [N,1] that some exporters write */
    if (!(lb.ndim == 1 || (lb.ndim == 2 && lb.shape[1] == 1))) {
        st = env2_fail(e, ENV2_E_SHAPE, "%s: labels must be [N], found %d dimensions", labels_path, lb.ndim);
        goto done;
    }
    nlab = lb.shape[0];
    if (im.shape[0] != nlab) {
        st = env2_fail(e, ENV2_E_SHAPE, "%s holds %lld images but %s holds %lld labels", images_path,
                       (long long)im.shape[0], labels_path, (long long)nlab);
        goto done;
    }
    if (im.shape[0] < 1 || im.shape[0] > DATA_MAX_COUNT) {
        st = env2_fail(e, ENV2_E_SHAPE, "%s: %lld images", images_path, (long long)im.shape[0]);
        goto done;
    }
    for (int k = 1; k < im.ndim; k++)
        if (im.shape[k] < 1 || im.shape[k] > (k == 3 ? DATA_MAX_CHANNELS : DATA_MAX_SIDE)) {
            st = env2_fail(e, ENV2_E_SHAPE, "%s: dimension %d is %lld", images_path, k, (long long)im.shape[k]);
            goto done;
        }
    st = npy_to_i32(&lb, &labels, e);
    if (st != ENV2_OK) {
        st = with_path(e, st, labels_path);
        goto done;
    }
    t.n = im.shape[0];
    t.h = (int)im.shape[1];
    t.w = (int)im.shape[2];
    t.c = im.ndim == 4 ? (int)im.shape[3] : 1;
    t.images = copy_bytes(im.data, (size_t)t.n * (size_t)t.h * (size_t)t.w * (size_t)t.c);
    t.labels = env2_malloc((size_t)t.n * sizeof(int32_t));
    if (!t.images || !t.labels) {
        st = env2_fail(e, ENV2_E_NOMEM, "%s: out of memory for %lld images", images_path, (long long)t.n);
        goto done;
    }
    memcpy(t.labels, labels, (size_t)t.n * sizeof(int32_t));
    if (num_classes > 0) {
        t.num_classes = num_classes;
    } else {
        int32_t mx = -1;
        for (int64_t i = 0; i < t.n; i++) {
            if (t.labels[i] < 0) {
                st = env2_fail(e, ENV2_E_FORMAT, "%s: label %d at index %lld is negative", labels_path,
                               (int)t.labels[i], (long long)i);
                goto done;
            }
            if (t.labels[i] > mx) mx = t.labels[i];
        }
        if (mx >= DATA_MAX_CLASSES) {
            st = env2_fail(e, ENV2_E_FORMAT, "%s: label %d is larger than the %d classes supported", labels_path,
                           (int)mx, DATA_MAX_CLASSES);
            goto done;
        }
        t.num_classes = (int)mx + 1;
    }
    st = dataset_validate(&t, labels_path, e);
done:
    env2_free(labels);
    npy_free(&im);
    npy_free(&lb);
    if (st != ENV2_OK) {
        dataset_free(&t);
        return st;
    }
    *d = t;
    return ENV2_OK;
}

const char *dataset_default_dir(const char *name)
{
    if (!name) return ".";
    if (!strcmp(name, "fashion-mnist")) return "/usr/share/datasets/fashion-mnist";
    if (!strcmp(name, "mnist")) return "/usr/share/datasets/mnist";
    if (!strcmp(name, "cifar10")) return "data/cifar10";
    if (!strcmp(name, "cifar100")) return "data/cifar100";
    if (!strcmp(name, "npy")) return "data/npy";
    return ".";
}

#define DATA_PATH_MAX 4096

/* dir + "/" + name into out (DATA_PATH_MAX bytes); 0 if it fits. */
static int join_path(char *out, const char *dir, const char *name)
{
    size_t ld = strlen(dir), ln = strlen(name);
    if (ld + ln + 2 > DATA_PATH_MAX) {
        out[0] = '\0';
        return -1;
    }
    memcpy(out, dir, ld);
    out[ld] = '/';
    memcpy(out + ld + 1, name, ln + 1);
    return 0;
}

static env2_status too_long(env2_err *e, const char *dir)
{
    return env2_fail(e, ENV2_E_INVALID_ARG, "data directory path is too long: %.200s...", dir);
}

/* First existing file among dir/<name> for the candidate names; the first
 * candidate is reported when none exists. */
static env2_status find_file(const char *dir, const char *const *names, int nnames, const char *what, char *out,
                             env2_err *e)
{
    for (int i = 0; i < nnames; i++) {
        if (join_path(out, dir, names[i])) return too_long(e, dir);
        if (file_exists(out)) return ENV2_OK;
    }
    if (join_path(out, dir, names[0])) return too_long(e, dir);
    if (!dir_exists(dir)) return env2_fail(e, ENV2_E_IO, "%s: data directory %s does not exist", what, dir);
    return env2_fail(e, ENV2_E_IO, "%s: missing file %s%s", what, out, nnames > 1 ? " (or .gz)" : "");
}

static env2_status load_idx_split(const char *name, const char *dir, const char *prefix, env2_dataset *d,
                                  env2_err *e)
{
    char ipath[DATA_PATH_MAX], lpath[DATA_PATH_MAX], n[4][96];
    const char *names[4] = {n[0], n[1], n[2], n[3]};
    env2_status st;
    snprintf(n[0], sizeof n[0], "%s-images-idx3-ubyte", prefix);
    snprintf(n[1], sizeof n[1], "%s-images-idx3-ubyte.gz", prefix);
    snprintf(n[2], sizeof n[2], "%s-images.idx3-ubyte", prefix);
    snprintf(n[3], sizeof n[3], "%s-images.idx3-ubyte.gz", prefix);
    st = find_file(dir, names, 4, name, ipath, e);
    if (st != ENV2_OK) return st;
    snprintf(n[0], sizeof n[0], "%s-labels-idx1-ubyte", prefix);
    snprintf(n[1], sizeof n[1], "%s-labels-idx1-ubyte.gz", prefix);
    snprintf(n[2], sizeof n[2], "%s-labels.idx1-ubyte", prefix);
    snprintf(n[3], sizeof n[3], "%s-labels.idx1-ubyte.gz", prefix);
    st = find_file(dir, names, 4, name, lpath, e);
    if (st != ENV2_OK) return st;
    return dataset_load_idx(ipath, lpath, 10, d, e);
}

static env2_status load_cifar_split(const char *name, const char *dir, int cifar100, int test, env2_dataset *d,
                                    env2_err *e)
{
    char base[DATA_PATH_MAX], paths[5][DATA_PATH_MAX], p1[DATA_PATH_MAX], p2[DATA_PATH_MAX];
    const char *pp[5];
    int np = 0;
    const char *sub = cifar100 ? "cifar-100-binary" : "cifar-10-batches-bin";
    const char *probe = cifar100 ? "train.bin" : "data_batch_1.bin";
    if (join_path(p1, dir, probe) || join_path(base, dir, sub) || join_path(p2, base, probe)) return too_long(e, dir);
    /* accept the directory the archive unpacks into as well */
    if (file_exists(p1) || !file_exists(p2)) {
        if (strlen(dir) >= DATA_PATH_MAX) return too_long(e, dir);
        memcpy(base, dir, strlen(dir) + 1);
    }
    if (!dir_exists(base)) return env2_fail(e, ENV2_E_IO, "%s: data directory %s does not exist", name, base);
    if (cifar100) {
        if (join_path(paths[np++], base, test ? "test.bin" : "train.bin")) return too_long(e, dir);
    } else if (test) {
        if (join_path(paths[np++], base, "test_batch.bin")) return too_long(e, dir);
    } else {
        for (int i = 1; i <= 5; i++) {
            char nm[32];
            snprintf(nm, sizeof nm, "data_batch_%d.bin", i);
            if (join_path(paths[np++], base, nm)) return too_long(e, dir);
        }
    }
    for (int i = 0; i < np; i++) {
        if (!file_exists(paths[i])) return env2_fail(e, ENV2_E_IO, "%s: missing file %s", name, paths[i]);
        pp[i] = paths[i];
    }
    return dataset_load_cifar(pp, np, cifar100, d, e);
}

static env2_status load_npy_split(const char *dir, int test, int num_classes, env2_dataset *d, env2_err *e)
{
    char ipath[DATA_PATH_MAX], lpath[DATA_PATH_MAX], alt[DATA_PATH_MAX];
    const char *conv[2][2] = {{test ? "test_images.npy" : "train_images.npy", test ? "test_labels.npy" : "train_labels.npy"},
                              {test ? "x_test.npy" : "x_train.npy", test ? "y_test.npy" : "y_train.npy"}};
    int k = 0;
    if (join_path(ipath, dir, conv[0][0]) || join_path(alt, dir, conv[1][0])) return too_long(e, dir);
    if (!file_exists(ipath) && file_exists(alt)) k = 1;
    if (join_path(ipath, dir, conv[k][0]) || join_path(lpath, dir, conv[k][1])) return too_long(e, dir);
    if (!dir_exists(dir)) return env2_fail(e, ENV2_E_IO, "npy: data directory %s does not exist", dir);
    if (!file_exists(ipath)) return env2_fail(e, ENV2_E_IO, "npy: missing file %s (or %s)", ipath, alt);
    if (!file_exists(lpath)) return env2_fail(e, ENV2_E_IO, "npy: missing file %s", lpath);
    return dataset_load_npy(ipath, lpath, num_classes, d, e);
}

env2_status dataset_load(const char *name, const char *dir, env2_dataset *train, env2_dataset *test, env2_err *e)
{
    env2_dataset tr, te;
    env2_status st;
    memset(&tr, 0, sizeof tr);
    memset(&te, 0, sizeof te);
    if (!name || !train || !test) return env2_fail(e, ENV2_E_INVALID_ARG, "dataset_load: NULL argument");
    if (!dir) dir = dataset_default_dir(name);
    if (!strcmp(name, "fashion-mnist") || !strcmp(name, "mnist")) {
        st = load_idx_split(name, dir, "train", &tr, e);
        if (st == ENV2_OK) st = load_idx_split(name, dir, "t10k", &te, e);
    } else if (!strcmp(name, "cifar10") || !strcmp(name, "cifar100")) {
        int c100 = !strcmp(name, "cifar100");
        st = load_cifar_split(name, dir, c100, 0, &tr, e);
        if (st == ENV2_OK) st = load_cifar_split(name, dir, c100, 1, &te, e);
    } else if (!strcmp(name, "npy")) {
        st = load_npy_split(dir, 0, 0, &tr, e);
        if (st == ENV2_OK) st = load_npy_split(dir, 1, 0, &te, e);
        if (st == ENV2_OK) {
            int k = tr.num_classes > te.num_classes ? tr.num_classes : te.num_classes;
            tr.num_classes = te.num_classes = k;
        }
    } else {
        return env2_fail(e, ENV2_E_NOT_FOUND,
                         "unknown dataset '%s' (expected fashion-mnist, mnist, cifar10, cifar100 or npy)", name);
    }
    if (st == ENV2_OK && (tr.h != te.h || tr.w != te.w || tr.c != te.c))
        st = env2_fail(e, ENV2_E_SHAPE, "%s: train images are %dx%dx%d but test images are %dx%dx%d", name, tr.h, tr.w,
                       tr.c, te.h, te.w, te.c);
    if (st != ENV2_OK) {
        dataset_free(&tr);
        dataset_free(&te);
        return st;
    }
    *train = tr;
    *test = te;
    return ENV2_OK;
}

/* ---- splitting and shuffling ------------------------------------------ */

static void permute(int64_t *perm, int64_t n, uint64_t seed, uint64_t stream, uint64_t base)
{
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = env2_rng_below(seed, stream, base + (uint64_t)i, (uint32_t)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

void dataset_epoch_order(int64_t *perm, int64_t n, uint64_t seed, int64_t epoch)
{
    /* n <= 2^31, so epoch << 32 keeps every epoch's counters disjoint */
    permute(perm, n, seed, ENV2_STREAM_SHUFFLE, (uint64_t)epoch << 32);
}

env2_status dataset_split(const env2_dataset *full, int64_t n_val, uint64_t seed, env2_dataset *train,
                          env2_dataset *val, env2_err *e)
{
    env2_dataset tr, va;
    int64_t *perm;
    uint8_t *is_val;
    size_t img;
    if (!full || !train || !val) return env2_fail(e, ENV2_E_INVALID_ARG, "dataset_split: NULL argument");
    if (n_val < 1 || n_val >= full->n)
        return env2_fail(e, ENV2_E_INVALID_ARG, "validation split of %lld images needs 1..%lld (the train set has %lld)",
                         (long long)n_val, (long long)full->n - 1, (long long)full->n);
    img = (size_t)full->h * (size_t)full->w * (size_t)full->c;
    tr = *full;
    va = *full;
    tr.n = full->n - n_val;
    va.n = n_val;
    tr.images = env2_malloc((size_t)tr.n * img);
    tr.labels = env2_malloc((size_t)tr.n * sizeof(int32_t));
    va.images = env2_malloc((size_t)va.n * img);
    va.labels = env2_malloc((size_t)va.n * sizeof(int32_t));
    perm = env2_malloc((size_t)full->n * sizeof(int64_t));
    is_val = env2_calloc((size_t)full->n, 1);
    if (!tr.images || !tr.labels || !va.images || !va.labels || !perm || !is_val) {
        dataset_free(&tr);
        dataset_free(&va);
        env2_free(perm);
        env2_free(is_val);
        return env2_fail(e, ENV2_E_NOMEM, "out of memory splitting %lld images", (long long)full->n);
    }
    permute(perm, full->n, seed, ENV2_STREAM_SPLIT, 0);
    for (int64_t i = 0; i < n_val; i++) is_val[perm[i]] = 1;
    {
        int64_t a = 0, b = 0;
        for (int64_t i = 0; i < full->n; i++) {
            env2_dataset *dst = is_val[i] ? &va : &tr;
            int64_t k = is_val[i] ? b++ : a++;
            memcpy(dst->images + (size_t)k * img, full->images + (size_t)i * img, img);
            dst->labels[k] = full->labels[i];
        }
    }
    env2_free(perm);
    env2_free(is_val);
    *train = tr;
    *val = va;
    return ENV2_OK;
}

/* ---- batches ------------------------------------------------------------ */

void data_config_default(data_config *cfg, const env2_dataset *d, int train)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->train = train;
    cfg->batch_size = 64;
    cfg->size = d ? (d->h > d->w ? d->h : d->w) : 32;
    cfg->area_min = 0.25f;
    cfg->hflip = 1;
}

int64_t data_num_batches(const env2_dataset *d, const data_config *cfg)
{
    int64_t nb;
    if (!d || !cfg || cfg->batch_size < 1 || d->n < 1) return 0;
    nb = cfg->train ? d->n / cfg->batch_size : (d->n + cfg->batch_size - 1) / cfg->batch_size;
    if (cfg->max_batches > 0 && nb > cfg->max_batches) nb = cfg->max_batches;
    return nb;
}

static int mixing_on(const data_config *cfg) { return cfg->train && (cfg->mixup_alpha > 0 || cfg->cutmix_alpha > 0); }

static void make_aug_config(const env2_dataset *d, const data_config *cfg, aug_config *a)
{
    aug_config_default(a, cfg->size, d->c);
    a->out_h = a->out_w = cfg->size;
    if (cfg->train) {
        a->random_crop = 1;
        a->area_min = cfg->area_min;
        a->area_max = 1.0f;
        a->hflip = cfg->hflip ? 1 : 0;
        a->randaug_magnitude = cfg->randaug_magnitude;
        a->randaug_ref_size = cfg->randaug_ref_size;
    } else {
        a->random_crop = 0;
        a->hflip = 0;
        a->randaug_magnitude = 0;
    }
}

static env2_status check_config(const env2_dataset *d, const data_config *cfg, env2_err *e)
{
    if (!d || !cfg || !d->images) return env2_fail(e, ENV2_E_INVALID_ARG, "batcher: NULL dataset or config");
    if (cfg->batch_size < 1 || cfg->batch_size > 1000000)
        return env2_fail(e, ENV2_E_INVALID_ARG, "batch size %d must be 1..1000000", cfg->batch_size);
    if (cfg->size < 1 || cfg->size > DATA_MAX_SIDE)
        return env2_fail(e, ENV2_E_INVALID_ARG, "image size %d must be 1..%d", cfg->size, DATA_MAX_SIDE);
    if (cfg->train && !(cfg->area_min > 0 && cfg->area_min <= 1))
        return env2_fail(e, ENV2_E_INVALID_ARG, "crop area minimum %g must be in (0, 1]", (double)cfg->area_min);
    if (cfg->randaug_magnitude < 0 || cfg->randaug_magnitude > 30)
        return env2_fail(e, ENV2_E_INVALID_ARG, "RandAugment magnitude %g must be 0..30",
                         (double)cfg->randaug_magnitude);
    if (cfg->randaug_ref_size < 0 || cfg->randaug_ref_size > 65536)
        return env2_fail(e, ENV2_E_INVALID_ARG, "RandAugment reference size %d must be 0..65536",
                         cfg->randaug_ref_size);
    if (cfg->mixup_alpha < 0 || cfg->cutmix_alpha < 0)
        return env2_fail(e, ENV2_E_INVALID_ARG, "Mixup/CutMix alpha must be >= 0");
    if (cfg->train && cfg->batch_size > d->n)
        return env2_fail(e, ENV2_E_INVALID_ARG, "batch size %d is larger than the %lld training images",
                         cfg->batch_size, (long long)d->n);
    return ENV2_OK;
}

size_t data_scratch_size(const env2_dataset *d, const data_config *cfg)
{
    aug_config a;
    make_aug_config(d, cfg, &a);
    return aug_scratch_size(d->h, d->w, d->c, &a);
}

env2_status data_batch_alloc(data_batch *b, const env2_dataset *d, const data_config *cfg, env2_err *e)
{
    data_batch t;
    env2_status st = check_config(d, cfg, e);
    if (st != ENV2_OK) return st;
    memset(&t, 0, sizeof t);
    t.image_cap = (size_t)cfg->batch_size * (size_t)cfg->size * (size_t)cfg->size * (size_t)d->c;
    t.label_cap = cfg->batch_size;
    t.target_cap = mixing_on(cfg) ? (size_t)cfg->batch_size * (size_t)d->num_classes : 0;
    t.images = env2_aligned_alloc(t.image_cap * sizeof(float));
    t.labels = env2_malloc((size_t)t.label_cap * sizeof(int32_t));
    if (t.target_cap) t.target_buf = env2_aligned_alloc(t.target_cap * sizeof(float));
    if (!t.images || !t.labels || (t.target_cap && !t.target_buf)) {
        data_batch_free(&t);
        return env2_fail(e, ENV2_E_NOMEM, "out of memory for a batch of %d images of %dx%d", cfg->batch_size,
                         cfg->size, cfg->size);
    }
    *b = t;
    return ENV2_OK;
}

void data_batch_free(data_batch *b)
{
    if (!b) return;
    env2_aligned_free(b->images);
    env2_free(b->labels);
    env2_aligned_free(b->target_buf);
    memset(b, 0, sizeof *b);
}

static int batch_fits(const data_batch *b, const env2_dataset *d, const data_config *cfg)
{
    size_t need_img = (size_t)cfg->batch_size * (size_t)cfg->size * (size_t)cfg->size * (size_t)d->c;
    size_t need_t = mixing_on(cfg) ? (size_t)cfg->batch_size * (size_t)d->num_classes : 0;
    return b->images && b->image_cap >= need_img && b->label_cap >= cfg->batch_size && b->target_cap >= need_t;
}

/* The augmentation module takes one counter per image and may draw a run of
 * numbers starting there; hashing (epoch, position) spreads the runs of
 * neighbouring images far apart so they can never overlap. */
static uint64_t image_counter(uint64_t seed, int64_t epoch, int64_t pos)
{
    return env2_rng_u64(seed, ENV2_STREAM_AUGMENT, ((uint64_t)epoch << 32) + (uint64_t)pos);
}

static uint64_t mix_counter(uint64_t seed, int64_t epoch, int64_t index)
{
    return env2_rng_u64(seed, ENV2_STREAM_MIXUP, ((uint64_t)epoch << 32) + (uint64_t)index);
}

/* cancel (may be NULL) is polled between images so that a batcher can stop
 * its thread without waiting for a whole large batch. */
static env2_status make_batch(const env2_dataset *d, const data_config *cfg, const int64_t *perm, int64_t epoch,
                              int64_t index, data_batch *b, void *scratch, atomic_int *cancel, int *cancelled,
                              env2_err *e)
{
    aug_config a;
    int64_t nb = data_num_batches(d, cfg), start;
    int n;
    size_t out_img = (size_t)cfg->size * (size_t)cfg->size * (size_t)d->c;
    size_t in_img = (size_t)d->h * (size_t)d->w * (size_t)d->c;
    env2_status st = check_config(d, cfg, e);
    if (st != ENV2_OK) return st;
    if (index < 0 || index >= nb)
        return env2_fail(e, ENV2_E_INVALID_ARG, "batch %lld does not exist (the epoch has %lld)", (long long)index,
                         (long long)nb);
    if (cfg->train && !perm) return env2_fail(e, ENV2_E_INVALID_ARG, "training batch without an epoch order");
    if (!batch_fits(b, d, cfg)) return env2_fail(e, ENV2_E_INVALID_ARG, "batch buffers too small for this config");
    start = index * cfg->batch_size;
    n = cfg->train ? cfg->batch_size : (int)(d->n - start < cfg->batch_size ? d->n - start : cfg->batch_size);
    make_aug_config(d, cfg, &a);
    for (int i = 0; i < n; i++) {
        int64_t pos = start + i;
        int64_t src = cfg->train ? perm[pos] : pos;
        uint64_t ctr = cfg->train ? image_counter(cfg->seed, epoch, pos) : (uint64_t)pos;
        if (cancel && atomic_load(cancel)) {
            if (cancelled) *cancelled = 1;
            return ENV2_E_STATE;
        }
        st = aug_image(d->images + (size_t)src * in_img, d->h, d->w, d->c, &a, cfg->seed, ctr,
                       b->images + (size_t)i * out_img, scratch, e);
        if (st != ENV2_OK) return env2_err_prefix(e, st, "image %lld (batch %lld of epoch %lld)", (long long)src,
                                                  (long long)index, (long long)epoch);
        b->labels[i] = d->labels[src];
    }
    b->targets = NULL;
    if (mixing_on(cfg)) {
        size_t K = (size_t)d->num_classes;
        memset(b->target_buf, 0, (size_t)n * K * sizeof(float));
        for (int i = 0; i < n; i++) b->target_buf[(size_t)i * K + (size_t)b->labels[i]] = 1.0f;
        aug_mix_batch(b->images, n, cfg->size, cfg->size, d->c, b->target_buf, (int)K, cfg->mixup_alpha,
                      cfg->cutmix_alpha, cfg->seed, mix_counter(cfg->seed, epoch, index));
        b->targets = b->target_buf;
    }
    b->n = n;
    b->size = cfg->size;
    b->c = d->c;
    b->num_classes = d->num_classes;
    b->epoch = epoch;
    b->index = index;
    return ENV2_OK;
}

env2_status data_make_batch(const env2_dataset *d, const data_config *cfg, const int64_t *perm, int64_t epoch,
                            int64_t index, data_batch *b, void *scratch, env2_err *e)
{
    if (!b) return env2_fail(e, ENV2_E_INVALID_ARG, "data_make_batch: NULL batch");
    return make_batch(d, cfg, perm, epoch, index, b, scratch, NULL, NULL, e);
}

/* ---- batcher ------------------------------------------------------------ */

typedef struct slot {
    data_batch b;
    void *scratch;
    size_t scratch_cap;
    int64_t index;       /* batch held, -1 = none */
    int ready;
    env2_status status;
    env2_err err;
} slot;

struct batcher {
    const env2_dataset *d;
    int prefetch;
    data_config cfg;
    int64_t epoch, nb;
    int64_t *perm;

    /* slot i % 2 holds batch i.  The worker may fill batch j once the
     * consumer has asked for j - 1, i.e. is done with j - 2 (whose slot j
     * reuses): it runs at most one batch ahead. */
    slot slots[2];
    int64_t consumer_next;  /* index batcher_next returns next */
    int64_t produce;        /* index the worker fills next */
    int active;             /* an epoch has begun and not ended */
    int failed;             /* the epoch ended with an error */

    pthread_t thread;
    int thread_running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int cancel;
};

env2_status batcher_create(batcher **out, const env2_dataset *d, int prefetch, env2_err *e)
{
    batcher *bt;
    if (!out) return env2_fail(e, ENV2_E_INVALID_ARG, "batcher_create: NULL out");
    *out = NULL;
    if (!d || !d->images || !d->labels || d->n < 1)
        return env2_fail(e, ENV2_E_INVALID_ARG, "batcher_create: empty dataset");
    bt = env2_calloc(1, sizeof *bt);
    if (!bt) return env2_fail(e, ENV2_E_NOMEM, "out of memory for the batcher");
    bt->perm = env2_malloc((size_t)d->n * sizeof(int64_t));
    if (!bt->perm) {
        env2_free(bt);
        return env2_fail(e, ENV2_E_NOMEM, "out of memory for the order of %lld images", (long long)d->n);
    }
    if (pthread_mutex_init(&bt->mu, NULL) != 0) {
        env2_free(bt->perm);
        env2_free(bt);
        return env2_fail(e, ENV2_E_NOMEM, "cannot create the batcher's mutex");
    }
    if (pthread_cond_init(&bt->cv, NULL) != 0) {
        pthread_mutex_destroy(&bt->mu);
        env2_free(bt->perm);
        env2_free(bt);
        return env2_fail(e, ENV2_E_NOMEM, "cannot create the batcher's condition variable");
    }
    atomic_init(&bt->cancel, 0);
    bt->d = d;
    bt->prefetch = prefetch ? 1 : 0;
    bt->slots[0].index = bt->slots[1].index = -1;
    *out = bt;
    return ENV2_OK;
}

static void *worker_main(void *arg)
{
    batcher *bt = arg;
    pthread_mutex_lock(&bt->mu);
    for (;;) {
        int64_t j;
        slot *s;
        env2_status st;
        int cancelled = 0;
        while (!atomic_load(&bt->cancel) && bt->produce < bt->nb && bt->produce > bt->consumer_next)
            pthread_cond_wait(&bt->cv, &bt->mu);
        if (atomic_load(&bt->cancel) || bt->produce >= bt->nb) break;
        j = bt->produce;
        s = &bt->slots[j % 2];
        s->ready = 0;
        s->index = -1;
        pthread_mutex_unlock(&bt->mu);

        env2_err_clear(&s->err);
        st = make_batch(bt->d, &bt->cfg, bt->perm, bt->epoch, j, &s->b, s->scratch, &bt->cancel, &cancelled, &s->err);

        pthread_mutex_lock(&bt->mu);
        if (cancelled) break;
        s->status = st;
        s->index = j;
        s->ready = 1;
        bt->produce = j + 1;
        pthread_cond_broadcast(&bt->cv);
        if (st != ENV2_OK) break;
    }
    pthread_mutex_unlock(&bt->mu);
    return NULL;
}

void batcher_end(batcher *bt)
{
    if (!bt) return;
    if (bt->thread_running) {
        pthread_mutex_lock(&bt->mu);
        atomic_store(&bt->cancel, 1);
        pthread_cond_broadcast(&bt->cv);
        pthread_mutex_unlock(&bt->mu);
        pthread_join(bt->thread, NULL);
        bt->thread_running = 0;
        atomic_store(&bt->cancel, 0);
    }
    for (int i = 0; i < 2; i++) {
        bt->slots[i].ready = 0;
        bt->slots[i].index = -1;
    }
    bt->active = 0;
}

void batcher_destroy(batcher *bt)
{
    if (!bt) return;
    batcher_end(bt);
    for (int i = 0; i < 2; i++) {
        data_batch_free(&bt->slots[i].b);
        env2_free(bt->slots[i].scratch);
    }
    pthread_cond_destroy(&bt->cv);
    pthread_mutex_destroy(&bt->mu);
    env2_free(bt->perm);
    env2_free(bt);
}

env2_status batcher_begin(batcher *bt, const data_config *cfg, int64_t epoch, int64_t first_batch, env2_err *e)
{
    env2_status st;
    size_t scr;
    if (!bt) return env2_fail(e, ENV2_E_INVALID_ARG, "batcher_begin: NULL batcher");
    batcher_end(bt);
    st = check_config(bt->d, cfg, e);
    if (st != ENV2_OK) return st;
    if (epoch < 0) return env2_fail(e, ENV2_E_INVALID_ARG, "epoch %lld is negative", (long long)epoch);
    if (first_batch < 0 || first_batch > data_num_batches(bt->d, cfg))
        return env2_fail(e, ENV2_E_INVALID_ARG, "first batch %lld is outside the epoch's 0..%lld", (long long)first_batch,
                         (long long)data_num_batches(bt->d, cfg));
    scr = data_scratch_size(bt->d, cfg);
    for (int i = 0; i < 2; i++) {
        slot *s = &bt->slots[i];
        if (!batch_fits(&s->b, bt->d, cfg)) {
            data_batch nb;
            st = data_batch_alloc(&nb, bt->d, cfg, e);
            if (st != ENV2_OK) return st;
            data_batch_free(&s->b);
            s->b = nb;
        }
        if (s->scratch_cap < scr || !s->scratch) {
            void *p = env2_malloc(scr ? scr : 1);
            if (!p) return env2_fail(e, ENV2_E_NOMEM, "out of memory for %zu bytes of augmentation scratch", scr);
            env2_free(s->scratch);
            s->scratch = p;
            s->scratch_cap = scr;
        }
        s->ready = 0;
        s->index = -1;
    }
    bt->cfg = *cfg;
    bt->epoch = epoch;
    bt->nb = data_num_batches(bt->d, cfg);
    if (cfg->train) dataset_epoch_order(bt->perm, bt->d->n, cfg->seed, epoch);
    bt->consumer_next = first_batch;
    bt->produce = first_batch;
    bt->failed = 0;
    bt->active = 1;
    if (bt->prefetch && first_batch < bt->nb) {
        /* without a thread the batches are made on demand; the results
         * are the same, only slower, so a failed start is not an error */
        if (pthread_create(&bt->thread, NULL, worker_main, bt) == 0) bt->thread_running = 1;
    }
    return ENV2_OK;
}

env2_status batcher_next(batcher *bt, const data_batch **out, env2_err *e)
{
    int64_t j;
    slot *s;
    if (!bt || !out) return env2_fail(e, ENV2_E_INVALID_ARG, "batcher_next: NULL argument");
    *out = NULL;
    if (!bt->active) return env2_fail(e, ENV2_E_STATE, "batcher_next: no epoch has begun");
    if (bt->failed || bt->consumer_next >= bt->nb) return ENV2_OK;
    j = bt->consumer_next;
    s = &bt->slots[j % 2];
    if (!bt->thread_running) {
        env2_status st;
        s->ready = 0;
        st = make_batch(bt->d, &bt->cfg, bt->perm, bt->epoch, j, &s->b, s->scratch, NULL, NULL, e);
        if (st != ENV2_OK) {
            bt->failed = 1;
            return st;
        }
        s->index = j;
        s->ready = 1;
        bt->consumer_next = j + 1;
        *out = &s->b;
        return ENV2_OK;
    }
    pthread_mutex_lock(&bt->mu);
    while (!(s->ready && s->index == j)) pthread_cond_wait(&bt->cv, &bt->mu);
    bt->consumer_next = j + 1;
    pthread_cond_broadcast(&bt->cv);
    pthread_mutex_unlock(&bt->mu);
    if (s->status != ENV2_OK) {
        if (e) *e = s->err;
        bt->failed = 1;
        return s->status;
    }
    *out = &s->b;
    return ENV2_OK;
}

int64_t batcher_num_batches(const batcher *bt) { return bt ? bt->nb : 0; }
