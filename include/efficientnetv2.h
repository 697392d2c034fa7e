/*
 * efficientnetv2.h -- libefficientnetv2: run and train EfficientNetV2 on the CPU.
 *
 * The one public header of the library.  Pure C11, usable from C and C++.
 *
 * Conventions that hold for every function below unless its comment says
 * otherwise:
 *
 *  - Every fallible call returns an env2_status: ENV2_OK (0) on success, a
 *    negative code on failure.  On failure a message naming the problem (the
 *    tensor, the file offset, the option) is available from env2_last_error()
 *    in the calling thread, and from the handle's own *_last_error().
 *    The library never prints, exits or aborts.  On failure outputs are left
 *    untouched unless stated, and the handle stays usable.
 *  - Handles are opaque, created by *_create and released by *_destroy;
 *    every *_destroy accepts NULL.
 *  - Buffers are owned by the caller.  The library keeps no pointer to a
 *    caller buffer after a call returns.
 *  - Thread safety: a handle may be used by one thread at a time.  Distinct
 *    handles are independent.  Functions documented as "read-only queries"
 *    may be called concurrently on the same handle.
 *  - Threads: parallel work runs on the library's own worker threads
 *    (pthreads, started on first use, as many as the largest thread count
 *    asked for minus one; the calling thread works too).  While one call's
 *    parallel step runs on them, a concurrent call from another thread runs
 *    its steps on its own thread alone: correct, but not parallel.  The
 *    workers block all signals.  A child made by fork() starts workers of
 *    its own (or runs serially if another thread was inside a parallel
 *    step at the fork).  dlclose() leaves the library loaded (the workers
 *    live as long as the process).  "0 = all cores" is the number of
 *    online processors.
 *  - Images are float32.  The default layout is NCHW (PyTorch's), NHWC on
 *    request.  Internally the library works in NHWC and converts once.
 *  - Results do not depend on the number of threads.
 *  - Stack: the kernels keep tiles and padded image bands on the stack, so a
 *    call uses up to about 100 KiB of the calling thread's stack (and of
 *    the workers', which get the system default).  A thread of 256 KiB is
 *    enough (test_train checks training and inference on one).
 *  - Memory: on Linux, the library's own buffers of 4 MiB and more (the
 *    weights, the workspaces) are asked for transparent huge pages with
 *    madvise(MADV_HUGEPAGE); the kernel grants them or not by its THP
 *    settings, and nothing else depends on it.
 *  - Strings are UTF-8; paths are passed to fopen() unchanged.
 *
 * ABI: the soname is libefficientnetv2.so.<major>.  Within one major version
 * functions are only added, enums only grow at the end and option structs
 * only grow at the end (their first field is their size).
 */
#ifndef EFFICIENTNETV2_H
#define EFFICIENTNETV2_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- symbol visibility --------------------------------------------------- */
#if defined(_WIN32)
#  if defined(ENV2_BUILDING_LIBRARY)
#    define ENV2_API __declspec(dllexport)
#  else
#    define ENV2_API
#  endif
#elif defined(__GNUC__) || defined(__clang__)
#  define ENV2_API __attribute__((visibility("default")))
#else
#  define ENV2_API
#endif

/* ==== Version ============================================================= */

/** Version of this header (single source of truth; the Makefile reads it). */
#define ENV2_VERSION_MAJOR 0
#define ENV2_VERSION_MINOR 1
#define ENV2_VERSION_PATCH 0
#define ENV2_VERSION_NUMBER (ENV2_VERSION_MAJOR * 10000 + ENV2_VERSION_MINOR * 100 + ENV2_VERSION_PATCH)
#define ENV2_VERSION_STRING "0.1.0"

/** Version of the library actually linked, as ENV2_VERSION_NUMBER.
 *  Compare with ENV2_VERSION_NUMBER to detect a header/library mismatch.
 *  Thread-safe.  Since 0.1. */
ENV2_API unsigned env2_version_number(void);

/** Version string of the linked library ("0.1.0"); static storage.  Since 0.1. */
ENV2_API const char *env2_version_string(void);

/** Build description: version, threading ("pool": the library's own worker
 *  threads; "serial": built with THREADS=0, everything on the calling
 *  thread), the SIMD path selected on this CPU and the best one it supports,
 *  e.g. "0.1.0 threads=pool simd=avx512 (detected avx512)".
 *  Static storage.  Since 0.1. */
ENV2_API const char *env2_build_info(void);

/* ==== Status and errors =================================================== */

/** Status codes.  Values are fixed and only ever appended.  Since 0.1. */
typedef enum env2_status {
    ENV2_OK = 0,
    ENV2_E_INVALID_ARG = -1,   /**< NULL pointer, out-of-range number, bad option */
    ENV2_E_NOMEM = -2,         /**< an allocation failed; nothing was changed */
    ENV2_E_IO = -3,            /**< a file could not be opened, read or written */
    ENV2_E_FORMAT = -4,        /**< a file or buffer is malformed or truncated */
    ENV2_E_SHAPE = -5,         /**< a tensor or array has the wrong shape */
    ENV2_E_DTYPE = -6,         /**< a tensor or array has an unsupported dtype */
    ENV2_E_NOT_FOUND = -7,     /**< unknown variant or preset, missing tensor */
    ENV2_E_UNSUPPORTED = -8,   /**< valid request this build cannot serve */
    ENV2_E_NUMERIC = -9,       /**< NaN or Inf in inputs, loss or gradients */
    ENV2_E_VERSION = -10,      /**< incompatible file or struct version */
    ENV2_E_STATE = -11         /**< call not valid in the handle's current state */
} env2_status;

/** Static English text for a status code ("invalid argument", ...).
 *  Never NULL; unknown codes give "unknown status".  Since 0.1. */
ENV2_API const char *env2_status_string(env2_status status);

/** Detail message of the last failed call made by the calling thread, or ""
 *  if none failed yet.  Valid until the next library call in this thread.
 *  Since 0.1. */
ENV2_API const char *env2_last_error(void);

/* ==== Model ================================================================ */

/** Opaque model: architecture, parameters and BN statistics, plus the
 *  inference workspace.  Since 0.1. */
typedef struct env2_model env2_model;

/** Padding of stride-2 convolutions.  Since 0.1. */
typedef enum env2_padding {
    ENV2_PAD_SYMMETRIC = 0,  /**< (k-1)/2 on every side, as torchvision */
    ENV2_PAD_SAME = 1        /**< TensorFlow "same" (extra pixel bottom/right), as the official checkpoints */
} env2_padding;

/** Memory layout of image batches.  Since 0.1. */
typedef enum env2_layout {
    ENV2_LAYOUT_NCHW = 0,    /**< [n][channels][height][width] (PyTorch) */
    ENV2_LAYOUT_NHWC = 1     /**< [n][height][width][channels] */
} env2_layout;

/** Options for env2_model_create.  Fill with env2_model_options_init() and
 *  change what you need; struct_size lets the library accept older callers.
 *  Since 0.1. */
typedef struct env2_model_options {
    uint32_t struct_size;    /**< sizeof(env2_model_options), set by _init */
    int32_t num_classes;     /**< classifier outputs; default 1000; 1..1000000 */
    int32_t in_channels;     /**< image channels; default 3; 1..64 */
    float width_mult;        /**< extra width multiplier on top of the variant's; default 1 */
    float depth_mult;        /**< extra depth multiplier on top of the variant's; default 1 */
    int32_t padding;         /**< env2_padding; default ENV2_PAD_SYMMETRIC */
    float bn_eps;            /**< batch-norm epsilon; default 1e-3 */
    float bn_momentum;       /**< running-stat update, PyTorch convention
                                  (new = (1-m)*old + m*batch); default 0.1 */
    uint64_t seed;           /**< seed of the random initialization; default 0 */
    int32_t stem_channels;   /**< custom architectures: stem width; 0 = first stage's input */
    int32_t head_channels;   /**< custom architectures: head width; 0 = round_filters(1280) */
    float dropout;           /**< head dropout used in training; < 0 = variant default */
    float drop_path_rate;    /**< stochastic-depth rate of the last block; < 0 = 0.2 */
    int32_t num_threads;     /**< threads for forward/training; 0 = all cores */
    int32_t winograd;        /**< 1 (default): 3x3 stride-1 convolutions run by
                                  Winograd F(4x4,3x3) in env2_forward, evaluation,
                                  the training forward and both gradients
                                  (about 2x faster; results within ~1e-6 of the
                                  output scale of the exact path, 1e-5 for the
                                  weight gradient, the same for any thread
                                  count); 0: the exact im2col GEMM
                                  everywhere (training then gives the results of
                                  builds before 2026-11-29, when this option
                                  applied to inference only, bit for bit).
                                  Since 0.1. */
} env2_model_options;

/** Fills *opts with the defaults listed above.  Since 0.1. */
ENV2_API void env2_model_options_init(env2_model_options *opts);

/** Creates a model with freshly initialized weights (torchvision's scheme:
 *  Kaiming-normal fan-out convolutions, uniform classifier, zero biases,
 *  identity batch norm), deterministic from opts->seed.
 *
 *  arch: a variant name -- "efficientnetv2-s", "-m", "-l", "-xl", "-b0",
 *  "-b1", "-b2", "-b3" (the prefix may be omitted: "s", "b0") -- or a custom
 *  architecture as stage strings in the official notation separated by
 *  spaces, commas or semicolons, e.g.
 *  "r1_k3_s1_e1_i16_o16_c1 r2_k3_s2_e4_i16_o32_c1 r2_k3_s2_e4_i32_o48_se0.25"
 *  (r repeats, k kernel, s stride, e expansion, i/o channels, se ratio,
 *  c1 Fused-MBConv).  opts may be NULL for the defaults.
 *
 *  On success *out owns the model (release with env2_model_destroy).  On
 *  failure *out is set to NULL.  Errors: ENV2_E_INVALID_ARG (NULL out or arch,
 *  bad option), ENV2_E_NOT_FOUND (unknown variant), ENV2_E_FORMAT (malformed
 *  stage string), ENV2_E_NOMEM.  Thread-safe.  Since 0.1. */
ENV2_API env2_status env2_model_create(env2_model **out, const char *arch, const env2_model_options *opts);

/** Releases a model and everything it owns.  NULL is a no-op.  Since 0.1. */
ENV2_API void env2_model_destroy(env2_model *model);

/** Detail text of the last failure on this model (or ""); valid until the
 *  next call on the model.  Since 0.1. */
ENV2_API const char *env2_model_last_error(const env2_model *model);

/** Inference: logits for a batch of n images of h x w pixels, batch norm with
 *  running statistics, no dropout.  Any h, w >= 1 up to 4096 is accepted.
 *
 *  images: n * in_channels * h * w floats in `layout`; normalization is the
 *  caller's (torchvision: (x/255 - mean)/std).
 *  logits: caller buffer of env2_model_output_size(model, n) floats,
 *  row-major [n][num_classes].
 *  Numerics: with opts.winograd = 1 (the default) the 3x3 stride-1
 *  convolutions use Winograd F(4x4,3x3), within ~1e-6 of the output scale
 *  of the exact im2col path; the logits are deterministic and the same for
 *  any thread count; opts.winograd = 0 computes those convolutions by the
 *  exact im2col GEMM.
 *
 *  Memory: the first call at a new (n, h, w) plans and allocates the
 *  workspace; later calls allocate nothing.  With winograd = 1 the first
 *  call also allocates the transformed filters of the Winograd layers (4x
 *  their weights: about 11 MiB for V2-S), which later calls reuse until the
 *  weights change (a training step, loading, env2_trainer_apply_ema or
 *  _resume; an EMA evaluation uses other weights and recomputes them);
 *  if that allocation fails, every call transforms into the workspace.
 *  Errors: ENV2_E_INVALID_ARG (NULL, n/h/w out of range, bad layout),
 *  ENV2_E_NOMEM (workspace for a new shape).
 *  Not thread-safe on one model.  Since 0.1. */
ENV2_API env2_status env2_forward(env2_model *model, const float *images, int32_t n, int32_t h, int32_t w,
                                  env2_layout layout, float *logits);

/** Number of logits env2_forward writes for a batch of n: n * classes.
 *  Read-only query.  Since 0.1. */
ENV2_API size_t env2_model_output_size(const env2_model *model, int32_t n);

/** Trainable parameters (conv, BN affine, SE and classifier; not BN running
 *  statistics).  V2-S at 1000 classes: 21,458,488.  Read-only query.  Since 0.1. */
ENV2_API int64_t env2_model_num_params(const env2_model *model);

/** Classes and input channels the model was created with.  Read-only.  Since 0.1. */
ENV2_API int32_t env2_model_num_classes(const env2_model *model);
ENV2_API int32_t env2_model_in_channels(const env2_model *model);

/** The variant's official train and eval image sizes (S: 300 and 384); for
 *  custom architectures 224 and 224.  Read-only.  Since 0.1. */
ENV2_API int32_t env2_model_train_size(const env2_model *model);
ENV2_API int32_t env2_model_eval_size(const env2_model *model);

/** Multiply-accumulates of all convolutions and the classifier for one image
 *  of h x w (S at 384: 8,365,617,152).  Read-only.  Since 0.1. */
ENV2_API env2_status env2_model_macs(const env2_model *model, int32_t h, int32_t w, int64_t *macs);

/** Architecture name as created ("efficientnetv2-s", or "custom").  Read-only.  Since 0.1. */
ENV2_API const char *env2_model_arch(const env2_model *model);

/** Number of stages (not counting stem and head) and a description of stage
 *  i (0-based): fused is 1 for Fused-MBConv; se_channels is 0 without SE.
 *  Any out pointer may be NULL.  Read-only.  Since 0.1. */
ENV2_API int32_t env2_model_num_stages(const env2_model *model);
ENV2_API env2_status env2_model_stage(const env2_model *model, int32_t i, int32_t *fused, int32_t *repeats,
                                      int32_t *kernel, int32_t *stride, int32_t *expand, int32_t *in_ch,
                                      int32_t *out_ch, int32_t *se_channels);
/** Stem and head widths.  Read-only.  Since 0.1. */
ENV2_API int32_t env2_model_stem_channels(const env2_model *model);
ENV2_API int32_t env2_model_head_channels(const env2_model *model);

/** Threads used by this model's forward (and a trainer built on it); 0 = all
 *  cores.  Results are identical for any count.  Since 0.1. */
ENV2_API env2_status env2_model_set_threads(env2_model *model, int32_t num_threads);
ENV2_API int32_t env2_model_threads(const env2_model *model);

/** Flags for loading weights.  Since 0.1. */
enum {
    ENV2_LOAD_DEFAULT = 0,
    /** Load everything but the classifier (classifier.1.*), which keeps its
     *  fresh initialization: fine-tuning to another class count. */
    ENV2_LOAD_SKIP_CLASSIFIER = 1,
    /** From a trainer checkpoint (env2_trainer_save), load the EMA average
     *  (its "ema."-prefixed tensors) instead of the live weights: the weights
     *  the trainer evaluates with.  ENV2_E_NOT_FOUND when the file has none. */
    ENV2_LOAD_EMA = 2
};

/** Loads weights from a safetensors file with torchvision state_dict names
 *  (features.0.0.weight ... classifier.1.bias).  F32, F16 and BF16 tensors
 *  are accepted (converted to float32); num_batches_tracked (I64) is
 *  accepted and ignored.  Every tensor the model needs must be present with
 *  the right shape; unknown tensors are an error, except the optimizer state
 *  ("optim.*") and EMA ("ema.*") of a trainer checkpoint, which is also a
 *  model file: by default its live weights are loaded.  On any error the model's
 *  weights are unchanged and the message names the tensor.
 *  Errors: ENV2_E_IO, ENV2_E_FORMAT, ENV2_E_NOT_FOUND, ENV2_E_SHAPE,
 *  ENV2_E_DTYPE, ENV2_E_NOMEM.  Since 0.1. */
ENV2_API env2_status env2_model_load(env2_model *model, const char *path, uint32_t flags);

/** Same as env2_model_load from a buffer of len bytes holding a safetensors
 *  file; the buffer is not retained.  Since 0.1. */
ENV2_API env2_status env2_model_load_memory(env2_model *model, const void *data, size_t len, uint32_t flags);

/** Saves weights and BN statistics as safetensors (F32, torchvision names,
 *  plus num_batches_tracked as I64) loadable by
 *  torch's model.load_state_dict(safetensors.torch.load_file(path)).  The
 *  file is written to a temporary name and renamed, so a failure never
 *  leaves a partial file at path.  Errors: ENV2_E_IO, ENV2_E_NOMEM.  Since 0.1. */
ENV2_API env2_status env2_model_save(const env2_model *model, const char *path);

/** Serializes the weights as above into a buffer allocated by the library;
 *  release it with env2_free().  Since 0.1. */
ENV2_API env2_status env2_model_save_memory(const env2_model *model, void **data, size_t *len);

/** Creates a model from a safetensors file written by env2_model_save or
 *  env2_trainer_save: the architecture and options are read from the file's
 *  metadata ("env2.arch", "env2.stem", "env2.head", "env2.num_classes",
 *  "env2.in_channels", "env2.padding", "env2.bn_eps"), then the weights are
 *  loaded.  opts (may be NULL) supplies the remaining options (threads,
 *  seed).  Files without that metadata (e.g. exported from torchvision) give
 *  ENV2_E_NOT_FOUND: create the model by name and use env2_model_load.
 *  Errors as env2_model_create and env2_model_load.  Since 0.1. */
ENV2_API env2_status env2_model_create_from_file(env2_model **out, const char *path, const env2_model_options *opts);

/** Frees memory returned by the library (env2_model_save_memory).  NULL is a
 *  no-op.  Since 0.1. */
ENV2_API void env2_free(void *p);

/* ==== Training ============================================================= */

/** Opaque trainer: gradients, optimizer state, EMA weights and the training
 *  workspace of one model.  Since 0.1. */
typedef struct env2_trainer env2_trainer;

/** Optimizers.  Since 0.1. */
typedef enum env2_optimizer {
    ENV2_OPT_SGD = 0,          /**< SGD with momentum (torch.optim.SGD semantics), optional Nesterov */
    ENV2_OPT_RMSPROP_TF = 1,   /**< TF1 RMSProp of the paper: ms starts at 1, eps inside the sqrt */
    ENV2_OPT_ADAMW = 2         /**< AdamW (torch.optim.AdamW semantics) */
} env2_optimizer;

/** Learning-rate schedules, all after a linear warmup from 0.  Since 0.1. */
typedef enum env2_lr_schedule {
    ENV2_LR_CONSTANT = 0,
    ENV2_LR_EXPONENTIAL = 1,   /**< lr * decay_rate^floor(step / decay_steps) (the paper: 0.97 every 2.4 epochs) */
    ENV2_LR_COSINE = 2         /**< 0.5 * lr * (1 + cos(pi * step / total_steps)) */
} env2_lr_schedule;

/** Trainer options; fill with env2_trainer_options_init().  Since 0.1. */
typedef struct env2_trainer_options {
    uint32_t struct_size;     /**< sizeof(env2_trainer_options), set by _init */
    int32_t optimizer;        /**< env2_optimizer; default ENV2_OPT_RMSPROP_TF */
    float lr;                 /**< peak learning rate; default 0.016 */
    float momentum;           /**< SGD/RMSProp momentum; default 0.9 */
    int32_t nesterov;         /**< SGD only; default 0 */
    float rms_decay;          /**< RMSProp decay rho; default 0.9 */
    float eps;                /**< RMSProp 1e-3 / AdamW 1e-8; < 0 = the optimizer's default */
    float beta1, beta2;       /**< AdamW; default 0.9, 0.999 */
    float weight_decay;       /**< default 1e-5; SGD/RMSProp: L2 added to the gradient; AdamW: decoupled */
    int32_t decay_all;        /**< 1 = also decay BN parameters and biases; default 0 */
    float clip_grad_norm;     /**< clip the global gradient norm to this; 0 = off (default) */
    int32_t lr_schedule;      /**< env2_lr_schedule; default ENV2_LR_EXPONENTIAL */
    int64_t warmup_steps;     /**< linear warmup from 0; default 0 */
    int64_t total_steps;      /**< needed by cosine; default 0 */
    float decay_steps;        /**< exponential: steps between decays; default 1 */
    float decay_rate;         /**< exponential: factor; default 0.97 */
    float label_smoothing;    /**< default 0.1 */
    float ema_decay;          /**< EMA of weights and BN statistics, decay
                                   min(ema_decay, (1+t)/(10+t)); 0 = off (default) */
    uint64_t seed;            /**< dropout and drop-path randomness; default 0 */
    int32_t keep_activations; /**< what backward reads layer outputs from.  0: recomputes each
                                   convolution's act(BN(z)) and each squeeze-excite output from
                                   what forward stored (least memory); 1: forward keeps every
                                   output (about one more activation-sized buffer per layer, fewer
                                   passes over memory, faster); -1 (default): 1 when that adds at
                                   most 256 MiB to the workspace at the step's (n, h, w), else 0.
                                   Results are bit-identical either way.  Since 0.1. */
} env2_trainer_options;

/** Fills *opts with the defaults listed above.  Since 0.1. */
ENV2_API void env2_trainer_options_init(env2_trainer_options *opts);

/** Creates a trainer for model.  The trainer updates the model's weights in
 *  place; the model must outlive the trainer and must not be used by another
 *  thread while a trainer call runs.  Dropout and drop-path start at the
 *  model's options.  opts may be NULL for the defaults.
 *  Errors: ENV2_E_INVALID_ARG, ENV2_E_NOMEM.  Since 0.1. */
ENV2_API env2_status env2_trainer_create(env2_trainer **out, env2_model *model, const env2_trainer_options *opts);

/** Releases the trainer (not the model).  NULL is a no-op.  Since 0.1. */
ENV2_API void env2_trainer_destroy(env2_trainer *trainer);

/** Detail text of the last failure on this trainer, or "".  Since 0.1. */
ENV2_API const char *env2_trainer_last_error(const env2_trainer *trainer);

/** One optimization step on a batch: forward in training mode (batch
 *  statistics, dropout, drop-path), softmax cross-entropy with label
 *  smoothing, backward, weight decay, clipping, optimizer update, BN running
 *  statistics and EMA update.
 *
 *  images: n * in_channels * h * w floats in `layout`; h and w may change
 *  from one step to the next (progressive learning).
 *  Exactly one of labels (n class indices) and targets (n * num_classes
 *  probabilities, each row summing to 1 within 1e-3, e.g. from Mixup) must
 *  be non-NULL.
 *  loss (may be NULL): mean loss of the batch; correct (may be NULL): number
 *  of rows whose arg-max logit equals the label (or the target's arg-max).
 *
 *  Errors: ENV2_E_INVALID_ARG (bad sizes, label out of range, targets not
 *  summing to 1), ENV2_E_NUMERIC (NaN/Inf in images or in the loss or
 *  gradients), ENV2_E_NOMEM.  On any error weights, BN statistics,
 *  optimizer and EMA state and the step count are unchanged.
 *  After the first step at a given (n, h, w) a step allocates nothing.
 *  Since 0.1. */
ENV2_API env2_status env2_train_step(env2_trainer *trainer, const float *images, int32_t n, int32_t h, int32_t w,
                                     env2_layout layout, const int32_t *labels, const float *targets,
                                     float *loss, int32_t *correct);

/** Parameters that may change between steps.  Since 0.1. */
typedef enum env2_train_param {
    ENV2_PARAM_LR = 0,              /**< peak learning rate of the schedule */
    ENV2_PARAM_DROPOUT = 1,         /**< head dropout rate, [0, 1) */
    ENV2_PARAM_DROP_PATH = 2,       /**< stochastic depth rate of the last block, [0, 1) */
    ENV2_PARAM_LABEL_SMOOTHING = 3, /**< [0, 1) */
    ENV2_PARAM_WEIGHT_DECAY = 4     /**< >= 0 */
} env2_train_param;

/** Sets / reads a training parameter.  Errors: ENV2_E_INVALID_ARG for an
 *  unknown parameter or a value outside its range.  Since 0.1. */
ENV2_API env2_status env2_trainer_set_param(env2_trainer *trainer, env2_train_param param, double value);
ENV2_API env2_status env2_trainer_get_param(const env2_trainer *trainer, env2_train_param param, double *value);

/** Learning rate the next step will use (schedule and warmup applied).  Since 0.1. */
ENV2_API double env2_trainer_current_lr(const env2_trainer *trainer);

/** Steps taken so far (restored by env2_trainer_resume).  Since 0.1. */
ENV2_API int64_t env2_trainer_step_count(const env2_trainer *trainer);

/** Bytes of workspace a training step at (n, h, w) needs on top of the
 *  weights, gradients and optimizer state (which *fixed receives).  Either
 *  pointer may be NULL.  Since 0.1. */
ENV2_API env2_status env2_trainer_memory_needed(const env2_trainer *trainer, int32_t n, int32_t h, int32_t w,
                                                size_t *workspace, size_t *fixed);

/** Inference with the trainer's model: with use_ema = 1 and EMA enabled the
 *  EMA weights and statistics are used, otherwise the live ones.  Same
 *  buffers and errors as env2_forward.  Since 0.1. */
ENV2_API env2_status env2_trainer_evaluate(env2_trainer *trainer, const float *images, int32_t n, int32_t h,
                                           int32_t w, env2_layout layout, int use_ema, float *logits);

/** Restarts the weight average: the EMA copies become the current weights
 *  and statistics, and the decay warm-up min(ema_decay, (1+t)/(10+t)) counts
 *  t from this step again.  For progressive learning, at a stage change, so
 *  the average does not mix weights fitted to the previous image size into
 *  the new one.  The restart step is saved by env2_trainer_save and restored
 *  by env2_trainer_resume.  ENV2_E_STATE if EMA is off.  Not thread-safe with
 *  other calls on the same trainer.  Since 0.1. */
ENV2_API env2_status env2_trainer_restart_ema(env2_trainer *trainer);

/** Copies the EMA weights and statistics into the model (for saving or
 *  serving the averaged model).  ENV2_E_STATE if EMA is off.  Since 0.1. */
ENV2_API env2_status env2_trainer_apply_ema(env2_trainer *trainer);

/** Writes the whole training state -- weights, BN statistics, optimizer
 *  moments, EMA copies, step count, parameters, RNG seed -- into one
 *  safetensors file with metadata (written to a temporary file and renamed).
 *  `user_metadata` (may be NULL) is an extra string stored under the key
 *  "user" and returned by env2_trainer_resume.  Since 0.1. */
ENV2_API env2_status env2_trainer_save(const env2_trainer *trainer, const char *path, const char *user_metadata);

/** Restores a state written by env2_trainer_save into this trainer (and its
 *  model): continuing gives bit-identical results to never having stopped.
 *  The architecture, classes and optimizer must match.  If user_metadata is
 *  not NULL, up to user_metadata_len-1 bytes of the stored "user" string
 *  are copied there (NUL-terminated).  On error nothing is changed.
 *  Errors: ENV2_E_IO, ENV2_E_FORMAT, ENV2_E_SHAPE, ENV2_E_VERSION (other
 *  architecture or optimizer), ENV2_E_NOMEM.  Since 0.1. */
ENV2_API env2_status env2_trainer_resume(env2_trainer *trainer, const char *path, char *user_metadata,
                                         size_t user_metadata_len);

/** Writes the loss and every parameter's gradient for one batch in training
 *  mode with dropout and drop-path off, without updating anything (BN running
 *  statistics included).  grads receives env2_model_num_params floats in the
 *  order of the saved state dict (torchvision names, BN running statistics
 *  skipped).  Used by `env2 grad` for parity checks.  Since 0.1. */
ENV2_API env2_status env2_trainer_gradients(env2_trainer *trainer, const float *images, int32_t n, int32_t h,
                                            int32_t w, env2_layout layout, const int32_t *labels,
                                            const float *targets, float *loss, float *grads);

/** Saves gradients produced by env2_trainer_gradients as safetensors with
 *  the parameter names (and a scalar "loss").  Since 0.1. */
ENV2_API env2_status env2_trainer_save_gradients(const env2_trainer *trainer, const float *grads, float loss,
                                                 const char *path);

/* ==== Progressive learning schedule ======================================== */

/** Opaque progressive-learning schedule (the paper's Algorithm 1): training is
 *  split into stages; image size and each regularizer grow linearly from their
 *  start to their end value across stages.  A pure function of the position:
 *  a resumed run lands in the same stage.  Since 0.1. */
typedef struct env2_schedule env2_schedule;

/** Regularizers a schedule controls.  Since 0.1. */
typedef enum env2_regularizer {
    ENV2_REG_DROPOUT = 0,      /**< head dropout rate */
    ENV2_REG_RANDAUG = 1,      /**< RandAugment magnitude (0..30; 0 = off) */
    ENV2_REG_MIXUP = 2,        /**< Mixup alpha (0 = off) */
    ENV2_REG_CUTMIX = 3,       /**< CutMix alpha (0 = off) */
    ENV2_REG_DROP_PATH = 4,    /**< stochastic-depth rate */
    ENV2_REG_COUNT = 5         /**< number of regularizers in this version */
} env2_regularizer;

/** Creates a schedule over `total` units (epochs or steps, the caller's
 *  choice; positions are in the same unit) in num_stages stages, image size
 *  from size_start to size_end rounded to a multiple of size_multiple (>= 1).
 *  Every regularizer starts constant at 0 until set.  Errors:
 *  ENV2_E_INVALID_ARG (total < num_stages, num_stages < 1, sizes < 8 or
 *  > 4096, size_multiple < 1).  Since 0.1. */
ENV2_API env2_status env2_schedule_create(env2_schedule **out, int32_t num_stages, int64_t total, int32_t size_start,
                                          int32_t size_end, int32_t size_multiple);

/** Creates a preset schedule: "paper-s", "paper-m", "paper-l" (Table 6 of the
 *  paper) or "official-s", "official-m", "official-l", "official-xl" (what
 *  google/automl's code does), over `total` units with num_stages stages
 *  (0 = the preset's 4).  Errors: ENV2_E_NOT_FOUND, ENV2_E_INVALID_ARG.  Since 0.1. */
ENV2_API env2_status env2_schedule_create_preset(env2_schedule **out, const char *preset, int64_t total,
                                                 int32_t num_stages);

/** Releases a schedule.  NULL is a no-op.  Since 0.1. */
ENV2_API void env2_schedule_destroy(env2_schedule *schedule);

/** Sets the start and end value of a regularizer.  Errors: ENV2_E_INVALID_ARG
 *  (unknown regularizer, negative values, rates >= 1).  Since 0.1. */
ENV2_API env2_status env2_schedule_set_range(env2_schedule *schedule, env2_regularizer reg, float start, float end);

/** Number of stages and total units.  Read-only.  Since 0.1. */
ENV2_API int32_t env2_schedule_num_stages(const env2_schedule *schedule);
ENV2_API int64_t env2_schedule_total(const env2_schedule *schedule);

/** The stage containing position `pos` (0 <= pos < total; positions past the
 *  end map to the last stage) and its image size.  Either out may be NULL.
 *  Read-only; pure function of pos.  Since 0.1. */
ENV2_API env2_status env2_schedule_at(const env2_schedule *schedule, int64_t pos, int32_t *stage,
                                      int32_t *image_size);

/** Value of a regularizer at position pos.  Read-only.  Since 0.1. */
ENV2_API env2_status env2_schedule_value(const env2_schedule *schedule, int64_t pos, env2_regularizer reg,
                                         float *value);

/** Resolved stage i: its first position (inclusive) and end (exclusive),
 *  image size, and the value of each regularizer into values[0..count-1]
 *  (count <= ENV2_REG_COUNT; values may be NULL).  Read-only.  Since 0.1. */
ENV2_API env2_status env2_schedule_stage(const env2_schedule *schedule, int32_t i, int64_t *begin, int64_t *end,
                                         int32_t *image_size, float *values, int32_t count);

#ifdef __cplusplus
}
#endif

#endif /* EFFICIENTNETV2_H */
