/* gpu_backend: the backend interface (core/engine/backend.h) on a CUDA device.
 *
 * Every operation runs on the GPU in float32 (activations, accumulation), like
 * the CPU backend, so the golden fp32 profile is the bar for both. Weights
 * reached through linear(), ffn() and the norm/rope tables are the model's:
 * they never change while the model is open, so each is copied to the device
 * once, on first use, and stays there. Routed experts arrive through
 * ffn_batch() in memory the tiers reuse: an expert with a cache key goes
 * through the VRAM expert cache (slots of gpu_expert_slot_bytes, LRU; a miss
 * copies it into a slot), anything else is copied for the call. Where an
 * expert's bytes come from never changes the result. Builds without CUDA get
 * a stub whose create() fails with a reason (gpu_backend_none.c). */
#ifndef MOETIER_GPU_BACKEND_H
#define MOETIER_GPU_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/errbuf.h"
#include "core/engine/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gpu_options {
    int device;                 /* CUDA device ordinal */
    uint64_t expert_cache_bytes;    /* VRAM for routed experts; 0: none, copied per call */
    uint64_t expert_slot_bytes;     /* one expert in the cache (gpu_expert_slot_bytes) */
    int n_expert_keys;              /* cache keys 1..n (layers x routed experts) */
} gpu_options;

typedef struct gpu_cache_stats {
    int slots;
    uint64_t hits, misses;      /* keyed experts found in / copied into the cache */
    uint64_t uncached;          /* experts copied for one call (no key, or no room) */
    uint64_t bytes_copied;      /* host to device, experts only */
} gpu_cache_stats;

/* Free and total memory of a device; -1 with the reason when there is none. */
int gpu_device_memory(int device, uint64_t *free_bytes, uint64_t *total_bytes, errbuf *e);

/* Fails with a reason when the build has no CUDA or the device cannot be used. */
int gpu_backend_create(backend *b, const gpu_options *o, errbuf *e);
/* "NVIDIA H100 80GB HBM3, sm_90, 79.6 GB" */
const char *gpu_backend_device(const backend *b);
/* Bytes of model weights copied to the device so far (they stay resident). */
uint64_t gpu_backend_resident_bytes(const backend *b);
void gpu_backend_cache_stats(const backend *b, gpu_cache_stats *s);

#ifdef __cplusplus
}
#endif

#endif
