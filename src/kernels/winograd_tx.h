/* Winograd F(4x4, 3x3) transforms, included by winograd.c (portable build)
 * and winograd_avx2.c / winograd_avx512.c (the same C compiled for those
 * ISAs) with WT_NAME(f) naming each build's functions.  The loops run over
 * channels, innermost and contiguous in NHWC, so the compiler vectorizes
 * them; every build does the same operations in the same order.
 *
 * With d the 6 x 6 input patch, g the 3 x 3 filter and m = U (.) V the
 * elementwise product of their transforms summed over input channels:
 *   V = B^T d B,  U = G g G^T,  Y = A^T m A  (4 x 4 outputs)
 * B^T = [1 -3/2 -2 3/2 1 0; 0 -1 1/2 5/2 1 0; 0 1 -5/2 1/2 1 0;
 *        0 -2 -1 2 1 0; 0 1/2 -1 -1/2 1 0; 0 1 -3/2 -2 3/2 1]
 * G   = [1 0 0; 1/3 1/3 1/3; -1/3 1/3 -1/3; -16/15 -8/15 -4/15;
 *        1/15 -2/15 4/15; 0 0 1]
 * A^T = [1 1 1 1 1 0; 0 1 -1 1/2 -2 0; 0 1 1 1/4 4 0; 0 1 -1 1/8 -8 1]
 * Interpolation points 0, 1, -1, 1/2, -2 and infinity.  The usual choice,
 * 0, +-1, +-2, has smaller transforms but about 1.8x the rounding error
 * (2.6e-6 against 1.4e-6 of the output scale on average over random 64-channel
 * tiles in float, and 3x the worst case): enough that training through it
 * put one squeeze-excite gradient of V2-S 13 % over the 1e-4 parity limit of
 * make check-torch on the AVX-512 build (session 14).  Summation orders
 * below are fixed: every build does the same operations. */

#define WT_CB 64 /* channels per pass: the small arrays below stay in L1 */
#ifndef WT_PREFETCHW
#if defined(__GNUC__) || defined(__clang__)
#define WT_PREFETCHW(p) __builtin_prefetch((p), 1, 3)
#else
#define WT_PREFETCHW(p) ((void)(p))
#endif
#endif
#ifndef WT_NO_MEMCPY
#if defined(__GNUC__) && !defined(__clang__)
#define WT_NO_MEMCPY __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define WT_NO_MEMCPY
#endif
#endif

/* V[p][q][c] (p = 6i + j, q < cnt, row stride ci, p stride pstride) for
 * tiles t0 .. t0+cnt-1. */
WT_EXPORT void WT_NAME(k_wino_in_rows)(const k_conv_shape *s, const float *x, long t0, int cnt, long pstride, float *V)
{
    static const float zeros[WT_CB];
    const int ci = s->ci, tw = (s->wo + 3) / 4, th = (s->ho + 3) / 4;
    for (int q = 0; q < cnt; q++) {
        long t = t0 + q, nn = t / ((long)th * tw), r = t % ((long)th * tw);
        int iy0 = (int)(r / tw) * 4 - s->pad_t, ix0 = (int)(r % tw) * 4 - s->pad_l;
        const float *src[6][6];
        for (int i = 0; i < 6; i++)
            for (int j = 0; j < 6; j++) {
                int iy = iy0 + i, ix = ix0 + j;
                src[i][j] = iy >= 0 && iy < s->h && ix >= 0 && ix < s->w ? x + ((nn * s->h + iy) * s->w + ix) * ci
                                                                          : NULL;
            }
        for (int c0 = 0; c0 < ci; c0 += WT_CB) {
            const int cb = ci - c0 < WT_CB ? ci - c0 : WT_CB;
            float tmp[6][6][WT_CB];
            for (int j = 0; j < 6; j++) {
                const float *d[6];
                for (int i = 0; i < 6; i++) d[i] = src[i][j] ? src[i][j] + c0 : zeros;
                const float *d0 = d[0], *d1 = d[1], *d2 = d[2], *d3 = d[3], *d4 = d[4], *d5 = d[5];
                SIMD_LOOP
                for (int c = 0; c < cb; c++) {
                    float a0 = d0[c], a1 = d1[c], a2 = d2[c], a3 = d3[c], a4 = d4[c], a5 = d5[c];
                    tmp[0][j][c] = (a0 + a4) + 1.5f * (a3 - a1) - 2.0f * a2;
                    tmp[1][j][c] = (a4 - a1) + 0.5f * a2 + 2.5f * a3;
                    tmp[2][j][c] = (a4 + a1) - 2.5f * a2 + 0.5f * a3;
                    tmp[3][j][c] = (a4 - a2) + 2.0f * (a3 - a1);
                    tmp[4][j][c] = (a4 - a2) - 0.5f * (a3 - a1);
                    tmp[5][j][c] = (a1 + a5) + 1.5f * (a4 - a2) - 2.0f * a3;
                }
            }
            for (int i = 0; i < 6; i++) {
                /* separate pointers: with v[k * pstride + c] gcc sees a
                 * "complicated access pattern" and does not vectorize */
                float *v0 = V + (long)(6 * i) * pstride + (long)q * ci + c0, *v1 = v0 + pstride,
                      *v2 = v1 + pstride, *v3 = v2 + pstride, *v4 = v3 + pstride, *v5 = v4 + pstride;
                SIMD_LOOP
                for (int c = 0; c < cb; c++) {
                    float a0 = tmp[i][0][c], a1 = tmp[i][1][c], a2 = tmp[i][2][c], a3 = tmp[i][3][c],
                          a4 = tmp[i][4][c], a5 = tmp[i][5][c];
                    v0[c] = (a0 + a4) + 1.5f * (a3 - a1) - 2.0f * a2;
                    v1[c] = (a4 - a1) + 0.5f * a2 + 2.5f * a3;
                    v2[c] = (a4 + a1) - 2.5f * a2 + 0.5f * a3;
                    v3[c] = (a4 - a2) + 2.0f * (a3 - a1);
                    v4[c] = (a4 - a2) - 0.5f * (a3 - a1);
                    v5[c] = (a1 + a5) + 1.5f * (a4 - a2) - 2.0f * a3;
                }
            }
        }
    }
}

/* The same for a block of tbp rows: rows cnt .. tbp-1 are zeroed, because
 * the micro-kernel reads whole MR-row panels. */
WT_EXPORT void WT_NAME(k_wino_in)(const k_conv_shape *s, const float *x, long t0, int cnt, int tbp, float *V)
{
    const int ci = s->ci;
    const long pstride = (long)tbp * ci;
    WT_NAME(k_wino_in_rows)(s, x, t0, cnt, pstride, V);
    if (cnt < tbp)
        for (int p = 0; p < 36; p++) memset(V + p * pstride + (long)cnt * ci, 0, sizeof(float) * (size_t)(tbp - cnt) * ci);
}

/* Weight gradient.  With u the 4 x 4 tile of dy and d the 6 x 6 input patch
 * of V above, the tile's contribution to the 3 x 3 weight gradient is
 *   dW = G^T [(A u A^T) (.) (B^T d B)] G
 * (the forward's trilinear form read with the filter as the output), so the
 * 36 elementwise products summed over tiles are 36 GEMMs over the tiles, and
 * G^T . G is applied once at the end.
 *
 * Y[p][q][o] (p = 6a + b, p stride pstride, row stride co) = A u A^T for the
 * tiles t0 .. t0+cnt-1 of dy [n][ho][wo][co]; outputs past the bottom or
 * right edge count as zero.  A = (A^T)^T is 6 x 4. */
WT_EXPORT void WT_NAME(k_wino_dy)(const k_conv_shape *s, const float *dy, long t0, int cnt, long pstride, float *Y)
{
    static const float zeros[WT_CB];
    const int co = s->co, tw = (s->wo + 3) / 4, th = (s->ho + 3) / 4;
    for (int q = 0; q < cnt; q++) {
        long t = t0 + q, nn = t / ((long)th * tw), r = t % ((long)th * tw);
        int oy0 = (int)(r / tw) * 4, ox0 = (int)(r % tw) * 4;
        const float *src[4][4];
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) {
                int oy = oy0 + i, ox = ox0 + j;
                src[i][j] = oy < s->ho && ox < s->wo ? dy + ((nn * s->ho + oy) * s->wo + ox) * co : NULL;
            }
        for (int c0 = 0; c0 < co; c0 += WT_CB) {
            const int cb = co - c0 < WT_CB ? co - c0 : WT_CB;
            float tmp[6][4][WT_CB];
            for (int j = 0; j < 4; j++) {
                const float *u0 = src[0][j] ? src[0][j] + c0 : zeros, *u1 = src[1][j] ? src[1][j] + c0 : zeros,
                            *u2 = src[2][j] ? src[2][j] + c0 : zeros, *u3 = src[3][j] ? src[3][j] + c0 : zeros;
                SIMD_LOOP
                for (int c = 0; c < cb; c++) {
                    float a0 = u0[c], a1 = u1[c], a2 = u2[c], a3 = u3[c];
                    float e = a0 + a2, o = a1 + a3;
                    tmp[0][j][c] = a0;
                    tmp[1][j][c] = e + o;
                    tmp[2][j][c] = e - o;
                    tmp[3][j][c] = (a0 + 0.25f * a2) + 0.5f * (a1 + 0.25f * a3);
                    tmp[4][j][c] = (a0 + 4.0f * a2) - 2.0f * (a1 + 4.0f * a3);
                    tmp[5][j][c] = a3;
                }
            }
            for (int i = 0; i < 6; i++) {
                float *y0 = Y + (long)(6 * i) * pstride + (long)q * co + c0, *y1 = y0 + pstride, *y2 = y1 + pstride,
                      *y3 = y2 + pstride, *y4 = y3 + pstride, *y5 = y4 + pstride;
                SIMD_LOOP
                for (int c = 0; c < cb; c++) {
                    float a0 = tmp[i][0][c], a1 = tmp[i][1][c], a2 = tmp[i][2][c], a3 = tmp[i][3][c];
                    float e = a0 + a2, o = a1 + a3;
                    y0[c] = a0;
                    y1[c] = e + o;
                    y2[c] = e - o;
                    y3[c] = (a0 + 0.25f * a2) + 0.5f * (a1 + 0.25f * a3);
                    y4[c] = (a0 + 4.0f * a2) - 2.0f * (a1 + 4.0f * a3);
                    y5[c] = a3;
                }
            }
        }
    }
}

/* dw [3][3][ci][co] += G^T M G for input channels [k0, k1), with
 * M[p][k][o] (p = 6a + b) the 36 summed products. */
WT_EXPORT void WT_NAME(k_wino_dw)(const float *M, int ci, int co, int k0, int k1, float *dw)
{
    const float t3 = 1.0f / 3.0f, f1 = 1.0f / 15.0f, f2 = 2.0f / 15.0f, f4 = 4.0f / 15.0f, f8 = 8.0f / 15.0f,
                f16 = 16.0f / 15.0f;
    const long ps = (long)ci * co, ts = (long)ci * co;
    for (int k = k0; k < k1; k++)
        for (int c0 = 0; c0 < co; c0 += WT_CB) {
            const int cb = co - c0 < WT_CB ? co - c0 : WT_CB;
            float tmp[3][6][WT_CB];
            for (int b = 0; b < 6; b++) {
                const float *m0 = M + (long)b * ps + (long)k * co + c0, *m1 = m0 + 6 * ps, *m2 = m1 + 6 * ps,
                            *m3 = m2 + 6 * ps, *m4 = m3 + 6 * ps, *m5 = m4 + 6 * ps;
                SIMD_LOOP
                for (int c = 0; c < cb; c++) {
                    float s12 = m1[c] + m2[c], d12 = m1[c] - m2[c];
                    tmp[0][b][c] = m0[c] + t3 * d12 - f16 * m3[c] + f1 * m4[c];
                    tmp[1][b][c] = t3 * s12 - f8 * m3[c] - f2 * m4[c];
                    tmp[2][b][c] = t3 * d12 + f4 * (m4[c] - m3[c]) + m5[c];
                }
            }
            for (int a = 0; a < 3; a++) {
                float *w0 = dw + (long)(3 * a) * ts + (long)k * co + c0, *w1 = w0 + ts, *w2 = w1 + ts;
                SIMD_LOOP
                for (int c = 0; c < cb; c++) {
                    float m0 = tmp[a][0][c], m1 = tmp[a][1][c], m2 = tmp[a][2][c], m3 = tmp[a][3][c],
                          m4 = tmp[a][4][c], m5 = tmp[a][5][c];
                    float s12 = m1 + m2, d12 = m1 - m2;
                    w0[c] += m0 + t3 * d12 - f16 * m3 + f1 * m4;
                    w1[c] += t3 * s12 - f8 * m3 - f2 * m4;
                    w2[c] += t3 * d12 + f4 * (m4 - m3) + m5;
                }
            }
        }
}

/* Output channels [c0, c0 + cw) of tiles t0 .. t0+cnt-1 from
 * M[p][q][c - c0] (row stride cwp), with the epilogue; outputs past the
 * image's bottom or right edge are not written. */
WT_EXPORT WT_NO_MEMCPY void WT_NAME(k_wino_out)(const k_conv_shape *s, const float *M, int tbp, int cwp, long t0, int cnt, int c0,
                                   int cw, const k_epilogue *ep, float *y)
{
    const int co = s->co, tw = (s->wo + 3) / 4, th = (s->ho + 3) / 4;
    const long pstride = (long)tbp * cwp;
    for (int q = 0; q < cnt; q++) {
        long t = t0 + q, nn = t / ((long)th * tw), r = t % ((long)th * tw);
        int oy0 = (int)(r / tw) * 4, ox0 = (int)(r % tw) * 4;
        int ny = s->ho - oy0 < 4 ? s->ho - oy0 : 4, nx = s->wo - ox0 < 4 ? s->wo - ox0 : 4;
        if (q + 1 < cnt) {
            /* The outputs are first writes to memory the size of a whole
             * activation: fetch the next tile's lines for writing now, so
             * the stores below do not wait for them. */
            long t1 = t + 1, n1 = t1 / ((long)th * tw), r1 = t1 % ((long)th * tw);
            int py = (int)(r1 / tw) * 4, px = (int)(r1 % tw) * 4;
            for (int a = 0; a < 4 && py + a < s->ho; a++)
                for (int b = 0; b < 4 && px + b < s->wo; b++) {
                    const char *d = (const char *)(y + ((n1 * s->ho + py + a) * s->wo + px + b) * co + c0);
                    for (int off = 0; off < cw * (int)sizeof(float); off += 64) WT_PREFETCHW(d + off);
                }
        }
        for (int cc = 0; cc < cw; cc += WT_CB) {
            const int cb = cw - cc < WT_CB ? cw - cc : WT_CB, ch = c0 + cc;
            float tmp[4][6][WT_CB];
            for (int j = 0; j < 6; j++) {
                const float *m0 = M + (long)j * pstride + (long)q * cwp + cc, *m1 = m0 + 6 * pstride,
                            *m2 = m1 + 6 * pstride, *m3 = m2 + 6 * pstride, *m4 = m3 + 6 * pstride,
                            *m5 = m4 + 6 * pstride;
                SIMD_LOOP
                for (int c = 0; c < cb; c++) {
                    float a0 = m0[c], a1 = m1[c], a2 = m2[c], a3 = m3[c], a4 = m4[c], a5 = m5[c];
                    tmp[0][j][c] = a0 + (a1 + a2) + (a3 + a4);
                    tmp[1][j][c] = (a1 - a2) + 0.5f * a3 - 2.0f * a4;
                    tmp[2][j][c] = (a1 + a2) + 0.25f * a3 + 4.0f * a4;
                    tmp[3][j][c] = (a1 - a2) + 0.125f * a3 - 8.0f * a4 + a5;
                }
            }
            for (int a = 0; a < ny; a++) {
                /* the row's nx pixels, cb channels each, packed so that the
                 * activation runs as one call over nx * cb values */
                float o[4 * WT_CB];
                float *o0 = o, *o1 = o + cb, *o2 = o + 2 * cb, *o3 = o + 3 * cb;
                SIMD_LOOP
                for (int c = 0; c < cb; c++) {
                    float a0 = tmp[a][0][c], a1 = tmp[a][1][c], a2 = tmp[a][2][c], a3 = tmp[a][3][c],
                          a4 = tmp[a][4][c], a5 = tmp[a][5][c];
                    o0[c] = a0 + (a1 + a2) + (a3 + a4);
                    o1[c] = (a1 - a2) + 0.5f * a3 - 2.0f * a4;
                    o2[c] = (a1 + a2) + 0.25f * a3 + 4.0f * a4;
                    o3[c] = (a1 - a2) + 0.125f * a3 - 8.0f * a4 + a5;
                }
                for (int b = 0; b < nx; b++) {
                    float *v = o + b * cb;
                    if (ep && ep->scale) {
                        const float *sc = ep->scale + ch;
                        SIMD_LOOP
                        for (int c = 0; c < cb; c++) v[c] *= sc[c];
                    }
                    if (ep && ep->bias) {
                        const float *bi = ep->bias + ch;
                        SIMD_LOOP
                        for (int c = 0; c < cb; c++) v[c] += bi[c];
                    }
                }
                if (ep && ep->act == K_ACT_SILU) k_silu_rows(0, (long)nx * cb, o, NULL, o);
                else if (ep && ep->act == K_ACT_SIGMOID)
                    for (int c = 0; c < nx * cb; c++) o[c] = k_sigmoidf(o[c]);
                for (int b = 0; b < nx; b++) {
                    long pix = (nn * s->ho + oy0 + a) * s->wo + ox0 + b;
                    float *dst = y + pix * co + ch, *v = o + b * cb;
                    /* the residual is read before dst is written: it may be y */
                    if (ep && ep->residual) {
                        const float *re = ep->residual + pix * ep->ldr + ch;
                        SIMD_LOOP
                        for (int c = 0; c < cb; c++) dst[c] = v[c] + re[c];
                    } else {
                        /* not memcpy, which gcc inlines as rep movsq (half of
                         * this function's time); WT_NO_MEMCPY keeps gcc from
                         * turning the loop back into one */
                        SIMD_LOOP
                        for (int c = 0; c < cb; c++) dst[c] = v[c];
                    }
                }
            }
        }
    }
}

/* U for input channels [k0, k1): U[((p * npan + jp) * ci + k) * NR + jj] is
 * the transform at p of the filter from input k to output jp * NR + jj
 * (zero past co), the layout of the micro-kernel's packed B panels.  w is
 * HWIO [3][3][ci][co]. */
WT_EXPORT void WT_NAME(k_wino_w)(const float *w, int ci, int co, int NR, int npan, int k0, int k1, float *U)
{
    const float t3 = 1.0f / 3.0f, f1 = 1.0f / 15.0f, f2 = 2.0f / 15.0f, f4 = 4.0f / 15.0f, f8 = 8.0f / 15.0f,
                f16 = 16.0f / 15.0f;
    for (int k = k0; k < k1; k++) {
        for (int jp = 0; jp < npan; jp++) {
            const int cbase = jp * NR, cn = co - cbase < NR ? co - cbase : NR;
            float u[36][32];
            float tmp[6][3][32];
            for (int kw = 0; kw < 3; kw++) {
                const float *a = w + ((long)(0 * 3 + kw) * ci + k) * co + cbase;
                const float *b = w + ((long)(1 * 3 + kw) * ci + k) * co + cbase;
                const float *c2 = w + ((long)(2 * 3 + kw) * ci + k) * co + cbase;
                SIMD_LOOP
                for (int c = 0; c < cn; c++) {
                    float x0 = a[c], x1 = b[c], x2 = c2[c];
                    tmp[0][kw][c] = x0;
                    tmp[1][kw][c] = t3 * (x0 + x1 + x2);
                    tmp[2][kw][c] = t3 * (x1 - x0 - x2);
                    tmp[3][kw][c] = -(f16 * x0 + f8 * x1 + f4 * x2);
                    tmp[4][kw][c] = f1 * x0 - f2 * x1 + f4 * x2;
                    tmp[5][kw][c] = x2;
                }
            }
            for (int i = 0; i < 6; i++) {
                SIMD_LOOP
                for (int c = 0; c < cn; c++) {
                    float x0 = tmp[i][0][c], x1 = tmp[i][1][c], x2 = tmp[i][2][c];
                    u[6 * i + 0][c] = x0;
                    u[6 * i + 1][c] = t3 * (x0 + x1 + x2);
                    u[6 * i + 2][c] = t3 * (x1 - x0 - x2);
                    u[6 * i + 3][c] = -(f16 * x0 + f8 * x1 + f4 * x2);
                    u[6 * i + 4][c] = f1 * x0 - f2 * x1 + f4 * x2;
                    u[6 * i + 5][c] = x2;
                }
            }
            for (int p = 0; p < 36; p++) {
                float *d = U + (((long)p * npan + jp) * ci + k) * NR;
                memcpy(d, u[p], sizeof(float) * (size_t)cn);
                if (cn < NR) memset(d + cn, 0, sizeof(float) * (size_t)(NR - cn));
            }
        }
    }
}
