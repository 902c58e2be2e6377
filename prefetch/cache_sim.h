/* cache_sim: replays a routing trace through an expert cache, and computes the
 * offline optimum on the same trace.
 *
 * Replay uses the live tiers' own cache (tiers/expert_cache.h with a
 * tiers/cache_policy.h policy) and takes each layer's experts of a step in the
 * order, with the reservations ahead, that the engine and the DRAM tier do
 * (cache_sim.c), so a live run with no lookahead gives the replay's hit counts.
 * One cache per layer of `cache` experts, or with `shared` one cache of
 * `cache` experts for all layers. Belady is the farthest-next-use rule with
 * bypass (a miss need not be cached: it can run from where it is), under the same
 * pinning; no online policy can beat it. */
#ifndef MOETIER_CACHE_SIM_H
#define MOETIER_CACHE_SIM_H

#include "prefetch/routing_trace.h"

typedef struct sim_result {
    uint64_t hits, misses;
} sim_result;

static inline double sim_hit_rate(const sim_result *r)
{
    return r->hits + r->misses ? (double)r->hits / (double)(r->hits + r->misses) : 0.0;
}

/* The order an event takes its experts in: the DRAM tier's (those already
 * cached first, then the misses, each in ascending id, so a miss never evicts
 * an expert of its own event), or one request after another in ascending id
 * (a plain per-request cache, as the trace's README measures LRU). */
typedef enum { SIM_HITS_FIRST, SIM_IN_ORDER } sim_order;

/* policy: a name cache_policy_make knows ("lru", "lru-plain", "lfu", "lfu:H").
 * chunk: tokens per step (1: decode, one token through every layer); a step
 * is up to chunk consecutive tokens of one stream, and each of its layers
 * takes the union of its tokens' experts at once, as a prefill step does. */
int sim_replay(const routing_trace *t, const char *policy, int cache, int shared, sim_order order,
               int chunk, sim_result *r, errbuf *e);
int sim_belady(const routing_trace *t, int cache, int shared, sim_result *r, errbuf *e);

/* Per-layer statistics for `trace stats`. */
typedef struct trace_stats {
    uint64_t events, streams, tokens;   /* tokens: what passed through the layers */
    double top10_share;     /* share of requests that go to each layer's 10 % most used experts */
    double lag1_reuse;      /* share of an event's experts the same stream's next token reuses */
    double uniform_lag1;    /* the same for uniform random routing: top_k / n_experts */
    /* TIERS: experts by where they were found (trace_origin), bytes read, seconds waited */
    uint64_t origin[4];
    uint64_t bytes;
    double stall_s;
    /* PREDICTED, per distance d (index d - 1), over the events that had a prediction
     * at d: their chosen experts, how many of those were predicted, and the experts
     * predicted for their layer (recall = hits / chosen, precision = hits / made) */
    uint64_t pred_chosen[TRACE_MAX_DEPTH], pred_hits[TRACE_MAX_DEPTH];
    uint64_t pred_made[TRACE_MAX_DEPTH];
} trace_stats;

int trace_compute_stats(const routing_trace *t, trace_stats *s, errbuf *e);

#endif
