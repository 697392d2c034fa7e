/* IDX files (MNIST, Fashion-MNIST): a big-endian header 00 00 <type> <ndim>,
 * ndim big-endian uint32 dimensions, then the data.  Only unsigned bytes
 * (type 0x08) are accepted: every image/label set in that family uses them. */
#include <string.h>

#include "io/io.h"

static const char *idx_type_name(unsigned t)
{
    switch (t) {
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "unknown";
    }
}

/* Checks the header of buf and returns the data offset in *off. */
static env2_status parse_idx(const unsigned char *b, size_t len, idx_array *a, size_t *off, env2_err *e)
{
    if (len < 4) return env2_fail(e, ENV2_E_FORMAT, "idx: truncated: %zu bytes", len);
    if (b[0] != 0 || b[1] != 0)
        return env2_fail(e, ENV2_E_FORMAT, "idx: bad magic %02x %02x %02x %02x (not an IDX file)", b[0], b[1], b[2], b[3]);
    if (b[2] != 0x08)
        return env2_fail(e, ENV2_E_DTYPE, "idx: data type 0x%02x (%s) is not supported, only unsigned byte (0x08)", b[2],
                         idx_type_name(b[2]));
    int nd = b[3];
    if (nd < 1 || nd > 4) return env2_fail(e, ENV2_E_UNSUPPORTED, "idx: %d dimensions, 1 to 4 are supported", nd);
    size_t hdr = 4 + 4 * (size_t)nd;
    if (len < hdr) return env2_fail(e, ENV2_E_FORMAT, "idx: truncated header (%zu bytes, %zu needed)", len, hdr);
    uint64_t total = 1;
    a->ndim = nd;
    for (int d = 0; d < nd; d++) {
        const unsigned char *p = b + 4 + 4 * d;
        uint64_t v = (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 | (uint64_t)p[2] << 8 | p[3];
        a->dims[d] = (int64_t)v;
        /* dimensions are below 2^32, so with at most 4 of them this stays in
         * range until compared against the file size */
        if (v && total > UINT64_MAX / v) return env2_fail(e, ENV2_E_FORMAT, "idx: dimensions too large");
        total *= v;
    }
    uint64_t have = len - hdr;
    if (have != total) {
        char dims[80];
        size_t o = 0;
        for (int d = 0; d < nd; d++)
            o += (size_t)snprintf(dims + o, sizeof dims - o, "%s%lld", d ? "x" : "", (long long)a->dims[d]);
        if (have < total)
            return env2_fail(e, ENV2_E_FORMAT, "idx: truncated data: dims %s need %llu bytes, %llu present", dims,
                             (unsigned long long)total, (unsigned long long)have);
        return env2_fail(e, ENV2_E_FORMAT, "idx: size mismatch: dims %s need %llu bytes but %llu follow the header",
                         dims, (unsigned long long)total, (unsigned long long)have);
    }
    *off = hdr;
    return ENV2_OK;
}

env2_status idx_load_memory(const void *buf, size_t len, idx_array *a, env2_err *e)
{
    size_t off;
    idx_array t;
    if (!a) return env2_fail(e, ENV2_E_INVALID_ARG, "idx_load_memory: NULL array");
    memset(a, 0, sizeof *a);
    if (!buf && len) return env2_fail(e, ENV2_E_INVALID_ARG, "idx_load_memory: NULL buffer");
    memset(&t, 0, sizeof t);
    env2_status st = parse_idx(buf, len, &t, &off, e);
    if (st) return st;
    t.data = env2_malloc(len - off);
    if (!t.data) return env2_fail(e, ENV2_E_NOMEM, "idx: out of memory for %zu bytes", len - off);
    if (len > off) memcpy(t.data, (const unsigned char *)buf + off, len - off);
    *a = t;
    return ENV2_OK;
}

env2_status idx_load(const char *path, idx_array *a, env2_err *e)
{
    unsigned char *buf;
    size_t len, off;
    idx_array t;
    if (!a) return env2_fail(e, ENV2_E_INVALID_ARG, "idx_load: NULL array");
    memset(a, 0, sizeof *a);
    env2_status st = io_read_maybe_gz(path, &buf, &len, e);
    if (st) return st;
    memset(&t, 0, sizeof t);
    st = parse_idx(buf, len, &t, &off, e);
    if (st) {
        env2_free(buf);
        return env2_err_prefix(e, st, "%s", path);
    }
    /* reuse the file buffer: the data moves to its front */
    memmove(buf, buf + off, len - off);
    unsigned char *shrunk = env2_realloc(buf, len - off ? len - off : 1);
    t.data = shrunk ? shrunk : buf;
    *a = t;
    return ENV2_OK;
}

void idx_free(idx_array *a)
{
    if (!a) return;
    env2_free(a->data);
    memset(a, 0, sizeof *a);
}
