/* gpu_bench: the GPU side's numbers (`moetier bench gpu`).
 *
 * Copies: host-to-device speed of expert-sized buffers from pinned memory (the
 * yardstick) and from ordinary pageable memory, in the same run.
 * Overlap: one hybrid batch through the CUDA backend, timed three ways: K
 * experts in VRAM alone, M missed experts on the CPU alone, and both in one
 * batch; the overlap fraction is how much of the shorter side the batch hides,
 * (gpu + cpu - both) / min(gpu, cpu). The same run times the M experts copied
 * from registered host memory through the backend's copy stream against plain
 * copies of the same bytes from pinned memory.
 * Linear: the linear kernel over a set of distinct matrices much larger than
 * the L2 cache (a decode step's stream of weights), with and without reading
 * ahead into L2, against a device-to-device copy of the same memory in the
 * same run (HBM's read plus write bandwidth).
 * Attention: decode attention over a long context both ways the device may
 * run it (a block per head group, or per chunk of the context too), the
 * cache bytes per second against the same yardstick.
 * Prefill attention: a prefill step's attention in the absorbed form (the
 * yardstick: what the backend ran before the expanded form) and in the
 * expanded form, in the same run. */
#ifndef MOETIER_GPU_BENCH_H
#define MOETIER_GPU_BENCH_H

#include <stdint.h>

#include "core/base/errbuf.h"
#include "core/engine/kv_cache.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gpu_copy_result {
    uint64_t bytes;
    int copies;
    double pinned_gbps, pageable_gbps;
} gpu_copy_result;

/* Copies `bytes` host -> device repeatedly for about `seconds` from each kind
 * of memory. */
int gpu_bench_copy(int device, uint64_t bytes, double seconds, gpu_copy_result *r, errbuf *e);

typedef struct gpu_overlap_result {
    int hidden, inter, gpu_experts, cpu_experts, threads;
    uint64_t expert_bytes;      /* one INT4 expert in the cache's layout */
    double gpu_s, cpu_s, both_s;
    double overlap;
    double copy_s;              /* the M experts copied and computed on the GPU */
    double blob_gbps;           /* M x expert_bytes / copy_s */
    double pinned_gbps;         /* plain copies of the same bytes from pinned memory */
} gpu_overlap_result;

/* INT4 experts of hidden x inter (multiples of 32), the best of `reps` runs of
 * each batch; threads <= 0: one per core. */
int gpu_bench_overlap(int device, int hidden, int inter, int gpu_experts, int cpu_experts,
                      int threads, int reps, gpu_overlap_result *r, errbuf *e);

typedef struct gpu_linear_result {
    int fmt, rows, cols, tokens, matrices;
    uint64_t weight_bytes;      /* every matrix's data and scales */
    /* one pass over every matrix, the best of the runs: the kernel as the
     * engine runs it, without reading ahead, with a warp per row */
    double ahead_s, plain_s, one_row_s;
    double ahead_gbps, plain_gbps, one_row_gbps;    /* weight bytes / time */
    double hbm_gbps;            /* device-to-device copy: bytes read and written per second */
    int same_bits;              /* the three gave the same outputs, bit for bit */
} gpu_linear_result;

/* fmt: WF_F32 .. WF_INT4_GROUP (FP8 in 128 x 128 blocks, INT4 in groups of
 * 32); about set_bytes of matrices of rows x cols, each run once per pass with
 * `tokens` tokens, the best of `reps` passes. */
int gpu_bench_linear(int device, int fmt, int rows, int cols, int tokens, uint64_t set_bytes,
                     int reps, gpu_linear_result *r, errbuf *e);

typedef struct gpu_attention_result {
    int context, tokens, layers;
    uint64_t cache_bytes;       /* one layer's latent cache (f32, or bf16 values) */
    /* one layer's attention (absorbed queries, scores and latent sums, output
     * product), the best pass over every layer: a block per token and head
     * group folding every chunk, and a block per chunk too with their merge */
    double whole_s, split_s;
    double whole_gbps, split_gbps;  /* cache bytes / time */
    double hbm_gbps;            /* device-to-device copy: bytes read and written per second */
    int backend_splits;         /* the backend takes the split way at this size here */
    int same_bits;              /* both ways gave the same outputs, bit for bit */
} gpu_attention_result;

/* Kimi K2's attention (64 heads, latent 512, BF16 kv_b) of `tokens` tokens at
 * the end of a context of `context` positions, over distinct layers' caches
 * (float32, bf16 or q8_0: --cache-type) of about set_bytes in all (at most
 * 61), the best of `reps` passes. */
int gpu_bench_attention(int device, int context, int tokens, uint64_t set_bytes, int reps,
                        kv_type cache_type, gpu_attention_result *r, errbuf *e);

typedef struct gpu_prefill_attention_result {
    int context, tokens;
    double absorbed_s, expanded_s;      /* one layer, the best of the runs */
    /* multiply-adds of each form (the expanded form's includes expanding the
     * cache), and their rates */
    double absorbed_macs, expanded_macs;
    double absorbed_tmacs, expanded_tmacs;  /* 1e12 multiply-adds per second */
    double rel_diff;            /* max |expanded - absorbed| / max |absorbed| */
} gpu_prefill_attention_result;

/* Kimi K2's attention (as above) of a step of `tokens` tokens at the end of a
 * context of `context` positions, both forms, the best of `reps` runs each. */
int gpu_bench_prefill_attention(int device, int context, int tokens, int reps,
                                gpu_prefill_attention_result *r, errbuf *e);

#ifdef __cplusplus
}
#endif

#endif
