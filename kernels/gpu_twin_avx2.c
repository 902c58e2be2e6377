/* gpu_twin_avx2: the twin on AVX2 (see gpu_twin_simd.h): a row's 32 lanes in
 * four 8-float registers, two rows at once. */
#include <immintrin.h>
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

/* y[t * ys + i] = the butterfly of row i's four registers of token t */
TGT2 INL void store_rows_avx2(__m256 (*acc)[4][2], const int R, const int NT, float *y, size_t ys)
{
    UNROLL
    for (int i = 0; i < R; i++)
        UNROLL
        for (int t = 0; t < NT; t++)
            y[(size_t)t * ys + (size_t)i] =
                butterfly_avx2(acc[i][0][t], acc[i][1][t], acc[i][2][t], acc[i][3][t]);
}

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

/* INT4 as the GPU's lanes take it (gpu_twin.c, int4_row_lanes), as on
 * AVX-512 with 8 lanes per register: a row's pass of 32 words in four
 * registers; nibble j of each word, flipped in its top bit, is q - 8 as a
 * signed 4-bit number, moved to the top and shifted back with its sign. */
typedef struct int4_rows {
    const uint32_t *row[2];
    const uint16_t *srow[2];
    int nw, scale_cols, sh;     /* words per group = 1 << sh */
    size_t xs;
} int4_rows;

/* registers q0..q0+NQ of the pass at k0 for R rows and NT tokens into acc;
 * FULL: the row has all 32 words of the pass (no masks) */
TGT2 INL void int4_quarters_avx2(const int4_rows *M, int k0, const int FULL, const int q0,
                                 const int NQ, const int R, const float *xp, const int NT,
                                 __m256 (*acc)[4][2])
{
    const __m256i flip = _mm256_set1_epi32((int)0x88888888u);
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i m[4];
    __m256 d[2][4][2];
    UNROLL
    for (int q = q0; q < q0 + NQ; q++) {
        m[q] = _mm256_cmpgt_epi32(_mm256_set1_epi32(M->nw - k0 - 8 * q), idx);
        UNROLL
        for (int i = 0; i < R; i++)
            UNROLL
            for (int t = 0; t < NT; t++)
                d[i][q][t] = _mm256_setzero_ps();
    }
    UNROLL
    for (int j = 0; j < 8; j++)
        UNROLL
        for (int q = q0; q < q0 + NQ; q++) {
            __m256 xj[2];
            UNROLL
            for (int t = 0; t < NT; t++)
                xj[t] = _mm256_loadu_ps(xp + (size_t)t * M->xs + 8 * (size_t)(k0 + 8 * q) + 8 * j);
            UNROLL
            for (int i = 0; i < R; i++) {
                /* the words again from L1 rather than in registers: there are 16 */
                const int *at = (const int *)M->row[i] + k0 + 8 * q;
                __m256i u = _mm256_xor_si256(
                    FULL ? _mm256_loadu_si256((const __m256i *)at) : _mm256_maskload_epi32(at, m[q]), flip);
                __m256 qf = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(u, 28 - 4 * j), 28));
                UNROLL
                for (int t = 0; t < NT; t++)
                    d[i][q][t] = _mm256_fmadd_ps(qf, xj[t], d[i][q][t]);
            }
        }
    UNROLL
    for (int q = q0; q < q0 + NQ; q++) {
        int k = k0 + 8 * q;
        if (k >= M->nw)
            break;
        /* lane l's scale: group (k >> sh) + (l >> sh): one group for all when
         * wpg >= 8, else 8 >> sh groups in one load unless at the row's end */
        int g0 = k >> M->sh;
        UNROLL
        for (int i = 0; i < R; i++) {
            __m256 sc;
            if (M->sh >= 3 || g0 + 8 <= M->scale_cols) {
                __m128i raw = M->sh >= 3 ? _mm_set1_epi16((short)M->srow[i][g0])
                                         : _mm_loadu_si128((const __m128i *)(M->srow[i] + g0));
                sc = _mm256_permutevar8x32_ps(
                    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16)),
                    _mm256_srli_epi32(idx, M->sh));
            } else {
                float sf[8] = {0};      /* lanes past the row's groups are masked off */
                for (int l = 0; l < 8 && g0 + (l >> M->sh) < M->scale_cols; l++) {
                    uint32_t b = (uint32_t)M->srow[i][g0 + (l >> M->sh)] << 16;
                    memcpy(&sf[l], &b, 4);
                }
                sc = _mm256_loadu_ps(sf);
            }
            UNROLL
            for (int t = 0; t < NT; t++)
                acc[i][q][t] = _mm256_blendv_ps(acc[i][q][t], _mm256_fmadd_ps(d[i][q][t], sc, acc[i][q][t]),
                                                _mm256_castsi256_ps(m[q]));
        }
    }
}

/* rows r..r+R of y for tokens t..t+NT of xp: one token, the four registers
 * at once (eight chains for two rows); two tokens, two registers at a time */
TGT2 INL void int4_rows_avx2(const linear_weight *w, const int fmt, int r, const int R,
                             const float *xp, const int NT, float *y, size_t ys)
{
    (void)fmt;      /* always INT4: the signature TWIN_BY_ROWS calls */
    int4_rows M = {.nw = (int)w->row_words, .scale_cols = (int)w->scale_cols,
                   .xs = twin_x_stride(w->cols)};
    while ((1 << M.sh) < w->group_size / 8)
        M.sh++;
    __m256 acc[2][4][2];
    UNROLL
    for (int i = 0; i < R; i++) {
        M.row[i] = (const uint32_t *)w->data + (size_t)(r + i) * (size_t)w->row_words;
        M.srow[i] = (const uint16_t *)w->scale + (size_t)(r + i) * (size_t)w->scale_cols;
        UNROLL
        for (int q = 0; q < 4; q++)
            UNROLL
            for (int t = 0; t < NT; t++)
                acc[i][q][t] = _mm256_setzero_ps();
    }
    for (int k0 = 0; k0 < M.nw; k0 += 32) {
        UNROLL
        for (int i = 0; i < R; i++) {
            prefetch_l2(M.row[i] + k0, PREFETCH_AHEAD);     /* the pass's two cache lines */
            prefetch_l2(M.row[i] + k0 + 16, PREFETCH_AHEAD);
        }
        if (k0 + 32 <= M.nw && NT == 1)
            int4_quarters_avx2(&M, k0, 1, 0, 4, R, xp, 1, acc);
        else if (k0 + 32 <= M.nw) {
            int4_quarters_avx2(&M, k0, 1, 0, 2, R, xp, NT, acc);
            int4_quarters_avx2(&M, k0, 1, 2, 2, R, xp, NT, acc);
        } else      /* the last pass, partial */
            for (int q = 0; q < 4 && k0 + 8 * q < M.nw; q++)
                int4_quarters_avx2(&M, k0, 0, q, 1, R, xp, NT, acc);
    }
    store_rows_avx2(acc, R, NT, y + r, ys);
}

/* 32 E4M3 codes as e4m3_to_f32 gives them, through byte shuffles: every E4M3
 * value is a bf16 value, whose high byte a normal code's exponent gives and
 * whose low byte its exponent's last bit and its mantissa give (two 16-entry
 * tables); subnormal codes (exponent 0) take two tables of their own, NaN
 * codes the reference's NaN; then the bf16 values widen to float. Per 128-bit
 * lane the widening yields codes 0-3 and 16-19 in f[0], 4-7 and 20-23 in
 * f[1], 8-11 and 24-27 in f[2], 12-15 and 28-31 in f[3] (fp8_rows_avx2
 * transposes the codes first to get a word's code j in f[j]). */
TGT2 INL void e4m3_32_avx2(__m256i q, __m256 f[4])
{
    const __m256i normal_hi = _mm256_setr_epi8(
        60, 60, 61, 61, 62, 62, 63, 63, 64, 64, 65, 65, 66, 66, 67, 67,
        60, 60, 61, 61, 62, 62, 63, 63, 64, 64, 65, 65, 66, 66, 67, 67);    /* (e + 120) >> 1 */
    const __m256i normal_lo = _mm256_setr_epi8(
        0, 16, 32, 48, 64, 80, 96, 112, -128, -112, -96, -80, -64, -48, -32, -16,
        0, 16, 32, 48, 64, 80, 96, 112, -128, -112, -96, -80, -64, -48, -32, -16); /* e0 << 7 | m << 4 */
    const __m256i sub_hi = _mm256_setr_epi8(0, 0x3b, 0x3b, 0x3b, 0x3c, 0x3c, 0x3c, 0x3c, 0, 0, 0, 0, 0, 0, 0, 0,
                                            0, 0x3b, 0x3b, 0x3b, 0x3c, 0x3c, 0x3c, 0x3c, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m256i sub_lo = _mm256_setr_epi8(0, 0, -128, -64, 0, 0x20, 0x40, 0x60, 0, 0, 0, 0, 0, 0, 0, 0,
                                            0, 0, -128, -64, 0, 0x20, 0x40, 0x60, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256i mag = _mm256_and_si256(q, _mm256_set1_epi8(0x7f));
    __m256i e = _mm256_and_si256(_mm256_srli_epi16(mag, 3), low4);
    __m256i em = _mm256_and_si256(mag, low4);           /* e's last bit and m */
    __m256i sub = _mm256_cmpeq_epi8(e, _mm256_setzero_si256());
    __m256i hi = _mm256_blendv_epi8(_mm256_shuffle_epi8(normal_hi, e), _mm256_shuffle_epi8(sub_hi, em), sub);
    __m256i lo = _mm256_blendv_epi8(_mm256_shuffle_epi8(normal_lo, em), _mm256_shuffle_epi8(sub_lo, em), sub);
    hi = _mm256_or_si256(hi, _mm256_and_si256(q, _mm256_set1_epi8((char)0x80)));
    __m256i nan = _mm256_cmpeq_epi8(mag, _mm256_set1_epi8(0x7f));
    hi = _mm256_blendv_epi8(hi, _mm256_set1_epi8(0x7f), nan);
    lo = _mm256_blendv_epi8(lo, _mm256_set1_epi8((char)0xc0), nan);
    __m256i w0 = _mm256_unpacklo_epi8(lo, hi), w1 = _mm256_unpackhi_epi8(lo, hi);
    const __m256i zero = _mm256_setzero_si256();
    f[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, w0));
    f[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, w0));
    f[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, w1));
    f[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, w1));
}

/* FP8 as the GPU's lanes take it when they take words (twin_fp8_words), on
 * AVX2 and AVX-512 without VBMI: 8 lanes per register, a row's pass of 32
 * words in four. A register's 32 codes are first transposed as 4 x 4 bytes
 * within each 16-byte lane, so that e4m3_32_avx2 yields in f[j] code j of the
 * 8 words in order; x is laid out to match (twin_words_permute_x, 4 columns,
 * 8 lanes). Per word a chain of 4 FMAs, then its block's scale (a register's
 * 32 columns lie in one block) into the lane's sum; lanes past the row's
 * words keep theirs. */
TGT2 INL void fp8_rows_avx2(const linear_weight *w, const int fmt, int r, const int R,
                            const float *xp, const int NT, float *y, size_t ys)
{
    (void)fmt;      /* always FP8: the signature TWIN_BY_ROWS calls */
    const __m256i transpose = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                               0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int nw = w->cols / 4, bc = w->block_cols;
    size_t xs = twin_x_stride(w->cols);
    const uint8_t *row[AVX2_ROWS];
    const float *srow[AVX2_ROWS];
    __m256 acc[AVX2_ROWS][4][2];
    UNROLL
    for (int i = 0; i < R; i++) {
        row[i] = (const uint8_t *)w->data + (size_t)(r + i) * (size_t)w->cols;
        srow[i] = (const float *)w->scale + (size_t)((r + i) / w->block_rows) * (size_t)w->scale_cols;
        UNROLL
        for (int q = 0; q < 4; q++)
            UNROLL
            for (int t = 0; t < NT; t++)
                acc[i][q][t] = _mm256_setzero_ps();
    }
    for (int k0 = 0; k0 < nw; k0 += 32) {
        UNROLL
        for (int i = 0; i < R; i++) {
            prefetch_l2(row[i] + 4 * (size_t)k0, PREFETCH_AHEAD);  /* the pass's two cache lines */
            prefetch_l2(row[i] + 4 * (size_t)k0 + 64, PREFETCH_AHEAD);
        }
        UNROLL
        for (int q = 0; q < 4; q++) {
            int kb = k0 + 8 * q;
            if (kb >= nw)
                break;
            __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(nw - kb), idx);
            UNROLL
            for (int i = 0; i < R; i++) {
                const int *at = (const int *)(row[i] + 4 * (size_t)kb);
                __m256i raw = nw - kb >= 8 ? _mm256_loadu_si256((const __m256i *)at) : _mm256_maskload_epi32(at, m);
                __m256 f[4];
                e4m3_32_avx2(_mm256_shuffle_epi8(raw, transpose), f);
                __m256 sc = _mm256_set1_ps(srow[i][4 * kb / bc]);
                UNROLL
                for (int t = 0; t < NT; t++) {
                    const float *xb = xp + (size_t)t * xs + 4 * (size_t)kb;
                    __m256 d = _mm256_setzero_ps();
                    UNROLL
                    for (int j = 0; j < 4; j++)
                        d = _mm256_fmadd_ps(f[j], _mm256_loadu_ps(xb + 8 * j), d);
                    acc[i][q][t] = _mm256_blendv_ps(acc[i][q][t], _mm256_fmadd_ps(d, sc, acc[i][q][t]),
                                                    _mm256_castsi256_ps(m));
                }
            }
        }
    }
    store_rows_avx2(acc, R, NT, y + r, ys);
}

/* BF16, dequantized in registers (natural lane order, x as it is) */
TGT2 INL void bf16_rows_avx2(const linear_weight *w, const int fmt, int r, const int R,
                             const float *x, const int NT, float *y, size_t ys)
{
    (void)fmt;      /* always BF16: the signature TWIN_BY_ROWS calls */
    int cols = w->cols;
    const uint16_t *row[AVX2_ROWS];
    __m256 acc[AVX2_ROWS][4][2];
    UNROLL
    for (int i = 0; i < R; i++) {
        row[i] = (const uint16_t *)w->data + (size_t)(r + i) * (size_t)cols;
        UNROLL
        for (int q = 0; q < 4; q++)
            UNROLL
            for (int t = 0; t < NT; t++)
                acc[i][q][t] = _mm256_setzero_ps();
    }
    for (int c = 0; c < cols; c += LANES) {
        UNROLL
        for (int i = 0; i < R; i++) {
            prefetch_l2(row[i] + c, PREFETCH_AHEAD);     /* a cache line per pass */
            UNROLL
            for (int q = 0; q < 4; q++) {
                __m256 wq = _mm256_castsi256_ps(_mm256_slli_epi32(
                    _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(row[i] + c + 8 * q))), 16));
                UNROLL
                for (int t = 0; t < NT; t++)
                    acc[i][q][t] = _mm256_fmadd_ps(wq, _mm256_loadu_ps(x + (size_t)t * cols + c + 8 * q),
                                                   acc[i][q][t]);
            }
        }
    }
    store_rows_avx2(acc, R, NT, y + r, ys);
}

/* One token: two rows at once; more: a row at a time, tokens in pairs (the
 * row's bytes stay in L1 across them). Dequantizing rows into scratch once
 * and reading them back per token measured slower (FP8 at 4 tokens: 1.7
 * against 2.3 GB/s). */
#define TWIN_BY_ROWS(name, rows_fn, fmt, XS)                                                       \
    TGT2 void name(const linear_weight *w, int r0, int r1, const float *x, int T, float *y)        \
    {                                                                                              \
        size_t ys = (size_t)w->rows, xs = (XS);                                                    \
        int r = r0;                                                                                \
        if (T == 1)                                                                                \
            for (; r + AVX2_ROWS <= r1; r += AVX2_ROWS)                                            \
                rows_fn(w, fmt, r, AVX2_ROWS, x, 1, y, ys);                                        \
        for (; r < r1; r++) {                                                                      \
            int t = 0;                                                                             \
            for (; t + 2 <= T; t += 2)                                                             \
                rows_fn(w, fmt, r, 1, x + t * xs, 2, y + t * ys, ys);                              \
            if (t < T)                                                                             \
                rows_fn(w, fmt, r, 1, x + t * xs, 1, y + t * ys, ys);                              \
        }                                                                                          \
    }
TWIN_BY_ROWS(twin_int4_avx2, int4_rows_avx2, WF_INT4_GROUP, twin_x_stride(w->cols))
TWIN_BY_ROWS(twin_fp8_avx2, fp8_rows_avx2, WF_FP8_BLOCK, twin_x_stride(w->cols))
TWIN_BY_ROWS(twin_bf16_avx2, bf16_rows_avx2, WF_BF16, (size_t)w->cols)

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
