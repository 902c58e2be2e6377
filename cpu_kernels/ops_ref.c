/* ops_ref: see ops_ref.h. */
#include "ops_ref.h"

#include <math.h>

void rmsnorm_ref(const float *x, int x_stride, const float *w, int n, int T, float eps, float *out,
                 int out_stride)
{
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * (size_t)x_stride;
        float *o = out + (size_t)t * (size_t)out_stride;
        float ss = 0;
        for (int i = 0; i < n; i++)
            ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)n + eps);
        for (int i = 0; i < n; i++)
            o[i] = w[i] * (xr[i] * inv);
    }
}

void rope_ref(float *x, int T, int n_vec, int tok_stride, int vec_stride, int offset, int dim,
              const int *pos, const float *inv_freq, float mscale)
{
    for (int t = 0; t < T; t++)
        for (int i = 0; i < dim / 2; i++) {
            float ang = (float)pos[t] * inv_freq[i];
            float c = cosf(ang) * mscale, s = sinf(ang) * mscale;
            for (int k = 0; k < n_vec; k++) {
                float *v = x + (size_t)t * (size_t)tok_stride + (size_t)k * (size_t)vec_stride +
                           (size_t)offset + 2 * (size_t)i;
                float a = v[0], b = v[1];
                v[0] = a * c - b * s;
                v[1] = a * s + b * c;
            }
        }
}

void silu_mul_ref(const float *g, const float *u, size_t n, float *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void softmax_ref(float *x, int n)
{
    float m = -INFINITY;
    for (int i = 0; i < n; i++)
        m = x[i] > m ? x[i] : m;
    float s = 0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        s += x[i];
    }
    for (int i = 0; i < n; i++)
        x[i] /= s;
}
