/* gbnf: see gbnf.h. The compiler: text to rules, then the checks. */
#include "gbnf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

typedef struct elist {
    gbnf_elem *e;
    int n, cap;
} elist;

typedef struct prule {
    char *name; /* NULL: a group or repetition made for rule `origin` */
    int origin;
    int defined;
    const char *at; /* where defined, else first used (its line is counted for an error only) */
    elist body;
} prule;

typedef struct parser {
    const char *start, *p, *end;
    prule *rules;
    int n_rules, cap_rules;
    uint32_t *ranges; /* pairs */
    int n_ranges, cap_ranges;
    gbnf_class *classes;
    int n_classes, cap_classes;
    long total;  /* elements in all rules */
    int current; /* the named rule being read */
    int depth;   /* groups open */
    /* the named rules by name: open addressing, rule index + 1 (a request's
     * grammar may hold many: each lookup is a hash, not a scan) */
    int *names;
    int names_cap;
    errbuf *e;
} parser;

#define MAX_GROUP_DEPTH 256

static int line_at(const parser *P, const char *at)
{
    int line = 1;
    for (const char *q = P->start; q < at; q++)
        line += *q == '\n';
    return line;
}

static int fail(parser *P, const char *fmt, ...)
{
    char msg[sizeof P->e->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(P->e, "grammar line %d: %s", line_at(P, P->p), msg);
}

static int grow(void **p, int *cap, int need, size_t size)
{
    if (need <= *cap)
        return 0;
    int c = *cap ? *cap : 8;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, (size_t)c * size);
    if (!q)
        return -1;
    *p = q;
    *cap = c;
    return 0;
}

static int push(parser *P, elist *l, int kind, int arg)
{
    if (++P->total > GBNF_MAX_ELEMS)
        return fail(P,
                    "the grammar is too large: more than %d elements once its repetitions are "
                    "written out",
                    GBNF_MAX_ELEMS);
    if (grow((void **)&l->e, &l->cap, l->n + 1, sizeof *l->e))
        return err_set(P->e, "out of memory for the grammar");
    l->e[l->n++] = (gbnf_elem){(uint8_t)kind, arg};
    return 0;
}

static int push_all(parser *P, elist *l, const gbnf_elem *x, int n)
{
    for (int i = 0; i < n; i++)
        if (push(P, l, x[i].kind, x[i].arg))
            return -1;
    return 0;
}

/* A rule of its own for a group or repetition in the rule being read. */
static int new_rule(parser *P)
{
    if (grow((void **)&P->rules, &P->cap_rules, P->n_rules + 1, sizeof *P->rules))
        return err_set(P->e, "out of memory for the grammar"), -1;
    P->rules[P->n_rules] = (prule){.origin = P->current, .defined = 1, .at = P->p};
    return P->n_rules++;
}

static int is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

static uint32_t name_hash(const char *name, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)name[i]) * 16777619u;
    return h;
}

/* The slot of name in P->names: its rule's, or the empty one it would take. */
static int *name_slot(parser *P, const char *name, size_t n)
{
    for (uint32_t i = name_hash(name, n) & (uint32_t)(P->names_cap - 1);;
         i = (i + 1) & (uint32_t)(P->names_cap - 1)) {
        int *s = &P->names[i];
        const char *known = *s ? P->rules[*s - 1].name : NULL;
        if (!*s || (strlen(known) == n && !memcmp(known, name, n)))
            return s;
    }
}

/* The named rule's index, made (undefined) on first use; -1 out of memory. */
static int named_rule(parser *P, const char *name, size_t n)
{
    if (2 * (P->n_rules + 1) > P->names_cap) { /* (each rule's name at most once: room for all) */
        int cap = P->names_cap ? 2 * P->names_cap : 64;
        while (cap < 2 * (P->n_rules + 1))
            cap *= 2;
        int *old = P->names, old_cap = P->names_cap;
        if (!(P->names = calloc((size_t)cap, sizeof *P->names))) {
            P->names = old;
            return err_set(P->e, "out of memory for the grammar"), -1;
        }
        P->names_cap = cap;
        for (int i = 0; i < old_cap; i++)
            if (old[i])
                *name_slot(P, P->rules[old[i] - 1].name, strlen(P->rules[old[i] - 1].name)) = old[i];
        free(old);
    }
    int *s = name_slot(P, name, n);
    if (*s)
        return *s - 1;
    int r = new_rule(P);
    if (r < 0)
        return -1;
    if (!(P->rules[r].name = strndup(name, n)))
        return err_set(P->e, "out of memory for the grammar"), -1;
    P->rules[r].defined = 0;
    *s = r + 1;
    return r;
}

/* Spaces, tabs, carriage returns and comments; line breaks too when nl. */
static const char *skip(const parser *P, const char *q, int nl)
{
    while (q < P->end) {
        if (*q == ' ' || *q == '\t' || *q == '\r' || (nl && *q == '\n')) {
            q++;
        } else if (*q == '#') {
            while (q < P->end && *q != '\n')
                q++;
        } else {
            break;
        }
    }
    return q;
}

/* Whether a rule's definition (name ::=) starts at q. */
static int rule_starts(const parser *P, const char *q)
{
    const char *n = q;
    while (q < P->end && is_name_char(*q))
        q++;
    if (q == n)
        return 0;
    q = skip(P, q, 0);
    return P->end - q >= 3 && !memcmp(q, "::=", 3);
}

/* Past the spaces at P->p; a line break is passed too inside a group, or
 * when what follows it does not start a rule (nor ends the text). Returns 1
 * when the rule goes on at P->p. */
static int rule_goes_on(parser *P)
{
    P->p = skip(P, P->p, P->depth > 0);
    if (P->p >= P->end || *P->p != '\n')
        return P->p < P->end;
    const char *q = skip(P, P->p, 1);
    if (q >= P->end || rule_starts(P, q))
        return 0;
    P->p = q;
    return 1;
}

static int hex(parser *P, int digits, uint32_t *cp)
{
    uint32_t v = 0;
    for (int i = 0; i < digits; i++, P->p++) {
        char c = P->p < P->end ? *P->p : 0;
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return fail(P, "an escape takes %d hexadecimal digits", digits);
        v = v << 4 | (uint32_t)d;
    }
    if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return fail(P, "U+%X is not a character", v);
    *cp = v;
    return 0;
}

/* One character of a literal or class at P->p, escapes read. */
static int read_char(parser *P, uint32_t *cp)
{
    if (P->p >= P->end)
        return fail(P, "the text ends inside a literal or class");
    unsigned char b = (unsigned char)*P->p;
    if (b == '\\') {
        P->p++;
        char c = P->p < P->end ? *P->p++ : 0;
        switch (c) {
        case 'n': *cp = '\n'; return 0;
        case 'r': *cp = '\r'; return 0;
        case 't': *cp = '\t'; return 0;
        case 'x': return hex(P, 2, cp);
        case 'u': return hex(P, 4, cp);
        case 'U': return hex(P, 8, cp);
        case '\\':
        case '"':
        case '\'':
        case '[':
        case ']':
        case '-':
        case '^':
        case '/':
        case '.': *cp = (uint32_t)c; return 0;
        default: P->p--; return fail(P, "unknown escape '\\%c'", c ? c : '0');
        }
    }
    if (b < 0x80) {
        *cp = b;
        P->p++;
        return 0;
    }
    uint8_t left, lo, hi;
    int bits = utf8_lead(b, &left, &lo, &hi);
    if (bits < 0)
        return fail(P, "the grammar is not UTF-8 (byte 0x%02x)", b);
    uint32_t v = (uint32_t)bits;
    P->p++;
    for (; left; left--, lo = 0x80, hi = 0xbf) {
        unsigned char c = P->p < P->end ? (unsigned char)*P->p : 0;
        if (c < lo || c > hi)
            return fail(P, "the grammar is not UTF-8 (byte 0x%02x)", c);
        v = v << 6 | (c & 0x3fu);
        P->p++;
    }
    *cp = v;
    return 0;
}

static int by_lo(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* A class of the pairs ranges[2 * from ...] (sorted and merged here). */
static int end_class(parser *P, int from, int negated)
{
    int n = P->n_ranges - from, m = 0;
    uint32_t *r = n ? P->ranges + 2 * from : NULL; /* ('.': no ranges, maybe none yet at all) */
    if (n)
        qsort(r, (size_t)n, 2 * sizeof *r, by_lo);
    for (int i = 0; i < n; i++) {
        if (m && r[2 * i] <= r[2 * m - 1] + 1) {
            if (r[2 * i + 1] > r[2 * m - 1])
                r[2 * m - 1] = r[2 * i + 1];
        } else {
            r[2 * m] = r[2 * i];
            r[2 * m + 1] = r[2 * i + 1];
            m++;
        }
    }
    P->n_ranges = from + m;
    if (grow((void **)&P->classes, &P->cap_classes, P->n_classes + 1, sizeof *P->classes))
        return err_set(P->e, "out of memory for the grammar"), -1;
    P->classes[P->n_classes] = (gbnf_class){(uint32_t)from, (uint32_t)m, (uint8_t)negated};
    return P->n_classes++;
}

static int add_range(parser *P, uint32_t lo, uint32_t hi)
{
    if (grow((void **)&P->ranges, &P->cap_ranges, 2 * P->n_ranges + 2, sizeof *P->ranges))
        return err_set(P->e, "out of memory for the grammar");
    P->ranges[2 * P->n_ranges] = lo;
    P->ranges[2 * P->n_ranges + 1] = hi;
    P->n_ranges++;
    return 0;
}

static int literal(parser *P, elist *out)
{
    P->p++;
    while (P->p < P->end && *P->p != '"') {
        uint32_t cp;
        int c, from = P->n_ranges;
        if (*P->p == '\n')
            return fail(P, "a line break inside a string literal (write \\n)");
        if (read_char(P, &cp) || add_range(P, cp, cp) || (c = end_class(P, from, 0)) < 0 ||
            push(P, out, GB_CHARS, c))
            return -1;
    }
    if (P->p >= P->end)
        return fail(P, "a string literal is not closed (\")");
    P->p++;
    return 0;
}

static int char_class(parser *P, elist *out)
{
    P->p++;
    int negated = P->p < P->end && *P->p == '^', from = P->n_ranges;
    P->p += negated;
    while (P->p < P->end && *P->p != ']') {
        uint32_t lo, hi;
        if (*P->p == '\n')
            return fail(P, "a line break inside a character class (write \\n)");
        if (read_char(P, &lo))
            return -1;
        hi = lo;
        if (P->end - P->p >= 2 && P->p[0] == '-' && P->p[1] != ']') {
            P->p++;
            if (read_char(P, &hi))
                return -1;
            if (hi < lo)
                return fail(P, "the range U+%X-U+%X in a character class is backwards", lo, hi);
        }
        if (add_range(P, lo, hi))
            return -1;
    }
    if (P->p >= P->end)
        return fail(P, "a character class is not closed (])");
    P->p++;
    int c = end_class(P, from, negated);
    return c < 0 ? -1 : push(P, out, GB_CHARS, c);
}

static int count(parser *P, long *v)
{
    const char *d = P->p;
    *v = 0;
    while (P->p < P->end && *P->p >= '0' && *P->p <= '9') {
        *v = *v * 10 + (*P->p++ - '0');
        if (*v > GBNF_MAX_REPEAT)
            return fail(P, "a repetition count above %d", GBNF_MAX_REPEAT);
    }
    return P->p == d ? 1 : 0;
}

/* {m}, {m,}, {m,n} at P->p: min and max (-1: no bound). */
static int braces(parser *P, long *min, long *max)
{
    P->p = skip(P, P->p + 1, 0);
    int rc = count(P, min);
    if (rc)
        return rc < 0 ? -1 : fail(P, "a repetition {m,n} needs its count m");
    P->p = skip(P, P->p, 0);
    *max = *min;
    if (P->p < P->end && *P->p == ',') {
        P->p = skip(P, P->p + 1, 0);
        if ((rc = count(P, max)) < 0)
            return -1;
        if (rc)
            *max = -1;
        P->p = skip(P, P->p, 0);
    }
    if (P->p >= P->end || *P->p != '}')
        return fail(P, "a repetition {m,n} is not closed (})");
    P->p++;
    if (*max >= 0 && *max < *min)
        return fail(P, "the repetition {%ld,%ld} has its bounds backwards", *min, *max);
    return 0;
}

/* r ::= x r | "" : x any number of times. */
static int star_rule(parser *P, const gbnf_elem *x, int n)
{
    int r = new_rule(P);
    if (r < 0 || push_all(P, &P->rules[r].body, x, n) || push(P, &P->rules[r].body, GB_REF, r) ||
        push(P, &P->rules[r].body, GB_ALT, 0))
        return -1;
    return r;
}

/* Replaces the item x (rule's elements from `at` on) by its repetition.
 * (Rules are made here, so the rule's body is looked up after each.) */
static int repeat(parser *P, int rule, int at, long min, long max)
{
    int n = P->rules[rule].body.n - at;
    gbnf_elem *x = malloc((size_t)(n ? n : 1) * sizeof *x);
    if (!x)
        return err_set(P->e, "out of memory for the grammar");
    if (n)
        memcpy(x, P->rules[rule].body.e + at, (size_t)n * sizeof *x);
    P->rules[rule].body.n = at;
    P->total -= n;
    int rc = 0;
    for (long k = 0; k < min && !rc; k++)
        rc = push_all(P, &P->rules[rule].body, x, n);
    if (!rc && max < 0) {
        int r = star_rule(P, x, n);
        rc = r < 0 ? -1 : push(P, &P->rules[rule].body, GB_REF, r);
    } else if (!rc && max > min) {
        /* opt_k ::= x opt_(k-1) | "" ... then opt_(max-min) */
        int prev = -1;
        for (long k = 0; k < max - min && !rc; k++) {
            int r = new_rule(P);
            if (r < 0 || push_all(P, &P->rules[r].body, x, n) ||
                (prev >= 0 && push(P, &P->rules[r].body, GB_REF, prev)) ||
                push(P, &P->rules[r].body, GB_ALT, 0))
                rc = -1;
            prev = r;
        }
        if (!rc)
            rc = push(P, &P->rules[rule].body, GB_REF, prev);
    }
    free(x);
    return rc;
}

static int alternatives(parser *P, int rule);

/* One item and its repetition; 1 when none starts at P->p. */
static int item(parser *P, int rule)
{
    elist *out = &P->rules[rule].body;
    int at = out->n, rc;
    char c = *P->p;
    if (c == '"') {
        rc = literal(P, out);
    } else if (c == '[') {
        rc = char_class(P, out);
    } else if (c == '.') {
        P->p++;
        int k = end_class(P, P->n_ranges, 1);
        rc = k < 0 ? -1 : push(P, out, GB_CHARS, k);
    } else if (c == '(') {
        if (P->depth >= MAX_GROUP_DEPTH)
            return fail(P, "groups nested more than %d deep", MAX_GROUP_DEPTH);
        P->p++;
        P->depth++;
        int g = new_rule(P);
        if (g < 0 || alternatives(P, g))
            return -1;
        P->depth--;
        P->p = skip(P, P->p, 1);
        if (P->p >= P->end || *P->p != ')')
            return fail(P, "a group is not closed ())");
        P->p++;
        out = &P->rules[rule].body; /* (the rules may have moved) */
        rc = push(P, out, GB_REF, g);
    } else if (is_name_char(c) && !rule_starts(P, P->p)) {
        const char *n = P->p;
        while (P->p < P->end && is_name_char(*P->p))
            P->p++;
        int r = named_rule(P, n, (size_t)(P->p - n));
        out = &P->rules[rule].body;
        rc = r < 0 ? -1 : push(P, out, GB_REF, r);
    } else {
        return 1;
    }
    if (rc)
        return -1;
    P->p = skip(P, P->p, 0);
    if (P->p >= P->end)
        return 0;
    c = *P->p;
    long min, max;
    if (c == '*' || c == '+' || c == '?') {
        P->p++;
        min = c == '+';
        max = c == '?' ? 1 : -1;
    } else if (c == '{') {
        if (braces(P, &min, &max))
            return -1;
    } else {
        return 0;
    }
    return repeat(P, rule, at, min, max);
}

/* A rule's alternatives into its body, GB_ALT between them. */
static int alternatives(parser *P, int rule)
{
    for (;;) {
        while (rule_goes_on(P)) {
            int rc = item(P, rule);
            if (rc < 0)
                return -1;
            if (rc)
                break;
        }
        if (P->p >= P->end || *P->p != '|')
            return 0;
        P->p = skip(P, P->p + 1, 1);
        if (push(P, &P->rules[rule].body, GB_ALT, 0))
            return -1;
    }
}

static int definition(parser *P)
{
    const char *n = P->p;
    while (P->p < P->end && is_name_char(*P->p))
        P->p++;
    if (P->p == n)
        return fail(P, "expected a rule's name (letters, digits, '_' and '-') then '::='");
    int r = named_rule(P, n, (size_t)(P->p - n));
    if (r < 0)
        return -1;
    if (P->rules[r].defined)
        return fail(P, "rule '%s' is defined twice (first on line %d)", P->rules[r].name,
                    line_at(P, P->rules[r].at));
    P->rules[r].defined = 1;
    P->rules[r].at = n;
    P->current = r;
    P->p = skip(P, P->p, 0);
    if (P->end - P->p < 3 || memcmp(P->p, "::=", 3))
        return fail(P, "expected '::=' after the rule name '%s'", P->rules[r].name);
    P->p = skip(P, P->p + 3, 1);
    if (alternatives(P, r))
        return -1;
    if (P->p < P->end && *P->p == ')')
        return fail(P, "a ')' that closes no group");
    /* (an empty last alternative's '|' may be followed by the next rule) */
    if (P->p < P->end && *P->p != '\n' && !rule_starts(P, P->p))
        return fail(P, "unexpected '%c' in rule '%s'", *P->p, P->rules[r].name);
    return 0;
}

static const char *shown_name(const parser *P, int r)
{
    return P->rules[r].name ? P->rules[r].name : P->rules[P->rules[r].origin].name;
}

/* Rule r's leftmost references: those an alternative reaches before reading
 * a character. A rule that reaches itself so would loop: refused; so are
 * rules nested deeper at their starts than an answer's parse may nest. */
static int left_recursion(parser *P, const uint8_t *nullable, uint8_t *color, int r, int depth)
{
    if (depth > GBNF_MAX_NESTING)
        return err_set(P->e, "rules nest more than %d deep before a character (from rule '%s')",
                       GBNF_MAX_NESTING, shown_name(P, r));
    color[r] = 1;
    const elist *b = &P->rules[r].body;
    int first = 1; /* at an alternative's start, or past what can be empty */
    for (int i = 0; i <= b->n; i++) {
        if (i == b->n || b->e[i].kind == GB_ALT) {
            first = 1;
            continue;
        }
        if (!first)
            continue;
        if (b->e[i].kind != GB_REF) {
            first = 0;
            continue;
        }
        int t = b->e[i].arg;
        if (color[t] == 1)
            return err_set(P->e,
                           "rule '%s' is left-recursive: it can come back to itself "
                           "without reading a character (a repetition of what can be empty does too)",
                           shown_name(P, t));
        if (!color[t] && left_recursion(P, nullable, color, t, depth + 1))
            return -1;
        first = nullable[t];
    }
    color[r] = 2;
    return 0;
}

/* Whether class c holds a character an answer may have (one but NUL). */
static int class_has_text(const parser *P, int c)
{
    const gbnf_class *k = &P->classes[c];
    const uint32_t *r = k->n ? P->ranges + 2 * (size_t)k->at : NULL;    /* (an empty class may have none) */
    if (!k->negated) {
        for (uint32_t i = 0; i < k->n; i++)
            if (r[2 * i + 1] >= 1)
                return 1;
        return 0;
    }
    uint32_t next = 1;  /* the least character not excluded yet */
    for (uint32_t i = 0; i < k->n && r[2 * i] <= next; i++)
        if (r[2 * i + 1] >= next)
            next = r[2 * i + 1] + 1;
    return next <= 0x10FFFF;
}

/* Which rules can match the empty text (ends: which can match some text at
 * all, an end), in time linear in the grammar (a pass per change would be
 * quadratic on a chain of rules): an alternative waits for the rules it
 * names; each rule found so is taken off the alternatives that name it, and
 * one left with nothing makes its rule so. A character rules an alternative
 * out of the empty text; of an end, only a class with no character does. */
static int rules_that(parser *P, int ends, uint8_t *nullable)
{
    long n_alts = P->n_rules + P->total, n_occ = P->total;
    int *owner = malloc((size_t)n_alts * sizeof *owner), *pending = malloc((size_t)n_alts * sizeof *pending);
    int *head = malloc((size_t)P->n_rules * sizeof *head),
        *occ_alt = malloc((size_t)(n_occ + 1) * sizeof *occ_alt);
    int *occ_next = malloc((size_t)(n_occ + 1) * sizeof *occ_next),
        *queue = malloc((size_t)P->n_rules * sizeof *queue);
    int rc = !owner || !pending || !head || !occ_alt || !occ_next || !queue ? -1 : 0;
    int a = 0, k = 0, q_in = 0, q_out = 0;
    for (int r = 0; r < P->n_rules && !rc; r++)
        head[r] = -1;
    for (int r = 0; r < P->n_rules && !rc; r++) {
        const elist *b = &P->rules[r].body;
        owner[a] = r;
        pending[a] = 0;
        for (int i = 0; i <= b->n; i++) {
            if (i == b->n || b->e[i].kind == GB_ALT) { /* the alternative is over */
                if (!pending[a] && !nullable[r]) {
                    nullable[r] = 1;
                    queue[q_in++] = r;
                }
                if (i < b->n) {
                    owner[++a] = r;
                    pending[a] = 0;
                }
            } else if (pending[a] < 0) {
                continue;       /* (ruled out already) */
            } else if (b->e[i].kind == GB_CHARS) {
                if (!ends || !class_has_text(P, b->e[i].arg))
                    pending[a] = -1;    /* (it reads a character: never empty; or none: never ends) */
            } else {
                pending[a]++;
                occ_alt[k] = a;
                occ_next[k] = head[b->e[i].arg];
                head[b->e[i].arg] = k++;
            }
        }
        a++;
    }
    while (!rc && q_out < q_in) {
        int t = queue[q_out++];
        for (int o = head[t]; o >= 0; o = occ_next[o]) {
            int alt = occ_alt[o];
            if (pending[alt] > 0 && --pending[alt] == 0 && !nullable[owner[alt]]) {
                nullable[owner[alt]] = 1;
                queue[q_in++] = owner[alt];
            }
        }
    }
    free(owner);
    free(pending);
    free(head);
    free(occ_alt);
    free(occ_next);
    free(queue);
    return rc;
}

static int check(parser *P, int *root)
{
    *root = -1;
    for (int r = 0; r < P->n_rules; r++) {
        if (!P->rules[r].defined)
            return err_set(P->e, "grammar line %d: rule '%s' is used but not defined",
                           line_at(P, P->rules[r].at), P->rules[r].name);
        if (P->rules[r].name && !strcmp(P->rules[r].name, "root"))
            *root = r;
    }
    if (*root < 0)
        return err_set(P->e, "no 'root' rule (the answer is what root matches)");
    uint8_t *nullable = calloc((size_t)P->n_rules, 1), *color = calloc((size_t)P->n_rules, 1),
            *ends = calloc((size_t)P->n_rules, 1);
    int rc = !nullable || !color || !ends || rules_that(P, 0, nullable) || rules_that(P, 1, ends)
                 ? err_set(P->e, "out of memory for the grammar")
                 : 0;
    for (int r = 0; r < P->n_rules && !rc; r++)
        if (!color[r])
            rc = left_recursion(P, nullable, color, r, 0);
    /* an alternative that can never end (a class with no character, a rule
     * that only ever needs more) would let an answer take a start no text
     * finishes: refused, as no text of the grammar is lost so */
    for (int r = 0; r < P->n_rules && !rc; r++) {
        const elist *b = &P->rules[r].body;
        for (int i = 0; i < b->n && !rc; i++) {
            const gbnf_elem *x = &b->e[i];
            int dead = x->kind == GB_CHARS ? !class_has_text(P, x->arg) : x->kind == GB_REF && !ends[x->arg];
            if (dead)
                rc = err_set(P->e, "grammar line %d: %s%s%s has an alternative that can never end (%s)",
                             line_at(P, P->rules[r].at), P->rules[r].name ? "rule '" : "a group",
                             P->rules[r].name ? P->rules[r].name : "", P->rules[r].name ? "'" : "",
                             x->kind == GB_CHARS ? "a class no character of an answer is in"
                                                 : "a rule every text of which needs more of itself");
        }
    }
    free(nullable);
    free(color);
    free(ends);
    return rc;
}

static int flatten(parser *P, gbnf *g)
{
    g->n_rules = P->n_rules;
    g->rule_start = malloc((size_t)P->n_rules * sizeof *g->rule_start);
    g->alt_first = malloc((size_t)(P->n_rules + 1) * sizeof *g->alt_first);
    g->elems = malloc((size_t)(P->total + P->n_rules) * sizeof *g->elems);
    g->alts = malloc((size_t)(P->total + P->n_rules) * sizeof *g->alts);
    if (!g->rule_start || !g->alt_first || !g->elems || !g->alts)
        return err_set(P->e, "out of memory for the grammar");
    int n_alts = 0;
    for (int r = 0; r < P->n_rules; r++) {
        int at = g->rule_start[r] = g->n_elems;
        if (P->rules[r].body.n) /* (an empty rule has no elements at all) */
            memcpy(g->elems + g->n_elems, P->rules[r].body.e, (size_t)P->rules[r].body.n * sizeof *g->elems);
        g->n_elems += P->rules[r].body.n;
        g->elems[g->n_elems++] = (gbnf_elem){GB_END, 0};
        g->alt_first[r] = n_alts;
        g->alts[n_alts++] = at;
        for (int i = at; i < g->n_elems; i++)
            if (g->elems[i].kind == GB_ALT)
                g->alts[n_alts++] = i + 1;
    }
    g->alt_first[P->n_rules] = n_alts;
    g->ranges = P->ranges;
    g->classes = P->classes;
    g->n_classes = P->n_classes;
    P->ranges = NULL;
    P->classes = NULL;
    return 0;
}

int gbnf_compile(gbnf *g, const char *text, size_t len, errbuf *e)
{
    memset(g, 0, sizeof *g);
    parser P = {.start = text, .p = text, .end = text + len, .current = -1, .e = e};
    int rc = 0;
    for (;;) {
        P.p = skip(&P, P.p, 1);
        if (P.p >= P.end)
            break;
        if ((rc = definition(&P)))
            break;
    }
    if (!rc)
        rc = check(&P, &g->root);
    if (!rc)
        rc = flatten(&P, g);
    for (int r = 0; r < P.n_rules; r++) {
        free(P.rules[r].name);
        free(P.rules[r].body.e);
    }
    free(P.rules);
    free(P.ranges);
    free(P.classes);
    free(P.names);
    if (rc)
        gbnf_free(g);
    return rc ? -1 : 0;
}

void gbnf_free(gbnf *g)
{
    if (g->memo_free)
        g->memo_free(g->memo);
    free(g->elems);
    free(g->rule_start);
    free(g->alt_first);
    free(g->alts);
    free(g->ranges);
    free(g->classes);
    memset(g, 0, sizeof *g);
}

int gbnf_class_has(const gbnf *g, int c, uint32_t cp)
{
    const gbnf_class *k = &g->classes[c];
    const uint32_t *r =
        k->n ? g->ranges + 2 * k->at : NULL; /* ('.' has none, maybe no grammar's class has) */
    uint32_t lo = 0, hi = k->n;
    while (lo < hi) { /* the first pair whose end is at or past cp */
        uint32_t mid = (lo + hi) / 2;
        if (r[2 * mid + 1] < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    int in = lo < k->n && r[2 * lo] <= cp;
    return in != k->negated;
}

int gbnf_class_meets(const gbnf *g, int c, uint32_t lo, uint32_t hi)
{
    const gbnf_class *k = &g->classes[c];
    const uint32_t *r =
        k->n ? g->ranges + 2 * k->at : NULL; /* ('.' has none, maybe no grammar's class has) */
    if (!k->negated) {
        for (uint32_t i = 0; i < k->n; i++)
            if (r[2 * i] <= hi && r[2 * i + 1] >= lo)
                return 1;
        return 0;
    }
    /* the complement meets [lo, hi] unless the pairs cover all of it */
    uint32_t at = lo;
    for (uint32_t i = 0; i < k->n && at <= hi; i++) {
        if (r[2 * i + 1] < at)
            continue;
        if (r[2 * i] > at)
            return 1;
        if (r[2 * i + 1] >= hi)
            return 0;
        at = r[2 * i + 1] + 1;
    }
    return at <= hi;
}
