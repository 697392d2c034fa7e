/* Trainer internals shared between the training graph and the API. */
#ifndef ENV2_TRAINER_H
#define ENV2_TRAINER_H

#include "model/model.h"

enum { N_CONV = 0, N_SE, N_BEGIN, N_RESID };

/* One step of the training graph in execution order.  Pointers are into the
 * trainer's arena; they are recomputed when (n, h, w) changes. */
typedef struct tnode {
    int type;
    const convbn *cb;
    const block_def *bl;
    int block;
    k_conv_shape sh;
    float *in;          /* conv/SE input; RESID: the block input (skip) */
    float *z;           /* conv output before BN; RESID: the branch output */
    float *a;           /* output of the node */
    float *mean, *rstd, *varu; /* BN batch statistics [co] */
    float *pooled, *hid, *gate; /* SE */
    float *mask;        /* RESID: per-sample drop-path factor [n] */
    long count;         /* BEGIN/RESID: elements of the block input/output */
    /* Conv outputs a = act(BN(z)) and SE outputs x * gate are either kept
     * (a slice of their own, abuf = -1; options.keep_activations) or not:
     * forward writes them to one of three rotating buffers (abuf) and
     * backward recomputes them from z (and the gate).
     * src: the conv node whose a is this node's input (-1: in is stored);
     * zsrc: the same for a RESID node's branch output. */
    int abuf, src, zsrc;
} tnode;

struct env2_trainer {
    env2_model *m;
    env2_trainer_options o;
    float lr, dropout, drop_path, smoothing, wd;
    int64_t step;
    int64_t ema_start;          /* step of the last env2_trainer_restart_ema (0: never) */

    float *grads, *s1, *s2;     /* gradients and optimizer state, param layout */
    float *ema_p, *ema_s;       /* EMA copies of params and stats */
    unsigned char *decay;       /* per tensor: weight decay applies */

    /* training workspace for the current (n, h, w) */
    int n, h, w;
    tnode *nodes;
    int nnodes, cap_nodes;
    float *arena;
    size_t arena_floats;
    float *gbuf[4];             /* gradient ping-pong, skip stash, BN temp */
    float *tmp;                 /* second BN temp */
    float *recompute, *recompute2; /* backward: recomputed layer outputs (forward's rotating buffers;
                                       NULL when the plan keeps every output) */
    float *conv_ws, *se_ws;
    float *xin;                 /* NHWC input copy */
    float *head_pooled, *head_drop, *head_mask, *logits, *dlogits, *dpooled;
    float *soft;                /* targets row buffer */

    env2_err err;
};

/* The training graph (graph.c): plan the arena for (n, h, w) at base (or
 * only size it when base is NULL; returns floats), forward in training mode
 * (train_masks = 0 turns dropout and drop-path off), backward into t->grads. */
size_t graph_plan(env2_trainer *t, int n, int h, int w, float *base);
/* options.keep_activations = -1 keeps the outputs when that adds at most this
 * much workspace */
#define ENV2_KEEP_AUTO_BYTES ((size_t)256 << 20)
void graph_forward(env2_trainer *t, const float *params, int train_masks);
void graph_backward(env2_trainer *t, const float *params);

#endif
