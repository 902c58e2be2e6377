/* gpu_linear: weight-times-activation products, the embedding lookup and the
 * FFN's gating on the device, float32 throughout (see gpu_ops.cuh).
 *
 * A warp per weight row: its lanes stride over the columns, each lane keeps
 * a partial sum per token for a tile of up to LIN_TOKENS tokens, and the warp
 * adds its lanes up with shuffles. The row is dequantized element by element
 * (gw_at_fmt, one kernel per format) as it is read, so no format is ever
 * expanded in memory. INT4 and most FP8 lanes take whole 32-bit words, and
 * a warp takes several rows of them (linear_words_rows). Past LIN_SLICE
 * tokens, blocks of their own take each slice of LIN_SLICE tokens (a prefill
 * has few rows per multiprocessor otherwise). Every sum is one warp's, in the
 * same order whatever the tiling, and the CPU twin (gpu_twin.c) computes the
 * same sums in the same order. */
#include <stdio.h>
#include <stdlib.h>

#include "gpu_math.h"
#include "gpu_ops.cuh"

#define LIN_TOKENS 8        /* the widest tile of tokens */
#define LIN_WARPS 8         /* rows per block */
#define LIN_SLICE 64        /* tokens per block, a multiple of every tile */
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
    /* the instruction takes a global-window address; cudaMalloc'd memory has
     * the same one in the generic window today, but that is not promised */
    asm volatile("prefetch.global.L2 [%0];" : : "l"(__cvta_generic_to_global(p)));
#endif
}

/* this lane's sector of the window of p that starts at byte `from`, if before `end` */
__device__ __forceinline__ void l2_prefetch_window(const char *p, int from, int end, int lane)
{
    int off = from + lane * (LIN_AHEAD_WINDOW / 32);
    if (off < end)
        l2_prefetch(p + off);
}

/* the warp's sums of a tile of nt tokens (every lane takes part in the
 * shuffles; nt is the same on every lane, so a tile's unused tokens cost no
 * shuffles: a token alone in a tile of 8 takes 5, not 40); lane 0 writes them
 * to y[t * ys] */
template <int TILE>
__device__ __forceinline__ void store_tile(const float *acc, int nt, int lane, float *y, size_t ys)
{
#pragma unroll
    for (int t = 0; t < TILE; t++) {
        if (t >= nt)
            break;
        float v = acc[t];
        for (int o = 16; o > 0; o >>= 1)
            v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0)
            y[(size_t)t * ys] = v;
    }
}

/* INT4 and FP8: lane l takes the row's 32-bit words l, l + 32, ... (a warp's
 * pass is 128 contiguous bytes, one load per lane, where a lane per column
 * loads 16 or 32 bytes per pass with a scale per column). A word's columns
 * (8 INT4, 4 FP8) share a scale: INT4 group sizes are multiples of 8, and FP8
 * takes words only when its blocks and rows are whole words (gw_fp8_words).
 * Per word and token the lane chains fmaf(code value, x) over the columns from
 * 0 (x = 0 past the last column), then adds that times the scale to its sum
 * with one more FMA.
 *
 * A warp takes R rows in tiles of TILE tokens (words_tiling): the x values a
 * lane loads for a word (32 bytes per token for INT4) outweigh the word
 * itself, so the warp loads them once for R rows. Each row's sums keep their
 * order. */
__host__ __device__ __forceinline__ bool gw_fp8_words(const gpu_weight &w)
{
    return w.cols % 4 == 0 && w.block_cols % 4 == 0;
}

template <int FMT, bool AHEAD, int R, int TILE>
__device__ __forceinline__ void linear_words_rows(const gpu_lin &a, int r0, int nr, const float *x,
                                                  float *y, int lane, int tb, int te)
{
    constexpr bool INT4 = FMT == WF_INT4_GROUP;
    constexpr int CW = INT4 ? 8 : 4;                    /* columns per word */
    constexpr int SB = INT4 ? 2 : 4;                    /* bytes per scale */
    const int cols = a.w.cols, nw = (cols + CW - 1) / CW;
    const size_t xs = a.xs;
    const uint32_t *words[R];
    const char *srow[R];
#pragma unroll
    for (int i = 0; i < R; i++) {
        int r = r0 + (i < nr ? i : 0);      /* a row past the matrix reads the first again */
        words[i] = (const uint32_t *)a.w.data +
                   (size_t)r * (INT4 ? (size_t)a.w.row_words : (size_t)cols / 4);
        srow[i] = (const char *)a.w.scale +
                  (size_t)(INT4 ? r : r / a.w.block_rows) * (size_t)a.w.scale_cols * SB;
    }
    int wps = (INT4 ? a.w.group_size : a.w.block_cols) / CW;   /* words per scale */
    int sh = -1;    /* ... as a shift when a power of two: no division per word */
    if ((wps & (wps - 1)) == 0)
        for (sh = 0; (1 << sh) < wps; sh++)
            ;
    /* a word's x values in 16-byte loads when every token's row allows */
    bool vec = cols % CW == 0 && xs % 4 == 0 && ((size_t)x & 15) == 0;
    int row_bytes = nw * 4, scale_bytes = (int)a.w.scale_cols * SB;
    if (AHEAD)
#pragma unroll
        for (int i = 0; i < R; i++)
            if (i < nr) {
                l2_prefetch_window((const char *)words[i], 0, row_bytes, lane);
                l2_prefetch_window((const char *)words[i], LIN_AHEAD_WINDOW, row_bytes, lane);
                for (int o = 0; o < scale_bytes; o += LIN_AHEAD_WINDOW)
                    l2_prefetch_window(srow[i], o, scale_bytes, lane);
            }
    for (int t0 = tb; t0 < te; t0 += TILE) {
        int nt = te - t0 < TILE ? te - t0 : TILE;
        float acc[R][TILE];
#pragma unroll
        for (int i = 0; i < R; i++)
#pragma unroll
            for (int t = 0; t < TILE; t++)
                acc[i][t] = 0.0f;
        const float *xk = x + (size_t)t0 * xs + (size_t)CW * (size_t)lane;  /* word k's x, token t0 */
        for (int k = lane, at = 0; k < nw; k += 32, at += 128, xk += CW * 32) {
            if (AHEAD && t0 == tb && at > 0 && at % LIN_AHEAD_WINDOW == 0)
#pragma unroll
                for (int i = 0; i < R; i++)
                    if (i < nr)
                        l2_prefetch_window((const char *)words[i], at + LIN_AHEAD_WINDOW, row_bytes,
                                           lane);
            int si = sh >= 0 ? k >> sh : k / wps;
            float q[R][CW], s[R];
#pragma unroll
            for (int i = 0; i < R; i++) {
                uint32_t u = words[i][k];
#pragma unroll
                for (int j = 0; j < CW; j++)
                    q[i][j] = INT4 ? gw_int4_in(u, j) : gw_e4m3_finite_in(u, j);
                /* FP8: one test of the word for NaN codes, not one per code */
                if (!INT4 && gw_e4m3_nan_in_word(u))
#pragma unroll
                    for (int j = 0; j < CW; j++)
                        q[i][j] = gw_e4m3_in(u, j);
                s[i] = INT4 ? gw_bf16(((const uint16_t *)srow[i])[si]) : ((const float *)srow[i])[si];
            }
            const float *xt = xk;
#pragma unroll
            for (int t = 0; t < TILE; t++, xt += xs) {
                if (t >= nt)
                    break;
                float xv[CW];
                if (vec) {
#pragma unroll
                    for (int h = 0; h < CW / 4; h++) {
                        float4 v = ((const float4 *)xt)[h];
                        xv[4 * h] = v.x, xv[4 * h + 1] = v.y, xv[4 * h + 2] = v.z, xv[4 * h + 3] = v.w;
                    }
                } else {
#pragma unroll
                    for (int j = 0; j < CW; j++)
                        xv[j] = CW * k + j < cols ? xt[j] : 0.0f;
                }
#pragma unroll
                for (int i = 0; i < R; i++) {
                    float d = 0.0f;
#pragma unroll
                    for (int j = 0; j < CW; j++)
                        d = fmaf(q[i][j], xv[j], d);
                    acc[i][t] = fmaf(d, s[i], acc[i][t]);
                }
            }
        }
#pragma unroll
        for (int i = 0; i < R; i++)
            if (i < nr)
                store_tile<TILE>(acc[i], nt, lane, y + i + (size_t)t0 * a.ys, a.ys);
    }
}

/* any other format or shape: lane l takes the row's columns l, l + 32, ...,
 * one element (dequantized by gw_at_fmt) and one FMA per token each */
template <int FMT, bool AHEAD>
__device__ __forceinline__ void linear_columns_row(const gpu_lin &a, int r, const float *x, float *y,
                                                   int lane, int tb, int te)
{
    const int pass = gw_pass_bytes<FMT>();
    const char *row = gw_row_data<FMT>(a.w, r);
    int row_bytes = (int)(((size_t)a.w.cols * (size_t)pass + 31) / 32);
    if (AHEAD) {
        l2_prefetch_window(row, 0, row_bytes, lane);
        l2_prefetch_window(row, LIN_AHEAD_WINDOW, row_bytes, lane);
        /* the row's FP8 block scales (FP8 in words does not come here) */
        if (FMT == WF_FP8_BLOCK)
            for (int o = 0; o < (int)a.w.scale_cols * 4; o += LIN_AHEAD_WINDOW)
                l2_prefetch_window((const char *)a.w.scale +
                                   (size_t)(r / a.w.block_rows) * (size_t)a.w.scale_cols * 4,
                                   o, (int)a.w.scale_cols * 4, lane);
    }
    for (int t0 = tb; t0 < te; t0 += LIN_TOKENS) {
        int nt = te - t0 < LIN_TOKENS ? te - t0 : LIN_TOKENS;
        float acc[LIN_TOKENS];
#pragma unroll
        for (int t = 0; t < LIN_TOKENS; t++)
            acc[t] = 0.0f;
#pragma unroll 4
        for (int c = lane, at = 0; c < a.w.cols; c += 32, at += pass) {
            /* at: this pass's first byte in the row; entering a new window,
             * ask for the one after it (later token tiles find the row cached) */
            if (AHEAD && t0 == tb && at > 0 && at % LIN_AHEAD_WINDOW == 0)
                l2_prefetch_window(row, at + LIN_AHEAD_WINDOW, row_bytes, lane);
            float wv = gw_at_fmt<FMT>(a.w, r, c);
#pragma unroll
            for (int t = 0; t < LIN_TOKENS; t++)
                if (t < nt)
                    acc[t] = fmaf(wv, x[(size_t)(t0 + t) * a.xs + (size_t)c], acc[t]);
        }
        store_tile<LIN_TOKENS>(acc, nt, lane, y + (size_t)t0 * a.ys, a.ys);
    }
}

/* whether a's rows are read in words (linear_words_rows) */
__host__ __device__ __forceinline__ bool words_layout(const gpu_lin &a)
{
    return a.w.fmt == WF_INT4_GROUP || (a.w.fmt == WF_FP8_BLOCK && gw_fp8_words(a.w));
}
/* rows per warp and tokens per tile: in words, 4 rows in tiles of 2 at one or
 * two tokens; 2 rows in tiles of 4 up to 8 tokens (x loaded once for two
 * rows, each row read again per 4 tokens, from L1 or L2); 4 rows in tiles of
 * 8 above, where the products are more arithmetic than reading (x loaded once
 * per 4 rows, 32 sums per lane). One row in tiles of 8 for the other layouts. */
struct lin_tiling {
    int rows, tile;
};
static lin_tiling words_tiling(const gpu_lin &a)
{
    if (!words_layout(a) || a.one_row)
        return {1, LIN_TOKENS};
    if (a.T <= 2)
        return {4, 2};
    return a.T <= 8 ? lin_tiling{2, 4} : lin_tiling{4, 8};
}

/* a block takes LIN_WARPS rows of group g whatever R (R warps fewer of R rows
 * each), for the tokens of slice blockIdx.z */
template <int FMT, bool AHEAD, int R, int TILE>
__device__ __forceinline__ void linear_block(const gpu_lin &a, int g)
{
    int lane = threadIdx.x & 31;
    int i = (blockIdx.x * (LIN_WARPS / R) + (threadIdx.x >> 5)) * R;
    int tb = (int)blockIdx.z * LIN_SLICE, te = tb + LIN_SLICE < a.T ? tb + LIN_SLICE : a.T;
    if (i >= a.nrows || tb >= a.T)
        return;     /* the whole warp leaves together: i is the same on its lanes */
    int r = a.row0 + g * a.row_step + i;
    const float *x = a.x + (size_t)g * a.x_step;
    float *y = a.y + (size_t)g * a.y_step + i;
    int nr = a.nrows - i < R ? a.nrows - i : R;
    if constexpr (FMT == WF_INT4_GROUP || FMT == WF_FP8_BLOCK) {
        if (words_layout(a)) {
            linear_words_rows<FMT, AHEAD, R, TILE>(a, r, nr, x, y, lane, tb, te);
            return;
        }
    }
    if constexpr (FMT != WF_INT4_GROUP && R == 1)
        linear_columns_row<FMT, AHEAD>(a, r, x, y, lane, tb, te);
}

template <int FMT, bool AHEAD, int R, int TILE> __global__ void k_linear(gpu_lin a)
{
    linear_block<FMT, AHEAD, R, TILE>(a, blockIdx.y);
}

/* one product of the list per blockIdx.y (gpu_linear_list) */
template <int FMT, bool AHEAD, int R, int TILE> __global__ void k_linear_list(const gpu_lin *list)
{
    gpu_lin a = list[blockIdx.y];
    linear_block<FMT, AHEAD, R, TILE>(a, 0);
}

/* list: NULL for a itself, else the device copy of a list of products of
 * a's format and shape (gpu_linear_list) */
template <int FMT, int R, int TILE>
static void launch_rows(const gpu_lin *a, const gpu_lin *list, dim3 grid, cudaStream_t s)
{
    if (list) {
        void (*kernel)(const gpu_lin *) = a->plain ? k_linear_list<FMT, false, R, TILE>
                                                   : k_linear_list<FMT, true, R, TILE>;
        GPU_LAUNCH(kernel, grid, LIN_WARPS / R * 32, 0, s)(list);
    } else {
        void (*kernel)(gpu_lin) = a->plain ? k_linear<FMT, false, R, TILE>
                                           : k_linear<FMT, true, R, TILE>;
        GPU_LAUNCH(kernel, grid, LIN_WARPS / R * 32, 0, s)(*a);
    }
}

template <int FMT>
static void launch_linear(const gpu_lin *a, const gpu_lin *list, dim3 grid, cudaStream_t s)
{
    if constexpr (FMT == WF_INT4_GROUP || FMT == WF_FP8_BLOCK) {
        lin_tiling k = words_tiling(*a);
        if (k.rows == 4 && k.tile == 2)
            return launch_rows<FMT, 4, 2>(a, list, grid, s);
        if (k.rows == 2)
            return launch_rows<FMT, 2, 4>(a, list, grid, s);
        if (k.rows == 4)
            return launch_rows<FMT, 4, 8>(a, list, grid, s);
    }
    launch_rows<FMT, 1, LIN_TOKENS>(a, list, grid, s);
}

static void linear_dispatch(const gpu_lin *a, const gpu_lin *list, dim3 grid, cudaStream_t s)
{
    switch (a->w.fmt) {
    case WF_F32:
        launch_linear<WF_F32>(a, list, grid, s);
        break;
    case WF_F16:
        launch_linear<WF_F16>(a, list, grid, s);
        break;
    case WF_BF16:
        launch_linear<WF_BF16>(a, list, grid, s);
        break;
    case WF_FP8_BLOCK:
        launch_linear<WF_FP8_BLOCK>(a, list, grid, s);
        break;
    case WF_INT4_GROUP:
        launch_linear<WF_INT4_GROUP>(a, list, grid, s);
        break;
    default:
        fprintf(stderr, "moetier: GPU linear layer of unknown weight format %d\n", a->w.fmt);
        abort();
    }
    GPU_LAUNCHED("linear");
}

void gpu_linear(const gpu_lin *a, cudaStream_t s)
{
    if (a->nrows <= 0 || a->T <= 0 || a->groups <= 0)
        return;
    dim3 grid((unsigned)((a->nrows + LIN_WARPS - 1) / LIN_WARPS), (unsigned)a->groups,
              (unsigned)((a->T + LIN_SLICE - 1) / LIN_SLICE));
    linear_dispatch(a, NULL, grid, s);
}

void gpu_linear_list(const gpu_lin *list_dev, int n, const gpu_lin *like, cudaStream_t s)
{
    if (n <= 0 || like->nrows <= 0 || like->T <= 0)
        return;
    dim3 grid((unsigned)((like->nrows + LIN_WARPS - 1) / LIN_WARPS), (unsigned)n,
              (unsigned)((like->T + LIN_SLICE - 1) / LIN_SLICE));
    linear_dispatch(like, list_dev, grid, s);
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
