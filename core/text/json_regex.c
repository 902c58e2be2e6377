/* json_regex: see json_regex.h. The pattern is parsed into a tree (classes
 * at the leaves, concatenation, alternation, repeats), then each leaf written
 * out becomes a position of Glushkov's automaton: follow[p] holds the
 * positions that may come after p. */
#include "json_regex.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NODES 4096
#define MAX_DEPTH 64
#define MAX_REPEAT 1000
#define CP_MAX 0x10ffffu

enum { T_CLASS, T_CAT, T_ALT, T_REP };

typedef struct tnode {
    int kind;
    int kid, next; /* first child, next sibling (-1: none) */
    int cls;       /* T_CLASS */
    int min, max;  /* T_REP; max -1: no end */
} tnode;

typedef struct parser {
    const char *p, *end, *start;
    json_regex *r;
    tnode *t;
    int n_t;
    json_regex_range *tmp; /* the class being read */
    int n_tmp, cap_tmp;
    int cap_ranges;
    int depth;
    errbuf *e;
} parser;

/* ---- sets ---- */

static void set_or(json_regex_set *a, const json_regex_set *b)
{
    for (int k = 0; k < JSON_REGEX_WORDS; k++)
        a->w[k] |= b->w[k];
}

static int set_meets(const json_regex_set *a, const json_regex_set *b)
{
    for (int k = 0; k < JSON_REGEX_WORDS; k++)
        if (a->w[k] & b->w[k])
            return 1;
    return 0;
}

static int set_has(const json_regex_set *s, int p)
{
    return s->w[p >> 6] >> (p & 63) & 1;
}

static void set_add(json_regex_set *s, int p)
{
    s->w[p >> 6] |= 1ull << (p & 63);
}

/* ---- classes ---- */

static int fail(parser *ps, const char *what)
{
    return err_set(ps->e, "pattern: %s at offset %d", what, (int)(ps->p - ps->start));
}

static int tmp_add(parser *ps, uint32_t lo, uint32_t hi)
{
    if (ps->n_tmp == ps->cap_tmp) {
        int cap = ps->cap_tmp ? 2 * ps->cap_tmp : 32;
        json_regex_range *n = realloc(ps->tmp, (size_t)cap * sizeof *n);
        if (!n)
            return err_set(ps->e, "out of memory for the pattern");
        ps->tmp = n;
        ps->cap_tmp = cap;
    }
    ps->tmp[ps->n_tmp++] = (json_regex_range){lo, hi};
    return 0;
}

static int range_order(const void *a, const void *b)
{
    const json_regex_range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* The ranges read (tmp), sorted and merged, complemented when negate, as a
 * new class; its index. */
static int class_end(parser *ps, int negate)
{
    json_regex *r = ps->r;
    if (ps->n_tmp) /* ([] is a class of nothing) */
        qsort(ps->tmp, (size_t)ps->n_tmp, sizeof *ps->tmp, range_order);
    int n = 0;
    for (int i = 0; i < ps->n_tmp; i++) {
        if (n && ps->tmp[i].lo <= ps->tmp[n - 1].hi + 1) {
            if (ps->tmp[i].hi > ps->tmp[n - 1].hi)
                ps->tmp[n - 1].hi = ps->tmp[i].hi;
        } else {
            ps->tmp[n++] = ps->tmp[i];
        }
    }
    ps->n_tmp = n;
    if (negate) {
        json_regex_range *old = malloc(((size_t)n + 1) * sizeof *old);
        if (!old)
            return err_set(ps->e, "out of memory for the pattern");
        if (n)
            memcpy(old, ps->tmp, (size_t)n * sizeof *old);
        ps->n_tmp = 0;
        uint32_t from = 0;
        int rc = 0;
        for (int i = 0; i < n && !rc; i++) {
            if (old[i].lo > from)
                rc = tmp_add(ps, from, old[i].lo - 1);
            from = old[i].hi + 1;
        }
        if (!rc && (n == 0 || old[n - 1].hi < CP_MAX))
            rc = tmp_add(ps, from, CP_MAX);
        free(old);
        if (rc)
            return -1;
    }
    int need = r->cls_at ? r->cls_at[r->n_cls] + ps->n_tmp : ps->n_tmp;
    if (need > ps->cap_ranges) {
        int cap = need * 2 + 16;
        json_regex_range *nr = realloc(r->ranges, (size_t)cap * sizeof *nr);
        if (!nr)
            return err_set(ps->e, "out of memory for the pattern");
        r->ranges = nr;
        ps->cap_ranges = cap;
    }
    int *at = realloc(r->cls_at, ((size_t)r->n_cls + 2) * sizeof *at);
    if (!at)
        return err_set(ps->e, "out of memory for the pattern");
    r->cls_at = at;
    if (r->n_cls == 0)
        at[0] = 0;
    if (ps->n_tmp)
        memcpy(r->ranges + at[r->n_cls], ps->tmp, (size_t)ps->n_tmp * sizeof *ps->tmp);
    at[r->n_cls + 1] = at[r->n_cls] + ps->n_tmp;
    ps->n_tmp = 0;
    return r->n_cls++;
}

/* \d \w \s (ECMA-262: ASCII digits and word characters; white space and
 * line terminators), or \D \W \S, their complements, into tmp */
static int add_escape_set(parser *ps, char c)
{
    static const uint32_t space[][2] = {
        {9, 13},          {32, 32},         {0xa0, 0xa0},     {0x1680, 0x1680}, {0x2000, 0x200a},
        {0x2028, 0x2029}, {0x202f, 0x202f}, {0x205f, 0x205f}, {0x3000, 0x3000}, {0xfeff, 0xfeff}};
    static const uint32_t word[][2] = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
    static const uint32_t digit[][2] = {{'0', '9'}};
    char lower = (char)(c | 0x20);
    const uint32_t(*set)[2] = lower == 'd' ? digit : lower == 'w' ? word : space;
    int n = lower == 'd' ? 1 : lower == 'w' ? 4 : (int)(sizeof space / sizeof *space);
    uint32_t from = 0;
    for (int i = 0; i < n; i++) { /* the set's ranges (sorted), or the gaps between them for \D \W \S */
        if (c == lower ? tmp_add(ps, set[i][0], set[i][1])
                       : set[i][0] > from && tmp_add(ps, from, set[i][0] - 1))
            return -1;
        from = set[i][1] + 1;
    }
    return c == lower ? 0 : tmp_add(ps, from, CP_MAX);
}

/* one escaped set as a class of its own */
static int escape_set_class(parser *ps, char c)
{
    return add_escape_set(ps, c) ? -1 : class_end(ps, 0);
}

static int utf8_next(parser *ps, uint32_t *cp)
{
    const unsigned char *s = (const unsigned char *)ps->p;
    size_t left = (size_t)(ps->end - ps->p);
    int n = s[0] < 0x80 ? 1 : s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc0 ? 2 : 0;
    if (!n || (size_t)n > left)
        return fail(ps, "a byte that is not UTF-8");
    uint32_t c = n == 1 ? s[0] : s[0] & (0x3f >> (n - 1));
    for (int k = 1; k < n; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return fail(ps, "a byte that is not UTF-8");
        c = c << 6 | (s[k] & 0x3f);
    }
    ps->p += n;
    *cp = c;
    return 0;
}

static int hex_digits(parser *ps, int n, uint32_t *cp)
{
    uint32_t v = 0;
    for (int k = 0; k < n; k++) {
        char c = ps->p + k < ps->end ? ps->p[k] : 0;
        int d = c >= '0' && c <= '9'                     ? c - '0'
                : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10
                                                         : -1;
        if (d < 0)
            return fail(ps, n == 2 ? "\\x needs two hex digits" : "\\u needs four hex digits");
        v = v << 4 | (uint32_t)d;
    }
    ps->p += n;
    *cp = v;
    return 0;
}

/* After a backslash: a single code point (*cp, returns 0) or a set \d \w \s
 * and their negations (returns the letter); in_class: \b is a backspace. */
static int escape(parser *ps, int in_class, uint32_t *cp)
{
    if (ps->p >= ps->end)
        return fail(ps, "a pattern ending in a backslash");
    char c = *ps->p++;
    switch (c) {
    case 'd':
    case 'D':
    case 'w':
    case 'W':
    case 's':
    case 'S': return c;
    case 't': *cp = 9; return 0;
    case 'n': *cp = 10; return 0;
    case 'v': *cp = 11; return 0;
    case 'f': *cp = 12; return 0;
    case 'r': *cp = 13; return 0;
    case 'x': return hex_digits(ps, 2, cp);
    case 'u': {
        if (ps->p < ps->end && *ps->p == '{')
            return fail(ps, "\\u{...} (the u flag's escape) is not held");
        if (hex_digits(ps, 4, cp))
            return -1;
        if (*cp < 0xd800 || *cp > 0xdfff)
            return 0;
        /* a surrogate pair written as two escapes is the one character they
         * make (as ECMA-262 reads "\uD83D\uDE00"); a lone half matches no
         * character of an answer, which is UTF-8 text */
        uint32_t low = 0;
        if (*cp <= 0xdbff && ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u') {
            ps->p += 2;
            if (hex_digits(ps, 4, &low))
                return -1;
            if (low >= 0xdc00 && low <= 0xdfff) {
                *cp = 0x10000 + ((*cp - 0xd800) << 10) + (low - 0xdc00);
                return 0;
            }
        }
        return fail(ps, "a lone surrogate (\\uD800 to \\uDFFF without its other half) matches no character");
    }
    case 'b':
        if (in_class) {
            *cp = 8;
            return 0;
        }
        /* fall through */
    case 'B': return fail(ps, "a word boundary (\\b, \\B) is not held");
    case 'p':
    case 'P': return fail(ps, "a Unicode property (\\p, \\P) is not held");
    case 'k': return fail(ps, "a backreference is not held");
    case 'c': return fail(ps, "a control escape (\\c) is not held");
    case '0':
        if (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
            return fail(ps, "an octal escape is not held");
        *cp = 0;
        return 0;
    default:
        if (c >= '1' && c <= '9')
            return fail(ps, "a backreference is not held");
        ps->p--; /* an escaped character stands for itself */
        return utf8_next(ps, cp);
    }
}

static int new_node(parser *ps, int kind)
{
    if (ps->n_t == MAX_NODES)
        return fail(ps, "a pattern too large");
    ps->t[ps->n_t] = (tnode){.kind = kind, .kid = -1, .next = -1};
    return ps->n_t++;
}

static int leaf(parser *ps, int cls)
{
    int n = cls < 0 ? -1 : new_node(ps, T_CLASS);
    if (n >= 0)
        ps->t[n].cls = cls;
    return n;
}

static int single(parser *ps, uint32_t lo, uint32_t hi)
{
    return tmp_add(ps, lo, hi) ? -1 : leaf(ps, class_end(ps, 0));
}

static int bracket(parser *ps)
{
    int negate = ps->p < ps->end && *ps->p == '^';
    ps->p += negate;
    for (;;) {
        if (ps->p >= ps->end)
            return fail(ps, "a class without its ']'");
        if (*ps->p == ']') {
            ps->p++;
            return leaf(ps, class_end(ps, negate));
        }
        uint32_t lo, hi;
        int set = 0;
        if (*ps->p == '\\') {
            ps->p++;
            if ((set = escape(ps, 1, &lo)) < 0)
                return -1;
        } else if (utf8_next(ps, &lo)) {
            return -1;
        }
        if (set) {
            if (add_escape_set(ps, (char)set))
                return -1;
            continue;
        }
        hi = lo;
        if (ps->p + 1 < ps->end && *ps->p == '-' && ps->p[1] != ']') {
            ps->p++;
            if (*ps->p == '\\') {
                ps->p++;
                int s2 = escape(ps, 1, &hi);
                if (s2 < 0)
                    return -1;
                if (s2)
                    return fail(ps, "a range ending in a set (\\d, \\w, \\s)");
            } else if (utf8_next(ps, &hi)) {
                return -1;
            }
            if (hi < lo)
                return fail(ps, "a range out of order");
        }
        if (tmp_add(ps, lo, hi))
            return -1;
    }
}

static int parse_alt(parser *ps);

/* {n}, {n,}, {n,m} at p: 1 with the bounds read, 0 when it is not one
 * (then '{' is a literal, as ECMA-262's Annex B reads it) */
static int braces(parser *ps, int *min, int *max)
{
    const char *q = ps->p + 1;
    long a = 0, b;
    int digits = 0;
    /* (every digit read: past MAX_REPEAT the count stays past it, refused) */
    for (; q < ps->end && *q >= '0' && *q <= '9'; q++, digits++)
        if (a <= MAX_REPEAT)
            a = a * 10 + (*q - '0');
    if (!digits)
        return 0;
    b = a;
    if (q < ps->end && *q == ',') {
        q++;
        b = -1;
        if (q < ps->end && *q >= '0' && *q <= '9')
            for (b = 0; q < ps->end && *q >= '0' && *q <= '9'; q++)
                if (b <= MAX_REPEAT)
                    b = b * 10 + (*q - '0');
    }
    if (q >= ps->end || *q != '}')
        return 0;
    ps->p = q + 1;
    *min = (int)a;
    *max = (int)b;
    return 1;
}

/* whether a quantifier begins at p (nothing read) */
static int quantifier_at(const parser *ps)
{
    if (ps->p >= ps->end)
        return 0;
    char c = *ps->p;
    parser look = *ps;
    int a, b;
    return c == '*' || c == '+' || c == '?' || (c == '{' && braces(&look, &a, &b));
}

static int atom(parser *ps)
{
    uint32_t cp;
    char c = *ps->p;
    if (c == '(') {
        ps->p++;
        if (ps->p < ps->end && *ps->p == '?') {
            if (ps->p + 1 < ps->end && ps->p[1] == ':') {
                ps->p += 2;
            } else if (ps->p + 2 < ps->end && ps->p[1] == '<' && ps->p[2] != '=' && ps->p[2] != '!') {
                const char *gt = memchr(ps->p, '>', (size_t)(ps->end - ps->p));
                if (!gt)
                    return fail(ps, "a group name without its '>'");
                ps->p = gt + 1; /* a named group: a group */
            } else {
                return fail(ps, "lookaround ((?=, (?!, (?<=, (?<!) or a flag group is not held");
            }
        }
        if (++ps->depth > MAX_DEPTH)
            return fail(ps, "groups nested too deep");
        int n = parse_alt(ps);
        ps->depth--;
        if (n < 0)
            return -1;
        if (ps->p >= ps->end || *ps->p != ')')
            return fail(ps, "a group without its ')'");
        ps->p++;
        return n;
    }
    if (c == '[') {
        ps->p++;
        return bracket(ps);
    }
    if (c == '.') { /* any code point but a line terminator */
        ps->p++;
        return tmp_add(ps, 10, 10) || tmp_add(ps, 13, 13) || tmp_add(ps, 0x2028, 0x2029)
                   ? -1
                   : leaf(ps, class_end(ps, 1));
    }
    if (c == '\\') {
        ps->p++;
        int set = escape(ps, 0, &cp);
        if (set < 0)
            return -1;
        return set ? leaf(ps, escape_set_class(ps, (char)set)) : single(ps, cp, cp);
    }
    if (c == '^' || c == '$')
        return fail(ps, "an anchor (^, $) other than at the pattern's start or end is not held");
    if (quantifier_at(ps))
        return fail(ps, "a quantifier with nothing to repeat");
    if (c == ')')
        return fail(ps, "a ')' without its '('");
    if (utf8_next(ps, &cp))
        return -1;
    return single(ps, cp, cp);
}

static int parse_cat(parser *ps)
{
    int cat = new_node(ps, T_CAT), tail = -1;
    if (cat < 0)
        return -1;
    while (ps->p < ps->end && *ps->p != '|' && *ps->p != ')') {
        int a = atom(ps);
        if (a < 0)
            return -1;
        int min = -2, max = 0;
        if (ps->p < ps->end) {
            char q = *ps->p;
            if (q == '*' || q == '+' || q == '?') {
                ps->p++;
                min = q == '+';
                max = q == '?' ? 1 : -1;
            } else if (q == '{' && braces(ps, &min, &max)) {
                if (min > MAX_REPEAT || max > MAX_REPEAT)
                    return fail(ps, "a repeat of more than 1000");
                if (max >= 0 && max < min)
                    return fail(ps, "a repeat {n,m} with m below n");
            }
            if (min != -2 && ps->p < ps->end && *ps->p == '?')
                ps->p++; /* lazy: the same strings */
            if (min != -2 && quantifier_at(ps))
                return fail(ps, "a quantifier after a quantifier");
        }
        if (min != -2) {
            int rep = new_node(ps, T_REP);
            if (rep < 0)
                return -1;
            ps->t[rep].kid = a;
            ps->t[rep].min = min;
            ps->t[rep].max = max;
            a = rep;
        }
        if (tail < 0)
            ps->t[cat].kid = a;
        else
            ps->t[tail].next = a;
        tail = a;
    }
    return cat;
}

static int parse_alt(parser *ps)
{
    int first = parse_cat(ps);
    if (first < 0 || ps->p >= ps->end || *ps->p != '|')
        return first;
    int alt = new_node(ps, T_ALT), tail = first;
    if (alt < 0)
        return -1;
    ps->t[alt].kid = first;
    while (ps->p < ps->end && *ps->p == '|') {
        ps->p++;
        int n = parse_cat(ps);
        if (n < 0)
            return -1;
        ps->t[tail].next = n;
        tail = n;
    }
    return alt;
}

/* ---- Glushkov's positions ---- */

typedef struct frag {
    int nullable;
    json_regex_set first, last;
} frag;

static const frag empty_frag = {.nullable = 1};

/* a followed by b */
static void cat(json_regex *r, frag *a, const frag *b)
{
    for (int p = 1; p <= r->n_pos; p++)
        if (set_has(&a->last, p))
            set_or(&r->follow[p], &b->first);
    if (a->nullable)
        set_or(&a->first, &b->first);
    if (!b->nullable)
        memset(&a->last, 0, sizeof a->last);
    set_or(&a->last, &b->last);
    a->nullable &= b->nullable;
}

static int build(parser *ps, int n, frag *out)
{
    json_regex *r = ps->r;
    const tnode *t = &ps->t[n];
    *out = empty_frag;
    switch (t->kind) {
    case T_CLASS: {
        if (r->n_pos == JSON_REGEX_MAX_POS)
            return err_set(ps->e,
                           "pattern: more than %d characters and classes once its repeats are "
                           "written out",
                           JSON_REGEX_MAX_POS);
        int p = ++r->n_pos;
        r->cls[p] = t->cls;
        out->nullable = 0;
        set_add(&out->first, p);
        set_add(&out->last, p);
        return 0;
    }
    case T_CAT:
        for (int k = t->kid; k >= 0; k = ps->t[k].next) {
            frag f;
            if (build(ps, k, &f))
                return -1;
            cat(r, out, &f);
        }
        return 0;
    case T_ALT:
        out->nullable = 0;
        for (int k = t->kid; k >= 0; k = ps->t[k].next) {
            frag f;
            if (build(ps, k, &f))
                return -1;
            out->nullable |= f.nullable;
            set_or(&out->first, &f.first);
            set_or(&out->last, &f.last);
        }
        return 0;
    default: { /* T_REP: min copies, then a loop or max - min optional ones */
        int copies = t->max < 0 ? t->min + 1 : t->max, before = r->n_pos;
        for (int i = 0; i < copies; i++) {
            frag f;
            if (build(ps, t->kid, &f))
                return -1;
            if (r->n_pos == before) {
                /* a part that matches no character (an empty group) is the
                 * same however often: once (nested, copies would multiply) */
                f.nullable |= t->min == 0;
                cat(r, out, &f);
                return 0;
            }
            if (t->max < 0 && i == copies - 1) {
                for (int p = 1; p <= r->n_pos; p++)
                    if (set_has(&f.last, p))
                        set_or(&r->follow[p], &f.first);
                f.nullable = 1;
            } else if (i >= t->min) {
                f.nullable = 1;
            }
            cat(r, out, &f);
        }
        return 0;
    }
    }
}

static int class_empty(const json_regex *r, int c)
{
    return r->cls_at[c] == r->cls_at[c + 1];
}

/* Drops the positions no match goes through, and works out each one's
 * completion lengths. */
static int finish(json_regex *r, errbuf *e)
{
    int n = r->n_pos;
    json_regex_set enterable = {{0}}, alive = r->last, reach, next;
    for (int p = 1; p <= n; p++)
        if (!class_empty(r, r->cls[p]))
            set_add(&enterable, p);
    for (int p = 0; p <= n; p++)
        for (int k = 0; k < JSON_REGEX_WORDS; k++)
            r->follow[p].w[k] &= enterable.w[k];
    for (int k = 0; k < JSON_REGEX_WORDS; k++)
        alive.w[k] &= enterable.w[k] | (k == 0); /* (the start is no class) */
    for (int changed = 1; changed;) {
        changed = 0;
        for (int p = 0; p <= n; p++)
            if (!set_has(&alive, p) && set_meets(&r->follow[p], &alive)) {
                set_add(&alive, p);
                changed = 1;
            }
    }
    if (!set_has(&alive, 0))
        return err_set(e, "pattern: no string matches it");
    for (int p = 0; p <= n; p++)
        for (int k = 0; k < JSON_REGEX_WORDS; k++)
            r->follow[p].w[k] &= alive.w[k];
    for (int k = 0; k < JSON_REGEX_WORDS; k++)
        r->last.w[k] &= alive.w[k];
    /* reach: the positions with a completion of exactly l code points; a
     * completion longer than 255 exists iff one of 256 to 255 + n + 1 does
     * (a longer one holds a loop of at most n + 1 positions to cut out) */
    r->lens = calloc((size_t)n + 1, sizeof *r->lens);
    r->longer = calloc((size_t)n + 1, 1);
    if (!r->lens || !r->longer)
        return err_set(e, "out of memory for the pattern");
    reach = r->last;
    for (int l = 0; l < JSON_REGEX_LENS + n + 1; l++) {
        int any = 0;
        memset(&next, 0, sizeof next);
        for (int p = 0; p <= n; p++) {
            if (set_has(&reach, p)) {
                any = 1;
                if (l < JSON_REGEX_LENS)
                    r->lens[p][l >> 6] |= 1ull << (l & 63);
                else
                    r->longer[p] = 1;
            }
            if (set_meets(&r->follow[p], &reach))
                set_add(&next, p);
        }
        if (!any)
            break;
        reach = next;
    }
    return 0;
}

/* Whether a '|' stands outside every group and class of pattern[0, len). */
static int top_level_bar(const char *pattern, size_t len)
{
    int depth = 0, in_class = 0;
    for (size_t i = 0; i < len; i++) {
        char c = pattern[i];
        if (c == '\\')
            i++;
        else if (in_class)
            in_class = c != ']';
        else if (c == '[')
            in_class = 1;
        else if (c == '(')
            depth++;
        else if (c == ')')
            depth--;
        else if (c == '|' && depth == 0)
            return 1;
    }
    return 0;
}

int json_regex_compile(json_regex *r, const char *pattern, size_t len, errbuf *e)
{
    memset(r, 0, sizeof *r);
    parser ps = {.p = pattern, .end = pattern + len, .start = pattern, .r = r, .e = e};
    /* anchored at the start and at the end (a '$' not escaped), else the
     * pattern may match anywhere: any code points around it */
    int head = len && pattern[0] == '^', tail = 0;
    if (len > (size_t)head && pattern[len - 1] == '$') {
        size_t bs = 0;
        while (bs + 1 < len && pattern[len - 2 - bs] == '\\')
            bs++;
        tail = bs % 2 == 0;
    }
    /* (^a|b$ anchors one alternative each: not a whole-answer match) */
    if ((head || tail) && top_level_bar(pattern, len))
        return err_set(e, "pattern: an anchor (^, $) beside a '|' outside a group is not held "
                       "(write ^(a|b)$ for a whole-answer match)");
    ps.p += head;
    ps.end -= tail;
    r->cls = calloc(JSON_REGEX_MAX_POS + 1, sizeof *r->cls);
    r->follow = calloc(JSON_REGEX_MAX_POS + 1, sizeof *r->follow);
    ps.t = malloc(MAX_NODES * sizeof *ps.t);
    int rc = !r->cls || !r->follow || !ps.t ? err_set(e, "out of memory for the pattern") : 0;
    int root = rc ? -1 : parse_alt(&ps);
    if (root >= 0 && ps.p < ps.end)
        root = fail(&ps, "a ')' without its '('");
    int any = root < 0 ? -1 : tmp_add(&ps, 0, CP_MAX) ? -1 : class_end(&ps, 0);
    frag f = empty_frag, part;
    if (any < 0) {
        rc = -1;
    } else {
        int star = -1, star_leaf = -1;
        if (!head || !tail) {
            star_leaf = leaf(&ps, any);
            star = star_leaf < 0 ? -1 : new_node(&ps, T_REP);
            if (star >= 0)
                ps.t[star] = (tnode){.kind = T_REP, .kid = star_leaf, .next = -1, .min = 0, .max = -1};
        }
        rc = (!head || !tail) && star < 0;
        if (!rc && !head && !(rc = build(&ps, star, &part)))
            cat(r, &f, &part);
        if (!rc && !(rc = build(&ps, root, &part)))
            cat(r, &f, &part);
        if (!rc && !tail && !(rc = build(&ps, star, &part)))
            cat(r, &f, &part);
    }
    if (!rc) {
        r->follow[0] = f.first;
        r->last = f.last;
        if (f.nullable)
            set_add(&r->last, 0);
        rc = finish(r, e);
    }
    free(ps.t);
    free(ps.tmp);
    if (rc)
        json_regex_free(r);
    return rc ? -1 : 0;
}

/* ---- formats ---- */

#define DIGIT "[0-9]"
#define DAY31 "(0[1-9]|[12][0-9]|3[01])"
#define DAY30 "(0[1-9]|[12][0-9]|30)"
#define DAY28 "(0[1-9]|1[0-9]|2[0-8])"
#define LEAP4 "(0[48]|[2468][048]|[13579][26])"
/* RFC 3339 full-date, the days each month has (29 February in leap years only) */
#define DATE                                                                                                 \
    "(" DIGIT "{4}-((0[13578]|1[02])-" DAY31 "|(0[469]|11)-" DAY30 "|02-" DAY28 ")|(" DIGIT "{2}" LEAP4      \
    "|" LEAP4 "00)-02-29)"
#define TIME                                                                                                 \
    "([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
#define OCTET "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#define LABEL "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#define HEX "[0-9a-fA-F]"

int json_regex_format(json_regex *r, const char *format, errbuf *e)
{
    static const struct {
        const char *name, *pattern;
    } formats[] = {
        {"date", "^" DATE "$"},
        {"time", "^" TIME "$"},
        {"date-time", "^" DATE "[Tt]" TIME "$"},
        {"uuid", "^" HEX "{8}-" HEX "{4}-" HEX "{4}-" HEX "{4}-" HEX "{12}$"},
        {"ipv4", "^(" OCTET "\\.){3}" OCTET "$"},
        {"hostname", "^" LABEL "(\\." LABEL ")*$"},
        {"email",
         "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@" LABEL "(\\." LABEL ")+$"},
    };
    for (size_t i = 0; i < sizeof formats / sizeof *formats; i++)
        if (!strcmp(format, formats[i].name))
            return json_regex_compile(r, formats[i].pattern, strlen(formats[i].pattern), e);
    return err_set(e, "format '%.40s' is not held (held: date, time, date-time, uuid, ipv4, hostname, email)",
                   format);
}

void json_regex_free(json_regex *r)
{
    if (r->memo_free)
        r->memo_free(r->memo);
    free(r->cls);
    free(r->cls_at);
    free(r->ranges);
    free(r->follow);
    free(r->lens);
    free(r->longer);
    memset(r, 0, sizeof *r);
}

/* ---- running ---- */

void json_regex_start(json_regex_set *s)
{
    memset(s, 0, sizeof *s);
    s->w[0] = 1;
}

int json_regex_class_meets(const json_regex *r, int c, uint32_t lo, uint32_t hi)
{
    int a = r->cls_at[c], b = r->cls_at[c + 1];
    while (a < b) { /* the first range that ends at lo or later */
        int m = (a + b) / 2;
        if (r->ranges[m].hi < lo)
            a = m + 1;
        else
            b = m;
    }
    return a < r->cls_at[c + 1] && r->ranges[a].lo <= hi;
}

/* a completion of p's with a length in [min, max] (max < 0: any) */
static int length_fits(const json_regex *r, int p, long min, long max)
{
    if (min < 0)
        min = 0;
    if (max >= 0 && max < min)
        return 0;
    long top = max < 0 || max >= JSON_REGEX_LENS ? JSON_REGEX_LENS - 1 : max;
    for (long l = min; l <= top; l++) {
        uint64_t word = r->lens[p][l >> 6] >> (l & 63);
        if (word & 1)
            return 1;
        if (!word) /* nothing more in this word */
            l |= 63;
    }
    return r->longer[p] && (max < 0 || max >= JSON_REGEX_LENS);
}

#define EACH(s, p)                                                                                           \
    for (int w_ = 0; w_ < JSON_REGEX_WORDS; w_++)                                                            \
        for (uint64_t b_ = (s)->w[w_]; b_; b_ &= b_ - 1)                                                     \
            for (int p = w_ * 64 + __builtin_ctzll(b_), once_ = 1; once_; once_ = 0)

int json_regex_may_take(const json_regex *r, const json_regex_set *s, uint32_t lo, uint32_t hi, long min,
                        long max)
{
    json_regex_set next = {{0}};
    if (max == 0)
        return 0; /* no room for a code point */
    EACH(s, p) {
        set_or(&next, &r->follow[p]);
    }
    EACH(&next, q) {
        if (json_regex_class_meets(r, r->cls[q], lo, hi) &&
            length_fits(r, q, min - 1, max < 0 ? -1 : max - 1))
            return 1;
    }
    return 0;
}

void json_regex_step(const json_regex *r, json_regex_set *s, uint32_t c)
{
    json_regex_set next = {{0}}, out = {{0}};
    EACH(s, p) {
        set_or(&next, &r->follow[p]);
    }
    EACH(&next, q) {
        if (json_regex_class_meets(r, r->cls[q], c, c))
            set_add(&out, q);
    }
    *s = out;
}

int json_regex_take(const json_regex *r, json_regex_set *s, uint32_t c, long min, long max)
{
    json_regex_step(r, s, c);
    if (max == 0)
        return 0;
    EACH(s, q) {
        if (length_fits(r, q, min - 1, max < 0 ? -1 : max - 1))
            return 1;
    }
    return 0;
}

int json_regex_accepts(const json_regex *r, const json_regex_set *s)
{
    return set_meets(s, &r->last);
}

int json_regex_feasible(const json_regex *r, const json_regex_set *s, long min, long max)
{
    EACH(s, p) {
        if (length_fits(r, p, min, max))
            return 1;
    }
    return 0;
}
