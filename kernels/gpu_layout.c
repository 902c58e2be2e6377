/* gpu_layout: see gpu_layout.h. */
#include "gpu_layout.h"

uint64_t gpu_align(uint64_t n)
{
    return (n + GPU_ALIGN - 1) / GPU_ALIGN * GPU_ALIGN;
}

uint64_t gpu_weight_bytes(const linear_weight *w)
{
    return gpu_align(linear_weight_data_bytes(w)) + gpu_align(linear_weight_scale_bytes(w));
}

uint64_t gpu_expert_slot_bytes(const linear_weight *gate, const linear_weight *up,
                               const linear_weight *down)
{
    return gpu_weight_bytes(gate) + gpu_weight_bytes(up) + gpu_weight_bytes(down);
}
