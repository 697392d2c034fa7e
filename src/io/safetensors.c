/* safetensors reader and writer.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON mapping
 * tensor names to {"dtype", "shape", "data_offsets"} (plus an optional
 * "__metadata__" string map), then the data section.  As in the reference
 * implementation, the tensors must tile the data section exactly: no
 * overlap, no gap, no trailing bytes; anything else means the file was
 * damaged or forged.
 *
 * Tensor data is not copied on open; readers convert on demand.  All
 * multi-byte values are read byte by byte (little-endian) so unaligned
 * offsets and big-endian hosts both work. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"

static const struct {
    const char *name;
    size_t size;
} dtype_info[ST_NUM_DTYPES] = {
    [ST_F32] = {"F32", 4},   [ST_F16] = {"F16", 2},         [ST_BF16] = {"BF16", 2},
    [ST_F64] = {"F64", 8},   [ST_I64] = {"I64", 8},         [ST_I32] = {"I32", 4},
    [ST_U8] = {"U8", 1},     [ST_I8] = {"I8", 1},           [ST_I16] = {"I16", 2},
    [ST_U16] = {"U16", 2},   [ST_U32] = {"U32", 4},         [ST_U64] = {"U64", 8},
    [ST_BOOL] = {"BOOL", 1}, [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E5M2] = {"F8_E5M2", 1},
};

size_t st_dtype_size(int dtype) { return dtype >= 0 && dtype < ST_NUM_DTYPES ? dtype_info[dtype].size : 0; }

const char *st_dtype_name(int dtype) { return dtype >= 0 && dtype < ST_NUM_DTYPES ? dtype_info[dtype].name : "?"; }

static int dtype_from_name(const char *s)
{
    for (int i = 0; i < ST_NUM_DTYPES; i++)
        if (strcmp(s, dtype_info[i].name) == 0) return i;
    return -1;
}

static int host_is_le(void)
{
    const uint16_t one = 1;
    unsigned char c;
    memcpy(&c, &one, 1);
    return c == 1;
}

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* ---- 16-bit float conversions -------------------------------------------- */

float st_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
    if (exp == 0) {
        if (mant == 0) return bits_f32(sign);
        /* subnormal: renormalize; every half subnormal is a float normal */
        uint32_t e = 113;
        while (!(mant & 0x400u)) {
            mant <<= 1;
            e--;
        }
        return bits_f32(sign | e << 23 | (mant & 0x3FFu) << 13);
    }
    if (exp == 31) return bits_f32(sign | 0x7F800000u | mant << 13); /* inf, NaN with its payload */
    return bits_f32(sign | (exp + 112) << 23 | mant << 13);
}

float st_bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

uint16_t st_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f), sign = (x >> 16) & 0x8000u;
    x &= 0x7FFFFFFFu;
    if (x >= 0x7F800000u) return (uint16_t)(sign | (x > 0x7F800000u ? 0x7E00u : 0x7C00u));
    if (x >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u); /* >= 65520 rounds to inf */
    if (x < 0x38800000u) {                                   /* below 2^-14: half subnormal or zero */
        if (x <= 0x33000000u) return (uint16_t)sign;         /* <= 2^-25 rounds (to even) to zero */
        uint32_t exp = x >> 23, mant = (x & 0x7FFFFFu) | 0x800000u, shift = 126 - exp;
        uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t h = (x >> 13) - (112u << 10), rem = x & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* a carry into the exponent is still right */
    return (uint16_t)(sign | h);
}

uint16_t st_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x0040u);
    x += 0x7FFFu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* ---- parsing --------------------------------------------------------------- */

void st_close(st_file *f)
{
    if (!f) return;
    if (f->owns_buf) env2_free(f->buf);
    env2_free(f->tensors);
    env2_free(f->meta_keys);
    env2_free(f->meta_vals);
    env2_free(f->strings_);
    env2_free(f->by_name_);
    memset(f, 0, sizeof *f);
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

static int cmp_tensor_offset(const void *a, const void *b)
{
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void shape_text(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int d = 0; d < ndim && o < n; d++) {
        int k = snprintf(buf + o, n - o, "%s%lld", d ? ", " : "", (long long)shape[d]);
        if (k < 0) break;
        o += (size_t)k;
    }
}

/* Reads an array of non-negative integers; *n in: capacity, out: count. */
static env2_status read_uint_array(json_reader *r, int64_t *vals, int *n, int cap, const char *tname, const char *what,
                                   env2_err *e)
{
    env2_status st;
    int idx = 0, has, count = 0;
    if (json_peek(r) != JSON_ARRAY)
        return env2_fail(e, ENV2_E_FORMAT, "tensor '%s': \"%s\" is not an array (header byte %zu)", tname, what, r->pos);
    if ((st = json_begin_array(r, e))) return st;
    for (;;) {
        if ((st = json_next_element(r, &idx, &has, e))) return st;
        if (!has) break;
        int64_t v;
        if (json_peek(r) != JSON_NUMBER)
            return env2_fail(e, ENV2_E_FORMAT, "tensor '%s': \"%s\" holds a non-number (header byte %zu)", tname, what,
                             r->pos);
        if ((st = json_read_int64(r, &v, e))) return env2_err_prefix(e, st, "tensor '%s': \"%s\"", tname, what);
        if (v < 0) return env2_fail(e, ENV2_E_FORMAT, "tensor '%s': negative value %lld in \"%s\"", tname, (long long)v, what);
        if (count >= cap) {
            if (cap == ST_MAX_DIMS)
                return env2_fail(e, ENV2_E_UNSUPPORTED, "tensor '%s': more than %d dimensions", tname, ST_MAX_DIMS);
            return env2_fail(e, ENV2_E_FORMAT, "tensor '%s': \"%s\" has more than %d values", tname, what, cap);
        }
        vals[count++] = v;
    }
    *n = count;
    return ENV2_OK;
}

static env2_status parse_tensor(json_reader *r, st_tensor *t, const char *name, size_t data_len, env2_err *e)
{
    env2_status st;
    int idx = 0, has, seen_dtype = 0, seen_shape = 0, seen_off = 0, n;
    int64_t off[2];
    const char *key;
    memset(t, 0, sizeof *t);
    t->name = (char *)name;
    if (json_peek(r) != JSON_OBJECT)
        return env2_fail(e, ENV2_E_FORMAT, "tensor '%s': entry is not a JSON object (header byte %zu)", name, r->pos);
    if ((st = json_begin_object(r, e))) return st;
    for (;;) {
        if ((st = json_next_member(r, &idx, &has, &key, e))) return st;
        if (!has) break;
        if (strcmp(key, "dtype") == 0) {
            const char *ds;
            if (seen_dtype++) return env2_fail(e, ENV2_E_FORMAT, "tensor '%s': duplicate key \"dtype\"", name);
            if (json_peek(r) != JSON_STRING)
                return env2_fail(e, ENV2_E_FORMAT, "tensor '%s': \"dtype\" is not a string", name);
            if ((st = json_read_string(r, &ds, NULL, e))) return st;
            t->dtype = dtype_from_name(ds);
            if (t->dtype < 0) return env2_fail(e, ENV2_E_DTYPE, "tensor '%s': unknown dtype \"%.32s\"", name, ds);
        } else if (strcmp(key, "shape") == 0) {
            if (seen_shape++) return env2_fail(e, ENV2_E_FORMAT, "tensor '%s': duplicate key \"shape\"", name);
            if ((st = read_uint_array(r, t->shape, &t->ndim, ST_MAX_DIMS, name, "shape", e))) return st;
        } else if (strcmp(key, "data_offsets") == 0) {
            if (seen_off++) return env2_fail(e, ENV2_E_FORMAT, "tensor '%s': duplicate key \"data_offsets\"", name);
            if ((st = read_uint_array(r, off, &n, 2, name, "data_offsets", e))) return st;
            if (n != 2)
                return env2_fail(e, ENV2_E_FORMAT, "tensor '%s': \"data_offsets\" needs 2 values, found %d", name, n);
        } else {
            /* unknown keys are tolerated, as in the reference reader */
            if ((st = json_skip_value(r, e))) return st;
        }
    }
    if (!seen_dtype || !seen_shape || !seen_off)
        return env2_fail(e, ENV2_E_FORMAT, "tensor '%s': missing \"%s\"", name,
                         !seen_dtype ? "dtype" : !seen_shape ? "shape" : "data_offsets");
    if (off[0] > off[1])
        return env2_fail(e, ENV2_E_FORMAT, "tensor '%s': data_offsets [%lld, %lld] end before they begin", name,
                         (long long)off[0], (long long)off[1]);
    if ((uint64_t)off[1] > (uint64_t)data_len)
        return env2_fail(e, ENV2_E_FORMAT,
                         "tensor '%s': data_offsets [%lld, %lld] out of range: the data section has %zu bytes "
                         "(file truncated?)",
                         name, (long long)off[0], (long long)off[1], data_len);
    /* element count and byte size with overflow checks: both must fit the
     * span, which is at most data_len */
    uint64_t numel = 1, esize = dtype_info[t->dtype].size, span = (uint64_t)(off[1] - off[0]);
    int overflow = 0;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t s = (uint64_t)t->shape[d];
        if (s && numel > UINT64_MAX / s) overflow = 1;
        else numel *= s;
    }
    if (!overflow && numel > UINT64_MAX / esize) overflow = 1;
    if (overflow || numel * esize != span || numel > (uint64_t)INT64_MAX) {
        char sh[128];
        shape_text(sh, sizeof sh, t->ndim, t->shape);
        if (overflow)
            return env2_fail(e, ENV2_E_FORMAT, "tensor '%s': shape [%s] is too large", name, sh);
        return env2_fail(e, ENV2_E_FORMAT,
                         "tensor '%s': shape [%s] of %s needs %llu bytes but data_offsets [%lld, %lld] span %llu (size mismatch)",
                         name, sh, dtype_info[t->dtype].name, (unsigned long long)(numel * esize), (long long)off[0],
                         (long long)off[1], (unsigned long long)span);
    }
    t->offset = (size_t)off[0];
    t->nbytes = (size_t)span;
    return ENV2_OK;
}

static env2_status grow_array(void **p, int *cap, int need, size_t elem, env2_err *e)
{
    if (need <= *cap) return ENV2_OK;
    if (*cap > INT_MAX / 2) return env2_fail(e, ENV2_E_FORMAT, "safetensors: too many header entries");
    int nc = *cap ? *cap * 2 : 16;
    void *np = env2_realloc(*p, (size_t)nc * elem);
    if (!np) return env2_fail(e, ENV2_E_NOMEM, "safetensors: out of memory for %d header entries", nc);
    *p = np;
    *cap = nc;
    return ENV2_OK;
}

static env2_status parse_meta(st_file *f, json_reader *r, int *mcap, env2_err *e)
{
    env2_status st;
    int idx = 0, has, kcap = *mcap;
    const char *key, *val;
    if (json_peek(r) == JSON_NULL) return json_read_null(r, e);
    if (json_peek(r) != JSON_OBJECT)
        return env2_fail(e, ENV2_E_FORMAT, "\"__metadata__\" is not an object (header byte %zu)", r->pos);
    if ((st = json_begin_object(r, e))) return st;
    for (;;) {
        if ((st = json_next_member(r, &idx, &has, &key, e))) return st;
        if (!has) break;
        if (json_peek(r) != JSON_STRING)
            return env2_fail(e, ENV2_E_FORMAT, "metadata value for key '%s' is not a string (header byte %zu)", key,
                             r->pos);
        if ((st = json_read_string(r, &val, NULL, e))) return st;
        kcap = *mcap;
        if ((st = grow_array((void **)&f->meta_keys, &kcap, f->nmeta + 1, sizeof(char *), e))) return st;
        kcap = *mcap;
        if ((st = grow_array((void **)&f->meta_vals, &kcap, f->nmeta + 1, sizeof(char *), e))) return st;
        *mcap = kcap;
        f->meta_keys[f->nmeta] = (char *)key;
        f->meta_vals[f->nmeta] = (char *)val;
        f->nmeta++;
    }
    if (f->nmeta > 1) {
        char **tmp = env2_malloc((size_t)f->nmeta * sizeof(char *));
        if (!tmp) return env2_fail(e, ENV2_E_NOMEM, "safetensors: out of memory");
        memcpy(tmp, f->meta_keys, (size_t)f->nmeta * sizeof(char *));
        qsort(tmp, (size_t)f->nmeta, sizeof(char *), cmp_str);
        for (int i = 1; i < f->nmeta; i++)
            if (strcmp(tmp[i - 1], tmp[i]) == 0) {
                st = env2_fail(e, ENV2_E_FORMAT, "duplicate metadata key '%s'", tmp[i]);
                break;
            }
        env2_free(tmp);
    }
    return st;
}

/* Checks names are unique and the data spans tile [0, data_len). */
static env2_status check_layout(st_file *f, size_t data_len, env2_err *e)
{
    env2_status st = ENV2_OK;
    size_t n = (size_t)f->count;
    if (n == 0) {
        if (data_len) return env2_fail(e, ENV2_E_FORMAT, "safetensors: %zu bytes of data but no tensors", data_len);
        return ENV2_OK;
    }
    st_tensor **by_name = env2_malloc(n * sizeof *by_name), **by_off = env2_malloc(n * sizeof *by_off);
    if (!by_name || !by_off) {
        env2_free(by_name);
        env2_free(by_off);
        return env2_fail(e, ENV2_E_NOMEM, "safetensors: out of memory for the tensor index");
    }
    for (size_t i = 0; i < n; i++) by_name[i] = by_off[i] = &f->tensors[i];
    qsort(by_name, n, sizeof *by_name, cmp_tensor_name);
    for (size_t i = 1; i < n && !st; i++)
        if (strcmp(by_name[i - 1]->name, by_name[i]->name) == 0)
            st = env2_fail(e, ENV2_E_FORMAT, "safetensors: duplicate tensor name '%s'", by_name[i]->name);
    if (!st) {
        qsort(by_off, n, sizeof *by_off, cmp_tensor_offset);
        size_t pos = 0;
        const st_tensor *prev = NULL;
        for (size_t i = 0; i < n && !st; i++) {
            const st_tensor *t = by_off[i];
            if (t->offset < pos)
                st = env2_fail(e, ENV2_E_FORMAT, "tensor '%s': data_offsets [%zu, %zu] overlap tensor '%s' (ends at %zu)",
                               t->name, t->offset, t->offset + t->nbytes, prev->name, pos);
            else if (t->offset > pos)
                st = env2_fail(e, ENV2_E_FORMAT, "tensor '%s': data_offsets [%zu, %zu] leave a gap of %zu bytes after %s%s%s",
                               t->name, t->offset, t->offset + t->nbytes, t->offset - pos, prev ? "tensor '" : "the start",
                               prev ? prev->name : "", prev ? "'" : "");
            pos = t->offset + t->nbytes;
            prev = t;
        }
        if (!st && pos != data_len)
            st = env2_fail(e, ENV2_E_FORMAT, "safetensors: %zu bytes of trailing data after the last tensor '%s'",
                           data_len - pos, prev->name);
    }
    env2_free(by_off);
    if (st) {
        env2_free(by_name);
        return st;
    }
    f->by_name_ = by_name;
    return ENV2_OK;
}

static env2_status parse(st_file *f, env2_err *e)
{
    env2_status st;
    json_reader r;
    int idx = 0, has, tcap = 0, mcap = 0, seen_meta = 0;
    const char *key;
    if (f->len < 8)
        return env2_fail(e, ENV2_E_FORMAT, "safetensors: %zu bytes is too short for the 8-byte header length (truncated)",
                         f->len);
    uint64_t n = rd64(f->buf);
    if (n > ST_MAX_HEADER)
        return env2_fail(e, ENV2_E_FORMAT, "safetensors: header length %llu is too large (limit %llu bytes)",
                         (unsigned long long)n, (unsigned long long)ST_MAX_HEADER);
    if (n > f->len - 8)
        return env2_fail(e, ENV2_E_FORMAT,
                         "safetensors: header length %llu exceeds the %zu bytes that follow it (truncated file?)",
                         (unsigned long long)n, f->len - 8);
    f->data_start = 8 + (size_t)n;
    size_t data_len = f->len - f->data_start;
    if ((st = json_reader_init(&r, (const char *)f->buf + 8, (size_t)n, e))) return st;
    if (json_peek(&r) != JSON_OBJECT) {
        st = env2_fail(e, ENV2_E_FORMAT, "safetensors: header is not a JSON object");
        goto done;
    }
    if ((st = json_begin_object(&r, e))) goto done;
    for (;;) {
        if ((st = json_next_member(&r, &idx, &has, &key, e))) goto done;
        if (!has) break;
        if (strcmp(key, "__metadata__") == 0) {
            if (seen_meta++) {
                st = env2_fail(e, ENV2_E_FORMAT, "safetensors: duplicate \"__metadata__\"");
                goto done;
            }
            if ((st = parse_meta(f, &r, &mcap, e))) goto done;
            continue;
        }
        if ((st = grow_array((void **)&f->tensors, &tcap, f->count + 1, sizeof(st_tensor), e))) goto done;
        if ((st = parse_tensor(&r, &f->tensors[f->count], key, data_len, e))) goto done;
        f->count++;
    }
    if ((st = json_end(&r, e))) goto done;
    st = check_layout(f, data_len, e);
done:
    /* names and values point into the reader's string buffer */
    f->strings_ = json_reader_take_strings(&r);
    json_reader_free(&r);
    if (st && strncmp(e ? e->msg : "", "safetensors", 11) != 0 && strncmp(e ? e->msg : "", "tensor", 6) != 0)
        env2_err_prefix(e, st, "safetensors header");
    return st;
}

env2_status st_open_memory(st_file *f, const void *data, size_t len, env2_err *e)
{
    if (!f) return env2_fail(e, ENV2_E_INVALID_ARG, "st_open_memory: NULL file");
    memset(f, 0, sizeof *f);
    if (!data && len) return env2_fail(e, ENV2_E_INVALID_ARG, "st_open_memory: NULL data");
    f->buf = (unsigned char *)(uintptr_t)data; /* never written through: the struct field is shared with owned buffers */
    f->len = len;
    env2_status st = parse(f, e);
    if (st) st_close(f);
    return st;
}

env2_status st_open_file(st_file *f, const char *path, env2_err *e)
{
    unsigned char *buf;
    size_t len;
    if (!f) return env2_fail(e, ENV2_E_INVALID_ARG, "st_open_file: NULL file");
    memset(f, 0, sizeof *f);
    env2_status st = io_read_file(path, &buf, &len, e);
    if (st) return st;
    f->buf = buf;
    f->len = len;
    f->owns_buf = 1;
    st = parse(f, e);
    if (st) {
        st_close(f);
        return env2_err_prefix(e, st, "%s", path);
    }
    return ENV2_OK;
}

const st_tensor *st_find(const st_file *f, const char *name)
{
    if (!f || !name || !f->by_name_) return NULL;
    size_t lo = 0, hi = (size_t)f->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->by_name_[mid]->name, name);
        if (c == 0) return f->by_name_[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* -1 for a shape that is invalid or overflows, which only a hand-made
 * st_tensor can have: parsed ones are checked on open. */
int64_t st_numel(const st_tensor *t)
{
    uint64_t n = 1;
    if (!t || t->ndim < 0 || t->ndim > ST_MAX_DIMS) return -1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 0) return -1;
        uint64_t s = (uint64_t)t->shape[d];
        if (s && n > (uint64_t)INT64_MAX / s) return -1;
        n *= s;
    }
    return (int64_t)n;
}

const void *st_data(const st_file *f, const st_tensor *t) { return f->buf + f->data_start + t->offset; }

const char *st_meta(const st_file *f, const char *key)
{
    if (!f || !key) return NULL;
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

/* Common checks of the readers: the tensor's bytes lie inside the buffer
 * (guards against a hand-made st_tensor) and its size matches the caller's. */
static env2_status check_read(const st_file *f, const st_tensor *t, const void *dst, size_t count, env2_err *e)
{
    if (!f || !t || (!dst && count)) return env2_fail(e, ENV2_E_INVALID_ARG, "st_read: NULL argument");
    size_t es = st_dtype_size(t->dtype);
    if (!es) return env2_fail(e, ENV2_E_DTYPE, "tensor '%s': invalid dtype %d", t->name ? t->name : "?", t->dtype);
    if (f->data_start > f->len || t->offset > f->len - f->data_start ||
        t->nbytes > f->len - f->data_start - t->offset)
        return env2_fail(e, ENV2_E_FORMAT, "tensor '%s': data lies outside the file", t->name);
    int64_t n = st_numel(t);
    if (n < 0 || (uint64_t)n != (uint64_t)count)
        return env2_fail(e, ENV2_E_SHAPE, "tensor '%s' has %lld elements, %zu were requested", t->name, (long long)n,
                         count);
    if (t->nbytes / es != count || t->nbytes % es)
        return env2_fail(e, ENV2_E_FORMAT, "tensor '%s': %zu bytes do not hold %zu elements of %s", t->name, t->nbytes,
                         count, st_dtype_name(t->dtype));
    return ENV2_OK;
}

env2_status st_read_f32(const st_file *f, const st_tensor *t, float *dst, size_t count, env2_err *e)
{
    env2_status st = check_read(f, t, dst, count, e);
    if (st) return st;
    const unsigned char *p = f->buf + f->data_start + t->offset;
    switch (t->dtype) {
    case ST_F32:
        if (host_is_le()) {
            if (count) memcpy(dst, p, count * 4);
        } else {
            for (size_t i = 0; i < count; i++) dst[i] = bits_f32(rd32(p + 4 * i));
        }
        return ENV2_OK;
    case ST_F16:
        for (size_t i = 0; i < count; i++) dst[i] = st_f16_to_f32(rd16(p + 2 * i));
        return ENV2_OK;
    case ST_BF16:
        for (size_t i = 0; i < count; i++) dst[i] = st_bf16_to_f32(rd16(p + 2 * i));
        return ENV2_OK;
    case ST_F64:
        for (size_t i = 0; i < count; i++) {
            uint64_t u = rd64(p + 8 * i);
            double d;
            memcpy(&d, &u, 8);
            dst[i] = (float)d;
        }
        return ENV2_OK;
    default:
        return env2_fail(e, ENV2_E_DTYPE, "tensor '%s' has dtype %s, which cannot be read as float32", t->name,
                         st_dtype_name(t->dtype));
    }
}

env2_status st_read_i64(const st_file *f, const st_tensor *t, int64_t *dst, size_t count, env2_err *e)
{
    env2_status st = check_read(f, t, dst, count, e);
    if (st) return st;
    const unsigned char *p = f->buf + f->data_start + t->offset;
    for (size_t i = 0; i < count; i++) {
        double d;
        switch (t->dtype) {
        case ST_I64: dst[i] = (int64_t)rd64(p + 8 * i); continue;
        case ST_I32: dst[i] = (int32_t)rd32(p + 4 * i); continue;
        case ST_I16: dst[i] = (int16_t)rd16(p + 2 * i); continue;
        case ST_I8: dst[i] = (int8_t)p[i]; continue;
        case ST_U8: case ST_BOOL: dst[i] = p[i]; continue;
        case ST_U16: dst[i] = rd16(p + 2 * i); continue;
        case ST_U32: dst[i] = rd32(p + 4 * i); continue;
        case ST_U64: {
            uint64_t u = rd64(p + 8 * i);
            if (u > (uint64_t)INT64_MAX)
                return env2_fail(e, ENV2_E_DTYPE, "tensor '%s': element %zu (%llu) does not fit in int64", t->name, i,
                                 (unsigned long long)u);
            dst[i] = (int64_t)u;
            continue;
        }
        case ST_F32: d = bits_f32(rd32(p + 4 * i)); break;
        case ST_F16: d = st_f16_to_f32(rd16(p + 2 * i)); break;
        case ST_BF16: d = st_bf16_to_f32(rd16(p + 2 * i)); break;
        case ST_F64: {
            uint64_t u = rd64(p + 8 * i);
            memcpy(&d, &u, 8);
            break;
        }
        default:
            return env2_fail(e, ENV2_E_DTYPE, "tensor '%s' has dtype %s, which cannot be read as integers", t->name,
                             st_dtype_name(t->dtype));
        }
        /* floats qualify only when every value is an integer in range */
        if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) || d != (double)(int64_t)d)
            return env2_fail(e, ENV2_E_DTYPE, "tensor '%s' (%s): element %zu (%g) is not an int64 integer", t->name,
                             st_dtype_name(t->dtype), i, d);
        dst[i] = (int64_t)d;
    }
    return ENV2_OK;
}

/* ---- writer ---------------------------------------------------------------- */

typedef struct wt_entry {
    char *name;
    int dtype, ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
} wt_entry;

struct st_writer {
    wt_entry *t;
    int count, cap;
    char **mk, **mv;
    int nmeta, mcap;
};

env2_status st_writer_create(st_writer **w, env2_err *e)
{
    if (!w) return env2_fail(e, ENV2_E_INVALID_ARG, "st_writer_create: NULL argument");
    *w = env2_calloc(1, sizeof **w);
    if (!*w) return env2_fail(e, ENV2_E_NOMEM, "safetensors writer: out of memory");
    return ENV2_OK;
}

void st_writer_destroy(st_writer *w)
{
    if (!w) return;
    for (int i = 0; i < w->count; i++) env2_free(w->t[i].name);
    for (int i = 0; i < w->nmeta; i++) {
        env2_free(w->mk[i]);
        env2_free(w->mv[i]);
    }
    env2_free(w->t);
    env2_free(w->mk);
    env2_free(w->mv);
    env2_free(w);
}

env2_status st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                          const void *data, env2_err *e)
{
    if (!w || !name) return env2_fail(e, ENV2_E_INVALID_ARG, "st_writer_add: NULL argument");
    if (!json_valid_utf8(name, strlen(name)))
        return env2_fail(e, ENV2_E_INVALID_ARG, "st_writer_add: tensor name is not valid UTF-8");
    if (strcmp(name, "__metadata__") == 0)
        return env2_fail(e, ENV2_E_INVALID_ARG, "st_writer_add: \"__metadata__\" is reserved");
    if ((int)dtype < 0 || (int)dtype >= ST_NUM_DTYPES)
        return env2_fail(e, ENV2_E_INVALID_ARG, "st_writer_add: tensor '%s': invalid dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > ST_MAX_DIMS || (ndim > 0 && !shape))
        return env2_fail(e, ENV2_E_INVALID_ARG, "st_writer_add: tensor '%s': bad ndim %d", name, ndim);
    uint64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return env2_fail(e, ENV2_E_INVALID_ARG, "st_writer_add: tensor '%s': negative dimension", name);
        if (shape[d] && numel > (uint64_t)INT64_MAX / (uint64_t)shape[d])
            return env2_fail(e, ENV2_E_INVALID_ARG, "st_writer_add: tensor '%s' is too large", name);
        numel *= (uint64_t)shape[d];
    }
    size_t es = dtype_info[dtype].size;
    if (numel > SIZE_MAX / es || numel * es > (uint64_t)INT64_MAX)
        return env2_fail(e, ENV2_E_INVALID_ARG, "st_writer_add: tensor '%s' is too large", name);
    size_t nbytes = (size_t)numel * es;
    if (!data && nbytes) return env2_fail(e, ENV2_E_INVALID_ARG, "st_writer_add: tensor '%s': NULL data", name);
    for (int i = 0; i < w->count; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return env2_fail(e, ENV2_E_INVALID_ARG, "st_writer_add: duplicate tensor name '%s'", name);
    env2_status st = grow_array((void **)&w->t, &w->cap, w->count + 1, sizeof(wt_entry), e);
    if (st) return st;
    wt_entry *t = &w->t[w->count];
    memset(t, 0, sizeof *t);
    t->name = env2_strdup(name);
    if (!t->name) return env2_fail(e, ENV2_E_NOMEM, "st_writer_add: out of memory");
    t->dtype = (int)dtype;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->data = data;
    t->nbytes = nbytes;
    w->count++;
    return ENV2_OK;
}

env2_status st_writer_meta(st_writer *w, const char *key, const char *value, env2_err *e)
{
    if (!w || !key || !value) return env2_fail(e, ENV2_E_INVALID_ARG, "st_writer_meta: NULL argument");
    if (!json_valid_utf8(key, strlen(key)) || !json_valid_utf8(value, strlen(value)))
        return env2_fail(e, ENV2_E_INVALID_ARG, "st_writer_meta: key or value of '%.64s' is not valid UTF-8", key);
    char *v = env2_strdup(value);
    if (!v) return env2_fail(e, ENV2_E_NOMEM, "st_writer_meta: out of memory");
    for (int i = 0; i < w->nmeta; i++)
        if (strcmp(w->mk[i], key) == 0) {
            env2_free(w->mv[i]);
            w->mv[i] = v;
            return ENV2_OK;
        }
    int c1 = w->mcap, c2 = w->mcap;
    env2_status st = grow_array((void **)&w->mk, &c1, w->nmeta + 1, sizeof(char *), e);
    if (!st) st = grow_array((void **)&w->mv, &c2, w->nmeta + 1, sizeof(char *), e);
    if (!st) w->mcap = c1 < c2 ? c1 : c2;
    char *k = st ? NULL : env2_strdup(key);
    if (!st && !k) st = env2_fail(e, ENV2_E_NOMEM, "st_writer_meta: out of memory");
    if (st) {
        env2_free(v);
        return st;
    }
    w->mk[w->nmeta] = k;
    w->mv[w->nmeta] = v;
    w->nmeta++;
    return ENV2_OK;
}

/* Output cursor that only counts when buf is NULL, so the header is sized
 * and written by the same code. */
typedef struct sbuf {
    char *buf;
    size_t n;
} sbuf;

static void put(sbuf *s, const char *p, size_t n)
{
    if (s->buf) memcpy(s->buf + s->n, p, n);
    s->n += n;
}

static void puts_(sbuf *s, const char *p) { put(s, p, strlen(p)); }

static void put_json_string(sbuf *s, const char *str)
{
    put(s, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            put(s, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            put(s, esc, 6);
        } else {
            put(s, (const char *)p, 1);
        }
    }
    put(s, "\"", 1);
}

static void put_u64(sbuf *s, uint64_t v)
{
    char tmp[24];
    int k = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    put(s, tmp, (size_t)k);
}

static void emit_header(const st_writer *w, sbuf *s)
{
    uint64_t off = 0;
    int first = 1;
    puts_(s, "{");
    if (w->nmeta) {
        puts_(s, "\"__metadata__\":{");
        for (int i = 0; i < w->nmeta; i++) {
            if (i) puts_(s, ",");
            put_json_string(s, w->mk[i]);
            puts_(s, ":");
            put_json_string(s, w->mv[i]);
        }
        puts_(s, "}");
        first = 0;
    }
    for (int i = 0; i < w->count; i++) {
        const wt_entry *t = &w->t[i];
        if (!first) puts_(s, ",");
        first = 0;
        put_json_string(s, t->name);
        puts_(s, ":{\"dtype\":\"");
        puts_(s, dtype_info[t->dtype].name);
        puts_(s, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d) puts_(s, ",");
            put_u64(s, (uint64_t)t->shape[d]);
        }
        puts_(s, "],\"data_offsets\":[");
        put_u64(s, off);
        puts_(s, ",");
        off += t->nbytes;
        put_u64(s, off);
        puts_(s, "]}");
    }
    puts_(s, "}");
}

/* Sizes the file: header length (padded to 8) and total. */
static env2_status layout(const st_writer *w, size_t *hlen, size_t *total, env2_err *e)
{
    sbuf s = {NULL, 0};
    uint64_t data = 0;
    for (int i = 0; i < w->count; i++) {
        if (w->t[i].nbytes > (uint64_t)INT64_MAX - data)
            return env2_fail(e, ENV2_E_INVALID_ARG, "safetensors writer: total data size overflows");
        data += w->t[i].nbytes;
    }
    emit_header(w, &s);
    size_t h = (s.n + 7) & ~(size_t)7;
    if (data > SIZE_MAX - 8 - h) return env2_fail(e, ENV2_E_NOMEM, "safetensors writer: file too large");
    *hlen = h;
    *total = 8 + h + (size_t)data;
    return ENV2_OK;
}

static env2_status make_header(const st_writer *w, char **out, size_t *hlen, size_t *total, env2_err *e)
{
    env2_status st = layout(w, hlen, total, e);
    if (st) return st;
    char *h = env2_malloc(8 + *hlen);
    if (!h) return env2_fail(e, ENV2_E_NOMEM, "safetensors writer: out of memory for the header");
    uint64_t n = *hlen;
    for (int i = 0; i < 8; i++) h[i] = (char)(unsigned char)(n >> (8 * i));
    sbuf s = {h + 8, 0};
    emit_header(w, &s);
    memset(h + 8 + s.n, ' ', *hlen - s.n);
    *out = h;
    return ENV2_OK;
}

/* Copies n bytes of elements of size es, swapping to little-endian on
 * big-endian hosts. */
static void copy_le(unsigned char *dst, const unsigned char *src, size_t n, size_t es)
{
    if (es == 1 || host_is_le()) {
        if (n) memcpy(dst, src, n);
        return;
    }
    for (size_t i = 0; i < n; i += es)
        for (size_t k = 0; k < es; k++) dst[i + k] = src[i + es - 1 - k];
}

env2_status st_writer_to_memory(const st_writer *w, void **data, size_t *len, env2_err *e)
{
    if (!w || !data || !len) return env2_fail(e, ENV2_E_INVALID_ARG, "st_writer_to_memory: NULL argument");
    char *h;
    size_t hlen, total;
    env2_status st = make_header(w, &h, &hlen, &total, e);
    if (st) return st;
    unsigned char *buf = env2_malloc(total);
    if (!buf) {
        env2_free(h);
        return env2_fail(e, ENV2_E_NOMEM, "safetensors writer: out of memory for %zu bytes", total);
    }
    memcpy(buf, h, 8 + hlen);
    env2_free(h);
    size_t pos = 8 + hlen;
    for (int i = 0; i < w->count; i++) {
        copy_le(buf + pos, w->t[i].data, w->t[i].nbytes, dtype_info[w->t[i].dtype].size);
        pos += w->t[i].nbytes;
    }
    *data = buf;
    *len = total;
    return ENV2_OK;
}

env2_status st_writer_save(const st_writer *w, const char *path, env2_err *e)
{
    if (!w || !path) return env2_fail(e, ENV2_E_INVALID_ARG, "st_writer_save: NULL argument");
    char *h;
    size_t hlen, total;
    io_atomic a;
    env2_status st = make_header(w, &h, &hlen, &total, e);
    if (st) return st;
    st = io_atomic_open(&a, path, e);
    if (!st) st = io_atomic_write(&a, h, 8 + hlen, e);
    env2_free(h);
    if (st) {
        io_atomic_abort(&a);
        return st;
    }
    unsigned char chunk[16384];
    for (int i = 0; i < w->count && !st; i++) {
        const wt_entry *t = &w->t[i];
        size_t es = dtype_info[t->dtype].size;
        if (es == 1 || host_is_le()) {
            st = io_atomic_write(&a, t->data, t->nbytes, e);
            continue;
        }
        for (size_t off = 0; off < t->nbytes && !st; off += sizeof chunk) {
            size_t n = t->nbytes - off < sizeof chunk ? t->nbytes - off : sizeof chunk;
            copy_le(chunk, (const unsigned char *)t->data + off, n, es);
            st = io_atomic_write(&a, chunk, n, e);
        }
    }
    if (st) {
        io_atomic_abort(&a);
        return st;
    }
    return io_atomic_commit(&a, e);
}
