/* src/train/augment.h -- image augmentation, deterministic from (seed, counter).
 *
 * The training pipeline of google/automl's EfficientNetV2 (spec §5.1-5.3):
 * random-resized crop, bilinear resize, horizontal flip, RandAugment on uint8
 * pixels, normalization, then Mixup / CutMix on the batch.  Every random
 * choice comes from the counter-based RNG (stream ENV2_STREAM_AUGMENT for
 * images, ENV2_STREAM_MIXUP for mixing), so a sample's augmentation can be
 * regenerated in any thread and order.  docs/AUGMENTATION.md describes every
 * operation exactly. */
#ifndef ENV2_AUGMENT_H
#define ENV2_AUGMENT_H

#include "common.h"

typedef struct aug_config {
    int out_h, out_w;             /* output size */
    int random_crop;              /* 1: random-resized crop (training); 0: whole image resized (evaluation) */
    float area_min, area_max;     /* crop area fraction range, e.g. official 0.05..1.0 */
    float aspect_min, aspect_max; /* crop aspect ratio range, default 3/4 .. 4/3 */
    int hflip;                    /* 1: random horizontal flip with p = 0.5 */
    int randaug_layers;           /* RandAugment N, default 2 */
    float randaug_magnitude;      /* RandAugment M (0..30); 0 = RandAugment off */
    int randaug_ref_size;         /* 0: Translate and Cutout in the official absolute pixels; > 0: those
                                     amounts scaled by min(out_h, out_w) / randaug_ref_size */
    float mean[4], std[4];        /* per-channel normalization: out = (pixel/255 - mean) / std */
} aug_config;

/* defaults: random_crop 1, area 0.05..1, aspect 3/4..4/3, hflip 1, layers 2, magnitude 0, mean 0.5, std 0.5 */
void aug_config_default(aug_config *c, int out_size, int channels);

/* bytes of scratch aug_image needs for a source of h x w x c */
size_t aug_scratch_size(int h, int w, int c, const aug_config *cfg);

/* src: uint8 HWC [h][w][c] (c = 1 or 3); dst: float HWC [out_h][out_w][c].  Pure function of
 * (src, cfg, seed, counter): the caller passes a counter unique per sample and epoch (e.g. epoch * N + index).
 * Pipeline (official, spec §5.1): random-resized crop -> bilinear resize to out size -> flip -> uint8 ->
 * RandAugment -> normalize.  With random_crop = 0: bilinear resize of the whole image, no flip, no RandAugment.
 * scratch: aug_scratch_size() bytes, or NULL to let the call allocate (and free) it.
 * Errors: ENV2_E_INVALID_ARG (NULL pointers, sizes, c, out-of-range config), ENV2_E_NOMEM. */
env2_status aug_image(const uint8_t *src, int h, int w, int c, const aug_config *cfg, uint64_t seed,
                      uint64_t counter, float *dst, void *scratch, env2_err *e);

/* Mixup / CutMix on a batch in place (spec §5.3): x NHWC floats [n][h][w][c], targets [n][K] one-hot or soft rows,
 * rewritten to the mixed targets.  Alphas 0 disable; both > 0: first half Mixup, second half CutMix.
 * Invalid arguments (NULL, non-positive sizes, non-finite alphas) leave everything untouched. */
void aug_mix_batch(float *x, int n, int h, int w, int c, float *targets, int K, float mixup_alpha,
                   float cutmix_alpha, uint64_t seed, uint64_t counter);

/* ==== building blocks (exposed for tests and custom pipelines) ============ */

/* The random-resized-crop box aug_image uses for (seed, counter): rows
 * [*y0, *y0 + *ch), columns [*x0, *x0 + *cw).  Returns 1 if a box satisfying
 * the area and aspect constraints was found, 0 if every attempt failed and
 * the whole image is returned. */
int aug_sample_crop(int h, int w, const aug_config *cfg, uint64_t seed, uint64_t counter, int *y0, int *x0, int *ch,
                    int *cw);

/* Bilinear resize (half-pixel centres, no antialias, as tf.image.resize and
 * PyTorch align_corners=False) of the region [y0, y0+ch) x [x0, x0+cw) of
 * src [h][w][c] to dst [out_h][out_w][c] floats in the 0..255 scale.
 * flip = 1 mirrors the output left-right. */
void aug_resize_bilinear(const uint8_t *src, int h, int w, int c, int y0, int x0, int ch, int cw, float *dst,
                         int out_h, int out_w, int flip);

/* RandAugment ops, in the order of the official op list (the op index a
 * RandAugment layer draws uniformly from [0, RA_NUM_OPS)). */
enum ra_op {
    RA_AUTOCONTRAST = 0,
    RA_EQUALIZE,
    RA_INVERT,
    RA_ROTATE,
    RA_POSTERIZE,
    RA_SOLARIZE,
    RA_COLOR,
    RA_CONTRAST,
    RA_BRIGHTNESS,
    RA_SHARPNESS,
    RA_SHEAR_X,
    RA_SHEAR_Y,
    RA_TRANSLATE_X,
    RA_TRANSLATE_Y,
    RA_CUTOUT,
    RA_SOLARIZE_ADD,
    RA_NUM_OPS
};

#define RA_FILL 128        /* fill value of geometric ops and Cutout */
#define RA_MAX_MAGNITUDE 30.0f

/* "Rotate", "ShearX", ...; "?" for an unknown op. */
const char *ra_op_name(int op);

/* The op's argument for a magnitude (clamped to [0, 30]; NaN counts as 0)
 * before the random sign: degrees (Rotate), kept bits (Posterize, clipped to
 * 1..8), threshold (Solarize), addend (SolarizeAdd), blend factor (Color,
 * Contrast, Brightness, Sharpness), shear factor, pixels (Translate), half
 * side (Cutout); 0 for ops without an argument. */
double ra_op_arg(int op, float magnitude);

/* ra_op_arg with the pixel amounts of Translate and Cutout multiplied by
 * px_scale (Cutout: truncated after scaling); px_scale = 1 is ra_op_arg. */
double ra_op_arg_scaled(int op, float magnitude, float px_scale);

/* Applies one op in place to img [h][w][c] (c = 1 or 3) with the argument
 * ra_op_arg(op, magnitude); sign (+1 / -1) is the random sign of Rotate,
 * Shear and Translate; (cut_y, cut_x) is the Cutout centre.  tmp: h*w*c bytes
 * of scratch (used by geometric ops and Sharpness). */
void ra_apply(uint8_t *img, int h, int w, int c, int op, float magnitude, int sign, int cut_y, int cut_x,
              uint8_t *tmp);
/* ra_apply with the argument ra_op_arg_scaled(op, magnitude, px_scale). */
void ra_apply_scaled(uint8_t *img, int h, int w, int c, int op, float magnitude, float px_scale, int sign, int cut_y,
                     int cut_x, uint8_t *tmp);

/* RandAugment: `layers` times, an op drawn uniformly from the 16 (repeats
 * allowed), always applied at the fixed magnitude, Translate and Cutout
 * amounts multiplied by px_scale (1: official).  The draws come from
 * env2_rng(key, ENV2_STREAM_AUGMENT, base + 4*layer + {0: op, 1: sign,
 * 2: cutout row, 3: cutout column}). */
void ra_randaugment(uint8_t *img, int h, int w, int c, int layers, float magnitude, float px_scale, uint64_t key,
                    uint64_t base, uint8_t *tmp);

/* The individual ops with explicit arguments.  n = h*w*c where only the
 * element count matters. */
void ra_invert(uint8_t *img, size_t n);
void ra_posterize(uint8_t *img, size_t n, int bits);                   /* bits clipped to 1..8 */
void ra_solarize(uint8_t *img, size_t n, int threshold);               /* p >= threshold -> 255 - p */
void ra_solarize_add(uint8_t *img, size_t n, int addition, int threshold); /* p < threshold -> min(255, p + add) */
void ra_autocontrast(uint8_t *img, int h, int w, int c);
void ra_equalize(uint8_t *img, int h, int w, int c);
void ra_color(uint8_t *img, int h, int w, int c, float factor);
void ra_contrast(uint8_t *img, int h, int w, int c, float factor);
void ra_brightness(uint8_t *img, size_t n, float factor);
void ra_sharpness(uint8_t *img, int h, int w, int c, float factor, uint8_t *tmp);
/* Affine resampling shared by the geometric ops (nearest neighbour): output
 * pixel (x, y) takes input (round(m[0] x + m[1] y + m[2]), round(m[3] x +
 * m[4] y + m[5])) (round half away from zero) or RA_FILL outside the image. */
void ra_affine(uint8_t *img, int h, int w, int c, const float m[6], uint8_t *tmp);
void ra_rotate(uint8_t *img, int h, int w, int c, float degrees, uint8_t *tmp);
void ra_shear_x(uint8_t *img, int h, int w, int c, float level, uint8_t *tmp);
void ra_shear_y(uint8_t *img, int h, int w, int c, float level, uint8_t *tmp);
void ra_translate_x(uint8_t *img, int h, int w, int c, float pixels, uint8_t *tmp);
void ra_translate_y(uint8_t *img, int h, int w, int c, float pixels, uint8_t *tmp);
void ra_cutout(uint8_t *img, int h, int w, int c, int cy, int cx, int pad);
/* blend(a, b, f) = a + f (b - a), clipped to [0, 255] and truncated;
 * f = 0 gives a and f = 1 gives b exactly. */
uint8_t ra_blend(uint8_t a, uint8_t b, float f);

#endif
