/* cache_lru: least-recently-used eviction as an intrusive doubly linked list
 * over slot numbers; only evictable slots are on the list, oldest at the head. */
#include <stdlib.h>

#include "cache_policy.h"

typedef struct lru {
    int *prev, *next;   /* -1 ends; a slot off the list has prev == next == -2 */
    int head, tail;
} lru;

static void unlink_slot(lru *q, int s)
{
    if (q->prev[s] == -2)
        return;
    if (q->prev[s] >= 0)
        q->next[q->prev[s]] = q->next[s];
    else
        q->head = q->next[s];
    if (q->next[s] >= 0)
        q->prev[q->next[s]] = q->prev[s];
    else
        q->tail = q->prev[s];
    q->prev[s] = q->next[s] = -2;
}

static void lru_evictable(void *st, int s, int key)
{
    lru *q = st;
    unlink_slot(q, s);
    q->prev[s] = q->tail;
    q->next[s] = -1;
    if (q->tail >= 0)
        q->next[q->tail] = s;
    else
        q->head = s;
    q->tail = s;
}

static void lru_unevictable(void *st, int s)
{
    unlink_slot(st, s);
}

static int lru_victim(void *st)
{
    lru *q = st;
    int s = q->head;
    if (s >= 0)
        unlink_slot(q, s);
    return s;
}

static int lru_peek(void *st)
{
    return ((lru *)st)->head;
}

static int lru_newest(void *st)
{
    lru *q = st;
    int s = q->tail;
    if (s >= 0)
        unlink_slot(q, s);
    return s;
}

static void lru_destroy(void *st)
{
    lru *q = st;
    if (!q)
        return;
    free(q->prev);
    free(q->next);
    free(q);
}

int cache_policy_lru(cache_policy *p, int n_slots)
{
    lru *q = calloc(1, sizeof *q);
    if (!q)
        return -1;
    q->prev = malloc((size_t)(n_slots > 0 ? n_slots : 1) * sizeof(int));
    q->next = malloc((size_t)(n_slots > 0 ? n_slots : 1) * sizeof(int));
    if (!q->prev || !q->next) {
        lru_destroy(q);
        return -1;
    }
    for (int i = 0; i < n_slots; i++)
        q->prev[i] = q->next[i] = -2;
    q->head = q->tail = -1;
    *p = (cache_policy){0};
    p->name = "lru";
    p->st = q;
    p->evictable = lru_evictable;
    p->unevictable = lru_unevictable;
    p->victim = lru_victim;
    p->peek = lru_peek;
    p->newest = lru_newest;
    p->destroy = lru_destroy;
    return 0;
}
