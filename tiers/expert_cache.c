/* expert_cache: key <-> slot maps, pins and states (see expert_cache.h). */
#include "expert_cache.h"

#include <stdlib.h>
#include <string.h>

int expert_cache_init(expert_cache *c, int n_keys, int n_slots, cache_policy policy)
{
    memset(c, 0, sizeof *c);
    c->n_keys = n_keys;
    c->n_slots = n_slots;
    c->policy = policy;
    c->slot_of_key = malloc((size_t)n_keys * sizeof(int));
    c->key_of_slot = malloc((size_t)n_slots * sizeof(int));
    c->pins = calloc((size_t)n_slots, sizeof(int));
    c->state = calloc((size_t)n_slots, 1);
    c->free_slots = malloc((size_t)n_slots * sizeof(int));
    c->used_step = calloc((size_t)n_slots, sizeof *c->used_step);
    if (!c->slot_of_key || !c->key_of_slot || !c->pins || !c->state || !c->free_slots ||
        !c->used_step) {
        expert_cache_free(c);
        return -1;
    }
    for (int k = 0; k < n_keys; k++)
        c->slot_of_key[k] = -1;
    for (int s = 0; s < n_slots; s++) {
        c->key_of_slot[s] = -1;
        c->free_slots[s] = n_slots - 1 - s;  /* slot 0 is handed out first */
    }
    c->n_free = n_slots;
    return 0;
}

void expert_cache_free(expert_cache *c)
{
    if (c->policy.destroy)
        c->policy.destroy(c->policy.st);
    free(c->slot_of_key);
    free(c->key_of_slot);
    free(c->pins);
    free(c->state);
    free(c->free_slots);
    free(c->used_step);
    memset(c, 0, sizeof *c);
}

int expert_cache_scanning(const expert_cache *c)
{
    if (c->n_free > 0 || c->step == 0 || !c->policy.peek)
        return 0;
    int v = c->policy.peek(c->policy.st);
    return v >= 0 && c->used_step[v] == c->step;
}

static int take(expert_cache *c, int key, int *resident, int *evicted_key, int recent)
{
    *evicted_key = -1;
    int s = c->slot_of_key[key];
    if (s >= 0) {
        if (c->pins[s]++ == 0 && c->state[s] == SLOT_READY)
            c->policy.unevictable(c->policy.st, s);
        c->used_step[s] = c->step;
        *resident = 1;
        return s;
    }
    *resident = 0;
    if (c->n_free > 0) {
        s = c->free_slots[--c->n_free];
    } else {
        s = c->policy.newest && (recent || expert_cache_scanning(c))
                ? c->policy.newest(c->policy.st) : c->policy.victim(c->policy.st);
        if (s < 0)
            return -1;
        *evicted_key = c->key_of_slot[s];
        c->slot_of_key[*evicted_key] = -1;
    }
    c->key_of_slot[s] = key;
    c->slot_of_key[key] = s;
    c->state[s] = SLOT_LOADING;
    c->pins[s] = 1;
    c->used_step[s] = c->step;
    return s;
}

int expert_cache_acquire(expert_cache *c, int key, int *resident, int *evicted_key)
{
    return take(c, key, resident, evicted_key, 0);
}

int expert_cache_acquire_recent(expert_cache *c, int key, int *resident, int *evicted_key)
{
    return take(c, key, resident, evicted_key, 1);
}

void expert_cache_ready(expert_cache *c, int slot)
{
    c->state[slot] = SLOT_READY;
    if (c->pins[slot] == 0)
        c->policy.evictable(c->policy.st, slot, c->key_of_slot[slot]);
}

void expert_cache_release(expert_cache *c, int slot)
{
    if (c->pins[slot] > 0 && --c->pins[slot] == 0 && c->state[slot] == SLOT_READY)
        c->policy.evictable(c->policy.st, slot, c->key_of_slot[slot]);
}

void expert_cache_discard(expert_cache *c, int slot)
{
    if (c->state[slot] == SLOT_READY && c->pins[slot] == 0)
        c->policy.unevictable(c->policy.st, slot);
    int key = c->key_of_slot[slot];
    if (key >= 0)
        c->slot_of_key[key] = -1;
    c->key_of_slot[slot] = -1;
    c->state[slot] = SLOT_FREE;
    c->pins[slot] = 0;
    c->free_slots[c->n_free++] = slot;
}
