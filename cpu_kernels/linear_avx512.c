/* linear_avx512: row kernels for AVX-512 (F/BW/VL), float32 activations.
 *
 * Each weight row is read once per tile of up to 4 tokens and dequantized in
 * registers: BF16 by a 16-bit shift, E4M3 by moving its exponent and mantissa
 * into a float32's fields and multiplying by 2^120 (exact for normals and
 * subnormals; NaN codes stay NaN; a 64-code chunk holding a subnormal code,
 * which would be a subnormal float, goes as codes x 2^24 and x x 2^-24, the
 * same exact products) or through VBMI byte tables, INT4 nibbles by
 * a shift and a 16-entry vpermps table, 128 columns per load. x arrives in the
 * order the dequantization yields (linear_prepare), so no shuffles of x remain.
 * Every 64 bytes of weights read also prefetch a line further on. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/model/dtype.h"
#include "fp8_widen_avx512.h"
#include "transpose_avx512.h"
#include "linear_kernels.h"

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline))
/* small constant loops over tokens and rows must become straight-line code so
 * their accumulators stay in registers */
#define UNROLL _Pragma("GCC unroll 8")

/* bf16 to float inline: a call inside a kernel loop makes the compiler keep
 * every vector accumulator in memory around it */
INL float bf16f(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The columns [c0, c1) of a row a tile function reads (c0 a multiple of 128 and
 * of the FP8 block width), and how far ahead it prefetches. A row read in
 * several spans carries its tokens' vector sums from one span to the next in
 * `carry` (a0 then a1 of each token) and sums them up only after the last, so
 * each token's result has the bits of the row read in one span: the same
 * whatever the tile's size or the spans (a token's logits do not depend on
 * the other rows of its step). */
typedef struct span {
    int c0, c1;
    size_t ahead;
    int first, last;            /* the row's first span, its last */
    __m512 *carry;              /* [2 * 4]; unused for a row in one span */
} span;

/* x of all the tokens for one column block must fit this (L1 is 32-48 KB and
 * the weight stream passes through it too) */
#define X_BLOCK_BYTES (32 * 1024)
#define ROW_BLOCK 16

static int column_block(const linear_weight *w, int T)
{
    int unit = w->fmt == WF_FP8_BLOCK ? w->block_cols : 128;
    long fit = X_BLOCK_BYTES / (4L * T);
    if (fit >= w->cols)
        return w->cols;
    return fit < unit ? unit : (int)(fit / unit * unit);
}

/* byte offset of column c in a row */
static size_t column_byte(const linear_weight *w, int c)
{
    switch (w->fmt) {
    case WF_INT4_GROUP: return (size_t)c / 2;
    case WF_FP8_BLOCK: return (size_t)c;
    case WF_F32: return (size_t)c * 4;
    default: return (size_t)c * 2;
    }
}

/* (INT4 rows the SIMD paths take are whole 32-column groups: row_words * 4) */
static size_t row_bytes(const linear_weight *w)
{
    return column_byte(w, w->cols);
}

TGT INL __mmask16 tail_mask(int n)
{
    return (__mmask16)((1u << n) - 1u);
}

TGT INL __m512 load_bf16(const uint16_t *p, __mmask16 m)
{
    __m256i h = _mm256_maskz_loadu_epi16(m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

TGT INL __m512 load_f16(const uint16_t *p, __mmask16 m)
{
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

/* up to 16 E4M3 codes at p as value * 2^-120, NaN codes as NaN */
TGT INL __m512 load_fp8_16(const uint8_t *p, __mmask16 m)
{
    __m512i v = _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, p)), 24);
    __m512i f = _mm512_and_si512(_mm512_srai_epi32(v, 4), _mm512_set1_epi32((int)0x87f00000u));
    __mmask16 nan = _mm512_cmpeq_epi32_mask(_mm512_and_si512(f, _mm512_set1_epi32(0x7ff00000)),
                                            _mm512_set1_epi32(0x07f00000));
    return _mm512_mask_mov_ps(_mm512_castsi512_ps(f), nan, _mm512_set1_ps(NAN));
}

/* ---- plain formats: F32, F16, BF16 ---- */

/* A tile's sums at its span's start: zero, or carried from the span before. */
TGT INL void tile_begin(span sp, const int nt, __m512 *a0, __m512 *a1)
{
    UNROLL
    for (int t = 0; t < nt; t++) {
        a0[t] = sp.first ? _mm512_setzero_ps() : sp.carry[2 * t];
        a1[t] = sp.first ? _mm512_setzero_ps() : sp.carry[2 * t + 1];
    }
}

/* ... and at its end: carried on, or summed into out after the row's last span. */
TGT INL void tile_end(span sp, const int nt, const __m512 *a0, const __m512 *a1, float *out)
{
    UNROLL
    for (int t = 0; t < nt; t++) {
        if (sp.last) {
            out[t] = _mm512_reduce_add_ps(_mm512_add_ps(a0[t], a1[t]));
        } else {
            sp.carry[2 * t] = a0[t];
            sp.carry[2 * t + 1] = a1[t];
        }
    }
}

TGT INL __m512 load_plain(weight_format fmt, const uint8_t *row, int c, __mmask16 m)
{
    if (fmt == WF_F32)
        return _mm512_maskz_loadu_ps(m, (const float *)row + c);
    if (fmt == WF_F16)
        return load_f16((const uint16_t *)row + c, m);
    return load_bf16((const uint16_t *)row + c, m);
}

TGT INL void plain_tile(weight_format fmt, const uint8_t *row, const float *x, size_t xs, span sp,
                        const int nt, float *out)
{
    __m512 a0[4], a1[4];
    tile_begin(sp, nt, a0, a1);
    int c = sp.c0, cols = sp.c1;
    size_t esize = fmt == WF_F32 ? 4 : 2;
    for (; c + 32 <= cols; c += 32) {
        prefetch_l2(row + (size_t)c * esize, sp.ahead);
        if (esize == 4)
            prefetch_l2(row + (size_t)c * esize + 64, sp.ahead);
        __m512 w0 = load_plain(fmt, row, c, 0xffff), w1 = load_plain(fmt, row, c + 16, 0xffff);
        UNROLL
        for (int t = 0; t < nt; t++) {
            a0[t] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + t * xs + c), a0[t]);
            a1[t] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + t * xs + c + 16), a1[t]);
        }
    }
    for (; c < cols; c += 16) {
        __mmask16 m = cols - c >= 16 ? (__mmask16)0xffff : tail_mask(cols - c);
        __m512 w0 = load_plain(fmt, row, c, m);
        UNROLL
        for (int t = 0; t < nt; t++)
            a0[t] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, x + t * xs + c), a0[t]);
    }
    tile_end(sp, nt, a0, a1, out);
}

/* ---- FP8 128x128 blocks (any block width that is a multiple of 16), without
 * byte tables (CPUs without AVX512-VBMI) ----
 * As on AVX2: each token's x arrives times 2^k (linear_prepare), so a code's
 * bits placed in a float32's fields (its value times 2^-120) need no multiply;
 * a block's sum is multiplied by its scale, the span's by up[t] = 2^(120 - k).
 * Whole 64-column chunks of a block take one load, x transposed per chunk as
 * 16 x 4 (x[16j + i] = x[4i + j]), code j of every dword brought to its top byte
 * by one shift; a NaN code only marks the row. The rest of a block goes 16
 * codes at a time, widened, with NaN codes turned into NaN. */

/* 16 E4M3 codes (the top bytes of q's dwords) as value * 2^-120, NaN not handled */
TGT INL __m512 fp8_top_bytes16(__m512i q)
{
    return _mm512_castsi512_ps(
        _mm512_and_si512(_mm512_srai_epi32(q, 4), _mm512_set1_epi32((int)0x87f00000u)));
}

/* Whether any of q's 64 E4M3 codes is subnormal (exponent 0, mantissa not):
 * read as value * 2^-120 it would be a subnormal float, whose products Intel
 * cores take through a microcode assist. */
TGT INL int fp8_any_subnormal(__m512i q)
{
    __mmask64 exp0 = _mm512_testn_epi8_mask(q, _mm512_set1_epi8(0x78));
    return _mm512_mask_test_epi8_mask(exp0, q, _mm512_set1_epi8(0x07)) != 0;
}

/* 16 codes (the top bytes of q's dwords) as value * 2^-96, normal floats or
 * zero: a normal code by its exponent raised 24, a subnormal one (m * 2^-9)
 * as the integer m times 2^-105; both exact */
TGT INL __m512 fp8_top_bytes16_up24(__m512i q)
{
    __m512i f = _mm512_castps_si512(fp8_top_bytes16(q));
    __mmask16 sub = _mm512_testn_epi32_mask(f, _mm512_set1_epi32(0x07800000));
    __m512i up = _mm512_add_epi32(f, _mm512_set1_epi32(24 << 23));
    __m512i m = _mm512_and_si512(_mm512_srli_epi32(f, 20), _mm512_set1_epi32(7));
    __m512 small = _mm512_mul_ps(_mm512_cvtepi32_ps(m), _mm512_set1_ps(0x1p-105f));
    __m512i sign = _mm512_and_si512(f, _mm512_set1_epi32((int)0x80000000u));
    __m512i sub_bits = _mm512_or_si512(_mm512_castps_si512(small), sign);
    return _mm512_castsi512_ps(_mm512_mask_blend_epi32(sub, up, sub_bits));
}

TGT INL void fp8_tile(const linear_weight *w, const linear_prep *p, int r, int t0, span sp,
                      const int nt, float *out)
{
    int cols = w->cols, bc = w->block_cols, whole = p->fp8_chunked;
    size_t xs = (size_t)cols;
    const float *x = p->x_perm + (size_t)t0 * xs, *up = p->fp8_up + t0;
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * (size_t)cols;
    const float *srow = (const float *)w->scale + (size_t)(r / w->block_rows) * (size_t)w->scale_cols;
    const __m512i top = _mm512_set1_epi8((char)0x80);
    __m512i seen = _mm512_setzero_si512();
    __m512 a0[4], a1[4];
    tile_begin(sp, nt, a0, a1);
    for (int c0 = sp.c0, b = sp.c0 / bc; c0 < sp.c1; c0 += bc, b++) {
        int c1 = c0 + bc < sp.c1 ? c0 + bc : sp.c1;
        float s;
        memcpy(&s, srow + b, 4);
        __m512 g0[4], g1[4];
        UNROLL
        for (int t = 0; t < nt; t++)
            g0[t] = g1[t] = _mm512_setzero_ps();
        int c = c0;
        for (; whole && c + 64 <= c1; c += 64) {
            prefetch_l2(row + c, sp.ahead);
            __m512i q = _mm512_loadu_si512(row + c);
            seen = _mm512_max_epu8(seen, _mm512_or_si512(q, top));
            if (__builtin_expect(fp8_any_subnormal(q), 0)) {
                /* the same products without a subnormal operand: the codes
                 * times 2^24, x times 2^-24 (exact: x' is far from underflow) */
                const __m512 down = _mm512_set1_ps(0x1p-24f);
                UNROLL
                for (int j = 0; j < 4; j++) {
                    __m512 wj = fp8_top_bytes16_up24(j == 3 ? q : _mm512_slli_epi32(q, 24 - 8 * j));
                    UNROLL
                    for (int t = 0; t < nt; t++) {
                        __m512 xj = _mm512_mul_ps(_mm512_loadu_ps(x + t * xs + c + 16 * j), down);
                        if (j & 1)
                            g1[t] = _mm512_fmadd_ps(wj, xj, g1[t]);
                        else
                            g0[t] = _mm512_fmadd_ps(wj, xj, g0[t]);
                    }
                }
                continue;
            }
            UNROLL
            for (int j = 0; j < 4; j++) {
                __m512 wj = fp8_top_bytes16(j == 3 ? q : _mm512_slli_epi32(q, 24 - 8 * j));
                UNROLL
                for (int t = 0; t < nt; t++) {
                    __m512 xj = _mm512_loadu_ps(x + t * xs + c + 16 * j);
                    if (j & 1)
                        g1[t] = _mm512_fmadd_ps(wj, xj, g1[t]);
                    else
                        g0[t] = _mm512_fmadd_ps(wj, xj, g0[t]);
                }
            }
        }
        for (; c < c1; c += 16) {
            __mmask16 m = c1 - c >= 16 ? (__mmask16)0xffff : tail_mask(c1 - c);
            __m512 w0 = load_fp8_16(row + c, m);
            UNROLL
            for (int t = 0; t < nt; t++)
                g0[t] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, x + t * xs + c), g0[t]);
        }
        __m512 sv = _mm512_set1_ps(s);
        UNROLL
        for (int t = 0; t < nt; t++) {
            a0[t] = _mm512_fmadd_ps(g0[t], sv, a0[t]);
            a1[t] = _mm512_fmadd_ps(g1[t], sv, a1[t]);
        }
    }
    /* a NaN code makes the row NaN (carried to the row's end as a NaN sum) */
    if (_mm512_cmpeq_epi8_mask(seen, _mm512_set1_epi8((char)0xff)))
        UNROLL
        for (int t = 0; t < nt; t++)
            a0[t] = _mm512_set1_ps(NAN);
    tile_end(sp, nt, a0, a1, out);
    if (sp.last)
        UNROLL
        for (int t = 0; t < nt; t++)
            out[t] *= up[t];
}

/* ---- INT4 groups (group size a multiple of 32, cols a multiple of 32) ----
 * 128 columns at a time: one 64-byte load is 16 packed words of 8 nibbles, and
 * shifting it by 4k leaves nibble k of every word in its low bits, where one
 * vpermps looks up the exact float (v - 8) (two ops per 16 weights; an OR into
 * the mantissa of 2^23 and a subtraction took three and ran 20 % slower). A lane's 8 nibbles
 * share one group (groups are whole 32-blocks), so their products with x are
 * summed first and multiplied by the lane's group scale once per chunk. x
 * arrives transposed per chunk (linear_prepare): x'[16k + i] = x[8i + k]. The
 * columns past the last whole chunk take 32-blocks with a per-group table. */

TGT INL __m512 int4_nibbles(__m512i q, int k)
{
    /* vpermps reads only the low 4 bits of each index, so no mask is needed */
    const __m512 values = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
    return _mm512_permutexvar_ps(k ? _mm512_srli_epi32(q, 4 * k) : q, values);
}

/* each lane's group scale for the 128-column chunk at column c */
TGT INL __m512 int4_chunk_scales(const uint16_t *srow, int c, int gs)
{
    if (gs == 32) {
        __m128i s4 = _mm_cvtepu16_epi32(_mm_loadl_epi64((const __m128i *)(srow + c / 32)));
        __m512 f4 = _mm512_castps128_ps512(_mm_castsi128_ps(_mm_slli_epi32(s4, 16)));
        const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
        return _mm512_permutexvar_ps(idx, f4);
    }
    float lane[16];
    for (int i = 0; i < 16; i++)
        lane[i] = bf16f(srow[(c + 8 * i) / gs]);
    return _mm512_loadu_ps(lane);
}

TGT INL void int4_tile(const linear_weight *w, const linear_prep *p, int r, int t0, span sp,
                       const int nt, float *out)
{
    int cols = w->cols, gs = w->group_size, c128 = cols / 128 * 128;
    size_t xs = (size_t)cols;
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * (size_t)w->row_words * 4;
    const uint16_t *srow = (const uint16_t *)w->scale + (size_t)r * (size_t)w->scale_cols;
    const float *xp = p->x_perm + (size_t)t0 * xs;
    __m512 a0[4], a1[4];
    tile_begin(sp, nt, a0, a1);
    int chunks_end = sp.c1 < c128 ? sp.c1 : c128;
    for (int c = sp.c0; c < chunks_end; c += 128) {
        prefetch_l2(row + c / 2, sp.ahead);
        prefetch_l2(srow + c / gs, sp.ahead / 8);   /* the scales as far ahead in columns */
        __m512i q = _mm512_loadu_si512(row + c / 2);
        __m512 sc = int4_chunk_scales(srow, c, gs);
        /* four partial sums so no FMA chain is longer than two per chunk (for
         * every tile size: a token's bits must not depend on its tile's) */
        __m512 ps[4][4];
        const int np = 4;
        UNROLL
        for (int t = 0; t < nt; t++)
            UNROLL
            for (int j = 0; j < np; j++)
                ps[t][j] = _mm512_setzero_ps();
        UNROLL
        for (int k = 0; k < 8; k++) {
            __m512 wk = int4_nibbles(q, k);
            UNROLL
            for (int t = 0; t < nt; t++)
                ps[t][k % np] = _mm512_fmadd_ps(wk, _mm512_loadu_ps(xp + t * xs + c + 16 * k), ps[t][k % np]);
        }
        UNROLL
        for (int t = 0; t < nt; t++) {
            __m512 e = ps[t][0], o = ps[t][1];
            if (np == 4) {
                e = _mm512_add_ps(e, ps[t][2]);
                o = _mm512_add_ps(o, ps[t][3]);
            }
            a0[t] = _mm512_fmadd_ps(e, sc, a0[t]);
            a1[t] = _mm512_fmadd_ps(o, sc, a1[t]);
        }
    }
    /* the rest: 32-blocks, x split into even and odd elements */
    const __m512 base = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
    for (int c = sp.c0 > c128 ? sp.c0 : c128; c < sp.c1; c += 32) {
        __m512 tbl = _mm512_mul_ps(base, _mm512_set1_ps(bf16f(srow[c / gs])));
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(row + c / 2)));
        __m512 lo = _mm512_permutexvar_ps(v, tbl);
        __m512 hi = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), tbl);
        UNROLL
        for (int t = 0; t < nt; t++) {
            a0[t] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xp + t * xs + c), a0[t]);
            a1[t] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xp + t * xs + c + 16), a1[t]);
        }
    }
    tile_end(sp, nt, a0, a1, out);
}

/* ---- rows x token tiles ---- */

TGT INL void plain_rows_tile(const linear_weight *w, const linear_prep *p, int r, int t0, span sp,
                             const int nt, float *out)
{
    size_t xs = (size_t)w->cols;
    plain_tile(w->fmt, (const uint8_t *)w->data + (size_t)r * xs * (w->fmt == WF_F32 ? 4 : 2),
               p->x + (size_t)t0 * xs, xs, sp, nt, out);
}

/* Rows r0..r1 in token tiles of up to 4; `TILE` is a tile function taking a
 * constant tile size, so each case below gets its own unrolled copy. When the
 * tokens' x does not fit in L1 beside the weight stream (more than one token
 * at K2's 7168 columns), rows go in blocks of ROW_BLOCK and each block in
 * column blocks whose x does fit: x then comes from L2 once per block of rows
 * instead of once per row (4 tokens of INT4 ran at a quarter of one token's
 * weight rate, bound by x loads from L2). Each weight is still read once; the
 * prefetch then runs a row ahead at the same columns, and each (row, tile)
 * carries its sums across the column blocks (span). Tiles cover fewer than
 * LINEAR_BATCHED_MIN_T tokens: the batched GEMM takes more. */
#define MAX_TILES ((LINEAR_BATCHED_MIN_T + 2) / 4)
#define ROWS_BY_TILES(TILE)                                                              \
    size_t R = (size_t)w->rows;                                                          \
    int cstep = column_block(w, p->T);                                                   \
    size_t ahead = cstep < w->cols ? 2 * row_bytes(w) : PREFETCH_AHEAD;           \
    __m512 carry[ROW_BLOCK * MAX_TILES * 8];                                             \
    for (int rb = r0; rb < r1; rb += ROW_BLOCK) {                                        \
        int re = r1 - rb < ROW_BLOCK ? r1 : rb + ROW_BLOCK;                              \
        for (int c0 = 0; c0 < w->cols; c0 += cstep) {                                    \
            int c1 = w->cols - c0 < cstep ? w->cols : c0 + cstep;                        \
            for (int r = rb; r < re; r++)                                                \
                for (int t0 = 0; t0 < p->T; t0 += 4) {                                   \
                    int nt = p->T - t0 < 4 ? p->T - t0 : 4;                              \
                    span sp = {c0, c1, ahead, c0 == 0, c1 == w->cols,                    \
                               carry + ((r - rb) * MAX_TILES + t0 / 4) * 8};             \
                    float out[4];                                                        \
                    switch (nt) {                                                        \
                    case 4: TILE(w, p, r, t0, sp, 4, out); break;                        \
                    case 3: TILE(w, p, r, t0, sp, 3, out); break;                        \
                    case 2: TILE(w, p, r, t0, sp, 2, out); break;                        \
                    default: TILE(w, p, r, t0, sp, 1, out); break;                       \
                    }                                                                    \
                    for (int t = 0; sp.last && t < nt; t++)                              \
                        y[(size_t)(t0 + t) * R + (size_t)r] = out[t];                    \
                }                                                                        \
        }                                                                                \
    }

/* ---- FP8 through byte tables (AVX512-VBMI) ----
 * 64 codes at a time: two vpermi2b look up the high and low bytes of each
 * magnitude's bf16 (exact: E4M3 is a subset of bf16, NaN stays NaN), the sign
 * bit is merged in, and byte then word unpacking widens to float32. x arrives
 * in the order the unpacking produces (linear_prepare), so no shuffles remain. */

#define TGT_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi,avx2,fma,f16c")))

TGT_VBMI INL void fp8_lut_tile(const linear_weight *w, const linear_prep *p, int r, int t0,
                               span sp, const int nt, float *out)
{
    int cols = w->cols, bc = w->block_cols;
    size_t xs = (size_t)cols;
    const float *x = p->x_perm + (size_t)t0 * xs;
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * (size_t)cols;
    const float *srow = (const float *)w->scale + (size_t)(r / w->block_rows) * (size_t)w->scale_cols;
    const fp8_tables tb = fp8_tables_load();
    __m512 a0[4], a1[4];
    tile_begin(sp, nt, a0, a1);
    for (int c0 = sp.c0, b = sp.c0 / bc; c0 < sp.c1; c0 += bc, b++) {
        int c1 = c0 + bc < sp.c1 ? c0 + bc : sp.c1;
        float s;
        memcpy(&s, srow + b, 4);
        __m512 g0[4], g1[4];
        UNROLL
        for (int t = 0; t < nt; t++)
            g0[t] = g1[t] = _mm512_setzero_ps();
        int c = c0;
        for (; c + 64 <= c1; c += 64) {
            prefetch_l2(row + c, sp.ahead);
            __m512 f[4];
            fp8_widen_64(&tb, _mm512_loadu_si512(row + c), f);
            UNROLL
            for (int t = 0; t < nt; t++) {
                const float *xt = x + t * xs + c;
                g0[t] = _mm512_fmadd_ps(f[0], _mm512_loadu_ps(xt), g0[t]);
                g1[t] = _mm512_fmadd_ps(f[1], _mm512_loadu_ps(xt + 16), g1[t]);
                g0[t] = _mm512_fmadd_ps(f[2], _mm512_loadu_ps(xt + 32), g0[t]);
                g1[t] = _mm512_fmadd_ps(f[3], _mm512_loadu_ps(xt + 48), g1[t]);
            }
        }
        __m512 svec = _mm512_set1_ps(s);
        UNROLL
        for (int t = 0; t < nt; t++) {
            a0[t] = _mm512_fmadd_ps(g0[t], svec, a0[t]);
            a1[t] = _mm512_fmadd_ps(g1[t], svec, a1[t]);
        }
        if (c == c1)
            continue;
        /* a partial last block: the bit-trick path, x in natural order there
         * (skipped by whole blocks: set up for every block it cost 13 % of the
         * kernel's speed on weights in cache) */
        __m512 sv = _mm512_set1_ps(fabsf(s) < 0x1p7f ? s * 0x1p120f : 0x1p120f);
        __m512 pvec = _mm512_set1_ps(fabsf(s) < 0x1p7f ? 1.0f : s);
        __m512 tail[4];
        UNROLL
        for (int t = 0; t < nt; t++)
            tail[t] = _mm512_setzero_ps();
        for (; c < c1; c += 16) {
            __mmask16 m = c1 - c >= 16 ? (__mmask16)0xffff : tail_mask(c1 - c);
            __m512 w0 = _mm512_mul_ps(load_fp8_16(row + c, m), sv);
            UNROLL
            for (int t = 0; t < nt; t++)
                tail[t] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, x + t * xs + c), tail[t]);
        }
        UNROLL
        for (int t = 0; t < nt; t++)
            a0[t] = _mm512_fmadd_ps(tail[t], pvec, a0[t]);
    }
    tile_end(sp, nt, a0, a1, out);
}

/* one row loop per format, so each kernel gets its own registers */
TGT_VBMI static void rows_fp8_lut(const linear_weight *w, const linear_prep *p, float *y, int r0,
                                  int r1)
{
    ROWS_BY_TILES(fp8_lut_tile)
}

TGT static void rows_fp8(const linear_weight *w, const linear_prep *p, float *y, int r0, int r1)
{
    ROWS_BY_TILES(fp8_tile)
}

TGT static void rows_int4(const linear_weight *w, const linear_prep *p, float *y, int r0, int r1)
{
    ROWS_BY_TILES(int4_tile)
}

TGT static void rows_plain(const linear_weight *w, const linear_prep *p, float *y, int r0, int r1)
{
    ROWS_BY_TILES(plain_rows_tile)
}

/* ---- many tokens (prefill): a float32 GEMM. Weights are dequantized a panel
 * of NR rows x KC columns at a time and transposed, so a 64-row slice of one
 * column is four vectors; the microkernel keeps MT tokens x 64 rows in 24
 * accumulators and multiplies by broadcast activations: 24 FMAs per 10 loads,
 * no horizontal sums. y accumulates over column chunks in place. ---- */

#define NR 64
#define MT 6
#define KC 256

TGT static void dequant_range(const linear_weight *w, int r0, int n, int c0, int c1, float *out,
                              size_t ld);

TGT INL void gemm_tile(const float *wt, const float *const *xr, int kc, float *const *yr,
                       __mmask16 const *mask, int first)
{
    __m512 acc[MT][4];
    UNROLL
    for (int t = 0; t < MT; t++)
        UNROLL
        for (int v = 0; v < 4; v++)
            acc[t][v] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask[v], yr[t] + 16 * v);
    for (int k = 0; k < kc; k++) {
        const float *wk = wt + (size_t)k * NR;
        __m512 w0 = _mm512_load_ps(wk), w1 = _mm512_load_ps(wk + 16);
        __m512 w2 = _mm512_load_ps(wk + 32), w3 = _mm512_load_ps(wk + 48);
        UNROLL
        for (int t = 0; t < MT; t++) {
            __m512 xb = _mm512_set1_ps(xr[t][k]);
            acc[t][0] = _mm512_fmadd_ps(w0, xb, acc[t][0]);
            acc[t][1] = _mm512_fmadd_ps(w1, xb, acc[t][1]);
            acc[t][2] = _mm512_fmadd_ps(w2, xb, acc[t][2]);
            acc[t][3] = _mm512_fmadd_ps(w3, xb, acc[t][3]);
        }
    }
    UNROLL
    for (int t = 0; t < MT; t++)
        UNROLL
        for (int v = 0; v < 4; v++)
            _mm512_mask_storeu_ps(yr[t] + 16 * v, mask[v], acc[t][v]);
}

/* Prefetches into L2 the weights of the panel of rows [r, r + nr), columns
 * [c0, c1): a panel is one short run per row, which the hardware prefetcher
 * does not follow, so each run would start with a wait on DRAM. */
TGT INL void prefetch_panel(const linear_weight *w, int r, int nr, int c0, int c1)
{
    size_t rb = row_bytes(w), b1 = column_byte(w, c1);
    for (int i = 0; i < nr; i++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)(r + i) * rb;
        for (size_t b = column_byte(w, c0) & ~(size_t)63; b < b1; b += 64)
            prefetch_l2(row + b, 0);
    }
}

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
        __mmask16 mask[4];
        for (int v = 0; v < 4; v++) {
            int left = nr - 16 * v;
            mask[v] = left >= 16 ? (__mmask16)0xffff : left > 0 ? tail_mask(left) : 0;
        }
        for (int c0 = 0; c0 < cols; c0 += KC) {
            int kc = cols - c0 < KC ? cols - c0 : KC;
            /* the next panel streams in while this one is computed */
            if (c0 + KC < cols)
                prefetch_panel(w, r, nr, c0 + KC, c0 + KC + KC < cols ? c0 + 2 * KC : cols);
            else if (r + NR < r1)
                prefetch_panel(w, r + NR, r1 - r - NR < NR ? r1 - r - NR : NR, 0,
                               KC < cols ? KC : cols);
            dequant_range(w, r, nr, c0, c0 + kc, wc, KC);
            for (int g = 0; g < NR / 16; g++)
                for (int kb = 0; kb < kc; kb += 16)
                    transpose16(wc + (size_t)g * 16 * KC + (size_t)kb, KC, wt + (size_t)kb * NR + 16 * (size_t)g,
                                NR);
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

/* ---- a few dozen tokens (a routed expert's share of a prefill step): the
 * same products in the same order as the GEMM above, with tokens in the
 * vector lanes instead of rows. x is transposed once per call (linear_prepare:
 * [cols][groups][16], zeros past the last token); a panel of NRP rows is
 * dequantized in natural order and each weight is broadcast from it straight
 * into the FMA, so the panel needs no transpose: the wide GEMM's dequantize
 * and transpose cost as much as its FMAs below ~50 tokens. Each output is
 * still one FMA chain over the columns in order, starting from zero, so its
 * bits equal the wide GEMM's: which of the two runs a call changes nothing. */

#define NRP 48
#define KCN 128
/* the tile's loops over its up to 24 accumulators, fully unrolled (partly
 * unrolled, they went through memory: a third of the speed) */
#define UNROLL24 _Pragma("GCC unroll 24")

/* NRW rows x G groups of 16 tokens (NRW * G <= 24 accumulators) over kc
 * columns: wc [NRW rows, stride ldw], xk [kc][gstride] from the first group,
 * part [G][NRP][16] from the first row */
TGT INL void narrow_tile(const float *wc, size_t ldw, const float *xk, size_t gstride, int kc,
                         float *part, int first, const int NRW, const int G)
{
    __m512 acc[24];
    UNROLL24
    for (int i = 0; i < NRW; i++)
        UNROLL24
        for (int g = 0; g < G; g++)
            acc[i * G + g] = first ? _mm512_setzero_ps()
                                   : _mm512_load_ps(part + (size_t)g * NRP * 16 + 16 * (size_t)i);
    for (int k = 0; k < kc; k++) {
        const float *xr = xk + (size_t)k * gstride;
        __m512 xv[4];
        UNROLL24
        for (int g = 0; g < G; g++)
            xv[g] = _mm512_load_ps(xr + 16 * g);
        UNROLL24
        for (int i = 0; i < NRW; i++) {
            __m512 wb = _mm512_set1_ps(wc[(size_t)i * ldw + (size_t)k]);
            UNROLL24
            for (int g = 0; g < G; g++)
                acc[i * G + g] = _mm512_fmadd_ps(wb, xv[g], acc[i * G + g]);
        }
    }
    UNROLL24
    for (int i = 0; i < NRW; i++)
        UNROLL24
        for (int g = 0; g < G; g++)
            _mm512_store_ps(part + (size_t)g * NRP * 16 + 16 * (size_t)i, acc[i * G + g]);
}

/* the row sub-blocks of a panel for groups [g0, g0 + G) */
#define NARROW_PANEL(NRW, G)                                                              \
    for (int i = 0; i < NRP; i += NRW)                                                    \
        narrow_tile(wp + (size_t)i * ldw, ldw, xk + 16 * (size_t)g0, gs, kc,              \
                    part + (size_t)g0 * NRP * 16 + 16 * (size_t)i, first, NRW, G)

/* A panel's tiles over every group of tokens: four groups at a time, then the
 * rest. ldw is KCN for a panel dequantized into the work (a constant, so the
 * tiles' rows are displacements: a stride in a register made the 24-row tile
 * reload its rows' offsets from the stack, a fifth slower at 16 tokens) or a
 * float32 weight's row length for a panel read in place. */
TGT INL void narrow_panel(const float *wp, const size_t ldw, const float *xk, size_t gs,
                          int groups, int kc, float *part, int first)
{
    int g0 = 0;
    for (; groups - g0 >= 4; g0 += 4)
        NARROW_PANEL(6, 4);
    switch (groups - g0) {
    case 3: NARROW_PANEL(8, 3); break;
    case 2: NARROW_PANEL(12, 2); break;
    case 1: NARROW_PANEL(24, 1); break;
    default: break;
    }
}

TGT static void narrow_rows(const linear_weight *w, const linear_prep *p, float *y, int r0,
                            int r1, float *work)
{
    int cols = w->cols, T = p->T, groups = (T + 15) / 16;
    size_t R = (size_t)w->rows, gs = 16 * (size_t)groups;
    float *wc = (float *)(((uintptr_t)work + 63) & ~(uintptr_t)63);   /* [NRP][KCN] */
    float *part = wc + (size_t)NRP * KCN;                               /* [groups][NRP][16] */
    /* a whole panel of float32 rows is read where it is when every tile is of
     * six rows (the decode attention's scores: 64 heads a query) */
    int in_place = w->fmt == WF_F32 && groups % 4 == 0;
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
            if (in_place && nr == NRP) {
                narrow_panel((const float *)w->data + (size_t)r * (size_t)cols + (size_t)c0,
                             (size_t)cols, xk, gs, groups, kc, part, c0 == 0);
            } else {
                dequant_range(w, r, nr, c0, c0 + kc, wc, KCN);
                narrow_panel(wc, KCN, xk, gs, groups, kc, part, c0 == 0);
            }
        }
        for (int t = 0; t < T; t++) {
            const float *pt = part + (size_t)(t / 16) * NRP * 16 + (size_t)(t % 16);
            float *yt = y + (size_t)t * R + (size_t)r;
            for (int i = 0; i < nr; i++)
                yt[i] = pt[16 * (size_t)i];
        }
    }
}

size_t linear_batched_work(int cols, int T)
{
    (void)cols;
    size_t wide = 2 * (size_t)NR * KC;
    size_t narrow = (size_t)NRP * KCN + (size_t)(T + 15) / 16 * NRP * 16;
    return (wide > narrow ? wide : narrow) + 16;
}

TGT void linear_rows_avx512(const linear_weight *w, const linear_prep *p, float *y, int r0, int r1,
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
    if (w->fmt == WF_FP8_BLOCK && p->fp8_lut)
        rows_fp8_lut(w, p, y, r0, r1);
    else if (w->fmt == WF_FP8_BLOCK)
        rows_fp8(w, p, y, r0, r1);
    else if (w->fmt == WF_INT4_GROUP)
        rows_int4(w, p, y, r0, r1);
    else
        rows_plain(w, p, y, r0, r1);
}

/* ---- rows to float32, in natural order (attention's kv_b, batched blocks) ---- */

/* Columns [c0, c1) of rows [r0, r0 + n) into out[i * ld + (c - c0)]; c0 must be
 * a multiple of 32 (INT4: of the group size) so no group or block is cut. */
TGT static void dequant_range(const linear_weight *w, int r0, int n, int c0, int c1, float *out,
                              size_t ld)
{
    int cols = w->cols;
    for (int r = r0; r < r0 + n; r++) {
        float *o = out + (size_t)(r - r0) * ld - c0;
        if (w->fmt == WF_INT4_GROUP) {
            const uint8_t *row = (const uint8_t *)w->data + (size_t)r * (size_t)w->row_words * 4;
            const uint16_t *srow = (const uint16_t *)w->scale + (size_t)r * (size_t)w->scale_cols;
            const __m512 base = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
            const __m512i even = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            const __m512i odd = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
            for (int c = c0; c < c1; c += 32) {
                __m512 tbl = _mm512_mul_ps(base, _mm512_set1_ps(bf16f(srow[c / w->group_size])));
                __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(row + c / 2)));
                __m512 lo = _mm512_permutexvar_ps(v, tbl);
                __m512 hi = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), tbl);
                _mm512_storeu_ps(o + c, _mm512_permutex2var_ps(lo, even, hi));
                _mm512_storeu_ps(o + c + 16, _mm512_permutex2var_ps(lo, odd, hi));
            }
        } else if (w->fmt == WF_FP8_BLOCK) {
            const uint8_t *row = (const uint8_t *)w->data + (size_t)r * (size_t)cols;
            const float *srow = (const float *)w->scale + (size_t)(r / w->block_rows) * (size_t)w->scale_cols;
            /* a block at a time (16 columns never cross one): codes as value *
             * 2^-120 times scale * 2^120, one rounding as in the reference */
            for (int c = c0; c < c1;) {
                int be = (c / w->block_cols + 1) * w->block_cols;
                be = be < c1 ? be : c1;
                float s;
                memcpy(&s, srow + c / w->block_cols, 4);
                int fold = fabsf(s) < 0x1p7f;
                __m512 sv = _mm512_set1_ps(fold ? s * 0x1p120f : 0x1p120f);
                __m512 post = _mm512_set1_ps(fold ? 1.0f : s);
                for (; c < be; c += 16) {
                    __mmask16 m = be - c >= 16 ? (__mmask16)0xffff : tail_mask(be - c);
                    __m512 f = _mm512_mul_ps(load_fp8_16(row + c, m), sv);
                    _mm512_mask_storeu_ps(o + c, m, fold ? f : _mm512_mul_ps(f, post));
                }
            }
        } else {
            const uint8_t *row = (const uint8_t *)w->data + (size_t)r * (size_t)cols * (w->fmt == WF_F32 ? 4 : 2);
            for (int c = c0; c < c1; c += 16) {
                __mmask16 m = c1 - c >= 16 ? (__mmask16)0xffff : tail_mask(c1 - c);
                _mm512_mask_storeu_ps(o + c, m, load_plain(w->fmt, row, c, m));
            }
        }
    }
}

TGT void dequant_rows_avx512(const linear_weight *w, int r0, int n, float *out)
{
    dequant_range(w, r0, n, 0, w->cols, out, (size_t)w->cols);
}

/* ---- a combination of float32 rows (linear_combine_rows) ----
 * Columns in blocks of 128 (eight accumulators), then of 16, then a masked
 * tail; each output one FMA chain over the rows in order, from zero or (add)
 * from y, carrying on a chain over earlier rows. */
TGT void combine_rows_avx512(const float *a, const float *W, int n, int cols, float *y, int add)
{
    size_t ld = (size_t)cols;
    int c = 0;
    for (; c + 128 <= cols; c += 128) {
        __m512 acc[8];
        UNROLL
        for (int k = 0; k < 8; k++)
            acc[k] = add ? _mm512_loadu_ps(y + c + 16 * k) : _mm512_setzero_ps();
        for (int i = 0; i < n; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
            const float *w = W + (size_t)i * ld + (size_t)c;
            UNROLL
            for (int k = 0; k < 8; k++)
                acc[k] = _mm512_fmadd_ps(ai, _mm512_loadu_ps(w + 16 * k), acc[k]);
        }
        UNROLL
        for (int k = 0; k < 8; k++)
            _mm512_storeu_ps(y + c + 16 * k, acc[k]);
    }
    for (; c < cols; c += 16) {
        __mmask16 m = cols - c >= 16 ? (__mmask16)0xffff : tail_mask(cols - c);
        __m512 acc = add ? _mm512_maskz_loadu_ps(m, y + c) : _mm512_setzero_ps();
        for (int i = 0; i < n; i++)
            acc = _mm512_fmadd_ps(_mm512_set1_ps(a[i]), _mm512_maskz_loadu_ps(m, W + (size_t)i * ld + (size_t)c), acc);
        _mm512_mask_storeu_ps(y + c, m, acc);
    }
}

/* ---- many combinations of the same rows (linear_combine_many) ----
 * MR rows of A against 64 columns of W in 4 x MR accumulators: per row of W,
 * MR broadcasts and four loads (bf16 widened by a shift) for 4 x MR FMAs, so W
 * is read once for all MR combinations. Each output one FMA chain over W's
 * rows in order, from zero or (add) carried on from Y: the bits of
 * combine_rows_avx512 for each row of A. */
#define CM_ROWS 6

TGT INL void combine_many_tile(const float *A, size_t lda, const float *W32, const uint16_t *W16,
                               size_t ldw, int n, const __mmask16 *mask, float *Y, size_t ldy,
                               int add, const int MR)
{
    __m512 acc[CM_ROWS][4];
    UNROLL
    for (int r = 0; r < MR; r++)
        UNROLL
        for (int v = 0; v < 4; v++)
            acc[r][v] = add ? _mm512_maskz_loadu_ps(mask[v], Y + (size_t)r * ldy + 16 * v)
                            : _mm512_setzero_ps();
    for (int i = 0; i < n; i++) {
        __m512 a[CM_ROWS];
        UNROLL
        for (int r = 0; r < MR; r++)
            a[r] = _mm512_set1_ps(A[(size_t)r * lda + (size_t)i]);
        UNROLL
        for (int v = 0; v < 4; v++) {
            __m512 w = W16 ? load_bf16(W16 + (size_t)i * ldw + 16 * v, mask[v])
                           : _mm512_maskz_loadu_ps(mask[v], W32 + (size_t)i * ldw + 16 * v);
            UNROLL
            for (int r = 0; r < MR; r++)
                acc[r][v] = _mm512_fmadd_ps(a[r], w, acc[r][v]);
        }
    }
    UNROLL
    for (int r = 0; r < MR; r++)
        UNROLL
        for (int v = 0; v < 4; v++)
            _mm512_mask_storeu_ps(Y + (size_t)r * ldy + 16 * v, mask[v], acc[r][v]);
}

/* rows of A a tile of CM_ROWS at a time, the last of the rows left */
#define COMBINE_MANY_TILES(W32_, W16_)                                                       \
    for (int r = 0; r < nr; r += CM_ROWS) {                                                  \
        const float *Ar = A + (size_t)r * lda;                                               \
        float *Yr = Y + (size_t)r * ldy + c0;                                                \
        switch (nr - r < CM_ROWS ? nr - r : CM_ROWS) {                                       \
        case 1: combine_many_tile(Ar, lda, W32_, W16_, ldw, n, mask, Yr, ldy, add, 1); break; \
        case 2: combine_many_tile(Ar, lda, W32_, W16_, ldw, n, mask, Yr, ldy, add, 2); break; \
        case 3: combine_many_tile(Ar, lda, W32_, W16_, ldw, n, mask, Yr, ldy, add, 3); break; \
        case 4: combine_many_tile(Ar, lda, W32_, W16_, ldw, n, mask, Yr, ldy, add, 4); break; \
        case 5: combine_many_tile(Ar, lda, W32_, W16_, ldw, n, mask, Yr, ldy, add, 5); break; \
        default: combine_many_tile(Ar, lda, W32_, W16_, ldw, n, mask, Yr, ldy, add, 6); break; \
        }                                                                                    \
    }

TGT void combine_many_avx512(const float *A, size_t lda, int nr, const float *W32,
                             const uint16_t *W16, size_t ldw, int n, int c0, int c1, float *Y,
                             size_t ldy, int add)
{
    __mmask16 mask[4];
    for (int v = 0; v < 4; v++) {
        int left = c1 - c0 - 16 * v;
        mask[v] = left >= 16 ? (__mmask16)0xffff : left > 0 ? tail_mask(left) : 0;
    }
    if (W16) {
        const uint16_t *W = W16 + c0;
        COMBINE_MANY_TILES(NULL, W)
    } else {
        const float *W = W32 + c0;
        COMBINE_MANY_TILES(W, NULL)
    }
}
