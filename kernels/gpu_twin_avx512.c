/* gpu_twin_avx512: the twin on AVX-512 (see gpu_twin_simd.h): a row's 32
 * lanes in two registers, four rows at once.
 *
 * Prefetches: the FP8 kernel fetches, at each column, the rows of the next
 * block of rows (R rows on). A row of K2's experts is 7 KB in FP8, so 4 KiB
 * ahead within a row (PREFETCH_AHEAD, as the CPU backend's row kernels read
 * one row at a time) left most of each new block's rows to be waited for: at
 * one token the FP8 twin went from 11-14 to 16-20 GB/s on one core of the
 * development VM (docs/benchmarks.md). An INT4 row (3.5 KB) is shorter than
 * that reach, and BF16's kernel measured the same either way: both keep 4 KiB
 * ahead. */
#include <immintrin.h>
#include <string.h>

#include "cpu_kernels/fp8_widen_avx512.h"
#include "gpu_twin_simd.h"

#define LANES TWIN_LANES
#define INL static inline __attribute__((always_inline))
/* constant loops over rows and tokens must become straight-line code so the
 * accumulators stay in registers */
#define UNROLL _Pragma("GCC unroll 8")

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#define TGT_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi,avx2,fma")))

/* The body of a range function: rows [r0, r1) of y for all T tokens of xp
 * (token stride XS) through ROWS(w, r, rows, xp, tokens, y, ys) with constant
 * rows and tokens:
 * blocks of NR rows, tokens in pairs, then the leftover rows one at a time. */
#define RANGE_BY_BLOCKS(ROWS, NR, XS)                                                \
    size_t ys = (size_t)w->rows, xs = (XS);                                          \
    int r = r0;                                                                      \
    for (; r + (NR) <= r1; r += (NR)) {                                              \
        int t = 0;                                                                   \
        for (; t + 2 <= T; t += 2)                                                   \
            ROWS(w, r, NR, xp + t * xs, 2, y + t * ys, ys);                          \
        if (t < T)                                                                   \
            ROWS(w, r, NR, xp + t * xs, 1, y + t * ys, ys);                          \
    }                                                                                \
    for (; r < r1; r++)                                                              \
        for (int t = 0; t < T; t++)                                                  \
            ROWS(w, r, 1, xp + t * xs, 1, y + t * ys, ys)

/* the warp's butterfly on lanes 0-15 in lo and 16-31 in hi: each step adds the lane
 * o away, as v[l] + v[l ^ o]; only lanes 0-15 are needed after the first */
TGT INL float butterfly_avx512(__m512 lo, __m512 hi)
{
    __m512 v = _mm512_add_ps(lo, hi);
    v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));    /* o = 8: 256-bit halves */
    v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));    /* o = 4: 128-bit quarters */
    v = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4E));          /* o = 2 */
    v = _mm512_add_ps(v, _mm512_permute_ps(v, 0xB1));          /* o = 1 */
    return _mm512_cvtss_f32(v);
}

/* R dequantized rows (ld floats apart) times one token's x, lanes 0-15 and
 * 16-31 of each row in two registers; the last partial block's missing lanes
 * keep their sums (a masked FMA), as the GPU's lanes that run out do */
TGT INL void dot_rows_avx512(const float *w, size_t ld, const int R, const float *x, int n,
                             float *out, size_t out_stride)
{
    __m512 lo[TWIN_ROWS], hi[TWIN_ROWS];
    UNROLL
    for (int i = 0; i < R; i++)
        lo[i] = hi[i] = _mm512_setzero_ps();
    int c = 0;
    for (; c + LANES <= n; c += LANES) {
        __m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + 16);
        UNROLL
        for (int i = 0; i < R; i++) {
            lo[i] = _mm512_fmadd_ps(_mm512_loadu_ps(w + i * ld + c), x0, lo[i]);
            hi[i] = _mm512_fmadd_ps(_mm512_loadu_ps(w + i * ld + c + 16), x1, hi[i]);
        }
    }
    int rest = n - c;
    if (rest > 0) {
        __mmask16 mlo = (__mmask16)(rest >= 16 ? 0xffff : (1u << rest) - 1);
        __mmask16 mhi = (__mmask16)(rest > 16 ? (1u << (rest - 16)) - 1 : 0);
        __m512 x0 = _mm512_maskz_loadu_ps(mlo, x + c), x1 = _mm512_maskz_loadu_ps(mhi, x + c + 16);
        UNROLL
        for (int i = 0; i < R; i++) {
            lo[i] = _mm512_mask3_fmadd_ps(_mm512_maskz_loadu_ps(mlo, w + i * ld + c), x0, lo[i], mlo);
            hi[i] = _mm512_mask3_fmadd_ps(_mm512_maskz_loadu_ps(mhi, w + i * ld + c + 16), x1, hi[i],
                                          mhi);
        }
    }
    UNROLL
    for (int i = 0; i < R; i++)
        out[i * out_stride] = butterfly_avx512(lo[i], hi[i]);
}

/* INT4 as the GPU's lanes take it (gpu_twin.c, int4_row_lanes): lanes 0-15
 * and 16-31 of a row in two registers, each lane one 32-bit word (8 columns)
 * of the pass. Column j of a register's 16 words is nibble j of each lane:
 * shifted down and looked up in a table of q - 8 (vpermps reads the low 4
 * bits only; q - 8 as 2^23 + q less 2^23 + 8, a shift, a ternary logic op
 * and a subtraction, measured the same), times column j of x, which
 * twin_words_permute_x put in one register for the 16 words. The 8 products of
 * a word chain into d, d times the word's scale into the lane's sum; lanes
 * past the row's words keep theirs, as the GPU's lanes that run out. Here
 * rows r..r+R of y (row stride ys) for tokens t..t+NT of xp. */
#define INT4_ROWS 4

/* what int4_rows_avx512 needs of the matrix's INT4 layout */
typedef struct int4_layout {
    int nw, sh;             /* words per row; words per group = 1 << sh */
    int per;                /* groups a register's 16 words span */
    size_t xs;              /* x's token stride */
    __m512i rel;            /* lane l's group after the register's first: l >> sh */
} int4_layout;

TGT INL int4_layout int4_layout_of(const linear_weight *w)
{
    int4_layout L = {.nw = (int)w->row_words, .xs = twin_x_stride(w->cols)};
    while ((1 << L.sh) < w->group_size / 8)
        L.sh++;
    L.per = L.sh >= 4 ? 1 : 16 >> L.sh;
    L.rel = _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                              (unsigned)L.sh);
    return L;
}

/* halves h0..h0+NH of the pass at k0 (16 words each, lanes 0-15 and 16-31)
 * of R rows into acc[i][h][t]; lanes past the row's words (m off) keep their
 * sums. Both halves at once for one token: eight chains of FMAs in flight. */
TGT INL void int4_halves_avx512(const int4_layout *L, const uint32_t *const *row,
                                const uint16_t *const *srow, int k0, const int h0, const int NH,
                                const __mmask16 *m, const __mmask16 *gm, const int R,
                                const float *xp, const int NT, __m512 (*acc)[2][2])
{
    const __m512 q_of = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
    __m512i u[INT4_ROWS][2];
    __m512 d[INT4_ROWS][2][2];
    UNROLL
    for (int h = h0; h < h0 + NH; h++)
        UNROLL
        for (int i = 0; i < R; i++) {
            prefetch_l2(row[i] + k0 + 16 * h, PREFETCH_AHEAD);   /* a cache line per half */
            /* and the row's scales, as far ahead in columns: a stream of
             * their own that stalled the kernel (one token: 11.7 -> 13.5 GB/s) */
            prefetch_l2(srow[i] + ((k0 + 16 * h) >> L->sh), PREFETCH_AHEAD / 8);
            u[i][h] = _mm512_maskz_loadu_epi32(m[h], row[i] + k0 + 16 * h);
            UNROLL
            for (int t = 0; t < NT; t++)
                d[i][h][t] = _mm512_setzero_ps();
        }
    UNROLL
    for (int j = 0; j < 8; j++)
        UNROLL
        for (int h = h0; h < h0 + NH; h++) {
            __m512 xj[2];
            UNROLL
            for (int t = 0; t < NT; t++)
                xj[t] = _mm512_loadu_ps(xp + (size_t)t * L->xs + 8 * (size_t)(k0 + 16 * h) + 16 * j);
            UNROLL
            for (int i = 0; i < R; i++) {
                __m512 q = _mm512_permutexvar_ps(j ? _mm512_srli_epi32(u[i][h], 4 * j) : u[i][h], q_of);
                UNROLL
                for (int t = 0; t < NT; t++)
                    d[i][h][t] = _mm512_fmadd_ps(q, xj[t], d[i][h][t]);
            }
        }
    UNROLL
    for (int h = h0; h < h0 + NH; h++) {
        int g0 = (k0 + 16 * h) >> L->sh;
        UNROLL
        for (int i = 0; i < R; i++) {
            __m512i sb = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(gm[h], srow[i] + g0));
            __m512 sc = _mm512_permutexvar_ps(L->rel, _mm512_castsi512_ps(_mm512_slli_epi32(sb, 16)));
            UNROLL
            for (int t = 0; t < NT; t++)
                acc[i][h][t] = _mm512_mask3_fmadd_ps(d[i][h][t], sc, acc[i][h][t], m[h]);
        }
    }
}

TGT INL void int4_rows_avx512(const linear_weight *w, int r, const int R, const float *xp,
                              const int NT, float *y, size_t ys)
{
    const int4_layout layout = int4_layout_of(w), *L = &layout;
    const uint32_t *row[INT4_ROWS];
    const uint16_t *srow[INT4_ROWS];
    __m512 acc[INT4_ROWS][2][2];
    UNROLL
    for (int i = 0; i < R; i++) {
        row[i] = (const uint32_t *)w->data + (size_t)(r + i) * (size_t)w->row_words;
        srow[i] = (const uint16_t *)w->scale + (size_t)(r + i) * (size_t)w->scale_cols;
        UNROLL
        for (int h = 0; h < 2; h++)
            UNROLL
            for (int t = 0; t < NT; t++)
                acc[i][h][t] = _mm512_setzero_ps();
    }
    const __mmask16 groups = (__mmask16)((1u << L->per) - 1);
    const __mmask16 all[2] = {0xffff, 0xffff}, all_groups[2] = {groups, groups};
    int k0 = 0;
    for (; k0 + 32 <= L->nw; k0 += 32) {
        if (NT == 1)
            int4_halves_avx512(L, row, srow, k0, 0, 2, all, all_groups, R, xp, 1, acc);
        else {
            int4_halves_avx512(L, row, srow, k0, 0, 1, all, all_groups, R, xp, NT, acc);
            int4_halves_avx512(L, row, srow, k0, 1, 1, all, all_groups, R, xp, NT, acc);
        }
    }
    /* the last pass: its words, and scales, only as far as the row has them */
    for (int h = 0; h < 2 && k0 + 16 * h < L->nw; h++) {
        int kb = k0 + 16 * h, n = L->nw - kb < 16 ? L->nw - kb : 16;
        int g0 = kb >> L->sh, ng = (int)w->scale_cols - g0 < L->per ? (int)w->scale_cols - g0 : L->per;
        __mmask16 m[2] = {0, 0}, gm[2] = {0, 0};
        m[h] = (__mmask16)((1u << n) - 1);
        gm[h] = (__mmask16)((1u << ng) - 1);
        int4_halves_avx512(L, row, srow, k0, h, 1, m, gm, R, xp, NT, acc);
    }
    UNROLL
    for (int i = 0; i < R; i++)
        UNROLL
        for (int t = 0; t < NT; t++)
            y[(size_t)t * ys + (size_t)(r + i)] = butterfly_avx512(acc[i][0][t], acc[i][1][t]);
}

/* four rows at once, tokens in pairs (two rows measured a third slower at 4
 * tokens: every x load then serves fewer rows) */
TGT void twin_int4_avx512(const linear_weight *w, int r0, int r1, const float *xp, int T,
                          float *y)
{
    RANGE_BY_BLOCKS(int4_rows_avx512, INT4_ROWS, twin_x_stride(w->cols));
}

/* FP8 as the GPU's lanes take it when they take words (twin_fp8_words):
 * lanes 0-15 and 16-31 of a row in two registers, each lane a word of 4
 * codes. A register's 64 codes are first transposed as 4 x 4 bytes within
 * each 16-byte lane, so that the widening through the byte tables
 * (fp8_widen_64, exact values) yields in f[j] code j of the 16 words in
 * order; x is laid out to match (twin_words_permute_x, 4 columns, 16 lanes).
 * Per word a chain of 4 FMAs, then its block's scale (the register's 64
 * columns lie in one block) into the lane's sum. Here rows r..r+R of y for
 * tokens t..t+NT of xp. */
#define FP8_ROWS 4

TGT_VBMI INL void fp8_rows_avx512(const linear_weight *w, int r, const int R, const float *xp,
                                  const int NT, float *y, size_t ys)
{
    const fp8_tables tb = fp8_tables_load();
    const __m512i transpose = _mm512_broadcast_i32x4(
        _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
    int nw = w->cols / 4, bc = w->block_cols;
    size_t xs = twin_x_stride(w->cols), next_rows = (size_t)R * (size_t)w->cols;
    const uint8_t *row[FP8_ROWS];
    const float *srow[FP8_ROWS];
    __m512 acc[FP8_ROWS][2][2];
    UNROLL
    for (int i = 0; i < R; i++) {
        row[i] = (const uint8_t *)w->data + (size_t)(r + i) * (size_t)w->cols;
        srow[i] = (const float *)w->scale + (size_t)((r + i) / w->block_rows) * (size_t)w->scale_cols;
        UNROLL
        for (int h = 0; h < 2; h++)
            UNROLL
            for (int t = 0; t < NT; t++)
                acc[i][h][t] = _mm512_setzero_ps();
    }
    for (int k0 = 0; k0 < nw; k0 += 32)
        UNROLL
        for (int h = 0; h < 2; h++) {
            int kb = k0 + 16 * h;
            if (kb >= nw)
                break;
            int n = nw - kb < 16 ? nw - kb : 16;
            __mmask16 m = (__mmask16)(n == 16 ? 0xffff : (1u << n) - 1);
            __mmask64 mb = n == 16 ? ~(__mmask64)0 : ((__mmask64)1 << (4 * n)) - 1;
            __m512 xj[2][4];
            UNROLL
            for (int t = 0; t < NT; t++)
                UNROLL
                for (int j = 0; j < 4; j++)
                    xj[t][j] = _mm512_loadu_ps(xp + (size_t)t * xs + 4 * (size_t)kb + 16 * j);
            UNROLL
            for (int i = 0; i < R; i++) {
                prefetch_l2(row[i] + 4 * (size_t)kb, next_rows);
                __m512 f[4];
                fp8_widen_64(&tb, _mm512_shuffle_epi8(_mm512_maskz_loadu_epi8(mb, row[i] + 4 * (size_t)kb),
                                                      transpose), f);
                __m512 sc = _mm512_set1_ps(srow[i][4 * kb / bc]);
                UNROLL
                for (int t = 0; t < NT; t++) {
                    __m512 d = _mm512_setzero_ps();
                    UNROLL
                    for (int j = 0; j < 4; j++)
                        d = _mm512_fmadd_ps(f[j], xj[t][j], d);
                    acc[i][h][t] = _mm512_mask3_fmadd_ps(d, sc, acc[i][h][t], m);
                }
            }
        }
    UNROLL
    for (int i = 0; i < R; i++)
        UNROLL
        for (int t = 0; t < NT; t++)
            y[(size_t)t * ys + (size_t)(r + i)] = butterfly_avx512(acc[i][0][t], acc[i][1][t]);
}

TGT_VBMI void twin_fp8_avx512(const linear_weight *w, int r0, int r1, const float *xp, int T,
                              float *y)
{
    RANGE_BY_BLOCKS(fp8_rows_avx512, FP8_ROWS, twin_x_stride(w->cols));
}

/* BF16: a weight is its bits shifted into a float's high half, the lanes in
 * natural order */
TGT INL __m512 bf16_16(const uint16_t *p)
{
    return _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

TGT INL void bf16_rows_avx512(const linear_weight *w, int r, const int R, const float *x,
                              const int NT, float *y, size_t ys)
{
    int cols = w->cols;
    const uint16_t *row[TWIN_ROWS];
    __m512 lo[TWIN_ROWS][2], hi[TWIN_ROWS][2];
    UNROLL
    for (int i = 0; i < R; i++) {
        row[i] = (const uint16_t *)w->data + (size_t)(r + i) * (size_t)cols;
        UNROLL
        for (int t = 0; t < NT; t++)
            lo[i][t] = hi[i][t] = _mm512_setzero_ps();
    }
    for (int c = 0; c < cols; c += LANES) {
        __m512 x0[2], x1[2];
        UNROLL
        for (int t = 0; t < NT; t++) {
            x0[t] = _mm512_loadu_ps(x + (size_t)t * cols + c);
            x1[t] = _mm512_loadu_ps(x + (size_t)t * cols + c + 16);
        }
        UNROLL
        for (int i = 0; i < R; i++) {
            prefetch_l2(row[i] + c, PREFETCH_AHEAD);
            __m512 w0 = bf16_16(row[i] + c), w1 = bf16_16(row[i] + c + 16);
            UNROLL
            for (int t = 0; t < NT; t++) {
                lo[i][t] = _mm512_fmadd_ps(w0, x0[t], lo[i][t]);
                hi[i][t] = _mm512_fmadd_ps(w1, x1[t], hi[i][t]);
            }
        }
    }
    UNROLL
    for (int i = 0; i < R; i++)
        UNROLL
        for (int t = 0; t < NT; t++)
            y[(size_t)t * ys + (size_t)(r + i)] = butterfly_avx512(lo[i][t], hi[i][t]);
}

TGT void twin_bf16_avx512(const linear_weight *w, int r0, int r1, const float *xp, int T,
                          float *y)
{
    RANGE_BY_BLOCKS(bf16_rows_avx512, TWIN_ROWS, (size_t)w->cols);
}

/* other cases: rows dequantized TWIN_ROWS at a time into work, then their
 * lane sums together */
TGT void twin_dequant_avx512(kernel_path path, const linear_weight *w, int r0, int r1,
                         const float *x, int T, float *y, float *work)
{
    size_t ys = (size_t)w->rows, cols = (size_t)w->cols;
    for (int r = r0; r < r1; r += TWIN_ROWS) {
        int n = r1 - r < TWIN_ROWS ? r1 - r : TWIN_ROWS;
        linear_dequant_rows(path, w, r, n, work);
        for (int t = 0; t < T; t++) {
            if (n == TWIN_ROWS)
                dot_rows_avx512(work, cols, TWIN_ROWS, x + t * cols, (int)cols, y + t * ys + r, 1);
            else
                for (int i = 0; i < n; i++)
                    dot_rows_avx512(work + i * cols, cols, 1, x + t * cols, (int)cols,
                                    y + t * ys + r + i, 1);
        }
    }
}

