/* prompt_cache: see prompt_cache.h. */
#include "prompt_cache.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

void prompt_cache_init(prompt_cache *pc, size_t budget)
{
    memset(pc, 0, sizeof *pc);
    pc->budget = budget;
}

float *prompt_cache_rows_alloc(size_t bytes)
{
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    madvise(p, bytes, MADV_HUGEPAGE);       /* a hint: without it, 4 KB pages */
    return p;
}

void prompt_cache_rows_free(float *rows, size_t bytes)
{
    if (rows)
        munmap(rows, bytes ? bytes : 1);
}

static void drop(prompt_cache *pc, int i)
{
    prompt_entry *x = &pc->entries[i];
    free(x->ids);
    prompt_cache_rows_free(x->rows, x->rows_bytes);
    pc->bytes -= x->bytes;
    *x = pc->entries[--pc->n];
}

void prompt_cache_free(prompt_cache *pc)
{
    while (pc->n)
        drop(pc, pc->n - 1);
    free(pc->entries);
    memset(pc, 0, sizeof *pc);
}

size_t prompt_cache_position_bytes(const engine *en)
{
    return (size_t)en->kv.n_layers * (size_t)en->kv.row * sizeof(float) + sizeof(int);
}

/* room in the array for one more entry */
static int room_for_one(prompt_cache *pc)
{
    if (pc->n < pc->cap)
        return 0;
    int cap = pc->cap ? 2 * pc->cap : 8;
    prompt_entry *grown = realloc(pc->entries, (size_t)cap * sizeof *grown);
    if (!grown)
        return -1;
    pc->entries = grown;
    pc->cap = cap;
    return 0;
}

static int common(const int *a, int na, const int *b, int nb)
{
    int k = 0;
    while (k < na && k < nb && a[k] == b[k])
        k++;
    return k;
}

/* Saves en's cached positions as an entry: nothing when one holds them
 * already; entries they extend go. The entry with ids `keep` (about to be
 * copied back) is not evicted for it. Whether it fits and its memory are
 * settled before any entry goes, so a save that cannot be made loses nothing. */
static void save(prompt_cache *pc, const engine *en, const int *keep)
{
    int n = en->n_past;
    const int *ids = en->cached_ids;
    size_t kept = 0;
    for (int i = 0; i < pc->n; i++) {
        prompt_entry *x = &pc->entries[i];
        if (x->n >= n && common(x->ids, x->n, ids, n) == n) {
            x->last_used = ++pc->clock;
            return;
        }
        if (x->ids == keep)
            kept = x->bytes;
    }
    size_t bytes = (size_t)n * prompt_cache_position_bytes(en);
    if (bytes + kept > pc->budget)
        return;
    if (room_for_one(pc))
        return;
    prompt_entry x = {.n = n, .bytes = bytes};
    x.ids = malloc((size_t)n * sizeof *x.ids);
    x.rows_bytes = (size_t)n * (size_t)en->kv.n_layers * (size_t)en->kv.row * sizeof *x.rows;
    x.rows = prompt_cache_rows_alloc(x.rows_bytes);
    if (!x.ids || !x.rows) {
        free(x.ids);
        prompt_cache_rows_free(x.rows, x.rows_bytes);
        return;
    }
    /* downwards: drop() moves the last entry into the hole */
    for (int i = pc->n - 1; i >= 0; i--)
        if (common(pc->entries[i].ids, pc->entries[i].n, ids, n) == pc->entries[i].n)
            drop(pc, i);
    /* ends with keep alone at the latest: bytes + kept fit */
    while (pc->bytes + bytes > pc->budget) {
        int lru = -1;
        for (int i = 0; i < pc->n; i++)
            if (pc->entries[i].ids != keep &&
                (lru < 0 || pc->entries[i].last_used < pc->entries[lru].last_used))
                lru = i;
        drop(pc, lru);
        pc->evicted++;
    }
    memcpy(x.ids, ids, (size_t)n * sizeof *ids);
    kv_cache_save(&en->kv, 0, n, x.rows, n);
    x.last_used = ++pc->clock;
    pc->entries[pc->n++] = x;
    pc->bytes += bytes;
    pc->saved++;
}

void prompt_cache_keep(prompt_cache *pc, const engine *en)
{
    if (pc->budget && en->n_past >= PROMPT_CACHE_MIN_TOKENS)
        save(pc, en, NULL);
}

int prompt_cache_adopt(prompt_cache *pc, prompt_entry x)
{
    x.bytes = (size_t)x.n * sizeof *x.ids + x.rows_bytes;
    if (x.n <= 0 || pc->bytes + x.bytes > pc->budget)
        return -1;
    if (room_for_one(pc))
        return -1;
    x.last_used = ++pc->clock;
    pc->entries[pc->n++] = x;
    pc->bytes += x.bytes;
    return 0;
}

int prompt_cache_prepare(prompt_cache *pc, engine *en, const int *ids, int n)
{
    int reuse = engine_reusable_prefix(en, ids, n), last_prompt = pc->prompt_end;
    pc->prompt_end = n;
    if (!pc->budget || n < 2)
        return reuse;
    /* the entry to copy back is chosen before the engine's positions are
     * saved, so that saving them does not evict it (nor can they replace
     * it: an entry they extend shares no more with ids than they do) */
    const int *best_ids = NULL;
    int best_n = reuse;
    for (int i = 0; i < pc->n; i++) {
        int m = common(pc->entries[i].ids, pc->entries[i].n, ids, n - 1);
        if (m > best_n) {
            best_ids = pc->entries[i].ids;
            best_n = m;
        }
    }
    /* a cut inside what was generated after the last prompt (a reply
     * regenerated, or its reasoning left out of the history, as Kimi's
     * template does) keeps no prefix a later prompt is likely to start with */
    if (en->n_past - reuse >= PROMPT_CACHE_MIN_TOKENS && reuse < last_prompt - 1)
        save(pc, en, best_ids);
    prompt_entry *x = NULL;
    for (int i = 0; best_ids && i < pc->n; i++)
        if (pc->entries[i].ids == best_ids)
            x = &pc->entries[i];
    if (!x)
        return reuse;
    errbuf e;
    if (engine_load_prefix(en, ids, best_n, x->rows, x->n, &e))
        return reuse;
    x->last_used = ++pc->clock;
    pc->restored_tokens += (uint64_t)(best_n - reuse);
    return best_n;
}
