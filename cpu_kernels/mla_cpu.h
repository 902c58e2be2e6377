/* mla_cpu: Multi-head Latent Attention on the CPU, fast: heads split over the
 * thread pool, kv_b dequantized a head at a time with the SIMD kernels, and the
 * prefill expansion of the cached latents done as a float32 matrix product by
 * the linear kernels. Same two formulations and the same math as mla_ref.c
 * (absorbed for a few queries, expanded for many); only float32 summation order
 * differs. */
#ifndef MOETIER_MLA_CPU_H
#define MOETIER_MLA_CPU_H

#include "core/engine/backend.h"
#include "linear_kernels.h"

size_t mla_cpu_scratch(const mla_args *a, int absorbed, int n_threads);
void mla_cpu(kernel_path path, thread_pool *pool, const mla_args *a, int absorbed, float *scratch);

#endif
