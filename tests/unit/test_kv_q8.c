/* kv_q8: a q8_0 KV cache row's quantization and widening (--cache-type q8_0);
 * kv_widen_simd: its rows' and a bf16 cache's widening in vectors.
 *
 * Checked against the definition, not against the code's own output: every
 * value within half a step (its block's scale) of the original, each block's
 * largest magnitude at +-127 steps, ties to even, zeros kept, a non-finite
 * value's block NaN and no other, the padding's bytes the same whatever the
 * memory held, and any range widened as the whole row is; the SIMD paths'
 * widening bit for bit the scalar one's, for q8_0 and bf16 rows. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine/kv_q8.h"
#include "core/model/dtype.h"
#include "cpu_kernels/kv_widen_simd.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float gauss(void)
{
    /* the sum of four uniforms: a bell with tails, as a latent's values */
    float s = 0;
    for (int i = 0; i < 4; i++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        s += (float)(rng >> 40) / (float)(1 << 24) - 0.5f;
    }
    return s;
}

Test(kv_q8, row_bytes)
{
    cr_expect_eq(kv_q8_row_bytes(576), 18 * 4 + 576);     /* K2 */
    cr_expect_eq(kv_q8_row_bytes(32), 4 + 32);
    cr_expect_eq(kv_q8_row_bytes(33), 2 * 4 + 36);        /* a partial block, padded */
    cr_expect_eq(kv_q8_row_bytes(11), 4 + 12);
    cr_expect_eq(kv_q8_row_bytes(1), 4 + 4);
}

/* Rows of several widths, values on several scales per block: each value
 * within half its block's step of the original, each step its block's
 * largest magnitude over 127, that magnitude 127 steps. */
Test(kv_q8, values_within_half_a_step)
{
    const int widths[] = {576, 80, 47, 11, 1};
    for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++) {
        int n = widths[wi], nb = (n + 31) / 32;
        float *x = malloc((size_t)n * sizeof *x), *w = malloc((size_t)n * sizeof *w);
        float *row = malloc(kv_q8_row_bytes(n));
        cr_assert(x && w && row);
        for (int i = 0; i < n; i++)
            x[i] = gauss() * powf(10.0f, (float)(i / 32 % 5) - 2.0f);
        kv_q8_quantize(x, n, row);
        kv_q8_widen(row, n, 0, n, w);
        const int8_t *q = (const int8_t *)(row + nb);
        for (int b = 0; b < nb; b++) {
            float amax = 0;
            for (int i = b * 32; i < n && i < b * 32 + 32; i++)
                amax = fmaxf(amax, fabsf(x[i]));
            cr_expect_eq(row[b], amax / 127.0f, "width %d block %d: scale %g for largest %g", n,
                         b, row[b], amax);
            int top = 0;
            for (int i = b * 32; i < n && i < b * 32 + 32; i++) {
                double err = fabs((double)w[i] - (double)x[i]);
                cr_expect_leq(err, 0.5 * row[b] * (1 + 1e-6), "width %d value %d: %g for %g "
                              "(step %g)", n, i, w[i], x[i], row[b]);
                cr_expect_eq(w[i], (float)q[i] * row[b], "width %d value %d: not q times the scale",
                             n, i);
                cr_expect(q[i] >= -127 && q[i] <= 127);
                top |= fabsf(x[i]) == amax && abs(q[i]) == 127;
            }
            cr_expect(top, "width %d block %d: its largest magnitude is not 127 steps", n, b);
        }
        free(x);
        free(w);
        free(row);
    }
}

/* Exact halves of a step round to even; zeros stay zeros (a zero block too). */
Test(kv_q8, ties_to_even_and_zeros)
{
    float x[64] = {0}, row[2 + 16];
    x[0] = 127.0f;      /* step 1 */
    x[1] = 2.5f;
    x[2] = 3.5f;
    x[3] = -2.5f;
    x[4] = 0.5f;
    kv_q8_quantize(x, 64, row);
    const int8_t *q = (const int8_t *)(row + 2);
    cr_expect_eq(row[0], 1.0f);
    cr_expect(q[0] == 127 && q[1] == 2 && q[2] == 4 && q[3] == -2 && q[4] == 0 && q[5] == 0,
              "%d %d %d %d %d %d", q[0], q[1], q[2], q[3], q[4], q[5]);
    cr_expect_eq(row[1], 0.0f, "a zero block's scale");
    float w[64];
    kv_q8_widen(row, 64, 0, 64, w);
    for (int i = 32; i < 64; i++)
        cr_expect(w[i] == 0 && !signbit(w[i]), "value %d of a zero block: %g", i, w[i]);
}

/* A NaN or an infinity makes its own block NaN, all of it, and no other. */
Test(kv_q8, a_non_finite_value_makes_its_block_nan)
{
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        float x[96], w[96], row[3 + 24];
        for (int i = 0; i < 96; i++)
            x[i] = gauss();
        x[40] = bad[k];
        kv_q8_quantize(x, 96, row);
        kv_q8_widen(row, 96, 0, 96, w);
        for (int i = 0; i < 96; i++)
            cr_expect_eq(isnan(w[i]) != 0, i / 32 == 1, "%g at 40: value %d is %g", bad[k], i,
                         w[i]);
    }
}

/* The bytes of a row depend on the values alone (the padding's included), and
 * any range of it widens as the whole row does. */
Test(kv_q8, same_bytes_and_ranges)
{
    int n = 47;
    size_t bytes = kv_q8_row_bytes(n);
    float x[47], whole[47], part[47];
    for (int i = 0; i < n; i++)
        x[i] = gauss();
    unsigned char *a = malloc(bytes), *b = malloc(bytes);
    cr_assert(a && b);
    memset(a, 0x00, bytes);
    memset(b, 0xa5, bytes);
    kv_q8_quantize(x, n, a);
    kv_q8_quantize(x, n, b);
    cr_expect(memcmp(a, b, bytes) == 0, "a row's bytes depend on what the memory held");
    kv_q8_widen(a, n, 0, n, whole);
    const int ranges[][2] = {{0, 47}, {5, 3}, {31, 2}, {32, 15}, {46, 1}, {3, 40}, {10, 0}};
    for (size_t r = 0; r < sizeof ranges / sizeof *ranges; r++) {
        int c0 = ranges[r][0], k = ranges[r][1];
        memset(part, 0xff, sizeof part);
        kv_q8_widen(a, n, c0, k, part);
        cr_expect(memcmp(part, whole + c0, (size_t)k * sizeof *part) == 0, "[%d, %d)", c0, c0 + k);
        if (k < n) {
            uint32_t past;
            memcpy(&past, part + k, sizeof past);
            cr_expect_eq(past, 0xffffffffu, "[%d, %d): written past its range", c0, c0 + k);
        }
    }
    free(a);
    free(b);
}

/* kv_q8_widen_simd on every path has the bits of kv_q8_widen: random rows
 * (a NaN block among them) of widths with and without partial blocks,
 * random ranges starting inside blocks and crossing them, and nothing
 * written past the range. */
Test(kv_q8, simd_widening_has_the_scalar_bits)
{
    const int widths[] = {576, 80, 47, 11};
    for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++) {
        int n = widths[wi];
        float *x = malloc((size_t)n * sizeof *x), *want = malloc((size_t)n * sizeof *want);
        float *got = malloc(((size_t)n + 1) * sizeof *got);
        void *row = malloc(kv_q8_row_bytes(n));
        cr_assert(x && want && got && row);
        for (int i = 0; i < n; i++)
            x[i] = gauss() * (float)(1 + i % 7);
        x[n / 2] = n > 40 ? NAN : x[n / 2];
        kv_q8_quantize(x, n, row);
        for (int r = 0; r < 200; r++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            int c0 = (int)((rng >> 33) % (uint64_t)n);
            int k = (int)((rng >> 13) % (uint64_t)(n - c0 + 1));
            kv_q8_widen(row, n, c0, k, want);
            for (int p = 0; p < KPATH_COUNT; p++) {
                if (!kernel_path_supported((kernel_path)p))
                    continue;
                memset(got, 0xff, ((size_t)n + 1) * sizeof *got);
                kv_q8_widen_simd((kernel_path)p, row, n, c0, k, got);
                cr_assert(memcmp(got, want, (size_t)k * sizeof *got) == 0,
                          "%s, width %d, [%d, %d): other bits", kernel_path_name(p), n, c0, c0 + k);
                uint32_t past;
                memcpy(&past, got + k, sizeof past);
                cr_assert_eq(past, 0xffffffffu, "%s, width %d, [%d, %d): written past it",
                             kernel_path_name(p), n, c0, c0 + k);
            }
        }
        free(x);
        free(want);
        free(got);
        free(row);
    }
}

/* bf16_widen_simd on every path has the bits of bf16_widen (NaN, infinities,
 * -0 and subnormals among the values), for lengths around the vectors', and
 * writes nothing past n. */
Test(kv_q8, simd_bf16_widening_has_the_scalar_bits)
{
    uint16_t src[80];
    float want[80], got[81];
    for (int i = 0; i < 80; i++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        src[i] = (uint16_t)(rng >> 48);
    }
    src[3] = 0x7fc0;    /* NaN */
    src[9] = 0xff80;    /* -inf */
    src[17] = 0x8000;   /* -0 */
    src[20] = 0x0001;   /* the smallest subnormal */
    for (int n = 0; n <= 80; n++) {
        bf16_widen(src, (size_t)n, want);
        for (int p = 0; p < KPATH_COUNT; p++) {
            if (!kernel_path_supported((kernel_path)p))
                continue;
            memset(got, 0xff, sizeof got);
            bf16_widen_simd((kernel_path)p, src, n, got);
            cr_assert(memcmp(got, want, (size_t)n * sizeof *got) == 0, "%s, %d values: other bits",
                      kernel_path_name(p), n);
            uint32_t past;
            memcpy(&past, got + n, sizeof past);
            cr_assert_eq(past, 0xffffffffu, "%s, %d values: written past them", kernel_path_name(p),
                         n);
        }
    }
}
