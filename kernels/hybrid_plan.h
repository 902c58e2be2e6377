/* hybrid_plan: where each routed expert of one batch runs when the GPU and the
 * CPU work at once, and which CPU-computed experts are copied into the VRAM
 * cache as well.
 *
 * The two sides run at the same time, so a batch takes as long as its slower
 * side: the GPU's (the copies of the misses it computes, overlapped with its
 * compute) or the CPU's (the twin kernels, gpu_twin.h). An expert in VRAM
 * always runs on the GPU. A missed one costs bytes / copy rate to bring over
 * (registered or pageable source), or weights x (cpu_row + cpu_token x tokens)
 * seconds on the CPU. Starting from every miss on the GPU, misses move to the
 * CPU, the least CPU time per second of copy saved first, when the move
 * shortens the batch; then single moves either way while one still does, so
 * no one move shortens the result. Then the copy engine's idle time (the batch's length
 * minus the copies it already does) goes to copying CPU-computed experts into
 * the cache too, first the experts predicted for the next layer (jobs of no
 * tokens, in the order given: best first), then CPU-computed experts
 * (promotion), the most tokens first, so the next batches find them. Placement changes only the time a batch takes, never its results (the
 * twin gives the GPU's bits), so the rates can be measured and drift freely. */
#ifndef MOETIER_HYBRID_PLAN_H
#define MOETIER_HYBRID_PLAN_H

#include <stdint.h>

#include "core/model/linear_weight.h"
#include "cpu_kernels/linear_kernels.h"
#include "cpu_kernels/thread_pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hybrid_rates {
    double copy_pinned;     /* bytes/s host to device from registered memory */
    double copy_pageable;   /* bytes/s from pageable memory */
    double gpu;             /* bytes/s the GPU's FFN reads a resident expert at */
    double cpu_row;         /* CPU seconds per weight, once per expert (dequantization) */
    double cpu_token;       /* CPU seconds per weight and token */
} hybrid_rates;

typedef struct hybrid_job {
    uint64_t bytes;         /* what a copy moves and the GPU reads */
    uint64_t weights;       /* elements of gate, up and down */
    int tokens;             /* 0: a predicted expert, nothing to compute */
    int in_vram;
    int pinned;             /* its bytes are in registered host memory */
    int cacheable;          /* it has a cache key: a copy can stay in VRAM */
} hybrid_job;

/* where a job goes: computed on the GPU, on the CPU, on the CPU and copied into
 * VRAM; a predicted expert (no tokens) copied into VRAM, or left alone */
enum { HYBRID_GPU, HYBRID_CPU, HYBRID_CPU_PROMOTE, HYBRID_PREFETCH, HYBRID_SKIP };

/* The GPU's time for an expert grows as one more read of its weights per this
 * many tokens (the linear kernel's widest token tile, gpu_linear.cu; narrower
 * tiles read the rows again from its caches): a rough model that the rate
 * learnt per batch (hybrid_update_gpu) corrects */
#define HYBRID_GPU_TOKENS_PER_READ 8

/* seconds each way, for one job */
double hybrid_copy_seconds(const hybrid_rates *r, const hybrid_job *j);
double hybrid_gpu_seconds(const hybrid_rates *r, const hybrid_job *j);
double hybrid_cpu_seconds(const hybrid_rates *r, const hybrid_job *j);

/* place[i] for jobs[0..n) by the cost model; order: scratch of n ints.
 * Returns the batch's predicted seconds. */
double hybrid_plan_batch(const hybrid_rates *r, const hybrid_job *jobs, int n, unsigned char *place,
                         int *order);
/* a fixed rule instead (--cpu-tokens N): misses with at most max_tokens tokens
 * on the CPU, none promoted, predicted experts left alone */
void hybrid_plan_fixed(const hybrid_job *jobs, int n, int max_tokens, unsigned char *place);

/* Measures cpu_row and cpu_token of the twin on this CPU and pool: a matrix of
 * 1024 rows shaped like `like` (a routed expert's gate: its format and width;
 * NULL: INT4 in groups of 32, 2048 columns) at 1 and 16 tokens, a few
 * milliseconds. The twin's speed per weight differs by format (on AVX2, FP8
 * takes about twice INT4's time per weight). */
void hybrid_measure_cpu(hybrid_rates *r, kernel_path path, thread_pool *pool,
                        const linear_weight *like);
/* After a batch: the CPU side took `seconds` for work the rates predicted at
 * `predicted`; both CPU rates move a quarter of the way towards it (weight
 * formats differ in dequantization cost, the machine's load changes). */
void hybrid_update_cpu(hybrid_rates *r, double predicted, double seconds);
/* The same for the GPU's rate, from the device time of a batch's experts that
 * were already in VRAM (their kernels only: no copies, no CPU): per-batch costs
 * (launches, small grids, the tiles of many tokens) that one large product at
 * start-up does not see. */
void hybrid_update_gpu(hybrid_rates *r, double predicted, double seconds);

#ifdef __cplusplus
}
#endif

#endif
