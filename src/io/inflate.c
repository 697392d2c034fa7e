/* DEFLATE (RFC 1951) and gzip (RFC 1952) decoding, CRC-32, and the
 * whole-file read and atomic write helpers the format readers share.
 *
 * Decoding is table driven: a literal/length code is resolved with one
 * lookup of 10 bits (two for the rare longer codes) giving the symbol, its
 * length base and its extra-bit count at once.  The bit buffer is refilled
 * eight bytes at a time; near the end of the input it is padded with zero
 * bytes that are counted, so reading past the end is detected as truncation
 * instead of touching memory after the input. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io.h"

/* ---- CRC-32 ---------------------------------------------------------------
 * Slicing-by-8 tables are built per call (about 2k iterations): cheaper than
 * the decode it accompanies, and free of lazy-initialisation races. */
typedef struct crc_tables {
    uint32_t t[8][256];
} crc_tables;

static void crc_init(crc_tables *c)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t v = i;
        for (int k = 0; k < 8; k++) v = (v & 1) ? (v >> 1) ^ 0xEDB88320u : v >> 1;
        c->t[0][i] = v;
    }
    for (int s = 1; s < 8; s++)
        for (int i = 0; i < 256; i++) c->t[s][i] = (c->t[s - 1][i] >> 8) ^ c->t[0][c->t[s - 1][i] & 0xFF];
}

static uint32_t crc_run(const crc_tables *c, uint32_t crc, const unsigned char *p, size_t n)
{
    crc = ~crc;
    while (n >= 8) {
        uint32_t a = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        uint32_t b = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        crc = c->t[7][a & 0xFF] ^ c->t[6][(a >> 8) & 0xFF] ^ c->t[5][(a >> 16) & 0xFF] ^ c->t[4][a >> 24] ^
              c->t[3][b & 0xFF] ^ c->t[2][(b >> 8) & 0xFF] ^ c->t[1][(b >> 16) & 0xFF] ^ c->t[0][b >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ c->t[0][(crc ^ *p++) & 0xFF];
    return ~crc;
}

uint32_t io_crc32(uint32_t crc, const void *data, size_t len)
{
    crc_tables c;
    crc_init(&c);
    return crc_run(&c, crc, data, len);
}

/* ---- Huffman tables -------------------------------------------------------
 * Entry: bits 0-7 code bits to consume, 8-11 extra bits (or subtable index
 * bits), 12-15 kind, 16-31 value (literal, length/distance base, subtable
 * offset). */
enum { K_LIT = 0, K_BASE = 1, K_EOB = 2, K_SUB = 3, K_BAD = 4 };
#define ENT(val, kind, extra) (((uint32_t)(val) << 16) | ((uint32_t)(kind) << 12) | ((uint32_t)(extra) << 8))
#define E_BITS(x) ((x) & 0xFFu)
#define E_EXTRA(x) (((x) >> 8) & 0xFu)
#define E_KIND(x) (((x) >> 12) & 0xFu)
#define E_VAL(x) ((x) >> 16)

#define LIT_ROOT 10
#define DIST_ROOT 8
#define CL_ROOT 7
/* Root table plus one subtable of 2^(15-root) entries per symbol longer
 * than root bits: an upper bound that needs no search for "enough". */
#define LIT_TABLE ((1 << LIT_ROOT) + 288 * (1 << (15 - LIT_ROOT)))
#define DIST_TABLE ((1 << DIST_ROOT) + 32 * (1 << (15 - DIST_ROOT)))

static const uint16_t len_base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                      31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t dist_base[30] = {1,    2,    3,    4,    5,    7,     9,     13,    17,  25,
                                       33,   49,   65,   97,   129,  193,   257,   385,   513, 769,
                                       1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6,
                                       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

static uint32_t lit_sym(int s)
{
    if (s < 256) return ENT(s, K_LIT, 0);
    if (s == 256) return ENT(0, K_EOB, 0);
    if (s <= 285) return ENT(len_base[s - 257], K_BASE, len_extra[s - 257]);
    return ENT(0, K_BAD, 0); /* 286 and 287 exist only to complete the fixed code */
}

static uint32_t dist_sym(int s)
{
    if (s < 30) return ENT(dist_base[s], K_BASE, dist_extra[s]);
    return ENT(0, K_BAD, 0);
}

static uint32_t cl_sym(int s) { return ENT(s, K_LIT, 0); }

typedef enum { CODE_CL, CODE_LIT, CODE_DIST } code_type;

/* Builds a decoding table from code lengths.  Returns 0 or a negative
 * value: -1 over-subscribed, -2 incomplete.  As zlib, an incomplete code is
 * accepted only for literal/length and distance codes made of a single
 * one-bit code; unused entries then decode as K_BAD. */
static int build_table(uint32_t *table, size_t cap, int root, const uint8_t *lens, int n, code_type type)
{
    int count[16] = {0}, next[16];
    uint16_t sub_off[1 << LIT_ROOT];
    int maxlen = 0;
    for (int i = 0; i < n; i++) count[lens[i]]++;
    for (int l = 15; l > 0; l--)
        if (count[l]) {
            maxlen = l;
            break;
        }
    for (int i = 0; i < (1 << root); i++) table[i] = ENT(0, K_BAD, 0) | 1;
    if (maxlen == 0) return 0;
    int left = 1;
    for (int l = 1; l <= 15; l++) {
        left <<= 1;
        left -= count[l];
        if (left < 0) return -1;
    }
    if (left > 0 && (type == CODE_CL || maxlen != 1)) return -2;
    count[0] = 0;
    int code = 0;
    for (int l = 1; l <= 15; l++) {
        code = (code + count[l - 1]) << 1;
        next[l] = code;
    }
    memset(sub_off, 0, sizeof(uint16_t) << root);
    size_t used = (size_t)1 << root;
    int subbits = maxlen > root ? maxlen - root : 0;
    for (int s = 0; s < n; s++) {
        int len = lens[s];
        if (!len) continue;
        unsigned c = (unsigned)next[len]++, rev = 0;
        for (int b = 0; b < len; b++) rev |= ((c >> b) & 1u) << (len - 1 - b);
        uint32_t ent = type == CODE_LIT ? lit_sym(s) : type == CODE_DIST ? dist_sym(s) : cl_sym(s);
        if (len <= root) {
            for (unsigned i = rev; i < (1u << root); i += 1u << len) table[i] = ent | (uint32_t)len;
        } else {
            unsigned p = rev & ((1u << root) - 1);
            if (!sub_off[p]) {
                if (used + ((size_t)1 << subbits) > cap) return -1;
                sub_off[p] = (uint16_t)used;
                table[p] = ENT(used, K_SUB, subbits) | (uint32_t)root;
                for (size_t i = 0; i < ((size_t)1 << subbits); i++) table[used + i] = ENT(0, K_BAD, 0) | 1;
                used += (size_t)1 << subbits;
            }
            int l2 = len - root;
            for (unsigned i = rev >> root; i < (1u << subbits); i += 1u << l2)
                table[sub_off[p] + i] = ent | (uint32_t)l2;
        }
    }
    return 0;
}

/* ---- decoder state ------------------------------------------------------- */

typedef struct inflater {
    const unsigned char *in;
    size_t inlen, pos;
    size_t pad;            /* zero bytes fed after the end of the input */
    uint64_t bb;           /* bit buffer, next bit in bit 0 */
    unsigned bc;           /* valid bits in bb */
    unsigned char *out;
    size_t outlen, outcap;
    size_t base;           /* start of the current stream in out (distances stop there) */
    int fixed_ready;
    uint32_t lit[LIT_TABLE];
    uint32_t dist[DIST_TABLE];
    uint32_t cl[1 << CL_ROOT];
    env2_err *e;
} inflater;

static uint64_t load64le(const unsigned char *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

static env2_status truncated(const inflater *s)
{
    return env2_fail(s->e, ENV2_E_FORMAT, "deflate: truncated stream (input ends at byte %zu)", s->inlen);
}

/* Ensures at least 56 bits in the buffer.  Returns nonzero if bits past the
 * end of the input have already been consumed. */
static int refill_slow(inflater *s)
{
    while (s->bc <= 56) {
        if (s->pos < s->inlen) s->bb |= (uint64_t)s->in[s->pos++] << s->bc;
        else s->pad++;
        s->bc += 8;
    }
    return s->pad * 8 > s->bc;
}

static inline int refill(inflater *s)
{
    if (s->bc >= 56) return 0;
    if (s->inlen - s->pos >= 8) {
        s->bb |= load64le(s->in + s->pos) << s->bc;
        s->pos += (63 - s->bc) >> 3;
        s->bc |= 56;
        return 0;
    }
    return refill_slow(s);
}

static inline uint32_t getbits(inflater *s, unsigned n) /* n <= 32, after refill */
{
    uint32_t v = (uint32_t)(s->bb & ((1ull << n) - 1));
    s->bb >>= n;
    s->bc -= n;
    return v;
}

/* Byte-aligns and gives the whole bytes still buffered back to the input,
 * so stored blocks and trailers can be read directly.  Returns nonzero if
 * padding had been consumed (truncated input). */
static int unbuffer(inflater *s)
{
    s->bb >>= s->bc & 7;
    s->bc &= ~7u;
    size_t bytes = s->bc / 8;
    if (s->pad > bytes) return 1;
    s->pos -= bytes - s->pad;
    s->pad = 0;
    s->bb = 0;
    s->bc = 0;
    return 0;
}

static env2_status grow(inflater *s, size_t need)
{
    if (need <= s->outcap) return ENV2_OK;
    size_t cap = s->outcap < 4096 ? 4096 : s->outcap;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    unsigned char *p = env2_realloc(s->out, cap);
    if (!p) return env2_fail(s->e, ENV2_E_NOMEM, "deflate: out of memory for %zu bytes of output", cap);
    s->out = p;
    s->outcap = cap;
    return ENV2_OK;
}

/* room for the longest match plus the 8-byte over-copy */
#define OUT_MARGIN (258 + 8)

/* The hot loop keeps the bit buffer and output cursor in locals: stores
 * through the unsigned char output pointer may alias anything, so fields of
 * *s would be reloaded after every byte written. */
static env2_status decode_huffman(inflater *s)
{
    const uint32_t *lit = s->lit, *dist = s->dist;
    const unsigned char *in = s->in;
    const size_t inlen = s->inlen, base = s->base;
    size_t pos = s->pos, op = s->outlen, cap = s->outcap;
    unsigned char *out = s->out;
    uint64_t bb = s->bb;
    unsigned bc = s->bc;
    env2_status st = ENV2_OK;
#define SAVE() (s->pos = pos, s->outlen = op, s->bb = bb, s->bc = bc)
#define LOAD() (pos = s->pos, op = s->outlen, bb = s->bb, bc = s->bc, out = s->out, cap = s->outcap)
    for (;;) {
        if (cap - op < OUT_MARGIN) {
            SAVE();
            if (op > SIZE_MAX - OUT_MARGIN) return env2_fail(s->e, ENV2_E_FORMAT, "deflate: output too large");
            if ((st = grow(s, op + OUT_MARGIN))) return st;
            LOAD();
        }
        /* one refill covers the worst case of 15+5 length and 15+13
         * distance bits */
        if (bc < 56) {
            if (inlen - pos >= 8) {
                bb |= load64le(in + pos) << bc;
                pos += (63 - bc) >> 3;
                bc |= 56;
            } else {
                SAVE();
                if (refill_slow(s)) return truncated(s);
                LOAD();
            }
        }
        uint32_t e = lit[bb & ((1u << LIT_ROOT) - 1)];
        if (E_KIND(e) == K_SUB) {
            bb >>= LIT_ROOT;
            bc -= LIT_ROOT;
            e = lit[E_VAL(e) + (bb & ((1u << E_EXTRA(e)) - 1))];
        }
        bb >>= E_BITS(e);
        bc -= E_BITS(e);
        unsigned kind = E_KIND(e);
        if (kind == K_LIT) {
            out[op++] = (unsigned char)E_VAL(e);
            /* after a refill at least 56 - 15 bits remain: enough for a
             * second literal from the root table without refilling */
            if (bc >= LIT_ROOT) {
                e = lit[bb & ((1u << LIT_ROOT) - 1)];
                if (E_KIND(e) == K_LIT) {
                    bb >>= E_BITS(e);
                    bc -= E_BITS(e);
                    out[op++] = (unsigned char)E_VAL(e);
                }
            }
            continue;
        }
        if (kind == K_EOB) {
            SAVE();
            return ENV2_OK;
        }
        if (kind != K_BASE) {
            SAVE();
            return env2_fail(s->e, ENV2_E_FORMAT, "deflate: invalid literal/length code near input byte %zu", pos);
        }
        unsigned ex = E_EXTRA(e);
        size_t len = E_VAL(e) + (size_t)(bb & ((1u << ex) - 1));
        bb >>= ex;
        bc -= ex;
        e = dist[bb & ((1u << DIST_ROOT) - 1)];
        if (E_KIND(e) == K_SUB) {
            bb >>= DIST_ROOT;
            bc -= DIST_ROOT;
            e = dist[E_VAL(e) + (bb & ((1u << E_EXTRA(e)) - 1))];
        }
        bb >>= E_BITS(e);
        bc -= E_BITS(e);
        if (E_KIND(e) != K_BASE) {
            SAVE();
            return env2_fail(s->e, ENV2_E_FORMAT, "deflate: invalid distance code near input byte %zu", pos);
        }
        ex = E_EXTRA(e);
        size_t d = E_VAL(e) + (size_t)(bb & ((1u << ex) - 1));
        bb >>= ex;
        bc -= ex;
        if (d > op - base) {
            SAVE();
            return env2_fail(s->e, ENV2_E_FORMAT, "deflate: distance %zu too far back at output byte %zu", d, op - base);
        }
        unsigned char *dst = out + op;
        const unsigned char *src = dst - d;
        if (d >= 8) {
            /* each 8-byte chunk reads only bytes already final, since the
             * source trails the destination by at least 8 */
            for (size_t i = 0; i < len; i += 8) memcpy(dst + i, src + i, 8);
        } else if (d == 1) {
            memset(dst, src[0], len);
        } else {
            for (size_t i = 0; i < len; i++) dst[i] = src[i];
        }
        op += len;
    }
#undef SAVE
#undef LOAD
}

static env2_status stored_block(inflater *s)
{
    if (unbuffer(s)) return truncated(s);
    if (s->inlen - s->pos < 4) return truncated(s);
    const unsigned char *p = s->in + s->pos;
    unsigned len = (unsigned)p[0] | (unsigned)p[1] << 8, nlen = (unsigned)p[2] | (unsigned)p[3] << 8;
    if ((len ^ 0xFFFFu) != nlen)
        return env2_fail(s->e, ENV2_E_FORMAT, "deflate: stored block length check failed at input byte %zu", s->pos);
    s->pos += 4;
    if (s->inlen - s->pos < len) return truncated(s);
    if (s->outlen > SIZE_MAX - len - OUT_MARGIN) return env2_fail(s->e, ENV2_E_FORMAT, "deflate: output too large");
    env2_status st = grow(s, s->outlen + len + OUT_MARGIN);
    if (st) return st;
    memcpy(s->out + s->outlen, s->in + s->pos, len);
    s->outlen += len;
    s->pos += len;
    return ENV2_OK;
}

static env2_status fixed_tables(inflater *s)
{
    uint8_t lens[288];
    if (s->fixed_ready) return ENV2_OK;
    for (int i = 0; i < 144; i++) lens[i] = 8;
    for (int i = 144; i < 256; i++) lens[i] = 9;
    for (int i = 256; i < 280; i++) lens[i] = 7;
    for (int i = 280; i < 288; i++) lens[i] = 8;
    build_table(s->lit, LIT_TABLE, LIT_ROOT, lens, 288, CODE_LIT);
    for (int i = 0; i < 32; i++) lens[i] = 5;
    build_table(s->dist, DIST_TABLE, DIST_ROOT, lens, 32, CODE_DIST);
    s->fixed_ready = 1;
    return ENV2_OK;
}

static env2_status dynamic_tables(inflater *s)
{
    static const uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    uint8_t cl_lens[19] = {0}, lens[286 + 30];
    size_t at = s->pos;
    s->fixed_ready = 0;
    if (refill(s)) return truncated(s);
    unsigned hlit = getbits(s, 5) + 257, hdist = getbits(s, 5) + 1, hclen = getbits(s, 4) + 4;
    if (hlit > 286 || hdist > 30)
        return env2_fail(s->e, ENV2_E_FORMAT, "deflate: too many length or distance symbols (%u, %u) near input byte %zu",
                         hlit, hdist, at);
    for (unsigned i = 0; i < hclen; i++) {
        if (refill(s)) return truncated(s);
        cl_lens[order[i]] = (uint8_t)getbits(s, 3);
    }
    if (build_table(s->cl, 1 << CL_ROOT, CL_ROOT, cl_lens, 19, CODE_CL))
        return env2_fail(s->e, ENV2_E_FORMAT, "deflate: invalid code-length code near input byte %zu", at);
    unsigned n = 0, total = hlit + hdist;
    while (n < total) {
        if (refill(s)) return truncated(s);
        uint32_t e = s->cl[s->bb & ((1u << CL_ROOT) - 1)];
        if (E_KIND(e) != K_LIT)
            return env2_fail(s->e, ENV2_E_FORMAT, "deflate: invalid code-length symbol near input byte %zu", s->pos);
        getbits(s, E_BITS(e));
        unsigned sym = E_VAL(e), rep;
        uint8_t val = 0;
        if (sym < 16) {
            lens[n++] = (uint8_t)sym;
            continue;
        }
        if (sym == 16) {
            if (n == 0)
                return env2_fail(s->e, ENV2_E_FORMAT, "deflate: repeat of a code length with none before it");
            val = lens[n - 1];
            rep = 3 + getbits(s, 2);
        } else if (sym == 17) {
            rep = 3 + getbits(s, 3);
        } else {
            rep = 11 + getbits(s, 7);
        }
        if (rep > total - n)
            return env2_fail(s->e, ENV2_E_FORMAT, "deflate: code-length repeat runs past the end near input byte %zu",
                             s->pos);
        memset(lens + n, val, rep);
        n += rep;
    }
    if (lens[256] == 0) return env2_fail(s->e, ENV2_E_FORMAT, "deflate: missing end-of-block code");
    if (build_table(s->lit, LIT_TABLE, LIT_ROOT, lens, (int)hlit, CODE_LIT))
        return env2_fail(s->e, ENV2_E_FORMAT, "deflate: invalid literal/length code lengths near input byte %zu", at);
    if (build_table(s->dist, DIST_TABLE, DIST_ROOT, lens + hlit, (int)hdist, CODE_DIST))
        return env2_fail(s->e, ENV2_E_FORMAT, "deflate: invalid distance code lengths near input byte %zu", at);
    return ENV2_OK;
}

/* Decodes one DEFLATE stream starting at s->pos and leaves s->pos at the
 * byte after its final block. */
static env2_status inflate_stream(inflater *s)
{
    env2_status st;
    int final;
    s->base = s->outlen;
    s->bb = 0;
    s->bc = 0;
    s->pad = 0;
    do {
        if (refill(s)) return truncated(s);
        final = (int)getbits(s, 1);
        unsigned type = getbits(s, 2);
        if (type == 0) st = stored_block(s);
        else if (type == 1) {
            if ((st = fixed_tables(s)) == ENV2_OK) st = decode_huffman(s);
        } else if (type == 2) {
            if ((st = dynamic_tables(s)) == ENV2_OK) st = decode_huffman(s);
        } else {
            st = env2_fail(s->e, ENV2_E_FORMAT, "deflate: invalid block type 3 near input byte %zu", s->pos);
        }
        if (st) return st;
    } while (!final);
    if (unbuffer(s)) return truncated(s);
    return ENV2_OK;
}

static inflater *inflater_new(const unsigned char *in, size_t inlen, size_t hint, env2_err *e)
{
    inflater *s = env2_malloc(sizeof *s);
    if (!s) {
        env2_fail(e, ENV2_E_NOMEM, "deflate: out of memory for the decoder");
        return NULL;
    }
    memset(s, 0, offsetof(inflater, lit));
    s->in = in;
    s->inlen = inlen;
    s->e = e;
    if (hint > SIZE_MAX - OUT_MARGIN) hint = SIZE_MAX - OUT_MARGIN;
    if (grow(s, hint + OUT_MARGIN)) {
        env2_free(s);
        return NULL;
    }
    return s;
}

static void inflater_finish(inflater *s, unsigned char **out, size_t *outlen)
{
    /* the margin and growth slack are given back; if shrinking fails the
     * larger block is still correct */
    unsigned char *p = env2_realloc(s->out, s->outlen ? s->outlen : 1);
    *out = p ? p : s->out;
    *outlen = s->outlen;
    env2_free(s);
}

env2_status io_inflate(const unsigned char *in, size_t inlen, size_t *consumed, unsigned char **out, size_t *outlen,
                       env2_err *e)
{
    if ((!in && inlen) || !out || !outlen) return env2_fail(e, ENV2_E_INVALID_ARG, "io_inflate: NULL argument");
    /* typical DEFLATE ratios are 3-5x; the buffer grows if needed */
    size_t hint = inlen < SIZE_MAX / 4 ? inlen * 4 : inlen;
    inflater *s = inflater_new(in, inlen, hint, e);
    if (!s) return ENV2_E_NOMEM;
    env2_status st = inflate_stream(s);
    if (st) {
        env2_free(s->out);
        env2_free(s);
        return st;
    }
    if (consumed) *consumed = s->pos;
    inflater_finish(s, out, outlen);
    return ENV2_OK;
}

/* ---- gzip ---------------------------------------------------------------- */

static uint32_t rd32le(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Parses a member header at *pos; advances *pos to the DEFLATE data. */
static env2_status gzip_header(const unsigned char *in, size_t inlen, size_t *pos, const crc_tables *crc, env2_err *e)
{
    size_t p = *pos, start = p;
    if (inlen - p < 10) return env2_fail(e, ENV2_E_FORMAT, "gzip: truncated header at byte %zu", start);
    if (in[p] != 0x1f || in[p + 1] != 0x8b)
        return env2_fail(e, ENV2_E_FORMAT, "gzip: bad magic %02x %02x at byte %zu", in[p], in[p + 1], start);
    if (in[p + 2] != 8) return env2_fail(e, ENV2_E_FORMAT, "gzip: unknown compression method %u", in[p + 2]);
    unsigned flg = in[p + 3];
    if (flg & 0xE0) return env2_fail(e, ENV2_E_FORMAT, "gzip: reserved header flags set (0x%02x)", flg);
    p += 10;
    if (flg & 4) { /* FEXTRA */
        if (inlen - p < 2) return env2_fail(e, ENV2_E_FORMAT, "gzip: truncated extra field");
        size_t xlen = (size_t)in[p] | (size_t)in[p + 1] << 8;
        p += 2;
        if (inlen - p < xlen) return env2_fail(e, ENV2_E_FORMAT, "gzip: truncated extra field");
        p += xlen;
    }
    for (unsigned bit = 8; bit <= 16; bit <<= 1) { /* FNAME, FCOMMENT: NUL-terminated */
        if (!(flg & bit)) continue;
        const unsigned char *z = memchr(in + p, 0, inlen - p);
        if (!z)
            return env2_fail(e, ENV2_E_FORMAT, "gzip: unterminated %s in header", bit == 8 ? "file name" : "comment");
        p = (size_t)(z - in) + 1;
    }
    if (flg & 2) { /* FHCRC: low 16 bits of the CRC-32 of the header so far */
        if (inlen - p < 2) return env2_fail(e, ENV2_E_FORMAT, "gzip: truncated header CRC");
        uint32_t want = (uint32_t)in[p] | (uint32_t)in[p + 1] << 8;
        if ((crc_run(crc, 0, in + start, p - start) & 0xFFFFu) != want)
            return env2_fail(e, ENV2_E_FORMAT, "gzip: header CRC mismatch");
        p += 2;
    }
    *pos = p;
    return ENV2_OK;
}

env2_status io_gunzip(const unsigned char *in, size_t inlen, unsigned char **out, size_t *outlen, env2_err *e)
{
    if ((!in && inlen) || !out || !outlen) return env2_fail(e, ENV2_E_INVALID_ARG, "io_gunzip: NULL argument");
    if (inlen < 18) return env2_fail(e, ENV2_E_FORMAT, "gzip: %zu bytes is too short for a gzip file", inlen);
    crc_tables *crc = env2_malloc(sizeof *crc);
    if (!crc) return env2_fail(e, ENV2_E_NOMEM, "gzip: out of memory");
    crc_init(crc);
    /* ISIZE of the last member is the output size modulo 2^32 for the usual
     * single-member file; it is only a capacity hint, bounded by the
     * maximum DEFLATE expansion so a forged value cannot force a huge
     * allocation. */
    size_t hint = rd32le(in + inlen - 4);
    if (inlen <= SIZE_MAX / 1032 && hint > inlen * 1032) hint = inlen * 4;
    inflater *s = inflater_new(in, inlen, hint, e);
    env2_status st = ENV2_OK;
    if (!s) {
        env2_free(crc);
        return ENV2_E_NOMEM;
    }
    size_t pos = 0;
    int members = 0;
    for (;;) {
        if ((st = gzip_header(in, inlen, &pos, crc, e))) break;
        s->pos = pos;
        size_t begin = s->outlen;
        if ((st = inflate_stream(s))) break;
        pos = s->pos;
        if (inlen - pos < 8) {
            st = env2_fail(e, ENV2_E_FORMAT, "gzip: truncated trailer (CRC32/ISIZE) at byte %zu", pos);
            break;
        }
        uint32_t want_crc = rd32le(in + pos), want_size = rd32le(in + pos + 4);
        uint32_t got_crc = crc_run(crc, 0, s->out + begin, s->outlen - begin);
        if (got_crc != want_crc) {
            st = env2_fail(e, ENV2_E_FORMAT, "gzip: CRC32 mismatch (stored %08x, computed %08x)", (unsigned)want_crc,
                           (unsigned)got_crc);
            break;
        }
        if ((uint32_t)(s->outlen - begin) != want_size) {
            st = env2_fail(e, ENV2_E_FORMAT, "gzip: ISIZE mismatch (stored %u, decoded %zu bytes)", (unsigned)want_size,
                           s->outlen - begin);
            break;
        }
        pos += 8;
        members++;
        if (inlen - pos >= 2 && in[pos] == 0x1f && in[pos + 1] == 0x8b) continue;
        /* as gzip(1): zero padding after the last member (tape blocks) is fine */
        size_t q = pos;
        while (q < inlen && in[q] == 0) q++;
        if (q != inlen)
            st = env2_fail(e, ENV2_E_FORMAT, "gzip: %zu bytes of trailing garbage after member %d at byte %zu",
                           inlen - pos, members, pos);
        break;
    }
    env2_free(crc);
    if (st) {
        env2_free(s->out);
        env2_free(s);
        return st;
    }
    inflater_finish(s, out, outlen);
    return ENV2_OK;
}

/* ---- files --------------------------------------------------------------- */

env2_status io_read_file(const char *path, unsigned char **data, size_t *len, env2_err *e)
{
    if (!path || !data || !len) return env2_fail(e, ENV2_E_INVALID_ARG, "io_read_file: NULL argument");
    FILE *fp = fopen(path, "rb");
    if (!fp) return env2_fail(e, ENV2_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    size_t n = 0, cap = 65536;
    env2_status st = ENV2_OK;
    if (fstat(fileno(fp), &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) {
            fclose(fp);
            return env2_fail(e, ENV2_E_IO, "%s: is a directory", path);
        }
        if (S_ISREG(sb.st_mode) && sb.st_size >= 0) {
            if ((uint64_t)sb.st_size >= (uint64_t)SIZE_MAX / 2) {
                fclose(fp);
                return env2_fail(e, ENV2_E_NOMEM, "%s: file of %lld bytes is too large for memory", path,
                                 (long long)sb.st_size);
            }
            cap = (size_t)sb.st_size + 1;
        }
    }
    /* One read for regular files (480 MB weights included); pipes and files
     * that grow while being read fall back to doubling.  The extra byte keeps
     * room for a terminating NUL. */
    unsigned char *buf = env2_malloc(cap);
    if (!buf) {
        fclose(fp);
        return env2_fail(e, ENV2_E_NOMEM, "%s: out of memory for %zu bytes", path, cap);
    }
    for (;;) {
        if (n + 1 >= cap) {
            /* full: only grow if there really is more */
            int c = fgetc(fp);
            if (c == EOF) {
                if (ferror(fp)) st = env2_fail(e, ENV2_E_IO, "%s: read error after %zu bytes: %s", path, n, strerror(errno));
                break;
            }
            if (cap > SIZE_MAX / 2) {
                st = env2_fail(e, ENV2_E_NOMEM, "%s: file too large for memory", path);
                break;
            }
            unsigned char *nb = env2_realloc(buf, cap * 2);
            if (!nb) {
                st = env2_fail(e, ENV2_E_NOMEM, "%s: out of memory for %zu bytes", path, cap * 2);
                break;
            }
            buf = nb;
            cap *= 2;
            buf[n++] = (unsigned char)c;
        }
        size_t want = cap - 1 - n, got = fread(buf + n, 1, want, fp);
        n += got;
        if (got < want) {
            if (ferror(fp)) st = env2_fail(e, ENV2_E_IO, "%s: read error after %zu bytes: %s", path, n, strerror(errno));
            break;
        }
    }
    fclose(fp);
    if (st) {
        env2_free(buf);
        return st;
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return ENV2_OK;
}

env2_status io_read_maybe_gz(const char *path, unsigned char **data, size_t *len, env2_err *e)
{
    unsigned char *raw, *out;
    size_t rlen, olen;
    env2_status st = io_read_file(path, &raw, &rlen, e);
    if (st) return st;
    if (rlen < 2 || raw[0] != 0x1f || raw[1] != 0x8b) {
        *data = raw;
        *len = rlen;
        return ENV2_OK;
    }
    st = io_gunzip(raw, rlen, &out, &olen, e);
    env2_free(raw);
    if (st) return env2_err_prefix(e, st, "%s", path);
    *data = out;
    *len = olen;
    return ENV2_OK;
}

env2_status io_atomic_open(io_atomic *a, const char *path, env2_err *e)
{
    memset(a, 0, sizeof *a);
    if (!path || !*path) return env2_fail(e, ENV2_E_INVALID_ARG, "empty output path");
    size_t n = strlen(path);
    char *p = env2_malloc(n + 1), *tmp = env2_malloc(n + 32);
    if (!p || !tmp) {
        env2_free(p);
        env2_free(tmp);
        return env2_fail(e, ENV2_E_NOMEM, "%s: out of memory", path);
    }
    memcpy(p, path, n + 1);
    snprintf(tmp, n + 32, "%s.tmp.%ld", path, (long)getpid());
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        env2_status st = env2_fail(e, ENV2_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
        env2_free(p);
        env2_free(tmp);
        return st;
    }
    a->fp = fp;
    a->tmp = tmp;
    a->path = p;
    return ENV2_OK;
}

env2_status io_atomic_write(io_atomic *a, const void *data, size_t len, env2_err *e)
{
    if (!a->fp) return env2_fail(e, ENV2_E_STATE, "write to a closed file");
    if (len && fwrite(data, 1, len, a->fp) != len)
        return env2_fail(e, ENV2_E_IO, "%s: write failed: %s", a->tmp, strerror(errno));
    return ENV2_OK;
}

env2_status io_atomic_commit(io_atomic *a, env2_err *e)
{
    if (!a->fp) return env2_fail(e, ENV2_E_STATE, "commit of a closed file");
    env2_status st = ENV2_OK;
    if (fflush(a->fp) != 0 || ferror(a->fp))
        st = env2_fail(e, ENV2_E_IO, "%s: write failed: %s", a->tmp, strerror(errno));
    /* the data must be on disk before the rename makes it the file at path,
     * or a crash could leave an empty file where a good one was */
    else if (fsync(fileno(a->fp)) != 0 && errno != EINVAL && errno != EROFS)
        st = env2_fail(e, ENV2_E_IO, "%s: fsync failed: %s", a->tmp, strerror(errno));
    int rc = fclose(a->fp);
    a->fp = NULL;
    if (!st && rc != 0) st = env2_fail(e, ENV2_E_IO, "%s: close failed: %s", a->tmp, strerror(errno));
    if (!st && rename(a->tmp, a->path) != 0)
        st = env2_fail(e, ENV2_E_IO, "%s: cannot rename to %s: %s", a->tmp, a->path, strerror(errno));
    if (st) {
        io_atomic_abort(a);
        return st;
    }
    env2_free(a->tmp);
    env2_free(a->path);
    memset(a, 0, sizeof *a);
    return ENV2_OK;
}

/* After io_atomic_open succeeded, tmp exists on disk until commit renames it
 * (which then clears *a), so a non-NULL tmp means there is a file to remove. */
void io_atomic_abort(io_atomic *a)
{
    if (!a) return;
    if (a->fp) fclose(a->fp);
    if (a->tmp) remove(a->tmp);
    env2_free(a->tmp);
    env2_free(a->path);
    memset(a, 0, sizeof *a);
}
