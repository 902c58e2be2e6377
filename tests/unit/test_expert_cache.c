/* expert_cache with the LRU policy against a plain reference: random acquire,
 * ready, release, discard and new-step sequences; the O(1) cache must pick the
 * same victims as "the unpinned resident slot released longest ago, unless
 * that one was pinned in the current step: then the one released last" (scan
 * resistance), and must never evict a pinned slot. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "tiers/expert_cache.h"

typedef struct ref {
    int n_keys, n_slots;
    int key_of_slot[64], pins[64], state[64];
    long released_at[64];       /* time the slot last became evictable */
    int used_step[64];          /* the step that last pinned the slot */
    long clock;
    int step;                   /* 0: no step marked yet */
} ref;

/* The evictable slot released longest ago (newest: last), -1 when none. */
static int ref_evictable(const ref *r, int newest)
{
    int best = -1;
    for (int s = 0; s < r->n_slots; s++)
        if (r->key_of_slot[s] >= 0 && r->pins[s] == 0 && r->state[s] == SLOT_READY &&
            (best < 0 || (newest ? r->released_at[s] > r->released_at[best]
                                 : r->released_at[s] < r->released_at[best])))
            best = s;
    return best;
}

/* Every slot is taken and the oldest was pinned in this step. */
static int ref_scanning(const ref *r)
{
    int oldest = ref_evictable(r, 0);
    for (int s = 0; s < r->n_slots; s++)
        if (r->key_of_slot[s] < 0)
            return 0;
    return oldest >= 0 && r->step > 0 && r->used_step[oldest] == r->step;
}

static int ref_victim(const ref *r)
{
    return ref_evictable(r, ref_scanning(r));
}

Test(expert_cache, lru_matches_reference)
{
    srand(12345);
    for (int round = 0; round < 40; round++) {
        int n_slots = 1 + rand() % 12, n_keys = n_slots + 1 + rand() % 20;
        expert_cache c;
        cache_policy p;
        cr_assert_eq(cache_policy_lru(&p, n_slots), 0);
        cr_assert_eq(expert_cache_init(&c, n_keys, n_slots, p), 0);
        ref r = {.n_keys = n_keys, .n_slots = n_slots};
        for (int s = 0; s < n_slots; s++)
            r.key_of_slot[s] = -1;
        int steps = round % 2;  /* half the rounds never mark steps: plain LRU */
        for (int i = 0; i < 2000; i++) {
            int op = rand() % 20;
            if (op == 19) {     /* a new step */
                if (steps) {
                    expert_cache_begin_step(&c);
                    r.step++;
                }
            } else if (op < 10) {   /* acquire a random key */
                int key = rand() % n_keys, resident, evicted;
                int had = expert_cache_find(&c, key);
                int free_slots = 0;
                for (int s = 0; s < n_slots; s++)
                    free_slots += r.key_of_slot[s] < 0;
                int want_victim = had >= 0 || free_slots ? -2 : ref_victim(&r);
                cr_assert_eq(expert_cache_scanning(&c), ref_scanning(&r));
                int s = expert_cache_acquire(&c, key, &resident, &evicted);
                cr_assert_eq(resident, had >= 0);
                if (want_victim == -1) {
                    cr_assert_eq(s, -1, "a slot was taken although every slot is in use");
                    continue;
                }
                cr_assert_geq(s, 0);
                if (want_victim >= 0) {
                    cr_assert_eq(s, want_victim, "LRU chose slot %d, the reference %d", s,
                                 want_victim);
                    cr_assert_eq(evicted, r.key_of_slot[s]);
                }
                if (!resident) {
                    r.key_of_slot[s] = key;
                    r.state[s] = SLOT_LOADING;
                    r.pins[s] = 0;
                }
                r.pins[s]++;
                r.used_step[s] = r.step;
            } else if (op < 14) {   /* a load completes */
                for (int s = 0; s < n_slots; s++)
                    if (r.state[s] == SLOT_LOADING && r.key_of_slot[s] >= 0) {
                        expert_cache_ready(&c, s);
                        r.state[s] = SLOT_READY;
                        if (r.pins[s] == 0)
                            r.released_at[s] = ++r.clock;
                        break;
                    }
            } else if (op < 18) {   /* release a random pinned slot */
                int s = rand() % n_slots;
                if (r.pins[s] > 0) {
                    expert_cache_release(&c, s);
                    if (--r.pins[s] == 0 && r.state[s] == SLOT_READY)
                        r.released_at[s] = ++r.clock;
                }
            } else {                /* a load fails */
                int s = rand() % n_slots;
                if (r.key_of_slot[s] >= 0 && r.state[s] == SLOT_LOADING) {
                    expert_cache_discard(&c, s);
                    r.key_of_slot[s] = -1;
                    r.pins[s] = 0;
                    r.state[s] = SLOT_FREE;
                }
            }
            for (int s = 0; s < n_slots; s++) {
                cr_assert_eq(c.key_of_slot[s], r.key_of_slot[s]);
                cr_assert_eq(c.pins[s], r.pins[s]);
            }
        }
        expert_cache_free(&c);
    }
}

/* An LFU half-life counts one layer's accesses: a cache that L layers share
 * decays over H x L of its accesses, so "lfu:H" for L layers picks the victims
 * cache_policy_lfu picks with a half-life of H x L, and not those of H. */
Test(expert_cache, lfu_half_life_is_per_layer_of_a_shared_cache)
{
    enum { SLOTS = 8, KEYS = 40, LAYERS = 4 };
    cache_policy made, scaled, unscaled;
    cr_assert_eq(cache_policy_make(&made, "lfu:6", SLOTS, KEYS, LAYERS), 0);
    cr_assert_eq(cache_policy_lfu(&scaled, SLOTS, KEYS, 6.0 * LAYERS), 0);
    cr_assert_eq(cache_policy_lfu(&unscaled, SLOTS, KEYS, 6.0), 0);
    cache_policy *p[3] = {&made, &scaled, &unscaled};
    expert_cache c[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(expert_cache_init(&c[i], KEYS, SLOTS, *p[i]), 0);
    srand(7);
    int differs_unscaled = 0;
    for (int step = 0; step < 4000; step++) {
        /* skewed keys: low ones often */
        int key = rand() % (1 + rand() % KEYS), slot[3], resident[3], evicted[3];
        for (int i = 0; i < 3; i++) {
            slot[i] = expert_cache_acquire(&c[i], key, &resident[i], &evicted[i]);
            cr_assert_geq(slot[i], 0);
            if (!resident[i])
                expert_cache_ready(&c[i], slot[i]);
            expert_cache_release(&c[i], slot[i]);
        }
        cr_assert(resident[0] == resident[1] && evicted[0] == evicted[1],
                  "step %d: lfu:6 over %d layers evicted %d, a half-life of %d evicted %d", step,
                  LAYERS, evicted[0], 6 * LAYERS, evicted[1]);
        differs_unscaled |= evicted[2] != evicted[1];
    }
    cr_expect(differs_unscaled, "the half-life made no difference: the test shows nothing");
    for (int i = 0; i < 3; i++)
        expert_cache_free(&c[i]);
}

/* Steps wrap past 0 ("no steps marked", which would turn scan resistance off)
 * instead of overflowing. */
Test(expert_cache, steps_wrap_past_zero)
{
    expert_cache c;
    cache_policy p;
    cr_assert_eq(cache_policy_lru(&p, 2), 0);
    cr_assert_eq(expert_cache_init(&c, 3, 2, p), 0);
    c.step = UINT32_MAX;
    expert_cache_begin_step(&c);
    cr_expect_eq(c.step, 1u, "step %u after the last", c.step);
    expert_cache_free(&c);
}
