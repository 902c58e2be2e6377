/* gpu_backend: the backend interface (core/engine/backend.h) on a CUDA device.
 *
 * Every operation runs on the GPU in float32 (activations, accumulation), like
 * the CPU backend, so the golden fp32 profile is the bar for both. Weights
 * reached through linear(), ffn() and the norm/rope tables are the model's:
 * they never change while the model is open, so each is copied to the device
 * once, on first use, and stays there. Routed experts arrive through
 * ffn_batch() in memory the tiers reuse: an expert with a cache key goes
 * through the VRAM expert cache (slots of gpu_expert_slot_bytes, LRU; a miss
 * copies it into a slot), anything else is copied for the call; with
 * cpu_tokens, a missed expert with few tokens is computed on the CPU instead,
 * while the GPU computes the others, to the GPU's bits (gpu_twin.h). Where an
 * expert's bytes come from or where it is computed never changes the result. Builds without CUDA get
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
    int cpu_tokens;                 /* experts the cache misses with at most this many
                                     * tokens run on the CPU (gpu_twin.h); 0: none */
    int cpu_threads;                /* threads for them; <= 0: one per core */
} gpu_options;

typedef struct gpu_cache_stats {
    int slots;
    uint64_t hits, misses;      /* keyed experts found in / copied into the cache */
    uint64_t uncached;          /* experts copied for one call (no key, or no room) */
    uint64_t on_cpu;            /* experts the cache missed, computed on the CPU */
    uint64_t bytes_copied;      /* host to device, experts only */
} gpu_cache_stats;

/* Free and total memory of a device; -1 with the reason when there is none. */
int gpu_device_memory(int device, uint64_t *free_bytes, uint64_t *total_bytes, errbuf *e);

/* --cpu-tokens by default: a missed expert with this many tokens or fewer is
 * computed on the CPU (a stand-in for a cost model with measured bandwidths) */
#define GPU_DEFAULT_CPU_TOKENS 8

/* Most tokens in one call: kernels put tokens on a grid dimension of 65535. */
#define GPU_MAX_TOKENS 65535

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
