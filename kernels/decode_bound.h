/* decode_bound: the time a decode step of the GPU backend cannot beat, from
 * what the step did and the rates the backend measured (hybrid_plan.h).
 *
 * The GPU reads every resident weight once per token (the dense and attention
 * weights, less the embedding table, of which a token reads one row), the
 * routed experts it computes and the KV cache up to the token's position; the
 * CPU computes the missed experts it was given; the copy engine moves the
 * experts copied to the GPU. The three run at once at best, so a step takes at
 * least the longest of them. Attention's multiply-adds and kernel launches are
 * left out: the bound is the reads'. */
#ifndef MOETIER_DECODE_BOUND_H
#define MOETIER_DECODE_BOUND_H

#include <stdint.h>

#include "kernels/hybrid_plan.h"

#ifdef __cplusplus
extern "C" {
#endif

/* what the decode steps did, in all */
typedef struct decode_work {
    uint64_t tokens;
    double seconds;             /* measured */
    uint64_t resident_bytes;    /* read by the GPU per token */
    uint64_t gpu_experts;       /* routed experts computed on the GPU */
    uint64_t cpu_experts;       /* on the CPU, one token each */
    uint64_t expert_bytes;      /* one expert as the GPU reads it */
    uint64_t expert_weights;    /* its elements (gate, up, down) */
    uint64_t bytes_copied;      /* experts copied to the GPU */
    uint64_t kv_bytes;          /* of the KV cache, read by the steps' attention */
} decode_work;

/* seconds per token */
typedef struct decode_bound {
    double gpu, cpu, copy;      /* each side's time */
    double bound;               /* the longest */
    double measured;
    double fraction;            /* bound / measured: 1 at the bound */
} decode_bound;

/* -1 when there is nothing to bound (no tokens, a rate not measured) */
int decode_bound_compute(const hybrid_rates *r, const decode_work *w, decode_bound *b);

#ifdef __cplusplus
}
#endif

#endif
