/* tiered_source: the expert_source that serves experts from the DRAM tier, with
 * the NVMe tier (the expert store) behind it.
 *
 * The DRAM tier is a cache of `dram_slots` blobs. When it can hold every expert,
 * they are all read at open (with progress) and the NVMe tier is not used again;
 * otherwise a miss reads the blob into a slot chosen by the cache policy. A
 * layer's experts are announced together (prefetch), so all its misses are in
 * flight at once while the engine computes the experts already resident. The
 * engine's predictions for later layers (speculate) wait in a queue, best
 * first, and are read only while the store is nearly idle (fewer than
 * SPEC_IDLE_READS reads in flight), so a layer's own reads never queue behind
 * more than that; at most spec_slots are in flight, each pinning its slot only
 * until it lands; a newer prediction for a layer replaces the one still
 * waiting, and predictions for a layer that has routed are dropped. When the
 * current layer needs a slot they hold, they are waited for first.
 *
 * A prefill step wants nearly every expert of every layer, more than a tier
 * smaller than the model holds. The tier marks each pass of the model as a
 * step of its cache (a layer announced at or below the last one starts one),
 * which then resists the scan (expert_cache.h): a miss that would evict an
 * expert this step used takes one of the step's last-used slots instead, so
 * the tier keeps most of what it held for the next step. Such misses are
 * reserved at most TIER_READ_AHEAD ahead of the engine (not the whole tier
 * at once), and every get() tops the reservations up again, so that many
 * reads stay in flight while the engine computes. In such a step (and the
 * one after it) predicted reads count against the same bound, take the
 * slot used last and hold it until the next layer is announced, so they
 * neither evict what a later layer will hit nor lose their slot to the
 * layer's own reads before they are used. Bytes are
 * never changed on the way: logits do not depend on the budget or on
 * prediction. */
#ifndef MOETIER_TIERED_SOURCE_H
#define MOETIER_TIERED_SOURCE_H

#include <stdio.h>

#include "tiers/dram_tier.h"
#include "tiers/expert_source.h"
#include "tiers/nvme_tier.h"
#include "tiers/store.h"

typedef struct tier_layer_stats {
    uint64_t hits;              /* DRAM hits: held from an earlier use */
    uint64_t early;             /* read from NVMe early, on a prediction (a read
                                 * all the same, ahead of the engine) */
    uint64_t misses;            /* read from NVMe when asked for */
    uint64_t bytes_read;
    double stall_seconds;       /* time the engine waited for NVMe reads */
} tier_layer_stats;

/* Reads started on a prediction (the engine's lookahead). */
typedef struct tier_spec_stats {
    uint64_t reads;             /* experts read early */
    uint64_t used;              /* of those, how many the engine then used */
    uint64_t dropped;           /* predictions dropped before their read started */
    uint64_t failed;            /* reads that failed (the engine reads the expert again) */
    int max_in_flight;          /* the bound (0: speculation is off) */
    int peak_in_flight;         /* the most in flight at once */
} tier_spec_stats;

/* a layer's misses that take slots this step used are reserved at most this
 * many ahead of the engine */
#define TIER_READ_AHEAD 8

/* predicted reads start only while fewer reads than this are in flight */
#define SPEC_IDLE_READS 2

typedef struct tiered_options {
    int dram_slots;
    int spec_slots;             /* predicted reads in flight at most; 0: a quarter of the
                                 * slots; < 0: no speculation */
    numa_policy numa;
    const char *policy;         /* eviction policy name (NULL: lru) */
    nvme_options io;
    FILE *log;                  /* progress and notices; NULL: silent */
} tiered_options;

/* Opens the source over an open store (which must outlive it). */
int tiered_source_open(expert_source *out, const store *st, const tiered_options *o, errbuf *e);
/* Statistics of a tiered source: [n_layers], NULL for other sources. */
const tier_layer_stats *tiered_source_stats(const expert_source *s, int *n_layers);
/* Those of all its layers together into *sum; 0, or -1 (sum zeroed) for
 * another source. */
int tiered_source_totals(const expert_source *s, tier_layer_stats *sum);
/* The DRAM tier's memory (for a device to register), NULL for other sources. */
const dram_arena *tiered_source_arena(const expert_source *s);
/* Statistics of predicted reads, NULL for other sources. */
const tier_spec_stats *tiered_source_spec_stats(const expert_source *s);

#endif
