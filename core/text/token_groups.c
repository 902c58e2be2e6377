/* token_groups: see token_groups.h. */
#include "token_groups.h"

#include <stdlib.h>
#include <string.h>

#include "utf8.h"

#define CP_END 0x110000u
#define LUT_CPS 0x10000u /* the Basic Multilingual Plane: nearly all of a vocabulary's characters */
#define NO_REP 0xffffffffu

/* The atoms: the code points split where some class's range begins or
 * ends, into intervals [bound[i], bound[i + 1]); intervals held by the same
 * classes share an atom (atom[i]; -1 when no class holds them), whose
 * representative is rep[atom]. */
typedef struct atoms {
    uint32_t *bound;
    int *atom;
    int n; /* intervals */
    uint32_t *rep;
    int *lut; /* [LUT_CPS] the atom of each code point below LUT_CPS */
} atoms;

typedef struct edge {
    uint32_t at; /* a class's membership flips here */
    int cls;
} edge;

static int by_at(const void *a, const void *b)
{
    uint32_t x = ((const edge *)a)->at, y = ((const edge *)b)->at;
    return (x > y) - (x < y);
}

static void atoms_free(atoms *a)
{
    free(a->bound);
    free(a->atom);
    free(a->rep);
    free(a->lut);
    memset(a, 0, sizeof *a);
}

static uint64_t hash_words(const uint64_t *w, int n)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++)
        h = (h ^ w[i]) * 1099511628211ull;
    return h ^ h >> 29;
}

/* The first code point of [lo, end) that a token may hold (not NUL, not a
 * surrogate), NO_REP when none. */
static uint32_t first_scalar(uint32_t lo, uint32_t end)
{
    if (lo == 0)
        lo = 1;
    if (lo >= 0xd800 && lo <= 0xdfff)
        lo = 0xe000;
    return lo < end ? lo : NO_REP;
}

/* A sweep over the classes' range ends: the set of classes holding the
 * current interval (a bitset, negated classes starting in it) flips at each
 * end; equal sets are found by a hash of their words. */
static int atoms_build(atoms *a, const class_ranges *cls, int n_cls)
{
    memset(a, 0, sizeof *a);
    size_t n_edges = 0;
    for (int c = 0; c < n_cls; c++)
        n_edges += 2 * (size_t)cls[c].n;
    int words = n_cls / 64 + 1;
    edge *edges = malloc((n_edges ? n_edges : 1) * sizeof *edges);
    if (!edges)
        return -1;
    size_t m = 0;
    for (int c = 0; c < n_cls; c++)
        for (uint32_t i = 0; i < cls[c].n; i++) {
            edges[m++] = (edge){cls[c].pairs[2 * i], c};
            if (cls[c].pairs[2 * i + 1] + 1 < CP_END)
                edges[m++] = (edge){cls[c].pairs[2 * i + 1] + 1, c};
        }
    qsort(edges, m, sizeof *edges, by_at);
    size_t n = 1;
    for (size_t i = 0; i < m; i++)
        n += edges[i].at != 0 && (i == 0 || edges[i].at != edges[i - 1].at);
    if ((double)n * words > (double)TG_MAX_ATOM_WORK) {
        free(edges);
        return -1;
    }
    size_t slots = 16;
    while (slots < 2 * n)
        slots *= 2;
    int cap_atoms = 16, n_atoms = 0;
    a->bound = malloc(n * sizeof *a->bound);
    a->atom = malloc(n * sizeof *a->atom);
    a->rep = malloc((size_t)cap_atoms * sizeof *a->rep);
    uint64_t *held = malloc((size_t)cap_atoms * (size_t)words * sizeof *held); /* each atom's classes */
    uint64_t *cur = calloc((size_t)words, sizeof *cur);
    int *table = malloc(slots * sizeof *table);
    int ok = a->bound && a->atom && a->rep && held && cur && table;
    if (ok)
        memset(table, -1, slots * sizeof *table);
    for (int c = 0; ok && c < n_cls; c++)
        if (cls[c].negated)
            cur[c / 64] ^= 1ull << (c % 64);
    size_t e = 0;
    for (size_t i = 0; ok && i < n; i++) {
        uint32_t lo = i == 0 ? 0 : edges[e].at;
        for (; e < m && edges[e].at == lo; e++)
            cur[edges[e].cls / 64] ^= 1ull << (edges[e].cls % 64);
        uint32_t end = e < m ? edges[e].at : CP_END;
        a->bound[i] = lo;
        a->atom[i] = -1;
        int any = 0;
        for (int w = 0; w < words && !any; w++)
            any = cur[w] != 0;
        if (!any)
            continue;
        size_t s = (size_t)hash_words(cur, words) & (slots - 1);
        for (; table[s] >= 0; s = (s + 1) & (slots - 1))
            if (!memcmp(held + (size_t)table[s] * (size_t)words, cur, (size_t)words * sizeof *cur))
                break;
        if (table[s] < 0) { /* a new atom */
            if (n_atoms == cap_atoms) {
                cap_atoms *= 2;
                uint32_t *r = realloc(a->rep, (size_t)cap_atoms * sizeof *r);
                if (r)
                    a->rep = r;
                uint64_t *h = realloc(held, (size_t)cap_atoms * (size_t)words * sizeof *h);
                if (h)
                    held = h;
                if (!r || !h) {
                    ok = 0;
                    break;
                }
            }
            memcpy(held + (size_t)n_atoms * (size_t)words, cur, (size_t)words * sizeof *cur);
            a->rep[n_atoms] = NO_REP;
            table[s] = n_atoms++;
        }
        a->atom[i] = table[s];
        if (a->rep[table[s]] == NO_REP) /* (the atom's first code point that a token may hold) */
            a->rep[table[s]] = first_scalar(lo, end);
    }
    a->n = (int)n;
    free(edges);
    free(held);
    free(cur);
    free(table);
    /* the intervals laid over the table (each code point's atom without a search) */
    if (ok && !(a->lut = malloc(LUT_CPS * sizeof *a->lut)))
        ok = 0;
    for (int i = 0; ok && i < a->n && a->bound[i] < LUT_CPS; i++) {
        uint32_t end = i + 1 < a->n && a->bound[i + 1] < LUT_CPS ? a->bound[i + 1] : LUT_CPS;
        for (uint32_t cp = a->bound[i]; cp < end; cp++)
            a->lut[cp] = a->atom[i];
    }
    if (!ok)
        atoms_free(a);
    return ok ? 0 : -1;
}

/* The atom of code point cp, -1 when no class holds it. */
static int atom_of(const atoms *a, uint32_t cp)
{
    if (cp < LUT_CPS)
        return a->lut[cp];
    int lo = 0, hi = a->n; /* the last interval starting at or before cp */
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (a->bound[mid] <= cp)
            lo = mid;
        else
            hi = mid;
    }
    return a->atom[lo];
}

static uint64_t hash_cps(const uint32_t *cp, int n)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++)
        h = (h ^ cp[i]) * 1099511628211ull;
    return h;
}

/* Token id's characters as their atoms' representatives into cp (at most
 * cap); the count, TG_SPLIT or TG_NEVER. */
static int token_atoms(const atoms *a, const vocab *v, int id, uint32_t *cp, int cap)
{
    size_t n;
    const uint8_t *b = (const uint8_t *)vocab_decode(v, id, &n);
    if (!b || !n || vocab_is_special(v, id))
        return TG_SPLIT;
    int k = 0;
    for (size_t i = 0; i < n; k++) {
        /* decoded and checked in one pass: a token not of whole characters is split */
        uint8_t left = 0, lo = 0x80, hi = 0xbf;
        uint32_t c = b[i];
        if (c >= 0x80) {
            int lead = utf8_lead(b[i], &left, &lo, &hi);
            if (lead < 0 || left > n - i - 1) /* not a lead byte, or the character cut short */
                return TG_SPLIT;
            c = (uint32_t)lead;
            for (uint8_t m = 1; m <= left; m++) {
                uint8_t x = b[i + m];
                if (x < lo || x > hi)
                    return TG_SPLIT;
                c = c << 6 | (x & 0x3fu);
                lo = 0x80;
                hi = 0xbf;
            }
        }
        i += 1u + left;
        int at = c ? atom_of(a, c) : -1;
        if (at < 0)
            return TG_NEVER;
        if (k == cap)
            return TG_SPLIT;
        cp[k] = a->rep[at];
    }
    return k;
}

void token_groups_free(token_groups *tg)
{
    free(tg->group);
    free(tg->cps);
    free(tg->at);
    memset(tg, 0, sizeof *tg);
}

/* Each token's atoms looked up in a hash of the groups made so far (open
 * addressing over group ids). */
int token_groups_build(token_groups *tg, const vocab *v, const class_ranges *cls, int n_cls)
{
    enum { MAX_CHARS = 256 };
    memset(tg, 0, sizeof *tg);
    atoms a;
    if (atoms_build(&a, cls, n_cls))
        return -1;
    int V = v->n_vocab, cap_cps = 1024, cap_groups = 64;
    size_t slots = 1;
    while (slots < (size_t)V * 2)
        slots *= 2;
    int *table = malloc(slots * sizeof *table);
    tg->v = v;
    tg->n_vocab = V;
    tg->group = malloc((size_t)(V ? V : 1) * sizeof *tg->group);
    tg->cps = malloc((size_t)cap_cps * sizeof *tg->cps);
    tg->at = malloc(((size_t)cap_groups + 1) * sizeof *tg->at);
    int ok = table && tg->group && tg->cps && tg->at;
    if (ok)
        memset(table, -1, slots * sizeof *table);
    if (ok)
        tg->at[0] = 0;
    uint32_t cp[MAX_CHARS];
    for (int id = 0; ok && id < V; id++) {
        int n = token_atoms(&a, v, id, cp, MAX_CHARS);
        tg->group[id] = n;
        if (n < 0)
            continue;
        size_t s = (size_t)hash_cps(cp, n) & (slots - 1);
        for (; table[s] >= 0; s = (s + 1) & (slots - 1)) {
            int g = table[s];
            if (tg->at[g + 1] - tg->at[g] == n && !memcmp(tg->cps + tg->at[g], cp, (size_t)n * sizeof *cp))
                break;
        }
        if (table[s] >= 0) {
            tg->group[id] = table[s];
            continue;
        }
        /* a new group */
        int g = tg->n_groups, end = tg->at[g] + n;
        if (end > cap_cps) {
            while (end > cap_cps)
                cap_cps *= 2;
            uint32_t *nc = realloc(tg->cps, (size_t)cap_cps * sizeof *nc);
            ok = nc != NULL;
            if (nc)
                tg->cps = nc;
        }
        if (ok && g + 1 > cap_groups) {
            cap_groups *= 2;
            int *na = realloc(tg->at, ((size_t)cap_groups + 1) * sizeof *na);
            ok = na != NULL;
            if (na)
                tg->at = na;
        }
        if (!ok)
            break;
        memcpy(tg->cps + tg->at[g], cp, (size_t)n * sizeof *cp);
        tg->at[g + 1] = end;
        tg->n_groups++;
        table[s] = g;
        tg->group[id] = g;
    }
    free(table);
    atoms_free(&a);
    if (!ok)
        token_groups_free(tg);
    return ok ? 0 : -1;
}
