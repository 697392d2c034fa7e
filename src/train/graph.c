/* The training graph: forward in training mode storing what backward needs,
 * and backward through every layer.  Activations live in one arena planned
 * for the current (batch, height, width); a step allocates nothing once the
 * arena fits. */
#include <math.h>
#include <string.h>

#include "profile.h"
#include "trainer.h"


typedef struct planner {
    env2_trainer *t;
    float *base;
    size_t off;
    int count;
    int keep; /* every conv and SE output gets its own slice (no recompute) */
} planner;

/* A value flowing between nodes: stored (p) or the recomputable output of
 * conv node `node`, held during forward in rotating buffer `buf`. */
typedef struct val {
    float *p;
    int node, buf;
} val;

static const val NO_VAL = {NULL, -1, -1};

/* Hands out 16-float-aligned slices; with base == NULL only counts. */
static float *take(planner *p, size_t floats)
{
    float *r = p->base ? p->base + p->off : NULL;
    p->off += (floats + 15) & ~(size_t)15;
    return r;
}

static tnode *node(planner *p)
{
    env2_trainer *t = p->t;
    tnode *nd = p->base && p->count < t->cap_nodes ? &t->nodes[p->count] : NULL;
    p->count++;
    if (nd) {
        memset(nd, 0, sizeof *nd);
        nd->abuf = nd->src = nd->zsrc = -1;
    }
    return nd;
}

/* keep: a value that must survive this conv (the block input of a residual
 * block); the output goes to a rotating buffer holding neither it nor the
 * input. */
static void plan_conv(planner *p, const convbn *c, int n, int *h, int *w, val *cur, const val *keep, size_t *maxact,
                      size_t *maxws, int padding_same)
{
    k_conv_shape sh;
    k_conv_shape_init(&sh, n, *h, *w, c->ci, c->co, c->k, c->stride, padding_same);
    size_t out = (size_t)n * sh.ho * sh.wo * c->co;
    int idx = p->count;
    tnode *nd = node(p);
    float *z = take(p, out), *mean = take(p, c->co), *rstd = take(p, c->co), *varu = take(p, c->co);
    float *a = p->keep ? take(p, out) : NULL;
    int buf = -1;
    if (!a) {
        buf = 0;
        while (buf == cur->buf || buf == keep->buf) buf++;
    }
    if (nd) {
        nd->type = N_CONV;
        nd->cb = c;
        nd->sh = sh;
        nd->in = cur->p;
        nd->src = cur->node;
        nd->z = z;
        nd->a = a;
        nd->abuf = buf;
        nd->mean = mean;
        nd->rstd = rstd;
        nd->varu = varu;
    }
    if (out > *maxact) *maxact = out;
    size_t in = (size_t)n * *h * *w * c->ci;
    if (in > *maxact) *maxact = in;
    if (c->kind == T_CONV) {
        size_t ws = k_conv2d_train_workspace(&sh, p->t->m->winograd);
        if (ws > *maxws) *maxws = ws;
    }
    *h = sh.ho;
    *w = sh.wo;
    cur->p = a;
    cur->node = a ? -1 : idx;
    cur->buf = buf;
}

/* Lays out the whole graph for (n, h, w) at base (or only sizes it when base
 * is NULL) and returns the floats needed. */
static size_t plan(env2_trainer *t, int n, int h, int w, float *base, int keep)
{
    env2_model *m = t->m;
    planner p = {t, base, 0, 0, keep};
    size_t maxact = 0, maxws = 0, maxse = 0;
    int same = m->padding == ENV2_PAD_SAME;
    float *xin = take(&p, (size_t)n * h * w * m->in_ch);
    val cur = {xin, -1, -1};
    plan_conv(&p, &m->stem, n, &h, &w, &cur, &NO_VAL, &maxact, &maxws, same);
    for (int b = 0; b < m->nblocks; b++) {
        const block_def *bl = &m->blocks[b];
        val bin = cur;
        const val *keep = bl->residual ? &bin : &NO_VAL;
        if (bl->residual) {
            tnode *nd = node(&p);
            if (nd) {
                nd->type = N_BEGIN;
                nd->bl = bl;
                nd->block = b;
                nd->count = (long)n * h * w * bl->in;
            }
        }
        int i = 0;
        if (!bl->fused && bl->has_expand) plan_conv(&p, &bl->cb[i++], n, &h, &w, &cur, keep, &maxact, &maxws, same);
        plan_conv(&p, &bl->cb[i++], n, &h, &w, &cur, keep, &maxact, &maxws, same);
        if (!bl->fused && bl->se) {
            /* the output x * gate is kept or, like a conv output, recomputed in backward */
            int idx = p.count, buf = -1;
            tnode *nd = node(&p);
            float *pooled = take(&p, (size_t)n * bl->mid), *hid = take(&p, (size_t)n * bl->se),
                  *gate = take(&p, (size_t)n * bl->mid);
            float *a = p.keep ? take(&p, (size_t)n * h * w * bl->mid) : NULL;
            if (!a) {
                buf = 0;
                while (buf == cur.buf || buf == keep->buf) buf++;
            }
            if (nd) {
                nd->type = N_SE;
                nd->bl = bl;
                nd->in = cur.p;
                nd->src = cur.node;
                nd->a = a;
                nd->abuf = buf;
                nd->pooled = pooled;
                nd->hid = hid;
                nd->gate = gate;
            }
            size_t s = k_se_scratch(n, h, w, bl->mid, bl->se);
            if (s > maxse) maxse = s;
            cur.p = a;
            cur.node = a ? -1 : idx;
            cur.buf = buf;
        }
        if (i < bl->ncb) plan_conv(&p, &bl->cb[i++], n, &h, &w, &cur, keep, &maxact, &maxws, same);
        if (bl->residual) {
            tnode *nd = node(&p);
            size_t sz = (size_t)n * h * w * bl->out;
            float *a = take(&p, sz), *mask = take(&p, (size_t)n);
            if (nd) {
                nd->type = N_RESID;
                nd->bl = bl;
                nd->block = b;
                nd->in = bin.p;
                nd->src = bin.node;
                nd->z = cur.p;
                nd->zsrc = cur.node;
                nd->a = a;
                nd->mask = mask;
                nd->count = (long)sz;
            }
            cur.p = a;
            cur.node = cur.buf = -1;
        }
    }
    plan_conv(&p, &m->head, n, &h, &w, &cur, &NO_VAL, &maxact, &maxws, same);
    int hd = m->arch.head, K = m->classes;
    float *pooled = take(&p, (size_t)n * hd), *drop = take(&p, (size_t)n * hd), *mask = take(&p, (size_t)n * hd);
    float *logits = take(&p, (size_t)n * K), *dlogits = take(&p, (size_t)n * K), *dpooled = take(&p, (size_t)n * hd);
    float *soft = take(&p, (size_t)n * K);
    float *g[4], *abufs[3];
    for (int i = 0; i < 4; i++) g[i] = take(&p, maxact);
    for (int i = 0; i < 3; i++) abufs[i] = keep ? NULL : take(&p, maxact);
    float *tmp = take(&p, maxact);
    float *cws = take(&p, maxws), *sws = take(&p, maxse);
    if (base) {
        t->nnodes = p.count;
        /* the rotating buffers exist only now: point conv outputs at them,
         * then the inputs that read those outputs */
        for (int i = 0; i < t->nnodes; i++)
            if (t->nodes[i].abuf >= 0) t->nodes[i].a = abufs[t->nodes[i].abuf];
        for (int i = 0; i < t->nnodes; i++) {
            tnode *nd = &t->nodes[i];
            if (nd->src >= 0) nd->in = t->nodes[nd->src].a;
            if (nd->zsrc >= 0) nd->z = t->nodes[nd->zsrc].a;
        }
        t->recompute = abufs[0];
        t->recompute2 = abufs[1];
        t->xin = xin;
        t->head_pooled = pooled;
        t->head_drop = drop;
        t->head_mask = mask;
        t->logits = logits;
        t->dlogits = dlogits;
        t->dpooled = dpooled;
        t->soft = soft;
        for (int i = 0; i < 4; i++) t->gbuf[i] = g[i];
        t->tmp = tmp;
        t->conv_ws = cws;
        t->se_ws = sws;
    }
    t->nnodes = p.count;
    return p.off;
}

size_t graph_plan(env2_trainer *t, int n, int h, int w, float *base)
{
    int keep = t->o.keep_activations;
    if (keep < 0) {
        /* auto: keep them when that costs at most ENV2_KEEP_AUTO_BYTES more */
        int nn = t->nnodes;
        size_t lean = plan(t, n, h, w, NULL, 0), full = plan(t, n, h, w, NULL, 1);
        t->nnodes = nn;
        keep = full <= lean || (full - lean) * sizeof(float) <= ENV2_KEEP_AUTO_BYTES;
    }
    return plan(t, n, h, w, base, keep);
}

/* The output of conv or SE node s recomputed into dst (bit-identical to
 * forward's); an SE output first recomputes its input into t->recompute2. */
static void recompute(env2_trainer *t, const tnode *s, const float *params, int nt, float *dst)
{
    if (s->type == N_SE) {
        const tnode *x = &t->nodes[s->src];
        const float *in = s->in;
        if (s->src >= 0) {
            recompute(t, x, params, nt, t->recompute2);
            in = t->recompute2;
        }
        long hw = (long)(s - 1)->sh.ho * (s - 1)->sh.wo;
        PROF(PROF_SE, k_se_apply(nt, t->n, hw, s->bl->mid, in, s->gate, dst));
        return;
    }
    const convbn *c = s->cb;
    long rows = (long)t->n * s->sh.ho * s->sh.wo;
    PROF(PROF_BN, k_bn_act_apply(nt, rows, c->co, s->z, params + c->gamma, params + c->beta, s->mean, s->rstd,
                                 c->act ? K_ACT_SILU : K_ACT_NONE, dst));
}

/* The input of node nd for backward: stored, or recomputed into
 * t->recompute. */
static const float *node_input(env2_trainer *t, const tnode *nd, const float *params, int nt)
{
    if (nd->src < 0) return nd->in;
    recompute(t, &t->nodes[nd->src], params, nt, t->recompute);
    return t->recompute;
}

void graph_forward(env2_trainer *t, const float *params, int train_masks)
{
    env2_model *m = t->m;
    int nt = model_threads(m), n = t->n;
    for (int i = 0; i < t->nnodes; i++) {
        tnode *nd = &t->nodes[i];
        switch (nd->type) {
        case N_CONV: {
            const convbn *c = nd->cb;
            long rows = (long)n * nd->sh.ho * nd->sh.wo;
            if (c->kind == T_DW)
                PROF_CONV(PROF_DWCONV, &nd->sh, 1, 1, k_dwconv_fwd(nt, &nd->sh, nd->in, params + c->w, nd->z, NULL));
            else if (c->k == 1 && c->stride == 1)
                PROF_CONV(PROF_CONV1X1, &nd->sh, 0, 1,
                          k_conv2d_fwd(nt, &nd->sh, nd->in, params + c->w, nd->z, NULL, t->conv_ws));
            else if (m->winograd && k_wino_ok(&nd->sh))
                PROF_CONV(PROF_WINO, &nd->sh, 0, 1,
                          k_conv2d_fwd_wino(nt, &nd->sh, nd->in, params + c->w, nd->z, NULL, t->conv_ws));
            else
                PROF_CONV(k_conv2d_direct(&nd->sh) ? PROF_CONVSMALL : PROF_CONVKXK, &nd->sh, 0, 1,
                          k_conv2d_fwd(nt, &nd->sh, nd->in, params + c->w, nd->z, NULL, t->conv_ws));
            PROF(PROF_BN, k_bn_act_fwd_train(nt, rows, c->co, nd->z, params + c->gamma, params + c->beta, m->bn_eps,
                                             c->act ? K_ACT_SILU : K_ACT_NONE, nd->a, nd->mean, nd->rstd, nd->varu));
            break;
        }
        case N_SE: {
            const block_def *bl = nd->bl;
            const k_conv_shape *sh = &(nd - 1)->sh;
            PROF(PROF_SE, k_se_fwd(nt, n, sh->ho, sh->wo, bl->mid, bl->se, nd->in, params + bl->se_w1, params + bl->se_b1,
                                   params + bl->se_w2, params + bl->se_b2, nd->a, nd->pooled, nd->hid, nd->gate,
                                   t->se_ws));
            break;
        }
        case N_BEGIN:
            break;
        case N_RESID: {
            const block_def *bl = nd->bl;
            long per = nd->count / n;
            float p = t->drop_path * bl->drop_rate;
            int drop = train_masks && p > 0;
            for (int s = 0; s < n; s++) {
                float f = 1.0f;
                if (drop) {
                    uint64_t ctr = ((uint64_t)t->step * (uint64_t)m->nblocks + (uint64_t)nd->block) * 65536u + (uint64_t)s;
                    float u = env2_rng_uniform(t->o.seed, ENV2_STREAM_DROPPATH, ctr);
                    f = u < p ? 0.0f : 1.0f / (1.0f - p);
                }
                nd->mask[s] = f;
            }
            if (drop) {
                PROF(PROF_RESID, k_scale_rows(nt, n, per, nd->z, nd->mask, nd->a);
                     k_add(nt, (long)n * per, nd->a, nd->in, nd->a));
            } else {
                PROF(PROF_RESID, k_add(nt, (long)n * per, nd->z, nd->in, nd->a));
            }
            break;
        }
        }
    }
    const tnode *last = &t->nodes[t->nnodes - 1];
    int hd = m->arch.head;
    double prof_t0 = env2_prof_on ? env2_prof_now() : 0;
    k_gap_fwd(nt, n, last->sh.ho, last->sh.wo, hd, last->a, t->head_pooled);
    float p = train_masks ? t->dropout : 0.0f;
    for (long i = 0; i < (long)n * hd; i++) {
        float f = 1.0f;
        if (p > 0) {
            float u = env2_rng_uniform(t->o.seed, ENV2_STREAM_DROPOUT, (uint64_t)t->step * 4294967296ull + (uint64_t)i);
            f = u < p ? 0.0f : 1.0f / (1.0f - p);
        }
        t->head_mask[i] = f;
        t->head_drop[i] = t->head_pooled[i] * f;
    }
    k_fc_fwd(nt, n, hd, m->classes, t->head_drop, params + m->fc_w, params + m->fc_b, t->logits);
    if (env2_prof_on) env2_prof_sec[PROF_HEAD] += env2_prof_now() - prof_t0;
}

void graph_backward(env2_trainer *t, const float *params)
{
    env2_model *m = t->m;
    int nt = model_threads(m), n = t->n, hd = m->arch.head;
    float *G = t->gbuf[0], *G2 = t->gbuf[1], *S = t->gbuf[2], *T = t->gbuf[3], *T2 = t->tmp;
    float *grads = t->grads;
    double prof_t0 = env2_prof_on ? env2_prof_now() : 0;
    k_fc_bwd(nt, n, hd, m->classes, t->head_drop, params + m->fc_w, t->dlogits, t->dpooled, grads + m->fc_w,
             grads + m->fc_b);
    for (long i = 0; i < (long)n * hd; i++) t->dpooled[i] *= t->head_mask[i];
    const tnode *last = &t->nodes[t->nnodes - 1];
    k_gap_bwd(nt, n, (long)last->sh.ho * last->sh.wo, hd, t->dpooled, G);
    if (env2_prof_on) env2_prof_sec[PROF_HEAD] += env2_prof_now() - prof_t0;
    for (int i = t->nnodes - 1; i >= 0; i--) {
        const tnode *nd = &t->nodes[i];
        switch (nd->type) {
        case N_CONV: {
            const convbn *c = nd->cb;
            long rows = (long)n * nd->sh.ho * nd->sh.wo;
            /* the BN output is not stored: the fused backward recomputes it
             * from z; dz lands in T */
            PROF(PROF_BN, k_bn_act_bwd(nt, rows, c->co, nd->z, G, params + c->gamma, params + c->beta, nd->mean,
                                       nd->rstd, c->act ? K_ACT_SILU : K_ACT_NONE, T2, T, grads + c->gamma,
                                       grads + c->beta));
            const float *in = node_input(t, nd, params, nt);
            /* weight gradient, plus the data gradient except for the stem */
            if (c->kind == T_DW) {
                PROF_CONV(PROF_DW_BWD, &nd->sh, 1, i > 0 ? 2 : 1, k_dwconv_bwd_weight(nt, &nd->sh, in, T, grads + c->w);
                          if (i > 0) k_dwconv_bwd_data(nt, &nd->sh, T, params + c->w, G2));
            } else {
                PROF_CONV(PROF_CONV_BWD, &nd->sh, 0, i > 0 ? 2 : 1,
                          k_conv2d_bwd_weight(nt, &nd->sh, in, T, grads + c->w, t->conv_ws, m->winograd);
                          if (i > 0) k_conv2d_bwd_data(nt, &nd->sh, T, params + c->w, G2, t->conv_ws, m->winograd));
            }
            float *sw = G;
            G = G2;
            G2 = sw;
            break;
        }
        case N_SE: {
            const block_def *bl = nd->bl;
            long hw = (long)(nd - 1)->sh.ho * (nd - 1)->sh.wo;
            const float *in = node_input(t, nd, params, nt);
            PROF(PROF_SE, k_se_bwd(nt, n, hw, bl->mid, bl->se, in, params + bl->se_w1, params + bl->se_w2,
                                   nd->pooled, nd->hid, nd->gate, G, G2, grads + bl->se_w1, grads + bl->se_b1,
                                   grads + bl->se_w2, grads + bl->se_b2, t->se_ws));
            float *sw = G;
            G = G2;
            G2 = sw;
            break;
        }
        case N_RESID: {
            long per = nd->count / n;
            PROF(PROF_RESID, memcpy(S, G, (size_t)n * per * sizeof(float));
                 k_scale_rows(nt, n, per, G, nd->mask, G));
            break;
        }
        case N_BEGIN: {
            PROF(PROF_RESID, k_add(nt, nd->count, G, S, G));
            break;
        }
        }
    }
}
