/* gpu_twin_avx2: the twin on AVX2 (see gpu_twin_simd.h): a row's 32 lanes in
 * four 8-float registers, two rows at once. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "cpu_kernels/linear_ref.h"
#include "gpu_twin_simd.h"

#define LANES TWIN_LANES
#define INL static inline __attribute__((always_inline))
/* constant loops over rows and tokens must become straight-line code so the
 * accumulators stay in registers */
#define UNROLL _Pragma("GCC unroll 8")

#define TGT2 __attribute__((target("avx2,fma")))

/* the warp's butterfly on lanes 0-7, 8-15, 16-23, 24-31 in a, b, c, d */
TGT2 INL float butterfly_avx2(__m256 a, __m256 b, __m256 c, __m256 d)
{
    __m256 v = _mm256_add_ps(_mm256_add_ps(a, c), _mm256_add_ps(b, d));   /* o = 16, 8 */
    v = _mm256_add_ps(v, _mm256_permute2f128_ps(v, v, 1));                 /* o = 4 */
    v = _mm256_add_ps(v, _mm256_permute_ps(v, 0x4E));                      /* o = 2 */
    v = _mm256_add_ps(v, _mm256_permute_ps(v, 0xB1));                      /* o = 1 */
    return _mm256_cvtss_f32(v);
}

#define AVX2_ROWS 2

TGT2 INL void dot_rows_avx2(const float *w, size_t ld, const int R, const float *x, int n,
                            float *out)
{
    __m256 acc[AVX2_ROWS][4];
    UNROLL
    for (int i = 0; i < R; i++)
        UNROLL
        for (int q = 0; q < 4; q++)
            acc[i][q] = _mm256_setzero_ps();
    int c = 0;
    for (; c + LANES <= n; c += LANES)
        UNROLL
        for (int q = 0; q < 4; q++) {
            __m256 xq = _mm256_loadu_ps(x + c + 8 * q);
            UNROLL
            for (int i = 0; i < R; i++)
                acc[i][q] = _mm256_fmadd_ps(_mm256_loadu_ps(w + i * ld + c + 8 * q), xq, acc[i][q]);
        }
    if (c < n) {    /* the lanes past the end keep their sums */
        const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        UNROLL
        for (int q = 0; q < 4; q++) {
            __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - c - 8 * q), idx);
            __m256 xq = _mm256_maskload_ps(x + c + 8 * q, m);
            UNROLL
            for (int i = 0; i < R; i++) {
                __m256 f = _mm256_fmadd_ps(_mm256_maskload_ps(w + i * ld + c + 8 * q, m), xq,
                                           acc[i][q]);
                acc[i][q] = _mm256_blendv_ps(acc[i][q], f, _mm256_castsi256_ps(m));
            }
        }
    }
    UNROLL
    for (int i = 0; i < R; i++)
        out[i] = butterfly_avx2(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
}

/* INT4 with whole 32-column groups in registers, as on AVX-512: a block's 16
 * bytes in two halves of 8, each nibble converted as (float)(v - 8) times the
 * scale (the reference's operation); x permuted by int4_permute_x, so even
 * columns 0-14, 16-30 and odd ones 1-15, 17-31 each take one register */
TGT2 INL void int4_rows_avx2(const linear_weight *w, int r, const int R, const float *xp,
                             const int NT, float *y, size_t ys)
{
    int cols = w->cols, gs = w->group_size;
    const __m256i eight = _mm256_set1_epi32(8), low4 = _mm256_set1_epi32(15);
    const uint8_t *row[AVX2_ROWS];
    const uint16_t *srow[AVX2_ROWS];
    /* [row][even 0-14, even 16-30, odd 1-15, odd 17-31][token]; R * NT <= 2
     * keeps them in the 16 registers */
    __m256 acc[AVX2_ROWS][4][2];
    UNROLL
    for (int i = 0; i < R; i++) {
        row[i] = (const uint8_t *)w->data + (size_t)(r + i) * (size_t)w->row_words * 4;
        srow[i] = (const uint16_t *)w->scale + (size_t)(r + i) * (size_t)w->scale_cols;
        UNROLL
        for (int q = 0; q < 4; q++)
            UNROLL
            for (int t = 0; t < NT; t++)
                acc[i][q][t] = _mm256_setzero_ps();
    }
    for (int c = 0; c < cols; c += LANES) {
        UNROLL
        for (int i = 0; i < R; i++) {
            if ((c & 127) == 0)
                prefetch_l2(row[i] + c / 2, PREFETCH_AHEAD);
            uint32_t s = (uint32_t)srow[i][c / gs] << 16;
            float sf;
            memcpy(&sf, &s, 4);
            __m256 sc = _mm256_set1_ps(sf);
            UNROLL
            for (int h = 0; h < 2; h++) {
                const __m128i *bytes = (const __m128i *)(row[i] + c / 2 + 8 * h);
                __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(bytes));
                __m256i qe = _mm256_sub_epi32(_mm256_and_si256(v, low4), eight);
                __m256i qo = _mm256_sub_epi32(_mm256_srli_epi32(v, 4), eight);
                __m256 we = _mm256_mul_ps(_mm256_cvtepi32_ps(qe), sc);
                __m256 wo = _mm256_mul_ps(_mm256_cvtepi32_ps(qo), sc);
                UNROLL
                for (int t = 0; t < NT; t++) {
                    const float *xt = xp + (size_t)t * cols + c;
                    acc[i][h][t] = _mm256_fmadd_ps(we, _mm256_loadu_ps(xt + 8 * h), acc[i][h][t]);
                    acc[i][2 + h][t] = _mm256_fmadd_ps(wo, _mm256_loadu_ps(xt + 16 + 8 * h),
                                                       acc[i][2 + h][t]);
                }
            }
        }
    }
    UNROLL
    for (int i = 0; i < R; i++)
        UNROLL
        for (int t = 0; t < NT; t++) {
            /* back to natural order: column 2b from even b, 2b + 1 from odd b */
            __m256 l0 = _mm256_unpacklo_ps(acc[i][0][t], acc[i][2][t]);
            __m256 h0 = _mm256_unpackhi_ps(acc[i][0][t], acc[i][2][t]);
            __m256 l1 = _mm256_unpacklo_ps(acc[i][1][t], acc[i][3][t]);
            __m256 h1 = _mm256_unpackhi_ps(acc[i][1][t], acc[i][3][t]);
            y[(size_t)t * ys + (size_t)(r + i)] =
                butterfly_avx2(_mm256_permute2f128_ps(l0, h0, 0x20), _mm256_permute2f128_ps(l0, h0, 0x31),
                               _mm256_permute2f128_ps(l1, h1, 0x20), _mm256_permute2f128_ps(l1, h1, 0x31));
        }
}

/* one token: two rows at once; more: a row at a time, tokens in pairs (the
 * row's bytes stay in L1 across them) */
TGT2 void twin_int4_avx2(const linear_weight *w, int r0, int r1, const float *xp, int T,
                         float *y)
{
    size_t ys = (size_t)w->rows, xs = (size_t)w->cols;
    int r = r0;
    if (T == 1)
        for (; r + AVX2_ROWS <= r1; r += AVX2_ROWS)
            int4_rows_avx2(w, r, AVX2_ROWS, xp, 1, y, ys);
    for (; r < r1; r++) {
        int t = 0;
        for (; t + 2 <= T; t += 2)
            int4_rows_avx2(w, r, 1, xp + t * xs, 2, y + t * ys, ys);
        if (t < T)
            int4_rows_avx2(w, r, 1, xp + t * xs, 1, y + t * ys, ys);
    }
}

/* 8 E4M3 codes (in the low bytes of v's dwords) as e4m3_to_f32 gives them,
 * with integer operations only: a normal code's exponent and mantissa moved
 * into a float32's fields and its exponent rebiased (+120), a subnormal one
 * (exponent 0) converted as mantissa x 2^-9; 0x7f/0xff NaN. No subnormal float
 * is ever an operand, so nothing waits on a microcode assist. */
TGT2 INL __m256 e4m3_8_avx2(__m256i v)
{
    __m256i mag = _mm256_and_si256(v, _mm256_set1_epi32(0x7f));
    __m256i sign = _mm256_slli_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0x80)), 24);
    __m256 normal = _mm256_castsi256_ps(
        _mm256_add_epi32(_mm256_slli_epi32(mag, 20), _mm256_set1_epi32(120 << 23)));
    __m256 sub = _mm256_mul_ps(_mm256_cvtepi32_ps(mag), _mm256_set1_ps(0x1p-9f));
    __m256 is_sub = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(8), mag));
    __m256 f = _mm256_or_ps(_mm256_blendv_ps(normal, sub, is_sub), _mm256_castsi256_ps(sign));
    __m256 nan = _mm256_castsi256_ps(_mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x7f)));
    return _mm256_blendv_ps(f, _mm256_set1_ps(NAN), nan);
}

/* columns c .. c + 7 of a row in natural order: FP8 times its block's scale s
 * (the reference's product), or BF16 */
TGT2 INL __m256 natural_8_avx2(int fmt, const uint8_t *row, int c, __m256 s)
{
    if (fmt == WF_FP8_BLOCK)
        return _mm256_mul_ps(e4m3_8_avx2(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(row + c)))), s);
    __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(row + 2 * (size_t)c)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
}

/* FP8 (whole 32-column passes within scale blocks) or BF16, dequantized in
 * registers: a pass's lanes are its columns in order, so x comes as it is */
TGT2 INL void natural_rows_avx2(const linear_weight *w, const int fmt, int r, const int R,
                                const float *x, const int NT, float *y, size_t ys)
{
    int cols = w->cols;
    size_t row_bytes = (size_t)cols * (fmt == WF_FP8_BLOCK ? 1 : 2);
    const uint8_t *row[AVX2_ROWS];
    const float *srow[AVX2_ROWS];
    __m256 acc[AVX2_ROWS][4][2];
    UNROLL
    for (int i = 0; i < R; i++) {
        row[i] = (const uint8_t *)w->data + (size_t)(r + i) * row_bytes;
        srow[i] = fmt == WF_FP8_BLOCK ? (const float *)w->scale +
                                            (size_t)((r + i) / w->block_rows) * (size_t)w->scale_cols
                                      : NULL;
        UNROLL
        for (int q = 0; q < 4; q++)
            UNROLL
            for (int t = 0; t < NT; t++)
                acc[i][q][t] = _mm256_setzero_ps();
    }
    for (int c = 0; c < cols; c += LANES) {
        UNROLL
        for (int i = 0; i < R; i++) {
            if ((c & 127) == 0)
                prefetch_l2(row[i] + c * (fmt == WF_FP8_BLOCK ? 1 : 2), PREFETCH_AHEAD);
            __m256 s = fmt == WF_FP8_BLOCK ? _mm256_set1_ps(srow[i][c / w->block_cols])
                                           : _mm256_setzero_ps();
            UNROLL
            for (int q = 0; q < 4; q++) {
                __m256 wq = natural_8_avx2(fmt, row[i], c + 8 * q, s);
                UNROLL
                for (int t = 0; t < NT; t++)
                    acc[i][q][t] = _mm256_fmadd_ps(wq, _mm256_loadu_ps(x + (size_t)t * cols + c + 8 * q),
                                                   acc[i][q][t]);
            }
        }
    }
    UNROLL
    for (int i = 0; i < R; i++)
        UNROLL
        for (int t = 0; t < NT; t++)
            y[(size_t)t * ys + (size_t)(r + i)] =
                butterfly_avx2(acc[i][0][t], acc[i][1][t], acc[i][2][t], acc[i][3][t]);
}

/* one token: two rows at once; more: a row at a time, tokens in pairs (as
 * twin_int4_avx2; dequantizing rows into scratch once and reading them back
 * per token measured slower: 1.7 against 2.3 GB/s for FP8 at 4 tokens) */
#define NATURAL_TWIN_AVX2(name, fmt)                                                               \
    TGT2 void name(const linear_weight *w, int r0, int r1, const float *x, int T, float *y)        \
    {                                                                                              \
        size_t ys = (size_t)w->rows, xs = (size_t)w->cols;                                         \
        int r = r0;                                                                                \
        if (T == 1)                                                                                \
            for (; r + AVX2_ROWS <= r1; r += AVX2_ROWS)                                            \
                natural_rows_avx2(w, fmt, r, AVX2_ROWS, x, 1, y, ys);                              \
        for (; r < r1; r++) {                                                                      \
            int t = 0;                                                                             \
            for (; t + 2 <= T; t += 2)                                                             \
                natural_rows_avx2(w, fmt, r, 1, x + t * xs, 2, y + t * ys, ys);                    \
            if (t < T)                                                                             \
                natural_rows_avx2(w, fmt, r, 1, x + t * xs, 1, y + t * ys, ys);                    \
        }                                                                                          \
    }
NATURAL_TWIN_AVX2(twin_fp8_avx2, WF_FP8_BLOCK)
NATURAL_TWIN_AVX2(twin_bf16_avx2, WF_BF16)

/* any format: TWIN_ROWS rows at a time dequantized into work by the
 * reference, then every token's lanes over them, two rows at once */
TGT2 void twin_dequant_avx2(const linear_weight *w, int r0, int r1, const float *x, int T,
                            float *y, float *work)
{
    size_t ys = (size_t)w->rows, cols = (size_t)w->cols;
    for (int r = r0; r < r1; r += TWIN_ROWS) {
        int n = r1 - r < TWIN_ROWS ? r1 - r : TWIN_ROWS;
        for (int i = 0; i < n; i++)
            linear_ref_dequant_row(w, r + i, work + (size_t)i * cols);
        for (int t = 0; t < T; t++) {
            int i = 0;
            for (; i + AVX2_ROWS <= n; i += AVX2_ROWS)
                dot_rows_avx2(work + i * cols, cols, AVX2_ROWS, x + t * cols, (int)cols,
                              y + t * ys + r + i);
            for (; i < n; i++)
                dot_rows_avx2(work + i * cols, cols, 1, x + t * cols, (int)cols, y + t * ys + r + i);
        }
    }
}
