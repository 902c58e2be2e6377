/* softmax_simd: the exponentials of attention's softmax, vectorized.
 *
 * At a long context a decode step's softmax takes 64 heads x every cached
 * position through expf, one value at a time: about a tenth of the absorbed
 * attention's time at 32 K positions, and of the expanded form's. The SIMD
 * paths here compute exp with a range reduction by ln 2 and a degree-6
 * polynomial (within 2 ulp of expf for results above FLT_MIN, tested; below
 * that, for inputs under -87.6, they give FLT_MIN-sized values where expf
 * gives subnormals or zero: nothing a softmax, whose largest term is 1, sees),
 * and sum in vector lanes added up in a fixed order, so a row's bits depend on
 * its values and its length only. The scaling goes with the search for the
 * largest score, and the division is in vectors too (correctly rounded in
 * every lane, as softmax_ref's one at a time). The scalar path is
 * softmax_ref's loop. NaN inputs give NaN. */
#ifndef MOETIER_SOFTMAX_SIMD_H
#define MOETIER_SOFTMAX_SIMD_H

#include "linear_kernels.h"

/* p[i] = exp(p[i] - m) for i < n; returns their sum */
float softmax_exp_sum(kernel_path path, float *p, int n, float m);
/* p[i] *= scale for i < n, in place, and the largest of them (-inf for none;
 * NaNs passed over, as softmax_ref's), in one pass over the scores */
float softmax_scale_max(kernel_path path, float *p, int n, float scale);
/* In-place softmax of the n values p[i] * scale: each product rounded, then
 * softmax_ref's steps, with the exponentials and sums of softmax_exp_sum. */
void softmax_simd(kernel_path path, float *p, int n, float scale);

#endif
