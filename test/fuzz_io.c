/* libFuzzer entry point for the file-format readers (built by hand, not by
 * make):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_POSIX_C_SOURCE=200809L \
 *       -Iinclude -Isrc -Isrc/core test/fuzz_io.c $(ls src/io/[a-z]*.c) src/core/common.c -lm -o fuzz_io
 *   ./fuzz_io -max_len=4096 corpus/
 * The first input byte picks the reader; the rest is its input.  Every
 * reader must return a status without crashing, leaking or touching memory
 * outside the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"

static void fuzz_st(const uint8_t *d, size_t n)
{
    st_file f;
    env2_err e;
    if (st_open_memory(&f, d, n, &e) != ENV2_OK) return;
    for (int i = 0; i < f.count; i++) {
        const st_tensor *t = &f.tensors[i];
        if (st_find(&f, t->name) == NULL) abort();
        size_t cnt = (size_t)st_numel(t);
        if (cnt > (1u << 20)) continue;
        float *fl = malloc(cnt * sizeof(float) + 1);
        int64_t *il = malloc(cnt * sizeof(int64_t) + 1);
        if (fl && il) {
            st_read_f32(&f, t, fl, cnt, &e);
            st_read_i64(&f, t, il, cnt, &e);
        }
        free(fl);
        free(il);
    }
    for (int i = 0; i < f.nmeta; i++)
        if (st_meta(&f, f.meta_keys[i]) == NULL) abort();
    st_close(&f);
}

static void fuzz_npy(const uint8_t *d, size_t n)
{
    npy_array a;
    env2_err e;
    float *f = NULL;
    int32_t *i = NULL;
    if (npy_load_memory(d, n, &a, &e) != ENV2_OK) return;
    if (npy_to_f32(&a, &f, &e) == ENV2_OK) env2_free(f);
    if (npy_to_i32(&a, &i, &e) == ENV2_OK) env2_free(i);
    npy_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned sel = data[0] % 7;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    /* a private copy so reads past n are caught by ASan */
    uint8_t *c = malloc(n ? n : 1);
    if (!c) return 0;
    if (n) memcpy(c, d, n);
    env2_err e;
    unsigned char *out;
    size_t outlen;
    switch (sel) {
    case 0: fuzz_st(c, n); break;
    case 1: fuzz_npy(c, n); break;
    case 2:
        if (io_gunzip(c, n, &out, &outlen, &e) == ENV2_OK) env2_free(out);
        break;
    case 3:
        if (io_inflate(c, n, NULL, &out, &outlen, &e) == ENV2_OK) env2_free(out);
        break;
    case 4: {
        idx_array a;
        if (idx_load_memory(c, n, &a, &e) == ENV2_OK) idx_free(&a);
        break;
    }
    case 5: {
        uint8_t *im;
        int32_t *lb;
        int64_t cnt;
        if (cifar_load_memory(c, n, n & 1, &im, &lb, &cnt, &e) == ENV2_OK) {
            env2_free(im);
            env2_free(lb);
        }
        break;
    }
    default: {
        json_reader r;
        if (json_reader_init(&r, (const char *)c, n, &e) == ENV2_OK) {
            if (json_skip_value(&r, &e) == ENV2_OK) json_end(&r, &e);
            json_reader_free(&r);
        }
        break;
    }
    }
    free(c);
    return 0;
}
