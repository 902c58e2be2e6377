/* linear_kernels: path selection, per-call preparation and the row split over
 * threads (see linear_kernels.h); the SIMD bodies are in linear_avx512.c and
 * linear_avx2.c. */
#include "linear_kernels.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/model/dtype.h"
#include "linear_ref.h"

static const char *const path_names[KPATH_COUNT] = {"scalar", "avx2", "avx512"};

const char *kernel_path_name(kernel_path p)
{
    return p >= 0 && p < KPATH_COUNT ? path_names[p] : "?";
}

int kernel_path_parse(const char *s, kernel_path *out)
{
    for (int i = 0; i < KPATH_COUNT; i++)
        if (!strcmp(s, path_names[i])) {
            *out = (kernel_path)i;
            return 0;
        }
    return -1;
}

int kernel_path_supported(kernel_path p)
{
    __builtin_cpu_init();
    switch (p) {
    case KPATH_SCALAR: return 1;
    case KPATH_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case KPATH_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl");
    default: return 0;
    }
}

kernel_path kernel_path_default(void)
{
    const char *env = getenv("MOETIER_KERNELS");
    kernel_path p;
    if (env && *env && kernel_path_parse(env, &p) == 0 && kernel_path_supported(p))
        return p;
    for (int i = KPATH_COUNT - 1; i > 0; i--)
        if (kernel_path_supported((kernel_path)i))
            return (kernel_path)i;
    return KPATH_SCALAR;
}

void kernel_path_describe(kernel_path p, char *buf, size_t cap)
{
    int tables = p == KPATH_AVX512 && kernel_fp8_lut_supported();
    int amx = p == KPATH_AVX512 && kernel_amx_enabled();
    snprintf(buf, cap, "%s kernels%s%s%s%s", kernel_path_name(p), tables || amx ? " (" : "",
             tables ? "FP8 by VBMI byte tables" : "", tables && amx ? ", " : "",
             amx ? "prefill on AMX tiles)" : tables ? ")" : "");
}

int linear_simd_ok(const linear_weight *w)
{
    switch (w->fmt) {
    case WF_F32:
    case WF_F16:
    case WF_BF16: return 1;
    case WF_FP8_BLOCK: return w->block_cols % 16 == 0 && w->block_rows > 0;
    case WF_INT4_GROUP: return w->cols % 32 == 0 && w->group_size % 32 == 0;
    default: return 0;
    }
}

static int fp8_lut_ok;
static pthread_once_t fp8_lut_once = PTHREAD_ONCE_INIT;

static void fp8_lut_probe(void)
{
    __builtin_cpu_init();
    const char *env = getenv("MOETIER_FP8_TABLES");
    fp8_lut_ok = kernel_path_supported(KPATH_AVX512) && __builtin_cpu_supports("avx512vbmi") &&
                 !(env && !strcmp(env, "0"));
}

int kernel_fp8_lut_supported(void)
{
    pthread_once(&fp8_lut_once, fp8_lut_probe);
    return fp8_lut_ok;
}

static uint8_t fp8_table[256];
static pthread_once_t fp8_table_once = PTHREAD_ONCE_INIT;

static void fp8_table_init(void)
{
    for (int i = 0; i < 128; i++) {
        float f = e4m3_to_f32((uint8_t)i);  /* every E4M3 value is exact in bf16 */
        uint32_t u;
        memcpy(&u, &f, 4);
        uint16_t b = isnan(f) ? 0x7fc0 : (uint16_t)(u >> 16);
        fp8_table[i] = (uint8_t)(b >> 8);
        fp8_table[128 + i] = (uint8_t)b;
    }
}

const uint8_t *fp8_bf16_table(void)
{
    pthread_once(&fp8_table_once, fp8_table_init);
    return fp8_table;
}

/* 16 floats of slack so the prepared x can start on a cache line */
#define ALIGN_SLACK 16

size_t linear_prep_scratch(const linear_weight *w, int T)
{
    if (!linear_simd_ok(w))
        return 0;
    size_t lanes = T >= LINEAR_BATCHED_MIN_T ? ((size_t)T + 15) / 16 * 16 : (size_t)T;
    size_t n = lanes * (size_t)w->cols + ALIGN_SLACK;
    if (T >= LINEAR_BATCHED_MIN_T && linear_amx_ok(w)) {
        size_t amx = linear_amx_prep_floats(w->cols, T) + ALIGN_SLACK;
        n = n > amx ? n : amx;
    }
    if (w->fmt == WF_FP8_BLOCK)
        n += (size_t)T;     /* without byte tables: each token's power of two */
    return n;
}

/* The row kernels load x 64 bytes at a time for every 64 or 128 weights; a load
 * straddling two cache lines costs two, and x from malloc (16-byte aligned)
 * made INT4 decode 40 % slower (18 -> 11 GB/s on one core). So the x they read
 * always starts on a cache line: permuted into the scratch, or copied there. */
static float *line_aligned(float *p)
{
    return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}

/* Each whole 32-block as its 16 even then its 16 odd elements (the nibble order
 * of packed INT4 words); the rest as is. */
static void split_even_odd(const float *x, int T, size_t cols, size_t from, float *dst)
{
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * cols;
        float *dt = dst + (size_t)t * cols;
        size_t b = from;
        for (; b + 32 <= cols; b += 32)
            for (int i = 0; i < 16; i++) {
                dt[b + (size_t)i] = xt[b + 2 * (size_t)i];
                dt[b + 16 + (size_t)i] = xt[b + 2 * (size_t)i + 1];
            }
        for (; b < cols; b++)
            dt[b] = xt[b];
    }
}

/* AVX-512 INT4: each whole 128-chunk transposed as 8 x 16, x'[16k + i] = x[8i + k]
 * (lane i of a 64-byte load holds the 8 nibbles of x[8i .. 8i + 7]); the rest split
 * into even and odd elements per 32-block. */
static void transpose_x128(const float *x, int T, size_t cols, float *dst)
{
    size_t c128 = cols / 128 * 128;
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * cols;
        float *dt = dst + (size_t)t * cols;
        for (size_t c = 0; c < c128; c += 128)
            for (size_t k = 0; k < 8; k++)
                for (size_t i = 0; i < 16; i++)
                    dt[c + 16 * k + i] = xt[c + 8 * i + k];
    }
    split_even_odd(x, T, cols, c128, dst);
}

/* AVX2 INT4: each whole 64-chunk transposed as 8 x 8, x'[8k + i] = x[8i + k]
 * (dword i of a 32-byte load holds the nibbles of x[8i .. 8i + 7]); a last
 * 32-block as 8 x 4, x'[4k + i] = x[8i + k]. */
static void transpose_x64(const float *x, int T, size_t cols, float *dst)
{
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * cols;
        float *dt = dst + (size_t)t * cols;
        size_t c = 0;
        for (; c + 64 <= cols; c += 64)
            for (size_t k = 0; k < 8; k++)
                for (size_t i = 0; i < 8; i++)
                    dt[c + 8 * k + i] = xt[c + 8 * i + k];
        for (; c + 32 <= cols; c += 32)
            for (size_t k = 0; k < 8; k++)
                for (size_t i = 0; i < 4; i++)
                    dt[c + 4 * k + i] = xt[c + 8 * i + k];
    }
}

/* x [T][cols] as [cols][ceil(T / lanes)][lanes], zeros past the last token */
static void transpose_to_lanes(const float *x, int T, size_t cols, size_t lanes, float *dst)
{
    size_t gs = ((size_t)T + lanes - 1) / lanes * lanes;
    for (size_t c = 0; c < cols; c++) {
        float *d = dst + c * gs;
        for (int t = 0; t < T; t++)
            d[t] = x[(size_t)t * cols + c];
        for (size_t t = (size_t)T; t < gs; t++)
            d[t] = 0;
    }
}

/* Position within a 64-chunk of element e after the VBMI kernel's unpacking:
 * unpack output k (0..3), 128-bit lane L, dword j holds element 16L + 4k + j. */
static int fp8_lut_slot(int e)
{
    int L = e / 16, k = (e % 16) / 4, j = e % 4;
    return k * 16 + 4 * L + j;
}

/* FP8 without byte tables (AVX2, AVX-512 without VBMI): each token's x times
 * 2^k, k as large as keeps its finite |x| 2^k below 2^126 and at most 120 (the
 * kernels' codes read as their values times 2^-120; products too small to
 * matter against the token's largest may underflow, nothing else changes);
 * when the blocks are whole chunks of 4 x `lanes` columns, each chunk
 * transposed as lanes x 4, x'[lanes * j + i] = x[4i + j] (dword i of a load
 * holds codes 4i .. 4i + 3); the rest as is. Infinite and NaN x stay what they
 * are. up[t] = 2^(120 - k) undoes it. */
static void prepare_fp8_shift(const linear_weight *w, const float *x, int T, size_t lanes,
                              float *dst, float *up, linear_prep *p)
{
    size_t cols = (size_t)w->cols, bc = (size_t)w->block_cols, chunk = 4 * lanes;
    p->fp8_chunked = bc % chunk == 0;
    p->fp8_up = up;
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * cols;
        float *dt = dst + (size_t)t * cols;
        float m = 0;
        for (size_t i = 0; i < cols; i++) {
            float a = fabsf(xt[i]);
            if (a > m && a <= FLT_MAX)
                m = a;
        }
        int k = m > 0 ? 125 - ilogbf(m) : 120;
        k = k > 120 ? 120 : k;
        float f = ldexpf(1.0f, k);
        up[t] = ldexpf(1.0f, 120 - k);
        for (size_t c0 = 0; c0 < cols; c0 += bc) {
            size_t c1 = c0 + bc < cols ? c0 + bc : cols, c = c0;
            for (; p->fp8_chunked && c + chunk <= c1; c += chunk)
                for (size_t j = 0; j < 4; j++)
                    for (size_t i = 0; i < lanes; i++)
                        dt[c + lanes * j + i] = xt[c + 4 * i + j] * f;
            for (; c < c1; c++)
                dt[c] = xt[c] * f;
        }
    }
}

int linear_batched(kernel_path path, const linear_weight *w, int T)
{
    if (path == KPATH_SCALAR || !linear_simd_ok(w))
        return 0;
    if (path == KPATH_AVX2 && (w->fmt == WF_INT4_GROUP || w->fmt == WF_FP8_BLOCK))
        return T >= LINEAR_AVX2_QUANT_BATCHED_MIN_T;
    return T >= LINEAR_BATCHED_MIN_T;
}

typedef struct amx_prep_job {
    const float *x;
    int T, cols;
    uint32_t *dst;
} amx_prep_job;

static void amx_prep_worker(void *ctx, int worker, int n_workers)
{
    amx_prep_job *j = ctx;
    int b0, b1;
    pool_split((j->T + 15) / 16, 1, worker, n_workers, &b0, &b1);
    if (b0 < b1)
        linear_amx_prepare(j->x, j->T, j->cols, b0, b1, j->dst);
}

/* linear_prepare with AMX's x prepared by the pool's threads (NULL: this one) */
static void prepare(kernel_path path, thread_pool *pool, const linear_weight *w, const float *x, int T,
                    float *scratch, linear_prep *p)
{
    memset(p, 0, sizeof *p);
    p->x = x;
    p->T = T;
    if (!linear_simd_ok(w) || path == KPATH_SCALAR)
        return;     /* the scalar reference reads x as it is */
    size_t cols = (size_t)w->cols;
    scratch = line_aligned(scratch);
    if (linear_batched(path, w, T)) {
        p->batched = 1;
        if (path == KPATH_AVX512 && linear_amx_ok(w) && kernel_amx_enabled()) {
            amx_prep_job aj = {x, T, (int)cols, (uint32_t *)scratch};
            if (pool && thread_pool_size(pool) > 1 && T > 16)
                thread_pool_run(pool, amx_prep_worker, &aj);
            else
                amx_prep_worker(&aj, 0, 1);
            p->x_amx = (const uint32_t *)scratch;
            return;
        }
        if (T <= LINEAR_LANES_MAX_T) {
            transpose_to_lanes(x, T, cols, path == KPATH_AVX512 ? 16 : 8, scratch);
            p->x_lanes = scratch;
        }
        return;     /* the rows GEMM reads x as it is */
    }
    if (w->fmt == WF_FP8_BLOCK && path == KPATH_AVX512 && kernel_fp8_lut_supported() &&
        w->block_cols % 64 == 0) {
        fp8_bf16_table();
        for (int t = 0; t < T; t++) {
            const float *xt = x + (size_t)t * cols;
            float *dt = scratch + (size_t)t * cols;
            size_t c0 = 0;
            for (; c0 < cols; c0 += (size_t)w->block_cols) {
                size_t c1 = c0 + (size_t)w->block_cols < cols ? c0 + (size_t)w->block_cols : cols;
                size_t c = c0;
                for (; c + 64 <= c1; c += 64)
                    for (int e = 0; e < 64; e++)
                        dt[c + (size_t)fp8_lut_slot(e)] = xt[c + (size_t)e];
                for (; c < c1; c++)
                    dt[c] = xt[c];
            }
        }
        p->x_perm = scratch;
        p->fp8_lut = 1;
        return;
    }
    if (w->fmt == WF_FP8_BLOCK) {
        prepare_fp8_shift(w, x, T, path == KPATH_AVX512 ? 16 : 8, scratch,
                          scratch + (size_t)T * cols, p);
        p->x_perm = scratch;
        return;
    }
    if (w->fmt != WF_INT4_GROUP) {
        /* kernels that read x as is: a copy on a cache line unless it is one */
        if ((uintptr_t)x % 64) {
            memcpy(scratch, x, (size_t)T * cols * sizeof *x);
            p->x = scratch;
        }
        return;
    }
    p->x_perm = scratch;
    if (path == KPATH_AVX512)
        transpose_x128(x, T, cols, scratch);
    else
        transpose_x64(x, T, cols, scratch);
}

void linear_prepare(kernel_path path, const linear_weight *w, const float *x, int T,
                    float *scratch, linear_prep *p)
{
    prepare(path, NULL, w, x, T, scratch, p);
}

static size_t work_floats(const linear_weight *w, int T)
{
    size_t b = linear_batched_work(w->cols, T);
    if (T >= LINEAR_BATCHED_MIN_T && linear_amx_ok(w)) {
        size_t a = linear_amx_work(w->cols, T);
        b = b > a ? b : a;
    }
    return b > (size_t)w->cols ? b : (size_t)w->cols;
}

size_t linear_forward_scratch(const linear_weight *w, int T, int n_threads)
{
    /* per thread: a dequantized row (scalar) or row block and partial sums
     * (batched AVX-512) */
    return linear_prep_scratch(w, T) +
           (size_t)(n_threads > 0 ? n_threads : 1) * work_floats(w, T);
}

typedef struct job {
    kernel_path path;
    const linear_weight *w;
    linear_prep prep;
    float *y;
    float *row_bufs;
} job;

static void scalar_rows(const linear_weight *w, const float *x, int T, float *y, int r0, int r1,
                        float *row)
{
    for (int r = r0; r < r1; r++) {
        linear_ref_dequant_row(w, r, row);
        for (int t = 0; t < T; t++)
            y[(size_t)t * (size_t)w->rows + (size_t)r] =
                dot_f32(row, x + (size_t)t * (size_t)w->cols, w->cols);
    }
}

static void run_rows(void *ctx, int worker, int n_workers)
{
    job *j = ctx;
    int r0, r1;
    pool_split(j->w->rows, 4, worker, n_workers, &r0, &r1);
    if (r0 >= r1)
        return;
    float *work = j->row_bufs + (size_t)worker * work_floats(j->w, j->prep.T);
    if (j->prep.x_amx)
        linear_rows_amx(j->w, &j->prep, j->y, r0, r1, work);
    else if (j->path == KPATH_AVX512)
        linear_rows_avx512(j->w, &j->prep, j->y, r0, r1, work);
    else if (j->path == KPATH_AVX2)
        linear_rows_avx2(j->w, &j->prep, j->y, r0, r1, work);
    else
        scalar_rows(j->w, j->prep.x, j->prep.T, j->y, r0, r1, work);
}

void linear_forward(kernel_path path, thread_pool *pool, const linear_weight *w, const float *x,
                    int T, float *y, float *scratch)
{
    job j = {.path = linear_simd_ok(w) ? path : KPATH_SCALAR, .w = w, .y = y};
    int tiles = j.path != KPATH_SCALAR && !linear_batched(j.path, w, T);
    if (tiles && T > LINEAR_TILES_MAX_T) {
        for (int t0 = 0; t0 < T; t0 += LINEAR_TILES_MAX_T) {
            int n = T - t0 < LINEAR_TILES_MAX_T ? T - t0 : LINEAR_TILES_MAX_T;
            linear_forward(path, pool, w, x + (size_t)t0 * (size_t)w->cols, n,
                           y + (size_t)t0 * (size_t)w->rows, scratch);
        }
        return;
    }
    prepare(j.path, pool, w, x, T, scratch, &j.prep);
    j.row_bufs = scratch + linear_prep_scratch(w, T);
    if (pool && thread_pool_size(pool) > 1 && w->rows >= 8)
        thread_pool_run(pool, run_rows, &j);
    else
        run_rows(&j, 0, 1);
}

void linear_forward_invariant(kernel_path path, thread_pool *pool, const linear_weight *w,
                              const float *x, int T, float *y, float *scratch)
{
    for (int t0 = 0; t0 < T; t0 += LINEAR_ROWS_MAX_T) {
        int n = T - t0 < LINEAR_ROWS_MAX_T ? T - t0 : LINEAR_ROWS_MAX_T;
        linear_forward(path, pool, w, x + (size_t)t0 * (size_t)w->cols, n,
                       y + (size_t)t0 * (size_t)w->rows, scratch);
    }
}

/* each output's chain over the rows, from zero or (add) carried on from y */
static void combine_rows(kernel_path path, const float *a, const float *W, int n, int cols, float *y,
                         int add)
{
    if (path == KPATH_AVX512) {
        combine_rows_avx512(a, W, n, cols, y, add);
        return;
    }
    if (path == KPATH_AVX2) {
        combine_rows_avx2(a, W, n, cols, y, add);
        return;
    }
    if (!add)
        memset(y, 0, (size_t)cols * sizeof *y);
    for (int i = 0; i < n; i++) {
        const float *w = W + (size_t)i * (size_t)cols;
        for (int c = 0; c < cols; c++)
            y[c] += a[i] * w[c];
    }
}

void linear_combine_rows(kernel_path path, const float *a, const float *W, int n, int cols,
                         float *y)
{
    combine_rows(path, a, W, n, cols, y, 0);
}

static int combine_block_rows(const linear_weight *w)
{
    int rb = LINEAR_COMBINE_BLOCK_FLOATS / w->cols;
    return rb > 0 ? rb : 1;
}

size_t linear_combine_work(const linear_weight *w)
{
    return w->fmt == WF_F32 ? 0 : (size_t)combine_block_rows(w) * (size_t)w->cols;
}

void linear_combine_weight(kernel_path path, const float *a, const linear_weight *w, int r0, int n,
                           float *y, float *work)
{
    size_t cols = (size_t)w->cols;
    if (w->fmt == WF_F32) {
        combine_rows(path, a, (const float *)w->data + (size_t)r0 * cols, n, w->cols, y, 0);
        return;
    }
    /* a block of rows at a time, dequantized into work (in L1: the rows of
     * all of W as float32 would go through L2, and on the way there cost
     * more than reading the weights), each output's chain carried on from
     * one block to the next: the bits of linear_combine_rows on W dequantized */
    int rb = combine_block_rows(w);
    for (int i = 0; i < n; i += rb) {
        int k = n - i < rb ? n - i : rb;
        linear_dequant_rows(path, w, r0 + i, k, work);
        combine_rows(path, a + i, work, k, w->cols, y, i > 0);
    }
}

/* linear_combine_many's work: W's rows in blocks of COMBINE_MANY_BLOCK (a
 * block of 64 columns stays in L2 while every tile of A's rows reads it), and
 * items of a tile of A's rows by a block of columns, split over the pool */
#define COMBINE_MANY_BLOCK 128
typedef struct combine_many_job {
    kernel_path path;
    const float *A, *W32;
    const uint16_t *W16;
    size_t lda, ldw, ldy;
    int R, n, cols;
    float *Y;
    int tile_rows, tile_cols, by_columns;
    int add;                    /* chains carried on from Y */
} combine_many_job;

static void combine_many_ref(const combine_many_job *j, int r0, int nr, int k0, int kn, int c0,
                             int c1)
{
    for (int r = r0; r < r0 + nr; r++) {
        const float *a = j->A + (size_t)r * j->lda + k0;
        float *y = j->Y + (size_t)r * j->ldy;
        for (int c = c0; k0 == 0 && !j->add && c < c1; c++)
            y[c] = 0;
        for (int i = 0; i < kn; i++) {
            size_t at = (size_t)(k0 + i) * j->ldw;
            for (int c = c0; c < c1; c++) {
                size_t k = at + (size_t)c;
                y[c] += a[i] * (j->W16 ? bf16_to_f32(j->W16[k]) : j->W32[k]);
            }
        }
    }
}

static void combine_many_worker(void *ctx, int worker, int n_workers)
{
    const combine_many_job *j = ctx;
    int tiles = (j->R + j->tile_rows - 1) / j->tile_rows;
    int blocks = (j->cols + j->tile_cols - 1) / j->tile_cols, i0, i1;
    pool_split(tiles * blocks, 1, worker, n_workers, &i0, &i1);
    for (int k0 = 0; k0 < j->n; k0 += COMBINE_MANY_BLOCK) {
        int kn = j->n - k0 < COMBINE_MANY_BLOCK ? j->n - k0 : COMBINE_MANY_BLOCK;
        const float *W32 = j->W32 ? j->W32 + (size_t)k0 * j->ldw : NULL;
        const uint16_t *W16 = j->W16 ? j->W16 + (size_t)k0 * j->ldw : NULL;
        for (int it = i0; it < i1; it++) {
            int tile = j->by_columns ? it % tiles : it / blocks;
            int block = j->by_columns ? it / tiles : it % blocks;
            int r0 = tile * j->tile_rows, c0 = block * j->tile_cols;
            int nr = j->R - r0 < j->tile_rows ? j->R - r0 : j->tile_rows;
            int c1 = j->cols - c0 < j->tile_cols ? j->cols : c0 + j->tile_cols;
            const float *A = j->A + (size_t)r0 * j->lda + k0;
            float *Y = j->Y + (size_t)r0 * j->ldy;
            int add = k0 > 0 || j->add;
            if (j->path == KPATH_AVX512)
                combine_many_avx512(A, j->lda, nr, W32, W16, j->ldw, kn, c0, c1, Y, j->ldy, add);
            else if (j->path == KPATH_AVX2)
                combine_many_avx2(A, j->lda, nr, W32, W16, j->ldw, kn, c0, c1, Y, j->ldy, add);
            else
                combine_many_ref(j, r0, nr, k0, kn, c0, c1);
        }
    }
}

void linear_combine_many(kernel_path path, thread_pool *pool, const float *A, size_t lda, int R,
                         const float *W32, const uint16_t *W16, size_t ldw, int n, int cols,
                         float *Y, size_t ldy, int add)
{
    combine_many_job j = {.path = path, .A = A, .W32 = W32, .W16 = W16, .lda = lda, .ldw = ldw,
                          .ldy = ldy, .R = R, .n = n, .cols = cols, .Y = Y, .add = add,
                          .tile_rows = path == KPATH_AVX512 ? 6 : 3,
                          .tile_cols = path == KPATH_AVX2 ? 32 : 64};
    for (int r = 0; n == 0 && !add && r < R; r++)
        memset(Y + (size_t)r * ldy, 0, (size_t)cols * sizeof *Y);
    if (R <= 0 || n <= 0 || cols <= 0)
        return;
    /* Split by columns, each worker reading its columns of W and all of A, or
     * by rows of A, each reading all of W: whichever reads fewer floats a row
     * of W (bits are the same either way) */
    long nw = pool ? thread_pool_size(pool) : 1;
    long tiles = (R + j.tile_rows - 1) / j.tile_rows;
    long blocks = (cols + j.tile_cols - 1) / j.tile_cols;
    long col_split = cols + (long)R * (blocks < nw ? blocks : nw);
    long row_split = (long)cols * (tiles < nw ? tiles : nw) + R;
    j.by_columns = col_split <= row_split;
    if (pool && nw > 1 && tiles * blocks > 1)
        thread_pool_run(pool, combine_many_worker, &j);
    else
        combine_many_worker(&j, 0, 1);
}

void linear_dequant_rows(kernel_path path, const linear_weight *w, int r0, int n, float *out)
{
    if (path == KPATH_AVX512 && linear_simd_ok(w)) {
        dequant_rows_avx512(w, r0, n, out);
        return;
    }
    if (path == KPATH_AVX2 && linear_simd_ok(w)) {
        dequant_rows_avx2(w, r0, n, out);
        return;
    }
    for (int r = r0; r < r0 + n; r++)
        linear_ref_dequant_row(w, r, out + (size_t)(r - r0) * (size_t)w->cols);
}
