/* Every SIMD kernel path against the scalar reference (linear_ref.c) on random
 * weights and activations: every weight format, odd shapes, partial FP8 blocks
 * at both edges, INT4 group sizes 32 and 64, 1..23 tokens (whole and partial
 * token tiles), 1..3 threads, and shapes the SIMD paths hand to the reference.
 * The bound is relative to sum |w x| of each output: only the order of float32
 * additions may differ. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/model/dtype.h"
#include "cpu_kernels/linear_kernels.h"
#include "cpu_kernels/linear_ref.h"
#include "random_weight.h"

static void check_case(kernel_path path, weight_format fmt, int rows, int cols, int blk, int gs,
                       int T, thread_pool *pool)
{
    random_weight o = random_weight_make(fmt, rows, cols, blk, gs);
    float *x = malloc((size_t)T * cols * sizeof *x);
    for (int i = 0; i < T * cols; i++)
        x[i] = random_unit();
    size_t ny = (size_t)T * rows;
    float *ref = malloc(ny * 4), *got = malloc(ny * 4), *bound = malloc(ny * 4);
    float *row = malloc((size_t)cols * 4);
    linear_ref_forward(&o.w, x, T, ref, row);
    random_weight_bounds(&o.w, x, T, bound);
    int nt = pool ? thread_pool_size(pool) : 1;
    float *scratch = malloc(linear_forward_scratch(&o.w, T, nt) * 4 + 4);
    for (size_t i = 0; i < ny; i++)
        got[i] = NAN;
    linear_forward(path, pool, &o.w, x, T, got, scratch);
    for (size_t i = 0; i < ny; i++) {
        float tol = 2e-6f * bound[i] + 1e-30f;
        if (!(fabsf(got[i] - ref[i]) <= tol))
            cr_assert_fail("%s %s %dx%d blk %d gs %d T %d threads %d: y[%zu] = %.9g, reference "
                           "%.9g (bound %.3g)", kernel_path_name(path), weight_format_name(fmt),
                           rows, cols, blk, gs, T, nt, i, got[i], ref[i], tol);
    }
    free(x);
    free(ref);
    free(got);
    free(bound);
    free(row);
    free(scratch);
    random_weight_free(&o);
}

Test(linear_kernels, every_path_matches_the_reference, .timeout = 300)
{
    thread_pool *pools[3] = {NULL, NULL, NULL};
    errbuf e;
    cr_assert_eq(thread_pool_create(&pools[1], 2, &e), 0, "%s", e.msg);
    cr_assert_eq(thread_pool_create(&pools[2], 3, &e), 0, "%s", e.msg);
    struct { weight_format fmt; int rows, cols, blk, gs; } shapes[] = {
        {WF_F32, 37, 61, 0, 0},       {WF_F32, 64, 256, 0, 0},
        {WF_BF16, 33, 7, 0, 0},       {WF_BF16, 65, 300, 0, 0},   {WF_BF16, 128, 512, 0, 0},
        {WF_F16, 19, 45, 0, 0},       {WF_F16, 64, 128, 0, 0},
        {WF_FP8_BLOCK, 130, 300, 128, 0}, {WF_FP8_BLOCK, 256, 256, 128, 0},
        {WF_FP8_BLOCK, 50, 70, 16, 0},    {WF_FP8_BLOCK, 40, 100, 24, 0},  /* 24: reference path */
        {WF_FP8_BLOCK, 70, 356, 128, 0},  /* a last block of a 64-chunk and a 36-column tail */
        {WF_INT4_GROUP, 45, 256, 0, 32},  {WF_INT4_GROUP, 64, 512, 0, 64},
        {WF_INT4_GROUP, 17, 96, 0, 32},   {WF_INT4_GROUP, 20, 100, 0, 20}, /* reference path */
        /* 128-column chunks then 32-blocks; groups of 128 and of 256 (half a group per chunk) */
        {WF_INT4_GROUP, 9, 352, 0, 32},   {WF_INT4_GROUP, 11, 384, 0, 128},
        {WF_INT4_GROUP, 7, 768, 0, 256},
        /* wide enough that 2-15 tokens' x is cut into column blocks: blocks end
         * inside the INT4 32-block tail, inside a partial FP8 block, and rows
         * run past one row block */
        {WF_INT4_GROUP, 37, 4192, 0, 32}, {WF_FP8_BLOCK, 130, 2600, 128, 0},
        {WF_BF16, 21, 3000, 0, 0},
    };
    int tokens[] = {1, 2, 3, 4, 5, 9, 16, 23, 30, 40, 57, 70};
    for (int p = 0; p < KPATH_COUNT; p++) {
        if (!kernel_path_supported((kernel_path)p)) {
            cr_log_info("%s kernels not supported here: not tested", kernel_path_name(p));
            continue;
        }
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
            for (size_t t = 0; t < sizeof tokens / sizeof *tokens; t++)
                check_case((kernel_path)p, shapes[s].fmt, shapes[s].rows, shapes[s].cols,
                           shapes[s].blk, shapes[s].gs, tokens[t], pools[(s + t) % 3]);
    }
    thread_pool_destroy(pools[1]);
    thread_pool_destroy(pools[2]);
}

/* y for T tokens on path `path` (malloc'd [T][rows]) */
static float *forward_tokens(kernel_path path, thread_pool *pool, const linear_weight *w,
                             const float *x, int T)
{
    int nt = pool ? thread_pool_size(pool) : 1;
    float *y = malloc((size_t)T * (size_t)w->rows * sizeof *y);
    float *scratch = malloc(linear_forward_scratch(w, T, nt) * 4 + 4);
    cr_assert(y && scratch);
    linear_forward(path, pool, w, x, T, y, scratch);
    free(scratch);
    return y;
}

/* A token's y has the same bits in a call of any size below
 * LINEAR_BATCHED_MIN_T tokens (whatever tile it lands in and whatever column
 * blocks its tile's size cuts the rows into): a server stepping several
 * conversations at once gives each one the bits of it stepped alone. Random
 * weights, formats and shapes, narrow and wider than a column block; each
 * token of a T-token call against itself alone. */
Test(linear_kernels, a_token_has_the_same_bits_in_calls_of_any_size, .timeout = 300)
{
    thread_pool *pool;
    errbuf e;
    cr_assert_eq(thread_pool_create(&pool, 2, &e), 0, "%s", e.msg);
    struct { weight_format fmt; int rows, cols, blk, gs; } shapes[] = {
        {WF_BF16, 21, 3000, 0, 0},        {WF_F32, 37, 61, 0, 0},     {WF_F16, 19, 2500, 0, 0},
        {WF_FP8_BLOCK, 130, 2600, 128, 0}, {WF_FP8_BLOCK, 70, 356, 128, 0},
        {WF_INT4_GROUP, 37, 4192, 0, 32},  {WF_INT4_GROUP, 9, 352, 0, 32},
        {WF_INT4_GROUP, 11, 7168, 0, 128},
    };
    srand(7);
    for (int p = 0; p < KPATH_COUNT; p++) {
        if (!kernel_path_supported((kernel_path)p))
            continue;
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            random_weight o = random_weight_make(shapes[s].fmt, shapes[s].rows, shapes[s].cols,
                                                 shapes[s].blk, shapes[s].gs);
            int rows = shapes[s].rows, cols = shapes[s].cols;
            int T = 2 + rand() % (LINEAR_BATCHED_MIN_T - 2);
            float *x = malloc((size_t)T * (size_t)cols * sizeof *x);
            cr_assert_not_null(x);
            for (int i = 0; i < T * cols; i++)
                x[i] = random_unit();
            float *all = forward_tokens((kernel_path)p, s % 2 ? pool : NULL, &o.w, x, T);
            for (int t = 0; t < T; t++) {
                float *one = forward_tokens((kernel_path)p, NULL, &o.w, x + (size_t)t * cols, 1);
                cr_expect(memcmp(one, all + (size_t)t * rows, (size_t)rows * sizeof *one) == 0,
                          "%s %s %dx%d: token %d of %d differs from it alone",
                          kernel_path_name(p), weight_format_name(shapes[s].fmt), rows, cols, t, T);
                free(one);
            }
            free(all);
            free(x);
            random_weight_free(&o);
        }
    }
    thread_pool_destroy(pool);
}

/* The AVX-512 FP8 kernel of CPUs without VBMI (byte tables turned off). */
Test(linear_kernels, avx512_fp8_without_byte_tables_matches_the_reference, .timeout = 120)
{
    if (!kernel_path_supported(KPATH_AVX512))
        cr_skip_test("this CPU cannot run the avx512 kernels");
    setenv("MOETIER_FP8_TABLES", "0", 1);
    cr_assert_not(kernel_fp8_lut_supported(), "MOETIER_FP8_TABLES=0 left the tables on");
    thread_pool *pool;
    errbuf e;
    cr_assert_eq(thread_pool_create(&pool, 2, &e), 0, "%s", e.msg);
    struct { int rows, cols, blk; } shapes[] = {
        {130, 300, 128}, {256, 256, 128}, {70, 356, 128}, {50, 70, 16}, {33, 448, 64},
        {130, 2600, 128},
    };
    int tokens[] = {1, 2, 3, 4, 5, 9, 16};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (size_t t = 0; t < sizeof tokens / sizeof *tokens; t++)
            check_case(KPATH_AVX512, WF_FP8_BLOCK, shapes[s].rows, shapes[s].cols, shapes[s].blk,
                       0, tokens[t], t % 2 ? pool : NULL);
    thread_pool_destroy(pool);
}

Test(linear_kernels, fp8_nan_codes_stay_nan)
{
    /* 148 columns: whole 32-chunks, then 16 per vector, then a scalar tail */
    for (int p = 0; p < KPATH_COUNT; p++) {
        if (!kernel_path_supported((kernel_path)p))
            continue;
        random_weight o = random_weight_make(WF_FP8_BLOCK, 5, 148, 128, 0);
        uint8_t *d = o.data;
        d[148 * 1 + 77] = 0x7f;     /* a whole chunk */
        d[148 * 3 + 130] = 0xff;    /* the vector part of the last block */
        d[148 * 4 + 146] = 0x7f;    /* the scalar tail */
        float x[2 * 148], y[2 * 5], scratch[4096];
        for (int i = 0; i < 2 * 148; i++)
            x[i] = random_unit();
        linear_forward((kernel_path)p, NULL, &o.w, x, 2, y, scratch);
        for (int t = 0; t < 2; t++)
            for (int r = 0; r < 5; r++)
                cr_expect(isnan(y[t * 5 + r]) == (r == 1 || r == 3 || r == 4),
                          "%s: token %d row %d is %g: NaN codes must give NaN rows, others finite",
                          kernel_path_name(p), t, r, y[t * 5 + r]);
        random_weight_free(&o);
    }
}

/* Activations far from 1 (each token its own magnitude, one token mixing huge
 * and tiny values, infinities) give the reference's results on every path: the
 * AVX2 FP8 kernel scales each token's x by a power of two of its own. At 7
 * tokens, 20 and 70 (the batched products, the tokens-in-lanes and GEMM
 * forms, and AMX's tiles, where an infinity once became NaN), the extreme
 * tokens repeated. */
Test(linear_kernels, extreme_activations_match_the_reference)
{
    struct { weight_format fmt; int rows, cols, blk, gs; } shapes[] = {
        {WF_FP8_BLOCK, 9, 300, 128, 0}, {WF_FP8_BLOCK, 9, 100, 16, 0},
        {WF_INT4_GROUP, 9, 352, 0, 32}, {WF_BF16, 9, 300, 0, 0}, {WF_F32, 9, 70, 0, 0},
    };
    const float mags[6] = {0x1p-100f, 0x1p-20f, 1.0f, 0x1p20f, 0x1p100f, 1.0f};
    const int token_counts[] = {7, 20, 70};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes * 3; s++) {
        int T = token_counts[s % 3];
        random_weight o = random_weight_make(shapes[s / 3].fmt, shapes[s / 3].rows, shapes[s / 3].cols,
                                             shapes[s / 3].blk, shapes[s / 3].gs);
        int cols = o.w.cols, rows = o.w.rows;
        float *x = malloc((size_t)T * cols * sizeof *x);
        for (int t = 0; t < T; t++)
            for (int c = 0; c < cols; c++)
                x[t * cols + c] = random_unit() * (t % 7 < 6 ? mags[t % 7] : 1.0f);
        for (int t = 0; t + 7 <= T; t += 7) {
            x[(t + 5) * cols + 3] = 0x1p110f;   /* token 5: one huge value among ordinary ones */
            x[(t + 5) * cols + 4] = 0x1p-110f;
            x[(t + 6) * cols + 7] = (t / 7) % 2 ? -INFINITY : INFINITY;   /* token 6: an infinity */
        }
        size_t ny = (size_t)T * rows;
        float *ref = malloc(ny * 4), *got = malloc(ny * 4), *bound = malloc(ny * 4);
        float *row = malloc((size_t)cols * 4);
        linear_ref_forward(&o.w, x, T, ref, row);
        random_weight_bounds(&o.w, x, T, bound);
        float *scratch = malloc(linear_forward_scratch(&o.w, T, 1) * 4);
        for (int p = 0; p < KPATH_COUNT; p++) {
            if (!kernel_path_supported((kernel_path)p))
                continue;
            linear_forward((kernel_path)p, NULL, &o.w, x, T, got, scratch);
            for (size_t i = 0; i < ny; i++) {
                int same = isnan(ref[i]) ? isnan(got[i])
                           : isinf(ref[i]) ? got[i] == ref[i]
                                           : fabsf(got[i] - ref[i]) <= 2e-6f * bound[i];
                cr_expect(same, "%s %s, %d tokens: token %zu row %zu is %.9g, reference %.9g",
                          kernel_path_name(p), weight_format_name(shapes[s / 3].fmt), T, i / rows,
                          i % rows, got[i], ref[i]);
            }
        }
        free(x);
        free(ref);
        free(got);
        free(bound);
        free(row);
        free(scratch);
        random_weight_free(&o);
    }
}

/* The row kernels read x from a cache-line boundary whatever the caller passes
 * (a straddling load costs two), and the result does not depend on it. */
Test(linear_kernels, prepared_x_is_line_aligned_and_results_do_not_depend_on_it)
{
    struct { weight_format fmt; int blk, gs; } fmts[] = {
        {WF_F32, 0, 0}, {WF_BF16, 0, 0}, {WF_F16, 0, 0}, {WF_FP8_BLOCK, 128, 0},
        {WF_INT4_GROUP, 0, 32},
    };
    int rows = 24, cols = 384, T = 2;
    for (int p = 0; p < KPATH_COUNT; p++) {
        if (!kernel_path_supported((kernel_path)p) || p == KPATH_SCALAR)
            continue;
        for (size_t f = 0; f < sizeof fmts / sizeof *fmts; f++) {
            random_weight o = random_weight_make(fmts[f].fmt, rows, cols, fmts[f].blk, fmts[f].gs);
            size_t ns = linear_forward_scratch(&o.w, T, 1);
            float *xbuf = aligned_alloc(64, (size_t)(T * cols + 64) * 4);
            float *sbuf = aligned_alloc(64, (ns + 64 + 15) / 16 * 64);  /* whole lines */
            float y0[48], y[48];
            for (int off = 0; off < 16; off += 3) {
                float *x = xbuf + off, *scratch = sbuf + (15 - off);
                for (int i = 0; i < T * cols; i++)
                    x[i] = (float)((i * 37) % 101 - 50) / 50.0f;
                linear_prep prep;
                linear_prepare((kernel_path)p, &o.w, x, T, scratch, &prep);
                const float *read = prep.x_perm ? prep.x_perm : prep.x;
                cr_expect((uintptr_t)read % 64 == 0, "%s %s: x read at %p, not on a cache line",
                          kernel_path_name(p), weight_format_name(fmts[f].fmt), (const void *)read);
                linear_forward((kernel_path)p, NULL, &o.w, x, T, off ? y : y0, scratch);
                if (off)
                    cr_expect(memcmp(y, y0, sizeof y) == 0, "%s %s: offset %d changed the result",
                              kernel_path_name(p), weight_format_name(fmts[f].fmt), off);
            }
            free(xbuf);
            free(sbuf);
            random_weight_free(&o);
        }
    }
}

/* A view of some rows (linear_weight_rows) computes what those rows of the
 * whole weight do, to the bit, in every format and on every path; FP8 rows
 * that do not start a scale block are refused. */
Test(linear_kernels, a_view_of_rows_computes_those_rows)
{
    struct { weight_format fmt; int rows, cols, blk, gs, r0, n; } cases[] = {
        {WF_BF16, 40, 300, 0, 0, 13, 9},          {WF_F32, 37, 61, 0, 0, 5, 30},
        {WF_F16, 19, 250, 0, 0, 1, 18},           {WF_FP8_BLOCK, 300, 256, 128, 0, 128, 130},
        {WF_INT4_GROUP, 37, 512, 0, 32, 11, 20},  {WF_INT4_GROUP, 9, 7168, 0, 128, 4, 5},
    };
    srand(11);
    for (int p = 0; p < KPATH_COUNT; p++) {
        if (!kernel_path_supported((kernel_path)p))
            continue;
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            random_weight o = random_weight_make(cases[i].fmt, cases[i].rows, cases[i].cols,
                                                 cases[i].blk, cases[i].gs);
            int cols = cases[i].cols, rows = cases[i].rows, r0 = cases[i].r0, n = cases[i].n, T = 3;
            linear_weight v;
            cr_assert(linear_weight_rows(&o.w, r0, n, &v), "%s", weight_format_name(cases[i].fmt));
            float *x = malloc((size_t)T * (size_t)cols * sizeof *x);
            cr_assert_not_null(x);
            for (int k = 0; k < T * cols; k++)
                x[k] = random_unit();
            float *all = forward_tokens((kernel_path)p, NULL, &o.w, x, T),
                  *part = forward_tokens((kernel_path)p, NULL, &v, x, T);
            for (int t = 0; t < T; t++)
                cr_expect(memcmp(part + (size_t)t * (size_t)n, all + (size_t)t * (size_t)rows + r0,
                                 (size_t)n * sizeof *part) == 0,
                          "%s %s: rows %d..%d of token %d differ", kernel_path_name(p),
                          weight_format_name(cases[i].fmt), r0, r0 + n, t);
            if (cases[i].fmt == WF_FP8_BLOCK)
                cr_expect(!linear_weight_rows(&o.w, 64, 10, &v), "FP8 rows inside a scale block");
            free(all);
            free(part);
            free(x);
            random_weight_free(&o);
        }
    }
}

/* linear_combine_rows (W^T a) on every path against the scalar reference:
 * widths with and without tails of each path's blocks (128 and 16; 64 and 8). */
Test(linear_kernels, combine_rows_matches_the_reference)
{
    const int shapes[][2] = {{128, 512}, {1, 16}, {7, 1}, {33, 200}, {5, 143}, {64, 8}};
    srand(12);
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        int n = shapes[i][0], cols = shapes[i][1];
        float *a = malloc((size_t)n * sizeof *a), *W = malloc((size_t)n * (size_t)cols * sizeof *W);
        float *want = malloc((size_t)cols * sizeof *want), *got = malloc((size_t)cols * sizeof *got);
        cr_assert(a && W && want && got);
        for (int k = 0; k < n; k++)
            a[k] = random_unit();
        for (int k = 0; k < n * cols; k++)
            W[k] = random_unit();
        linear_combine_rows(KPATH_SCALAR, a, W, n, cols, want);
        for (int c = 0; c < cols; c++) {
            double exact = 0, bound = 0;
            for (int k = 0; k < n; k++) {
                exact += (double)a[k] * W[(size_t)k * (size_t)cols + (size_t)c];
                bound += fabs((double)a[k] * W[(size_t)k * (size_t)cols + (size_t)c]);
            }
            cr_assert(fabs(want[c] - exact) <= 1e-6 * bound + 1e-30, "reference, column %d", c);
        }
        for (int p = 1; p < KPATH_COUNT; p++) {
            if (!kernel_path_supported((kernel_path)p))
                continue;
            memset(got, 0xff, (size_t)cols * sizeof *got);
            linear_combine_rows((kernel_path)p, a, W, n, cols, got);
            for (int c = 0; c < cols; c++) {
                double bound = 0;
                for (int k = 0; k < n; k++)
                    bound += fabs((double)a[k] * W[(size_t)k * (size_t)cols + (size_t)c]);
                cr_expect(fabs((double)got[c] - want[c]) <= 2e-6 * bound + 1e-30,
                          "%s, %d rows x %d: column %d %g vs %g", kernel_path_name(p), n, cols, c,
                          got[c], want[c]);
            }
        }
        free(a);
        free(W);
        free(want);
        free(got);
    }
}

/* linear_combine_many: each row of its result has the bits of
 * linear_combine_rows of that row of A over W's rows as float32, on every path,
 * alone or on a pool of 3 (split by columns for a few rows of A, by rows for
 * many), with W float32 or bf16 and every leading dimension wider than its
 * rows; row counts with and without partial tiles, widths with and without
 * partial column blocks and vector tails, rows of W in one block of 128 and in
 * several, and none (zeros); in one call, or in two whose second carries the
 * chains on from the first's outputs. The outputs past each row's columns
 * are kept. */
Test(linear_kernels, combine_many_has_the_bits_of_each_row_combined)
{
    const int shapes[][3] = {   /* R, n, cols */
        {64, 300, 512}, {1, 1, 1}, {7, 129, 70}, {13, 128, 13}, {200, 40, 96}, {5, 0, 20},
        {6, 257, 64}, {3, 17, 100},
    };
    thread_pool *pool;
    errbuf e;
    cr_assert_eq(thread_pool_create(&pool, 3, &e), 0, "%s", e.msg);
    srand(14);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int bf16 = 0; bf16 < 2; bf16++) {
            int R = shapes[s][0], n = shapes[s][1], cols = shapes[s][2];
            size_t lda = (size_t)n + 3, ldw = (size_t)cols + 5, ldy = (size_t)cols + 2;
            float *A = malloc((size_t)R * lda * sizeof *A + 4);
            float *W32 = malloc((size_t)n * ldw * 4 + 4);
            uint16_t *W16 = malloc((size_t)n * ldw * 2 + 2);
            float *W = malloc((size_t)n * (size_t)cols * 4 + 4), *want = malloc((size_t)cols * 4);
            float *got = malloc((size_t)R * ldy * 4);
            cr_assert(A && W32 && W16 && W && want && got);
            for (size_t i = 0; i < (size_t)R * lda; i++)
                A[i] = random_unit();
            for (size_t i = 0; i < (size_t)n * ldw; i++) {
                W16[i] = f32_to_bf16(random_unit());
                W32[i] = bf16 ? bf16_to_f32(W16[i]) : random_unit();
            }
            for (int i = 0; i < n; i++)
                memcpy(W + (size_t)i * (size_t)cols, W32 + (size_t)i * ldw, (size_t)cols * 4);
            for (int p = 0; p < KPATH_COUNT; p++)
                for (int threads = 1, split = 0; threads <= 3; threads += 2 * split, split = !split) {
                    if (!kernel_path_supported((kernel_path)p))
                        continue;
                    memset(got, 0xff, (size_t)R * ldy * 4);
                    const float *w32 = bf16 ? NULL : W32;
                    const uint16_t *w16 = bf16 ? W16 : NULL;
                    /* in two calls, the second carrying on (add) from the
                     * first's outputs at an odd row of W, or in one */
                    int n1 = split ? n / 3 | 1 : n;
                    n1 = n1 > n ? n : n1;
                    thread_pool *tp = threads > 1 ? pool : NULL;
                    linear_combine_many((kernel_path)p, tp, A, lda, R, w32, w16, ldw, n1, cols,
                                        got, ldy, 0);
                    if (split)
                        linear_combine_many((kernel_path)p, tp, A + n1, lda, R,
                                            w32 ? w32 + (size_t)n1 * ldw : NULL,
                                            w16 ? w16 + (size_t)n1 * ldw : NULL, ldw, n - n1, cols,
                                            got, ldy, 1);
                    for (int r = 0; r < R; r++) {
                        linear_combine_rows((kernel_path)p, A + (size_t)r * lda, W, n, cols, want);
                        const float *y = got + (size_t)r * ldy;
                        cr_assert(memcmp(want, y, (size_t)cols * 4) == 0,
                                  "%s, %d thread(s), %s W, %d rows of A, %d of W (%d first), %d "
                                  "columns: row %d differs from it combined alone",
                                  kernel_path_name(p), threads, bf16 ? "bf16" : "f32", R, n, n1,
                                  cols, r);
                        uint32_t past;
                        memcpy(&past, y + cols, 4);
                        cr_assert_eq(past, 0xffffffffu, "row %d: written past its columns", r);
                    }
                }
            free(A);
            free(W32);
            free(W16);
            free(W);
            free(want);
            free(got);
        }
    thread_pool_destroy(pool);
}

/* linear_combine_weight over rows of a weight in every format: on every path
 * the bits of linear_combine_rows on those rows dequantized (so a decode
 * query, combined block by block, has the bits of the same query among
 * several, combined over W_k dequantized once), over more rows than one
 * block takes and fewer. */
Test(linear_kernels, combine_weight_has_the_bits_of_the_rows_dequantized)
{
    struct { weight_format fmt; int rows, cols, blk, gs, r0, n; } shapes[] = {
        {WF_BF16, 40, 512, 0, 0, 3, 37}, {WF_F16, 9, 45, 0, 0, 1, 8}, {WF_F32, 20, 33, 0, 0, 2, 18},
        {WF_FP8_BLOCK, 384, 512, 128, 0, 128, 128}, {WF_FP8_BLOCK, 260, 300, 128, 0, 128, 100},
        {WF_INT4_GROUP, 30, 256, 0, 32, 0, 30}, {WF_INT4_GROUP, 12, 128, 0, 64, 4, 8},
        {WF_BF16, 3, 9000, 0, 0, 0, 3},
    };
    srand(5);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        random_weight o = random_weight_make(shapes[s].fmt, shapes[s].rows, shapes[s].cols, shapes[s].blk,
                                             shapes[s].gs);
        int n = shapes[s].n, cols = o.w.cols;
        float *a = malloc((size_t)n * sizeof *a), *W = malloc((size_t)n * (size_t)cols * sizeof *W);
        float *want = malloc((size_t)cols * sizeof *want), *got = malloc((size_t)cols * sizeof *got);
        float *work = malloc((linear_combine_work(&o.w) + 1) * sizeof *work);
        cr_assert(a && W && want && got && work);
        for (int k = 0; k < n; k++)
            a[k] = random_unit();
        for (int p = 0; p < KPATH_COUNT; p++) {
            if (!kernel_path_supported((kernel_path)p))
                continue;
            linear_dequant_rows((kernel_path)p, &o.w, shapes[s].r0, n, W);
            linear_combine_rows((kernel_path)p, a, W, n, cols, want);
            memset(got, 0xff, (size_t)cols * sizeof *got);
            linear_combine_weight((kernel_path)p, a, &o.w, shapes[s].r0, n, got, work);
            cr_expect(memcmp(want, got, (size_t)cols * sizeof *got) == 0, "%s %s, %d rows x %d",
                      kernel_path_name(p), weight_format_name(o.w.fmt), n, cols);
        }
        free(a);
        free(W);
        free(want);
        free(got);
        free(work);
        random_weight_free(&o);
    }
}

Test(linear_kernels, pool_split_covers_every_row_once)
{
    for (int n = 0; n < 50; n++)
        for (int workers = 1; workers <= 5; workers++)
            for (int align = 1; align <= 8; align *= 2) {
                int covered = 0, prev_end = 0;
                for (int w = 0; w < workers; w++) {
                    int b, en;
                    pool_split(n, align, w, workers, &b, &en);
                    cr_assert(b == prev_end || b >= en, "gap or overlap at worker %d", w);
                    if (en > b) {
                        covered += en - b;
                        prev_end = en;
                    }
                }
                cr_assert_eq(covered, n, "n %d workers %d align %d", n, workers, align);
            }
}

Test(linear_kernels, dequant_rows_match_the_reference_exactly)
{
    struct { weight_format fmt; int rows, cols, blk, gs; } shapes[] = {
        {WF_BF16, 9, 45, 0, 0}, {WF_F32, 5, 33, 0, 0}, {WF_F16, 4, 20, 0, 0},
        {WF_FP8_BLOCK, 260, 300, 128, 0}, {WF_INT4_GROUP, 12, 128, 0, 32},
        {WF_INT4_GROUP, 6, 192, 0, 64},
        {WF_FP8_BLOCK, 512, 1024, 128, 0},  /* more scales, some too large to fold */
    };
    for (int p = 0; p < KPATH_COUNT; p++) {
        if (!kernel_path_supported((kernel_path)p))
            continue;
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            random_weight o = random_weight_make(shapes[s].fmt, shapes[s].rows, shapes[s].cols, shapes[s].blk,
                                  shapes[s].gs);
            int r0 = shapes[s].fmt == WF_FP8_BLOCK ? 128 : 2, n = shapes[s].rows - r0;
            float *got = malloc((size_t)n * o.w.cols * 4), *want = malloc((size_t)o.w.cols * 4);
            linear_dequant_rows((kernel_path)p, &o.w, r0, n, got);
            for (int r = 0; r < n; r++) {
                linear_ref_dequant_row(&o.w, r0 + r, want);
                for (int c = 0; c < o.w.cols; c++) {
                    cr_assert(got[(size_t)r * o.w.cols + c] == want[c] ||
                                  (isnan(want[c]) && isnan(got[(size_t)r * o.w.cols + c])),
                              "%s %s row %d col %d: %g vs %g", kernel_path_name(p),
                              weight_format_name(o.w.fmt), r0 + r, c,
                              got[(size_t)r * o.w.cols + c], want[c]);
                }
            }
            free(got);
            free(want);
            random_weight_free(&o);
        }
    }
}

/* y of the batched product on `path` for T tokens, tokens in the lanes
 * (linear_prepare's choice up to LINEAR_LANES_MAX_T) or rows in the lanes */
static float *batched_product(kernel_path path, const linear_weight *w, const float *x, int T,
                              int lanes)
{
    float *y = malloc((size_t)T * (size_t)w->rows * sizeof *y);
    float *scratch = malloc(linear_forward_scratch(w, T, 1) * 4 + 4);
    cr_assert(y && scratch);
    linear_prep p;
    linear_prepare(path, w, x, T, scratch, &p);
    cr_assert(p.batched, "T %d: not batched", T);
    cr_assert_eq(p.x_lanes != NULL, T <= LINEAR_LANES_MAX_T, "T %d: lanes %d", T,
                 p.x_lanes != NULL);
    if (!lanes)
        p.x_lanes = NULL;
    float *work = scratch + linear_prep_scratch(w, T);
    if (path == KPATH_AVX512)
        linear_rows_avx512(w, &p, y, 0, w->rows, work);
    else
        linear_rows_avx2(w, &p, y, 0, w->rows, work);
    free(scratch);
    return y;
}

/* The two batched products of each SIMD path (tokens in the lanes, rows in
 * the lanes) give the same bits for every format, group and block shape,
 * partial panels and partial groups of tokens: which one a call takes
 * changes nothing. */
Test(linear_kernels, batched_products_with_tokens_or_rows_in_lanes_agree_bitwise, .timeout = 120)
{
    /* T: tokens, else a random count */
    struct { weight_format fmt; int rows, cols, blk, gs, T; } shapes[] = {
        {WF_BF16, 65, 300, 0, 0, 0},          {WF_F32, 37, 61, 0, 0, 0},
        {WF_F16, 50, 130, 0, 0, 0},
        /* whole panels of float32 rows read in place (on AVX-512 with groups
         * of 16 tokens in fours) */
        {WF_F32, 130, 200, 0, 0, 64},         {WF_F32, 100, 130, 0, 0, 50},
        {WF_FP8_BLOCK, 130, 356, 128, 0, 0},  {WF_FP8_BLOCK, 50, 70, 16, 0, 0},
        {WF_INT4_GROUP, 97, 4192, 0, 32, 0},  {WF_INT4_GROUP, 11, 384, 0, 128, 0},
        {WF_INT4_GROUP, 49, 512, 0, 64, 0},
    };
    kernel_path paths[] = {KPATH_AVX2, KPATH_AVX512};
    int ran = 0;
    srand(11);
    kernel_amx_disable(1);  /* the FMA products; AMX takes neither form */
    for (int pi = 0; pi < 2; pi++) {
        if (!kernel_path_supported(paths[pi]))
            continue;
        ran++;
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            random_weight o = random_weight_make(shapes[s].fmt, shapes[s].rows, shapes[s].cols,
                                                 shapes[s].blk, shapes[s].gs);
            /* from the fewest tokens the path batches to the most it keeps in lanes */
            int T0 = LINEAR_BATCHED_MIN_T;
            while (!linear_batched(paths[pi], &o.w, T0))
                T0++;
            int T = shapes[s].T ? shapes[s].T : T0 + rand() % (LINEAR_LANES_MAX_T - T0 + 1);
            float *x = malloc((size_t)T * (size_t)shapes[s].cols * sizeof *x);
            cr_assert_not_null(x);
            for (int i = 0; i < T * shapes[s].cols; i++)
                x[i] = random_unit();
            float *a = batched_product(paths[pi], &o.w, x, T, 1);
            float *b = batched_product(paths[pi], &o.w, x, T, 0);
            size_t n = (size_t)T * (size_t)shapes[s].rows;
            cr_expect(memcmp(a, b, n * sizeof *a) == 0, "%s %s %dx%d T %d: the products differ",
                      kernel_path_name(paths[pi]), weight_format_name(shapes[s].fmt),
                      shapes[s].rows, shapes[s].cols, T);
            free(a);
            free(b);
            free(x);
            random_weight_free(&o);
        }
    }
    if (!ran)
        cr_skip_test("this CPU runs neither SIMD path");
}

/* FP8 subnormal codes (exponent 0: m * 2^-9) on every path: a row of only
 * subnormal codes, a row of small normal codes with one subnormal code in
 * every 64 columns, a row of both mixed at random; x small integers times
 * 2^-2 and the scales powers of two, so every product and every sum is exact
 * and each path must give the reference's value to the bit, at 1 to 4 tokens
 * (the row kernels) and 20 and 40 (the batched products: AVX2 batches FP8 from
 * 32 tokens; on a CPU with AMX, with AMX and without it, as its tiles take
 * them first). */
static void fp8_subnormals_exact(void)
{
    enum { ROWS = 3, COLS = 384, BLK = 128 };
    random_weight o = random_weight_make(WF_FP8_BLOCK, ROWS, COLS, BLK, 0);
    uint8_t *d = o.data;
    for (int c = 0; c < COLS; c++) {
        uint8_t sign = (uint8_t)(random_u32() & 0x80), m = (uint8_t)(random_u32() % 7 + 1);
        uint8_t normal = (uint8_t)(sign | (uint8_t)((random_u32() % 4 + 1) << 3) | (random_u32() & 7));
        d[c] = sign | m;                                        /* all subnormal */
        d[COLS + c] = c % 64 == 17 ? (uint8_t)(sign | m) : normal; /* one in each chunk */
        d[2 * COLS + c] = random_u32() % 3 ? normal : (uint8_t)(sign | m);
    }
    float *s = o.scale;
    for (int i = 0; i < COLS / BLK; i++)
        s[i] = i % 2 ? 0.5f : 4.0f;
    enum { TMAX = 40 };
    float x[TMAX * COLS], ref[TMAX * ROWS], row[COLS], got[TMAX * ROWS];
    for (int i = 0; i < TMAX * COLS; i++)
        x[i] = (float)((int)(random_u32() % 7) - 3) * 0.25f;
    int tokens[] = {1, 2, 3, 4, 20, 40};
    int amx = kernel_amx_enabled();
    for (int p = 0; p < KPATH_COUNT * 2; p++) {
        if (!kernel_path_supported((kernel_path)(p / 2)) || (p % 2 && !amx))
            continue;
        kernel_amx_disable(p % 2);
        for (size_t k = 0; k < sizeof tokens / sizeof *tokens; k++) {
            int T = tokens[k];
            linear_ref_forward(&o.w, x, T, ref, row);
            float *scratch = malloc(linear_forward_scratch(&o.w, T, 1) * 4 + 4);
            cr_assert_not_null(scratch);
            linear_forward((kernel_path)(p / 2), NULL, &o.w, x, T, got, scratch);
            free(scratch);
            for (int i = 0; i < T * ROWS; i++)
                cr_expect(got[i] == ref[i], "%s%s%s, %d tokens: y[%d] = %.9g, exactly %.9g",
                          kernel_path_name(p / 2), kernel_fp8_lut_supported() ? "" : " without byte tables",
                          p % 2 ? " without AMX" : "", T, i, got[i], ref[i]);
        }
    }
    kernel_amx_disable(0);
    random_weight_free(&o);
}

Test(linear_kernels, fp8_subnormal_codes_are_exact) { fp8_subnormals_exact(); }

Test(linear_kernels, fp8_subnormal_codes_are_exact_without_byte_tables)
{
    setenv("MOETIER_FP8_TABLES", "0", 1);
    cr_assert_not(kernel_fp8_lut_supported(), "MOETIER_FP8_TABLES=0 left the tables on");
    fp8_subnormals_exact();
}
