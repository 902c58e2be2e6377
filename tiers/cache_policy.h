/* cache_policy: which resident expert to evict, behind one small interface.
 *
 * The expert cache (expert_cache.h) tells the policy when a slot becomes
 * evictable (loaded and no longer in use: that is also an access) and when it
 * stops being evictable (taken into use again, or freed); the policy picks a
 * victim among the evictable slots. Pinned slots are never offered, so a policy
 * cannot evict an expert the current layer is using. LRU is the default; the
 * same interface serves the DRAM tier and the VRAM tier. */
#ifndef MOETIER_CACHE_POLICY_H
#define MOETIER_CACHE_POLICY_H

typedef struct cache_policy {
    const char *name;
    void *st;
    /* slot holds a resident, unused expert; `key` identifies the expert */
    void (*evictable)(void *st, int slot, int key);
    /* slot is pinned again or freed */
    void (*unevictable)(void *st, int slot);
    /* removes and returns an evictable slot, -1 when there is none */
    int (*victim)(void *st);
    /* optional, both or neither (a policy with them resists scans, expert_cache.h):
     * the slot victim() would return, without removing it (-1: none), and
     * removes and returns the slot made evictable last (-1: none) */
    int (*peek)(void *st);
    int (*newest)(void *st);
    void (*destroy)(void *st);
} cache_policy;

/* Least recently used, O(1) for every operation; resists scans. */
int cache_policy_lru(cache_policy *p, int n_slots);
/* Frequency with aging (counts halve every half_life accesses), O(log n); keys are
 * 0..n_keys-1. */
int cache_policy_lfu(cache_policy *p, int n_slots, int n_keys, double half_life);
/* "lru", "lru-plain" (LRU without scan resistance), "lfu" (half-life
 * CACHE_LFU_HALF_LIFE accesses) or "lfu:H" (half-life H accesses); -1 for an
 * unknown name. The half-life counts the accesses of one layer: a cache that
 * `layers` layers share halves every H x layers accesses
 * (one cache for all of a model's layers sees each layer's in turn, so the
 * same decay per token as a cache per layer). */
int cache_policy_make(cache_policy *p, const char *name, int n_slots, int n_keys, int layers);
/* Whether name is a policy cache_policy_make knows (for checking a flag). */
int cache_policy_name_ok(const char *name);
/* Tuned on the dev half of the real routing trace (docs/benchmarks.md): best at
 * 10, 25 and 50 % per-layer caches alike. */
#define CACHE_LFU_HALF_LIFE 128.0

#endif
