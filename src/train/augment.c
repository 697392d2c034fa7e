/* Image pipeline around RandAugment: random-resized crop, bilinear resize,
 * flip, normalization, and batch Mixup / CutMix (spec §5.1, §5.3).
 *
 * Random numbers: each sample derives a key from (seed, ENV2_STREAM_AUGMENT,
 * counter); its draws are then env2_rng(key, ENV2_STREAM_AUGMENT, part << 32
 * | j) with one part per pipeline step, so changing e.g. the crop settings
 * never shifts the flip or RandAugment draws of the same sample. */
#include "augment.h"

#include <math.h>
#include <string.h>

enum { PART_CROP = 1, PART_FLIP = 2, PART_RANDAUG = 3 };
#define PART(p) ((uint64_t)(p) << 32)

#define MAX_OUT 16384
#define MAX_LAYERS 64
/* tf.image.sample_distorted_bounding_box's default max_attempts */
#define CROP_ATTEMPTS 100

void aug_config_default(aug_config *c, int out_size, int channels)
{
    if (!c) return;
    (void)channels; /* every channel gets the same defaults */
    memset(c, 0, sizeof *c);
    c->out_h = c->out_w = out_size;
    c->random_crop = 1;
    c->area_min = 0.05f;
    c->area_max = 1.0f;
    c->aspect_min = 3.0f / 4.0f;
    c->aspect_max = 4.0f / 3.0f;
    c->hflip = 1;
    c->randaug_layers = 2;
    c->randaug_magnitude = 0.0f;
    for (int i = 0; i < 4; i++) {
        c->mean[i] = 0.5f;
        c->std[i] = 0.5f;
    }
}

size_t aug_scratch_size(int h, int w, int c, const aug_config *cfg)
{
    (void)h;
    (void)w;
    if (!cfg || cfg->out_h < 1 || cfg->out_w < 1 || c < 1) return 0;
    /* the uint8 image RandAugment works on plus the same again for ops that
     * cannot work in place; independent of the source size because the crop
     * is resampled straight from the source */
    return 2 * (size_t)cfg->out_h * (size_t)cfg->out_w * (size_t)c;
}

static uint64_t sample_key(uint64_t seed, uint64_t counter) { return env2_rng_u64(seed, ENV2_STREAM_AUGMENT, counter); }

/* One attempt of TensorFlow's GenerateRandomCrop (sample_distorted_bounding_
 * box_op.cc): for a drawn aspect ratio, the crop height is uniform over the
 * integers whose rounded area fits [min_area, max_area], the width is
 * round(height * aspect).  Rounding is lrintf as in TF. */
static int try_crop(int W, int H, float min_rel, float max_rel, float aspect, env2_rng *r, int *y0, int *x0,
                    int *ch, int *cw)
{
    const float min_area = min_rel * (float)W * (float)H;
    const float max_area = max_rel * (float)W * (float)H;
    int height = (int)lrintf(sqrtf(min_area / aspect));
    int max_height = (int)lrintf(sqrtf(max_area / aspect));
    if (lrintf((float)max_height * aspect) > W) {
        const float eps = 0.0000001f;
        max_height = (int)(((double)W + 0.5 - (double)eps) / (double)aspect);
        if (lrintf((float)max_height * aspect) > W) max_height -= 1;
    }
    if (max_height > H) max_height = H;
    if (height >= max_height) height = max_height;
    if (height < max_height) height += (int)env2_rng_next_below(r, (uint32_t)(max_height - height + 1));
    int width = (int)lrintf((float)height * aspect);
    float area = (float)width * (float)height;
    if (area < min_area) {
        height += 1;
        width = (int)lrintf((float)height * aspect);
        area = (float)width * (float)height;
    }
    if (area < min_area || area > max_area) return 0;
    if (width > W || height > H || width <= 0 || height <= 0) return 0;
    /* TF draws the offset from [0, H - height), never touching the bottom
     * and right edges; the inclusive range keeps the crop unbiased */
    *y0 = height < H ? (int)env2_rng_next_below(r, (uint32_t)(H - height + 1)) : 0;
    *x0 = width < W ? (int)env2_rng_next_below(r, (uint32_t)(W - width + 1)) : 0;
    *ch = height;
    *cw = width;
    return 1;
}

int aug_sample_crop(int h, int w, const aug_config *cfg, uint64_t seed, uint64_t counter, int *y0, int *x0, int *ch,
                    int *cw)
{
    int by = 0, bx = 0, bh = h, bw = w, found = 0;
    /* the bounds keep every intermediate height and width well inside int */
    if (cfg && h > 0 && w > 0 && (size_t)h * (size_t)w <= ((size_t)1 << 31) && cfg->area_min >= 0.0f &&
        cfg->area_min <= cfg->area_max && cfg->area_max > 0.0f && cfg->area_max <= 1.0f &&
        cfg->aspect_min >= 0.01f && cfg->aspect_min <= cfg->aspect_max && cfg->aspect_max <= 100.0f) {
        env2_rng r = env2_rng_make(sample_key(seed, counter), ENV2_STREAM_AUGMENT, PART(PART_CROP));
        for (int a = 0; a < CROP_ATTEMPTS && !found; a++) {
            float aspect = env2_rng_next_uniform(&r) * (cfg->aspect_max - cfg->aspect_min) + cfg->aspect_min;
            found = try_crop(w, h, cfg->area_min, cfg->area_max, aspect, &r, &by, &bx, &bh, &bw);
        }
        if (!found) {
            by = bx = 0;
            bh = h;
            bw = w;
        }
    }
    if (y0) *y0 = by;
    if (x0) *x0 = bx;
    if (ch) *ch = bh;
    if (cw) *cw = bw;
    return found;
}

/* Half-pixel source coordinate and its two neighbours, as TensorFlow's
 * compute_interpolation_weights (which agrees with PyTorch's clamping). */
static inline void interp(int o, float scale, int in_size, int *lo, int *hi, float *frac)
{
    float in = ((float)o + 0.5f) * scale - 0.5f;
    float f = floorf(in);
    int l = (int)f, u = (int)ceilf(in);
    *lo = l < 0 ? 0 : l;
    *hi = u > in_size - 1 ? in_size - 1 : u;
    *frac = in - f;
}

/* Columns are processed in blocks whose interpolation tables live on the
 * stack: computing them once per block instead of once per pixel halves the
 * cost of the resize, which dominates the pipeline for small images. */
#define RESIZE_BLOCK 128

void aug_resize_bilinear(const uint8_t *src, int h, int w, int c, int y0, int x0, int ch, int cw, float *dst,
                         int out_h, int out_w, int flip)
{
    (void)h;
    const size_t srow = (size_t)w * (size_t)c, cc = (size_t)c;
    const uint8_t *base = src + (size_t)y0 * srow + (size_t)x0 * cc;
    const float sy = (float)ch / (float)out_h, sx = (float)cw / (float)out_w;
    size_t xlo[RESIZE_BLOCK], xhi[RESIZE_BLOCK];
    float xl[RESIZE_BLOCK];
    for (int bx = 0; bx < out_w; bx += RESIZE_BLOCK) {
        int nb = out_w - bx < RESIZE_BLOCK ? out_w - bx : RESIZE_BLOCK;
        for (int j = 0; j < nb; j++) {
            int lo, hi;
            interp(bx + j, sx, cw, &lo, &hi, &xl[j]);
            xlo[j] = (size_t)lo * cc;
            xhi[j] = (size_t)hi * cc;
        }
        for (int oy = 0; oy < out_h; oy++) {
            int ylo, yhi;
            float yl;
            interp(oy, sy, ch, &ylo, &yhi, &yl);
            const uint8_t *top = base + (size_t)ylo * srow, *bot = base + (size_t)yhi * srow;
            float *orow = dst + (size_t)oy * (size_t)out_w * cc;
            for (int j = 0; j < nb; j++) {
                int ox = bx + j;
                float *o = orow + (size_t)(flip ? out_w - 1 - ox : ox) * cc;
                const uint8_t *tl = top + xlo[j], *tr = top + xhi[j], *bl = bot + xlo[j], *br = bot + xhi[j];
                const float f = xl[j];
                for (int k = 0; k < c; k++) {
                    float t = (float)tl[k] + ((float)tr[k] - (float)tl[k]) * f;
                    float b = (float)bl[k] + ((float)br[k] - (float)bl[k]) * f;
                    o[k] = t + (b - t) * yl;
                }
            }
        }
    }
}

static env2_status check_config(const aug_config *cfg, int c, env2_err *e)
{
    if (cfg->out_h < 1 || cfg->out_w < 1 || cfg->out_h > MAX_OUT || cfg->out_w > MAX_OUT)
        return env2_fail(e, ENV2_E_INVALID_ARG, "aug_image: output size %dx%d outside [1, %d]", cfg->out_h, cfg->out_w,
                         MAX_OUT);
    for (int k = 0; k < c; k++)
        if (!isfinite(cfg->mean[k]) || !isfinite(cfg->std[k]) || cfg->std[k] == 0.0f)
            return env2_fail(e, ENV2_E_INVALID_ARG, "aug_image: channel %d: mean %g / std %g must be finite, std != 0",
                             k, (double)cfg->mean[k], (double)cfg->std[k]);
    if (!cfg->random_crop) return ENV2_OK;
    if (!(cfg->area_min > 0.0f && cfg->area_min <= cfg->area_max && cfg->area_max <= 1.0f))
        return env2_fail(e, ENV2_E_INVALID_ARG, "aug_image: crop area range [%g, %g] must satisfy 0 < min <= max <= 1",
                         (double)cfg->area_min, (double)cfg->area_max);
    if (!(cfg->aspect_min >= 0.01f && cfg->aspect_min <= cfg->aspect_max && cfg->aspect_max <= 100.0f))
        return env2_fail(e, ENV2_E_INVALID_ARG,
                         "aug_image: crop aspect range [%g, %g] must satisfy 0.01 <= min <= max <= 100",
                         (double)cfg->aspect_min, (double)cfg->aspect_max);
    if (cfg->randaug_layers < 0 || cfg->randaug_layers > MAX_LAYERS)
        return env2_fail(e, ENV2_E_INVALID_ARG, "aug_image: randaug_layers %d outside [0, %d]", cfg->randaug_layers,
                         MAX_LAYERS);
    if (!(cfg->randaug_magnitude >= 0.0f && cfg->randaug_magnitude <= RA_MAX_MAGNITUDE))
        return env2_fail(e, ENV2_E_INVALID_ARG, "aug_image: randaug_magnitude %g outside [0, 30]",
                         (double)cfg->randaug_magnitude);
    if (cfg->randaug_ref_size < 0 || cfg->randaug_ref_size > 65536)
        return env2_fail(e, ENV2_E_INVALID_ARG, "aug_image: randaug_ref_size %d outside [0, 65536]",
                         cfg->randaug_ref_size);
    return ENV2_OK;
}

env2_status aug_image(const uint8_t *src, int h, int w, int c, const aug_config *cfg, uint64_t seed,
                      uint64_t counter, float *dst, void *scratch, env2_err *e)
{
    if (!src || !cfg || !dst) return env2_fail(e, ENV2_E_INVALID_ARG, "aug_image: NULL src, cfg or dst");
    if (h < 1 || w < 1 || (size_t)h * (size_t)w > ((size_t)1 << 31))
        return env2_fail(e, ENV2_E_INVALID_ARG, "aug_image: bad source size %dx%d", h, w);
    if (c != 1 && c != 3) return env2_fail(e, ENV2_E_INVALID_ARG, "aug_image: %d channels (1 or 3 supported)", c);
    env2_status st = check_config(cfg, c, e);
    if (st != ENV2_OK) return st;

    const int oh = cfg->out_h, ow = cfg->out_w;
    const size_t n = (size_t)oh * (size_t)ow * (size_t)c;
    float scale[4], shift[4];
    for (int k = 0; k < c; k++) {
        scale[k] = 1.0f / (255.0f * cfg->std[k]);
        shift[k] = -cfg->mean[k] / cfg->std[k];
    }

    if (!cfg->random_crop) {
        aug_resize_bilinear(src, h, w, c, 0, 0, h, w, dst, oh, ow, 0);
        for (size_t i = 0; i < n; i += (size_t)c)
            for (int k = 0; k < c; k++) dst[i + k] = dst[i + k] * scale[k] + shift[k];
        return ENV2_OK;
    }

    const uint64_t key = sample_key(seed, counter);
    int y0, x0, ch, cw;
    aug_sample_crop(h, w, cfg, seed, counter, &y0, &x0, &ch, &cw);
    int flip = cfg->hflip && env2_rng_uniform(key, ENV2_STREAM_AUGMENT, PART(PART_FLIP)) < 0.5f;
    aug_resize_bilinear(src, h, w, c, y0, x0, ch, cw, dst, oh, ow, flip);

    if (cfg->randaug_layers == 0 || cfg->randaug_magnitude == 0.0f) {
        /* no uint8 round trip: the official pipeline only quantizes when an
         * augmentation policy is active */
        for (size_t i = 0; i < n; i += (size_t)c)
            for (int k = 0; k < c; k++) dst[i + k] = dst[i + k] * scale[k] + shift[k];
        return ENV2_OK;
    }

    void *owned = NULL;
    if (!scratch) {
        owned = scratch = env2_malloc(2 * n);
        if (!scratch) return env2_fail(e, ENV2_E_NOMEM, "aug_image: cannot allocate %zu bytes of scratch", 2 * n);
    }
    uint8_t *img = scratch, *tmp = img + n;
    /* clip to [0, 255] and truncate, as tf.cast(float -> uint8) after clip_by_value */
    for (size_t i = 0; i < n; i++) {
        float v = dst[i];
        img[i] = v <= 0.0f ? 0 : (v >= 255.0f ? 255 : (uint8_t)v);
    }
    float px_scale = cfg->randaug_ref_size > 0 ? (float)(oh < ow ? oh : ow) / (float)cfg->randaug_ref_size : 1.0f;
    ra_randaugment(img, oh, ow, c, cfg->randaug_layers, cfg->randaug_magnitude, px_scale, key, PART(PART_RANDAUG),
                   tmp);
    if (c == 1) {
        float lut[256];
        for (int v = 0; v < 256; v++) lut[v] = (float)v * scale[0] + shift[0];
        for (size_t i = 0; i < n; i++) dst[i] = lut[img[i]];
    } else {
        float lut[3][256];
        for (int k = 0; k < 3; k++)
            for (int v = 0; v < 256; v++) lut[k][v] = (float)v * scale[k] + shift[k];
        for (size_t i = 0; i < n; i += 3) {
            dst[i] = lut[0][img[i]];
            dst[i + 1] = lut[1][img[i + 1]];
            dst[i + 2] = lut[2][img[i + 2]];
        }
    }
    env2_free(owned);
    return ENV2_OK;
}

/* ---- Mixup / CutMix ------------------------------------------------------- */

/* Mixup over elements [off, off + m), partner = reverse within the range.
 * Each pair is rewritten from the originals of both members, so the in-place
 * update equals the official out-of-place one. */
static void mixup_range(float *x, size_t img, float *t, int K, int off, int m, double alpha, uint64_t key)
{
    for (int a = 0; a < m / 2; a++) {
        int i = off + a, j = off + m - 1 - a;
        env2_rng ri = env2_rng_make(key, ENV2_STREAM_MIXUP, (uint64_t)i << 32);
        env2_rng rj = env2_rng_make(key, ENV2_STREAM_MIXUP, (uint64_t)j << 32);
        float li = (float)env2_rng_beta(&ri, alpha, alpha), lj = (float)env2_rng_beta(&rj, alpha, alpha);
        li = li > 1.0f - li ? li : 1.0f - li;
        lj = lj > 1.0f - lj ? lj : 1.0f - lj;
        float *xi = x + (size_t)i * img, *xj = x + (size_t)j * img;
        for (size_t k = 0; k < img; k++) {
            float p = xi[k], q = xj[k];
            xi[k] = p * li + q * (1.0f - li);
            xj[k] = q * lj + p * (1.0f - lj);
        }
        float *ti = t + (size_t)i * (size_t)K, *tj = t + (size_t)j * (size_t)K;
        for (int k = 0; k < K; k++) {
            float p = ti[k], q = tj[k];
            ti[k] = p * li + q * (1.0f - li);
            tj[k] = q * lj + p * (1.0f - lj);
        }
    }
}

typedef struct box {
    int y1, y2, x1, x2;
} box;

/* datasets.py cutmix_mask: centre uniform over the pixels, patch side
 * int(sqrt(1 - a) * size) with a ~ Beta(alpha, alpha), half sides by integer
 * division, clipped to the image. */
static box cutmix_box(uint64_t key, int i, int h, int w, double alpha)
{
    env2_rng r = env2_rng_make(key, ENV2_STREAM_MIXUP, (uint64_t)i << 32);
    int rx = (int)env2_rng_next_below(&r, (uint32_t)w);
    int ry = (int)env2_rng_next_below(&r, (uint32_t)h);
    double a = env2_rng_beta(&r, alpha, alpha);
    float ratio = (float)sqrt(1.0 - a);
    int rw = (int)(ratio * (float)w), rh = (int)(ratio * (float)h);
    box b;
    b.x1 = env2_clampi(rx - rw / 2, 0, w);
    b.y1 = env2_clampi(ry - rh / 2, 0, h);
    b.x2 = env2_clampi(rx + rw / 2, 0, w);
    b.y2 = env2_clampi(ry + rh / 2, 0, h);
    return b;
}

static void cutmix_range(float *x, int h, int w, int c, float *t, int K, int off, int m, double alpha, uint64_t key)
{
    const size_t img = (size_t)h * (size_t)w * (size_t)c;
    for (int a = 0; a < m / 2; a++) {
        int i = off + a, j = off + m - 1 - a;
        box bi = cutmix_box(key, i, h, w, alpha), bj = cutmix_box(key, j, h, w, alpha);
        float *xi = x + (size_t)i * img, *xj = x + (size_t)j * img;
        for (int y = 0; y < h; y++) {
            int in_i = y >= bi.y1 && y < bi.y2, in_j = y >= bj.y1 && y < bj.y2;
            if (!in_i && !in_j) continue;
            for (int xx = 0; xx < w; xx++) {
                int mi = in_i && xx >= bi.x1 && xx < bi.x2, mj = in_j && xx >= bj.x1 && xx < bj.x2;
                if (!mi && !mj) continue;
                float *pi = xi + ((size_t)y * (size_t)w + (size_t)xx) * (size_t)c;
                float *pj = xj + ((size_t)y * (size_t)w + (size_t)xx) * (size_t)c;
                for (int k = 0; k < c; k++) {
                    float p = pi[k], q = pj[k];
                    if (mi) pi[k] = q;
                    if (mj) pj[k] = p;
                }
            }
        }
        /* label weight = the mask's actual area fraction */
        float ai = (float)(bi.y2 - bi.y1) * (float)(bi.x2 - bi.x1) / ((float)h * (float)w);
        float aj = (float)(bj.y2 - bj.y1) * (float)(bj.x2 - bj.x1) / ((float)h * (float)w);
        float *ti = t + (size_t)i * (size_t)K, *tj = t + (size_t)j * (size_t)K;
        for (int k = 0; k < K; k++) {
            float p = ti[k], q = tj[k];
            ti[k] = (1.0f - ai) * p + ai * q;
            tj[k] = (1.0f - aj) * q + aj * p;
        }
    }
}

void aug_mix_batch(float *x, int n, int h, int w, int c, float *targets, int K, float mixup_alpha,
                   float cutmix_alpha, uint64_t seed, uint64_t counter)
{
    if (!x || !targets || n < 1 || h < 1 || w < 1 || c < 1 || K < 1) return;
    if (!isfinite(mixup_alpha) || !isfinite(cutmix_alpha)) return;
    int mix = mixup_alpha > 0.0f, cut = cutmix_alpha > 0.0f;
    if (!mix && !cut) return;
    const uint64_t key = env2_rng_u64(seed, ENV2_STREAM_MIXUP, counter);
    const size_t img = (size_t)h * (size_t)w * (size_t)c;
    if (mix && cut) {
        int half = n / 2;
        mixup_range(x, img, targets, K, 0, half, mixup_alpha, key);
        cutmix_range(x, h, w, c, targets, K, half, n - half, cutmix_alpha, key);
    } else if (mix) {
        mixup_range(x, img, targets, K, 0, n, mixup_alpha, key);
    } else {
        cutmix_range(x, h, w, c, targets, K, 0, n, cutmix_alpha, key);
    }
}
