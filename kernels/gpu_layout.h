/* gpu_layout: how an expert's three matrices lie in one device slot (each
 * matrix's data, then its scales, every part starting on a GPU_ALIGN boundary),
 * so the planner can size the VRAM expert cache without a device. */
#ifndef MOETIER_GPU_LAYOUT_H
#define MOETIER_GPU_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "core/model/linear_weight.h"     /* C names from the .cu files too */

#define GPU_ALIGN 256

/* Attention's scratch, which the planner counts: split attention (decode over
 * a long context) takes at most GPU_MLA_PART_BYTES for its chunks; the expanded
 * form's keys and values cover at least GPU_MLA_EXPANDED_MIN_POSITIONS
 * positions, rounded up to tiles of GPU_MLA_EXPANDED_TILE. */
#define GPU_MLA_PART_BYTES (128u << 20)
#define GPU_MLA_EXPANDED_MIN_POSITIONS 1024
#define GPU_MLA_EXPANDED_TILE 16

/* The latent widths the absorbed attention takes: kv_lora up to
 * GPU_MLA_MAX_LORA (its per-thread accumulators), and a cache row (kv_lora +
 * rope) up to GPU_MLA_MAX_LATENT_ROW, what one head's block holds in the 48 KB
 * of shared memory a block may take without opting in (gpu_mla.cu checks the
 * sum). The family's 512 + 64 is far inside both. */
#define GPU_MLA_MAX_LORA 2048
#define GPU_MLA_MAX_LATENT_ROW 7648

/* 1 when the GPU's attention takes these widths; else 0 and why in `why` */
int gpu_attention_fits(int kv_lora, int rope, char *why, size_t n);

uint64_t gpu_align(uint64_t n);
/* the resident pool for `dense` bytes of weights: a 256th more for the
 * alignment of its arrays and 1 MB for small ones (within the planner's
 * margin, GPU_MARGIN_BYTES) */
uint64_t gpu_pool_bytes(uint64_t dense);
/* data and scales of one matrix, each aligned */
uint64_t gpu_weight_bytes(const linear_weight *w);
/* one expert's slot: gate, up and down one after another */
uint64_t gpu_expert_slot_bytes(const linear_weight *gate, const linear_weight *up,
                               const linear_weight *down);

#ifdef __cplusplus
}
#endif

#endif
