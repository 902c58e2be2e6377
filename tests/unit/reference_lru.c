/* A plain LRU over pinned events: an event takes its experts in ascending id,
 * with those cached at its start pinned from the start in the tier's order
 * (SIM_HITS_FIRST), and releases them in ascending id (the engine's order).
 * A victim is the oldest expert the event does not use, searched by a scan. */
#include "reference_lru.h"

#include <stdlib.h>
#include <string.h>

uint64_t reference_lru_hits(const routing_trace *t, int cache, int shared, sim_order order)
{
    uint64_t hits = 0, clock = 0;
    size_t keys = (size_t)t->n_layers * t->n_experts;
    uint64_t *stamp = calloc(keys, sizeof *stamp);   /* 0: absent */
    int *count = calloc(t->n_layers, sizeof *count);  /* cached per layer, or in all at [0] */
    for (uint64_t i = 0; i < t->n; i++) {
        size_t base = (size_t)t->layer[i] * t->n_experts;
        int *held = &count[shared ? 0 : t->layer[i]];
        uint16_t x[64];
        memcpy(x, t->experts + i * t->top_k, t->top_k * sizeof *x);
        for (uint32_t a = 0; a < t->top_k; a++)
            for (uint32_t b = a + 1; b < t->top_k; b++)
                if (x[b] < x[a]) {
                    uint16_t tmp = x[a];
                    x[a] = x[b];
                    x[b] = tmp;
                }
        int was[64];      /* cached when the event starts: taken first in the tier's order */
        for (uint32_t j = 0; j < t->top_k; j++)
            was[j] = order == SIM_HITS_FIRST && stamp[base + x[j]] != 0;
        for (uint32_t j = 0; j < t->top_k; j++) {
            uint64_t *s = &stamp[base + x[j]];
            if (*s) {
                hits++;
            } else if (*held < cache) {
                (*held)++;
            } else {   /* evict the oldest not used by this event, in its layer or any */
                size_t first = shared ? 0 : base, end = shared ? keys : base + t->n_experts;
                size_t victim = 0;
                uint64_t oldest = UINT64_MAX;
                for (size_t q = first; q < end; q++) {
                    int pinned = 0;
                    for (uint32_t a = 0; a < t->top_k; a++)
                        pinned |= base + x[a] == q && (a < j || was[a]);
                    if (stamp[q] && !pinned && stamp[q] < oldest) {
                        oldest = stamp[q];
                        victim = q;
                    }
                }
                stamp[victim] = 0;
            }
            *s = UINT64_MAX;    /* pinned while the event lasts: newest */
        }
        clock++;
        for (uint32_t j = 0; j < t->top_k; j++)
            stamp[base + x[j]] = clock * 64 + j + 1;
    }
    free(stamp);
    free(count);
    return hits;
}
