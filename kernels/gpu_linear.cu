/* gpu_linear: weight-times-activation products, the embedding lookup and the
 * FFN's gating on the device, float32 throughout (see gpu_ops.cuh).
 *
 * One warp per weight row: its lanes stride over the columns, each lane keeps
 * a partial sum per token for a tile of up to LIN_TOKENS tokens, and the warp
 * adds its lanes up with shuffles. The row is dequantized element by element
 * (gw_at_fmt, one kernel per format) as it is read, so no format is ever
 * expanded in memory. */
#include <stdio.h>
#include <stdlib.h>

#include "gpu_math.h"
#include "gpu_ops.cuh"

#define LIN_TOKENS 8
#define LIN_WARPS 8         /* rows per block */
/* A warp keeps the L2 cache one to two windows of its row ahead of its loads:
 * each lane asks for one 32-byte sector, so one instruction covers a window.
 * Without it a warp has one pass (16 to 128 bytes) in flight, far too little
 * to keep HBM busy at one token. The order of the sums is the same either
 * way (the CPU twin's bits do not depend on it). */
#define LIN_AHEAD_WINDOW 1024

__device__ __forceinline__ void l2_prefetch(const char *p)
{
#ifdef MOETIER_CUDA_EMU
    (void)*(volatile const char *)p;    /* the emulation touches it: a wild address faults */
#else
    asm volatile("prefetch.global.L2 [%0];" : : "l"(p));
#endif
}

/* this lane's sector of the window of p that starts at byte `from`, if before `end` */
__device__ __forceinline__ void l2_prefetch_window(const char *p, int from, int end, int lane)
{
    int off = from + lane * (LIN_AHEAD_WINDOW / 32);
    if (off < end)
        l2_prefetch(p + off);
}

template <int FMT, bool AHEAD> __global__ void k_linear(gpu_lin a)
{
    int lane = threadIdx.x & 31;
    int i = blockIdx.x * LIN_WARPS + (threadIdx.x >> 5);
    if (i >= a.nrows)
        return;     /* the whole warp leaves together: i is the same on its lanes */
    int g = blockIdx.y;
    int r = a.row0 + g * a.row_step + i;
    const float *x = a.x + (size_t)g * a.x_step;
    float *y = a.y + (size_t)g * a.y_step + i;
    const int pass = gw_pass_bytes<FMT>();
    const char *row = gw_row_data<FMT>(a.w, r);
    int row_bytes = (int)(((size_t)a.w.cols * (size_t)pass + 31) / 32);
    if (AHEAD) {
        l2_prefetch_window(row, 0, row_bytes, lane);
        l2_prefetch_window(row, LIN_AHEAD_WINDOW, row_bytes, lane);
        /* the row's scales: INT4 groups (bf16), FP8 blocks (float) */
        if (FMT == WF_INT4_GROUP)
            for (int o = 0; o < (int)a.w.scale_cols * 2; o += LIN_AHEAD_WINDOW)
                l2_prefetch_window((const char *)a.w.scale + (size_t)r * (size_t)a.w.scale_cols * 2,
                                   o, (int)a.w.scale_cols * 2, lane);
        if (FMT == WF_FP8_BLOCK)
            for (int o = 0; o < (int)a.w.scale_cols * 4; o += LIN_AHEAD_WINDOW)
                l2_prefetch_window((const char *)a.w.scale +
                                   (size_t)(r / a.w.block_rows) * (size_t)a.w.scale_cols * 4,
                                   o, (int)a.w.scale_cols * 4, lane);
    }
    for (int t0 = 0; t0 < a.T; t0 += LIN_TOKENS) {
        int nt = a.T - t0 < LIN_TOKENS ? a.T - t0 : LIN_TOKENS;
        float acc[LIN_TOKENS];
#pragma unroll
        for (int t = 0; t < LIN_TOKENS; t++)
            acc[t] = 0.0f;
#pragma unroll 4
        for (int c = lane, at = 0; c < a.w.cols; c += 32, at += pass) {
            /* at: this pass's first byte in the row; entering a new window,
             * ask for the one after it (later token tiles find the row cached) */
            if (AHEAD && t0 == 0 && at > 0 && at % LIN_AHEAD_WINDOW == 0)
                l2_prefetch_window(row, at + LIN_AHEAD_WINDOW, row_bytes, lane);
            float wv = gw_at_fmt<FMT>(a.w, r, c);
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

template <int FMT> static void launch_linear(const gpu_lin *a, dim3 grid, cudaStream_t s)
{
    void (*kernel)(gpu_lin) = a->plain ? k_linear<FMT, false> : k_linear<FMT, true>;
    GPU_LAUNCH(kernel, grid, LIN_WARPS * 32, 0, s)(*a);
}

void gpu_linear(const gpu_lin *a, cudaStream_t s)
{
    if (a->nrows <= 0 || a->T <= 0 || a->groups <= 0)
        return;
    dim3 grid((unsigned)((a->nrows + LIN_WARPS - 1) / LIN_WARPS), (unsigned)a->groups);
    switch (a->w.fmt) {
    case WF_F32:
        launch_linear<WF_F32>(a, grid, s);
        break;
    case WF_F16:
        launch_linear<WF_F16>(a, grid, s);
        break;
    case WF_BF16:
        launch_linear<WF_BF16>(a, grid, s);
        break;
    case WF_FP8_BLOCK:
        launch_linear<WF_FP8_BLOCK>(a, grid, s);
        break;
    case WF_INT4_GROUP:
        launch_linear<WF_INT4_GROUP>(a, grid, s);
        break;
    default:
        fprintf(stderr, "moetier: GPU linear layer of unknown weight format %d\n", a->w.fmt);
        abort();
    }
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
