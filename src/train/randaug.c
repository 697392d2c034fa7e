/* RandAugment on uint8 HWC images, following google/automl's autoaugment.py
 * (spec §5.2) op by op, including its quirks (Contrast's pixel-count "mean",
 * Sharpness keeping the border, fill 128).  Where the TensorFlow result
 * depends on float rounding at an exact integer (Sharpness' 3x3 average,
 * AutoContrast's stretch) the exact rational value is used instead, so that
 * integer-valued results never come out one level low; docs/AUGMENTATION.md
 * lists these differences. */
#include "augment.h"

#include <math.h>
#include <string.h>

static const char *const op_names[RA_NUM_OPS] = {
    "AutoContrast", "Equalize",  "Invert", "Rotate", "Posterize",  "Solarize",   "Color",  "Contrast",
    "Brightness",   "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd"};

const char *ra_op_name(int op) { return (op >= 0 && op < RA_NUM_OPS) ? op_names[op] : "?"; }

static inline uint8_t clip_trunc(float t)
{
    /* the comparison form also maps NaN to 0 */
    if (!(t > 0.0f)) return 0;
    if (t >= 255.0f) return 255;
    return (uint8_t)t;
}

uint8_t ra_blend(uint8_t a, uint8_t b, float f)
{
    if (f == 0.0f) return a;
    if (f == 1.0f) return b;
    return clip_trunc((float)a + f * ((float)b - (float)a));
}

double ra_op_arg(int op, float magnitude) { return ra_op_arg_scaled(op, magnitude, 1.0f); }

double ra_op_arg_scaled(int op, float magnitude, float px_scale)
{
    /* the official amounts are pixels of a 224-600 px image: 100 per unit
     * level for Translate, a 2 x 40 square for Cutout.  Scaling them keeps
     * the op's share of a small image what it is on a large one. */
    double px = px_scale > 0.0f ? (double)px_scale : 1.0; /* NaN, <= 0 -> official */
    double m = magnitude > 0.0f ? (double)magnitude : 0.0; /* NaN -> 0 */
    if (m > RA_MAX_MAGNITUDE) m = RA_MAX_MAGNITUDE;
    double level = m / 10.0; /* level / _MAX_LEVEL, in Python's order of operations */
    switch (op) {
    case RA_ROTATE: return level * 30.0;
    case RA_POSTERIZE: {
        int bits = (int)(level * 4.0);
        /* TF clamps a uint8 shift to 0..7, so 0 bits behaves as 1; more
         * than 8 bits cannot be kept */
        return bits < 1 ? 1 : (bits > 8 ? 8 : bits);
    }
    case RA_SOLARIZE: return (double)(int)(level * 256.0);
    case RA_SOLARIZE_ADD: return (double)(int)(level * 110.0);
    case RA_COLOR:
    case RA_CONTRAST:
    case RA_BRIGHTNESS:
    case RA_SHARPNESS: return level * 1.8 + 0.1;
    case RA_SHEAR_X:
    case RA_SHEAR_Y: return level * 0.3;
    case RA_TRANSLATE_X:
    case RA_TRANSLATE_Y: return level * 100.0 * px;
    case RA_CUTOUT: return (double)(int)(level * 40.0 * px);
    default: return 0.0;
    }
}

void ra_invert(uint8_t *img, size_t n)
{
    for (size_t i = 0; i < n; i++) img[i] = (uint8_t)(255 - img[i]);
}

void ra_posterize(uint8_t *img, size_t n, int bits)
{
    bits = env2_clampi(bits, 1, 8);
    unsigned mask = (0xffu << (8 - bits)) & 0xffu;
    for (size_t i = 0; i < n; i++) img[i] = (uint8_t)(img[i] & mask);
}

void ra_solarize(uint8_t *img, size_t n, int threshold)
{
    /* thresholds above 255 never trigger on uint8 pixels: the op is then the
     * identity (the official code would compare against an out-of-range
     * uint8 constant; the identity is the only meaningful reading) */
    for (size_t i = 0; i < n; i++)
        if ((int)img[i] >= threshold) img[i] = (uint8_t)(255 - img[i]);
}

void ra_solarize_add(uint8_t *img, size_t n, int addition, int threshold)
{
    for (size_t i = 0; i < n; i++)
        if ((int)img[i] < threshold) img[i] = (uint8_t)env2_clampi((int)img[i] + addition, 0, 255);
}

void ra_autocontrast(uint8_t *img, int h, int w, int c)
{
    size_t np = (size_t)h * (size_t)w;
    for (int ch = 0; ch < c; ch++) {
        int lo = 255, hi = 0;
        for (size_t p = 0; p < np; p++) {
            int v = img[p * (size_t)c + (size_t)ch];
            if (v < lo) lo = v;
            if (v > hi) hi = v;
        }
        if (hi <= lo) continue;
        uint8_t lut[256];
        for (int v = 0; v < 256; v++) lut[v] = (uint8_t)env2_clampi((v - lo) * 255 / (hi - lo), 0, 255);
        for (size_t p = 0; p < np; p++) img[p * (size_t)c + (size_t)ch] = lut[img[p * (size_t)c + (size_t)ch]];
    }
}

void ra_equalize(uint8_t *img, int h, int w, int c)
{
    size_t np = (size_t)h * (size_t)w;
    for (int ch = 0; ch < c; ch++) {
        long hist[256] = {0};
        for (size_t p = 0; p < np; p++) hist[img[p * (size_t)c + (size_t)ch]]++;
        long total = 0, last = 0;
        for (int v = 0; v < 256; v++)
            if (hist[v]) {
                total += hist[v];
                last = hist[v];
            }
        long step = (total - last) / 255;
        if (step == 0) continue;
        uint8_t lut[256];
        long cum = 0;
        for (int v = 0; v < 256; v++) {
            long val = (cum + step / 2) / step;
            lut[v] = (uint8_t)(val > 255 ? 255 : val);
            cum += hist[v];
        }
        for (size_t p = 0; p < np; p++) img[p * (size_t)c + (size_t)ch] = lut[img[p * (size_t)c + (size_t)ch]];
    }
}

/* tf.image.rgb_to_grayscale on uint8: to float by *1/255, weighted sum, back
 * to uint8 by *255.5 and truncation. */
static inline uint8_t gray_of(const uint8_t *px)
{
    const float s = 1.0f / 255.0f;
    float g = ((float)px[0] * s) * 0.2989f + ((float)px[1] * s) * 0.5870f + ((float)px[2] * s) * 0.1140f;
    return clip_trunc(g * 255.5f);
}

void ra_color(uint8_t *img, int h, int w, int c, float factor)
{
    /* single channel: the gray image is the image, blend(x, x, f) = x */
    if (c != 3) return;
    size_t np = (size_t)h * (size_t)w;
    for (size_t p = 0; p < np; p++) {
        uint8_t *px = img + p * 3;
        uint8_t g = gray_of(px);
        px[0] = ra_blend(g, px[0], factor);
        px[1] = ra_blend(g, px[1], factor);
        px[2] = ra_blend(g, px[2], factor);
    }
}

void ra_contrast(uint8_t *img, int h, int w, int c, float factor)
{
    /* The official op sums a 256-bin histogram of the gray image (which
     * counts every pixel) and divides by 256: the "mean" is the pixel count
     * over 256, whatever the pixel values. */
    float mean = (float)((double)h * (double)w / 256.0);
    uint8_t deg = clip_trunc(mean);
    size_t n = (size_t)h * (size_t)w * (size_t)c;
    for (size_t i = 0; i < n; i++) img[i] = ra_blend(deg, img[i], factor);
}

void ra_brightness(uint8_t *img, size_t n, float factor)
{
    for (size_t i = 0; i < n; i++) img[i] = ra_blend(0, img[i], factor);
}

void ra_sharpness(uint8_t *img, int h, int w, int c, float factor, uint8_t *tmp)
{
    size_t row = (size_t)w * (size_t)c, n = (size_t)h * row;
    if (h < 3 || w < 3) return; /* no interior: smoothed == image */
    memcpy(tmp, img, n);
    for (int y = 1; y < h - 1; y++)
        for (int x = 1; x < w - 1; x++)
            for (int ch = 0; ch < c; ch++) {
                const uint8_t *q = img + (size_t)y * row + (size_t)x * (size_t)c + (size_t)ch;
                int s = q[-(long)row - c] + q[-(long)row] + q[-(long)row + c] + q[-c] + 5 * q[0] + q[c] +
                        q[(long)row - c] + q[row] + q[(long)row + c];
                tmp[(size_t)y * row + (size_t)x * (size_t)c + (size_t)ch] = (uint8_t)(s / 13);
            }
    for (size_t i = 0; i < n; i++) img[i] = ra_blend(tmp[i], img[i], factor);
}

static inline long round_away(float v) { return (long)roundf(v); }

void ra_affine(uint8_t *img, int h, int w, int c, const float m[6], uint8_t *tmp)
{
    size_t row = (size_t)w * (size_t)c;
    for (int y = 0; y < h; y++) {
        uint8_t *o = tmp + (size_t)y * row;
        float fy = (float)y;
        for (int x = 0; x < w; x++, o += c) {
            float fx = (float)x;
            float sx = m[0] * fx + m[1] * fy + m[2];
            float sy = m[3] * fx + m[4] * fy + m[5];
            /* bounds in float first: the cast would overflow for far-away
             * coordinates; -0.5 rounds away from zero to -1 (outside) */
            if (sx > -0.5f && sy > -0.5f && sx < (float)w - 0.5f && sy < (float)h - 0.5f) {
                long ix = round_away(sx), iy = round_away(sy);
                if (ix >= 0 && iy >= 0 && ix < w && iy < h) {
                    memcpy(o, img + (size_t)iy * row + (size_t)ix * (size_t)c, (size_t)c);
                    continue;
                }
            }
            memset(o, RA_FILL, (size_t)c);
        }
    }
    memcpy(img, tmp, (size_t)h * row);
}

void ra_rotate(uint8_t *img, int h, int w, int c, float degrees, uint8_t *tmp)
{
    /* tfa.image.rotate: about the centre ((w-1)/2, (h-1)/2) of the pixel
     * grid; output (x, y) samples R(angle) (x, y) + offset. */
    float rad = (float)((double)degrees * 3.14159265358979323846 / 180.0);
    float cs = cosf(rad), sn = sinf(rad);
    float wm = (float)(w - 1), hm = (float)(h - 1);
    float m[6];
    m[0] = cs;
    m[1] = -sn;
    m[2] = (wm - (cs * wm - sn * hm)) / 2.0f;
    m[3] = sn;
    m[4] = cs;
    m[5] = (hm - (sn * wm + cs * hm)) / 2.0f;
    ra_affine(img, h, w, c, m, tmp);
}

void ra_shear_x(uint8_t *img, int h, int w, int c, float level, uint8_t *tmp)
{
    const float m[6] = {1.0f, level, 0.0f, 0.0f, 1.0f, 0.0f};
    ra_affine(img, h, w, c, m, tmp);
}

void ra_shear_y(uint8_t *img, int h, int w, int c, float level, uint8_t *tmp)
{
    const float m[6] = {1.0f, 0.0f, 0.0f, level, 1.0f, 0.0f};
    ra_affine(img, h, w, c, m, tmp);
}

void ra_translate_x(uint8_t *img, int h, int w, int c, float pixels, uint8_t *tmp)
{
    const float m[6] = {1.0f, 0.0f, pixels, 0.0f, 1.0f, 0.0f};
    ra_affine(img, h, w, c, m, tmp);
}

void ra_translate_y(uint8_t *img, int h, int w, int c, float pixels, uint8_t *tmp)
{
    const float m[6] = {1.0f, 0.0f, 0.0f, 0.0f, 1.0f, pixels};
    ra_affine(img, h, w, c, m, tmp);
}

void ra_cutout(uint8_t *img, int h, int w, int c, int cy, int cx, int pad)
{
    if (pad <= 0) return;
    /* long arithmetic: a huge pad must not overflow */
    int y0 = (int)(cy - (long)pad < 0 ? 0 : cy - (long)pad), y1 = (int)(cy + (long)pad > h ? h : cy + (long)pad);
    int x0 = (int)(cx - (long)pad < 0 ? 0 : cx - (long)pad), x1 = (int)(cx + (long)pad > w ? w : cx + (long)pad);
    if (x1 <= x0) return;
    for (int y = y0; y < y1; y++)
        memset(img + ((size_t)y * (size_t)w + (size_t)x0) * (size_t)c, RA_FILL, (size_t)(x1 - x0) * (size_t)c);
}

void ra_apply(uint8_t *img, int h, int w, int c, int op, float magnitude, int sign, int cut_y, int cut_x,
              uint8_t *tmp)
{
    ra_apply_scaled(img, h, w, c, op, magnitude, 1.0f, sign, cut_y, cut_x, tmp);
}

void ra_apply_scaled(uint8_t *img, int h, int w, int c, int op, float magnitude, float px_scale, int sign, int cut_y,
                     int cut_x, uint8_t *tmp)
{
    double arg = ra_op_arg_scaled(op, magnitude, px_scale);
    float sarg = (float)(sign < 0 ? -arg : arg);
    size_t n = (size_t)h * (size_t)w * (size_t)c;
    switch (op) {
    case RA_AUTOCONTRAST: ra_autocontrast(img, h, w, c); break;
    case RA_EQUALIZE: ra_equalize(img, h, w, c); break;
    case RA_INVERT: ra_invert(img, n); break;
    case RA_ROTATE: ra_rotate(img, h, w, c, sarg, tmp); break;
    case RA_POSTERIZE: ra_posterize(img, n, (int)arg); break;
    case RA_SOLARIZE: ra_solarize(img, n, (int)arg); break;
    case RA_COLOR: ra_color(img, h, w, c, (float)arg); break;
    case RA_CONTRAST: ra_contrast(img, h, w, c, (float)arg); break;
    case RA_BRIGHTNESS: ra_brightness(img, n, (float)arg); break;
    case RA_SHARPNESS: ra_sharpness(img, h, w, c, (float)arg, tmp); break;
    case RA_SHEAR_X: ra_shear_x(img, h, w, c, sarg, tmp); break;
    case RA_SHEAR_Y: ra_shear_y(img, h, w, c, sarg, tmp); break;
    case RA_TRANSLATE_X: ra_translate_x(img, h, w, c, sarg, tmp); break;
    case RA_TRANSLATE_Y: ra_translate_y(img, h, w, c, sarg, tmp); break;
    case RA_CUTOUT: ra_cutout(img, h, w, c, cut_y, cut_x, (int)arg); break;
    case RA_SOLARIZE_ADD: ra_solarize_add(img, n, (int)arg, 128); break;
    default: break;
    }
}

void ra_randaugment(uint8_t *img, int h, int w, int c, int layers, float magnitude, float px_scale, uint64_t key,
                    uint64_t base, uint8_t *tmp)
{
    for (int l = 0; l < layers; l++) {
        uint64_t k = base + 4u * (uint64_t)l;
        int op = (int)env2_rng_below(key, ENV2_STREAM_AUGMENT, k, RA_NUM_OPS);
        /* _randomly_negate_tensor: keep the sign when floor(U + 0.5) = 1 */
        int sign = env2_rng_uniform(key, ENV2_STREAM_AUGMENT, k + 1) >= 0.5f ? 1 : -1;
        int cy = (int)env2_rng_below(key, ENV2_STREAM_AUGMENT, k + 2, (uint32_t)h);
        int cx = (int)env2_rng_below(key, ENV2_STREAM_AUGMENT, k + 3, (uint32_t)w);
        ra_apply_scaled(img, h, w, c, op, magnitude, px_scale, sign, cy, cx, tmp);
    }
}
