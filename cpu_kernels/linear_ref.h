/* linear_ref: the plain scalar reference of y = W x for every weight format.
 *
 * Weights are dequantized on the fly, one row at a time, exactly as the formats
 * define them (float32 multiply of code and scale), and the products accumulate
 * in float32. Optimised kernels are tested against these functions. */
#ifndef MOETIER_LINEAR_REF_H
#define MOETIER_LINEAR_REF_H

#include "core/model/linear_weight.h"

/* out[0..cols) = row r of W in float32. */
void linear_ref_dequant_row(const linear_weight *w, int r, float *out);
/* y[t][0..rows) = W x[t] for t < T; x is [T][cols], y is [T][rows]; row_buf
 * holds cols floats of scratch. */
void linear_ref_forward(const linear_weight *w, const float *x, int T, float *y, float *row_buf);
float dot_f32(const float *a, const float *b, int n);

#endif
