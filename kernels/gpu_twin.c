/* gpu_twin: see gpu_twin.h; the SIMD kernels are in gpu_twin_avx512.c and
 * gpu_twin_avx2.c (gpu_twin_simd.h). */
#include "gpu_twin.h"

#include <math.h>

#include "gpu_math.h"
#include "gpu_twin_simd.h"

#define LANES TWIN_LANES

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

/* one lane at a time: fmaf is the fused multiply-add the GPU's lanes do (the
 * reference the SIMD twins are tested against) */
static float dot_lanes(const float *w, const float *x, int n)
{
    float acc[LANES] = {0};
    for (int c = 0; c < n; c++)
        acc[c % LANES] = fmaf(w[c], x[c], acc[c % LANES]);
    return butterfly(acc);
}

/* xp[32 b + i] = x[32 b + 2 i], xp[32 b + 16 + i] = x[32 b + 2 i + 1] */
void twin_int4_permute_x(const float *x, int T, int cols, float *xp)
{
    for (size_t t = 0; t < (size_t)T; t++)
        for (int c = 0; c < cols; c += LANES)
            for (int i = 0; i < 16; i++) {
                xp[t * cols + c + i] = x[t * cols + c + 2 * i];
                xp[t * cols + c + 16 + i] = x[t * cols + c + 2 * i + 1];
            }
}

/* column c + fp8_order[i] of each 32-column block goes to position i */
static const int fp8_order[LANES] = {0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23,
                                     8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31};

void twin_fp8_permute_x(const float *x, int T, int cols, float *xp)
{
    for (size_t t = 0; t < (size_t)T; t++)
        for (int c = 0; c < cols; c += LANES)
            for (int i = 0; i < LANES; i++)
                xp[t * cols + c + i] = x[t * cols + c + fp8_order[i]];
}

typedef struct linear_ctx {
    kernel_path path;
    const linear_weight *w;
    const float *x;             /* INT4 or FP8 in registers: permuted to match */
    int T;
    float *y, *work;            /* TWIN_ROWS * cols floats per worker */
} linear_ctx;

static void linear_worker(void *p, int worker, int n_workers)
{
    linear_ctx *c = p;
    int r0, r1, cols = c->w->cols;
    pool_split(c->w->rows, 1, worker, n_workers, &r0, &r1);
    float *work = c->work + (size_t)worker * TWIN_ROWS * (size_t)cols;
    if (c->path == KPATH_AVX512 && twin_int4_in_registers(c->w)) {
        twin_int4_avx512(c->w, r0, r1, c->x, c->T, c->y);
        return;
    }
    if (c->path == KPATH_AVX512 && twin_fp8_in_registers(c->w)) {
        twin_fp8_avx512(c->w, r0, r1, c->x, c->T, c->y);
        return;
    }
    if (c->path == KPATH_AVX512 && twin_fp8_in_passes(c->w)) {    /* no VBMI: AVX2's shuffles */
        twin_fp8_avx2(c->w, r0, r1, c->x, c->T, c->y);
        return;
    }
    if (c->path == KPATH_AVX512 && twin_bf16_in_registers(c->w)) {
        twin_bf16_avx512(c->w, r0, r1, c->x, c->T, c->y);
        return;
    }
    if (c->path == KPATH_AVX512) {
        twin_dequant_avx512(c->path, c->w, r0, r1, c->x, c->T, c->y, work);
        return;
    }
    if (c->path == KPATH_AVX2 && twin_int4_in_registers(c->w)) {
        twin_int4_avx2(c->w, r0, r1, c->x, c->T, c->y);
        return;
    }
    if (c->path == KPATH_AVX2 && twin_fp8_in_passes(c->w)) {
        twin_fp8_avx2(c->w, r0, r1, c->x, c->T, c->y);
        return;
    }
    if (c->path == KPATH_AVX2 && twin_bf16_in_registers(c->w)) {
        twin_bf16_avx2(c->w, r0, r1, c->x, c->T, c->y);
        return;
    }
    if (c->path == KPATH_AVX2) {
        twin_dequant_avx2(c->w, r0, r1, c->x, c->T, c->y, work);
        return;
    }
    for (int r = r0; r < r1; r++) {
        linear_dequant_rows(c->path, c->w, r, 1, work);
        for (int t = 0; t < c->T; t++)
            c->y[(size_t)t * (size_t)c->w->rows + (size_t)r] =
                dot_lanes(work, c->x + (size_t)t * (size_t)cols, cols);
    }
}

size_t gpu_twin_linear_scratch(int cols, int T, int n_threads)
{
    return (size_t)T * (size_t)cols + (size_t)(n_threads > 0 ? n_threads : 1) * TWIN_ROWS * (size_t)cols;
}

void gpu_twin_linear(kernel_path path, thread_pool *pool, const linear_weight *w, const float *x,
                     int T, float *y, float *scratch)
{
    linear_ctx c = {path, w, x, T, y, scratch + (size_t)T * (size_t)w->cols};
    if ((path == KPATH_AVX512 || path == KPATH_AVX2) && twin_int4_in_registers(w)) {
        twin_int4_permute_x(x, T, w->cols, scratch);
        c.x = scratch;
    } else if ((path == KPATH_AVX512 || path == KPATH_AVX2) && twin_fp8_in_passes(w)) {
        /* the byte tables' and the shuffles' lane order are the same */
        twin_fp8_permute_x(x, T, w->cols, scratch);
        c.x = scratch;
    }
    if (pool)
        thread_pool_run(pool, linear_worker, &c);
    else
        linear_worker(&c, 0, 1);
}

size_t gpu_twin_ffn_scratch(const linear_weight *gate, const linear_weight *down, int T,
                            int n_threads)
{
    int cols = gate->cols > down->cols ? gate->cols : down->cols;
    return 2 * (size_t)T * (size_t)gate->rows + gpu_twin_linear_scratch(cols, T, n_threads);
}

void gpu_twin_ffn(kernel_path path, thread_pool *pool, const linear_weight *gate,
                  const linear_weight *up, const linear_weight *down, const float *x, int T,
                  float *out, float *scratch)
{
    size_t n = (size_t)T * (size_t)gate->rows;
    float *g = scratch, *u = g + n, *rest = u + n;
    gpu_twin_linear(path, pool, gate, x, T, g, rest);
    gpu_twin_linear(path, pool, up, x, T, u, rest);
    for (size_t i = 0; i < n; i++)
        g[i] = gm_silu_mul(g[i], u[i]);
    gpu_twin_linear(path, pool, down, g, T, out, rest);
}
