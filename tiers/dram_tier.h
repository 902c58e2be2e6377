/* dram_tier: the host memory that holds expert blobs.
 *
 * One arena of fixed-size slots, allocated up front (an impossible budget fails
 * here, not halfway through a run), placed by a NUMA policy with libnuma:
 * split (the default with several nodes: each node holds a contiguous share of
 * the slots, and consecutive slots alternate between the nodes, so a layer's
 * experts spread over every node and each node's threads compute the ones in
 * its memory), interleaved page by page, or local to the node of the allocating
 * thread (later: the GPU's node, for copies). Locked with mlock so the tier is
 * never swapped and copies to the GPU can run from it; a refused lock is
 * reported, not fatal. */
#ifndef MOETIER_DRAM_TIER_H
#define MOETIER_DRAM_TIER_H

#include <stdint.h>
#include <stdio.h>

#include "core/base/errbuf.h"

typedef enum numa_policy { NUMA_AUTO, NUMA_LOCAL, NUMA_INTERLEAVE, NUMA_SPLIT } numa_policy;

#define DRAM_MAX_NODES 64

typedef struct dram_arena {
    uint8_t *base;
    uint64_t bytes;
    uint64_t unit;              /* bytes of one slot */
    int n_units;
    int locked;
    int numa_nodes;
    /* split placement: node k (OS number node_os[k]) holds the slots at
     * positions start[k] .. start[k + 1] - 1; n_split 0: not split */
    int n_split;
    int node_os[DRAM_MAX_NODES];
    int start[DRAM_MAX_NODES + 1];
    const char *placement;      /* what was done, for the plan printout */
} dram_arena;

int dram_arena_alloc(dram_arena *a, int n_units, uint64_t unit, numa_policy p, FILE *log,
                     errbuf *e);
void dram_arena_free(dram_arena *a);
/* Slot i's memory, and the OS number of the NUMA node it is placed on (-1:
 * not placed by slot). */
uint8_t *dram_arena_unit(const dram_arena *a, int i);
int dram_arena_node(const dram_arena *a, int i);
/* The split placement of n_units slots over n_nodes: slot i is at position
 * split_position (on node i % n_nodes); start[k] is node k's first position. */
void dram_split_starts(int n_units, int n_nodes, int *start);
int dram_split_position(const int *start, int n_nodes, int i);
int numa_policy_parse(const char *s, numa_policy *out);

#endif
