/* gpu_layout: see gpu_layout.h. */
#include "gpu_layout.h"

#include <stdio.h>

uint64_t gpu_align(uint64_t n)
{
    return (n + GPU_ALIGN - 1) / GPU_ALIGN * GPU_ALIGN;
}

uint64_t gpu_pool_bytes(uint64_t dense)
{
    return gpu_align(dense + dense / 256 + (1u << 20));
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

int gpu_attention_fits(int kv_lora, int rope, char *why, size_t n)
{
    if (kv_lora <= GPU_MLA_MAX_LORA && kv_lora + rope <= GPU_MLA_MAX_LATENT_ROW)
        return 1;
    snprintf(why, n, "the GPU attention takes kv_lora_rank up to %d and kv_lora_rank + "
             "qk_rope_head_dim up to %d (this model: %d + %d)", GPU_MLA_MAX_LORA,
             GPU_MLA_MAX_LATENT_ROW, kv_lora, rope);
    return 0;
}
