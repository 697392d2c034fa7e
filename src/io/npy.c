/* NumPy .npy files (format versions 1.0, 2.0 and 3.0).
 *
 * The header is a Python dict literal such as
 *     {'descr': '<f4', 'fortran_order': False, 'shape': (60000, 28, 28), }
 * parsed here by a small recursive-free scanner that accepts exactly what
 * numpy.lib.format writes (and Python 2's "3L" integers), nothing that would
 * need eval(). */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"

static int host_is_le(void)
{
    const uint16_t one = 1;
    unsigned char c;
    memcpy(&c, &one, 1);
    return c == 1;
}

/* Copies n bytes of elements of size es between little-endian and host order. */
static void copy_swap(unsigned char *dst, const unsigned char *src, size_t n, size_t es)
{
    if (es == 1 || host_is_le()) {
        if (n && dst != src) memmove(dst, src, n);
        return;
    }
    for (size_t i = 0; i < n; i += es)
        for (size_t k = 0; k < es / 2; k++) {
            unsigned char a = src[i + k], b = src[i + es - 1 - k];
            dst[i + k] = b;
            dst[i + es - 1 - k] = a;
        }
}

static const struct {
    char kind;
    int size;
    int dtype;
} npy_types[] = {
    {'f', 2, ST_F16}, {'f', 4, ST_F32}, {'f', 8, ST_F64}, {'i', 1, ST_I8},  {'i', 2, ST_I16},  {'i', 4, ST_I32},
    {'i', 8, ST_I64}, {'u', 1, ST_U8},  {'u', 2, ST_U16}, {'u', 4, ST_U32}, {'u', 8, ST_U64}, {'b', 1, ST_BOOL},
};

typedef struct hdr {
    const char *s;
    size_t n, p;
} hdr;

static void hws(hdr *h)
{
    while (h->p < h->n && (h->s[h->p] == ' ' || h->s[h->p] == '\t' || h->s[h->p] == '\n' || h->s[h->p] == '\r'))
        h->p++;
}

static int hpeek(hdr *h)
{
    hws(h);
    return h->p < h->n ? (unsigned char)h->s[h->p] : -1;
}

static env2_status hfail(const hdr *h, env2_err *e, const char *what)
{
    return env2_fail(e, ENV2_E_FORMAT, "npy: malformed header: %s at header byte %zu", what, h->p);
}

/* A quoted Python string without escapes into out (truncated to cap-1). */
static env2_status hstring(hdr *h, char *out, size_t cap, env2_err *e)
{
    int q = hpeek(h);
    if (q != '\'' && q != '"') return hfail(h, e, "expected a quoted string");
    size_t start = ++h->p, k = 0;
    while (h->p < h->n && h->s[h->p] != q) {
        if (h->s[h->p] == '\\') return hfail(h, e, "escape in string");
        h->p++;
    }
    if (h->p >= h->n) return hfail(h, e, "unterminated string");
    for (size_t i = start; i < h->p && k + 1 < cap; i++) out[k++] = h->s[i];
    out[k] = '\0';
    if (h->p - start >= cap) return hfail(h, e, "string too long");
    h->p++;
    return ENV2_OK;
}

static int hword(hdr *h, const char *w)
{
    size_t n = strlen(w);
    hws(h);
    if (h->n - h->p < n || memcmp(h->s + h->p, w, n) != 0) return 0;
    h->p += n;
    return 1;
}

static env2_status parse_descr(const char *d, int *dtype, env2_err *e)
{
    char order = d[0];
    if (order == '[' || order == '(') return env2_fail(e, ENV2_E_DTYPE, "npy: structured dtypes are not supported");
    if (order != '<' && order != '>' && order != '|' && order != '=')
        return env2_fail(e, ENV2_E_DTYPE, "npy: unsupported dtype descr '%s'", d);
    char kind = d[1];
    if (kind == 'O') return env2_fail(e, ENV2_E_DTYPE, "npy: object arrays ('%s') are not supported", d);
    char *end;
    long size = strtol(d + 2, &end, 10);
    if (!d[2] || *end || size <= 0) return env2_fail(e, ENV2_E_DTYPE, "npy: unsupported dtype descr '%s'", d);
    for (size_t i = 0; i < sizeof npy_types / sizeof npy_types[0]; i++)
        if (npy_types[i].kind == kind && npy_types[i].size == size) {
            if (size > 1 && order == '>')
                return env2_fail(e, ENV2_E_DTYPE, "npy: big-endian data ('%s') is not supported; save it as '<%c%ld'",
                                 d, kind, size);
            if (size > 1 && order != '<')
                return env2_fail(e, ENV2_E_DTYPE, "npy: dtype '%s' has no explicit little-endian byte order", d);
            *dtype = npy_types[i].dtype;
            return ENV2_OK;
        }
    return env2_fail(e, ENV2_E_DTYPE, "npy: unsupported dtype '%s' (supported: f2 f4 f8 i1-i8 u1-u8 b1)", d);
}

static env2_status parse_shape(hdr *h, npy_array *a, env2_err *e)
{
    if (hpeek(h) != '(') return hfail(h, e, "'shape' is not a tuple");
    h->p++;
    int n = 0;
    for (;;) {
        int c = hpeek(h);
        if (c == ')') {
            h->p++;
            break;
        }
        if (c < '0' || c > '9') return hfail(h, e, "expected a non-negative integer in 'shape'");
        uint64_t v = 0;
        while (h->p < h->n && h->s[h->p] >= '0' && h->s[h->p] <= '9') {
            v = v * 10 + (uint64_t)(h->s[h->p] - '0');
            if (v > (uint64_t)INT64_MAX / 10) return hfail(h, e, "dimension too large");
            h->p++;
        }
        if (h->p < h->n && h->s[h->p] == 'L') h->p++;
        if (n >= 8) return env2_fail(e, ENV2_E_UNSUPPORTED, "npy: more than 8 dimensions");
        a->shape[n++] = (int64_t)v;
        c = hpeek(h);
        if (c == ',') h->p++;
        else if (c != ')') return hfail(h, e, "expected ',' or ')' in 'shape'");
    }
    a->ndim = n;
    return ENV2_OK;
}

/* Parses magic, version and header dict; *data_off receives the offset of
 * the array data and *nbytes its size. */
static env2_status parse_npy(const unsigned char *b, size_t len, npy_array *a, size_t *data_off, size_t *nbytes,
                             env2_err *e)
{
    static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    size_t hlen, hstart;
    if (len < 10 || memcmp(b, magic, 6) != 0) {
        if (len >= 6 && memcmp(b, magic, 6) != 0) return env2_fail(e, ENV2_E_FORMAT, "npy: not a .npy file (bad magic)");
        return env2_fail(e, ENV2_E_FORMAT, "npy: truncated: %zu bytes", len);
    }
    if (b[6] == 1) {
        hlen = (size_t)b[8] | (size_t)b[9] << 8;
        hstart = 10;
    } else if (b[6] == 2 || b[6] == 3) {
        if (len < 12) return env2_fail(e, ENV2_E_FORMAT, "npy: truncated: %zu bytes", len);
        hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        hstart = 12;
    } else {
        return env2_fail(e, ENV2_E_VERSION, "npy: format version %u.%u is not supported (1.0, 2.0, 3.0 are)", b[6], b[7]);
    }
    if (hlen > len - hstart)
        return env2_fail(e, ENV2_E_FORMAT, "npy: truncated: header of %zu bytes but only %zu follow", hlen, len - hstart);
    hdr h = {(const char *)b + hstart, hlen, 0};
    char key[32], descr[32];
    int have_descr = 0, have_fortran = 0, have_shape = 0, fortran = 0, dtype = -1;
    env2_status st;
    if (hpeek(&h) != '{') return hfail(&h, e, "expected '{'");
    h.p++;
    for (;;) {
        int c = hpeek(&h);
        if (c == '}') {
            h.p++;
            break;
        }
        if ((st = hstring(&h, key, sizeof key, e))) return st;
        if (hpeek(&h) != ':') return hfail(&h, e, "expected ':'");
        h.p++;
        if (strcmp(key, "descr") == 0 && !have_descr) {
            have_descr = 1;
            c = hpeek(&h);
            if (c == '[') return env2_fail(e, ENV2_E_DTYPE, "npy: structured dtypes are not supported");
            if ((st = hstring(&h, descr, sizeof descr, e))) return st;
        } else if (strcmp(key, "fortran_order") == 0 && !have_fortran) {
            have_fortran = 1;
            if (hword(&h, "True")) fortran = 1;
            else if (!hword(&h, "False")) return hfail(&h, e, "'fortran_order' is not True or False");
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            have_shape = 1;
            if ((st = parse_shape(&h, a, e))) return st;
        } else {
            return env2_fail(e, ENV2_E_FORMAT, "npy: unexpected or repeated header key '%s'", key);
        }
        c = hpeek(&h);
        if (c == ',') h.p++;
        else if (c != '}') return hfail(&h, e, "expected ',' or '}'");
    }
    hws(&h);
    if (h.p != h.n) {
        /* numpy pads with spaces and a final newline; some writers NUL-pad */
        for (; h.p < h.n; h.p++)
            if (h.s[h.p] != '\0') return hfail(&h, e, "data after the header dict");
    }
    if (!have_descr || !have_fortran || !have_shape)
        return env2_fail(e, ENV2_E_FORMAT, "npy: header lacks '%s'",
                         !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
    if ((st = parse_descr(descr, &dtype, e))) return st;
    if (fortran) {
        int nontrivial = 0;
        for (int d = 0; d < a->ndim; d++) nontrivial += a->shape[d] > 1;
        /* with at most one dimension above 1 both orders store the same bytes */
        if (nontrivial > 1)
            return env2_fail(e, ENV2_E_UNSUPPORTED, "npy: fortran_order=True arrays are not supported; save with "
                                                    "np.ascontiguousarray");
    }
    a->dtype = dtype;
    uint64_t numel = 1, es = st_dtype_size(dtype);
    for (int d = 0; d < a->ndim; d++) {
        uint64_t s = (uint64_t)a->shape[d];
        if (s && numel > UINT64_MAX / s) return env2_fail(e, ENV2_E_FORMAT, "npy: shape too large");
        numel *= s;
    }
    if (numel > (uint64_t)INT64_MAX / es || numel * es > (uint64_t)SIZE_MAX)
        return env2_fail(e, ENV2_E_FORMAT, "npy: shape too large");
    size_t need = (size_t)(numel * es), have = len - hstart - hlen;
    if (have < need)
        return env2_fail(e, ENV2_E_FORMAT, "npy: truncated data: %zu bytes needed, %zu present", need, have);
    if (have > need)
        return env2_fail(e, ENV2_E_FORMAT, "npy: %zu unexpected bytes after the array data", have - need);
    *data_off = hstart + hlen;
    *nbytes = need;
    return ENV2_OK;
}

env2_status npy_load_memory(const void *buf, size_t len, npy_array *a, env2_err *e)
{
    size_t off, nbytes;
    if (!a) return env2_fail(e, ENV2_E_INVALID_ARG, "npy_load_memory: NULL array");
    memset(a, 0, sizeof *a);
    if (!buf && len) return env2_fail(e, ENV2_E_INVALID_ARG, "npy_load_memory: NULL buffer");
    npy_array t;
    memset(&t, 0, sizeof t);
    env2_status st = parse_npy(buf, len, &t, &off, &nbytes, e);
    if (st) return st;
    t.data = env2_malloc(nbytes);
    if (!t.data) return env2_fail(e, ENV2_E_NOMEM, "npy: out of memory for %zu bytes", nbytes);
    copy_swap(t.data, (const unsigned char *)buf + off, nbytes, st_dtype_size(t.dtype));
    *a = t;
    return ENV2_OK;
}

env2_status npy_load(const char *path, npy_array *a, env2_err *e)
{
    unsigned char *buf;
    size_t len, off, nbytes;
    if (!a) return env2_fail(e, ENV2_E_INVALID_ARG, "npy_load: NULL array");
    memset(a, 0, sizeof *a);
    env2_status st = io_read_file(path, &buf, &len, e);
    if (st) return st;
    npy_array t;
    memset(&t, 0, sizeof t);
    st = parse_npy(buf, len, &t, &off, &nbytes, e);
    if (st) {
        env2_free(buf);
        return env2_err_prefix(e, st, "%s", path);
    }
    /* the data moves to the front of the file buffer: no second copy of a
     * possibly large array */
    copy_swap(buf, buf + off, nbytes, st_dtype_size(t.dtype));
    unsigned char *shrunk = env2_realloc(buf, nbytes ? nbytes : 1);
    t.data = shrunk ? shrunk : buf;
    *a = t;
    return ENV2_OK;
}

void npy_free(npy_array *a)
{
    if (!a) return;
    env2_free(a->data);
    memset(a, 0, sizeof *a);
}

/* -1 for an invalid or overflowing shape (only possible in a hand-made array). */
int64_t npy_numel(const npy_array *a)
{
    uint64_t n = 1;
    if (!a || a->ndim < 0 || a->ndim > 8) return -1;
    for (int d = 0; d < a->ndim; d++) {
        if (a->shape[d] < 0) return -1;
        uint64_t s = (uint64_t)a->shape[d];
        if (s && n > (uint64_t)INT64_MAX / s) return -1;
        n *= s;
    }
    return (int64_t)n;
}

/* Element i of a as double, or as int64 for integer dtypes. */
static double elem_f(const npy_array *a, size_t i)
{
    switch (a->dtype) {
    case ST_F32: return ((const float *)a->data)[i];
    case ST_F64: return ((const double *)a->data)[i];
    case ST_F16: return st_f16_to_f32(((const uint16_t *)a->data)[i]);
    case ST_I8: return ((const int8_t *)a->data)[i];
    case ST_I16: return ((const int16_t *)a->data)[i];
    case ST_I32: return ((const int32_t *)a->data)[i];
    case ST_I64: return (double)((const int64_t *)a->data)[i];
    case ST_U8: case ST_BOOL: return ((const uint8_t *)a->data)[i];
    case ST_U16: return ((const uint16_t *)a->data)[i];
    case ST_U32: return ((const uint32_t *)a->data)[i];
    case ST_U64: return (double)((const uint64_t *)a->data)[i];
    default: return 0;
    }
}

static int is_integer_dtype(int d)
{
    return d == ST_I8 || d == ST_I16 || d == ST_I32 || d == ST_I64 || d == ST_U8 || d == ST_U16 || d == ST_U32 ||
           d == ST_U64 || d == ST_BOOL;
}

static env2_status check_array(const npy_array *a, void *out, int64_t *n, env2_err *e)
{
    if (!a || !out) return env2_fail(e, ENV2_E_INVALID_ARG, "npy: NULL argument");
    if (a->ndim < 0 || a->ndim > 8 || !st_dtype_size(a->dtype) || (!a->data && npy_numel(a) != 0))
        return env2_fail(e, ENV2_E_INVALID_ARG, "npy: invalid array");
    *n = npy_numel(a);
    if (*n < 0 || (uint64_t)*n > SIZE_MAX / 8) return env2_fail(e, ENV2_E_INVALID_ARG, "npy: invalid array shape");
    return ENV2_OK;
}

env2_status npy_to_f32(const npy_array *a, float **out, env2_err *e)
{
    int64_t n;
    env2_status st = check_array(a, out, &n, e);
    if (st) return st;
    if (a->dtype == ST_BF16 || a->dtype == ST_F8_E4M3 || a->dtype == ST_F8_E5M2)
        return env2_fail(e, ENV2_E_DTYPE, "npy: dtype %s cannot be converted", st_dtype_name(a->dtype));
    float *p = env2_malloc((size_t)n * sizeof(float));
    if (!p) return env2_fail(e, ENV2_E_NOMEM, "npy: out of memory for %lld floats", (long long)n);
    if (a->dtype == ST_F32) {
        if (n) memcpy(p, a->data, (size_t)n * sizeof(float));
    } else if (a->dtype == ST_U8) {
        for (int64_t i = 0; i < n; i++) p[i] = ((const uint8_t *)a->data)[i];
    } else {
        for (int64_t i = 0; i < n; i++) p[i] = (float)elem_f(a, (size_t)i);
    }
    *out = p;
    return ENV2_OK;
}

env2_status npy_to_i32(const npy_array *a, int32_t **out, env2_err *e)
{
    int64_t n;
    env2_status st = check_array(a, out, &n, e);
    if (st) return st;
    if (!is_integer_dtype(a->dtype))
        return env2_fail(e, ENV2_E_DTYPE, "npy: %s array where integers are required", st_dtype_name(a->dtype));
    int32_t *p = env2_malloc((size_t)n * sizeof(int32_t));
    if (!p) return env2_fail(e, ENV2_E_NOMEM, "npy: out of memory for %lld integers", (long long)n);
    for (int64_t i = 0; i < n; i++) {
        int64_t v;
        int bad = 0;
        if (a->dtype == ST_I64) v = ((const int64_t *)a->data)[i];
        else if (a->dtype == ST_U64) {
            uint64_t u = ((const uint64_t *)a->data)[i];
            bad = u > (uint64_t)INT32_MAX;
            v = bad ? 0 : (int64_t)u;
        } else {
            v = (int64_t)elem_f(a, (size_t)i);
        }
        if (bad || v < INT32_MIN || v > INT32_MAX) {
            env2_free(p);
            if (a->dtype == ST_U64)
                return env2_fail(e, ENV2_E_DTYPE, "npy: value %llu at index %lld does not fit in int32",
                                 (unsigned long long)((const uint64_t *)a->data)[i], (long long)i);
            return env2_fail(e, ENV2_E_DTYPE, "npy: value %lld at index %lld does not fit in int32", (long long)v,
                             (long long)i);
        }
        p[i] = (int32_t)v;
    }
    *out = p;
    return ENV2_OK;
}

env2_status npy_save(const char *path, st_dtype dtype, int ndim, const int64_t *shape, const void *data, env2_err *e)
{
    const char *descr = NULL;
    switch (dtype) {
    case ST_F32: descr = "<f4"; break;
    case ST_F64: descr = "<f8"; break;
    case ST_F16: descr = "<f2"; break;
    case ST_I8: descr = "|i1"; break;
    case ST_I16: descr = "<i2"; break;
    case ST_I32: descr = "<i4"; break;
    case ST_I64: descr = "<i8"; break;
    case ST_U8: descr = "|u1"; break;
    case ST_U16: descr = "<u2"; break;
    case ST_U32: descr = "<u4"; break;
    case ST_U64: descr = "<u8"; break;
    case ST_BOOL: descr = "|b1"; break;
    default: return env2_fail(e, ENV2_E_DTYPE, "npy_save: dtype %s has no .npy equivalent", st_dtype_name(dtype));
    }
    if (!path || ndim < 0 || ndim > 8 || (ndim && !shape))
        return env2_fail(e, ENV2_E_INVALID_ARG, "npy_save: invalid argument");
    char h[512];
    size_t es = st_dtype_size(dtype);
    uint64_t numel = 1;
    int k = snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return env2_fail(e, ENV2_E_INVALID_ARG, "npy_save: negative dimension");
        if (shape[d] && numel > (uint64_t)INT64_MAX / (uint64_t)shape[d])
            return env2_fail(e, ENV2_E_INVALID_ARG, "npy_save: array too large");
        numel *= (uint64_t)shape[d];
        k += snprintf(h + k, sizeof h - (size_t)k, "%lld%s", (long long)shape[d], ndim == 1 ? "," : d + 1 < ndim ? ", " : "");
    }
    k += snprintf(h + k, sizeof h - (size_t)k, "), }");
    if (numel > SIZE_MAX / es) return env2_fail(e, ENV2_E_INVALID_ARG, "npy_save: array too large");
    size_t nbytes = (size_t)numel * es;
    if (!data && nbytes) return env2_fail(e, ENV2_E_INVALID_ARG, "npy_save: NULL data");
    /* pad with spaces so the data starts on a 64-byte boundary, ending in '\n' */
    size_t total = 10 + (size_t)k + 1;
    size_t pad = (64 - total % 64) % 64;
    unsigned char head[10 + sizeof h + 64];
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    size_t hlen = (size_t)k + pad + 1;
    head[8] = (unsigned char)(hlen & 0xFF);
    head[9] = (unsigned char)(hlen >> 8);
    memcpy(head + 10, h, (size_t)k);
    memset(head + 10 + k, ' ', pad);
    head[10 + (size_t)k + pad] = '\n';
    io_atomic a;
    env2_status st = io_atomic_open(&a, path, e);
    if (st) return st;
    st = io_atomic_write(&a, head, 10 + hlen, e);
    if (!st && (es == 1 || host_is_le())) {
        st = io_atomic_write(&a, data, nbytes, e);
    } else if (!st) {
        unsigned char chunk[16384];
        for (size_t off = 0; off < nbytes && !st; off += sizeof chunk) {
            size_t n = nbytes - off < sizeof chunk ? nbytes - off : sizeof chunk;
            copy_swap(chunk, (const unsigned char *)data + off, n, es);
            st = io_atomic_write(&a, chunk, n, e);
        }
    }
    if (st) {
        io_atomic_abort(&a);
        return st;
    }
    return io_atomic_commit(&a, e);
}
