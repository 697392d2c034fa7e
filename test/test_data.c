/* Datasets (IDX, CIFAR, npy), splitting, shuffling and the batcher with its
 * prefetch thread, on small synthetic files written to a temporary directory. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "common.h"
#include "train/augment.h"
#include "train/data.h"

/* The env2 train/eval/predict/schedule commands, compiled into this test so
 * that they run in-process (under the sanitizers too) against the library. */
#include "../tools/cmd_train.c"

static char tmpdir[256];
static char created[64][512];
static int ncreated;

static const char *path_in(const char *sub, const char *name)
{
    static char buf[4][512];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 512, "%s%s%s/%s", tmpdir, sub[0] ? "/" : "", sub, name);
    return p;
}

static void make_subdir(const char *sub)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, sub);
    mkdir(p, 0700);
}

static void remember(const char *p)
{
    for (int i = 0; i < ncreated; i++)
        if (!strcmp(created[i], p)) return;
    if (ncreated < 64) snprintf(created[ncreated++], sizeof created[0], "%s", p);
}

static void write_bytes(const char *sub, const char *name, const void *data, size_t len)
{
    const char *p = path_in(sub, name);
    FILE *f = fopen(p, "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", p);
        exit(1);
    }
    if (len) fwrite(data, 1, len, f);
    fclose(f);
    remember(p);
}

/* ---- file writers ---------------------------------------------------------- */

static uint32_t crc32_bytes(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return c ^ 0xffffffffu;
}

/* gzip member holding the data in stored (uncompressed) deflate blocks: a
 * valid .gz file that needs no compressor to produce. */
static uint8_t *gzip_stored(const uint8_t *data, size_t n, size_t *out_len)
{
    size_t nblocks = n / 65535 + 1, cap = 10 + nblocks * 5 + n + 8, o = 0;
    uint8_t *g = malloc(cap);
    static const uint8_t hdr[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255};
    uint32_t crc = crc32_bytes(data, n);
    memcpy(g, hdr, 10);
    o = 10;
    for (size_t pos = 0;;) {
        size_t len = n - pos > 65535 ? 65535 : n - pos;
        int final = pos + len == n;
        g[o++] = (uint8_t)final;
        g[o++] = (uint8_t)(len & 255);
        g[o++] = (uint8_t)(len >> 8);
        g[o++] = (uint8_t)(~len & 255);
        g[o++] = (uint8_t)((~len >> 8) & 255);
        memcpy(g + o, data + pos, len);
        o += len;
        pos += len;
        if (final) break;
    }
    for (int k = 0; k < 4; k++) g[o++] = (uint8_t)(crc >> (8 * k));
    for (int k = 0; k < 4; k++) g[o++] = (uint8_t)((uint32_t)n >> (8 * k));
    *out_len = o;
    return g;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* IDX file of unsigned bytes; gz = 1 writes it gzip-compressed; truncate
 * drops that many bytes from the end. */
static void write_idx(const char *sub, const char *name, int ndim, const int *dims, const uint8_t *data, int gz,
                      size_t truncate)
{
    size_t n = 1, len;
    uint8_t *buf;
    for (int i = 0; i < ndim; i++) n *= (size_t)dims[i];
    len = 4 + 4 * (size_t)ndim + n;
    buf = malloc(len);
    buf[0] = buf[1] = 0;
    buf[2] = 8;
    buf[3] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) put_be32(buf + 4 + 4 * i, (uint32_t)dims[i]);
    memcpy(buf + 4 + 4 * ndim, data, n);
    len -= truncate;
    if (gz) {
        size_t glen;
        uint8_t *g = gzip_stored(buf, len, &glen);
        write_bytes(sub, name, g, glen);
        free(g);
    } else {
        write_bytes(sub, name, buf, len);
    }
    free(buf);
}

/* npy v1.0; descr e.g. "|u1", "<i8". */
static void write_npy(const char *sub, const char *name, const char *descr, int ndim, const int64_t *shape,
                      const void *data, size_t elem)
{
    char hdr[256];
    int hl;
    size_t n = 1, total;
    uint8_t *buf;
    char sh[128] = "";
    for (int i = 0; i < ndim; i++) {
        char t[32];
        snprintf(t, sizeof t, "%lld%s", (long long)shape[i], ndim == 1 ? "," : (i + 1 < ndim ? ", " : ""));
        strcat(sh, t);
        n *= (size_t)shape[i];
    }
    hl = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, sh);
    while ((10 + hl + 1) % 64) hdr[hl++] = ' ';
    hdr[hl++] = '\n';
    total = 10 + (size_t)hl + n * elem;
    buf = malloc(total);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (uint8_t)(hl & 255);
    buf[9] = (uint8_t)(hl >> 8);
    memcpy(buf + 10, hdr, (size_t)hl);
    memcpy(buf + 10 + hl, data, n * elem);
    write_bytes(sub, name, buf, total);
    free(buf);
}

/* pixel value that encodes (image, y, x, channel) so that any mix-up of
 * images or of the HWC order shows */
static uint8_t pix(int64_t i, int y, int x, int c) { return (uint8_t)((i * 7 + y * 13 + x * 3 + c * 101) & 255); }

/* ---- tests --------------------------------------------------------------- */

static void test_idx(void)
{
    enum { NTR = 20, NTE = 7, H = 6, W = 5 };
    uint8_t im[NTR * H * W], lb[NTR];
    int dims3[3] = {NTR, H, W}, dims1[1] = {NTR};
    env2_dataset tr, te;
    env2_err e;
    env2_status st;
    char dir[512];
    make_subdir("idx");
    snprintf(dir, sizeof dir, "%s/idx", tmpdir);
    for (int i = 0; i < NTR; i++) {
        lb[i] = (uint8_t)(i % 10);
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) im[(i * H + y) * W + x] = pix(i, y, x, 0);
    }
    write_idx("idx", "train-images-idx3-ubyte", 3, dims3, im, 0, 0);
    write_idx("idx", "train-labels-idx1-ubyte.gz", 1, dims1, lb, 1, 0);
    dims3[0] = dims1[0] = NTE;
    write_idx("idx", "t10k-images-idx3-ubyte.gz", 3, dims3, im, 1, 0);
    write_idx("idx", "t10k-labels-idx1-ubyte", 1, dims1, lb, 0, 0);

    memset(&tr, 0, sizeof tr);
    memset(&te, 0, sizeof te);
    st = dataset_load("fashion-mnist", dir, &tr, &te, &e);
    CHECK_MSG(st == ENV2_OK, "%s", e.msg);
    CHECK_EQ_INT(tr.n, NTR);
    CHECK_EQ_INT(te.n, NTE);
    CHECK_EQ_INT(tr.h, H);
    CHECK_EQ_INT(tr.w, W);
    CHECK_EQ_INT(tr.c, 1);
    CHECK_EQ_INT(tr.num_classes, 10);
    CHECK_EQ_INT(te.num_classes, 10);
    if (st == ENV2_OK) {
        int bad = 0;
        for (int i = 0; i < NTR; i++) {
            if (tr.labels[i] != i % 10) bad++;
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) bad += tr.images[(i * H + y) * W + x] != pix(i, y, x, 0);
        }
        CHECK_EQ_INT(bad, 0);
        CHECK_EQ_INT(te.images[(size_t)6 * H * W + 2 * W + 3], pix(6, 2, 3, 0));
        CHECK_EQ_INT(te.labels[6], 6);
    }
    dataset_free(&tr);
    dataset_free(&te);
    CHECK(tr.images == NULL && tr.n == 0);

    /* label out of range: the message names the index */
    lb[13] = 10;
    dims1[0] = NTE;
    write_idx("idx", "t10k-labels-idx1-ubyte", 1, dims1, lb + 7, 0, 0); /* index 6 there holds lb[13] */
    st = dataset_load("fashion-mnist", dir, &tr, &te, &e);
    CHECK(st != ENV2_OK);
    CHECK_MSG(strstr(e.msg, "index 6") != NULL && strstr(e.msg, "t10k-labels") != NULL, "%s", e.msg);
    CHECK(tr.images == NULL && te.images == NULL);
    lb[13] = 3;
    write_idx("idx", "t10k-labels-idx1-ubyte", 1, dims1, lb, 0, 0);

    /* count mismatch between images and labels */
    dims1[0] = NTE - 1;
    write_idx("idx", "t10k-labels-idx1-ubyte", 1, dims1, lb, 0, 0);
    st = dataset_load("fashion-mnist", dir, &tr, &te, &e);
    CHECK(st != ENV2_OK);
    CHECK_MSG(strstr(e.msg, "7 images") != NULL && strstr(e.msg, "6 labels") != NULL, "%s", e.msg);
    dims1[0] = NTE;
    write_idx("idx", "t10k-labels-idx1-ubyte", 1, dims1, lb, 0, 0);

    /* truncated image file */
    dims3[0] = NTE;
    write_idx("idx", "t10k-images-idx3-ubyte.gz", 3, dims3, im, 1, 11);
    st = dataset_load("fashion-mnist", dir, &tr, &te, &e);
    CHECK(st != ENV2_OK);
    CHECK_MSG(strstr(e.msg, "t10k-images-idx3-ubyte.gz") != NULL, "%s", e.msg);
    CHECK(tr.images == NULL && te.images == NULL);

    /* a missing file is named; the directory is checked first */
    remove(path_in("idx", "t10k-images-idx3-ubyte.gz"));
    st = dataset_load("mnist", dir, &tr, &te, &e);
    CHECK(st == ENV2_E_IO);
    CHECK_MSG(strstr(e.msg, "t10k-images-idx3-ubyte") != NULL, "%s", e.msg);
    st = dataset_load("mnist", path_in("idx", "nope"), &tr, &te, &e);
    CHECK(st == ENV2_E_IO);
    CHECK_MSG(strstr(e.msg, "does not exist") != NULL, "%s", e.msg);
    st = dataset_load("imagenet", dir, &tr, &te, &e);
    CHECK(st == ENV2_E_NOT_FOUND);
    CHECK_MSG(strstr(e.msg, "imagenet") != NULL, "%s", e.msg);
}

static void write_cifar(const char *sub, const char *name, int c100, int n, int first, int bad_at)
{
    size_t rec = 3072 + (c100 ? 2 : 1);
    uint8_t *buf = malloc(rec * (size_t)n);
    for (int r = 0; r < n; r++) {
        uint8_t *p = buf + rec * (size_t)r;
        int i = first + r;
        if (c100) {
            *p++ = (uint8_t)(i % 20);             /* coarse */
            *p++ = (uint8_t)(r == bad_at ? 100 : (i * 11) % 100); /* fine */
        } else {
            *p++ = (uint8_t)(r == bad_at ? 10 : i % 10);
        }
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++) *p++ = pix(i, y, x, c);
    }
    write_bytes(sub, name, buf, rec * (size_t)n);
    free(buf);
}

static int check_cifar_pixels(const env2_dataset *d, int first)
{
    int bad = 0;
    for (int64_t i = 0; i < d->n; i++)
        for (int y = 0; y < 32; y += 7)
            for (int x = 0; x < 32; x += 5)
                for (int c = 0; c < 3; c++)
                    bad += d->images[((size_t)i * 1024 + (size_t)y * 32 + (size_t)x) * 3 + (size_t)c] !=
                           pix(first + i, y, x, c);
    return bad;
}

static void test_cifar(void)
{
    env2_dataset tr, te;
    env2_err e;
    env2_status st;
    char dir[512];
    memset(&tr, 0, sizeof tr);
    memset(&te, 0, sizeof te);

    /* CIFAR-10 in the sub-directory the archive unpacks into */
    make_subdir("c10");
    make_subdir("c10/cifar-10-batches-bin");
    for (int b = 1; b <= 5; b++) {
        char nm[32];
        snprintf(nm, sizeof nm, "data_batch_%d.bin", b);
        write_cifar("c10/cifar-10-batches-bin", nm, 0, 2, (b - 1) * 2, -1);
    }
    write_cifar("c10/cifar-10-batches-bin", "test_batch.bin", 0, 3, 100, -1);
    snprintf(dir, sizeof dir, "%s/c10", tmpdir);
    st = dataset_load("cifar10", dir, &tr, &te, &e);
    CHECK_MSG(st == ENV2_OK, "%s", e.msg);
    CHECK_EQ_INT(tr.n, 10);
    CHECK_EQ_INT(te.n, 3);
    CHECK_EQ_INT(tr.h * 10000 + tr.w * 100 + tr.c, 323203);
    CHECK_EQ_INT(tr.num_classes, 10);
    if (st == ENV2_OK) {
        int badl = 0;
        for (int i = 0; i < 10; i++) badl += tr.labels[i] != i % 10;
        CHECK_EQ_INT(badl, 0);
        CHECK_EQ_INT(check_cifar_pixels(&tr, 0), 0);
        CHECK_EQ_INT(check_cifar_pixels(&te, 100), 0);
    }
    dataset_free(&tr);
    dataset_free(&te);

    /* label out of range in the fourth batch: file and index named */
    write_cifar("c10/cifar-10-batches-bin", "data_batch_4.bin", 0, 2, 6, 1);
    st = dataset_load("cifar10", dir, &tr, &te, &e);
    CHECK(st != ENV2_OK);
    CHECK_MSG(strstr(e.msg, "data_batch_4.bin") && (strstr(e.msg, "index 1") || strstr(e.msg, "record 1")) &&
                  strstr(e.msg, "label 10"),
              "%s", e.msg);
    CHECK(tr.images == NULL);

    /* a missing batch */
    remove(path_in("c10/cifar-10-batches-bin", "data_batch_4.bin"));
    st = dataset_load("cifar10", dir, &tr, &te, &e);
    CHECK(st == ENV2_E_IO);
    CHECK_MSG(strstr(e.msg, "data_batch_4.bin") != NULL, "%s", e.msg);

    /* CIFAR-100: fine labels; a truncated record */
    make_subdir("c100");
    write_cifar("c100", "train.bin", 1, 4, 0, -1);
    write_cifar("c100", "test.bin", 1, 2, 50, -1);
    snprintf(dir, sizeof dir, "%s/c100", tmpdir);
    st = dataset_load("cifar100", dir, &tr, &te, &e);
    CHECK_MSG(st == ENV2_OK, "%s", e.msg);
    CHECK_EQ_INT(tr.num_classes, 100);
    CHECK_EQ_INT(tr.n, 4);
    if (st == ENV2_OK) {
        CHECK_EQ_INT(tr.labels[3], 33);
        CHECK_EQ_INT(te.labels[1], (51 * 11) % 100);
        CHECK_EQ_INT(check_cifar_pixels(&te, 50), 0);
    }
    dataset_free(&tr);
    dataset_free(&te);
    {
        uint8_t junk[3074 + 100];
        memset(junk, 1, sizeof junk);
        write_bytes("c100", "test.bin", junk, sizeof junk);
        st = dataset_load("cifar100", dir, &tr, &te, &e);
        CHECK(st != ENV2_OK);
        CHECK_MSG(strstr(e.msg, "test.bin") != NULL, "%s", e.msg);
        CHECK(tr.images == NULL && te.images == NULL);
    }
}

static void test_npy(void)
{
    enum { N = 12, NT = 5, H = 4, W = 3, C = 2 };
    uint8_t im[N * H * W * C];
    int64_t lb[N];
    int64_t sh4[4] = {N, H, W, C}, sh1[1] = {N};
    env2_dataset tr, te;
    env2_err e;
    env2_status st;
    char dir[512];
    memset(&tr, 0, sizeof tr);
    memset(&te, 0, sizeof te);
    make_subdir("npy");
    snprintf(dir, sizeof dir, "%s/npy", tmpdir);
    for (int i = 0; i < N; i++) {
        lb[i] = i % 4;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int c = 0; c < C; c++) im[((i * H + y) * W + x) * C + c] = pix(i, y, x, c);
    }
    lb[NT - 1] = 6; /* test split has the largest label: classes = 7 */
    write_npy("npy", "train_images.npy", "|u1", 4, sh4, im, 1);
    write_npy("npy", "train_labels.npy", "<i8", 1, sh1, lb, 8);
    sh4[0] = sh1[0] = NT;
    write_npy("npy", "test_images.npy", "|u1", 4, sh4, im, 1);
    write_npy("npy", "test_labels.npy", "<i8", 1, sh1, lb, 8);
    st = dataset_load("npy", dir, &tr, &te, &e);
    CHECK_MSG(st == ENV2_OK, "%s", e.msg);
    CHECK_EQ_INT(tr.n, N);
    CHECK_EQ_INT(te.n, NT);
    CHECK_EQ_INT(tr.c, C);
    CHECK_EQ_INT(tr.h * 10 + tr.w, H * 10 + W);
    CHECK_EQ_INT(tr.num_classes, 7);
    CHECK_EQ_INT(te.num_classes, 7);
    if (st == ENV2_OK) {
        CHECK(memcmp(tr.images, im, sizeof im) == 0);
        CHECK_EQ_INT(te.labels[NT - 1], 6);
    }
    dataset_free(&tr);
    dataset_free(&te);

    /* negative label: named by index */
    lb[2] = -1;
    sh1[0] = NT;
    write_npy("npy", "test_labels.npy", "<i8", 1, sh1, lb, 8);
    st = dataset_load("npy", dir, &tr, &te, &e);
    CHECK(st != ENV2_OK);
    CHECK_MSG(strstr(e.msg, "index 2") != NULL && strstr(e.msg, "test_labels.npy") != NULL, "%s", e.msg);
    lb[2] = 2;
    write_npy("npy", "test_labels.npy", "<i8", 1, sh1, lb, 8);

    /* images must be uint8 */
    {
        int32_t im32[NT * H * W];
        int64_t sh3[3] = {NT, H, W};
        memset(im32, 0, sizeof im32);
        write_npy("npy", "test_images.npy", "<i4", 3, sh3, im32, 4);
        st = dataset_load("npy", dir, &tr, &te, &e);
        CHECK(st == ENV2_E_DTYPE || st == ENV2_E_FORMAT);
        CHECK_MSG(strstr(e.msg, "test_images.npy") != NULL, "%s", e.msg);
    }
    /* channel count must match between the splits */
    {
        int64_t sh3[3] = {NT, H, W};
        write_npy("npy", "test_images.npy", "|u1", 3, sh3, im, 1);
        st = dataset_load("npy", dir, &tr, &te, &e);
        CHECK(st == ENV2_E_SHAPE);
        CHECK(tr.images == NULL && te.images == NULL);
    }
    /* the x_train / y_train naming, [N,H,W] images, labels given with one class only */
    {
        int64_t sh3[3] = {N, H, W * C};
        int32_t l32[N];
        for (int i = 0; i < N; i++) l32[i] = 0;
        sh1[0] = N;
        make_subdir("npy2");
        write_npy("npy2", "x_train.npy", "|u1", 3, sh3, im, 1);
        write_npy("npy2", "y_train.npy", "<i4", 1, sh1, l32, 4);
        sh3[0] = NT;
        write_npy("npy2", "x_test.npy", "|u1", 3, sh3, im, 1);
        sh1[0] = NT;
        write_npy("npy2", "y_test.npy", "<i4", 1, sh1, l32, 4);
        snprintf(dir, sizeof dir, "%s/npy2", tmpdir);
        st = dataset_load("npy", dir, &tr, &te, &e);
        CHECK_MSG(st == ENV2_OK, "%s", e.msg);
        CHECK_EQ_INT(tr.c, 1);
        CHECK_EQ_INT(tr.w, W * C);
        CHECK_EQ_INT(tr.num_classes, 1);
        dataset_free(&tr);
        dataset_free(&te);
        /* a labels file shorter than the images */
        write_npy("npy2", "y_test.npy", "<i4", 1, (int64_t[]){NT - 2}, l32, 4);
        st = dataset_load("npy", dir, &tr, &te, &e);
        CHECK(st == ENV2_E_SHAPE);
        CHECK_MSG(strstr(e.msg, "y_test.npy") != NULL, "%s", e.msg);
    }
}

/* In-memory dataset whose image i has pixels pix(i, ...) and label i % K. */
static void synth(env2_dataset *d, int64_t n, int h, int w, int c, int K)
{
    d->n = n;
    d->h = h;
    d->w = w;
    d->c = c;
    d->num_classes = K;
    d->images = env2_malloc((size_t)n * (size_t)(h * w * c));
    d->labels = env2_malloc((size_t)n * sizeof(int32_t));
    for (int64_t i = 0; i < n; i++) {
        d->labels[i] = (int32_t)(i % K);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int ch = 0; ch < c; ch++) d->images[(((size_t)i * h + y) * w + x) * c + ch] = pix(i, y, x, ch);
    }
}

static int is_permutation(const int64_t *p, int64_t n)
{
    char *seen = calloc((size_t)n, 1);
    int ok = 1;
    for (int64_t i = 0; i < n; i++) {
        if (p[i] < 0 || p[i] >= n || seen[p[i]]) ok = 0;
        else seen[p[i]] = 1;
    }
    free(seen);
    return ok;
}

static void test_shuffle_split(void)
{
    enum { N = 1000 };
    int64_t a[N], b[N], c[N];
    int same;
    env2_dataset full, tr, va, tr2, va2;
    env2_err e;
    env2_status st;

    dataset_epoch_order(a, N, 42, 3);
    CHECK(is_permutation(a, N));
    dataset_epoch_order(b, N, 42, 4);
    dataset_epoch_order(c, N, 42, 3); /* after another epoch: no hidden state */
    CHECK(memcmp(a, c, sizeof a) == 0);
    same = 0;
    for (int i = 0; i < N; i++) same += a[i] == b[i];
    CHECK_MSG(same < 30, "epochs 3 and 4 agree at %d places", same);
    dataset_epoch_order(b, N, 43, 3);
    same = 0;
    for (int i = 0; i < N; i++) same += a[i] == b[i];
    CHECK_MSG(same < 30, "seeds 42 and 43 agree at %d places", same);
    {
        /* not the identity, and every position reachable: the first element
         * takes many different values across epochs */
        int64_t p[8];
        int hits[8] = {0}, distinct = 0;
        for (int ep = 0; ep < 400; ep++) {
            dataset_epoch_order(p, 8, 1, ep);
            CHECK(ep > 3 || is_permutation(p, 8));
            hits[p[0]]++;
        }
        for (int i = 0; i < 8; i++) distinct += hits[i] > 20;
        CHECK_EQ_INT(distinct, 8);
    }
    dataset_epoch_order(a, 1, 5, 0);
    CHECK_EQ_INT(a[0], 0);

    memset(&full, 0, sizeof full);
    synth(&full, 300, 3, 2, 1, 5);
    /* make each image identifiable by its first two bytes */
    for (int i = 0; i < 300; i++) {
        full.images[(size_t)i * 6] = (uint8_t)(i & 255);
        full.images[(size_t)i * 6 + 1] = (uint8_t)(i >> 8);
    }
    st = dataset_split(&full, 40, 7, &tr, &va, &e);
    CHECK_MSG(st == ENV2_OK, "%s", e.msg);
    if (st == ENV2_OK) {
        char seen[300] = {0};
        int dup = 0, order = 1, lab = 0, prev = -1;
        CHECK_EQ_INT(tr.n, 260);
        CHECK_EQ_INT(va.n, 40);
        CHECK_EQ_INT(va.num_classes, 5);
        CHECK_EQ_INT(va.h * 100 + va.w * 10 + va.c, 321);
        for (int64_t i = 0; i < va.n; i++) {
            int id = va.images[i * 6] | va.images[i * 6 + 1] << 8;
            dup += seen[id]++;
            order &= id > prev;
            prev = id;
            lab += va.labels[i] != id % 5;
        }
        prev = -1;
        for (int64_t i = 0; i < tr.n; i++) {
            int id = tr.images[i * 6] | tr.images[i * 6 + 1] << 8;
            dup += seen[id]++;
            order &= id > prev;
            prev = id;
            lab += tr.labels[i] != id % 5;
        }
        CHECK_EQ_INT(dup, 0);  /* disjoint, and with the sizes: a partition */
        CHECK(order);          /* both keep the original order */
        CHECK_EQ_INT(lab, 0);
        st = dataset_split(&full, 40, 7, &tr2, &va2, &e);
        CHECK(st == ENV2_OK && memcmp(va.images, va2.images, 40 * 6) == 0);
        dataset_free(&tr2);
        dataset_free(&va2);
        st = dataset_split(&full, 40, 8, &tr2, &va2, &e);
        CHECK(st == ENV2_OK && memcmp(va.images, va2.images, 40 * 6) != 0);
        dataset_free(&tr2);
        dataset_free(&va2);
    }
    dataset_free(&tr);
    dataset_free(&va);
    CHECK(dataset_split(&full, 0, 7, &tr, &va, &e) == ENV2_E_INVALID_ARG);
    CHECK(dataset_split(&full, 300, 7, &tr, &va, &e) == ENV2_E_INVALID_ARG);
    CHECK_MSG(strstr(e.msg, "300") != NULL, "%s", e.msg);
    dataset_free(&full);
}

static int batches_equal(const data_batch *a, const data_batch *b)
{
    size_t img = (size_t)a->n * (size_t)a->size * (size_t)a->size * (size_t)a->c;
    if (a->n != b->n || a->size != b->size || a->c != b->c) return 0;
    if (memcmp(a->images, b->images, img * sizeof(float))) return 0;
    if (memcmp(a->labels, b->labels, (size_t)a->n * sizeof(int32_t))) return 0;
    if ((a->targets == NULL) != (b->targets == NULL)) return 0;
    if (a->targets && memcmp(a->targets, b->targets, (size_t)a->n * (size_t)a->num_classes * sizeof(float))) return 0;
    return 1;
}

/* Collects every batch of an epoch through a batcher into copies. */
static int run_epoch(const env2_dataset *d, const data_config *cfg, int prefetch, int64_t epoch, int64_t first,
                     data_batch *out, int max_out)
{
    batcher *bt = NULL;
    env2_err e;
    const data_batch *b;
    int k = 0;
    if (batcher_create(&bt, d, prefetch, &e) != ENV2_OK) return -1;
    if (batcher_begin(bt, cfg, epoch, first, &e) != ENV2_OK) {
        batcher_destroy(bt);
        return -1;
    }
    while (batcher_next(bt, &b, &e) == ENV2_OK && b && k < max_out) {
        data_batch_alloc(&out[k], d, cfg, &e);
        out[k].n = b->n;
        out[k].size = b->size;
        out[k].c = b->c;
        out[k].num_classes = b->num_classes;
        out[k].epoch = b->epoch;
        out[k].index = b->index;
        memcpy(out[k].images, b->images, (size_t)b->n * b->size * b->size * b->c * sizeof(float));
        memcpy(out[k].labels, b->labels, (size_t)b->n * sizeof(int32_t));
        out[k].targets = NULL;
        if (b->targets) {
            memcpy(out[k].target_buf, b->targets, (size_t)b->n * b->num_classes * sizeof(float));
            out[k].targets = out[k].target_buf;
        }
        k++;
    }
    batcher_destroy(bt);
    return k;
}

static void free_batches(data_batch *b, int n)
{
    for (int i = 0; i < n; i++) data_batch_free(&b[i]);
}

static void test_batches(void)
{
    env2_dataset d;
    data_config cfg;
    data_batch x, y, sync[8], pre[8], tail[8];
    env2_err e;
    env2_status st;
    void *scratch;
    int64_t perm[50];
    aug_config ac;
    int n1, n2, n3;

    memset(&d, 0, sizeof d);
    synth(&d, 50, 12, 10, 3, 4);
    data_config_default(&cfg, &d, 1);
    CHECK_EQ_INT(cfg.size, 12);
    cfg.batch_size = 8;
    cfg.size = 9;
    cfg.seed = 11;
    CHECK_EQ_INT(data_num_batches(&d, &cfg), 6); /* 50 / 8, last partial batch dropped */

    /* the same batch twice, synchronously */
    st = data_batch_alloc(&x, &d, &cfg, &e);
    CHECK_MSG(st == ENV2_OK, "%s", e.msg);
    st = data_batch_alloc(&y, &d, &cfg, &e);
    CHECK(st == ENV2_OK);
    scratch = malloc(data_scratch_size(&d, &cfg) + 1);
    dataset_epoch_order(perm, d.n, cfg.seed, 2);
    st = data_make_batch(&d, &cfg, perm, 2, 3, &x, scratch, &e);
    CHECK_MSG(st == ENV2_OK, "%s", e.msg);
    st = data_make_batch(&d, &cfg, perm, 2, 3, &y, scratch, &e);
    CHECK(st == ENV2_OK);
    CHECK(batches_equal(&x, &y));
    CHECK_EQ_INT(x.n, 8);
    CHECK(x.targets == NULL);
    {
        int bad = 0;
        for (int i = 0; i < 8; i++) bad += x.labels[i] != d.labels[perm[24 + i]];
        CHECK_EQ_INT(bad, 0);
    }
    /* another epoch gives another batch */
    dataset_epoch_order(perm, d.n, cfg.seed, 5);
    st = data_make_batch(&d, &cfg, perm, 5, 3, &y, scratch, &e);
    CHECK(st == ENV2_OK && !batches_equal(&x, &y));
    CHECK(data_make_batch(&d, &cfg, perm, 5, 6, &y, scratch, &e) == ENV2_E_INVALID_ARG);
    data_batch_free(&y);
    free(scratch);

    /* evaluation: dataset order, every image kept, the whole image resized
     * (at the native size: just normalized) */
    {
        data_config ev;
        env2_dataset sq;
        int bad = 0;
        double maxerr = 0;
        memset(&sq, 0, sizeof sq);
        synth(&sq, 20, 8, 8, 3, 4);
        data_config_default(&ev, &sq, 0);
        ev.batch_size = 6;
        CHECK_EQ_INT(ev.size, 8);
        CHECK_EQ_INT(data_num_batches(&sq, &ev), 4);
        scratch = malloc(data_scratch_size(&sq, &ev) + 1);
        st = data_batch_alloc(&y, &sq, &ev, &e);
        CHECK(st == ENV2_OK);
        st = data_make_batch(&sq, &ev, NULL, 0, 3, &y, scratch, &e);
        CHECK_MSG(st == ENV2_OK, "%s", e.msg);
        CHECK_EQ_INT(y.n, 2);
        aug_config_default(&ac, ev.size, sq.c);
        for (int i = 0; i < y.n && st == ENV2_OK; i++) {
            bad += y.labels[i] != sq.labels[18 + i];
            for (int yy = 0; yy < 8; yy++)
                for (int xx = 0; xx < 8; xx++)
                    for (int c = 0; c < 3; c++) {
                        float want = ((float)pix(18 + i, yy, xx, c) / 255.0f - ac.mean[c]) / ac.std[c];
                        float got = y.images[(((size_t)i * 8 + yy) * 8 + xx) * 3 + c];
                        if (fabs(got - want) > maxerr) maxerr = fabs(got - want);
                    }
        }
        CHECK_EQ_INT(bad, 0);
        CHECK_MSG(maxerr < 1e-4, "eval batch differs from the normalized image by %g", maxerr);
        data_batch_free(&y);
        dataset_free(&sq);
        free(scratch);
    }
    data_batch_free(&x);

    /* through the batcher: with and without the prefetch thread, identical */
    n1 = run_epoch(&d, &cfg, 0, 1, 0, sync, 8);
    n2 = run_epoch(&d, &cfg, 1, 1, 0, pre, 8);
    CHECK_EQ_INT(n1, 6);
    CHECK_EQ_INT(n2, 6);
    {
        int eq = 0;
        for (int i = 0; i < n1 && i < n2; i++) eq += batches_equal(&sync[i], &pre[i]) && pre[i].index == i;
        CHECK_EQ_INT(eq, 6);
    }
    /* starting mid-epoch (a resumed run) yields the same later batches */
    n3 = run_epoch(&d, &cfg, 1, 1, 4, tail, 8);
    CHECK_EQ_INT(n3, 2);
    CHECK(n3 == 2 && batches_equal(&tail[0], &sync[4]) && batches_equal(&tail[1], &sync[5]));
    CHECK(n3 == 2 && tail[0].index == 4);
    free_batches(tail, n3 > 0 ? n3 : 0);
    /* every image of the epoch appears once across its batches */
    {
        int64_t p[50];
        int bad = 0;
        dataset_epoch_order(p, 50, cfg.seed, 1);
        for (int b = 0; b < n1; b++)
            for (int i = 0; i < 8; i++) bad += sync[b].labels[i] != d.labels[p[b * 8 + i]];
        CHECK_EQ_INT(bad, 0);
    }
    free_batches(sync, n1 > 0 ? n1 : 0);
    free_batches(pre, n2 > 0 ? n2 : 0);

    /* with Mixup/CutMix: soft targets summing to one, still deterministic */
    cfg.mixup_alpha = 0.2f;
    cfg.cutmix_alpha = 1.0f;
    cfg.randaug_magnitude = 9;
    n1 = run_epoch(&d, &cfg, 0, 2, 0, sync, 8);
    n2 = run_epoch(&d, &cfg, 1, 2, 0, pre, 8);
    CHECK_EQ_INT(n1, 6);
    CHECK_EQ_INT(n2, 6);
    {
        int eq = 0, sum_ok = 1;
        for (int i = 0; i < n1 && i < n2; i++) eq += batches_equal(&sync[i], &pre[i]);
        CHECK_EQ_INT(eq, 6);
        for (int i = 0; i < n1; i++) {
            CHECK(sync[i].targets != NULL);
            for (int r = 0; r < sync[i].n && sync[i].targets; r++) {
                double s = 0;
                for (int k = 0; k < 4; k++) s += sync[i].targets[r * 4 + k];
                if (fabs(s - 1) > 1e-4) sum_ok = 0;
            }
        }
        CHECK(sum_ok);
    }
    free_batches(sync, n1 > 0 ? n1 : 0);
    free_batches(pre, n2 > 0 ? n2 : 0);

    /* evaluation through the batcher keeps the last partial batch */
    {
        data_config ev;
        data_config_default(&ev, &d, 0);
        ev.batch_size = 16;
        ev.size = 7;
        ev.mixup_alpha = 0.5f; /* ignored in evaluation */
        n1 = run_epoch(&d, &ev, 1, 0, 0, sync, 8);
        CHECK_EQ_INT(n1, 4);
        CHECK(n1 == 4 && sync[3].n == 2 && sync[0].n == 16 && sync[3].targets == NULL);
        CHECK(n1 == 4 && sync[3].labels[1] == d.labels[49]);
        free_batches(sync, n1 > 0 ? n1 : 0);
        ev.max_batches = 2;
        CHECK_EQ_INT(data_num_batches(&d, &ev), 2);
    }
    dataset_free(&d);
}

static void test_prefetch_shutdown(void)
{
    env2_dataset d;
    data_config cfg;
    batcher *bt = NULL;
    const data_batch *b = NULL;
    env2_err e;
    env2_status st;
    float first[4];

    memset(&d, 0, sizeof d);
    synth(&d, 400, 32, 32, 3, 10);
    data_config_default(&cfg, &d, 1);
    cfg.batch_size = 32;
    cfg.size = 48;
    cfg.seed = 3;
    cfg.randaug_magnitude = 10;
    st = batcher_create(&bt, &d, 1, &e);
    CHECK_MSG(st == ENV2_OK, "%s", e.msg);
    CHECK(batcher_next(bt, &b, &e) == ENV2_E_STATE); /* no epoch yet */
    st = batcher_begin(bt, &cfg, 0, 0, &e);
    CHECK(st == ENV2_OK);
    CHECK_EQ_INT(batcher_num_batches(bt), 12);
    st = batcher_next(bt, &b, &e);
    CHECK(st == ENV2_OK && b && b->index == 0);
    if (b) memcpy(first, b->images, sizeof first);
    st = batcher_next(bt, &b, &e);
    CHECK(st == ENV2_OK && b && b->index == 1);
    /* abandon the epoch mid-way (the thread is busy with batch 2), start
     * another at a larger size, then go back: same content as before */
    cfg.size = 64;
    st = batcher_begin(bt, &cfg, 1, 0, &e);
    CHECK(st == ENV2_OK);
    st = batcher_next(bt, &b, &e);
    CHECK(st == ENV2_OK && b && b->size == 64 && b->epoch == 1);
    cfg.size = 48;
    st = batcher_begin(bt, &cfg, 0, 0, &e);
    st = batcher_next(bt, &b, &e);
    CHECK(st == ENV2_OK && b && memcmp(first, b->images, sizeof first) == 0);
    batcher_end(bt);
    CHECK(batcher_next(bt, &b, &e) == ENV2_E_STATE);
    /* begin and destroy at once, while the thread is inside a batch */
    st = batcher_begin(bt, &cfg, 2, 3, &e);
    CHECK(st == ENV2_OK);
    batcher_destroy(bt);
    bt = NULL;
    batcher_destroy(NULL);

    /* invalid epoch configurations are refused before any thread starts */
    st = batcher_create(&bt, &d, 1, &e);
    CHECK(st == ENV2_OK);
    cfg.batch_size = 401;
    CHECK(batcher_begin(bt, &cfg, 0, 0, &e) == ENV2_E_INVALID_ARG);
    CHECK_MSG(strstr(e.msg, "401") != NULL, "%s", e.msg);
    cfg.batch_size = 32;
    CHECK(batcher_begin(bt, &cfg, 0, 13, &e) == ENV2_E_INVALID_ARG);
    cfg.randaug_magnitude = 31;
    CHECK(batcher_begin(bt, &cfg, 0, 0, &e) == ENV2_E_INVALID_ARG);
    cfg.randaug_magnitude = 0;
    /* an epoch begun at its end is simply empty */
    CHECK(batcher_begin(bt, &cfg, 0, 12, &e) == ENV2_OK);
    CHECK(batcher_next(bt, &b, &e) == ENV2_OK && b == NULL);
    batcher_destroy(bt);

    /* allocation failures are reported and leave nothing behind */
    for (long k = 0; k < 12; k++) {
        bt = NULL;
        env2_fail_alloc_after = k;
        st = batcher_create(&bt, &d, 1, &e);
        if (st == ENV2_OK) st = batcher_begin(bt, &cfg, 0, 0, &e);
        env2_fail_alloc_after = -1;
        if (st != ENV2_OK) CHECK(st == ENV2_E_NOMEM);
        if (st == ENV2_OK) {
            st = batcher_next(bt, &b, &e);
            CHECK(st == ENV2_OK && b != NULL);
        }
        batcher_destroy(bt);
    }
    dataset_free(&d);
}


/* ---- the commands ---------------------------------------------------------- */

typedef int (*cmd_fn)(int, char **);

static int run_cmd(cmd_fn fn, const char *fmt, ...) ENV2_PRINTF(2, 3);
static int run_cmd(cmd_fn fn, const char *fmt, ...)
{
    char line[2048], *argv[64];
    int argc = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    for (char *t = strtok(line, " "); t && argc < 63; t = strtok(NULL, " ")) argv[argc++] = t;
    argv[argc] = NULL;
    fflush(stdout);
    return fn(argc, argv);
}

/* run_cmd with stdout sent to the file out */
static int run_cmd_to(const char *out, cmd_fn fn, const char *arg1, const char *arg2)
{
    char line[2048];
    fflush(stdout);
    int saved = dup(1), fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (saved < 0 || fd < 0) return -1;
    dup2(fd, 1);
    close(fd);
    snprintf(line, sizeof line, "%s%s", arg1, arg2);
    int rc = run_cmd(fn, "%s", line);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    return rc;
}

static long file_size(const char *p)
{
    FILE *f = fopen(p, "rb");
    long n;
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fclose(f);
    return n;
}

static char *slurp(const char *p)
{
    long n = file_size(p);
    FILE *f;
    char *b;
    if (n < 0 || !(f = fopen(p, "rb"))) return NULL;
    b = calloc((size_t)n + 1, 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) b[0] = '\0';
    fclose(f);
    return b;
}

/* metrics.jsonl without the timing fields, which differ between runs */
static char *metrics_sans_timing(const char *p)
{
    char *b = slurp(p), *o, *w;
    if (!b) return NULL;
    o = w = b;
    while (*o) {
        char *t = strstr(o, ",\"wall_s\"");
        char *nl = strchr(o, '\n');
        if (!nl) nl = o + strlen(o);
        if (t && t < nl) {
            memmove(w, o, (size_t)(t - o));
            w += t - o;
        } else {
            memmove(w, o, (size_t)(nl - o));
            w += nl - o;
        }
        if (*nl) *w++ = '\n';
        o = *nl ? nl + 1 : nl;
    }
    *w = '\0';
    return b;
}

static int count_lines(const char *p)
{
    char *b = slurp(p);
    int n = 0;
    if (!b) return -1;
    for (char *q = b; *q; q++) n += *q == '\n';
    free(b);
    return n;
}

static int same_file(const char *a, const char *b)
{
    long na = file_size(a), nb = file_size(b);
    char *x, *y;
    int same;
    if (na < 0 || na != nb) return 0;
    x = slurp(a);
    y = slurp(b);
    same = x && y && memcmp(x, y, (size_t)na) == 0;
    free(x);
    free(y);
    return same;
}

/* A run with `opts`, the same run stopped after step `stop` and resumed
 * without repeating them: the two end bit-identical (what the options
 * change is part of the stored run), and differ from the model `other`. */
static void check_resumed_run(const char *common, const char *data, const char *name, const char *opts, int stop,
                              const char *other)
{
    char r1[600], r2[600], m1[700], m2[700];
    snprintf(r1, sizeof r1, "%s/run_%s1", tmpdir, name);
    snprintf(r2, sizeof r2, "%s/run_%s2", tmpdir, name);
    CHECK_EQ_INT(run_cmd(cmd_train, "train %s --data-dir %s --out %s %s", common, data, r1, opts), 0);
    CHECK_EQ_INT(run_cmd(cmd_train, "train %s --data-dir %s --out %s %s --stop-after %d", common, data, r2, opts, stop),
                 130);
    CHECK_EQ_INT(run_cmd(cmd_train, "train --resume --out %s --quiet", r2), 0);
    snprintf(m1, sizeof m1, "%s/model.safetensors", r1);
    snprintf(m2, sizeof m2, "%s/model.safetensors", r2);
    CHECK_MSG(file_size(m1) > 0 && same_file(m1, m2), "%s: stopped at step %d and resumed differs", opts, stop);
    CHECK_MSG(!same_file(m1, other), "%s: the same model as %s", opts, other);
}

static void test_commands(void)
{
    enum { N = 96, NT = 24, S = 12 };
    static uint8_t im[N * S * S];
    int64_t lb[N], sh3[3] = {N, S, S}, sh1[1] = {N};
    char data[512], a[512], b[512], c[512], p1[600], p2[600];
    const char *common = "--data npy --arch r1_k3_s1_e1_i8_o8_c1,r1_k3_s2_e2_i8_o16_se0.25 --stem 8 --head 16 "
                         "--epochs 3 --batch 8 --max-steps 4 --size-start 8 --size-end 12 --randaug-end 4 "
                         "--mixup-end 0.2 --cutmix-end 0.3 --ema 0.9 --val-split 16 --seed 5 --threads 1 --quiet";
    int rc;
    char *ma, *mb;

    make_subdir("cli");
    snprintf(data, sizeof data, "%s/cli", tmpdir);
    for (int i = 0; i < N; i++) {
        lb[i] = i % 3;
        for (int k = 0; k < S * S; k++) im[i * S * S + k] = (uint8_t)(k * (1 + i % 3) * 37 + i);
    }
    write_npy("cli", "train_images.npy", "|u1", 3, sh3, im, 1);
    write_npy("cli", "train_labels.npy", "<i8", 1, sh1, lb, 8);
    sh3[0] = sh1[0] = NT;
    write_npy("cli", "test_images.npy", "|u1", 3, sh3, im, 1);
    write_npy("cli", "test_labels.npy", "<i8", 1, sh1, lb, 8);
    snprintf(a, sizeof a, "%s/run_a", tmpdir);
    snprintf(b, sizeof b, "%s/run_b", tmpdir);
    snprintf(c, sizeof c, "%s/run_c", tmpdir);

    rc = run_cmd(cmd_train, "train %s --data-dir %s --out %s", common, data, a);
    CHECK_EQ_INT(rc, 0);
    snprintf(p1, sizeof p1, "%s/metrics.jsonl", a);
    CHECK_EQ_INT(count_lines(p1), 3);
    ma = slurp(p1);
    CHECK(ma && strstr(ma, "\"epoch\":3,\"step\":12,\"stage\":3,\"size\":12") && strstr(ma, "\"val_acc\":") &&
          strstr(ma, "\"size\":8"));
    /* without --eval-stage-size every epoch is judged at the final size */
    CHECK(ma && strstr(ma, "\"epoch\":1,") && !strstr(ma, "\"eval_size\":8"));
    free(ma);
    snprintf(p2, sizeof p2, "%s/run_e", tmpdir);
    CHECK_EQ_INT(run_cmd(cmd_train, "train %s --data-dir %s --out %s --eval-stage-size", common, data, p2), 0);
    snprintf(p1, sizeof p1, "%s/run_e/metrics.jsonl", tmpdir);
    ma = slurp(p1);
    /* stage 1 trains and is judged at 8, the last stage at the final 12 */
    CHECK(ma && strstr(ma, "\"size\":8,") && strstr(ma, "\"eval_size\":8,") &&
          strstr(ma, "\"stage\":3,\"size\":12,") && strstr(strstr(ma, "\"epoch\":3,"), "\"eval_size\":12,"));
    free(ma);
    snprintf(p1, sizeof p1, "%s/model.safetensors", a);
    CHECK(file_size(p1) > 0);
    /* RandAugment amounts relative to a 224 px reference: a different run (Translate moves
     * 12 px images by ~2 pixels instead of 40), same length; a negative reference is a usage error */
    snprintf(p2, sizeof p2, "%s/run_r", tmpdir);
    CHECK_EQ_INT(run_cmd(cmd_train, "train %s --data-dir %s --out %s --randaug-ref-size 224", common, data, p2), 0);
    {
        char mr[600];
        snprintf(mr, sizeof mr, "%s/run_r/model.safetensors", tmpdir);
        CHECK(file_size(mr) > 0 && !same_file(p1, mr));
        snprintf(mr, sizeof mr, "%s/run_r/metrics.jsonl", tmpdir);
        CHECK_EQ_INT(count_lines(mr), 3);
    }
    snprintf(p2, sizeof p2, "%s/run_r2", tmpdir);
    CHECK_EQ_INT(run_cmd(cmd_train, "train %s --data-dir %s --out %s --randaug-ref-size -1", common, data, p2), 2);
    snprintf(p2, sizeof p2, "%s/run_k", tmpdir);
    CHECK_EQ_INT(run_cmd(cmd_train, "train %s --data-dir %s --out %s --keep-activations always", common, data, p2), 2);
    /* a second run into the same directory is refused */
    CHECK_EQ_INT(run_cmd(cmd_train, "train %s --data-dir %s --out %s", common, data, a), 1);
    /* so is resuming a finished run */
    CHECK_EQ_INT(run_cmd(cmd_train, "train --resume --out %s --quiet", a), 1);

    /* interrupted in the middle of epoch 2 (as by Ctrl-C), then resumed:
     * the same metrics and bit-identical weights as the uninterrupted run */
    rc = run_cmd(cmd_train, "train %s --data-dir %s --out %s --stop-after 6", common, data, b);
    CHECK_EQ_INT(rc, 130);
    snprintf(p1, sizeof p1, "%s/metrics.jsonl", b);
    CHECK_EQ_INT(count_lines(p1), 1);
    snprintf(p2, sizeof p2, "%s/model.safetensors", b);
    CHECK(file_size(p2) < 0);
    /* resuming with another configuration is refused and changes nothing */
    {
        char ck[600];
        char *before;
        snprintf(ck, sizeof ck, "%s/checkpoint.safetensors", b);
        before = slurp(ck);
        CHECK_EQ_INT(run_cmd(cmd_train, "train --resume --out %s --batch 16 --quiet", b), 1);
        /* the convolution path is part of the run too */
        CHECK_EQ_INT(run_cmd(cmd_train, "train --resume --out %s --no-winograd --quiet", b), 1);
        ma = slurp(ck);
        CHECK(before && ma && file_size(ck) > 0 && memcmp(before, ma, (size_t)file_size(ck)) == 0);
        free(before);
        free(ma);
    }
    /* resumed with backward recomputing the layer outputs (run a kept them,
     * the auto setting at this size): still the same bits */
    rc = run_cmd(cmd_train, "train --resume --out %s --quiet --keep-activations off", b);
    CHECK_EQ_INT(rc, 0);
    snprintf(p1, sizeof p1, "%s/model.safetensors", a);
    CHECK(same_file(p1, p2));
    snprintf(p1, sizeof p1, "%s/metrics.jsonl", a);
    snprintf(p2, sizeof p2, "%s/metrics.jsonl", b);
    ma = metrics_sans_timing(p1);
    mb = metrics_sans_timing(p2);
    CHECK_MSG(ma && mb && !strcmp(ma, mb), "\n%s\nvs\n%s", ma ? ma : "(none)", mb ? mb : "(none)");
    free(ma);
    free(mb);

    /* --no-winograd: the exact im2col path for the 3x3 stride-1 convolution
     * in training too, so another model; stored in the checkpoint, so a
     * resumed run keeps it without being told and ends bit-identical */
    snprintf(p1, sizeof p1, "%s/model.safetensors", a);
    check_resumed_run(common, data, "w", "--no-winograd", 6, p1);

    /* --ema-restart: every epoch here is a stage, so the average restarts at
     * steps 4 and 8; stopped at step 10 (in the last stage, after a restart)
     * and resumed, the run ends bit-identical to the uninterrupted one (the
     * restart step is in the checkpoint), and the saved average differs from
     * run a's.  --ema-restart without --ema is a usage error. */
    check_resumed_run(common, data, "r", "--ema-restart", 10, p1);
    CHECK_EQ_INT(run_cmd(cmd_train, "train --data npy --data-dir %s --out %s/run_r3 --ema-restart", data, tmpdir), 2);

    /* a bad checkpoint: --resume fails and leaves the directory as it was */
    mkdir(c, 0700);
    snprintf(p1, sizeof p1, "%s/checkpoint.safetensors", c);
    {
        FILE *f = fopen(p1, "wb");
        if (f) {
            /* header length 16, but only 5 header bytes follow */
            fwrite("\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":", 1, 13, f);
            fclose(f);
        }
    }
    CHECK_EQ_INT(run_cmd(cmd_train, "train --resume --out %s --quiet", c), 1);
    CHECK_EQ_INT(file_size(p1), 13);
    snprintf(p2, sizeof p2, "%s/metrics.jsonl", c);
    CHECK(file_size(p2) < 0);

    /* eval, predict, schedule and usage errors */
    snprintf(p1, sizeof p1, "%s/model.safetensors", a);
    CHECK_EQ_INT(run_cmd(cmd_eval, "eval --model %s --data npy --data-dir %s --batch 5", p1, data), 0);
    CHECK_EQ_INT(run_cmd(cmd_eval, "eval --model %s --data npy --data-dir %s/nowhere", p1, data), 1);
    CHECK_EQ_INT(run_cmd(cmd_eval, "eval --data npy"), 2);
    snprintf(p2, sizeof p2, "%s/test_images.npy", data);
    CHECK_EQ_INT(run_cmd(cmd_predict, "predict --model %s --input %s --top 2 --batch 7", p1, p2), 0);
    {
        /* the checkpoint predicts with its EMA weights, as the saved model
         * (the average) does: same classes and probabilities */
        char ck[600], args[1400], o1[600], o2[600];
        snprintf(ck, sizeof ck, "%s/checkpoint.safetensors", a);
        snprintf(o1, sizeof o1, "%s/pred_model.txt", tmpdir);
        snprintf(o2, sizeof o2, "%s/pred_ckpt.txt", tmpdir);
        snprintf(args, sizeof args, " --input %s --top 3", p2);
        char model_arg[700], ck_arg[700];
        snprintf(model_arg, sizeof model_arg, "predict --model %s", p1);
        snprintf(ck_arg, sizeof ck_arg, "predict --model %s", ck);
        CHECK_EQ_INT(run_cmd_to(o1, cmd_predict, model_arg, args), 0);
        CHECK_EQ_INT(run_cmd_to(o2, cmd_predict, ck_arg, args), 0);
        CHECK(file_size(o1) > 0 && same_file(o1, o2));
        CHECK_EQ_INT(run_cmd(cmd_eval, "eval --model %s --data npy --data-dir %s", ck, data), 0);
    }
    snprintf(p2, sizeof p2, "%s/test_labels.npy", data);
    CHECK_EQ_INT(run_cmd(cmd_predict, "predict --model %s --input %s", p1, p2), 1);
    CHECK_EQ_INT(run_cmd(cmd_schedule, "schedule official-s --epochs 350"), 0);
    CHECK_EQ_INT(run_cmd(cmd_schedule, "schedule linear --epochs 8 --size-start 16 --size-end 32 --stages 3"), 0);
    CHECK_EQ_INT(run_cmd(cmd_schedule, "schedule nonsense --epochs 10"), 2);
    CHECK_EQ_INT(run_cmd(cmd_schedule, "schedule official-s --epochs 2 --stages 3"), 2);
    CHECK_EQ_INT(run_cmd(cmd_train, "train --data npy --epochs zero"), 2);
    CHECK_EQ_INT(run_cmd(cmd_train, "train --data npy --no-such-option"), 2);
    CHECK_EQ_INT(run_cmd(cmd_train, "train --data npy --data-dir %s --out %s/run_d --optimizer adam", data, tmpdir), 2);
    CHECK_EQ_INT(run_cmd(cmd_train, "train --data npy --data-dir %s --out %s/run_d --val-split 96", data, tmpdir), 2);
    snprintf(p1, sizeof p1, "%s/run_d", tmpdir);
    CHECK(file_size(p1) < 0); /* usage errors create nothing */
}

static void cleanup(void)
{
    static const char *subs[] = {"idx", "c10/cifar-10-batches-bin", "c10", "c100", "npy", "npy2", "cli",
                                 "run_a", "run_b", "run_c"};
    static const char *outs[] = {"checkpoint.safetensors", "metrics.jsonl", "model.safetensors"};
    for (int i = 0; i < ncreated; i++) remove(created[i]);
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++) {
            char p[600];
            snprintf(p, sizeof p, "%s/run_%c/%s", tmpdir, 'a' + i, outs[k]);
            remove(p);
        }
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/%s", tmpdir, subs[i]);
        rmdir(p);
    }
    rmdir(tmpdir);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/env2_data_" "XX" "XXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_idx();
    test_cifar();
    test_npy();
    test_shuffle_split();
    test_batches();
    test_prefetch_shutdown();
    test_commands();
    cleanup();
    return test_summary();
}
