/* planner: where the weights go, decided before anything is loaded.
 *
 * Dense weights (attention, dense FFN, shared experts, embeddings, lm_head) are
 * read from the checkpoint's mapping and counted separately. Routed experts come
 * from the expert store through the DRAM tier (--dram-gb of blob slots) and the
 * NVMe tier, or, with no store, straight from the checkpoint's mapping. A plan
 * that cannot work is refused with the numbers that rule it out. */
#ifndef MOETIER_PLANNER_H
#define MOETIER_PLANNER_H

#include <stdio.h>

#include "core/engine/kv_cache.h"
#include "tiers/dram_tier.h"
#include "tiers/nvme_tier.h"
#include "tiers/store.h"

/* The tier flags of run, logits, chat (and serve); all zero is the default. */
typedef struct tier_flags {
    const char *store_dir;      /* --store; NULL: DIR/moetier-store when complete */
    double dram_gb;             /* --dram-gb, when dram_gb_set */
    int dram_gb_set;            /* 0: automatic */
    io_mode io;                 /* --io auto|uring|pread */
    numa_policy numa;           /* --numa auto|split|interleave|local */
    int stats;                  /* --stats */
    const char *policy;         /* --policy: DRAM tier eviction (NULL: lru) */
    int lookahead;              /* --lookahead N, when lookahead_set */
    int lookahead_set;          /* 0: TIER_DEFAULT_LOOKAHEAD */
    double vram_gb;             /* --vram-gb: the GPU's budget, when vram_gb_set */
    int vram_gb_set;            /* 0: what the GPU has free */
    /* host memory another part of the process takes as it runs (the server's
     * prompt cache), left out of the automatic DRAM budget */
    uint64_t reserve_bytes;
    /* the KV cache: kv_positions of every sequence's cache, its values of
     * kv_type (--cache-type). In host memory (the CPU backend's) the host
     * plan leaves it out of the automatic budget and shows it; on a device
     * (kv_on_device) the GPU plan counts it instead (the context's positions
     * when kv_positions is 0). */
    int kv_positions;
    kv_type kv_type;
    int kv_on_device;
} tier_flags;

/* MoE layers ahead whose experts are predicted and read early (--lookahead) */
#define TIER_DEFAULT_LOOKAHEAD 1
#define TIER_MAX_LOOKAHEAD 8

typedef struct tier_plan {
    int use_store;
    int store_interrupted;      /* no store: the default one's conversion stopped part way */
    char store_dir[4096];       /* (without a store: "", or the interrupted one) */
    uint64_t dense_bytes;
    uint64_t dense_read_bytes;  /* of them, what a decode token reads: all but the embedding table (a row) */
    uint64_t slot_bytes;        /* per expert in the store */
    int n_experts;              /* routed experts of the model */
    int moe_layers, top_k;
    int dram_slots;
    char policy[32];            /* the DRAM tier's eviction (--policy), for the printout */
    uint64_t mem_total, mem_available;
    uint64_t reserve_bytes;     /* tier_flags.reserve_bytes taken off an automatic budget */
    uint64_t kv_bytes;          /* the KV cache in RAM beside the tier (tier_flags) */
    int kv_positions;
    int kv_left_out;            /* kv_bytes taken off an automatic budget */
} tier_plan;

/* Consumes a tier flag at argv[*i]: 1 when consumed, -1 bad value, 0 not one. */
int tier_flags_parse(tier_flags *f, int argc, char **argv, int *i);
extern const char *const tier_flags_usage;

/* The GPU side: dense and attention weights, the KV cache and the activations
 * resident, the rest of the budget in expert slots. */
typedef struct gpu_plan {
    uint64_t budget;            /* --vram-gb, or 0.9 of the free device memory */
    uint64_t dev_free, dev_total;   /* 0: no device measured (a plan for --vram-gb only) */
    uint64_t dense_bytes, kv_bytes, act_bytes;
    uint64_t slot_bytes;        /* one expert in VRAM (gpu_expert_slot_bytes) */
    int slots, n_experts, moe_layers, top_k;
    int chunk;                  /* prompt tokens per prefill step the plan holds */
} gpu_plan;

/* what the resident pool's slack (gpu_pool_bytes: a 256th of the dense bytes
 * and 1 MB), the allocator's rounding of the scratch buffers and small buffers
 * take */
#define GPU_MARGIN_BYTES (256ull << 20)

/* Device memory besides the weights and the KV cache for prefill chunks of
 * `chunk` tokens: activations, the backend's scratch and a margin. */
uint64_t gpu_plan_activation_bytes(const model_config *c, int chunk, uint64_t slot_bytes,
                                   kv_type kv);

/* The prefill step on the GPU when --chunk is not given: the largest power of
 * two from GPU_CHUNK_MIN to GPU_CHUNK_MAX whose activations (beyond those of
 * no tokens) take at most 1 / GPU_CHUNK_SHARE of the budget and still fit
 * beside the weights and the KV cache, and at most the context. Each step
 * brings about every routed expert of a layer to the GPU once (copied, or
 * computed on the CPU), whatever its length, so a prompt costs those copies
 * once per step: K2's ~9.5 GB of INT4 experts per layer are ~0.19 s over
 * PCIe 5, about 11 s a step over its 60 MoE layers, which 256 tokens a step
 * turn into ~45 ms a token and 2,048 into ~6. Steps are multiples of
 * GPU_MLA_EXPANDED_TOKENS (kernels/gpu_backend.h), so a prompt token's
 * attention form does not depend on the step. */
#define GPU_CHUNK_MIN 256
#define GPU_CHUNK_MAX 4096
#define GPU_CHUNK_SHARE 16

/* Refuses a budget that cannot hold what must be resident, naming the parts.
 * chunk: --chunk, or 0 for the default above (g->chunk: the one planned). */
int gpu_plan_make(gpu_plan *g, const tier_plan *p, const model_config *c, const tier_flags *f,
                  int ctx, int chunk, uint64_t slot_bytes, uint64_t dev_free, uint64_t dev_total,
                  errbuf *e);
void gpu_plan_print(const gpu_plan *g, FILE *out);

/* Decides the plan; with a store, opens it into *st (caller closes). */
int tier_plan_make(tier_plan *p, const model_weights *mw, const tier_flags *f, store *st, errbuf *e);
/* the KV cache's bytes for `positions` of every layer in values of type kv */
uint64_t kv_cache_bytes(const model_config *c, int positions, kv_type kv);
void tier_plan_print(const tier_plan *p, FILE *out);

#endif
