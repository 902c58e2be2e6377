/* gpu_twin: what the CUDA backend's linear and FFN kernels compute, computed on
 * the CPU to the same bits, so an expert may run on either side (hybrid
 * execution) without the logits depending on where it ran.
 *
 * The GPU kernel (gpu_linear.cu) gives each of a warp's 32 lanes the columns
 * c = lane, lane + 32, ... and accumulates w x with FMAs in that order from 0,
 * then adds the lanes in a butterfly (lane ^ 16, 8, 4, 2, 1); INT4 and FP8
 * lanes take whole 32-bit words instead (words lane, lane + 32, ...: per word
 * a chain of code value times x over its 8 or 4 columns, times the scale into
 * the lane's sum; FP8 only when its rows and blocks are whole words). Here:
 * the weights are dequantized bit-identically to linear_ref (as the GPU's
 * gw_at; words to their codes' values, the scale applied per word), the 32
 * sums of a row run in SIMD registers, several rows at once (INT4, FP8 and
 * BF16 dequantized in registers, other formats rows into scratch), and the
 * butterfly is done the same way; other CPUs take one lane at a time with
 * fmaf (the same bits, slower: the reference the SIMD code is tested
 * against). The FFN's gate uses gm_silu_mul (gpu_math.h) on both sides. */
#ifndef MOETIER_GPU_TWIN_H
#define MOETIER_GPU_TWIN_H

#include <stddef.h>

#include "core/model/linear_weight.h"
#include "cpu_kernels/linear_kernels.h"
#include "cpu_kernels/thread_pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* floats of scratch for an FFN of T tokens through gate [I][h] and down [h][I] */
size_t gpu_twin_ffn_scratch(const linear_weight *gate, const linear_weight *down, int T,
                            int n_threads);
/* floats of scratch for gpu_twin_linear of T tokens over `cols` columns */
size_t gpu_twin_linear_scratch(int cols, int T, int n_threads);
/* y [T][rows] = w x, host memory; scratch: gpu_twin_linear_scratch floats */
void gpu_twin_linear(kernel_path path, thread_pool *pool, const linear_weight *w, const float *x,
                     int T, float *y, float *scratch);
/* out [T][h] = down(silu(gate x) * up x), host memory */
void gpu_twin_ffn(kernel_path path, thread_pool *pool, const linear_weight *gate,
                  const linear_weight *up, const linear_weight *down, const float *x, int T,
                  float *out, float *scratch);

#ifdef __cplusplus
}
#endif

#endif
