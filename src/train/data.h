/* Datasets held in memory and the batcher that turns them into training and
 * evaluation batches.
 *
 * A dataset is a block of uint8 HWC images plus int32 labels.  Loaders read
 * MNIST-style IDX directories, CIFAR-10/100 binary batches and .npy arrays
 * and validate them (counts, dimensions, label range) before anything is
 * handed to training.
 *
 * The batcher is deterministic: the content of batch (epoch, index) is a pure
 * function of the dataset, the seed, the epoch, the index and the epoch's
 * configuration, so a resumed run sees exactly the batches it would have seen
 * and the optional prefetch thread never changes results, only timing. */
#ifndef ENV2_DATA_H
#define ENV2_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* Limits checked by every loader: the model accepts at most 64 input
 * channels and 4096 pixels per side; the shuffle draws 32-bit indices. */
#define DATA_MAX_SIDE 4096
#define DATA_MAX_CHANNELS 64
#define DATA_MAX_COUNT 2147483647LL
#define DATA_MAX_CLASSES 1000000

typedef struct env2_dataset {
    uint8_t *images;   /* [n][h][w][c], owned */
    int32_t *labels;   /* [n], owned */
    int64_t n;
    int h, w, c;
    int num_classes;   /* labels lie in [0, num_classes) */
} env2_dataset;

/* Releases the arrays and zeroes *d.  NULL and an empty dataset are fine. */
void dataset_free(env2_dataset *d);

/* Checks dims, count and that every label lies in [0, num_classes); the
 * message starts with `what` (a file or split name) and names the first bad
 * label's index. */
env2_status dataset_validate(const env2_dataset *d, const char *what, env2_err *e);

/* Directory searched when --data-dir is absent: Debian's dataset packages
 * for Fashion-MNIST and MNIST, "data/<name>" otherwise.  Static storage. */
const char *dataset_default_dir(const char *name);

/* Loads the train and test split of a named dataset from dir:
 *   "fashion-mnist", "mnist": train-images-idx3-ubyte, train-labels-idx1-ubyte,
 *       t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each also as .gz or
 *       with the "-idx3-ubyte" written ".idx3-ubyte"); 10 classes.
 *   "cifar10": data_batch_1.bin .. data_batch_5.bin and test_batch.bin (dir or
 *       dir/cifar-10-batches-bin); 10 classes.
 *   "cifar100": train.bin and test.bin (dir or dir/cifar-100-binary); the 100
 *       fine labels.
 *   "npy": train_images.npy, train_labels.npy, test_images.npy,
 *       test_labels.npy (or x_train.npy, y_train.npy, x_test.npy, y_test.npy);
 *       images uint8 [N,H,W] or [N,H,W,C], labels any integer dtype [N];
 *       classes = largest label + 1 over both splits.
 * Both splits share h, w, c and num_classes.  On failure both are left empty
 * and the message names the file. */
env2_status dataset_load(const char *name, const char *dir, env2_dataset *train, env2_dataset *test, env2_err *e);

/* The individual loaders behind dataset_load; one split each. */
env2_status dataset_load_idx(const char *images_path, const char *labels_path, int num_classes, env2_dataset *d,
                             env2_err *e);
env2_status dataset_load_cifar(const char *const *paths, int npaths, int cifar100, env2_dataset *d, env2_err *e);
/* num_classes <= 0: largest label + 1. */
env2_status dataset_load_npy(const char *images_path, const char *labels_path, int num_classes, env2_dataset *d,
                             env2_err *e);

/* Moves n_val images, chosen by a seeded permutation (stream
 * ENV2_STREAM_SPLIT), out of `full` into *val and the rest into *train; both
 * keep the original order.  0 < n_val < full->n.  full is not modified. */
env2_status dataset_split(const env2_dataset *full, int64_t n_val, uint64_t seed, env2_dataset *train,
                          env2_dataset *val, env2_err *e);

/* Fisher-Yates permutation of 0..n-1 for an epoch (stream
 * ENV2_STREAM_SHUFFLE, counters keyed by the epoch): the same (seed, epoch)
 * always gives the same order, whatever ran before. */
void dataset_epoch_order(int64_t *perm, int64_t n, uint64_t seed, int64_t epoch);

/* ---- batches ------------------------------------------------------------ */

typedef struct data_config {
    int train;              /* 1: shuffled order, random-resized crop, flip, RandAugment,
                               Mixup/CutMix, the last partial batch dropped; 0: evaluation
                               (dataset order, whole image resized, every image kept) */
    int batch_size;         /* >= 1 */
    int size;               /* output side in pixels (square) */
    float area_min;         /* random-resized crop: smallest area fraction (0, 1] */
    int hflip;              /* training: random horizontal flip */
    float randaug_magnitude;/* 0 = off */
    int randaug_ref_size;   /* 0: official pixel amounts; > 0: Translate/Cutout scaled by size / this */
    float mixup_alpha;      /* 0 = off */
    float cutmix_alpha;     /* 0 = off */
    int64_t max_batches;    /* > 0: an epoch has at most this many batches */
    uint64_t seed;
} data_config;

/* Training defaults: batch 64, size = the dataset's larger side, area_min
 * 0.25, flip on, everything else off. */
void data_config_default(data_config *cfg, const env2_dataset *d, int train);

typedef struct data_batch {
    float *images;          /* [n][size][size][c] normalized floats (NHWC) */
    int32_t *labels;        /* [n] */
    float *targets;         /* [n][num_classes] soft targets when Mixup/CutMix is on, else NULL */
    int n, size, c, num_classes;
    int64_t epoch, index;
    /* capacity, set by data_batch_alloc */
    float *target_buf;
    size_t image_cap, target_cap;
    int label_cap;
} data_batch;

/* Batches in one epoch: floor(n / batch) in training (the last partial batch
 * is dropped so every step sees a full batch and BN statistics are not taken
 * from a handful of images), ceil(n / batch) in evaluation; capped by
 * max_batches. */
int64_t data_num_batches(const env2_dataset *d, const data_config *cfg);

/* Buffers for one batch of cfg's shape; release with data_batch_free. */
env2_status data_batch_alloc(data_batch *b, const env2_dataset *d, const data_config *cfg, env2_err *e);
void data_batch_free(data_batch *b);

/* Produces batch `index` of `epoch` synchronously.  perm is the epoch order
 * (dataset_epoch_order) in training and ignored (may be NULL) in evaluation;
 * scratch holds data_scratch_size bytes.  b must come from data_batch_alloc
 * with a config of at least this batch size, size and class count. */
size_t data_scratch_size(const env2_dataset *d, const data_config *cfg);
env2_status data_make_batch(const env2_dataset *d, const data_config *cfg, const int64_t *perm, int64_t epoch,
                            int64_t index, data_batch *b, void *scratch, env2_err *e);

/* Epoch iterator with an optional prefetch thread that prepares batch i+1
 * while the caller works on batch i (two buffers).  Usage:
 *     batcher_create(&bt, &dataset, 1, &e);
 *     for each epoch: batcher_begin(bt, &cfg, epoch, first_batch, &e);
 *                     while (batcher_next(bt, &batch, &e) == ENV2_OK && batch) use(batch);
 *     batcher_destroy(bt);
 * The dataset must outlive the batcher and stay unchanged. */
typedef struct batcher batcher;

env2_status batcher_create(batcher **out, const env2_dataset *d, int prefetch, env2_err *e);
/* Stops the thread (mid-batch if need be) and frees everything.  NULL is fine. */
void batcher_destroy(batcher *bt);
/* Starts (or restarts) an epoch at batch first_batch with cfg; a previous
 * epoch still in flight is cancelled. */
env2_status batcher_begin(batcher *bt, const data_config *cfg, int64_t epoch, int64_t first_batch, env2_err *e);
/* Next batch of the epoch, valid until the next batcher_next/begin/end/
 * destroy; *out = NULL after the last one.  An error while preparing a batch
 * is returned here, with its message, and ends the epoch. */
env2_status batcher_next(batcher *bt, const data_batch **out, env2_err *e);
/* Cancels the current epoch and joins the thread; the batcher can begin again. */
void batcher_end(batcher *bt);
int64_t batcher_num_batches(const batcher *bt);

#endif
