/* softmax_simd: the vectorized exponentials, maxima and softmax of each SIMD
 * path against expf and softmax_ref on random rows of every length class
 * (whole vectors, tails, passes of four vectors and none). */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels/ops_ref.h"
#include "cpu_kernels/softmax_simd.h"

static const int lengths[] = {0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 100, 1000, 4099};

static float uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)rand() / (float)RAND_MAX;
}

/* Each exponential within 2 ulp of expf where expf is a normal float, and at
 * most FLT_MIN-sized (not negative) below; the sum within the rounding of n
 * additions of the outputs' exact sum. Inputs from -100 to 0, as x - max. */
Test(softmax_simd, exponentials_and_sums_match_expf)
{
    srand(21);
    float *p = malloc(4099 * sizeof *p), *x = malloc(4099 * sizeof *x);
    cr_assert(p && x);
    for (int path = KPATH_AVX2; path < KPATH_COUNT; path++) {
        if (!kernel_path_supported((kernel_path)path))
            continue;
        for (size_t li = 0; li < sizeof lengths / sizeof *lengths; li++) {
            int n = lengths[li];
            float m = uniform(-3, 3);
            for (int i = 0; i < n; i++)
                x[i] = p[i] = m + (i % 5 == 0 ? uniform(-100, 0) : uniform(-20, 0));
            if (n)
                x[0] = p[0] = m;     /* the row's largest: exp(0) = 1 */
            float s = softmax_exp_sum((kernel_path)path, p, n, m);
            double exact = 0;
            for (int i = 0; i < n; i++) {
                float want = expf(x[i] - m);
                exact += p[i];
                if (want >= FLT_MIN)
                    cr_assert(fabsf(p[i] - want) <= 2.4e-7f * want, "%s, n %d: exp(%.9g) = %.9g, "
                              "expf %.9g", kernel_path_name(path), n, x[i] - m, p[i], want);
                else
                    cr_assert(p[i] >= 0 && p[i] <= 2 * FLT_MIN, "%s: exp(%.9g) = %g",
                              kernel_path_name(path), x[i] - m, p[i]);
            }
            /* (n additions of positive terms: at most n roundings of the sum) */
            cr_assert(fabs(s - exact) <= n * 6e-8 * exact, "%s, n %d: sum %.9g, exactly %.9g",
                      kernel_path_name(path), n, s, exact);
        }
    }
    free(p);
    free(x);
}

/* The largest value of every length, NaNs passed over as softmax_ref passes
 * them; a NaN's exponential is NaN, and so is the sum. */
Test(softmax_simd, maxima_pass_over_nan_and_exponentials_keep_it)
{
    srand(22);
    /* 16 floats past the longest row: the sentinels a store past n would overwrite */
    float *p = malloc(1016 * sizeof *p), *x = malloc(1000 * sizeof *x);
    cr_assert(p && x);
    const float scale = 0.1352337788f;  /* K2's 1 / sqrt(192) times its YaRN mscale */
    for (int path = 0; path < KPATH_COUNT; path++) {
        if (!kernel_path_supported((kernel_path)path))
            continue;
        for (size_t li = 0; li < sizeof lengths / sizeof *lengths && lengths[li] <= 1000; li++) {
            int n = lengths[li];
            for (int i = 0; i < n; i++)
                x[i] = uniform(-400, 400);
            if (n > 2) {
                x[n / 2] = NAN;
                x[n - 1] = -NAN;
            }
            float want = -INFINITY;
            for (int i = 0; i < n; i++) {
                p[i] = x[i];
                want = x[i] * scale > want ? x[i] * scale : want;
            }
            for (int i = n; i < n + 16; i++)
                p[i] = 12345.0f;
            float got = softmax_scale_max((kernel_path)path, p, n, scale);
            cr_assert(got == want, "%s, n %d: max %g, expected %g", kernel_path_name(path), n, got,
                      want);
            /* each score scaled in place, one rounding; none past n touched */
            for (int i = 0; i < n; i++)
                cr_assert(isnan(x[i]) ? isnan(p[i]) : p[i] == x[i] * scale,
                          "%s, n %d: p[%d] = %.9g, not %.9g", kernel_path_name(path), n, i, p[i],
                          x[i] * scale);
            for (int i = n; i < n + 16; i++)
                cr_assert(p[i] == 12345.0f, "%s, n %d: p[%d] past the row written",
                          kernel_path_name(path), n, i);
            if (n > 2) {
                float s = softmax_exp_sum((kernel_path)path, p, n, want);
                cr_assert(isnan(p[n / 2]) && isnan(p[n - 1]) && isnan(s),
                          "%s, n %d: a NaN score's exponential %g, sum %g", kernel_path_name(path),
                          n, p[n / 2], s);
            }
        }
    }
    free(p);
    free(x);
}

/* softmax_simd of scores times a scale against the softmax of the scaled
 * scores in double precision, within the exponentials' error and the sum's n
 * roundings; the scalar path is softmax_ref of the scaled scores, bit for
 * bit, and the SIMD paths' probabilities are their exponentials each divided
 * by their sum, correctly rounded (as softmax_ref divides). */
Test(softmax_simd, probabilities_match_the_reference)
{
    srand(23);
    float *p = malloc(4099 * sizeof *p), *x = malloc(4099 * sizeof *x),
          *ref = malloc(4099 * sizeof *ref), *parts = malloc(4099 * sizeof *parts);
    cr_assert(p && x && ref && parts);
    for (int path = 0; path < KPATH_COUNT; path++) {
        if (!kernel_path_supported((kernel_path)path))
            continue;
        for (size_t li = 0; li < sizeof lengths / sizeof *lengths; li++) {
            int n = lengths[li];
            double m = -INFINITY, sum = 0;
            const float scale = 0.125f + (float)li / 64;
            for (int i = 0; i < n; i++) {
                parts[i] = ref[i] = p[i] = uniform(-30, 30) / scale;
                x[i] = ref[i] *= scale;     /* the scaled score, rounded */
                m = x[i] > m ? x[i] : m;
            }
            for (int i = 0; i < n; i++)
                sum += exp((double)(x[i] - (float)m));
            softmax_ref(ref, n);
            softmax_simd((kernel_path)path, p, n, scale);
            float s = softmax_exp_sum((kernel_path)path, parts, n,
                                      softmax_scale_max((kernel_path)path, parts, n, scale));
            for (int i = 0; i < n; i++) {
                /* (x - max rounded to float, as both compute it) */
                double exact = exp((double)(x[i] - (float)m)) / sum;
                if (path == KPATH_SCALAR)
                    cr_assert(p[i] == ref[i], "scalar, n %d: p[%d] is not softmax_ref's", n, i);
                else {
                    cr_assert(fabs(p[i] - exact) <= (5e-7 + n * 6e-8) * exact + 1e-30,
                              "%s, n %d: p[%d] = %.9g, exactly %.9g", kernel_path_name(path), n,
                              i, p[i], exact);
                    cr_assert(p[i] == parts[i] / s, "%s, n %d: p[%d] = %.9g, not %.9g / %.9g",
                              kernel_path_name(path), n, i, p[i], parts[i], s);
                }
            }
        }
    }
    free(p);
    free(x);
    free(ref);
    free(parts);
}
