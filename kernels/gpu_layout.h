/* gpu_layout: how an expert's three matrices lie in one device slot (each
 * matrix's data, then its scales, every part starting on a GPU_ALIGN boundary),
 * so the planner can size the VRAM expert cache without a device. */
#ifndef MOETIER_GPU_LAYOUT_H
#define MOETIER_GPU_LAYOUT_H

#include <stdint.h>

#include "core/model/linear_weight.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GPU_ALIGN 256

/* Attention's scratch, which the planner counts: split attention (decode over
 * a long context) takes at most GPU_MLA_PART_BYTES for its chunks; the expanded
 * form's keys and values cover at least GPU_MLA_EXPANDED_MIN_POSITIONS
 * positions, rounded up to tiles of GPU_MLA_EXPANDED_TILE. */
#define GPU_MLA_PART_BYTES (128u << 20)
#define GPU_MLA_EXPANDED_MIN_POSITIONS 1024
#define GPU_MLA_EXPANDED_TILE 16

uint64_t gpu_align(uint64_t n);
/* data and scales of one matrix, each aligned */
uint64_t gpu_weight_bytes(const linear_weight *w);
/* one expert's slot: gate, up and down one after another */
uint64_t gpu_expert_slot_bytes(const linear_weight *gate, const linear_weight *up,
                               const linear_weight *down);

#ifdef __cplusplus
}
#endif

#endif
