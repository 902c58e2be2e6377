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

prompt_entry *prompt_cache_find(const prompt_cache *pc, uint64_t id)
{
    for (int i = 0; id && i < pc->n; i++)
        if (pc->entries[i].id == id)
            return &pc->entries[i];
    return NULL;
}

/* Frees entry i (which no other depends on); the last entry moves into its
 * place, so pointers into the array do not survive it (ids do). */
static void drop(prompt_cache *pc, int i)
{
    prompt_entry *x = &pc->entries[i], *parent = prompt_cache_find(pc, x->parent);
    if (parent)
        parent->children--;
    free(x->ids);
    prompt_cache_rows_free(x->rows, x->rows_bytes);
    pc->bytes -= x->bytes;
    pc->changes++;
    pc->entries[i] = pc->entries[--pc->n];
}

void prompt_cache_free(prompt_cache *pc)
{
    /* dependants first */
    while (pc->n) {
        int i = pc->n - 1;
        while (pc->entries[i].children)
            i = (i + pc->n - 1) % pc->n;
        drop(pc, i);
    }
    free(pc->entries);
    free(pc->left_alone);
    memset(pc, 0, sizeof *pc);
}

size_t prompt_cache_position_bytes(const engine *en)
{
    return kv_cache_position_bytes(&en->kv) + sizeof(int);
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

/* x and the entries it continues, marked held (or not); returns their bytes */
static size_t hold_chain(prompt_cache *pc, uint64_t id, int held)
{
    size_t bytes = 0;
    for (prompt_entry *x = prompt_cache_find(pc, id); x; x = prompt_cache_find(pc, x->parent)) {
        if (x->held != held)
            bytes += x->bytes;
        x->held = held;
    }
    return bytes;
}

static void touch_chain(prompt_cache *pc, uint64_t id)
{
    uint64_t now = ++pc->clock;
    for (prompt_entry *x = prompt_cache_find(pc, id); x; x = prompt_cache_find(pc, x->parent))
        x->last_used = now;
}

int prompt_cache_spans(const prompt_cache *pc, const prompt_entry *x, int n, kv_span *out)
{
    int k = 0, limit = n;
    for (; x && limit > 0; x = prompt_cache_find(pc, x->parent)) {
        int end = x->n < limit ? x->n : limit;
        if (end > x->base)
            out[k++] = (kv_span){.rows = x->rows, .first = x->base, .end = end,
                                 .stride = x->n - x->base};
        limit = x->base;
    }
    for (int i = 0; i < k / 2; i++) {       /* in order of position */
        kv_span t = out[i];
        out[i] = out[k - 1 - i];
        out[k - 1 - i] = t;
    }
    return k;
}

/* What a new conversation of ids[0..n) shares: the entry it would continue
 * (*parent, positions [0, *base) its), and a saved conversation it extends
 * that no other depends on, which it replaces (*grow, or NULL). */
static void placement(prompt_cache *pc, const int *ids, int n, uint64_t keep, prompt_entry **parent,
                      int *base, prompt_entry **grow)
{
    prompt_entry *best = NULL;
    int m = 0;
    for (int i = 0; i < pc->n; i++) {
        int c = ids_common_prefix(pc->entries[i].ids, pc->entries[i].n, ids, n);
        if (c > m) {
            best = &pc->entries[i];
            m = c;
        }
    }
    *grow = NULL;
    *parent = NULL;
    *base = 0;
    if (best && m == best->n && !best->children && best->id != keep) {
        *grow = best;
        *parent = prompt_cache_find(pc, best->parent);
        *base = best->base;
    } else if (best && m >= PROMPT_CACHE_MIN_TOKENS) {
        *parent = best;
        *base = m;
    }
}

/* The least recently used entry that nothing depends on and the save under
 * way does not hold; -1 when none. */
static int lru_leaf(const prompt_cache *pc)
{
    int lru = -1;
    for (int i = 0; i < pc->n; i++) {
        const prompt_entry *x = &pc->entries[i];
        if (!x->children && !x->held && (lru < 0 || x->last_used < pc->entries[lru].last_used))
            lru = i;
    }
    return lru;
}

/* Makes room for bytes more, dropping first the saved conversations that
 * ids[0..n) extends (their positions are the new entry's), then the least
 * recently used; the held entries stay. The caller made sure it can. */
static void make_room(prompt_cache *pc, const int *ids, int n, size_t bytes, int count_evicted)
{
    for (int i = pc->n - 1; i >= 0; i--) {
        prompt_entry *x = &pc->entries[i];
        if (!x->held && !x->children && ids_common_prefix(x->ids, x->n, ids, n) == x->n)
            drop(pc, i);
    }
    while (pc->bytes + bytes > pc->budget) {
        int lru = lru_leaf(pc);
        if (lru < 0)
            break;
        drop(pc, lru);
        pc->evicted += (uint64_t)count_evicted;
    }
}

/* Inserts x (its memory set up) with parent_id, as the most recently used. */
static prompt_entry *insert(prompt_cache *pc, prompt_entry x, uint64_t parent_id)
{
    prompt_entry *parent = prompt_cache_find(pc, parent_id);
    x.parent = parent_id;
    if (parent)
        parent->children++;
    x.id = ++pc->next_id;
    pc->entries[pc->n++] = x;
    pc->bytes += x.bytes;
    pc->changes++;
    touch_chain(pc, x.id);
    return &pc->entries[pc->n - 1];
}

/* Saves en's cached positions as an entry: nothing when one holds them
 * already. The entry `keep` (about to be copied back) and those it continues
 * are not evicted for it. Whether it fits and its memory are settled before
 * any entry goes, so a save that cannot be made loses nothing. */
static void save(prompt_cache *pc, const engine *en, uint64_t keep)
{
    int n = en->n_past;
    const int *ids = en->cached_ids;
    for (int i = 0; i < pc->n; i++) {
        prompt_entry *x = &pc->entries[i];
        if (x->n >= n && ids_common_prefix(x->ids, x->n, ids, n) == n) {
            touch_chain(pc, x->id);
            return;
        }
    }
    prompt_entry *parent, *grow;
    int base;
    if (room_for_one(pc))       /* before placement: a realloc would leave parent and grow dangling */
        return;
    placement(pc, ids, n, keep, &parent, &base, &grow);
    uint64_t parent_id = parent ? parent->id : 0;
    prompt_entry x = {.n = n, .base = base};
    x.rows_bytes = (size_t)(n - base) * kv_cache_position_bytes(&en->kv);
    x.bytes = (size_t)n * sizeof *x.ids + x.rows_bytes;
    size_t held = hold_chain(pc, keep, 1) + hold_chain(pc, parent_id, 1);
    if (x.bytes + held > pc->budget)
        goto unhold;
    x.ids = malloc((size_t)n * sizeof *x.ids);
    x.rows = prompt_cache_rows_alloc(x.rows_bytes);
    if (!x.ids || !x.rows) {
        free(x.ids);
        prompt_cache_rows_free(x.rows, x.rows_bytes);
        goto unhold;
    }
    memcpy(x.ids, ids, (size_t)n * sizeof *ids);
    size_t row = (size_t)kv_cache_row_floats(&en->kv), own = (size_t)(n - base);
    int from = base;
    if (grow) {         /* its rows first, from host memory; it goes in make_room */
        size_t had = (size_t)(grow->n - base);
        for (int l = 0; l < en->kv.n_layers; l++)
            memcpy(x.rows + (size_t)l * own * row, grow->rows + (size_t)l * had * row,
                   had * row * sizeof *x.rows);
        from = grow->n;
    }
    for (int l = 0; l < en->kv.n_layers; l++)
        kv_cache_save_layer(&en->kv, l, from, n, x.rows + ((size_t)l * own + (size_t)(from - base)) * row);
    make_room(pc, ids, n, x.bytes, 1);
    insert(pc, x, parent_id);
    pc->saved++;
unhold:
    hold_chain(pc, keep, 0);
    hold_chain(pc, parent_id, 0);
}

void prompt_cache_keep(prompt_cache *pc, const engine *en)
{
    if (pc->budget && en->n_past >= PROMPT_CACHE_MIN_TOKENS)
        save(pc, en, 0);
}

int prompt_cache_add(prompt_cache *pc, const engine *en, const int *ids, int n, prompt_fill_fn fill,
                     void *ctx, prompt_entry **added, errbuf *e)
{
    *added = NULL;
    for (int i = 0; i < pc->n; i++)
        if (pc->entries[i].n >= n &&
            ids_common_prefix(pc->entries[i].ids, pc->entries[i].n, ids, n) == n)
            return 1;
    prompt_entry *parent, *grow;
    int base;
    if (room_for_one(pc))
        return -1;
    placement(pc, ids, n, 0, &parent, &base, &grow);
    if (grow) {         /* kept whole rather than grown: nothing is dropped here */
        parent = grow->n >= PROMPT_CACHE_MIN_TOKENS ? grow : NULL;
        base = parent ? grow->n : 0;
    }
    prompt_entry x = {.n = n, .base = base};
    x.rows_bytes = (size_t)(n - base) * kv_cache_position_bytes(&en->kv);
    x.bytes = (size_t)n * sizeof *x.ids + x.rows_bytes;
    if (n <= 0 || pc->bytes + x.bytes > pc->budget)
        return -1;
    uint64_t parent_id = parent ? parent->id : 0;
    x.ids = malloc((size_t)n * sizeof *x.ids);
    x.rows = prompt_cache_rows_alloc(x.rows_bytes);
    if (!x.ids || !x.rows) {
        free(x.ids);
        prompt_cache_rows_free(x.rows, x.rows_bytes);
        return -1;
    }
    if (fill(ctx, base, x.rows, e)) {
        free(x.ids);
        prompt_cache_rows_free(x.rows, x.rows_bytes);
        return -2;
    }
    memcpy(x.ids, ids, (size_t)n * sizeof *ids);
    *added = insert(pc, x, parent_id);
    return 0;
}

int prompt_cache_prepare(prompt_cache *pc, engine *en, const int *ids, int n, int *prompt_end)
{
    int reuse = engine_reusable_prefix(en, ids, n), last_prompt = *prompt_end;
    *prompt_end = n;
    if (!pc->budget || n < 2)
        return reuse;
    /* the entry to copy back is chosen before the engine's positions are
     * saved, so that saving them does not evict it (nor can they replace
     * it: an entry they extend shares no more with ids than they do) */
    uint64_t best = 0;
    int best_n = reuse;
    for (int i = 0; i < pc->n; i++) {
        int m = ids_common_prefix(pc->entries[i].ids, pc->entries[i].n, ids, n - 1);
        if (m > best_n) {
            best = pc->entries[i].id;
            best_n = m;
        }
    }
    /* a cut inside what was generated after the last prompt (a reply
     * regenerated, or its reasoning left out of the history, as Kimi's
     * template does) keeps no prefix a later prompt is likely to start with */
    if (en->n_past - reuse >= PROMPT_CACHE_MIN_TOKENS && reuse < last_prompt - 1)
        save(pc, en, best);
    prompt_entry *x = prompt_cache_find(pc, best);
    if (!x)
        return reuse;
    kv_span *spans = malloc((size_t)pc->n * sizeof *spans);
    errbuf e;
    int ok = spans && engine_load_prefix(en, ids, best_n, spans, prompt_cache_spans(pc, x, best_n, spans),
                                         &e) == 0;
    free(spans);
    if (!ok)
        return reuse;
    touch_chain(pc, best);
    pc->restored_tokens += (uint64_t)(best_n - reuse);
    return best_n;
}
