/* cache_sim: policy replay, Belady with bypass, trace statistics (see cache_sim.h). */
#include "cache_sim.h"

#include <stdlib.h>
#include <string.h>

#include "tiers/expert_cache.h"
#include "tiers/tiered_source.h"

static int check_cache(const routing_trace *t, int cache, errbuf *e)
{
    if (cache < (int)t->top_k)
        return err_set(e, "a cache of %d experts cannot hold the %u experts one event uses at once",
                       cache, t->top_k);
    return 0;
}

/* The layer being replayed: its keys in ascending order, their slots, which
 * are reserved ahead, and which of those were misses. */
typedef struct sim_layer {
    int *key, *slot;
    unsigned char *reserved, *missed;
    int n;
} sim_layer;

/* Misses may take a slot used in this step only while fewer than
 * TIER_READ_AHEAD reads are ahead (tiered_source.c). */
static int may_reserve(const expert_cache *c, int ahead)
{
    return !expert_cache_scanning(c) || ahead < TIER_READ_AHEAD;
}

/* Acquires v's j-th key; -1 when every slot is pinned. */
static int sim_acquire(expert_cache *c, sim_layer *v, int j, sim_result *r)
{
    int resident, evicted;
    int s = expert_cache_acquire(c, v->key[j], &resident, &evicted);
    if (s < 0)
        return -1;
    v->slot[j] = s;
    v->missed[j] = !resident;
    if (resident) {
        r->hits++;
    } else {
        r->misses++;
        expert_cache_ready(c, s);
    }
    return 0;
}

/* One layer of a step, its experts in ascending key. In order: one request
 * after another, all held to the end. Hits first: as the DRAM tier takes it
 * (tiered_prefetch, tiered_get, read_ahead): the cached experts reserved, then
 * the misses in order while a slot is free or the step is not scanning the
 * cache (or fewer than TIER_READ_AHEAD reads are ahead); then each expert in
 * order is got (a reservation, or acquired then), the reservations topped up
 * until TIER_READ_AHEAD reads are ahead, and released. */
static int replay_layer(expert_cache *c, sim_layer *v, sim_order order, sim_result *r)
{
    int n = v->n;
    if (order == SIM_IN_ORDER) {
        for (int j = 0; j < n; j++)
            if (sim_acquire(c, v, j, r))
                return -1;
        for (int j = 0; j < n; j++)
            expert_cache_release(c, v->slot[j]);
        return 0;
    }
    int ahead = 0, m = n < c->n_slots ? n : c->n_slots, next = 0;
    memset(v->reserved, 0, (size_t)n);
    for (int j = 0; j < m; j++)
        if (expert_cache_find(c, v->key[j]) >= 0) {
            sim_acquire(c, v, j, r);    /* resident: takes no slot, cannot fail */
            v->reserved[j] = 1;
        }
    for (; next < m; next++) {
        if (v->reserved[next])
            continue;
        if (!may_reserve(c, ahead) || sim_acquire(c, v, next, r))
            break;
        v->reserved[next] = 1;
        ahead += v->missed[next];
    }
    for (int j = 0; j < n; j++) {
        if (v->reserved[j]) {
            v->reserved[j] = 0;
            ahead -= v->missed[j];
        } else if (sim_acquire(c, v, j, r)) {
            return -1;
        }
        for (next = next > j + 1 ? next : j + 1; next < n && ahead < TIER_READ_AHEAD; next++) {
            if (v->reserved[next])
                continue;
            if (sim_acquire(c, v, next, r))
                break;
            v->reserved[next] = 1;
            ahead += v->missed[next];
        }
        expert_cache_release(c, v->slot[j]);
    }
    return 0;
}

int sim_replay(const routing_trace *t, const char *policy, int cache, int shared, sim_order order,
               int chunk, sim_result *r, errbuf *e)
{
    memset(r, 0, sizeof *r);
    if (check_cache(t, cache, e))
        return -1;
    if (chunk < 1)
        return err_set(e, "a step needs at least one token (chunk %d)", chunk);
    int n_caches = shared ? 1 : (int)t->n_layers;
    int n_keys = shared ? (int)(t->n_layers * t->n_experts) : (int)t->n_experts;
    int slots = cache < n_keys ? cache : n_keys;
    /* in order, a layer's experts of a step are all held until the layer ends */
    int64_t held = (int64_t)chunk * t->top_k < t->n_experts ? (int64_t)chunk * t->top_k
                                                            : (int64_t)t->n_experts;
    if (order == SIM_IN_ORDER && slots < held)
        return err_set(e, "in order, a layer holds all its experts of a step: steps of %d tokens "
                       "need a cache of %lld experts, not %d", chunk, (long long)held, cache);
    int L = (int)t->n_layers, E = (int)t->n_experts;
    expert_cache *c = calloc((size_t)n_caches, sizeof *c);
    unsigned char *chosen = calloc((size_t)L * (size_t)E, 1);  /* [layer][expert] in this step */
    sim_layer v = {malloc((size_t)E * sizeof(int)), malloc((size_t)E * sizeof(int)),
                   malloc((size_t)E), malloc((size_t)E), 0};
    int rc = !c || !chosen || !v.key || !v.slot || !v.reserved || !v.missed
                 ? err_set(e, "out of memory") : 0;
    for (int i = 0; i < n_caches && !rc; i++) {
        cache_policy p;
        if (cache_policy_make(&p, policy, slots, n_keys, shared ? L : 1))
            rc = err_set(e, "unknown cache policy '%s' (lru, lru-plain, lfu, lfu:H)", policy);
        else if (expert_cache_init(&c[i], n_keys, slots, p))
            rc = err_set(e, "out of memory");
    }
    /* a step: up to `chunk` consecutive tokens of one stream (the trace's
     * events run by stream, token, layer); each layer takes the union of its
     * tokens' experts, as the engine announces a layer's experts for a step */
    for (uint64_t i = 0; i < t->n && !rc;) {
        uint64_t j = i;
        for (; j < t->n && t->stream[j] == t->stream[i] && t->token[j] >= t->token[i] &&
               t->token[j] - t->token[i] < (uint32_t)chunk; j++)
            for (uint32_t k = 0; k < t->top_k; k++)
                chosen[(size_t)t->layer[j] * E + t->experts[j * t->top_k + k]] = 1;
        for (int ci = 0; ci < n_caches; ci++)
            expert_cache_begin_step(&c[ci]);
        for (int l = 0; l < L && !rc; l++) {
            v.n = 0;
            for (int x = 0; x < E; x++)
                if (chosen[(size_t)l * E + x]) {
                    chosen[(size_t)l * E + x] = 0;
                    v.key[v.n++] = shared ? l * E + x : x;
                }
            if (v.n && replay_layer(&c[shared ? 0 : l], &v, order, r))
                rc = err_set(e, "every slot is pinned (cache %d)", cache);
        }
        i = j;
    }
    for (int i = 0; i < n_caches && c; i++)
        if (c[i].n_slots)
            expert_cache_free(&c[i]);
    free(c);
    free(chosen);
    free(v.key);
    free(v.slot);
    free(v.reserved);
    free(v.missed);
    return rc;
}

/* ---- Belady with bypass ---- */

typedef struct heap_entry {
    uint64_t next;
    uint32_t key;
} heap_entry;

typedef struct max_heap {
    heap_entry *v;
    size_t n, cap;
} max_heap;

static int heap_push(max_heap *h, heap_entry x)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        heap_entry *v = realloc(h->v, cap * sizeof *v);
        if (!v)
            return -1;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    h->v[i] = x;
    while (i > 0 && h->v[(i - 1) / 2].next < h->v[i].next) {
        heap_entry tmp = h->v[(i - 1) / 2];
        h->v[(i - 1) / 2] = h->v[i];
        h->v[i] = tmp;
        i = (i - 1) / 2;
    }
    return 0;
}

static heap_entry heap_pop(max_heap *h)
{
    heap_entry top = h->v[0];
    h->v[0] = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && h->v[l].next > h->v[m].next)
            m = l;
        if (r < h->n && h->v[r].next > h->v[m].next)
            m = r;
        if (m == i)
            break;
        heap_entry tmp = h->v[m];
        h->v[m] = h->v[i];
        h->v[i] = tmp;
        i = m;
    }
    return top;
}

#define NEVER UINT64_MAX

int sim_belady(const routing_trace *t, int cache, int shared, sim_result *r, errbuf *e)
{
    memset(r, 0, sizeof *r);
    if (check_cache(t, cache, e))
        return -1;
    size_t n_req = (size_t)t->n * t->top_k, n_keys = (size_t)t->n_layers * t->n_experts;
    int n_caches = shared ? 1 : (int)t->n_layers;
    uint64_t *next = malloc(n_req * sizeof *next);
    uint64_t *last = malloc(n_keys * sizeof *last);
    uint64_t *cur = malloc(n_keys * sizeof *cur);       /* next use of a resident key */
    unsigned char *resident = calloc(n_keys, 1);
    int *count = calloc((size_t)n_caches, sizeof *count);
    max_heap *heaps = calloc((size_t)n_caches, sizeof *heaps);
    int rc = 0;
    if (!next || !last || !cur || !resident || !count || !heaps) {
        rc = err_set(e, "out of memory for Belady over %zu requests", n_req);
        goto out;
    }
    /* keys are layer * n_experts + expert in both modes: per-layer caches see
     * only their own layer's keys */
    for (size_t k = 0; k < n_keys; k++)
        last[k] = NEVER;
    for (size_t p = n_req; p-- > 0;) {
        size_t i = p / t->top_k;
        size_t key = (size_t)t->layer[i] * t->n_experts + t->experts[p];
        next[p] = last[key];
        last[key] = p;
    }
    heap_entry aside[64];
    for (uint64_t i = 0; i < t->n && !rc; i++) {
        int ci = shared ? 0 : t->layer[i];
        max_heap *h = &heaps[ci];
        const uint16_t *x = t->experts + i * t->top_k;
        uint32_t ev_keys[64];
        for (uint32_t j = 0; j < t->top_k; j++)
            ev_keys[j] = (uint32_t)(t->layer[i] * t->n_experts + x[j]);
        for (uint32_t j = 0; j < t->top_k && !rc; j++) {
            size_t p = (size_t)i * t->top_k + j;
            uint32_t key = ev_keys[j];
            if (resident[key]) {
                r->hits++;
                cur[key] = next[p];
                if (heap_push(h, (heap_entry){next[p], key}))
                    rc = err_set(e, "out of memory");
                continue;
            }
            r->misses++;
            if (next[p] == NEVER)
                continue;   /* never used again: bypass */
            if (count[ci] < cache) {
                resident[key] = 1;
                cur[key] = next[p];
                count[ci]++;
                if (heap_push(h, (heap_entry){next[p], key}))
                    rc = err_set(e, "out of memory");
                continue;
            }
            /* the resident key used farthest in the future, not one of this event's */
            int n_aside = 0;
            heap_entry victim = {0, UINT32_MAX};
            while (h->n > 0) {
                heap_entry top = heap_pop(h);
                if (!resident[top.key] || cur[top.key] != top.next)
                    continue;   /* stale */
                int pinned = 0;
                for (uint32_t q = 0; q < j; q++)
                    pinned |= ev_keys[q] == top.key;
                if (pinned) {
                    aside[n_aside++] = top;
                    continue;
                }
                victim = top;
                break;
            }
            for (int q = 0; q < n_aside && !rc; q++)
                if (heap_push(h, aside[q]))
                    rc = err_set(e, "out of memory");
            if (victim.key == UINT32_MAX || victim.next <= next[p]) {
                if (victim.key != UINT32_MAX && heap_push(h, victim))
                    rc = err_set(e, "out of memory");
                continue;   /* bypass: everything cached is needed sooner */
            }
            resident[victim.key] = 0;
            resident[key] = 1;
            cur[key] = next[p];
            if (heap_push(h, (heap_entry){next[p], key}))
                rc = err_set(e, "out of memory");
        }
    }
out:
    if (heaps)
        for (int c = 0; c < n_caches; c++)
            free(heaps[c].v);
    free(heaps);
    free(next);
    free(last);
    free(cur);
    free(resident);
    free(count);
    return rc;
}

/* ---- statistics ---- */

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

int trace_compute_stats(const routing_trace *t, trace_stats *s, errbuf *e)
{
    memset(s, 0, sizeof *s);
    size_t L = t->n_layers, E = t->n_experts, K = t->top_k;
    uint64_t *uses = calloc(L * E, sizeof *uses);
    int64_t *prev = malloc(L * sizeof *prev);   /* last event of the current stream per layer */
    /* events per layer of the current stream: every token computed passes
     * each layer once, so the largest count is its tokens (its positions need
     * not start at 0: a stream can go on from a prefix computed before) */
    uint64_t *per_layer = calloc(L, sizeof *per_layer);
    if (!uses || !prev || !per_layer) {
        free(uses);
        free(prev);
        free(per_layer);
        return err_set(e, "out of memory");
    }
    uint64_t reused = 0, pairs = 0;
    for (uint64_t i = 0; i <= t->n; i++) {
        if (i == t->n || i == 0 || t->stream[i] != t->stream[i - 1]) {
            uint64_t most = 0;
            for (size_t q = 0; q < L; q++) {
                most = per_layer[q] > most ? per_layer[q] : most;
                per_layer[q] = 0;
                prev[q] = -1;
            }
            s->tokens += most;
            if (i == t->n)
                break;
            s->streams++;
        }
        size_t l = t->layer[i];
        per_layer[l]++;
        const uint16_t *x = t->experts + i * K;
        for (size_t j = 0; j < K; j++)
            uses[l * E + x[j]]++;
        if (prev[l] >= 0 && t->token[prev[l]] + 1 == t->token[i]) {
            const uint16_t *y = t->experts + (uint64_t)prev[l] * K;
            for (size_t a = 0; a < K; a++)
                for (size_t b = 0; b < K; b++)
                    reused += y[a] == x[b];
            pairs += K;
        }
        prev[l] = (int64_t)i;
        if (t->flags & TRACE_FLAG_TIERS) {
            for (size_t j = 0; j < K; j++)
                s->origin[t->origin[i * K + j] & 3]++;
            s->bytes += t->bytes[i];
            s->stall_s += t->stall[i];
        }
        for (uint32_t d = 0; d < t->depth; d++) {
            uint16_t made = t->pred_count[i * t->depth + d];
            if (!made)
                continue;
            s->pred_made[d] += made;
            s->pred_chosen[d] += K;
            s->pred_hits[d] += (uint64_t)__builtin_popcountll(t->pred_mask[i * t->depth + d]);
        }
    }
    s->events = t->n;
    size_t top = E / 10 ? E / 10 : 1;
    double share = 0;
    int layers_seen = 0;
    for (size_t l = 0; l < L; l++) {
        uint64_t *u = uses + l * E, total = 0, best = 0;
        qsort(u, E, sizeof *u, cmp_desc);
        for (size_t x = 0; x < E; x++)
            total += u[x];
        for (size_t x = 0; x < top; x++)
            best += u[x];
        if (total) {
            share += (double)best / (double)total;
            layers_seen++;
        }
    }
    s->top10_share = layers_seen ? share / layers_seen : 0;
    s->lag1_reuse = pairs ? (double)reused / (double)pairs : 0;
    s->uniform_lag1 = (double)K / (double)E;
    free(uses);
    free(prev);
    free(per_layer);
    return 0;
}
