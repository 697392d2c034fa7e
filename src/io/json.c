/* Strict JSON (RFC 8259) pull reader.  The caller drives it value by value,
 * so a hostile header can make it do work proportional to its length but
 * never allocate more than one buffer of that length. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"

#define JSON_MAX_DEPTH 256

static env2_status jfail(const json_reader *r, env2_err *e, const char *what)
{
    if (r->pos >= r->len) return env2_fail(e, ENV2_E_FORMAT, "invalid JSON: %s at byte %zu (end of text)", what, r->pos);
    return env2_fail(e, ENV2_E_FORMAT, "invalid JSON: %s at byte %zu", what, r->pos);
}

env2_status json_reader_init(json_reader *r, const char *text, size_t len, env2_err *e)
{
    memset(r, 0, sizeof *r);
    if (!text && len) return env2_fail(e, ENV2_E_INVALID_ARG, "json: NULL text");
    if (len == SIZE_MAX) return env2_fail(e, ENV2_E_INVALID_ARG, "json: text too long");
    /* Every decoded string plus its NUL is no longer than its quoted source
     * text, and each source byte is decoded at most once, so len + 1 bytes
     * always suffice. */
    r->sbuf = env2_malloc(len + 1);
    if (!r->sbuf) return env2_fail(e, ENV2_E_NOMEM, "json: out of memory for %zu bytes of strings", len + 1);
    r->s = text;
    r->len = len;
    r->scap = len + 1;
    return ENV2_OK;
}

void json_reader_free(json_reader *r)
{
    if (!r) return;
    env2_free(r->sbuf);
    memset(r, 0, sizeof *r);
}

char *json_reader_take_strings(json_reader *r)
{
    char *p = r->sbuf;
    r->sbuf = NULL;
    r->scap = r->sused = 0;
    return p;
}

static void skip_ws(json_reader *r)
{
    while (r->pos < r->len) {
        char c = r->s[r->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        r->pos++;
    }
}

int json_peek(json_reader *r)
{
    skip_ws(r);
    if (r->pos >= r->len) return JSON_EOF;
    switch (r->s[r->pos]) {
    case 'n': return JSON_NULL;
    case 't': case 'f': return JSON_BOOL;
    case '"': return JSON_STRING;
    case '[': return JSON_ARRAY;
    case '{': return JSON_OBJECT;
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9': return JSON_NUMBER;
    default: return JSON_INVALID;
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex4(json_reader *r, unsigned *out)
{
    unsigned v = 0;
    if (r->len - r->pos < 4) return 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(r->s[r->pos + (size_t)i]);
        if (h < 0) return 0;
        v = v * 16 + (unsigned)h;
    }
    r->pos += 4;
    *out = v;
    return 1;
}

/* Length of the valid UTF-8 sequence at p (at most avail bytes), 0 if
 * invalid: overlong forms, surrogates and code points above U+10FFFF are
 * rejected as RFC 3629 requires. */
static size_t utf8_len(const unsigned char *p, size_t avail)
{
    unsigned c = p[0];
    if (c < 0x80) return 1;
    if (c < 0xC2 || c > 0xF4) return 0;
    if (c < 0xE0) {
        if (avail < 2 || (p[1] & 0xC0) != 0x80) return 0;
        return 2;
    }
    if (c < 0xF0) {
        if (avail < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && p[1] < 0xA0) return 0;
        if (c == 0xED && p[1] >= 0xA0) return 0;
        return 3;
    }
    if (avail < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
    if (c == 0xF0 && p[1] < 0x90) return 0;
    if (c == 0xF4 && p[1] >= 0x90) return 0;
    return 4;
}

int json_valid_utf8(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        size_t k = utf8_len((const unsigned char *)s + i, len - i);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

static size_t put_utf8(char *d, unsigned cp)
{
    if (cp < 0x80) {
        d[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (char)(0xC0 | (cp >> 6));
        d[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (char)(0xE0 | (cp >> 12));
        d[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        d[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    d[0] = (char)(0xF0 | (cp >> 18));
    d[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    d[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    d[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parses a string at r->pos.  With store, the decoded text goes to sbuf. */
static env2_status parse_string(json_reader *r, int store, const char **out, size_t *outlen, env2_err *e)
{
    if (r->pos >= r->len || r->s[r->pos] != '"') return jfail(r, e, "expected a string");
    size_t start = r->pos;
    r->pos++;
    char *d = store ? r->sbuf + r->sused : NULL;
    size_t n = 0;
    char tmp[4];
    for (;;) {
        if (r->pos >= r->len) {
            r->pos = start;
            return jfail(r, e, "unterminated string starting");
        }
        unsigned char c = (unsigned char)r->s[r->pos];
        if (c == '"') {
            r->pos++;
            break;
        }
        if (c < 0x20) return jfail(r, e, "control character in string");
        if (c == '\\') {
            if (r->len - r->pos < 2) {
                r->pos = r->len;
                return jfail(r, e, "truncated escape");
            }
            char x = r->s[r->pos + 1];
            char one = 0;
            switch (x) {
            case '"': one = '"'; break;
            case '\\': one = '\\'; break;
            case '/': one = '/'; break;
            case 'b': one = '\b'; break;
            case 'f': one = '\f'; break;
            case 'n': one = '\n'; break;
            case 'r': one = '\r'; break;
            case 't': one = '\t'; break;
            case 'u': break;
            default: r->pos++; return jfail(r, e, "invalid escape");
            }
            if (x != 'u') {
                if (d) d[n] = one;
                n++;
                r->pos += 2;
                continue;
            }
            r->pos += 2;
            unsigned cp;
            if (!read_hex4(r, &cp)) return jfail(r, e, "invalid \\u escape");
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                r->pos -= 6;
                return jfail(r, e, "unpaired low surrogate");
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (r->len - r->pos < 6 || r->s[r->pos] != '\\' || r->s[r->pos + 1] != 'u') {
                    r->pos -= 6;
                    return jfail(r, e, "unpaired high surrogate");
                }
                r->pos += 2;
                if (!read_hex4(r, &lo)) return jfail(r, e, "invalid \\u escape");
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    r->pos -= 12;
                    return jfail(r, e, "unpaired high surrogate");
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0) {
                r->pos -= 6;
                return jfail(r, e, "\\u0000 (NUL) in string");
            }
            size_t k = put_utf8(tmp, cp);
            if (d) memcpy(d + n, tmp, k);
            n += k;
            continue;
        }
        size_t k = utf8_len((const unsigned char *)r->s + r->pos, r->len - r->pos);
        if (!k) return jfail(r, e, "invalid UTF-8 in string");
        if (d) memcpy(d + n, r->s + r->pos, k);
        n += k;
        r->pos += k;
    }
    if (d) {
        d[n] = '\0';
        r->sused += n + 1;
        if (out) *out = d;
    }
    if (outlen) *outlen = n;
    return ENV2_OK;
}

env2_status json_read_string(json_reader *r, const char **out, size_t *len, env2_err *e)
{
    skip_ws(r);
    return parse_string(r, 1, out, len, e);
}

/* Scans a number's extent per the JSON grammar; *is_int says whether it has
 * neither fraction nor exponent. */
static env2_status scan_number(json_reader *r, size_t *end, int *is_int, env2_err *e)
{
    size_t p = r->pos;
    const char *s = r->s;
    *is_int = 1;
    if (p < r->len && s[p] == '-') p++;
    if (p >= r->len || s[p] < '0' || s[p] > '9') {
        r->pos = p;
        return jfail(r, e, "invalid number");
    }
    if (s[p] == '0') {
        p++;
        if (p < r->len && s[p] >= '0' && s[p] <= '9') {
            r->pos = p;
            return jfail(r, e, "leading zero in number");
        }
    } else {
        while (p < r->len && s[p] >= '0' && s[p] <= '9') p++;
    }
    if (p < r->len && s[p] == '.') {
        *is_int = 0;
        p++;
        if (p >= r->len || s[p] < '0' || s[p] > '9') {
            r->pos = p;
            return jfail(r, e, "digit expected after '.'");
        }
        while (p < r->len && s[p] >= '0' && s[p] <= '9') p++;
    }
    if (p < r->len && (s[p] == 'e' || s[p] == 'E')) {
        *is_int = 0;
        p++;
        if (p < r->len && (s[p] == '+' || s[p] == '-')) p++;
        if (p >= r->len || s[p] < '0' || s[p] > '9') {
            r->pos = p;
            return jfail(r, e, "digit expected in exponent");
        }
        while (p < r->len && s[p] >= '0' && s[p] <= '9') p++;
    }
    *end = p;
    return ENV2_OK;
}

env2_status json_read_int64(json_reader *r, int64_t *out, env2_err *e)
{
    size_t end;
    int is_int;
    skip_ws(r);
    env2_status st = scan_number(r, &end, &is_int, e);
    if (st) return st;
    if (!is_int) return jfail(r, e, "expected an integer");
    size_t p = r->pos;
    int neg = r->s[p] == '-';
    if (neg) p++;
    uint64_t v = 0;
    const uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; p < end; p++) {
        unsigned dgt = (unsigned)(r->s[p] - '0');
        if (v > (lim - dgt) / 10) return jfail(r, e, "integer out of the 64-bit range");
        v = v * 10 + dgt;
    }
    if (neg) *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    else *out = (int64_t)v;
    r->pos = end;
    return ENV2_OK;
}

/* Locale-independent (strtod would follow LC_NUMERIC): up to 19 significant
 * digits scaled by a power of ten, within a few ulp of the exact value. */
env2_status json_read_number(json_reader *r, double *out, env2_err *e)
{
    size_t end, p;
    int is_int, neg, digits = 0;
    long exp10 = 0;
    uint64_t mant = 0;
    skip_ws(r);
    env2_status st = scan_number(r, &end, &is_int, e);
    if (st) return st;
    const char *s = r->s;
    p = r->pos;
    neg = s[p] == '-';
    if (neg) p++;
    for (; p < end && s[p] >= '0' && s[p] <= '9'; p++) {
        if (digits < 19) {
            mant = mant * 10 + (uint64_t)(s[p] - '0');
            if (mant) digits++;
        } else {
            exp10++;
        }
    }
    if (p < end && s[p] == '.') {
        for (p++; p < end && s[p] >= '0' && s[p] <= '9'; p++) {
            if (digits < 19) {
                mant = mant * 10 + (uint64_t)(s[p] - '0');
                if (mant) digits++;
                exp10--;
            }
        }
    }
    if (p < end && (s[p] == 'e' || s[p] == 'E')) {
        int eneg = 0;
        long ev = 0;
        p++;
        if (s[p] == '+' || s[p] == '-') eneg = s[p++] == '-';
        for (; p < end; p++)
            if (ev < 100000) ev = ev * 10 + (s[p] - '0');
        exp10 += eneg ? -ev : ev;
    }
    double v = (double)mant;
    if (mant && exp10) {
        /* two steps keep 10^exp10 finite where the result still is */
        if (exp10 < -300) {
            v *= 1e-300;
            exp10 += 300;
        } else if (exp10 > 300) {
            v *= 1e300;
            exp10 -= 300;
        }
        v *= pow(10.0, (double)exp10);
    }
    *out = neg ? -v : v;
    r->pos = end;
    return ENV2_OK;
}

static int match_word(json_reader *r, const char *w)
{
    size_t n = strlen(w);
    if (r->len - r->pos < n || memcmp(r->s + r->pos, w, n) != 0) return 0;
    r->pos += n;
    return 1;
}

env2_status json_read_bool(json_reader *r, int *out, env2_err *e)
{
    skip_ws(r);
    if (match_word(r, "true")) *out = 1;
    else if (match_word(r, "false")) *out = 0;
    else return jfail(r, e, "expected true or false");
    return ENV2_OK;
}

env2_status json_read_null(json_reader *r, env2_err *e)
{
    skip_ws(r);
    if (!match_word(r, "null")) return jfail(r, e, "expected null");
    return ENV2_OK;
}

static env2_status expect_char(json_reader *r, char c, const char *what, env2_err *e)
{
    skip_ws(r);
    if (r->pos >= r->len || r->s[r->pos] != c) return jfail(r, e, what);
    r->pos++;
    return ENV2_OK;
}

env2_status json_begin_object(json_reader *r, env2_err *e) { return expect_char(r, '{', "expected '{'", e); }
env2_status json_begin_array(json_reader *r, env2_err *e) { return expect_char(r, '[', "expected '['", e); }

/* Shared by objects and arrays: handles the separator or the closing
 * bracket before element *index. */
static env2_status next_item(json_reader *r, int *index, int *has, char close, env2_err *e)
{
    skip_ws(r);
    if (r->pos >= r->len) return jfail(r, e, close == '}' ? "unterminated object" : "unterminated array");
    char c = r->s[r->pos];
    if (c == close) {
        r->pos++;
        *has = 0;
        return ENV2_OK;
    }
    if (*index > 0) {
        if (c != ',') return jfail(r, e, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
        r->pos++;
        skip_ws(r);
        if (r->pos < r->len && r->s[r->pos] == close) return jfail(r, e, "trailing comma");
    }
    if (*index == INT_MAX) return jfail(r, e, "too many elements");
    (*index)++;
    *has = 1;
    return ENV2_OK;
}

env2_status json_next_member(json_reader *r, int *index, int *has, const char **key, env2_err *e)
{
    env2_status st = next_item(r, index, has, '}', e);
    if (st || !*has) return st;
    skip_ws(r);
    if (r->pos >= r->len || r->s[r->pos] != '"') return jfail(r, e, "expected a string key");
    if ((st = parse_string(r, 1, key, NULL, e))) return st;
    return expect_char(r, ':', "expected ':' after key", e);
}

env2_status json_next_element(json_reader *r, int *index, int *has, env2_err *e)
{
    env2_status st = next_item(r, index, has, ']', e);
    if (st || !*has) return st;
    skip_ws(r);
    return ENV2_OK;
}

static env2_status skip_rec(json_reader *r, int depth, env2_err *e)
{
    env2_status st;
    int idx = 0, has = 0;
    size_t end;
    int is_int;
    if (depth > JSON_MAX_DEPTH) return jfail(r, e, "nesting too deep");
    switch (json_peek(r)) {
    case JSON_NULL: return json_read_null(r, e);
    case JSON_BOOL: {
        int b;
        return json_read_bool(r, &b, e);
    }
    case JSON_STRING: return parse_string(r, 0, NULL, NULL, e);
    case JSON_NUMBER:
        if ((st = scan_number(r, &end, &is_int, e))) return st;
        r->pos = end;
        return ENV2_OK;
    case JSON_ARRAY:
        r->pos++;
        for (;;) {
            if ((st = next_item(r, &idx, &has, ']', e))) return st;
            if (!has) return ENV2_OK;
            if ((st = skip_rec(r, depth + 1, e))) return st;
        }
    case JSON_OBJECT:
        r->pos++;
        for (;;) {
            if ((st = next_item(r, &idx, &has, '}', e))) return st;
            if (!has) return ENV2_OK;
            skip_ws(r);
            if (r->pos >= r->len || r->s[r->pos] != '"') return jfail(r, e, "expected a string key");
            if ((st = parse_string(r, 0, NULL, NULL, e))) return st;
            if ((st = expect_char(r, ':', "expected ':' after key", e))) return st;
            if ((st = skip_rec(r, depth + 1, e))) return st;
        }
    case JSON_EOF: return jfail(r, e, "value expected");
    default: return jfail(r, e, "unexpected character");
    }
}

env2_status json_skip_value(json_reader *r, env2_err *e) { return skip_rec(r, 0, e); }

env2_status json_end(json_reader *r, env2_err *e)
{
    skip_ws(r);
    if (r->pos != r->len) return jfail(r, e, "unexpected data after the top-level value");
    return ENV2_OK;
}
