/* Inference: batch norm folded into each convolution's epilogue (per-channel
 * scale and shift, then SiLU, then the residual add), activations NHWC in
 * three rotating buffers, so peak memory is about three of the largest
 * activations rather than the sum of all of them. */
#include <string.h>

#include "model.h"
#include "profile.h"

typedef struct infer_plan {
    size_t act;      /* floats of the largest activation */
    size_t conv_ws;  /* floats of the largest im2col workspace */
    size_t se_ws;    /* floats of SE scratch */
} infer_plan;

static void conv_shape(const env2_model *m, const convbn *c, int n, int h, int w, k_conv_shape *s)
{
    k_conv_shape_init(s, n, h, w, c->ci, c->co, c->k, c->stride, m->padding == ENV2_PAD_SAME);
}

/* Runs by Winograd at inference (k_wino_ok holds for any input size). */
static int is_wino(const env2_model *m, const convbn *c)
{
    return m->winograd && c->kind == T_CONV && c->k == 3 && c->stride == 1;
}

static void plan_conv(const env2_model *m, const convbn *c, int n, int *h, int *w, infer_plan *p, int nt)
{
    k_conv_shape s;
    conv_shape(m, c, n, *h, *w, &s);
    size_t out = (size_t)n * s.ho * s.wo * c->co;
    if (out > p->act) p->act = out;
    if (c->kind == T_CONV) {
        size_t ws = k_conv2d_workspace(&s, nt);
        /* the filter transform goes into the workspace only when the model
         * could not keep it */
        if (is_wino(m, c) && m->wino_layers < 0 && k_wino_workspace(&s) > ws) ws = k_wino_workspace(&s);
        if (ws > p->conv_ws) p->conv_ws = ws;
    }
    *h = s.ho;
    *w = s.wo;
}

static size_t gate_floats(int n, int C) { return ((size_t)n * C + 15) & ~(size_t)15; }

static void make_plan(const env2_model *m, int n, int h, int w, infer_plan *p, int nt)
{
    memset(p, 0, sizeof *p);
    plan_conv(m, &m->stem, n, &h, &w, p, nt);
    for (int b = 0; b < m->nblocks; b++) {
        const block_def *bl = &m->blocks[b];
        for (int i = 0; i < bl->ncb; i++) plan_conv(m, &bl->cb[i], n, &h, &w, p, nt);
        if (bl->se) {
            /* the gate, the pooling's chunk sums, then the SE kernel's own
             * scratch */
            size_t s = gate_floats(n, bl->mid) + k_gap_scratch(n, h, w, bl->mid) +
                       k_se_scratch(n, h, w, bl->mid, bl->se);
            if (s > p->se_ws) p->se_ws = s;
        }
    }
    plan_conv(m, &m->head, n, &h, &w, p, nt);
}

/* The i-th convolution in network order (the stem, the blocks', the head),
 * NULL past the last. */
static convbn *conv_at(env2_model *m, int i)
{
    if (i == 0) return &m->stem;
    i--;
    for (int b = 0; b < m->nblocks; b++) {
        if (i < m->blocks[b].ncb) return &m->blocks[b].cb[i];
        i -= m->blocks[b].ncb;
    }
    return i == 0 ? &m->head : NULL;
}

/* Brings the kept Winograd filter transforms up to date with `params`:
 * allocates them at the first call and recomputes a layer's when the
 * weights, the buffer or the layer's k_wino_u_tag changed.  If the
 * allocation fails, wino_layers = -1 and the forward transforms into its
 * workspace at every call instead, as training does. */
static void wino_refresh(env2_model *m, const float *params, int nt)
{
    if (!m->winograd || m->wino_layers < 0) return;
    k_conv_shape s;
    if (!m->wino) {
        size_t total = 0;
        int nl = 0;
        convbn *c;
        for (int i = 0; (c = conv_at(m, i)); i++) nl += is_wino(m, c);
        m->wino = nl ? env2_calloc((size_t)nl, sizeof *m->wino) : NULL;
        if (m->wino) {
            nl = 0;
            for (int i = 0; (c = conv_at(m, i)); i++) {
                if (!is_wino(m, c)) continue;
                conv_shape(m, c, 1, 8, 8, &s);
                c->wino_u = (long)total;
                total += (k_wino_workspace(&s) + 15) & ~(size_t)15;
                m->wino[nl++].c = c;
            }
            m->wino_u = env2_aligned_alloc(total * sizeof(float));
        }
        if (!m->wino || !m->wino_u) {
            env2_free(m->wino);
            m->wino = NULL;
            m->wino_layers = -1;
            /* replan: the workspace holds the transforms now (a model with
             * no Winograd layer has none to hold) */
            if (nl) m->ws_n = 0;
            return;
        }
        m->wino_layers = nl;
        m->wino_params = NULL;
    }
    const int stale = m->wino_params != params || m->wino_version != m->params_version;
    for (int l = 0; l < m->wino_layers; l++) {
        const convbn *c = m->wino[l].c;
        conv_shape(m, c, 1, 8, 8, &s);
        unsigned tag = k_wino_u_tag(&s);
        if (stale || m->wino[l].tag != tag) {
            k_wino_weights(nt, &s, params + c->w, m->wino_u + c->wino_u);
            m->wino[l].tag = tag;
        }
    }
    m->wino_params = params;
    m->wino_version = m->params_version;
}

/* gate: non-NULL for an MBConv projection, which applies the squeeze-excite
 * gate to x as it packs it (the projection is always a 1x1 stride-1
 * convolution: model.c).  pool: non-NULL for a depthwise convolution that
 * also sums its output for the squeeze-excite pooling (k_dwconv_fwd_pool). */
static void run_conv(const env2_model *m, const float *params, const convbn *c, int nt, int n, int *h, int *w,
                     const float *x, const float *gate, float *y, const float *residual, float *ws, float *pool)
{
    k_conv_shape s;
    conv_shape(m, c, n, *h, *w, &s);
    k_epilogue ep = {model_fold_scale(m, c), model_fold_shift(m, c), c->act ? K_ACT_SILU : K_ACT_NONE, residual,
                     c->co};
    if (gate) PROF_CONV(PROF_CONV1X1, &s, 0, 1, k_conv1x1_gated_fwd(nt, &s, x, gate, params + c->w, y, &ep));
    else if (c->kind == T_DW)
        PROF_CONV(PROF_DWCONV, &s, 1, 1, k_dwconv_fwd_pool(nt, &s, x, params + c->w, y, &ep, pool));
    else if (c->k == 1 && c->stride == 1)
        PROF_CONV(PROF_CONV1X1, &s, 0, 1, k_conv2d_fwd(nt, &s, x, params + c->w, y, &ep, ws));
    else if (is_wino(m, c) && m->wino_layers > 0)
        PROF_CONV(PROF_WINO, &s, 0, 1, k_conv2d_fwd_wino_u(nt, &s, x, params + c->w, m->wino_u + c->wino_u, y, &ep));
    else if (is_wino(m, c))
        PROF_CONV(PROF_WINO, &s, 0, 1, k_conv2d_fwd_wino(nt, &s, x, params + c->w, y, &ep, ws));
    else PROF_CONV(k_conv2d_direct(&s) ? PROF_CONVSMALL : PROF_CONVKXK, &s, 0, 1,
                   k_conv2d_fwd(nt, &s, x, params + c->w, y, &ep, ws));
    *h = s.ho;
    *w = s.wo;
}

env2_status model_forward_nhwc(env2_model *m, const float *params, const float *stats, const float *x, int n, int h,
                               int w, float *logits, env2_err *e)
{
    int nt = model_threads(m);
    wino_refresh(m, params, nt);
    if (m->ws_n != n || m->ws_h != h || m->ws_w != w || !m->ws) {
        infer_plan p;
        make_plan(m, n, h, w, &p, nt);
        size_t act = (p.act + 15) & ~(size_t)15;
        size_t need = 3 * act + ((p.conv_ws + 15) & ~(size_t)15) + ((p.se_ws + 15) & ~(size_t)15) +
                      (size_t)n * (size_t)m->arch.head;
        if (need > m->ws_floats) {
            float *ws = env2_aligned_alloc(need * sizeof(float));
            if (!ws) return env2_fail(e, ENV2_E_NOMEM, "out of memory: inference workspace of %zu MiB for %dx%dx%d",
                                      need * sizeof(float) >> 20, n, h, w);
            env2_aligned_free(m->ws);
            m->ws = ws;
            m->ws_floats = need;
        }
        m->ws_n = n;
        m->ws_h = h;
        m->ws_w = w;
        m->ws_act = act;
        m->ws_conv = (p.conv_ws + 15) & ~(size_t)15;
        m->ws_se = (p.se_ws + 15) & ~(size_t)15;
    }
    model_refold(m, params, stats);
    float *buf[3] = {m->ws, m->ws + m->ws_act, m->ws + 2 * m->ws_act};
    float *cws = m->ws + 3 * m->ws_act, *sws = cws + m->ws_conv, *pooled = sws + m->ws_se;

    int H = h, W = w, cur = 0;
    run_conv(m, params, &m->stem, nt, n, &H, &W, x, NULL, buf[0], NULL, cws, NULL);
    for (int b = 0; b < m->nblocks; b++) {
        const block_def *bl = &m->blocks[b];
        float *in = buf[cur], *t1 = buf[(cur + 1) % 3], *t2 = buf[(cur + 2) % 3];
        const float *res = bl->residual ? in : NULL;
        int oh = H, ow = W, next;
        if (bl->fused) {
            if (bl->ncb == 1) {
                run_conv(m, params, &bl->cb[0], nt, n, &oh, &ow, in, NULL, t1, res, cws, NULL);
                next = (cur + 1) % 3;
            } else {
                run_conv(m, params, &bl->cb[0], nt, n, &oh, &ow, in, NULL, t1, NULL, cws, NULL);
                run_conv(m, params, &bl->cb[1], nt, n, &oh, &ow, t1, NULL, t2, res, cws, NULL);
                next = (cur + 2) % 3;
            }
        } else {
            const float *src = in;
            int i = 0;
            float *a = t1, *bb = t2;
            if (bl->has_expand) {
                run_conv(m, params, &bl->cb[i++], nt, n, &oh, &ow, src, NULL, a, NULL, cws, NULL);
                src = a;
                a = t2;
                bb = t1;
            }
            /* depthwise into a, summing a for the SE pooling into sums;
             * the SE gate into sws; project from a, through the gate, into
             * bb */
            float *sums = bl->se ? sws + gate_floats(n, bl->mid) : NULL;
            run_conv(m, params, &bl->cb[i++], nt, n, &oh, &ow, src, NULL, a, NULL, cws, sums);
            if (bl->se)
                PROF(PROF_SE, k_se_gate_chunks(nt, n, oh, ow, bl->mid, bl->se, sums, params + bl->se_w1,
                                               params + bl->se_b1, params + bl->se_w2, params + bl->se_b2, sws,
                                               sums + k_gap_scratch(n, oh, ow, bl->mid)));
            run_conv(m, params, &bl->cb[i++], nt, n, &oh, &ow, a, bl->se ? sws : NULL, bb, res, cws, NULL);
            next = bb == t1 ? (cur + 1) % 3 : (cur + 2) % 3;
        }
        cur = next;
        H = oh;
        W = ow;
    }
    float *hb = buf[(cur + 1) % 3];
    run_conv(m, params, &m->head, nt, n, &H, &W, buf[cur], NULL, hb, NULL, cws, NULL);
    PROF(PROF_HEAD, k_gap_fwd(nt, n, H, W, m->arch.head, hb, pooled);
         k_fc_fwd(nt, n, m->arch.head, m->classes, pooled, params + m->fc_w, params + m->fc_b, logits));
    return ENV2_OK;
}
