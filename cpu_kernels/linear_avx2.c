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

/* ---- FP8 128x128 blocks ----
 * x arrives times 2^k (linear_prepare), so a code needs no multiply: its bits
 * placed in a float32's fields read as its value times 2^-120, the products are
 * the true ones times 2^(k - 120), each block's sum is multiplied by its scale
 * and the row's by 2^(120 - k) (powers of two: exact). One vector op per
 * 8 codes fewer than multiplying every code by its scale. A subnormal code
 * reads as a subnormal float; the one-token tile takes a 32-code chunk
 * holding one as codes x 2^24 and x x 2^-24 (the same exact products, no
 * microcode assist). */

/* 8 E4M3 codes at p as value * 2^-120, NaN codes as NaN */
TGT INL __m256 load_fp8_8(const uint8_t *p)
{
    __m128i b = _mm_loadl_epi64((const __m128i *)p);
    __m256i v = _mm256_slli_epi32(_mm256_cvtepu8_epi32(b), 24);
    __m256i f = _mm256_and_si256(_mm256_srai_epi32(v, 4), _mm256_set1_epi32((int)0x87f00000u));
    __m256i mag = _mm256_and_si256(f, _mm256_set1_epi32(0x7ff00000));
    __m256 nan = _mm256_castsi256_ps(_mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x07f00000)));
    return _mm256_blendv_ps(_mm256_castsi256_ps(f), _mm256_set1_ps(NAN), nan);
}

/* 8 E4M3 codes (the top bytes of q's dwords) as value * 2^-120: an arithmetic
 * shift by 4 moves exponent and mantissa into a float32's fields and smears the
 * sign over the four bits the mask clears. NaN codes are not handled: the caller
 * looks for them. */
TGT INL __m256 fp8_top_bytes(__m256i q)
{
    return _mm256_castsi256_ps(
        _mm256_and_si256(_mm256_srai_epi32(q, 4), _mm256_set1_epi32((int)0x87f00000u)));
}

/* Whether any of q's 32 E4M3 codes is subnormal (exponent 0, mantissa not):
 * read as value * 2^-120 it would be a subnormal float, whose products Intel
 * cores take through a microcode assist. */
TGT INL int fp8_any_subnormal(__m256i q)
{
    const __m256i zero = _mm256_setzero_si256();
    __m256i exp0 = _mm256_cmpeq_epi8(_mm256_and_si256(q, _mm256_set1_epi8(0x78)), zero);
    __m256i mant0 = _mm256_cmpeq_epi8(_mm256_and_si256(q, _mm256_set1_epi8(0x07)), zero);
    return _mm256_movemask_epi8(_mm256_andnot_si256(mant0, exp0)) != 0;
}

/* 8 codes (the top bytes of q's dwords) as value * 2^-96, normal floats or
 * zero: a normal code by its exponent raised 24, a subnormal one (m * 2^-9)
 * as the integer m times 2^-105; both exact */
TGT INL __m256 fp8_top_bytes_up24(__m256i q)
{
    __m256i f = _mm256_castps_si256(fp8_top_bytes(q));
    __m256i sub = _mm256_cmpeq_epi32(_mm256_and_si256(f, _mm256_set1_epi32(0x07800000)), _mm256_setzero_si256());
    __m256i up = _mm256_add_epi32(f, _mm256_set1_epi32(24 << 23));
    __m256i m = _mm256_and_si256(_mm256_srli_epi32(f, 20), _mm256_set1_epi32(7));
    __m256 small = _mm256_mul_ps(_mm256_cvtepi32_ps(m), _mm256_set1_ps(0x1p-105f));
    __m256i sign = _mm256_and_si256(f, _mm256_set1_epi32((int)0x80000000u));
    __m256i sub_bits = _mm256_or_si256(_mm256_castps_si256(small), sign);
    return _mm256_castsi256_ps(_mm256_blendv_epi8(up, sub_bits, sub));
}

/* x: each token's times its 2^k (up[t] = 2^(120 - k)), each whole 32-column
 * chunk of a block transposed as 8 x 4 when p->fp8_chunked (x[8k + i] = x[4i + k]),
 * the rest as is. Then 32 codes take one load, and code k of every dword comes
 * to its top byte with one shift. A
 * NaN code makes the row NaN, as in the reference: the chunks only note whether
 * one went by (a byte of code | 0x80 that is 0xff). */
TGT INL void fp8_tile(const linear_weight *w, const linear_prep *p, int r, const float *x,
                      const float *up, size_t xs, const int nt, float *out)
{
    int cols = w->cols, bc = w->block_cols, whole = p->fp8_chunked;
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * (size_t)cols;
    const float *srow = (const float *)w->scale + (size_t)(r / w->block_rows) * (size_t)w->scale_cols;
    const __m256i top = _mm256_set1_epi8((char)0x80);
    __m256i seen = _mm256_setzero_si256();
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
        __m256 g0[4], g1[4];
        UNROLL
        for (int t = 0; t < nt; t++)
            g0[t] = g1[t] = _mm256_setzero_ps();
        int c = c0;
        for (; whole && c + 32 <= c1; c += 32) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(row + c));
            seen = _mm256_max_epu8(seen, _mm256_or_si256(q, top));
            if (nt == 1 && __builtin_expect(fp8_any_subnormal(q), 0)) {
                /* the same products without a subnormal operand: the codes
                 * times 2^24, x times 2^-24 (exact: x' is far from underflow).
                 * One token's tile only: in the wider ones it took registers
                 * the sums need (4 tokens ran at two thirds of the speed) */
                const __m256 down = _mm256_set1_ps(0x1p-24f);
                UNROLL
                for (int k = 0; k < 4; k++) {
                    __m256 wk = fp8_top_bytes_up24(k == 3 ? q : _mm256_slli_epi32(q, 24 - 8 * k));
                    UNROLL
                    for (int t = 0; t < nt; t++) {
                        __m256 xk = _mm256_mul_ps(_mm256_loadu_ps(x + t * xs + c + 8 * k), down);
                        if (k & 1)
                            g1[t] = _mm256_fmadd_ps(wk, xk, g1[t]);
                        else
                            g0[t] = _mm256_fmadd_ps(wk, xk, g0[t]);
                    }
                }
                continue;
            }
            UNROLL
            for (int k = 0; k < 4; k++) {
                __m256 wk = fp8_top_bytes(k == 3 ? q : _mm256_slli_epi32(q, 24 - 8 * k));
                UNROLL
                for (int t = 0; t < nt; t++) {
                    __m256 xk = _mm256_loadu_ps(x + t * xs + c + 8 * k);
                    if (k & 1)
                        g1[t] = _mm256_fmadd_ps(wk, xk, g1[t]);
                    else
                        g0[t] = _mm256_fmadd_ps(wk, xk, g0[t]);
                }
            }
        }
        for (; c + 16 <= c1; c += 16) {
            __m256 w0 = load_fp8_8(row + c), w1 = load_fp8_8(row + c + 8);
            UNROLL
            for (int t = 0; t < nt; t++) {
                g0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + t * xs + c), g0[t]);
                g1[t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + t * xs + c + 8), g1[t]);
            }
        }
        __m256 sv = _mm256_set1_ps(s);
        UNROLL
        for (int t = 0; t < nt; t++) {
            a0[t] = _mm256_fmadd_ps(g0[t], sv, a0[t]);
            a1[t] = _mm256_fmadd_ps(g1[t], sv, a1[t]);
        }
        tail_from = c;
        tail_scale = s;
    }
    int nan = _mm256_movemask_epi8(_mm256_cmpeq_epi8(seen, _mm256_set1_epi8((char)0xff))) != 0;
    /* fewer than 16 columns at the end of the last block, after the vector loop:
     * a call inside it would keep every accumulator in memory */
    UNROLL
    for (int t = 0; t < nt; t++) {
        float tail = 0;
        for (int k = tail_from; k < cols; k++)
            tail += e4m3_to_f32(row[k]) * 0x1p-120f * x[t * xs + (size_t)k];
        out[t] = nan ? NAN : (hsum8(_mm256_add_ps(a0[t], a1[t])) + tail * tail_scale) * up[t];
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
 * 64 columns per 32-byte load: dword i holds the nibbles of columns 8i..8i+7.
 * XOR with 8 turns each nibble v into the 4-bit two's complement of v - 8, so
 * shifting nibble k to the top of its dword and back down arithmetically gives
 * v - 8 as an exact integer, converted to float32. x arrives transposed per
 * 64-chunk (x'[8k + i] = x[8i + k]), so lane i sums x (v - 8) over its 8
 * columns, then the lane is multiplied by its group's scale. A last 32-block
 * does the same four lanes wide. (Subtracting 8 * the sum of x once per 8
 * columns instead lost the other columns' terms when a column with v = 8 had
 * an outsized x.) */
TGT INL __m256 int4_nibble8(__m256i q, int k)
{
    __m256i v = k < 7 ? _mm256_slli_epi32(q, 28 - 4 * k) : q;
    return _mm256_cvtepi32_ps(_mm256_srai_epi32(v, 28));
}

TGT INL __m128 int4_nibble4(__m128i q, int k)
{
    __m128i v = k < 7 ? _mm_slli_epi32(q, 28 - 4 * k) : q;
    return _mm_cvtepi32_ps(_mm_srai_epi32(v, 28));
}

TGT INL void int4_tile(const linear_weight *w, const linear_prep *p, int r, int t0, const int nt,
                       float *out)
{
    int cols = w->cols, gs = w->group_size, c64 = cols / 64 * 64;
    size_t xs = (size_t)cols;
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * (size_t)w->row_words * 4;
    const uint16_t *srow = (const uint16_t *)w->scale + (size_t)r * (size_t)w->scale_cols;
    const float *xp = p->x_perm + (size_t)t0 * xs;
    const __m256i flip = _mm256_set1_epi32((int)0x88888888u);
    __m256 acc[4];
    float tail[4] = {0, 0, 0, 0};
    UNROLL
    for (int t = 0; t < nt; t++)
        acc[t] = _mm256_setzero_ps();
    for (int c = 0; c < c64; c += 64) {
        prefetch_l2(row + c / 2, PREFETCH_AHEAD);
        __m256i q = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(row + c / 2)), flip);
        __m256 sc = _mm256_set_m128(_mm_set1_ps(bf16f(srow[(c + 32) / gs])),
                                    _mm_set1_ps(bf16f(srow[c / gs])));
        __m256 ps[4][2];
        UNROLL
        for (int t = 0; t < nt; t++)
            ps[t][0] = ps[t][1] = _mm256_setzero_ps();
        UNROLL
        for (int k = 0; k < 8; k++) {
            __m256 wk = int4_nibble8(q, k);
            UNROLL
            for (int t = 0; t < nt; t++)
                ps[t][k & 1] = _mm256_fmadd_ps(wk, _mm256_loadu_ps(xp + t * xs + c + 8 * k), ps[t][k & 1]);
        }
        UNROLL
        for (int t = 0; t < nt; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_add_ps(ps[t][0], ps[t][1]), sc, acc[t]);
    }
    if (c64 < cols) {
        int c = c64;
        __m128i q = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(row + c / 2)),
                                  _mm256_castsi256_si128(flip));
        float s = bf16f(srow[c / gs]);
        UNROLL
        for (int t = 0; t < nt; t++) {
            __m128 ps = _mm_setzero_ps();
            UNROLL
            for (int k = 0; k < 8; k++)
                ps = _mm_fmadd_ps(int4_nibble4(q, k), _mm_loadu_ps(xp + t * xs + c + 4 * k), ps);
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
    fp8_tile(w, p, r, p->x_perm + (size_t)t0 * xs, p->fp8_up + t0, xs, nt, out);
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

/* ---- many tokens (prefill): a float32 GEMM, as linear_avx512.c's. Weights
 * are dequantized a panel of NR rows x KC columns at a time and transposed,
 * so a 16-row slice of one column is two vectors; the microkernel keeps MT
 * tokens x 16 rows in 12 accumulators (of the 16 registers) and multiplies by
 * broadcast activations: 12 FMAs per 8 loads, no horizontal sums. y
 * accumulates over column chunks in place, so each output is one FMA chain
 * over its row in column order, whatever the call's size (from
 * linear_batched's count; fewer take the tiles above). ---- */

#define NR 16
#define MT 6
#define KC 256

TGT INL void gemm_tile(const float *wt, const float *const *xr, int kc, float *const *yr,
                       const __m256i *mask, int first)
{
    __m256 acc[MT][2];
    UNROLL
    for (int t = 0; t < MT; t++)
        UNROLL
        for (int v = 0; v < 2; v++)
            acc[t][v] = first ? _mm256_setzero_ps() : _mm256_maskload_ps(yr[t] + 8 * v, mask[v]);
    for (int k = 0; k < kc; k++) {
        const float *wk = wt + (size_t)k * NR;
        __m256 w0 = _mm256_load_ps(wk), w1 = _mm256_load_ps(wk + 8);
        UNROLL
        for (int t = 0; t < MT; t++) {
            __m256 xb = _mm256_broadcast_ss(xr[t] + k);
            acc[t][0] = _mm256_fmadd_ps(w0, xb, acc[t][0]);
            acc[t][1] = _mm256_fmadd_ps(w1, xb, acc[t][1]);
        }
    }
    UNROLL
    for (int t = 0; t < MT; t++)
        UNROLL
        for (int v = 0; v < 2; v++)
            _mm256_maskstore_ps(yr[t] + 8 * v, mask[v], acc[t][v]);
}

/* dst[c * ld_dst + i] = src[i * ld_src + c] for an 8 x 8 block */
TGT INL void transpose8(const float *src, size_t ld_src, float *dst, size_t ld_dst)
{
    __m256 r[8], t[8], u[8];
    UNROLL
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps(src + (size_t)i * ld_src);
    UNROLL
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    UNROLL
    for (int i = 0; i < 2; i++) {   /* u[4i + j], 128-bit lane L: rows 4i..4i+3 of column 4L + j */
        u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    UNROLL
    for (int j = 0; j < 4; j++) {
        _mm256_storeu_ps(dst + (size_t)j * ld_dst, _mm256_permute2f128_ps(u[j], u[4 + j], 0x20));
        _mm256_storeu_ps(dst + (size_t)(4 + j) * ld_dst, _mm256_permute2f128_ps(u[j], u[4 + j], 0x31));
    }
}

/* Prefetches into L2 the panel of rows [r, r + nr), columns [c0, c1): one
 * short run per row, which the hardware prefetcher does not follow. */
TGT INL void prefetch_panel(const linear_weight *w, int r, int nr, int c0, int c1)
{
    size_t esize2 = w->fmt == WF_INT4_GROUP ? 1 : w->fmt == WF_FP8_BLOCK ? 2 : w->fmt == WF_F32 ? 8 : 4;
    size_t rb = w->fmt == WF_INT4_GROUP ? (size_t)w->row_words * 4 : (size_t)w->cols * esize2 / 2;
    for (int i = 0; i < nr; i++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)(r + i) * rb;
        for (size_t b = ((size_t)c0 * esize2 / 2) & ~(size_t)63; b < (size_t)c1 * esize2 / 2; b += 64)
            prefetch_l2(row + b, 0);
    }
}

TGT static void dequant_range(const linear_weight *w, int r0, int n, int c0, int c1, float *out,
                              size_t ld);

TGT static void batched_rows(const linear_weight *w, const linear_prep *p, float *y, int r0, int r1,
                             float *work)
{
    int cols = w->cols, T = p->T;
    size_t R = (size_t)w->rows;
    float *wc = (float *)(((uintptr_t)work + 63) & ~(uintptr_t)63);   /* [NR][KC] */
    float *wt = wc + (size_t)NR * KC;                                   /* [KC][NR] */
    float scratch_row[MT][NR] = {{0}};   /* where missing tokens' sums go */
    memset(wc, 0, (size_t)NR * KC * sizeof *wc);  /* rows past a short panel stay zero */
    for (int r = r0; r < r1; r += NR) {
        int nr = r1 - r < NR ? r1 - r : NR;
        __m256i mask[2];
        for (int v = 0; v < 2; v++) {
            int left = nr - 8 * v;
            mask[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        }
        for (int c0 = 0; c0 < cols; c0 += KC) {
            int kc = cols - c0 < KC ? cols - c0 : KC;
            /* the next panel streams in while this one is computed */
            if (c0 + KC < cols)
                prefetch_panel(w, r, nr, c0 + KC, c0 + 2 * KC < cols ? c0 + 2 * KC : cols);
            else if (r + NR < r1)
                prefetch_panel(w, r + NR, r1 - r - NR < NR ? r1 - r - NR : NR, 0, KC < cols ? KC : cols);
            dequant_range(w, r, nr, c0, c0 + kc, wc, KC);
            /* columns past kc (a last chunk of fewer than 8) transpose what
             * an earlier chunk left there: never read */
            for (int g = 0; g < NR / 8; g++)
                for (int kb = 0; kb < kc; kb += 8)
                    transpose8(wc + (size_t)g * 8 * KC + (size_t)kb, KC, wt + (size_t)kb * NR + 8 * (size_t)g, NR);
            for (int t0 = 0; t0 < T; t0 += MT) {
                int ntk = T - t0 < MT ? T - t0 : MT;
                const float *xr[MT];
                float *yr[MT];
                for (int t = 0; t < MT; t++) {
                    /* missing tokens read token t0 and write to scratch */
                    xr[t] = p->x + (size_t)(t0 + (t < ntk ? t : 0)) * (size_t)cols + c0;
                    yr[t] = t < ntk ? y + (size_t)(t0 + t) * R + (size_t)r : scratch_row[t];
                }
                gemm_tile(wt, xr, kc, yr, mask, c0 == 0);
            }
        }
    }
}

/* ---- a few dozen tokens (a routed expert's share of a prefill step): as
 * linear_avx512.c's narrow product, tokens in the vector lanes (x transposed
 * by linear_prepare into groups of 8), each weight of a panel dequantized in
 * natural order broadcast into the FMAs: no transpose of the weights, whose
 * cost per token the GEMM above only earns back from about 40 tokens. Each
 * output is one FMA chain over its row in column order from zero, so its bits
 * are the GEMM's. linear_batched_work's narrow size (48 rows, 128 columns,
 * groups of 16) covers these panels. ---- */

#define NRP 48
#define KCN 128
/* the tile's loops over its up to 12 accumulators, fully unrolled */
#define UNROLL12 _Pragma("GCC unroll 12")

_Static_assert(LINEAR_BATCHED_MIN_T > 8, "the narrow product's tiles take two groups or three");

/* NRW rows x G groups of 8 tokens (NRW * G <= 12 accumulators; with G x
 * vectors and a broadcast, 16 registers at most) over kc columns: wc [NRW
 * rows, stride ldw], xk [kc][gstride] from the first group, part [G][NRP][8]
 * from the first row */
TGT INL void narrow_tile(const float *wc, size_t ldw, const float *xk, size_t gstride, int kc,
                         float *part, int first, const int NRW, const int G)
{
    __m256 acc[12];
    UNROLL12
    for (int i = 0; i < NRW; i++)
        UNROLL12
        for (int g = 0; g < G; g++)
            acc[i * G + g] = first ? _mm256_setzero_ps()
                                   : _mm256_load_ps(part + (size_t)g * NRP * 8 + 8 * (size_t)i);
    for (int k = 0; k < kc; k++) {
        const float *xr = xk + (size_t)k * gstride;
        __m256 xv[3];
        UNROLL12
        for (int g = 0; g < G; g++)
            xv[g] = _mm256_load_ps(xr + 8 * g);
        UNROLL12
        for (int i = 0; i < NRW; i++) {
            __m256 wb = _mm256_broadcast_ss(wc + (size_t)i * ldw + (size_t)k);
            UNROLL12
            for (int g = 0; g < G; g++)
                acc[i * G + g] = _mm256_fmadd_ps(wb, xv[g], acc[i * G + g]);
        }
    }
    UNROLL12
    for (int i = 0; i < NRW; i++)
        UNROLL12
        for (int g = 0; g < G; g++)
            _mm256_store_ps(part + (size_t)g * NRP * 8 + 8 * (size_t)i, acc[i * G + g]);
}

/* the row sub-blocks of a panel for groups [g0, g0 + G) */
#define NARROW_PANEL(NRW, G)                                                              \
    for (int i = 0; i < NRP; i += NRW)                                                    \
        narrow_tile(wp + (size_t)i * ldw, ldw, xk + 8 * (size_t)g0, gs, kc,               \
                    part + (size_t)g0 * NRP * 8 + 8 * (size_t)i, first, NRW, G)

/* A panel's tiles over every group of tokens: three groups a tile while that
 * leaves none alone, else two (a call has two or more: LINEAR_BATCHED_MIN_T >
 * 8). ldw is KCN for a panel dequantized into the work (a constant: the tiles'
 * rows are displacements) or a float32 weight's row length for a panel read
 * in place. */
TGT INL void narrow_panel(const float *wp, const size_t ldw, const float *xk, size_t gs,
                          int groups, int kc, float *part, int first)
{
    for (int g0 = 0; g0 < groups;) {
        if (groups - g0 >= 3 && groups - g0 != 4) {
            NARROW_PANEL(4, 3);
            g0 += 3;
        } else {
            NARROW_PANEL(6, 2);
            g0 += 2;
        }
    }
}

TGT static void narrow_rows(const linear_weight *w, const linear_prep *p, float *y, int r0,
                            int r1, float *work)
{
    int cols = w->cols, T = p->T, groups = (T + 7) / 8;
    size_t R = (size_t)w->rows, gs = 8 * (size_t)groups;
    float *wc = (float *)(((uintptr_t)work + 63) & ~(uintptr_t)63);   /* [NRP][KCN] */
    float *part = wc + (size_t)NRP * KCN;                               /* [groups][NRP][8] */
    /* defined values in the rows past a short panel, computed and never stored */
    memset(wc, 0, (size_t)NRP * KCN * sizeof *wc);
    for (int r = r0; r < r1; r += NRP) {
        int nr = r1 - r < NRP ? r1 - r : NRP;
        for (int c0 = 0; c0 < cols; c0 += KCN) {
            int kc = cols - c0 < KCN ? cols - c0 : KCN;
            if (c0 + KCN < cols)
                prefetch_panel(w, r, nr, c0 + KCN, c0 + 2 * KCN < cols ? c0 + 2 * KCN : cols);
            else if (r + NRP < r1)
                prefetch_panel(w, r + NRP, r1 - r - NRP < NRP ? r1 - r - NRP : NRP, 0,
                               KCN < cols ? KCN : cols);
            const float *xk = p->x_lanes + (size_t)c0 * gs;
            /* a whole panel of float32 rows is read where it is */
            if (w->fmt == WF_F32 && nr == NRP) {
                narrow_panel((const float *)w->data + (size_t)r * (size_t)cols + (size_t)c0,
                             (size_t)cols, xk, gs, groups, kc, part, c0 == 0);
            } else {
                dequant_range(w, r, nr, c0, c0 + kc, wc, KCN);
                narrow_panel(wc, KCN, xk, gs, groups, kc, part, c0 == 0);
            }
        }
        for (int t = 0; t < T; t++) {
            const float *pt = part + (size_t)(t / 8) * NRP * 8 + (size_t)(t % 8);
            float *yt = y + (size_t)t * R + (size_t)r;
            for (int i = 0; i < nr; i++)
                yt[i] = pt[8 * (size_t)i];
        }
    }
}

TGT void linear_rows_avx2(const linear_weight *w, const linear_prep *p, float *y, int r0, int r1,
                          float *work)
{
    if (p->x_lanes) {
        narrow_rows(w, p, y, r0, r1, work);
        return;
    }
    if (p->batched) {
        batched_rows(w, p, y, r0, r1, work);
        return;
    }
    if (w->fmt == WF_FP8_BLOCK)
        rows_fp8(w, p, y, r0, r1);
    else if (w->fmt == WF_INT4_GROUP)
        rows_int4(w, p, y, r0, r1);
    else
        rows_plain(w, p, y, r0, r1);
}

/* ---- rows to float32 (linear_dequant_rows), the reference's values ----
 * E4M3 codes as value * 2^-120 times scale * 2^120 (or times 2^120, exact,
 * then the scale when it is too large to fold): one rounding, as the
 * reference's value * scale; INT4 words spread over 8 lanes by variable
 * shifts. */
/* Columns [c0, c1) of rows [r0, r0 + n) into out[i * ld + (c - c0)]; c0 a
 * multiple of 8. */
TGT static void dequant_range(const linear_weight *w, int r0, int n, int c0, int c1, float *out,
                              size_t ld)
{
    int cols = w->cols;
    for (int r = r0; r < r0 + n; r++) {
        float *o = out + (size_t)(r - r0) * ld - c0;
        if (w->fmt == WF_INT4_GROUP) {
            const uint32_t *words = (const uint32_t *)((const uint8_t *)w->data + (size_t)r * (size_t)w->row_words * 4);
            const uint16_t *srow = (const uint16_t *)w->scale + (size_t)r * (size_t)w->scale_cols;
            const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
            /* (the SIMD paths take cols and group sizes that are multiples of
             * 32); a group at a time, so its scale is converted once (a
             * division per 8 weights took as long as the products after) */
            for (int c = c0, g = c0 / w->group_size; c < c1; g++) {
                int ge = (g + 1) * w->group_size < c1 ? (g + 1) * w->group_size : c1;
                __m256 sv = _mm256_set1_ps(bf16f(srow[g]));
                for (; c < ge; c += 8) {
                    __m256i v = _mm256_srlv_epi32(_mm256_set1_epi32((int)words[c / 8]), shifts);
                    v = _mm256_sub_epi32(_mm256_and_si256(v, _mm256_set1_epi32(15)), _mm256_set1_epi32(8));
                    _mm256_storeu_ps(o + c, _mm256_mul_ps(_mm256_cvtepi32_ps(v), sv));
                }
            }
        } else if (w->fmt == WF_FP8_BLOCK) {
            const uint8_t *row = (const uint8_t *)w->data + (size_t)r * (size_t)cols;
            const float *srow = (const float *)w->scale + (size_t)(r / w->block_rows) * (size_t)w->scale_cols;
            for (int c = c0; c < c1;) {
                int be = (c / w->block_cols + 1) * w->block_cols;
                be = be < c1 ? be : c1;
                float s;
                memcpy(&s, srow + c / w->block_cols, 4);
                int fold = fabsf(s) < 0x1p7f;
                __m256 sv = _mm256_set1_ps(fold ? s * 0x1p120f : 0x1p120f);
                for (; c + 8 <= be; c += 8) {
                    __m256 f = _mm256_mul_ps(load_fp8_8(row + c), sv);
                    _mm256_storeu_ps(o + c, fold ? f : _mm256_mul_ps(f, _mm256_set1_ps(s)));
                }
                for (; c < be; c++)
                    o[c] = e4m3_to_f32(row[c]) * s;
            }
        } else {
            const uint8_t *row = (const uint8_t *)w->data + (size_t)r * (size_t)cols * (w->fmt == WF_F32 ? 4 : 2);
            int c = c0;
            for (; c + 8 <= c1; c += 8)
                _mm256_storeu_ps(o + c, load_plain8(w->fmt, row, c));
            for (; c < c1; c++)
                o[c] = plain_one(w->fmt, row, c);
        }
    }
}

TGT void dequant_rows_avx2(const linear_weight *w, int r0, int n, float *out)
{
    dequant_range(w, r0, n, 0, w->cols, out, (size_t)w->cols);
}

/* ---- a combination of float32 rows (linear_combine_rows) ----
 * Columns in blocks of 64 (eight accumulators), then of 8, then a scalar
 * tail; each output one FMA chain over the rows in order, from zero or (add)
 * from y. */
TGT void combine_rows_avx2(const float *a, const float *W, int n, int cols, float *y, int add)
{
    size_t ld = (size_t)cols;
    int c = 0;
    for (; c + 64 <= cols; c += 64) {
        __m256 acc[8];
        UNROLL
        for (int k = 0; k < 8; k++)
            acc[k] = add ? _mm256_loadu_ps(y + c + 8 * k) : _mm256_setzero_ps();
        for (int i = 0; i < n; i++) {
            __m256 ai = _mm256_set1_ps(a[i]);
            const float *w = W + (size_t)i * ld + (size_t)c;
            UNROLL
            for (int k = 0; k < 8; k++)
                acc[k] = _mm256_fmadd_ps(ai, _mm256_loadu_ps(w + 8 * k), acc[k]);
        }
        UNROLL
        for (int k = 0; k < 8; k++)
            _mm256_storeu_ps(y + c + 8 * k, acc[k]);
    }
    for (; c + 8 <= cols; c += 8) {
        __m256 acc = add ? _mm256_loadu_ps(y + c) : _mm256_setzero_ps();
        for (int i = 0; i < n; i++)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(a[i]), _mm256_loadu_ps(W + (size_t)i * ld + (size_t)c), acc);
        _mm256_storeu_ps(y + c, acc);
    }
    for (; c < cols; c++) {
        float acc = add ? y[c] : 0;
        for (int i = 0; i < n; i++)
            acc = fmaf(a[i], W[(size_t)i * ld + (size_t)c], acc);
        y[c] = acc;
    }
}

/* ---- many combinations of the same rows (linear_combine_many) ----
 * MR rows of A against NV vectors of 8 columns of W (MR * NV <= 12
 * accumulators, with MR broadcasts and one row of W in the other registers),
 * columns past the last whole vector one at a time. Each output one FMA chain
 * over W's rows in order, from zero or (add) carried on from Y: the bits of
 * combine_rows_avx2 for each row of A. */
#define CM_ROWS 3

TGT INL __m256 load_row8(const float *W32, const uint16_t *W16, size_t at, const int bf16)
{
    if (!bf16)
        return _mm256_loadu_ps(W32 + at);
    __m128i h = _mm_loadu_si128((const __m128i *)(W16 + at));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

TGT INL void combine_many_tile(const float *A, size_t lda, const float *W32, const uint16_t *W16,
                               size_t ldw, int n, int nv, float *Y, size_t ldy, int add,
                               const int MR, const int bf16)
{
    __m256 acc[CM_ROWS][4];
    UNROLL
    for (int r = 0; r < MR; r++)
        UNROLL
        for (int v = 0; v < 4; v++)
            acc[r][v] = add && v < nv ? _mm256_loadu_ps(Y + (size_t)r * ldy + 8 * v)
                                      : _mm256_setzero_ps();
    for (int i = 0; i < n; i++) {
        __m256 a[CM_ROWS];
        UNROLL
        for (int r = 0; r < MR; r++)
            a[r] = _mm256_set1_ps(A[(size_t)r * lda + (size_t)i]);
        UNROLL
        for (int v = 0; v < 4; v++) {
            if (v >= nv)
                break;
            __m256 w = load_row8(W32, W16, (size_t)i * ldw + 8 * (size_t)v, bf16);
            UNROLL
            for (int r = 0; r < MR; r++)
                acc[r][v] = _mm256_fmadd_ps(a[r], w, acc[r][v]);
        }
    }
    UNROLL
    for (int r = 0; r < MR; r++)
        UNROLL
        for (int v = 0; v < 4; v++)
            if (v < nv)
                _mm256_storeu_ps(Y + (size_t)r * ldy + 8 * v, acc[r][v]);
}

/* rows of A a tile of CM_ROWS at a time, the last of the rows left */
#define COMBINE_MANY_TILES(BF16)                                                              \
    for (int r = 0; nv && r < nr; r += CM_ROWS) {                                             \
        const float *Ar = A + (size_t)r * lda;                                                \
        float *Yr = Y + (size_t)r * ldy + c0;                                                 \
        switch (nr - r < CM_ROWS ? nr - r : CM_ROWS) {                                        \
        case 1: combine_many_tile(Ar, lda, W32c, W16c, ldw, n, nv, Yr, ldy, add, 1, BF16); break; \
        case 2: combine_many_tile(Ar, lda, W32c, W16c, ldw, n, nv, Yr, ldy, add, 2, BF16); break; \
        default: combine_many_tile(Ar, lda, W32c, W16c, ldw, n, nv, Yr, ldy, add, 3, BF16); break; \
        }                                                                                     \
    }

TGT void combine_many_avx2(const float *A, size_t lda, int nr, const float *W32,
                           const uint16_t *W16, size_t ldw, int n, int c0, int c1, float *Y,
                           size_t ldy, int add)
{
    int nv = (c1 - c0) / 8;
    const float *W32c = W32 ? W32 + c0 : NULL;
    const uint16_t *W16c = W16 ? W16 + c0 : NULL;
    if (W16)
        COMBINE_MANY_TILES(1)
    else
        COMBINE_MANY_TILES(0)
    for (int c = c0 + 8 * nv; c < c1; c++)
        for (int r = 0; r < nr; r++) {
            float acc = add ? Y[(size_t)r * ldy + (size_t)c] : 0;
            for (int i = 0; i < n; i++) {
                size_t at = (size_t)i * ldw + (size_t)c;
                acc = fmaf(A[(size_t)r * lda + (size_t)i], W16 ? bf16f(W16[at]) : W32[at], acc);
            }
            Y[(size_t)r * ldy + (size_t)c] = acc;
        }
}
