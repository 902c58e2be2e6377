/* The AMX batched product (linear_amx.c) against the scalar reference, on
 * CPUs with AMX-BF16 (skipped elsewhere, with a message): every format it
 * takes, scale spans cut by chunks and partial FP8 blocks, partial panels and
 * row blocks, token counts across block pairs and passes, 1..3 threads; every
 * bit of x kept (a product against one column); a token's bits the same in
 * calls of any size; MOETIER_AMX=0. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/model/dtype.h"
#include "cpu_kernels/linear_kernels.h"
#include "cpu_kernels/linear_ref.h"
#include "random_weight.h"

static void need_amx(void)
{
    if (!kernel_amx_supported())
        cr_skip_test("this CPU has no AMX-BF16 (or the kernel grants no tile state): the AMX "
                     "product is not tested here");
}

/* y of linear_forward on AVX-512 (malloc'd [T][rows]); asserts whether AMX ran */
static float *amx_forward(const linear_weight *w, const float *x, int T, thread_pool *pool, int expect_amx)
{
    int nt = pool ? thread_pool_size(pool) : 1;
    float *y = malloc((size_t)T * (size_t)w->rows * sizeof *y);
    float *scratch = malloc(linear_forward_scratch(w, T, nt) * 4 + 4);
    cr_assert(y && scratch);
    linear_prep p;
    linear_prepare(KPATH_AVX512, w, x, T, scratch, &p);
    cr_assert_eq(p.x_amx != NULL, expect_amx, "%s %dx%d T %d: AMX %s", weight_format_name(w->fmt), w->rows,
                 w->cols, T, expect_amx ? "did not run" : "ran");
    for (size_t i = 0; i < (size_t)T * (size_t)w->rows; i++)
        y[i] = NAN;
    linear_forward(KPATH_AVX512, pool, w, x, T, y, scratch);
    free(scratch);
    return y;
}

Test(linear_amx, matches_the_reference, .timeout = 300)
{
    need_amx();
    thread_pool *pools[3] = {NULL, NULL, NULL};
    errbuf e;
    cr_assert_eq(thread_pool_create(&pools[1], 2, &e), 0, "%s", e.msg);
    cr_assert_eq(thread_pool_create(&pools[2], 3, &e), 0, "%s", e.msg);
    struct {
        weight_format fmt;
        int rows, cols, blk, gs;
    } shapes[] = {
        {WF_BF16, 33, 320, 0, 0},
        {WF_BF16, 97, 800, 0, 0},         /* a chunk of 512 columns, then 288 */
        {WF_BF16, 300, 96, 0, 0},         /* two row blocks, the second short */
        {WF_FP8_BLOCK, 130, 352, 128, 0}, /* a partial last block each way */
        {WF_FP8_BLOCK, 70, 1184, 128, 0}, /* a block across the chunks' edge */
        {WF_FP8_BLOCK, 40, 192, 32, 0},
        {WF_FP8_BLOCK, 50, 288, 96, 0},
        {WF_INT4_GROUP, 45, 256, 0, 32},
        {WF_INT4_GROUP, 64, 544, 0, 64},
        {WF_INT4_GROUP, 11, 384, 0, 128},
        {WF_INT4_GROUP, 7, 1280, 0, 256}, /* a group across the chunks' edge */
        {WF_INT4_GROUP, 37, 4192, 0, 32},
    };
    int tokens[] = {16, 17, 31, 32, 33, 48, 100, 257, 300};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (size_t t = 0; t < sizeof tokens / sizeof *tokens; t++) {
            int rows = shapes[s].rows, cols = shapes[s].cols, T = tokens[t];
            random_weight o = random_weight_make(shapes[s].fmt, rows, cols, shapes[s].blk, shapes[s].gs);
            float *x = malloc((size_t)T * cols * sizeof *x);
            size_t ny = (size_t)T * rows;
            float *ref = malloc(ny * 4), *bound = malloc(ny * 4), *row = malloc((size_t)cols * 4);
            cr_assert(x && ref && bound && row);
            for (int i = 0; i < T * cols; i++)
                x[i] = random_unit();
            linear_ref_forward(&o.w, x, T, ref, row);
            random_weight_bounds(&o.w, x, T, bound);
            thread_pool *pool = pools[(s + t) % 3];
            float *got = amx_forward(&o.w, x, T, pool, 1);
            for (size_t i = 0; i < ny; i++) {
                float tol = 2e-6f * bound[i] + 1e-30f;
                if (!(fabsf(got[i] - ref[i]) <= tol))
                    cr_assert_fail("%s %dx%d blk %d gs %d T %d threads %d: y[%zu] = %.9g, reference %.9g "
                                   "(bound %.3g)",
                                   weight_format_name(shapes[s].fmt), rows, cols, shapes[s].blk, shapes[s].gs,
                                   T, pool ? thread_pool_size(pool) : 1, i, got[i], ref[i], tol);
            }
            free(got);
            free(x);
            free(ref);
            free(bound);
            free(row);
            random_weight_free(&o);
        }
    thread_pool_destroy(pools[1]);
    thread_pool_destroy(pools[2]);
}

/* x nonzero in one column: each output is one product, w x, which the three
 * bf16 parts of x must carry whole. Two parts would lose x's last 8 bits (an
 * error of 2^-16 relative, far beyond the bound); the tile's two roundings
 * of partial sums cost at most a few units in the last place. Magnitudes
 * from 1e-20 to 1e20. */
Test(linear_amx, keeps_every_bit_of_x, .timeout = 60)
{
    need_amx();
    weight_format fmts[] = {WF_BF16, WF_FP8_BLOCK, WF_INT4_GROUP};
    const int rows = 40, cols = 256, T = 32;
    for (size_t f = 0; f < 3; f++) {
        random_weight o = random_weight_make(fmts[f], rows, cols, 128, 32);
        float *x = calloc((size_t)T * cols, sizeof *x), *row = malloc((size_t)cols * 4);
        float *ref = malloc((size_t)T * rows * 4);
        cr_assert(x && row && ref);
        for (int t = 0; t < T; t++) {
            /* a full 24-bit significand, scaled */
            float v = (float)(0x800000 | (random_u32() & 0x7fffff)) * 0x1p-23f;
            x[(size_t)t * cols + (size_t)(t * 7 % cols)] =
                v * powf(10.0f, (float)(t % 41 - 20)) * (t % 2 ? -1 : 1);
        }
        linear_ref_forward(&o.w, x, T, ref, row);
        float *got = amx_forward(&o.w, x, T, NULL, 1);
        for (size_t i = 0; i < (size_t)T * rows; i++)
            cr_assert(fabsf(got[i] - ref[i]) <= 0x1p-21f * fabsf(ref[i]) || got[i] == ref[i],
                      "%s y[%zu] = %.9g, reference %.9g: x lost bits", weight_format_name(fmts[f]), i, got[i],
                      ref[i]);
        free(got);
        free(x);
        free(row);
        free(ref);
        random_weight_free(&o);
    }
}

/* A token's result has the same bits in every call of 16 tokens or more,
 * wherever it sits in the call and however threads split the rows: calls of
 * 16, 45 and 300 tokens (two passes) on 1 and 3 threads, the same tokens in
 * other places. */
Test(linear_amx, a_token_has_the_same_bits_in_calls_of_any_size, .timeout = 120)
{
    need_amx();
    thread_pool *pool;
    errbuf e;
    cr_assert_eq(thread_pool_create(&pool, 3, &e), 0, "%s", e.msg);
    struct {
        weight_format fmt;
        int rows, cols, blk, gs;
    } shapes[] = {
        {WF_BF16, 70, 800, 0, 0},
        {WF_FP8_BLOCK, 130, 352, 128, 0},
        {WF_INT4_GROUP, 300, 1280, 0, 32},
    };
    int counts[] = {16, 45, 300};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int rows = shapes[s].rows, cols = shapes[s].cols;
        random_weight o = random_weight_make(shapes[s].fmt, rows, cols, shapes[s].blk, shapes[s].gs);
        float *tok = malloc((size_t)16 * cols * sizeof *tok);
        for (int i = 0; i < 16 * cols; i++)
            tok[i] = random_unit();
        float *alone = amx_forward(&o.w, tok, 16, NULL, 1);
        for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
            int T = counts[c];
            float *x = malloc((size_t)T * cols * sizeof *x);
            for (int i = 0; i < T * cols; i++)
                x[i] = random_unit();
            /* the 16 tokens at the end, in reverse */
            for (int k = 0; k < 16; k++)
                memcpy(x + (size_t)(T - 1 - k) * cols, tok + (size_t)k * cols, (size_t)cols * sizeof *x);
            for (int threads = 0; threads < 2; threads++) {
                float *y = amx_forward(&o.w, x, T, threads ? pool : NULL, 1);
                for (int k = 0; k < 16; k++)
                    cr_assert(memcmp(y + (size_t)(T - 1 - k) * rows, alone + (size_t)k * rows,
                                     (size_t)rows * sizeof *y) == 0,
                              "%s: token %d of a %d-token call (%s) has other bits than in a call of 16",
                              weight_format_name(shapes[s].fmt), T - 1 - k, T,
                              threads ? "3 threads" : "1 thread");
                free(y);
            }
            free(x);
        }
        free(alone);
        free(tok);
        random_weight_free(&o);
    }
    thread_pool_destroy(pool);
}

/* Formats and shapes AMX does not take go to the FMA product, and fewer than
 * LINEAR_BATCHED_MIN_T tokens to the token tiles; kernel_amx_disable turns it
 * off and on. */
Test(linear_amx, takes_only_what_it_computes_exactly)
{
    need_amx();
    struct {
        weight_format fmt;
        int rows, cols, blk, gs;
        int amx;
    } shapes[] = {
        {WF_F32, 20, 64, 0, 0, 0},        {WF_F16, 20, 64, 0, 0, 0},
        {WF_BF16, 20, 100, 0, 0, 0},      /* columns not in 32s */
        {WF_FP8_BLOCK, 20, 64, 16, 0, 0}, /* blocks of 16 columns */
        {WF_BF16, 20, 64, 0, 0, 1},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        random_weight o =
            random_weight_make(shapes[s].fmt, shapes[s].rows, shapes[s].cols, shapes[s].blk, shapes[s].gs);
        cr_assert_eq(linear_amx_ok(&o.w), shapes[s].amx, "%s %d columns", weight_format_name(shapes[s].fmt),
                     shapes[s].cols);
        float *x = calloc((size_t)20 * shapes[s].cols, sizeof *x);
        free(amx_forward(&o.w, x, 20, NULL, shapes[s].amx));
        if (shapes[s].amx) {
            free(amx_forward(&o.w, x, LINEAR_BATCHED_MIN_T - 1, NULL, 0));
            kernel_amx_disable(1);
            cr_assert_not(kernel_amx_enabled());
            free(amx_forward(&o.w, x, 20, NULL, 0));
            kernel_amx_disable(0);
            free(amx_forward(&o.w, x, 20, NULL, 1));
        }
        free(x);
        random_weight_free(&o);
    }
}

Test(linear_amx, moetier_amx_0_turns_it_off)
{
    setenv("MOETIER_AMX", "0", 1);
    cr_assert_not(kernel_amx_supported(), "MOETIER_AMX=0 left AMX on");
    cr_assert_not(kernel_amx_enabled());
}
