/* ops_ref: scalar reference of the small element-wise and per-row operations of
 * the forward pass (RMSNorm, RoPE, SiLU gating, softmax). */
#ifndef MOETIER_OPS_REF_H
#define MOETIER_OPS_REF_H

#include <stddef.h>

/* out[t] = w * x[t] / sqrt(mean(x[t]^2) + eps) over n values; rows of x and out
 * are x_stride / out_stride floats apart (out may equal x). */
void rmsnorm_ref(const float *x, int x_stride, const float *w, int n, int T, float eps, float *out,
                 int out_stride);

/* Rotates interleaved pairs (v[2i], v[2i+1]) of dim values by pos[t] * inv_freq[i],
 * scaling cos/sin by mscale. Vector k of token t starts at
 * x + t * tok_stride + k * vec_stride + offset. */
void rope_ref(float *x, int T, int n_vec, int tok_stride, int vec_stride, int offset, int dim,
              const int *pos, const float *inv_freq, float mscale);

/* out[i] = silu(g[i]) * u[i]. */
void silu_mul_ref(const float *g, const float *u, size_t n, float *out);

/* In-place softmax of n values (max-subtracted, float32). */
void softmax_ref(float *x, int n);

#endif
