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
