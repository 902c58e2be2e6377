/* cache_lfu: frequency with aging. Each expert's use count decays by half every
 * `half_life` accesses of the cache, so a once-popular expert fades and a
 * steadily used one stays; the victim is the evictable slot whose decayed count
 * is lowest. Since decay is the same for every key, comparing
 * log2(count at last use) + last_use / half_life orders keys exactly as their
 * decayed counts now, so that value is fixed between uses and a binary heap
 * (with stale entries skipped) finds the victim in O(log n). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "cache_policy.h"

typedef struct entry {
    double score;
    int slot;
    uint32_t stamp;
} entry;

typedef struct lfu {
    int n_slots, n_keys;
    double half_life;
    double *count;          /* [n_keys] decayed use count at its last use */
    double *last;           /* [n_keys] access number of its last use */
    uint32_t *stamp;        /* [n_slots] bumped whenever the slot's entry changes */
    unsigned char *live;    /* [n_slots] evictable now */
    entry *heap;
    int heap_n, heap_cap;
    double now;
} lfu;

static void sift_up(entry *h, int i)
{
    while (i > 0) {
        int p = (i - 1) / 2;
        if (h[p].score <= h[i].score)
            break;
        entry t = h[p];
        h[p] = h[i];
        h[i] = t;
        i = p;
    }
}

static void sift_down(entry *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l].score < h[m].score)
            m = l;
        if (r < n && h[r].score < h[m].score)
            m = r;
        if (m == i)
            return;
        entry t = h[m];
        h[m] = h[i];
        h[i] = t;
        i = m;
    }
}

static int is_current(const lfu *q, const entry *x)
{
    return q->live[x->slot] && q->stamp[x->slot] == x->stamp;
}

/* Drops stale entries when they outnumber the live ones. */
static void compact(lfu *q)
{
    int n = 0;
    for (int i = 0; i < q->heap_n; i++)
        if (is_current(q, &q->heap[i]))
            q->heap[n++] = q->heap[i];
    q->heap_n = n;
    for (int i = n / 2 - 1; i >= 0; i--)
        sift_down(q->heap, n, i);
}

static void lfu_evictable(void *st, int slot, int key)
{
    lfu *q = st;
    q->now += 1;
    if (key >= 0 && key < q->n_keys) {
        double decayed = q->count[key] * exp2(-(q->now - q->last[key]) / q->half_life);
        q->count[key] = decayed + 1;
        q->last[key] = q->now;
    }
    if (q->heap_n == q->heap_cap) {
        compact(q);
        if (q->heap_n == q->heap_cap)
            return;     /* cannot happen: live entries <= n_slots < capacity */
    }
    q->stamp[slot]++;
    q->live[slot] = 1;
    double score = key >= 0 && key < q->n_keys
                       ? log2(q->count[key]) + q->last[key] / q->half_life
                       : -INFINITY;
    q->heap[q->heap_n] = (entry){score, slot, q->stamp[slot]};
    sift_up(q->heap, q->heap_n++);
}

static void lfu_unevictable(void *st, int slot)
{
    lfu *q = st;
    q->live[slot] = 0;
    q->stamp[slot]++;
}

static int lfu_victim(void *st)
{
    lfu *q = st;
    while (q->heap_n > 0) {
        entry top = q->heap[0];
        q->heap[0] = q->heap[--q->heap_n];
        sift_down(q->heap, q->heap_n, 0);
        if (is_current(q, &top)) {
            q->live[top.slot] = 0;
            q->stamp[top.slot]++;
            return top.slot;
        }
    }
    return -1;
}

static void lfu_destroy(void *st)
{
    lfu *q = st;
    if (!q)
        return;
    free(q->count);
    free(q->last);
    free(q->stamp);
    free(q->live);
    free(q->heap);
    free(q);
}

int cache_policy_lfu(cache_policy *p, int n_slots, int n_keys, double half_life)
{
    lfu *q = calloc(1, sizeof *q);
    if (!q)
        return -1;
    q->n_slots = n_slots;
    q->n_keys = n_keys;
    q->half_life = half_life > 0 ? half_life : 1;
    q->heap_cap = 4 * (n_slots > 0 ? n_slots : 1) + 16;
    q->count = calloc((size_t)(n_keys > 0 ? n_keys : 1), sizeof *q->count);
    q->last = calloc((size_t)(n_keys > 0 ? n_keys : 1), sizeof *q->last);
    q->stamp = calloc((size_t)(n_slots > 0 ? n_slots : 1), sizeof *q->stamp);
    q->live = calloc((size_t)(n_slots > 0 ? n_slots : 1), 1);
    q->heap = malloc((size_t)q->heap_cap * sizeof *q->heap);
    if (!q->count || !q->last || !q->stamp || !q->live || !q->heap) {
        lfu_destroy(q);
        return -1;
    }
    *p = (cache_policy){0};   /* no peek or newest: LFU does not resist scans */
    p->name = "lfu";
    p->st = q;
    p->evictable = lfu_evictable;
    p->unevictable = lfu_unevictable;
    p->victim = lfu_victim;
    p->destroy = lfu_destroy;
    return 0;
}
