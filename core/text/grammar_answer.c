/* grammar_answer: see grammar_answer.h. */
#include "grammar_answer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grammar_trie.h"
#include "mask_memo.h"
#include "utf8.h"
#include "vocab_trie.h"

#define GB_NO_FRAME UINT32_MAX

/* ---- interned frames ---------------------------------------------------- */

static uint32_t slot_of(const grammar_answer *a, int32_t pos, uint32_t parent)
{
    uint64_t k = ((uint64_t)(uint32_t)pos << 32 | parent) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(k >> 32) & a->table_mask;
}

/* A table of size slots holding frames 0.. in order (so that taking the last
 * frames out again, latest first, leaves it as it was before them). */
static int rehash(grammar_answer *a, uint32_t size)
{
    uint32_t *t = calloc(size, sizeof *t);
    if (!t)
        return -1;
    free(a->table);
    a->table = t;
    a->table_mask = size - 1;
    for (uint32_t f = 0; f < a->n_frames; f++) {
        uint32_t s = slot_of(a, a->frames[f].pos, a->frames[f].parent);
        while (t[s])
            s = (s + 1) & a->table_mask;
        t[s] = f + 1;
    }
    return 0;
}

/* The frame (pos, parent), made if new; GB_NO_FRAME when out of memory. */
static uint32_t intern(grammar_answer *a, int32_t pos, uint32_t parent)
{
    uint32_t s = slot_of(a, pos, parent);
    for (; a->table[s]; s = (s + 1) & a->table_mask) {
        const gb_frame *f = &a->frames[a->table[s] - 1];
        if (f->pos == pos && f->parent == parent)
            return a->table[s] - 1;
    }
    if (a->n_frames + 1 >= GB_NO_FRAME / 2)
        return GB_NO_FRAME;
    if (a->n_frames == a->cap_frames) {
        uint32_t cap = a->cap_frames * 2;
        gb_frame *f = realloc(a->frames, cap * sizeof *f);
        if (f)
            a->frames = f;
        uint32_t *st = realloc(a->stamp, cap * sizeof *st);
        if (st)
            a->stamp = st;
        if (!f || !st)
            return GB_NO_FRAME;
        a->cap_frames = cap;
    }
    if (2 * (a->n_frames + 1) > a->table_mask + 1) {
        if (rehash(a, 2 * (a->table_mask + 1)))
            return GB_NO_FRAME;
        for (s = slot_of(a, pos, parent); a->table[s]; s = (s + 1) & a->table_mask)
            ;
    }
    uint32_t f = a->n_frames++;
    a->frames[f] = (gb_frame){pos, parent};
    a->stamp[f] = 0;
    a->table[s] = f + 1;
    return f;
}

/* Forgets the frames made since there were `mark`, latest first. */
static void rollback(grammar_answer *a, uint32_t mark)
{
    while (a->n_frames > mark) {
        uint32_t f = --a->n_frames, s = slot_of(a, a->frames[f].pos, a->frames[f].parent);
        while (a->table[s] != f + 1)
            s = (s + 1) & a->table_mask;
        a->table[s] = 0;
    }
}

/* Keeps only the frames the answer's stacks hold (a long answer leaves the
 * frames of its past behind). A frame's parent is older than it, so the
 * kept ones move down in order and the table is laid again in that order. */
static int compact(grammar_answer *a)
{
    uint8_t *keep = calloc(a->n_frames ? a->n_frames : 1, 1);
    uint32_t *map = malloc((a->n_frames ? a->n_frames : 1) * sizeof *map);
    if (!keep || !map) {
        free(keep);
        free(map);
        return -1;
    }
    for (int i = 0; i < a->n_set; i++)
        for (uint32_t f = a->set[i]; f != GB_NO_FRAME && !keep[f]; f = a->frames[f].parent)
            keep[f] = 1;
    uint32_t k = 0;
    for (uint32_t f = 0; f < a->n_frames; f++) {
        if (!keep[f])
            continue;
        gb_frame fr = a->frames[f];
        map[f] = k;
        a->frames[k++] = (gb_frame){fr.pos, fr.parent == GB_NO_FRAME ? GB_NO_FRAME : map[fr.parent]};
    }
    for (int i = 0; i < a->n_set; i++)
        a->set[i] = map[a->set[i]];
    a->n_frames = a->kept = k;
    free(keep);
    free(map);
    return rehash(a, a->table_mask + 1);
}

/* ---- sets of stacks ----------------------------------------------------- */

typedef struct builder {
    grammar_answer *a;
    uint32_t **buf;
    int *cap;
    int n, complete, err;
    long steps; /* frames visited (GRAMMAR_MAX_TAKE_STEPS) */
} builder;

static void add(builder *b, uint32_t f)
{
    if (b->n >= GRAMMAR_MAX_STACKS) {
        b->err = GRAMMAR_TOO_COMPLEX;
        return;
    }
    if (b->n == *b->cap) {
        int cap = *b->cap ? 2 * *b->cap : 16;
        uint32_t *p = realloc(*b->buf, (size_t)cap * sizeof *p);
        if (!p) {
            b->err = GRAMMAR_NO_MEMORY;
            return;
        }
        *b->buf = p;
        *b->cap = cap;
    }
    (*b->buf)[b->n++] = f;
}

/* The stacks that matching from pos (then the stack parent) gives, each with
 * a character class on top; an empty one is the text made whole. Each
 * (pos, parent) is expanded once per set: the ways to reach it (empty
 * alternatives one after another) would otherwise multiply. */
static void expand(builder *b, int32_t pos, uint32_t parent, int depth)
{
    grammar_answer *a = b->a;
    const gbnf *g = a->g;
    for (;;) {
        if (b->err)
            return;
        if (++b->steps > GRAMMAR_MAX_TAKE_STEPS) {
            b->err = GRAMMAR_TOO_COMPLEX;
            return;
        }
        uint32_t f = intern(a, pos, parent);
        if (f == GB_NO_FRAME) {
            b->err = GRAMMAR_NO_MEMORY;
            return;
        }
        if (a->stamp[f] == a->gen)
            return;
        a->stamp[f] = a->gen;
        gbnf_elem e = g->elems[pos];
        if (e.kind == GB_CHARS) {
            add(b, f);
            return;
        }
        if (e.kind != GB_REF) { /* the alternative is done: back to what called its rule */
            if (parent == GB_NO_FRAME) {
                b->complete = 1;
                return;
            }
            pos = a->frames[parent].pos;
            parent = a->frames[parent].parent;
            continue;
        }
        /* (as deep as the rules nest at their starts: left recursion is refused) */
        if (depth > GRAMMAR_MAX_NESTING) {
            b->err = GRAMMAR_TOO_COMPLEX;
            return;
        }
        /* what follows the reference (nothing when the rule ends there: a
         * repetition's tail call keeps no frame) */
        int k = g->elems[pos + 1].kind;
        uint32_t cont = k == GB_END || k == GB_ALT ? parent : intern(a, pos + 1, parent);
        if (cont == GB_NO_FRAME && !(k == GB_END || k == GB_ALT)) {
            b->err = GRAMMAR_NO_MEMORY;
            return;
        }
        for (int i = g->alt_first[e.arg]; i < g->alt_first[e.arg + 1]; i++)
            expand(b, g->alts[i], cont, depth + 1);
        return;
    }
}

static void next_gen(grammar_answer *a)
{
    if (++a->gen == 0) { /* (after 2^32 sets: the stamps start again) */
        memset(a->stamp, 0, a->cap_frames * sizeof *a->stamp);
        a->gen = 1;
    }
}

/* A parse's state: its stacks, and the character being read. */
typedef struct gstate {
    const uint32_t *set;
    int n, complete;
    uint32_t cp;
    uint8_t left, lo, hi;
} gstate;

/* A mask's memo of take(): a set and a character to the set they give, kept
 * only where both sets' frames are older than the mask (the walk forgets the
 * frames it makes after each node). A free text's trie walk meets the same
 * set at nearly every node (a loop's stacks give themselves back), so each
 * character is taken once per mask instead of once per node. The memo lives
 * with the answer; each mask starts it empty by moving to a new generation. */
#define MEMO_SLOTS 8192 /* a power of two; entries fill at most half */
#define MEMO_MAX_SET 64 /* larger sets are not kept */

typedef struct take_memo {
    struct memo_entry {
        uint64_t hash;
        uint32_t cp, in_at, out_at;
        uint16_t in_n, out_n;
        uint8_t complete;
        uint32_t gen; /* the entry is the mask's when it is m->gen */
    } slot[MEMO_SLOTS];
    int n;
    uint32_t gen, base; /* the mask's; frames older than the mask */
    uint32_t *pool;     /* the sets, back to back */
    size_t pool_n, pool_cap;
} take_memo;

static uint64_t set_hash(const uint32_t *set, int n, uint32_t cp)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ cp;
    for (int i = 0; i < n; i++)
        h = (h ^ set[i]) * 0x100000001B3ull;
    return h ^ (uint64_t)n << 56;
}

static int same_set(const uint32_t *x, const uint32_t *y, int n)
{
    for (int i = 0; i < n; i++) /* (sets are a few frames: a call to memcmp costs more) */
        if (x[i] != y[i])
            return 0;
    return 1;
}

static struct memo_entry *memo_find(take_memo *m, uint64_t h, const gstate *s, uint32_t cp)
{
    for (uint32_t i = (uint32_t)h & (MEMO_SLOTS - 1);; i = (i + 1) & (MEMO_SLOTS - 1)) {
        struct memo_entry *e = &m->slot[i];
        if (e->gen != m->gen ||
            (e->hash == h && e->cp == cp && e->in_n == s->n && same_set(m->pool + e->in_at, s->set, s->n)))
            return e;
    }
}

static void memo_keep(take_memo *m, struct memo_entry *e, uint64_t h, const gstate *s, uint32_t cp,
                      const gstate *out)
{
    if (m->n >= MEMO_SLOTS / 2 || s->n > MEMO_MAX_SET || out->n > MEMO_MAX_SET)
        return;
    for (int i = 0; i < s->n; i++)
        if (s->set[i] >= m->base)
            return;
    for (int i = 0; i < out->n; i++)
        if (out->set[i] >= m->base)
            return;
    size_t need = m->pool_n + (size_t)s->n + (size_t)out->n;
    if (need > m->pool_cap) {
        size_t cap = m->pool_cap ? 2 * m->pool_cap : 1024;
        while (cap < need)
            cap *= 2;
        uint32_t *p = realloc(m->pool, cap * sizeof *p);
        if (!p)
            return; /* (a memo is an optimisation: nothing kept) */
        m->pool = p;
        m->pool_cap = cap;
    }
    *e = (struct memo_entry){h,
                             cp,
                             (uint32_t)m->pool_n,
                             (uint32_t)(m->pool_n + (size_t)s->n),
                             (uint16_t)s->n,
                             (uint16_t)out->n,
                             (uint8_t)out->complete,
                             m->gen};
    memcpy(m->pool + m->pool_n, s->set, (size_t)s->n * sizeof *s->set);
    if (out->n) /* (no stack left: maybe no buffer either) */
        memcpy(m->pool + m->pool_n + s->n, out->set, (size_t)out->n * sizeof *out->set);
    m->pool_n = need;
    m->n++;
}

/* The stacks of s after code point cp, built in *buf. */
static int take(grammar_answer *a, const gstate *s, uint32_t cp, gstate *out, uint32_t **buf, int *cap)
{
    a->work += s->n;
    take_memo *m = a->memo_live ? a->memo : NULL;
    struct memo_entry *e = NULL;
    uint64_t h = 0;
    if (m && s->n && s->n <= MEMO_MAX_SET) {
        h = set_hash(s->set, s->n, cp);
        e = memo_find(m, h, s, cp);
        if (e->gen == m->gen) {
            if (e->out_n > *cap) {
                uint32_t *p = realloc(*buf, (size_t)e->out_n * sizeof *p);
                if (!p)
                    return GRAMMAR_NO_MEMORY;
                *buf = p;
                *cap = e->out_n;
            }
            for (int i = 0; i < e->out_n; i++)
                (*buf)[i] = m->pool[e->out_at + i];
            out->set = *buf;
            out->n = e->out_n;
            out->complete = e->complete;
            return out->n || out->complete ? 0 : -1;
        }
    }
    builder b = {a, buf, cap, 0, 0, 0, 0};
    next_gen(a);
    for (int i = 0; i < s->n && !b.err; i++) {
        gb_frame f = a->frames[s->set[i]];
        if (gbnf_class_has(a->g, a->g->elems[f.pos].arg, cp))
            expand(&b, f.pos + 1, f.parent, 0);
    }
    if (b.err)
        return b.err;
    out->set = *buf;
    out->n = b.n;
    out->complete = b.complete;
    if (e)
        memo_keep(m, e, h, s, cp, out);
    return b.n || b.complete ? 0 : -1;
}

/* Whether a stack of s takes one of the code points [lo, hi]. */
static int meets(const grammar_answer *a, const gstate *s, uint32_t lo, uint32_t hi)
{
    for (int i = 0; i < s->n; i++)
        if (gbnf_class_meets(a->g, a->g->elems[a->frames[s->set[i]].pos].arg, lo, hi))
            return 1;
    return 0;
}

/* s after byte b into out (a whole character's stacks built in *buf): 0, -1
 * when no text of the grammar goes on so, or GRAMMAR_TOO_COMPLEX or
 * GRAMMAR_NO_MEMORY. */
static int step(grammar_answer *a, const gstate *s, uint8_t b, gstate *out, uint32_t **buf, int *cap)
{
    *out = *s;
    uint32_t first, last;
    if (s->left) {
        if (b < s->lo || b > s->hi)
            return -1;
        out->cp = s->cp << 6 | (b & 0x3fu);
        out->lo = 0x80;
        out->hi = 0xbf;
        if (--out->left) {
            utf8_range(out->cp, out->left, out->lo, out->hi, &first, &last);
            return meets(a, out, first, last) ? 0 : -1;
        }
        return take(a, s, out->cp, out, buf, cap);
    }
    if (b < 0x80) /* (no NUL: the answer is text) */
        return b ? take(a, s, b, out, buf, cap) : -1;
    int bits = utf8_lead(b, &out->left, &out->lo, &out->hi);
    if (bits < 0)
        return -1;
    out->cp = (uint32_t)bits;
    utf8_range(out->cp, out->left, out->lo, out->hi, &first, &last);
    return meets(a, out, first, last) ? 0 : -1;
}

static gstate current(const grammar_answer *a)
{
    return (gstate){a->set, a->n_set, a->complete, a->cp, a->left, a->lo, a->hi};
}

/* The mask's buffer for the set after byte d of a token. */
static int level(grammar_answer *a, int d)
{
    if (d < a->n_levels)
        return 0;
    uint32_t **l = realloc(a->level, (size_t)(d + 1) * sizeof *l);
    if (l)
        a->level = l;
    int *c = realloc(a->level_cap, (size_t)(d + 1) * sizeof *c);
    if (c)
        a->level_cap = c;
    if (!l || !c)
        return -1;
    for (; a->n_levels <= d; a->n_levels++) {
        a->level[a->n_levels] = NULL;
        a->level_cap[a->n_levels] = 0;
    }
    return 0;
}

/* A mask's state as mask_memo's key: the stacks by their top frames (indices
 * compact() renumbers: it forgets the memo), whether the text is whole, and
 * the character being read (none between characters: the last one's bits
 * then count for nothing, and a loop over characters of any script comes back
 * to one key). 0 when the state is too large to keep. */
static size_t mask_key(const gstate *s, uint8_t *key)
{
    size_t n = (size_t)s->n * sizeof *s->set;
    if (n + 8 > MASK_MEMO_MAX_KEY)
        return 0;
    if (n) /* (a whole text with no stack left may have no buffer) */
        memcpy(key, s->set, n);
    uint32_t cp = s->left ? s->cp : 0;
    memcpy(key + n, &cp, 4);
    key[n + 4] = (uint8_t)s->complete;
    key[n + 5] = s->left;
    key[n + 6] = s->left ? s->lo : 0;
    key[n + 7] = s->left ? s->hi : 0;
    return n + 8;
}

/* ---- the answer --------------------------------------------------------- */

int grammar_answer_init(grammar_answer *a, const gbnf *g)
{
    memset(a, 0, sizeof *a);
    a->g = g;
    a->max_work = GRAMMAR_MAX_MASK_WORK;
    a->cap_frames = 1024;
    a->frames = malloc(a->cap_frames * sizeof *a->frames);
    a->stamp = calloc(a->cap_frames, sizeof *a->stamp);
    if (!a->frames || !a->stamp || rehash(a, 4096) || level(a, 2)) {
        grammar_answer_free(a);
        return GRAMMAR_NO_MEMORY;
    }
    builder b = {a, &a->set, &a->cap_set, 0, 0, 0, 0};
    next_gen(a);
    for (int i = g->alt_first[g->root]; i < g->alt_first[g->root + 1] && !b.err; i++)
        expand(&b, g->alts[i], GB_NO_FRAME, 0);
    a->n_set = b.n;
    a->complete = b.complete;
    if (b.err) {
        grammar_answer_free(a);
        return b.err;
    }
    a->kept = a->n_frames;
    return 0;
}

int grammar_answer_check(const gbnf *g)
{
    grammar_answer a;
    int rc = grammar_answer_init(&a, g);
    if (!rc)
        grammar_answer_free(&a);
    return rc;
}

void grammar_answer_free(grammar_answer *a)
{
    free(a->frames);
    free(a->stamp);
    free(a->table);
    free(a->set);
    for (int d = 0; d < a->n_levels; d++)
        free(a->level[d]);
    if (a->memo)
        free(a->memo->pool);
    free(a->memo);
    mask_memo_free(a->masks);
    free(a->level);
    free(a->level_cap);
    memset(a, 0, sizeof *a);
}

int grammar_answer_feed(grammar_answer *a, const char *b, size_t n)
{
    uint32_t mark = a->n_frames;
    gstate s = current(a);
    for (size_t i = 0; i < n; i++) {
        /* (a scratch buffer the set being read is not in) */
        int k = s.set == a->level[0] ? 1 : 0;
        gstate t;
        int rc = step(a, &s, (uint8_t)b[i], &t, &a->level[k], &a->level_cap[k]);
        if (rc) {
            rollback(a, mark);
            return rc;
        }
        s = t;
    }
    if (s.set != a->set) {
        if (s.n > a->cap_set) {
            uint32_t *p = realloc(a->set, (size_t)s.n * sizeof *p);
            if (!p) {
                rollback(a, mark);
                return GRAMMAR_NO_MEMORY;
            }
            a->set = p;
            a->cap_set = s.n;
        }
        if (s.n) /* (a whole text with no stack left may have no buffer at all) */
            memcpy(a->set, s.set, (size_t)s.n * sizeof *a->set);
    }
    a->n_set = s.n;
    a->complete = s.complete;
    a->cp = s.cp;
    a->left = s.left;
    a->lo = s.lo;
    a->hi = s.hi;
    if (a->n_frames > 2 * a->kept + 65536) {
        mask_memo_forget(a->masks); /* (its keys name frames by the indices compact() changes) */
        if (compact(a))
            return GRAMMAR_NO_MEMORY;
    }
    return 0;
}

int grammar_answer_complete(const grammar_answer *a)
{
    return !a->left && a->complete;
}

typedef struct walk_ctx {
    grammar_answer *a;
    const vocab_trie *t;
    uint8_t *ok;
    int err;
} walk_ctx;

/* Every token under trie node `node`, whose bytes so far leave state s. */
static void walk(walk_ctx *c, int32_t node, const gstate *s, int depth)
{
    grammar_answer *a = c->a;
    const vocab_trie *t = c->t;
    if (level(a, depth + 1)) {
        c->err = GRAMMAR_NO_MEMORY;
        return;
    }
    for (int32_t ch = t->child[node]; ch >= 0 && !c->err; ch = t->sibling[ch]) {
        if (a->work > a->max_work) {
            c->err = GRAMMAR_TOO_COMPLEX;
            return;
        }
        uint32_t mark = a->n_frames;
        gstate u;
        int rc = step(a, s, t->byte[ch], &u, &a->level[depth + 1], &a->level_cap[depth + 1]);
        if (rc < -1)
            c->err = rc;
        if (rc == 0) {
            for (int32_t id = t->token[ch]; id >= 0; id = t->same[id])
                c->ok[id] = 1;
            if (t->child[ch] >= 0)
                walk(c, ch, &u, depth + 1);
        }
        rollback(a, mark);
    }
}

/* The trie of the vocabulary's groups under the grammar (grammar_trie.h),
 * or where the grammar's classes are too many to group, the vocabulary's own
 * (kept with its tables); each built on first use. */
static const vocab_trie *trie_of(const grammar_answer *a, const json_vocab *jv, const vocab *v)
{
    const vocab_trie *grouped = a->ungrouped ? NULL : grammar_trie_get(a->g, v);
    if (grouped)
        return grouped;
    json_vocab *keep = (json_vocab *)jv;
    if (keep->trie)
        return keep->trie;
    vocab_trie *t = malloc(sizeof *t);
    errbuf e;
    if (!t || vocab_trie_build(t, v, &e)) {
        free(t);
        return NULL;
    }
    keep->trie = t;
    return t;
}

int grammar_answer_mask(grammar_answer *a, const vocab *v, const json_vocab *jv, const int *end_ids,
                        int n_end, float *logits, int V)
{
    gstate s = current(a);
    /* (only the trie's mask is kept: the tests' token-by-token one stays their reference) */
    uint8_t key[MASK_MEMO_MAX_KEY];
    size_t key_n = jv && !a->ungrouped && !a->walk_always ? mask_key(&s, key) : 0;
    int met = key_n ? mask_memo_apply(a->masks, key, key_n, v, V, end_ids, n_end, logits) : -1;
    if (met >= 0) {
        a->masks_met++;
        return met;
    }
    uint8_t *ok = calloc((size_t)(V ? V : 1), 1);
    if (!ok)
        return GRAMMAR_NO_MEMORY;
    walk_ctx c = {a, jv ? trie_of(a, jv, v) : NULL, ok, 0};
    a->work = 0;
    if (c.t) {
        if (!a->memo)
            a->memo = calloc(1, sizeof *a->memo); /* (without one, the walk is only slower) */
        take_memo *m = a->memo;
        if (m && ++m->gen == 0) { /* (after 2^32 masks: the slots start again) */
            memset(m->slot, 0, sizeof m->slot);
            m->gen = 1;
        }
        if (m) {
            m->n = 0;
            m->pool_n = 0;
            m->base = a->n_frames;
        }
        a->memo_live = m != NULL;
        walk(&c, 0, &s, 0);
        a->memo_live = 0;
    } else {
        for (int id = 0; id < V && !c.err; id++) {
            size_t n;
            const char *b = vocab_decode(v, id, &n);
            if (!b || !n || vocab_is_special(v, id))
                continue;
            uint32_t mark = a->n_frames;
            gstate u = s;
            int rc = a->work > a->max_work ? GRAMMAR_TOO_COMPLEX : 0;
            for (size_t i = 0; i < n && !rc; i++) {
                gstate w;
                if (level(a, (int)i + 1)) {
                    rc = GRAMMAR_NO_MEMORY;
                    break;
                }
                rc = step(a, &u, (uint8_t)b[i], &w, &a->level[i + 1], &a->level_cap[i + 1]);
                u = w;
            }
            if (rc < -1)
                c.err = rc;
            ok[id] = rc == 0;
            rollback(a, mark);
        }
    }
    if (c.err) {
        free(ok);
        return c.err;
    }
    int complete = grammar_answer_complete(a), possible = 0;
    for (int id = 0; id < V; id++) {
        int end = 0;
        for (int k = 0; k < n_end; k++)
            end |= end_ids[k] == id;
        if (end || vocab_is_special(v, id))
            ok[id] = end && complete;
        if (ok[id])
            possible++;
        else
            logits[id] = -INFINITY;
    }
    if (key_n)
        mask_memo_keep(&a->masks, key, key_n, v, V, end_ids, n_end, ok, possible);
    free(ok);
    return possible;
}

const char *grammar_answer_strerror(int rc)
{
    /* (the numbers are GRAMMAR_MAX_STACKS, GRAMMAR_MAX_NESTING, GRAMMAR_MAX_TAKE_STEPS and
     * GRAMMAR_MAX_MASK_WORK) */
    return rc == GRAMMAR_TOO_COMPLEX
               ? "the grammar's parse of the answer grew past its limits (65,536 parses at "
                 "once, rule references 10,000 deep, 2^24 frames for one character, 10^8 "
                 "stacks moved for one token's mask): the grammar is too ambiguous to hold"
               : "out of memory holding the answer to its grammar";
}
