/* gpu_linear: weight-times-activation products, the embedding lookup and the
 * FFN's gating on the device, float32 throughout (see gpu_ops.cuh).
 *
 * One warp per weight row: its lanes stride over the columns, each lane keeps
 * a partial sum per token for a tile of up to LIN_TOKENS tokens, and the warp
 * adds its lanes up with shuffles. The row is dequantized element by element
 * (gw_at) as it is read, so no format is ever expanded in memory. */
#include "gpu_math.h"
#include "gpu_ops.cuh"

#define LIN_TOKENS 8
#define LIN_WARPS 8         /* rows per block */

__global__ void k_linear(gpu_lin a)
{
    int lane = threadIdx.x & 31;
    int i = blockIdx.x * LIN_WARPS + (threadIdx.x >> 5);
    if (i >= a.nrows)
        return;     /* the whole warp leaves together: i is the same on its lanes */
    int g = blockIdx.y;
    int r = a.row0 + g * a.row_step + i;
    const float *x = a.x + (size_t)g * a.x_step;
    float *y = a.y + (size_t)g * a.y_step + i;
    for (int t0 = 0; t0 < a.T; t0 += LIN_TOKENS) {
        int nt = a.T - t0 < LIN_TOKENS ? a.T - t0 : LIN_TOKENS;
        float acc[LIN_TOKENS];
#pragma unroll
        for (int t = 0; t < LIN_TOKENS; t++)
            acc[t] = 0.0f;
        for (int c = lane; c < a.w.cols; c += 32) {
            float wv = gw_at(a.w, r, c);
#pragma unroll
            for (int t = 0; t < LIN_TOKENS; t++)
                if (t < nt)
                    acc[t] = fmaf(wv, x[(size_t)(t0 + t) * a.xs + (size_t)c], acc[t]);
        }
#pragma unroll
        for (int t = 0; t < LIN_TOKENS; t++) {
            float v = acc[t];
            for (int o = 16; o > 0; o >>= 1)
                v += __shfl_xor_sync(0xffffffffu, v, o);
            if (lane == 0 && t < nt)
                y[(size_t)(t0 + t) * a.ys] = v;
        }
    }
}

void gpu_linear(const gpu_lin *a, cudaStream_t s)
{
    if (a->nrows <= 0 || a->T <= 0 || a->groups <= 0)
        return;
    dim3 grid((unsigned)((a->nrows + LIN_WARPS - 1) / LIN_WARPS), (unsigned)a->groups);
    GPU_LAUNCH(k_linear, grid, LIN_WARPS * 32, 0, s)(*a);
    GPU_LAUNCHED("linear");
}

__global__ void k_embed(gpu_weight emb, const int *ids, float *out)
{
    int t = blockIdx.y;
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < emb.cols)
        out[(size_t)t * (size_t)emb.cols + (size_t)c] = gw_at(emb, ids[t], c);
}

void gpu_embed(const gpu_weight *emb, const int *ids, int T, float *out, cudaStream_t s)
{
    if (T <= 0)
        return;
    dim3 grid((unsigned)((emb->cols + 255) / 256), (unsigned)T);
    GPU_LAUNCH(k_embed, grid, 256, 0, s)(*emb, ids, out);
    GPU_LAUNCHED("embed");
}

/* silu(g) * u with the exponential the CPU twin uses (gpu_math.h) */
__global__ void k_silu_mul(float *g, const float *u, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        g[i] = gm_silu_mul(g[i], u[i]);
}

void gpu_silu_mul(float *g, const float *u, size_t n, cudaStream_t s)
{
    if (!n)
        return;
    GPU_LAUNCH(k_silu_mul, (unsigned)((n + 255) / 256), 256, 0, s)(g, u, n);
    GPU_LAUNCHED("silu_mul");
}
