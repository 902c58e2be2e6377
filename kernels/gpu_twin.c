/* gpu_twin: see gpu_twin.h. */
#include "gpu_twin.h"

#include <immintrin.h>
#include <math.h>

#include "gpu_math.h"

#define LANES 32

/* the warp's butterfly: lane l adds lane l ^ o for o = 16, 8, 4, 2, 1; lane 0's sum */
static float butterfly(float *v)
{
    for (int o = LANES / 2; o > 0; o /= 2) {
        float t[LANES];
        for (int l = 0; l < LANES; l++)
            t[l] = v[l] + v[l ^ o];
        for (int l = 0; l < LANES; l++)
            v[l] = t[l];
    }
    return v[0];
}

/* one lane at a time: fmaf is the fused multiply-add the GPU's lanes do */
static float dot_lanes(const float *w, const float *x, int n)
{
    float acc[LANES] = {0};
    for (int c = 0; c < n; c++)
        acc[c % LANES] = fmaf(w[c], x[c], acc[c % LANES]);
    return butterfly(acc);
}

/* lanes 0-15 and 16-31 in two registers; the last partial block's missing
 * lanes keep their sums (a masked FMA), as the GPU's lanes that run out do */
__attribute__((target("avx512f"))) static float dot_lanes_avx512(const float *w, const float *x,
                                                                 int n)
{
    __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
    int c = 0;
    for (; c + LANES <= n; c += LANES) {
        lo = _mm512_fmadd_ps(_mm512_loadu_ps(w + c), _mm512_loadu_ps(x + c), lo);
        hi = _mm512_fmadd_ps(_mm512_loadu_ps(w + c + 16), _mm512_loadu_ps(x + c + 16), hi);
    }
    int rest = n - c;
    if (rest > 0) {
        __mmask16 mlo = (__mmask16)(rest >= 16 ? 0xffff : (1u << rest) - 1);
        __mmask16 mhi = (__mmask16)(rest > 16 ? (1u << (rest - 16)) - 1 : 0);
        lo = _mm512_mask3_fmadd_ps(_mm512_maskz_loadu_ps(mlo, w + c), _mm512_maskz_loadu_ps(mlo, x + c),
                                   lo, mlo);
        hi = _mm512_mask3_fmadd_ps(_mm512_maskz_loadu_ps(mhi, w + c + 16),
                                   _mm512_maskz_loadu_ps(mhi, x + c + 16), hi, mhi);
    }
    float v[LANES];
    _mm512_storeu_ps(v, lo);
    _mm512_storeu_ps(v + 16, hi);
    return butterfly(v);
}

typedef struct linear_ctx {
    kernel_path path;
    const linear_weight *w;
    const float *x;
    int T;
    float *y, *scratch;
} linear_ctx;

static void linear_worker(void *p, int worker, int n_workers)
{
    linear_ctx *c = p;
    int r0, r1, cols = c->w->cols;
    pool_split(c->w->rows, 1, worker, n_workers, &r0, &r1);
    float *row = c->scratch + (size_t)worker * (size_t)cols;
    int avx512 = c->path == KPATH_AVX512;
    for (int r = r0; r < r1; r++) {
        linear_dequant_rows(c->path, c->w, r, 1, row);
        for (int t = 0; t < c->T; t++) {
            const float *xt = c->x + (size_t)t * (size_t)cols;
            c->y[(size_t)t * (size_t)c->w->rows + (size_t)r] =
                avx512 ? dot_lanes_avx512(row, xt, cols) : dot_lanes(row, xt, cols);
        }
    }
}

void gpu_twin_linear(kernel_path path, thread_pool *pool, const linear_weight *w, const float *x,
                     int T, float *y, float *scratch)
{
    linear_ctx c = {path, w, x, T, y, scratch};
    if (pool)
        thread_pool_run(pool, linear_worker, &c);
    else
        linear_worker(&c, 0, 1);
}

size_t gpu_twin_ffn_scratch(const linear_weight *gate, const linear_weight *down, int T,
                            int n_threads)
{
    size_t I = (size_t)gate->rows, rows = (size_t)(gate->cols > down->cols ? gate->cols : down->cols);
    return 2 * (size_t)T * I + (size_t)(n_threads > 0 ? n_threads : 1) * rows;
}

void gpu_twin_ffn(kernel_path path, thread_pool *pool, const linear_weight *gate,
                  const linear_weight *up, const linear_weight *down, const float *x, int T,
                  float *out, float *scratch)
{
    size_t n = (size_t)T * (size_t)gate->rows;
    float *g = scratch, *u = g + n, *rows = u + n;
    gpu_twin_linear(path, pool, gate, x, T, g, rows);
    gpu_twin_linear(path, pool, up, x, T, u, rows);
    for (size_t i = 0; i < n; i++)
        g[i] = gm_silu_mul(g[i], u[i]);
    gpu_twin_linear(path, pool, down, g, T, out, rows);
}
