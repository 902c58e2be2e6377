/* kv_widen_simd: a bf16 or q8_0 KV cache's rows widened to float32 in vectors.
 *
 * The absorbed attention over a q8_0 cache widens every row it reads twice a
 * step (for the scores and for the latents' combination), and the expanded
 * form widens a bf16 or q8_0 cache's rows once per head: one value at a time,
 * that took a third of a q8_0 decode step's attention at 32 K positions and
 * 15 % of a bf16 prompt's. The AVX-512 and AVX2 paths widen 16 or 8 values a
 * vector: bf16 by a shift (exact), q8_0 by a conversion and a multiply by the
 * block's scale, one rounding as kv_q8_widen's; the bits are the scalar
 * functions' (bf16_widen, kv_q8_widen), which the scalar path calls. */
#ifndef MOETIER_KV_WIDEN_SIMD_H
#define MOETIER_KV_WIDEN_SIMD_H

#include <stdint.h>

#include "linear_kernels.h"

/* dst[i] = src[i] as float32, i < n (bf16_widen) */
void bf16_widen_simd(kernel_path path, const uint16_t *src, int n, float *dst);
/* values [c0, c0 + k) of a q8_0 row of n values, as float32 (kv_q8_widen) */
void kv_q8_widen_simd(kernel_path path, const void *row, int n, int c0, int k, float *dst);

#endif
