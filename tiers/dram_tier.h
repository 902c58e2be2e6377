/* dram_tier: the host memory that holds expert blobs.
 *
 * One arena of fixed-size slots, allocated up front (an impossible budget fails
 * here, not halfway through a run), placed by a NUMA policy with libnuma:
 * interleaved across nodes (the CPU kernels then draw on every node's
 * bandwidth) or local to the node of the allocating thread (later: the GPU's
 * node, for copies). Locked with mlock so the tier is never swapped and copies
 * to the GPU can run from it; a refused lock is reported, not fatal. */
#ifndef MOETIER_DRAM_TIER_H
#define MOETIER_DRAM_TIER_H

#include <stdint.h>
#include <stdio.h>

#include "core/base/errbuf.h"

typedef enum numa_policy { NUMA_AUTO, NUMA_LOCAL, NUMA_INTERLEAVE } numa_policy;

typedef struct dram_arena {
    uint8_t *base;
    uint64_t bytes;
    int locked;
    int numa_nodes;
    const char *placement;      /* what was done, for the plan printout */
} dram_arena;

int dram_arena_alloc(dram_arena *a, uint64_t bytes, numa_policy p, FILE *log, errbuf *e);
void dram_arena_free(dram_arena *a);
int numa_policy_parse(const char *s, numa_policy *out);

#endif
