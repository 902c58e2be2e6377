/* pattern_tokens: see pattern_tokens.h. */
#include "pattern_tokens.h"

#include <stdlib.h>
#include <string.h>

#include "utf8.h"

#define CP_END 0x110000u

/* The atoms: the code points split where some range of r begins or ends,
 * into intervals [bound[i], bound[i + 1]); intervals held by the same
 * classes share an atom (atom[i]; -1 when no class holds them), whose code
 * point is rep[atom] (its first interval's first). */
#define LUT_CPS 0x10000u /* the Basic Multilingual Plane: nearly all of a vocabulary's characters */

typedef struct atoms {
    uint32_t *bound;
    int *atom;
    int n; /* intervals */
    uint32_t *rep;
    int *lut; /* [LUT_CPS] the atom of each code point below LUT_CPS */
} atoms;

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static void atoms_free(atoms *a)
{
    free(a->bound);
    free(a->atom);
    free(a->rep);
    free(a->lut);
}

static int atoms_build(const json_regex *r, atoms *a)
{
    int n_ranges = r->cls_at[r->n_cls], words = (r->n_cls + 63) / 64 + 1;
    memset(a, 0, sizeof *a);
    a->bound = malloc(((size_t)2 * (size_t)n_ranges + 2) * sizeof *a->bound);
    if (!a->bound)
        return -1;
    int m = 0;
    a->bound[m++] = 0;
    for (int i = 0; i < n_ranges; i++) {
        a->bound[m++] = r->ranges[i].lo;
        if (r->ranges[i].hi + 1 < CP_END)
            a->bound[m++] = r->ranges[i].hi + 1;
    }
    qsort(a->bound, (size_t)m, sizeof *a->bound, cmp_u32);
    int n = 0;
    for (int i = 0; i < m; i++)
        if (!n || a->bound[i] != a->bound[n - 1])
            a->bound[n++] = a->bound[i];
    a->n = n;
    a->atom = malloc((size_t)n * sizeof *a->atom);
    a->rep = malloc((size_t)n * sizeof *a->rep);
    uint64_t *held = calloc((size_t)n * (size_t)words, sizeof *held);
    if (!a->atom || !a->rep || !held) {
        free(held);
        atoms_free(a);
        return -1;
    }
    /* each interval's classes (bit c), then the first interval with the same
     * ones names the atom (few intervals: a pattern's ranges) */
    int n_atoms = 0;
    for (int i = 0; i < n; i++) {
        uint64_t *h = held + (size_t)i * (size_t)words;
        int any = 0;
        for (int c = 0; c < r->n_cls; c++)
            if (json_regex_class_meets(r, c, a->bound[i], a->bound[i])) {
                h[c / 64] |= 1ull << (c % 64);
                any = 1;
            }
        a->atom[i] = -1;
        if (!any)
            continue;
        for (int k = 0; k < i && a->atom[i] < 0; k++)
            if (a->atom[k] >= 0 && !memcmp(h, held + (size_t)k * (size_t)words, (size_t)words * sizeof *h))
                a->atom[i] = a->atom[k];
        if (a->atom[i] < 0) {
            a->rep[n_atoms] = a->bound[i];
            a->atom[i] = n_atoms++;
        }
    }
    free(held);
    /* the intervals laid over the table (each code point's atom without a search) */
    if (!(a->lut = malloc(LUT_CPS * sizeof *a->lut))) {
        atoms_free(a);
        return -1;
    }
    for (int i = 0; i < n && a->bound[i] < LUT_CPS; i++) {
        uint32_t end = i + 1 < n && a->bound[i + 1] < LUT_CPS ? a->bound[i + 1] : LUT_CPS;
        for (uint32_t cp = a->bound[i]; cp < end; cp++)
            a->lut[cp] = a->atom[i];
    }
    return 0;
}

/* The atom of code point cp, -1 when no class holds it. */
static int atom_search(const atoms *a, uint32_t cp)
{
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

static int atom_of(const atoms *a, uint32_t cp)
{
    return cp < LUT_CPS ? a->lut[cp] : atom_search(a, cp);
}

static void pattern_tokens_free(void *p)
{
    pattern_tokens *pt = p;
    if (!pt)
        return;
    free(pt->group);
    free(pt->cps);
    free(pt->at);
    free(pt->taken);
    free(pt);
}

static uint64_t hash_cps(const uint32_t *cp, int n)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++)
        h = (h ^ cp[i]) * 1099511628211ull;
    return h;
}

/* Token id's characters as their atoms' code points into cp (at most
 * cap); the count, PT_SPLIT or PT_NEVER. */
static int token_atoms(const atoms *a, const vocab *v, int id, uint32_t *cp, int cap)
{
    size_t n;
    const uint8_t *b = (const uint8_t *)vocab_decode(v, id, &n);
    if (!b || !n || vocab_is_special(v, id))
        return PT_SPLIT;
    int k = 0;
    for (size_t i = 0; i < n; k++) {
        /* decoded and checked in one pass: a token not of whole characters is split */
        uint8_t left = 0, lo = 0x80, hi = 0xbf;
        uint32_t c = b[i];
        if (c >= 0x80) {
            int lead = utf8_lead(b[i], &left, &lo, &hi);
            if (lead < 0 || left > n - i - 1) /* not a lead byte, or the character cut short */
                return PT_SPLIT;
            c = (uint32_t)lead;
            for (uint8_t m = 1; m <= left; m++) {
                uint8_t x = b[i + m];
                if (x < lo || x > hi)
                    return PT_SPLIT;
                c = c << 6 | (x & 0x3fu);
                lo = 0x80;
                hi = 0xbf;
            }
        }
        i += 1u + left;
        int at = c ? atom_of(a, c) : -1;
        if (at < 0)
            return PT_NEVER;
        if (k == cap)
            return PT_SPLIT;
        cp[k] = a->rep[at];
    }
    return k;
}

/* Groups v's tokens: each token's atoms looked up in a hash of the groups
 * made so far (open addressing over group ids). */
static pattern_tokens *build(const json_regex *r, const vocab *v)
{
    enum { MAX_CHARS = 256 };
    atoms a;
    pattern_tokens *pt = calloc(1, sizeof *pt);
    if (!pt || atoms_build(r, &a)) {
        free(pt);
        return NULL;
    }
    int V = v->n_vocab, cap_cps = 1024, cap_groups = 64;
    size_t slots = 1;
    while (slots < (size_t)V * 2)
        slots *= 2;
    int *table = malloc(slots * sizeof *table);
    pt->v = v;
    pt->n_vocab = V;
    pt->group = malloc((size_t)V * sizeof *pt->group);
    pt->cps = malloc((size_t)cap_cps * sizeof *pt->cps);
    pt->at = malloc(((size_t)cap_groups + 1) * sizeof *pt->at);
    int ok = table && pt->group && pt->cps && pt->at;
    if (ok)
        memset(table, -1, slots * sizeof *table);
    if (ok)
        pt->at[0] = 0;
    uint32_t cp[MAX_CHARS];
    for (int id = 0; ok && id < V; id++) {
        int n = token_atoms(&a, v, id, cp, MAX_CHARS);
        pt->group[id] = n;
        if (n < 0)
            continue;
        size_t s = (size_t)hash_cps(cp, n) & (slots - 1);
        for (; table[s] >= 0; s = (s + 1) & (slots - 1)) {
            int g = table[s];
            if (pt->at[g + 1] - pt->at[g] == n && !memcmp(pt->cps + pt->at[g], cp, (size_t)n * sizeof *cp))
                break;
        }
        if (table[s] >= 0) {
            pt->group[id] = table[s];
            continue;
        }
        /* a new group */
        int g = pt->n_groups, end = pt->at[g] + n;
        if (end > cap_cps) {
            while (end > cap_cps)
                cap_cps *= 2;
            uint32_t *nc = realloc(pt->cps, (size_t)cap_cps * sizeof *nc);
            ok = nc != NULL;
            if (nc)
                pt->cps = nc;
        }
        if (ok && g + 1 > cap_groups) {
            cap_groups *= 2;
            int *na = realloc(pt->at, ((size_t)cap_groups + 1) * sizeof *na);
            ok = na != NULL;
            if (na)
                pt->at = na;
        }
        if (!ok)
            break;
        memcpy(pt->cps + pt->at[g], cp, (size_t)n * sizeof *cp);
        pt->at[g + 1] = end;
        pt->n_groups++;
        table[s] = g;
        pt->group[id] = g;
    }
    free(table);
    atoms_free(&a);
    if (ok)
        ok = (pt->taken = calloc((size_t)pt->n_groups + 1, 1)) != NULL;
    if (!ok) {
        pattern_tokens_free(pt);
        return NULL;
    }
    return pt;
}

pattern_tokens *pattern_tokens_get(const json_regex *r, const vocab *v)
{
    /* (the table is a memo kept with the pattern, which it does not change) */
    json_regex *keep = (json_regex *)r;
    pattern_tokens *pt = keep->memo_free == pattern_tokens_free ? keep->memo : NULL;
    if (pt && pt->v == v && pt->n_vocab == v->n_vocab)
        return pt;
    if (keep->memo_free)
        keep->memo_free(keep->memo);
    keep->memo = pt = build(r, v);
    keep->memo_free = pt ? pattern_tokens_free : NULL;
    return pt;
}

void pattern_tokens_reset(pattern_tokens *pt)
{
    memset(pt->taken, 0, (size_t)pt->n_groups);
}

int pattern_tokens_taken(pattern_tokens *pt, int id, pattern_take_fn take, const void *state)
{
    int g = pt->group[id];
    if (g < 0)
        return 0; /* (PT_NEVER; PT_SPLIT is the caller's) */
    if (!pt->taken[g])
        pt->taken[g] = take(state, pt->cps + pt->at[g], pt->at[g + 1] - pt->at[g]) ? 1 : -1;
    return pt->taken[g] > 0;
}
