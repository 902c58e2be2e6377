/* reference_lru: a plain LRU replay of a routing trace, written independently
 * of expert_cache and cache_sim, that the replay and tune's predictions are
 * checked against. */
#ifndef MOETIER_REFERENCE_LRU_H
#define MOETIER_REFERENCE_LRU_H

#include <stdint.h>

#include "prefetch/cache_sim.h"

/* Hits of an LRU of `cache` experts per layer, or of `cache` in all when
 * `shared`, over the trace's events one at a time (chunk 1). */
uint64_t reference_lru_hits(const routing_trace *t, int cache, int shared, sim_order order);

#endif
