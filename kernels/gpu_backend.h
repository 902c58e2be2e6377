/* gpu_backend: the backend interface (core/engine/backend.h) on a CUDA device.
 *
 * Every operation runs on the GPU in float32 (activations, accumulation), like
 * the CPU backend, so the golden fp32 profile is the bar for both. Weights
 * reached through linear(), ffn() and the norm/rope tables are the model's:
 * they never change while the model is open, so each is copied to the device
 * once, on first use, into the resident pool taken at create, and stays there.
 * Routed experts arrive through ffn_batch() in memory the tiers reuse: an
 * expert with a cache key goes through the VRAM expert cache (slots of
 * gpu_expert_slot_bytes, LRU), anything else through one of two staging
 * buffers. Copies run on their own stream: a slot's copy waits (an event) for
 * the kernels still reading the slot's previous expert, and the kernels of its
 * new expert wait for the copy; a batch returns once its copies are done,
 * because the tiers may then reuse the bytes. With hybrid execution, a missed
 * expert may be computed on the CPU instead, while the GPU computes the others,
 * to the GPU's bits (gpu_twin.h); which ones, and which of those are copied
 * into the cache as well, a cost model with measured rates decides
 * (hybrid_plan.h) or a fixed token threshold. The cost model also copies
 * experts predicted for the next layer (jobs of no tokens) into the cache in
 * the copy engine's idle time. Where an expert's bytes come from or where it is
 * computed never changes the result. Builds without CUDA get a stub whose
 * create() fails with a reason (gpu_backend_none.c). */
#ifndef MOETIER_GPU_BACKEND_H
#define MOETIER_GPU_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/errbuf.h"
#include "core/engine/backend.h"
#include "kernels/hybrid_plan.h"

/* A prefill step's first GPU_MLA_EXPANDED_TOKENS x k tokens take attention's
 * expanded form, the rest the absorbed one. The GPU plan's steps are multiples
 * of it (GPU_CHUNK_MIN in tiers/planner.h) or a whole prompt, so which form a
 * token gets does not depend on the step the plan chose for a memory budget. */
#define GPU_MLA_EXPANDED_TOKENS 256

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gpu_options {
    int device;                 /* CUDA device ordinal */
    uint64_t resident_bytes;        /* the model's dense and attention weights (the
                                     * planner's total): one allocation at create holds
                                     * them; 0: each array gets its own on first use */
    uint64_t expert_cache_bytes;    /* VRAM for routed experts; 0: none, copied per call */
    uint64_t expert_slot_bytes;     /* one expert in the cache (gpu_expert_slot_bytes) */
    int n_expert_keys;              /* cache keys 1..n (layers x routed experts) */
    int cpu_tokens;                 /* GPU_CPU_TOKENS_AUTO: the cost model places missed
                                     * experts; N > 0: those with at most N tokens run on
                                     * the CPU (gpu_twin.h); 0: none on the CPU */
    int cpu_threads;                /* threads for them; <= 0: one per core */
    const hybrid_rates *rates;      /* the cost model's rates; NULL: measured at create */
    const linear_weight *expert_like;   /* a routed expert's gate: the CPU rates are
                                         * measured on its format and width (NULL: INT4) */
    const char *policy;             /* the cache's eviction (cache_policy_make; NULL: lru) */
    int policy_layers;              /* layers sharing the cache (an LFU half-life is per layer) */
} gpu_options;

typedef struct gpu_cache_stats {
    int slots;
    const char *policy;         /* the eviction policy's name (NULL without slots) */
    uint64_t hits, misses;      /* keyed experts found in / copied into the cache */
    uint64_t uncached;          /* experts copied for one call (no key, no room, or a
                                 * step larger than the cache kept them out) */
    uint64_t on_cpu;            /* experts the cache missed, computed on the CPU */
    uint64_t promoted;          /* of those, copied into the cache too */
    uint64_t prefetched;        /* predicted experts copied into the cache */
    uint64_t bytes_copied;      /* host to device, experts only */
    uint64_t waits;             /* times the host waited for the device's queue */
    uint64_t launches;          /* kernels launched */
    uint64_t resident_unpooled; /* bytes of resident weights outside the resident pool
                                 * (none asked for, or full) */
} gpu_cache_stats;

/* Free and total memory of a device; -1 with the reason when there is none. */
int gpu_device_memory(int device, uint64_t *free_bytes, uint64_t *total_bytes, errbuf *e);

/* gpu_options.cpu_tokens (and --cpu-tokens auto, the default): the cost model
 * of hybrid_plan.h places missed experts, with rates measured at create */
#define GPU_CPU_TOKENS_AUTO (-1)

/* Most tokens in one call: kernels put tokens on a grid dimension of 65535
 * (GPU_GRID_Y, the device's limit for y and z). */
#define GPU_GRID_Y 65535
#define GPU_MAX_TOKENS GPU_GRID_Y

/* Fails with a reason when the build has no CUDA or the device cannot be used.
 * The operations may then be called from any thread, one at a time: each makes
 * o->device the calling thread's current device first. */
int gpu_backend_create(backend *b, const gpu_options *o, errbuf *e);
/* "NVIDIA H100 80GB HBM3, sm_90, 79.6 GB" */
const char *gpu_backend_device(const backend *b);
/* The device's multiprocessors: attention splits a context over blocks when a
 * call has fewer blocks than this (tests size their batches by it). */
int gpu_backend_multiprocessors(const backend *b);
/* Bytes of model weights copied to the device so far (they stay resident). */
uint64_t gpu_backend_resident_bytes(const backend *b);
void gpu_backend_cache_stats(const backend *b, gpu_cache_stats *s);
/* The cost model's rates (measured, then the CPU's adjusted after each batch). */
void gpu_backend_rates(const backend *b, hybrid_rates *r);
/* Registers host memory that routed experts are served from (the DRAM tier)
 * with the device, so copies from it run asynchronously at full speed; -1 with
 * the reason when the device refuses (copies then go through the driver's
 * staging, slower). At most GPU_MAX_REGISTERED ranges. */
#define GPU_MAX_REGISTERED 8
int gpu_backend_register_host(backend *b, void *p, uint64_t bytes, errbuf *e);

#ifdef __cplusplus
}
#endif

#endif
