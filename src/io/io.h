/* File formats: safetensors (weights and checkpoints), .npy arrays, gzip,
 * MNIST-style IDX files and CIFAR binary batches, plus the small strict JSON
 * reader that safetensors headers need.
 *
 * Everything here treats its input as hostile: lengths and offsets are
 * checked before use, arithmetic is done in size_t/int64 with overflow
 * checks, and failures return an env2_status with a message naming the
 * tensor, key or byte offset at fault.  Nothing is read or written outside
 * the buffers involved, and nothing leaks on any error path (including
 * allocation failures injected through env2_fail_alloc_after). */
#ifndef ENV2_IO_H
#define ENV2_IO_H

#include <stdio.h>

#include "common.h"

/* ==== safetensors ========================================================= */

/* The first seven values are fixed (other modules switch on them); the rest
 * are further safetensors dtypes that can be stored, copied and read as
 * integers but not converted to float. */
typedef enum {
    ST_F32 = 0, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_U8,
    ST_I8, ST_I16, ST_U16, ST_U32, ST_U64, ST_BOOL, ST_F8_E4M3, ST_F8_E5M2,
    ST_NUM_DTYPES
} st_dtype;

#define ST_MAX_DIMS 8
/* Same limit as the reference implementation: real headers are a few
 * hundred kilobytes; anything near this is an attack or corruption. */
#define ST_MAX_HEADER 100000000ULL

typedef struct st_tensor {
    char *name;            /* NUL-terminated UTF-8 */
    int dtype;             /* st_dtype */
    int ndim;              /* 0..ST_MAX_DIMS; 0 is a scalar with one element */
    int64_t shape[ST_MAX_DIMS];
    size_t offset;         /* data_offsets[0]: relative to data_start, NOT to buf */
    size_t nbytes;         /* data_offsets[1] - data_offsets[0] */
} st_tensor;

typedef struct st_file {   /* parsed safetensors file, data held in memory */
    unsigned char *buf;
    size_t len;
    int owns_buf;
    size_t data_start;     /* 8 + header length */
    st_tensor *tensors;    /* in header order */
    int count;
    char **meta_keys;      /* "__metadata__" string map, header order */
    char **meta_vals;
    int nmeta;
    /* private */
    char *strings_;        /* storage of every name, key and value above */
    st_tensor **by_name_;  /* tensors sorted by name for st_find */
} st_file;

/* Reads the whole file into memory and parses it (f owns the buffer). */
env2_status st_open_file(st_file *f, const char *path, env2_err *e);
/* Parses a buffer in place: it is not copied and must outlive f. */
env2_status st_open_memory(st_file *f, const void *data, size_t len, env2_err *e);
/* Releases everything f owns and zeroes it; safe on a zeroed or failed f. */
void st_close(st_file *f);
/* Tensor by name (binary search), NULL if absent. */
const st_tensor *st_find(const st_file *f, const char *name);
/* Elements of a tensor: product of its shape, 1 for a scalar. */
int64_t st_numel(const st_tensor *t);
/* Address of a tensor's first byte (may be unaligned). */
const void *st_data(const st_file *f, const st_tensor *t);
/* Bytes per element of a dtype, 0 for an invalid value. */
size_t st_dtype_size(int dtype);
/* "F32", "BF16", ...; "?" for an invalid value. */
const char *st_dtype_name(int dtype);
/* Converts F32/F16/BF16/F64 to float32 (exactly, except F64 rounding);
 * ENV2_E_DTYPE for other dtypes; ENV2_E_SHAPE if numel != count. */
env2_status st_read_f32(const st_file *f, const st_tensor *t, float *dst, size_t count, env2_err *e);
/* Reads integer dtypes as int64 (U64 above INT64_MAX is ENV2_E_DTYPE), and
 * float dtypes whose values are all integers; ENV2_E_SHAPE if numel != count. */
env2_status st_read_i64(const st_file *f, const st_tensor *t, int64_t *dst, size_t count, env2_err *e);
/* Metadata value for key, NULL if absent. */
const char *st_meta(const st_file *f, const char *key);

/* Exact conversions between float32 and the 16-bit formats; to-16-bit
 * rounds to nearest even, keeps inf and turns every NaN into a quiet NaN. */
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t b);
uint16_t st_f32_to_f16(float f);
uint16_t st_f32_to_bf16(float f);

typedef struct st_writer st_writer;   /* opaque */
env2_status st_writer_create(st_writer **w, env2_err *e);
/* data is NOT copied: it must stay valid until save; name is copied.  data
 * is in host byte order (converted to little-endian when written); it may be
 * NULL only when the tensor has no elements.  Names must be unique, valid
 * UTF-8 and not "__metadata__". */
env2_status st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                          const void *data, env2_err *e);
/* Sets a metadata entry; setting a key again replaces its value. */
env2_status st_writer_meta(st_writer *w, const char *key, const char *value, env2_err *e);
/* Writes <path>.tmp.<pid> then rename(): a failure never leaves a partial file at path. */
env2_status st_writer_save(const st_writer *w, const char *path, env2_err *e);
/* Whole file in one buffer; free with env2_free. */
env2_status st_writer_to_memory(const st_writer *w, void **data, size_t *len, env2_err *e);
void st_writer_destroy(st_writer *w);

/* ==== npy ================================================================= */

typedef struct npy_array {
    int dtype;             /* st_dtype */
    int ndim;
    int64_t shape[8];
    void *data;            /* env2_malloc'd, host byte order */
} npy_array;

/* Versions 1.0, 2.0 and 3.0; dtypes <f4 <f8 <f2 |u1 |i1 |b1 <i2 <u2 <i4 <u4
 * <i8 <u8; C order only.  On failure *a is zeroed. */
env2_status npy_load(const char *path, npy_array *a, env2_err *e);
env2_status npy_load_memory(const void *buf, size_t len, npy_array *a, env2_err *e);
void npy_free(npy_array *a);   /* safe on a zeroed array; zeroes it */
int64_t npy_numel(const npy_array *a);
/* Any numeric dtype to float32, env2_malloc'd. */
env2_status npy_to_f32(const npy_array *a, float **out, env2_err *e);
/* Integer (and bool) arrays only; every value must fit in int32. */
env2_status npy_to_i32(const npy_array *a, int32_t **out, env2_err *e);
/* Writes version 1.0, little-endian, C order, atomically (temp + rename). */
env2_status npy_save(const char *path, st_dtype dtype, int ndim, const int64_t *shape, const void *data, env2_err *e);

/* ==== raw files, gzip, DEFLATE ============================================ */

/* Whole file into an env2_malloc'd buffer (one extra NUL byte is allocated
 * but not counted in *len). */
env2_status io_read_file(const char *path, unsigned char **data, size_t *len, env2_err *e);
/* gzip (RFC 1952) to an env2_malloc'd buffer; checks header flags, CRC32 and
 * ISIZE; consecutive members are concatenated; trailing zero bytes are
 * ignored, other trailing bytes are an error. */
env2_status io_gunzip(const unsigned char *in, size_t inlen, unsigned char **out, size_t *outlen, env2_err *e);
/* Raw DEFLATE stream (RFC 1951).  *consumed (may be NULL) receives the bytes
 * of input used, up to the end of the final block's last byte. */
env2_status io_inflate(const unsigned char *in, size_t inlen, size_t *consumed, unsigned char **out, size_t *outlen,
                       env2_err *e);
/* Reads a file, transparently gunzipping if it starts with 1f 8b. */
env2_status io_read_maybe_gz(const char *path, unsigned char **data, size_t *len, env2_err *e);
/* CRC-32 (IEEE, as gzip and zlib): start with crc = 0. */
uint32_t io_crc32(uint32_t crc, const void *data, size_t len);

/* Writing a file so that a failure never leaves a partial file at path:
 * io_atomic_open creates <path>.tmp.<pid>; io_atomic_commit flushes, syncs
 * and renames it over path; io_atomic_abort (also after a failed write or
 * commit, and safe to call twice) removes it. */
typedef struct io_atomic {
    FILE *fp;
    char *tmp;
    char *path;
} io_atomic;
env2_status io_atomic_open(io_atomic *a, const char *path, env2_err *e);
env2_status io_atomic_write(io_atomic *a, const void *data, size_t len, env2_err *e);
env2_status io_atomic_commit(io_atomic *a, env2_err *e);
void io_atomic_abort(io_atomic *a);

/* ==== IDX (MNIST / Fashion-MNIST) ========================================= */

/* Plain or .gz; unsigned byte data (type 0x08) with 1 to 4 dimensions,
 * e.g. magic 0x00000801 (labels) or 0x00000803 (images).  dims[0] = count. */
typedef struct idx_array {
    int ndim;
    int64_t dims[4];
    uint8_t *data;
} idx_array;
env2_status idx_load(const char *path, idx_array *a, env2_err *e);
env2_status idx_load_memory(const void *buf, size_t len, idx_array *a, env2_err *e);
void idx_free(idx_array *a);

/* ==== CIFAR =============================================================== */

/* CIFAR-10 / CIFAR-100 binary batches (plain or .gz): records of <label
 * byte(s)><3072 bytes CHW>.  Output images HWC uint8 [count][32][32][3];
 * labels int32 (CIFAR-100: the fine label), both env2_malloc'd.  Labels are
 * checked (< 10 or < 100).  Outputs are untouched on failure. */
env2_status cifar_load(const char *path, int cifar100, uint8_t **images, int32_t **labels, int64_t *count,
                       env2_err *e);
env2_status cifar_load_memory(const void *buf, size_t len, int cifar100, uint8_t **images, int32_t **labels,
                              int64_t *count, env2_err *e);

/* ==== JSON (strict RFC 8259 pull reader) ================================== */

/* Reads a JSON text front to back without building a tree, so memory stays
 * at one buffer of the text's size (decoded strings) however the input is
 * shaped.  Strings are decoded (escapes, surrogate pairs) into that buffer,
 * NUL-terminated, and stay valid until json_reader_free; raw UTF-8 is
 * validated; "\u0000" is rejected because the results are C strings.
 * Errors are ENV2_E_FORMAT with the byte offset. */
typedef struct json_reader {
    const char *s;
    size_t len, pos;
    char *sbuf;
    size_t scap, sused;
} json_reader;

enum { JSON_EOF = 0, JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT, JSON_INVALID };

env2_status json_reader_init(json_reader *r, const char *text, size_t len, env2_err *e);
void json_reader_free(json_reader *r);
/* Hands the string buffer (every string returned so far) to the caller, who
 * frees it with env2_free; the reader no longer frees it. */
char *json_reader_take_strings(json_reader *r);
/* Type of the next value, after skipping whitespace. */
int json_peek(json_reader *r);
env2_status json_begin_object(json_reader *r, env2_err *e);
/* Iterates members: *index starts at 0 and is advanced by the call.  Sets
 * *has = 1 and *key (after consuming ':') when a member follows, *has = 0
 * after consuming the closing '}'. */
env2_status json_next_member(json_reader *r, int *index, int *has, const char **key, env2_err *e);
env2_status json_begin_array(json_reader *r, env2_err *e);
/* Like json_next_member for arrays: *has = 1 when an element follows. */
env2_status json_next_element(json_reader *r, int *index, int *has, env2_err *e);
env2_status json_read_string(json_reader *r, const char **out, size_t *len, env2_err *e);
/* An integer literal (no fraction or exponent) that fits in int64. */
env2_status json_read_int64(json_reader *r, int64_t *out, env2_err *e);
env2_status json_read_number(json_reader *r, double *out, env2_err *e);
env2_status json_read_bool(json_reader *r, int *out, env2_err *e);
env2_status json_read_null(json_reader *r, env2_err *e);
/* Validates and skips one value of any type (nesting depth at most 256). */
env2_status json_skip_value(json_reader *r, env2_err *e);
/* Only whitespace may follow. */
env2_status json_end(json_reader *r, env2_err *e);
/* 1 if s[0..len) is valid UTF-8 (no overlongs, surrogates or values above
 * U+10FFFF), else 0. */
int json_valid_utf8(const char *s, size_t len);

#endif
