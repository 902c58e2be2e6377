/* mask_memo: see mask_memo.h. */
#include "mask_memo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MASK_MEMO_ENTRIES 4

struct mask_memo {
    struct mask_entry {
        uint64_t used; /* when last met (0: empty) */
        uint8_t key[MASK_MEMO_MAX_KEY];
        size_t key_n;
        const vocab *v;
        int V, n_end, possible;
        int end[MASK_MEMO_MAX_END];
        uint64_t *ok; /* [V / 64 rounded up] bit id: the token may come */
    } e[MASK_MEMO_ENTRIES];
    uint64_t clock;
};

int mask_memo_keeps(size_t key_n, int n_end)
{
    return key_n <= MASK_MEMO_MAX_KEY && n_end >= 0 && n_end <= MASK_MEMO_MAX_END;
}

static int entry_is(const struct mask_entry *m, const void *key, size_t key_n, const vocab *v, int V,
                    const int *end_ids, int n_end)
{
    /* (no memcmp of 0 bytes: end_ids may then be NULL) */
    return m->used && m->key_n == key_n && m->v == v && m->V == V && m->n_end == n_end &&
           (!n_end || !memcmp(m->end, end_ids, (size_t)n_end * sizeof *end_ids)) &&
           (!key_n || !memcmp(m->key, key, key_n));
}

int mask_memo_apply(mask_memo *m, const void *key, size_t key_n, const vocab *v, int V, const int *end_ids,
                    int n_end, float *logits)
{
    for (int i = 0; m && i < MASK_MEMO_ENTRIES; i++) {
        struct mask_entry *k = &m->e[i];
        if (!entry_is(k, key, key_n, v, V, end_ids, n_end))
            continue;
        k->used = ++m->clock;
        for (int w = 0; w < (V + 63) / 64; w++)
            for (uint64_t out = ~k->ok[w]; out; out &= out - 1) {
                int id = w * 64 + __builtin_ctzll(out);
                if (id < V)
                    logits[id] = -INFINITY;
            }
        return k->possible;
    }
    return -1;
}

void mask_memo_keep(mask_memo **mp, const void *key, size_t key_n, const vocab *v, int V, const int *end_ids,
                    int n_end, const uint8_t *ok, int possible)
{
    if (!mask_memo_keeps(key_n, n_end) || (!*mp && !(*mp = calloc(1, sizeof **mp))))
        return;
    mask_memo *m = *mp;
    struct mask_entry *k = &m->e[0];
    for (int i = 1; i < MASK_MEMO_ENTRIES; i++)
        if (m->e[i].used < k->used)
            k = &m->e[i];
    size_t words = ((size_t)V + 63) / 64;
    if (!k->ok || k->V != V) {
        uint64_t *p = realloc(k->ok, (words ? words : 1) * sizeof *p);
        if (!p) {
            k->used = 0;
            return;
        }
        k->ok = p;
    }
    for (size_t w = 0; w < words; w++) {
        uint64_t bits = 0;
        for (int j = 0; j < 64; j += 8) {
            size_t id = w * 64 + (size_t)j;
            uint64_t x = 0; /* eight bytes of 0 or 1 to eight bits at once */
            if (id + 8 <= (size_t)V)
                memcpy(&x, ok + id, 8);
            else
                for (size_t i = id; i < (size_t)V && i < id + 8; i++)
                    x |= (uint64_t)ok[i] << 8 * (i - id);
            bits |= ((x * 0x0102040810204080ull) >> 56) << j;
        }
        k->ok[w] = bits;
    }
    if (key_n)
        memcpy(k->key, key, key_n);
    if (n_end)
        memcpy(k->end, end_ids, (size_t)n_end * sizeof *end_ids);
    k->key_n = key_n;
    k->v = v;
    k->V = V;
    k->n_end = n_end;
    k->possible = possible;
    k->used = ++m->clock;
}

void mask_memo_forget(mask_memo *m)
{
    for (int i = 0; m && i < MASK_MEMO_ENTRIES; i++)
        m->e[i].used = 0;
}

void mask_memo_free(mask_memo *m)
{
    for (int i = 0; m && i < MASK_MEMO_ENTRIES; i++)
        free(m->e[i].ok);
    free(m);
}
