/* expert_source: "give me expert e of layer l".
 *
 * The engine reads every routed expert through this one interface, so where the
 * bytes live (the checkpoint's mmap today; DRAM, NVMe and VRAM tiers later) never
 * changes what it computes. get() fills the views of the expert's gate, up and
 * down projections and keeps them valid until the matching put(); an expert held
 * between get() and put() is in use and must not be evicted. */
#ifndef MOETIER_EXPERT_SOURCE_H
#define MOETIER_EXPERT_SOURCE_H

#include <limits.h>
#include <stdio.h>

#include "core/base/errbuf.h"
#include "core/model/linear_weight.h"

/* Where a get() found the expert (the numbering of trace_origin). */
typedef enum expert_origin {
    EXPERT_MAPPED = 0,          /* the checkpoint mapping */
    EXPERT_DRAM = 1,            /* already in the DRAM tier */
    EXPERT_STORE = 2,           /* read from the store for this layer */
    EXPERT_EARLY = 3,           /* read from the store early, on a prediction */
} expert_origin;

typedef struct expert_view {
    linear_weight gate, up, down;
    /* filled by get(): where the expert was, the bytes read from the store for
     * it and the seconds get() waited */
    unsigned char origin;
    uint32_t bytes_read;
    float stall_s;
    int node;                   /* OS number of the NUMA node holding it, -1: unknown */
} expert_view;

typedef struct expert_source {
    const char *name;
    void *impl;
    /* how many experts the engine may hold at once (got, not yet put); 0 or 1:
     * one at a time. A source where a held expert could change what another
     * get() evicts says 1, so its cache decisions never depend on the backend
     * (the experts its prefetch() holds may still be held together).
     * INT_MAX: nothing is ever evicted (every expert is where it stays): get()
     * never waits for a read, so the engine may also hold experts of a later
     * layer (expert_source_never_evicts). */
    int max_held;
    int (*get)(struct expert_source *s, int layer, int expert, expert_view *out, errbuf *e);
    void (*put)(struct expert_source *s, int layer, int expert);
    /* optional: the engine will get() these experts of `layer` next, in this
     * order; the source may start bringing them all in now. Returns how many of
     * them, from the first, it now holds for the engine: their get() evicts
     * nothing, so the engine may hold all of those at once whatever max_held
     * says (predicted reads aside, the source then evicts as it would for
     * experts got one at a time). */
    int (*prefetch)(struct expert_source *s, int layer, const int *experts, int n);
    /* optional: how many of these experts of `layer` (the rest of the last
     * announcement, in its order), from the first, the source holds for the
     * engine now: as for prefetch's count, their get() evicts nothing. It can
     * exceed what prefetch returned: a source may reserve more as the engine
     * takes them. */
    int (*reserved)(struct expert_source *s, int layer, const int *experts, int n);
    /* optional: a prediction that these experts of a later `layer` will be
     * wanted, best first; the source may start reading some of them into a
     * faster tier (bounded, never evicting an expert in use) */
    void (*speculate)(struct expert_source *s, int layer, const int *experts, int n);
    /* optional: fills out only when the expert is here already (no read, no
     * wait), without holding it and without changing what the source evicts
     * next; the views stay valid until the next call into the source. Returns
     * 0, or -1 when it is not here. Lets the engine hand a backend a later
     * layer's predicted experts from a source that evicts. */
    int (*peek)(struct expert_source *s, int layer, int expert, expert_view *out);
    /* optional: per-tier statistics for --stats */
    void (*print_stats)(struct expert_source *s, FILE *out);
    void (*destroy)(struct expert_source *s);
} expert_source;

static inline int expert_source_never_evicts(const expert_source *s)
{
    return s->max_held == INT_MAX;
}

static inline int expert_source_get(expert_source *s, int layer, int expert, expert_view *out,
                                    errbuf *e)
{
    return s->get(s, layer, expert, out, e);
}

static inline int expert_source_prefetch(expert_source *s, int layer, const int *experts, int n)
{
    return s->prefetch ? s->prefetch(s, layer, experts, n) : 0;
}

static inline void expert_source_speculate(expert_source *s, int layer, const int *experts, int n)
{
    if (s->speculate)
        s->speculate(s, layer, experts, n);
}

static inline void expert_source_put(expert_source *s, int layer, int expert)
{
    if (s->put)
        s->put(s, layer, expert);
}

#endif
