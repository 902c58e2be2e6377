/* expert_cache: which expert sits in which slot of a tier, and who is using it.
 *
 * Keys are dense expert numbers (layer * n_experts + expert); slots are the
 * tier's fixed-size places (DRAM blobs now, VRAM slots later). A slot is FREE,
 * LOADING (its bytes are on the way) or READY. A pinned slot (pin count > 0) is
 * in use and is never evicted; when the last pin goes, the slot is handed to the
 * eviction policy. All operations are O(1) apart from the policy's own cost. */
#ifndef MOETIER_EXPERT_CACHE_H
#define MOETIER_EXPERT_CACHE_H

#include <stdint.h>

#include "cache_policy.h"

typedef enum { SLOT_FREE, SLOT_LOADING, SLOT_READY } slot_state;

typedef struct expert_cache {
    int n_keys, n_slots;
    int *slot_of_key;       /* -1: not resident */
    int *key_of_slot;       /* -1: free */
    int *pins;
    unsigned char *state;
    int *free_slots;
    int n_free;
    uint32_t step;          /* 0 until the first expert_cache_begin_step */
    uint32_t *used_step;    /* [n_slots] the step that last pinned each slot */
    cache_policy policy;
} expert_cache;

/* Takes ownership of policy (destroyed with the cache). */
int expert_cache_init(expert_cache *c, int n_keys, int n_slots, cache_policy policy);
void expert_cache_free(expert_cache *c);
/* Slot of key, or -1. Does not pin. */
static inline int expert_cache_find(const expert_cache *c, int key)
{
    return c->slot_of_key[key];
}
/* A new step begins (see scan resistance above). */
static inline void expert_cache_begin_step(expert_cache *c)
{
    /* a server steps ~1,000 times a second: wrap (past 0, which means "no
     * steps") instead of overflowing; a slot last used 2^32 steps ago only
     * looks recent */
    if (++c->step == 0)
        c->step = 1;
}
/* Whether acquiring a key that is not resident would now evict an expert used
 * in this step (the step is larger than the cache). */
int expert_cache_scanning(const expert_cache *c);
/* Pins key's slot. When key is not resident, takes a free slot or evicts the
 * policy's victim, maps key to it in state LOADING and sets *loaded = 0 (the
 * caller fills it and calls expert_cache_ready); *evicted_key gets the key that
 * lost the slot, or -1. Returns the slot, or -1 when every slot is pinned. */
int expert_cache_acquire(expert_cache *c, int key, int *resident, int *evicted_key);
/* The same, but a miss evicts the expert made evictable last whenever the
 * policy can tell (a read ahead of the engine in a scan: it must not take the
 * slot of an expert a later layer will hit). */
int expert_cache_acquire_recent(expert_cache *c, int key, int *resident, int *evicted_key);
void expert_cache_ready(expert_cache *c, int slot);
/* Drops one pin; a READY slot with no pins left becomes evictable. */
void expert_cache_release(expert_cache *c, int slot);
/* A load failed: the slot goes back to FREE (its pins are dropped). */
void expert_cache_discard(expert_cache *c, int slot);

#endif
