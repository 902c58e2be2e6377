/* mla_cpu: Multi-head Latent Attention on the CPU, fast: heads split over the
 * thread pool, kv_b dequantized a head at a time with the SIMD kernels, and
 * both forms done as float32 matrix products by the linear kernels.
 *
 * The expanded form (a prompt's chunk) goes over the cache a block of 256
 * positions at a time: the block's latents expanded into the head's keys and
 * values, then per block of 64 queries their scores, a running softmax (each
 * query's output so far rescaled when its largest score grows, as in flash
 * attention) and the probabilities times the values. Its buffers so stay a
 * few MB a worker at any context (whole-context keys and values took 2.5 KB a
 * position and worker), and the blocks stay in cache (docs/benchmarks.md).
 *
 * The absorbed form (decode) takes every head at once: the scores are a
 * float32 product of the cache's rows with every head's query, and the
 * probabilities times the latents one linear_combine_many straight over the
 * cache's rows (no transposed copy of the latents), so the cache is read twice
 * a step instead of twice per head (a bf16 cache's values widened in the
 * kernels' registers). A q8_0 cache is read a block of 256 positions at a
 * time, each worker widening its block (kv_widen_simd) for the same float32
 * products: the bits of a float32 cache holding the widened rows, one
 * dispatch per product. Per head, each query's
 * W_k^T q_nope is a combination of W_k's dequantized rows (no transpose) and
 * W_v is read as the checkpoint holds it, not dequantized: at a short context
 * these per-head products were most of a decode step's attention. Same two
 * formulations and the same math as mla_ref.c (absorbed for a few queries,
 * expanded for many); only float32 summation order differs, and on the SIMD
 * paths the softmax's exponentials (softmax_simd: within 2 ulp of expf). */
#ifndef MOETIER_MLA_CPU_H
#define MOETIER_MLA_CPU_H

#include "core/engine/backend.h"
#include "linear_kernels.h"

size_t mla_cpu_scratch(const mla_args *a, int absorbed, int n_threads);
/* 1 when the absorbed form takes fewer multiply-adds for this call than the
 * expanded one: a few queries, or many against a long cache (a chat turn
 * after a cached conversation), where expanding every cached latent into
 * each head's keys and values costs more than the queries' attention */
int mla_cpu_absorbs(const mla_args *a);
void mla_cpu(kernel_path path, thread_pool *pool, const mla_args *a, int absorbed, float *scratch);

#endif
