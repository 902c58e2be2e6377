/* gpu_ops: the CUDA kernels' launchers, shared by the backend's operation
 * table (gpu_backend.cu) and the files that hold the kernels. Every pointer is
 * device memory unless its comment says otherwise; every launcher queues its
 * work on stream s and returns at once. */
#ifndef MOETIER_GPU_OPS_CUH
#define MOETIER_GPU_OPS_CUH

#include <cuda_runtime.h>

#include "gpu_layout.h"
#include "gpu_weight.cuh"

extern "C" {
#include "core/engine/kv_q8.h"
}

/* Kernel launches and dynamic shared memory go through these two macros so the
 * same sources also build for the CPU emulation the tests run without a GPU
 * (tests/cuda_emu: a block's threads as fibers). */
#ifdef MOETIER_CUDA_EMU
#define GPU_LAUNCH(kernel, grid, block, smem, stream) \
    emu_launcher(kernel, dim3(grid), dim3(block), smem, stream)
#define GPU_DYNAMIC_SMEM(type, name) type *name = (type *)emu_dynamic_smem()
#else
#define GPU_LAUNCH(kernel, grid, block, smem, stream) kernel<<<grid, block, smem, stream>>>
#define GPU_DYNAMIC_SMEM(type, name) extern __shared__ type name[]
#endif

/* A product of rows of w with T token vectors, in G groups (blockIdx.y): group
 * g computes, for i < nrows and t < T,
 *   y[g * y_step + t * ys + i] = sum_c w(row0 + g * row_step + i, c) * x[g * x_step + t * xs + c]
 * One plain linear layer is G = 1, row0 = 0, nrows = rows, xs = cols, ys = rows;
 * attention's per-head products are one group per head. */
struct gpu_lin {
    gpu_weight w;
    int row0, nrows, row_step, groups;
    const float *x;
    size_t xs, x_step;
    float *y;
    size_t ys, y_step;
    int T;
    int plain;      /* no reading ahead into L2 } yardsticks of */
    int one_row;    /* a warp per row at any token count } `bench gpu --linear` */
};
void gpu_linear(const gpu_lin *a, cudaStream_t s);
/* n products in one launch: list_dev[k] (device memory) is a product of one
 * group whose weight has like's format and shape; like (host memory) is the
 * one with the most tokens (they choose the rows per warp). Each gives the
 * bits gpu_linear would. */
void gpu_linear_list(const gpu_lin *list_dev, int n, const gpu_lin *like, cudaStream_t s);

/* out[t] = row ids[t] of emb (ids in device memory) */
void gpu_embed(const gpu_weight *emb, const int *ids, int T, float *out, cudaStream_t s);
/* g[i] = silu(g[i]) * u[i] */
void gpu_silu_mul(float *g, const float *u, size_t n, cudaStream_t s);

/* MLA attention, absorbed form, for T tokens at positions pos0.. (see mla_args
 * in backend.h; the same layout, device pointers). qa and ol are scratch of
 * T * H * kv_lora floats each. part: NULL, or gpu_mla_split_floats(a, sms)
 * floats of scratch, where the cache's chunks are attended by blocks of
 * their own and merged by one more kernel (same bits). */
struct gpu_mla_args {
    gpu_weight kv_b;
    const float *q;
    int T, pos0, H, nope, rope, v, kv_lora;
    const float *kv_cache;
    const uint16_t *kv_bf16;    /* the cache as bf16 instead (kv_cache NULL) */
    const void *kv_q8;          /* or as q8_0 rows (core/engine/kv_q8.h) of q8_row_bytes */
    size_t q8_row_bytes;
    float scale;
    float *out;
    float *qa, *ol;
    float *part;
};
/* value c of row s of a's cache, as float32 (a q8_0 value as the host widens
 * it: its int8 times its block's scale, one rounding) */
__device__ __forceinline__ float kv_at(const gpu_mla_args &a, size_t s, int c)
{
    int row = a.kv_lora + a.rope;
    if (a.kv_q8) {
        const float *scale = (const float *)((const char *)a.kv_q8 + s * a.q8_row_bytes);
        int blocks = (row + KV_Q8_BLOCK - 1) / KV_Q8_BLOCK;
        const signed char *q = (const signed char *)(scale + blocks);
        return __fmul_rn((float)q[c], scale[c / KV_Q8_BLOCK]);
    }
    size_t i = s * (size_t)row + (size_t)c;
    return a.kv_bf16 ? __uint_as_float((uint32_t)a.kv_bf16[i] << 16) : a.kv_cache[i];
}
void gpu_mla(const gpu_mla_args *a, cudaStream_t s);
/* Floats of `part` that splitting the positions takes, when that is worth it
 * on a device of `sms` multiprocessors (the tokens' head groups leave most of
 * them idle and the context has several chunks); 0 when it is not. */
size_t gpu_mla_split_floats(const gpu_mla_args *a, int sms);
/* MLA attention in the expanded form (gpu_mla.cu): each cached latent expanded
 * into every head's key and value (kvx: gpu_mla_expanded_block(a) x H x
 * (nope + v) floats), then scores, softmax and values per head; state: T x H x
 * (2 + v) floats. qa, ol and part are not used. Fewer multiply-adds than the
 * absorbed form once a call has a few hundred tokens; a token's bits do not
 * depend on the call's other tokens (but differ from the absorbed form's).
 * gpu_mla_expanded_fits: the head shapes its kernel takes. */
int gpu_mla_expanded_fits(const gpu_mla_args *a);
size_t gpu_mla_expanded_block(const gpu_mla_args *a);
/* wide: with a bf16 or q8_0 cache, gpu_mla_expanded_block(a) x (kv_lora +
 * rope) floats where each block's rows are widened for the expansion's
 * product (else NULL) */
void gpu_mla_expanded(const gpu_mla_args *a, float *kvx, float *state, float *wide, cudaStream_t s);
/* dst[i] = src[i] rounded to bf16 (nearest even; NaN stays NaN) */
void gpu_store_bf16(uint16_t *dst, const float *src, size_t n, cudaStream_t s);
/* T rows of `row` values quantized into q8_0 rows, one after another, as
 * kv_q8_quantize does on the host (the same bytes) */
void gpu_store_q8_0(void *dst, const float *src, int T, int row, cudaStream_t s);


/* max (or sum) of each of v[0..N) over the block, every thread gets them; red:
 * N x 32 floats of shared memory. Every thread calls it; the block is whole warps. */
template <int N> __device__ __forceinline__ void block_reduce_n(float *v, float *red, bool take_max)
{
#pragma unroll
    for (int g = 0; g < N; g++)
        for (int o = 16; o > 0; o >>= 1) {
            float w = __shfl_xor_sync(0xffffffffu, v[g], o);
            v[g] = take_max ? fmaxf(v[g], w) : v[g] + w;
        }
    __syncthreads();        /* the previous reduction's readers are done with red */
    if ((threadIdx.x & 31) == 0)
#pragma unroll
        for (int g = 0; g < N; g++)
            red[g * 32 + (threadIdx.x >> 5)] = v[g];
    __syncthreads();
#pragma unroll
    for (int g = 0; g < N; g++) {
        float r = red[g * 32];
        for (int i = 1; i < (int)(blockDim.x >> 5); i++)
            r = take_max ? fmaxf(r, red[g * 32 + i]) : r + red[g * 32 + i];
        v[g] = r;
    }
}

/* the same for one value; red: 32 floats */
__device__ __forceinline__ float block_reduce(float v, float *red, bool take_max)
{
    block_reduce_n<1>(&v, red, take_max);
    return v;
}

/* Aborts with the call site when a CUDA call failed: the backend's operations
 * return nothing, and computing on after a device fault would give garbage. */
void gpu_check(cudaError_t err, const char *what, const char *file, int line);
#define GPU_CHECK(call) gpu_check((call), #call, __FILE__, __LINE__)
/* after a launch: the launch error, and with MOETIER_CUDA_SYNC=1 the kernel's own */
void gpu_after_launch(const char *what, const char *file, int line);
#define GPU_LAUNCHED(what) gpu_after_launch((what), __FILE__, __LINE__)

#endif
