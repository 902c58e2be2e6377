/* linear_avx2: the row kernels of linear_avx512.c for AVX2+FMA machines, eight
 * lanes at a time; the same dequantization tricks, with scalar tails instead of
 * masked loads. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/model/dtype.h"
#include "linear_kernels.h"

#define TGT __attribute__((target("avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline))
/* small constant loops over tokens and rows must become straight-line code so
 * their accumulators stay in registers */
#define UNROLL _Pragma("GCC unroll 8")

TGT INL float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

TGT INL __m256 load_plain8(weight_format fmt, const uint8_t *row, int c)
{
    if (fmt == WF_F32)
        return _mm256_loadu_ps((const float *)row + c);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + c));
    if (fmt == WF_F16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static float plain_one(weight_format fmt, const uint8_t *row, int c)
{
    if (fmt == WF_F32) {
        float f;
        memcpy(&f, row + (size_t)c * 4, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, row + (size_t)c * 2, 2);
    return fmt == WF_F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

TGT INL void plain_tile(weight_format fmt, const uint8_t *row, const float *x, size_t xs, int cols,
                        const int nt, float *out)
{
    __m256 a0[4], a1[4];
    UNROLL
    for (int t = 0; t < nt; t++)
        a0[t] = a1[t] = _mm256_setzero_ps();
    int c = 0;
    size_t esize = fmt == WF_F32 ? 4 : 2;
    for (; c + 16 <= cols; c += 16) {
        if (esize == 4 || !(c & 16))
            prefetch_l2(row + (size_t)c * esize, PREFETCH_AHEAD);
        __m256 w0 = load_plain8(fmt, row, c), w1 = load_plain8(fmt, row, c + 8);
        UNROLL
        for (int t = 0; t < nt; t++) {
            a0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + t * xs + c), a0[t]);
            a1[t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + t * xs + c + 8), a1[t]);
        }
    }
    UNROLL
    for (int t = 0; t < nt; t++) {
        float s = hsum8(_mm256_add_ps(a0[t], a1[t]));
        for (int k = c; k < cols; k++)
            s += plain_one(fmt, row, k) * x[t * xs + (size_t)k];
        out[t] = s;
    }
}

TGT INL __m256 load_fp8_scaled8(const uint8_t *p, __m256 sv)
{
    __m128i b = _mm_loadl_epi64((const __m128i *)p);
    __m256i v = _mm256_slli_epi32(_mm256_cvtepu8_epi32(b), 24);
    __m256i sign = _mm256_and_si256(v, _mm256_set1_epi32((int)0x80000000u));
    __m256i mag = _mm256_srli_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0x7f000000)), 4);
    __m256 f = _mm256_mul_ps(_mm256_castsi256_ps(mag), sv);
    f = _mm256_castsi256_ps(_mm256_xor_si256(_mm256_castps_si256(f), sign));
    __m256 nan = _mm256_castsi256_ps(_mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x07f00000)));
    return _mm256_blendv_ps(f, _mm256_set1_ps(NAN), nan);
}

/* 8 E4M3 codes (the top bytes of q's dwords) times sv, where sv = block scale *
 * 2^120: an arithmetic shift by 4 moves exponent and mantissa into a float32's
 * fields and smears the sign over the four bits the mask clears. NaN codes are
 * not handled: the caller checks for them. */
TGT INL __m256 fp8_top_bytes(__m256i q, __m256 sv)
{
    __m256i f = _mm256_and_si256(_mm256_srai_epi32(q, 4), _mm256_set1_epi32((int)0x87f00000u));
    return _mm256_mul_ps(_mm256_castsi256_ps(f), sv);
}

/* 32 codes at p; 1 when one of them is a NaN (magnitude 0x7f) */
TGT INL int fp8_any_nan32(const uint8_t *p)
{
    __m256i m = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)p), _mm256_set1_epi8(0x7f));
    return _mm256_movemask_epi8(_mm256_cmpeq_epi8(m, _mm256_set1_epi8(0x7f))) != 0;
}

/* x: natural order; xp: when set, each whole 32-column chunk of a block
 * transposed as 8 x 4 (xp[8k + i] = x[4i + k], linear_prepare), the rest as is.
 * Then 32 codes take one load, and code k of every dword comes to its top byte
 * with one shift, instead of a widening shuffle per 8 codes. */
TGT INL void fp8_tile(const linear_weight *w, int r, const float *x, const float *xp, size_t xs,
                      const int nt, float *out)
{
    int cols = w->cols, bc = w->block_cols;
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * (size_t)cols;
    const float *srow = (const float *)w->scale + (size_t)(r / w->block_rows) * (size_t)w->scale_cols;
    __m256 a0[4], a1[4];
    int tail_from = cols;
    float tail_scale = 0;
    UNROLL
    for (int t = 0; t < nt; t++)
        a0[t] = a1[t] = _mm256_setzero_ps();
    for (int c0 = 0, b = 0; c0 < cols; c0 += bc, b++) {
        int c1 = c0 + bc < cols ? c0 + bc : cols;
        float s;
        memcpy(&s, srow + b, 4);
        int fold = fabsf(s) < 0x1p7f;
        __m256 sv = _mm256_set1_ps(fold ? s * 0x1p120f : 0x1p120f);
        __m256 post = _mm256_set1_ps(fold ? 1.0f : s);
        __m256 g0[4], g1[4];
        UNROLL
        for (int t = 0; t < nt; t++)
            g0[t] = g1[t] = _mm256_setzero_ps();
        int c = c0;
        for (; xp && c + 32 <= c1; c += 32) {
            if (fp8_any_nan32(row + c))
                break;  /* the per-8 path below turns NaN codes into NaN */
            __m256i q = _mm256_loadu_si256((const __m256i *)(row + c));
            UNROLL
            for (int k = 0; k < 4; k++) {
                __m256 wk = fp8_top_bytes(k == 3 ? q : _mm256_slli_epi32(q, 24 - 8 * k), sv);
                UNROLL
                for (int t = 0; t < nt; t++) {
                    __m256 xk = _mm256_loadu_ps(xp + t * xs + c + 8 * k);
                    if (k & 1)
                        g1[t] = _mm256_fmadd_ps(wk, xk, g1[t]);
                    else
                        g0[t] = _mm256_fmadd_ps(wk, xk, g0[t]);
                }
            }
        }
        if (xp && c + 32 <= c1) {
            /* a chunk with a NaN code: its x is transposed, so the per-8 path below
             * would pair the wrong columns; the NaN makes the row NaN anyway */
            UNROLL
            for (int t = 0; t < nt; t++)
                g0[t] = _mm256_set1_ps(NAN);
            c = c1;
        }
        if (xp)
            x = xp;     /* the columns past the last whole chunk are in natural order */
        for (; c + 16 <= c1; c += 16) {
            __m256 w0 = load_fp8_scaled8(row + c, sv), w1 = load_fp8_scaled8(row + c + 8, sv);
            UNROLL
            for (int t = 0; t < nt; t++) {
                g0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + t * xs + c), g0[t]);
                g1[t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + t * xs + c + 8), g1[t]);
            }
        }
        UNROLL
        for (int t = 0; t < nt; t++) {
            a0[t] = _mm256_fmadd_ps(g0[t], post, a0[t]);
            a1[t] = _mm256_fmadd_ps(g1[t], post, a1[t]);
        }
        tail_from = c;
        tail_scale = s;
    }
    /* fewer than 16 columns at the end of the last block, after the vector loop:
     * a call inside it would keep every accumulator in memory */
    UNROLL
    for (int t = 0; t < nt; t++) {
        float tail = 0;
        for (int k = tail_from; k < cols; k++)
            tail += e4m3_to_f32(row[k]) * tail_scale * x[t * xs + (size_t)k];
        out[t] = hsum8(_mm256_add_ps(a0[t], a1[t])) + tail;
    }
}

/* bf16 to float inline: a call inside a kernel loop makes the compiler keep
 * every vector accumulator in memory around it */
INL float bf16f(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- INT4 (group size a multiple of 32, cols a multiple of 32) ----
 * 64 columns per 32-byte load: dword i holds the nibbles of columns 8i..8i+7,
 * a shift by 4k brings nibble k of every dword to its low bits, and a mask and
 * an integer conversion give v (0..15) exactly. x arrives transposed per
 * 64-chunk (x'[8k + i] = x[8i + k]), so lane i sums x v over its 8 columns;
 * the 8 of v - 8 comes off once per lane as 8 * the sum of those columns
 * (linear_prepare), then the lane is multiplied by its group's scale. A last
 * 32-block does the same four lanes wide. */
TGT INL void int4_tile(const linear_weight *w, const linear_prep *p, int r, int t0, const int nt,
                       float *out)
{
    int cols = w->cols, gs = w->group_size, c64 = cols / 64 * 64;
    size_t xs = (size_t)cols, es = (size_t)cols / 8;
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * (size_t)w->row_words * 4;
    const uint16_t *srow = (const uint16_t *)w->scale + (size_t)r * (size_t)w->scale_cols;
    const float *xp = p->x_perm + (size_t)t0 * xs, *e8 = p->eight_sum + (size_t)t0 * es;
    const __m256i low = _mm256_set1_epi32(0xf);
    __m256 acc[4];
    float tail[4] = {0, 0, 0, 0};
    UNROLL
    for (int t = 0; t < nt; t++)
        acc[t] = _mm256_setzero_ps();
    for (int c = 0; c < c64; c += 64) {
        prefetch_l2(row + c / 2, PREFETCH_AHEAD);
        __m256i q = _mm256_loadu_si256((const __m256i *)(row + c / 2));
        __m256 sc = _mm256_set_m128(_mm_set1_ps(bf16f(srow[(c + 32) / gs])),
                                    _mm_set1_ps(bf16f(srow[c / gs])));
        __m256 ps[4][2];
        UNROLL
        for (int t = 0; t < nt; t++)
            ps[t][0] = ps[t][1] = _mm256_setzero_ps();
        UNROLL
        for (int k = 0; k < 8; k++) {
            __m256i v = k ? _mm256_srli_epi32(q, 4 * k) : q;
            __m256 wk = _mm256_cvtepi32_ps(_mm256_and_si256(v, low));
            UNROLL
            for (int t = 0; t < nt; t++)
                ps[t][k & 1] = _mm256_fmadd_ps(wk, _mm256_loadu_ps(xp + t * xs + c + 8 * k), ps[t][k & 1]);
        }
        UNROLL
        for (int t = 0; t < nt; t++) {
            __m256 lane = _mm256_sub_ps(_mm256_add_ps(ps[t][0], ps[t][1]),
                                        _mm256_loadu_ps(e8 + t * es + c / 8));
            acc[t] = _mm256_fmadd_ps(lane, sc, acc[t]);
        }
    }
    if (c64 < cols) {
        int c = c64;
        __m128i q = _mm_loadu_si128((const __m128i *)(row + c / 2));
        float s = bf16f(srow[c / gs]);
        UNROLL
        for (int t = 0; t < nt; t++) {
            __m128 ps = _mm_setzero_ps();
            UNROLL
            for (int k = 0; k < 8; k++) {
                __m128i v = k ? _mm_srli_epi32(q, 4 * k) : q;
                __m128 wk = _mm_cvtepi32_ps(_mm_and_si128(v, _mm_set1_epi32(0xf)));
                ps = _mm_fmadd_ps(wk, _mm_loadu_ps(xp + t * xs + c + 4 * k), ps);
            }
            ps = _mm_sub_ps(ps, _mm_loadu_ps(e8 + t * es + c / 8));
            ps = _mm_add_ps(ps, _mm_movehl_ps(ps, ps));
            tail[t] = _mm_cvtss_f32(_mm_add_ss(ps, _mm_movehdup_ps(ps))) * s;
        }
    }
    UNROLL
    for (int t = 0; t < nt; t++)
        out[t] = hsum8(acc[t]) + tail[t];
}

TGT INL void fp8_rows_tile(const linear_weight *w, const linear_prep *p, int r, int t0,
                           const int nt, float *out)
{
    size_t xs = (size_t)w->cols;
    fp8_tile(w, r, p->x + (size_t)t0 * xs, p->x_perm ? p->x_perm + (size_t)t0 * xs : NULL, xs, nt,
             out);
}

TGT INL void plain_rows_tile(const linear_weight *w, const linear_prep *p, int r, int t0,
                             const int nt, float *out)
{
    size_t xs = (size_t)w->cols;
    plain_tile(w->fmt, (const uint8_t *)w->data + (size_t)r * xs * (w->fmt == WF_F32 ? 4 : 2),
               p->x + (size_t)t0 * xs, xs, w->cols, nt, out);
}

/* Rows r0..r1 in token tiles of up to 4, one function per format: sharing one
 * body let a change to one kernel's registers slow another (AVX2 FP8 lost 15 %
 * when the INT4 kernel changed). */
#define ROWS_BY_TILES(NAME, TILE)                                                          \
    TGT static void NAME(const linear_weight *w, const linear_prep *p, float *y, int r0,   \
                         int r1)                                                           \
    {                                                                                      \
        size_t R = (size_t)w->rows;                                                        \
        for (int r = r0; r < r1; r++)                                                      \
            for (int t0 = 0; t0 < p->T; t0 += 4) {                                         \
                int nt = p->T - t0 < 4 ? p->T - t0 : 4;                                    \
                float out[4] = {0, 0, 0, 0};                                               \
                switch (nt) {                                                              \
                case 4: TILE(w, p, r, t0, 4, out); break;                                  \
                case 3: TILE(w, p, r, t0, 3, out); break;                                  \
                case 2: TILE(w, p, r, t0, 2, out); break;                                  \
                default: TILE(w, p, r, t0, 1, out); break;                                 \
                }                                                                          \
                for (int t = 0; t < nt; t++)                                               \
                    y[(size_t)(t0 + t) * R + (size_t)r] = out[t];                          \
            }                                                                              \
    }

ROWS_BY_TILES(rows_fp8, fp8_rows_tile)
ROWS_BY_TILES(rows_int4, int4_tile)
ROWS_BY_TILES(rows_plain, plain_rows_tile)

TGT void linear_rows_avx2(const linear_weight *w, const linear_prep *p, float *y, int r0, int r1,
                          float *work)
{
    (void)work;
    if (w->fmt == WF_FP8_BLOCK)
        rows_fp8(w, p, y, r0, r1);
    else if (w->fmt == WF_INT4_GROUP)
        rows_int4(w, p, y, r0, r1);
    else
        rows_plain(w, p, y, r0, r1);
}
