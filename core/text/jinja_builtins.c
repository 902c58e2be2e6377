/* jinja_builtins: what templates call by name (jinja_value.h).
 *
 * Filters: abs, capitalize, count, d, default, dictsort, escape, first, float,
 * indent, int, items, join, last, length, list, lower, map, max, min, reject,
 * rejectattr, replace, reverse, round, safe, select, selectattr, sort, string,
 * sum, title, tojson, trim, unique, upper.
 * Tests: boolean, callable, defined, divisibleby, eq, equalto, even, false,
 * float, ge, gt, in, integer, iterable, le, lower, lt, mapping, ne, none,
 * number, odd, sameas, sequence, string, true, undefined, upper.
 * Methods: str capitalize, count, endswith, find, join, lower, lstrip,
 * replace, rstrip, split, startswith, strip, title, upper; dict get, items,
 * keys, values; list append, count, index, pop; loop.cycle and loop.changed.
 * Python's % formatting of a string.
 * Functions: range, namespace, dict, raise_exception, strftime_now. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/text/chat_format.h"
#include "core/text/jinja_value.h"
#include "core/text/utf8.h"

/* The k-th positional argument, or the keyword one named kw; NULL if absent. */
const jv *jr_arg(const args *a, int k, const char *kw)
{
    if (k >= 0 && k < a->npos)
        return &a->pos[k];
    for (int i = 0; kw && i < a->nkw; i++)
        if (!strcmp(a->kw[i], kw))
            return &a->kwv[i];
    return NULL;
}

static int jr_want_str(rs *r, const jnode *at, const jv *v, const char *what)
{
    return v && v->t == JV_STR
               ? 0
               : jr_fail(r, at, "%s must be a string, not %s", what, v ? jv_type_name(v) : "nothing");
}

int jr_want_int(rs *r, const jnode *at, const jv *v, const char *what)
{
    return v && (v->t == JV_INT || v->t == JV_BOOL)
               ? 0
               : jr_fail(r, at, "%s must be an integer, not %s", what, v ? jv_type_name(v) : "nothing");
}

static int fn_range(rs *r, const jnode *at, const args *a, jv *out)
{
    int64_t v[3] = {0, 0, 1};
    if (a->npos < 1 || a->npos > 3)
        return jr_fail(r, at, "range() takes 1 to 3 integers");
    for (int i = 0; i < a->npos; i++)
        if (jr_want_int(r, at, &a->pos[i], "a range() argument"))
            return -1;
    if (a->npos == 1)
        v[1] = jv_inum(&a->pos[0]);
    else
        for (int i = 0; i < a->npos; i++)
            v[i] = jv_inum(&a->pos[i]);
    if (!v[2])
        return jr_fail(r, at, "range() step must not be zero");
    /* the count in unsigned arithmetic, where any int64 span fits: Python's
     * (stop - start + step -+ 1) // step, for a step of either sign */
    uint64_t span = v[2] > 0 ? (v[1] > v[0] ? (uint64_t)v[1] - (uint64_t)v[0] : 0)
                             : (v[0] > v[1] ? (uint64_t)v[0] - (uint64_t)v[1] : 0);
    uint64_t step = v[2] > 0 ? (uint64_t)v[2] : 0 - (uint64_t)v[2];
    uint64_t cnt = span ? (span - 1) / step + 1 : 0;
    if (cnt > MAX_RANGE)
        return jr_fail(r, at, "range() of more than %d items", MAX_RANGE);
    jlistv *l = jv_new_list(r, (size_t)cnt);
    if (!l)
        return jr_oom(r, at);
    /* (the item past the last may not be an int64: only those counted are made) */
    for (uint64_t k = 0; k < cnt; k++)
        l->v[l->n++] = jv_int((int64_t)((uint64_t)v[0] + k * (uint64_t)v[2]));
    *out = (jv){.t = JV_LIST, .u.l = l};
    return 0;
}

static int fn_dict(rs *r, const jnode *at, const args *a, int ns, jv *out)
{
    if (a->npos > (ns ? 0 : 1))
        return jr_fail(r, at, "%s() takes keyword arguments only", ns ? "namespace" : "dict");
    jdictv *d = jv_new_dict(r);
    if (!d)
        return jr_oom(r, at);
    d->ns = ns;
    if (a->npos) {
        if (!jv_is_dict(&a->pos[0]))
            return jr_fail(r, at, "dict() takes a mapping");
        jv *keys;
        size_t n;
        if (jv_items(r, at, &a->pos[0], &keys, &n))
            return -1;
        for (size_t i = 0; i < n; i++) {
            jv v;
            jv_dict_get(r, &a->pos[0], keys[i].u.s.p, keys[i].u.s.n, &v);
            if (jv_dict_set(r, d, keys[i].u.s.p, keys[i].u.s.n, v))
                return jr_oom(r, at);
        }
    }
    for (int i = 0; i < a->nkw; i++)
        if (jv_dict_set(r, d, a->kw[i], strlen(a->kw[i]), a->kwv[i]))
            return jr_oom(r, at);
    *out = (jv){.t = JV_DICT, .u.d = d};
    return 0;
}

int jr_call_function(rs *r, const jnode *at, const char *name, const args *a, jv *out)
{
    if (!strcmp(name, "range"))
        return fn_range(r, at, a, out);
    if (!strcmp(name, "namespace") || !strcmp(name, "dict"))
        return fn_dict(r, at, a, name[0] == 'n', out);
    if (!strcmp(name, "raise_exception")) {
        jv msg = jv_str("", 0);
        if (a->npos && jv_to_str(r, at, &a->pos[0], &msg))
            return -1;
        return jr_fail(r, at, "the template raised an error: %.*s", (int)(msg.u.s.n < 600 ? msg.u.s.n : 600),
                       msg.u.s.p);
    }
    /* strftime_now(format): Hugging Face's clock for templates that print the date */
    const jv *fmt = jr_arg(a, 0, "format");
    if (jr_want_str(r, at, fmt, "strftime_now's format"))
        return -1;
    char spec[256], buf[512];
    snprintf(spec, sizeof spec, "%.*s", (int)(fmt->u.s.n < 255 ? fmt->u.s.n : 255), fmt->u.s.p);
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    size_t len = strftime(buf, sizeof buf, spec, &tm);
    char *p = ja_strdup(&r->a, buf, len);
    if (!p)
        return jr_oom(r, at);
    *out = jv_str(p, len);
    return 0;
}

/* Python's whitespace (str.isspace) at p[0, n): its length in bytes, 0 when
 * the character there is none. */
static size_t space_at(const char *p, size_t n)
{
    uint32_t c;
    size_t k = n ? utf8_char_at(p, n, &c) : 0;
    return k && unicode_is_space(c) ? k : 0;
}

/* Whether code point c is one of the characters of set[0, n). */
static int in_chars(const char *set, size_t n, uint32_t c)
{
    for (size_t i = 0; i < n;) {
        uint32_t d;
        i += utf8_char_at(set + i, n - i, &d);
        if (d == c)
            return 1;
    }
    return 0;
}

/* s.strip(chars), lstrip, rstrip: which = 3 both ends, 1 left, 2 right;
 * characters (not bytes) go, whitespace as Python's str.isspace has it. */
static int str_strip(rs *r, const jnode *at, const jv *s, const jv *chars, int which, jv *out)
{
    if (chars && chars->t != JV_NONE && jr_want_str(r, at, chars, "strip's argument"))
        return -1;
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, k;
    int custom = chars && chars->t == JV_STR;
    uint32_t c;
#define STRIPS(c) (custom ? in_chars(chars->u.s.p, chars->u.s.n, (c)) : unicode_is_space(c))
    while ((which & 1) && n && (k = utf8_char_at(p, n, &c)) && STRIPS(c))
        p += k, n -= k;
    while ((which & 2) && n && (k = utf8_char_before(p, n, &c)) && STRIPS(c))
        n -= k;
#undef STRIPS
    *out = jv_str(p, n);
    return 0;
}

/* Simple case mappings of ASCII, Latin-1, Latin Extended-A, Greek and
 * Cyrillic (the scripts chat templates meet); other characters are uncased. */
static uint32_t cp_upper(uint32_t c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 0xE0 && c <= 0xFE && c != 0xF7) ||
        (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) || (c >= 0x430 && c <= 0x44F))
        return c - 32;
    if (c == 0x3C2)
        return 0x3A3;
    if (c >= 0x450 && c <= 0x45F)
        return c - 80;
    if (c == 0xFF)
        return 0x178;
    if ((c >= 0x100 && c <= 0x137) || (c >= 0x14A && c <= 0x177))
        return c & ~1u;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
        return (c & 1) ? c : c - 1;
    return c;
}

static uint32_t cp_lower(uint32_t c)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 0xC0 && c <= 0xDE && c != 0xD7) ||
        (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) || (c >= 0x410 && c <= 0x42F))
        return c + 32;
    if (c >= 0x400 && c <= 0x40F)
        return c + 80;
    if (c == 0x178)
        return 0xFF;
    if ((c >= 0x100 && c <= 0x137) || (c >= 0x14A && c <= 0x177))
        return c | 1;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
        return (c & 1) ? c + 1 : c;
    return c;
}

static int cp_cased(uint32_t c)
{
    return cp_upper(c) != c || cp_lower(c) != c;
}

/* mode 0 lower, 1 upper, 2 capitalize (first upper, rest lower), 3 str.title
 * (a word starts after any uncased character), 4 the title filter (a word
 * starts after whitespace, '-', '(', '{', '[' or '<'). */
static int jr_case_map(rs *r, const jnode *at, const jv *s, int mode, jv *out)
{
    strbuf b = {0};
    int word_start = 1;
    for (size_t i = 0; i < s->u.s.n;) {
        unsigned char c0 = (unsigned char)s->u.s.p[i];
        size_t len = c0 < 0x80 ? 1 : c0 >= 0xF0 ? 4 : c0 >= 0xE0 ? 3 : c0 >= 0xC0 ? 2 : 1;
        if (i + len > s->u.s.n)
            len = 1;
        uint32_t c = len == 1 ? c0 : c0 & (0x7F >> len);
        for (size_t k = 1; k < len; k++)
            c = c << 6 | ((unsigned char)s->u.s.p[i + k] & 0x3F);
        int up = mode == 1 || (mode == 2 && i == 0) || (mode >= 3 && word_start);
        uint32_t m = up ? cp_upper(c) : cp_lower(c);
        if (len == 1 && c0 >= 0x80)
            m = c; /* a stray byte stays as it is */
        if (m == c) {
            jr_put(&b, s->u.s.p + i, len);
        } else {
            char enc[4];
            jr_put(&b, enc, utf8_encode(m, enc));
        }
        if (mode == 3)
            word_start = !cp_cased(c);
        else if (mode == 4)
            word_start = unicode_is_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
        else
            word_start = 0;
        i += len;
    }
    return jr_text(r, at, &b, out);
}

static int find_bytes(const jv *hay, const jv *needle, size_t from)
{
    for (size_t i = from; i + needle->u.s.n <= hay->u.s.n; i++)
        if (!memcmp(hay->u.s.p + i, needle->u.s.p, needle->u.s.n))
            return (int)i;
    return -1;
}

static int str_replace(rs *r, const jnode *at, const jv *s, const jv *old, const jv *rep, const jv *count,
                       jv *out)
{
    if (jr_want_str(r, at, old, "replace's first argument") ||
        jr_want_str(r, at, rep, "replace's second argument") ||
        (count && jr_want_int(r, at, count, "replace's count")))
        return -1;
    int64_t left = count ? jv_inum(count) : -1;
    strbuf b = {0};
    size_t i = 0;
    if (!old->u.s.n) { /* Python: the replacement before every character and at the end */
        for (;;) {
            if (left != 0) {
                jr_put(&b, rep->u.s.p, rep->u.s.n);
                left--;
            }
            if (i == s->u.s.n)
                break;
            size_t k = utf8_char_at(s->u.s.p + i, s->u.s.n - i, &(uint32_t){0});
            jr_put(&b, s->u.s.p + i, k);
            i += k;
        }
        return jr_text(r, at, &b, out);
    }
    for (;;) {
        int k = left == 0 ? -1 : find_bytes(s, old, i);
        if (k < 0)
            break;
        jr_put(&b, s->u.s.p + i, (size_t)k - i);
        jr_put(&b, rep->u.s.p, rep->u.s.n);
        i = (size_t)k + old->u.s.n;
        left--;
    }
    jr_put(&b, s->u.s.p + i, s->u.s.n - i);
    return jr_text(r, at, &b, out);
}

/* The byte offset of character idx of p[0, n) (n at or past its end). */
static size_t char_offset(const char *p, size_t n, int64_t idx)
{
    size_t i = 0;
    for (uint32_t c; i < n && idx > 0; idx--)
        i += utf8_char_at(p + i, n - i, &c);
    return i;
}

/* Python's str.startswith's start and end (ints or None, either NULL when
 * not given): *p, *n the characters [start, end) of s, *p NULL when start
 * lies past the end (nothing matches, not even ""). */
static int str_span(rs *r, const jnode *at, const jv *s, const jv *start, const jv *end, const char **p,
                    size_t *n)
{
    int64_t len = 0, b = 0, e;
    for (size_t i = 0; i < s->u.s.n; len++)
        i += utf8_char_at(s->u.s.p + i, s->u.s.n - i, &(uint32_t){0});
    e = len;
    if ((start && start->t != JV_NONE && jr_want_int(r, at, start, "start")) ||
        (end && end->t != JV_NONE && jr_want_int(r, at, end, "end")))
        return -1;
    if (start && start->t != JV_NONE)
        b = jv_inum(start);
    if (end && end->t != JV_NONE)
        e = jv_inum(end);
    b = b < 0 ? (b + len < 0 ? 0 : b + len) : b;
    e = e < 0 ? (e + len < 0 ? 0 : e + len) : e > len ? len : e;
    if (b > len || e < b) {
        *p = NULL, *n = 0;
        return 0;
    }
    size_t from = char_offset(s->u.s.p, s->u.s.n, b);
    size_t to = from + char_offset(s->u.s.p + from, s->u.s.n - from, e - b);
    *p = s->u.s.p + from;
    *n = to - from;
    return 0;
}

static int str_split(rs *r, const jnode *at, const jv *s, const jv *sep, const jv *maxsplit, jv *out)
{
    if ((sep && sep->t != JV_NONE && jr_want_str(r, at, sep, "split's separator")) ||
        (maxsplit && jr_want_int(r, at, maxsplit, "split's maxsplit")))
        return -1;
    int64_t left = maxsplit ? jv_inum(maxsplit) : -1;
    jlistv *l = jv_new_list(r, 0);
    if (!l)
        return jr_oom(r, at);
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, i = 0;
    if (!sep || sep->t == JV_NONE) { /* runs of whitespace; no empty strings */
        for (;;) {
            for (size_t k; (k = space_at(p + i, n - i));)
                i += k;
            if (i >= n)
                break;
            /* past maxsplit the rest is one piece, its trailing whitespace kept */
            size_t j = left == 0 ? n : i;
            while (j < n && !space_at(p + j, n - j))
                j += utf8_char_at(p + j, n - j, &(uint32_t){0});
            if (jv_list_push(r, l, jv_str(p + i, j - i)))
                return jr_oom(r, at);
            left--;
            i = j;
        }
    } else {
        if (!sep->u.s.n)
            return jr_fail(r, at, "split: empty separator");
        for (;;) {
            int k = left == 0 ? -1 : find_bytes(s, sep, i);
            if (k < 0)
                break;
            if (jv_list_push(r, l, jv_str(p + i, (size_t)k - i)))
                return jr_oom(r, at);
            i = (size_t)k + sep->u.s.n;
            left--;
        }
        if (jv_list_push(r, l, jv_str(p + i, n - i)))
            return jr_oom(r, at);
    }
    *out = (jv){.t = JV_LIST, .u.l = l};
    return 0;
}

static int join_items(rs *r, const jnode *at, const jv *seq, const jv *sep, jv *out)
{
    jv *items;
    size_t n;
    if (jv_items(r, at, seq, &items, &n))
        return -1;
    strbuf b = {0};
    for (size_t i = 0; i < n; i++) {
        if (i && sep)
            jr_put(&b, sep->u.s.p, sep->u.s.n);
        jv_print(r, &b, &items[i], 0, 0);
    }
    return jr_text(r, at, &b, out);
}

/* The tuple (a, b): a dict's item. */
static int pair(rs *r, const jnode *at, jv a, jv b, jv *out)
{
    jlistv *l = jv_new_list(r, 2);
    if (!l)
        return jr_oom(r, at);
    l->v[0] = a;
    l->v[1] = b;
    l->n = 2;
    *out = (jv){.t = JV_LIST, .u.l = l, .tuple = 1};
    return 0;
}

/* A context array the template changes (append, pop) becomes a list of the
 * rendering, which every later read of that array sees, as Python's lists
 * are shared. */
static jlistv *copy_for_change(rs *r, const jnode *at, const cJSON *arr)
{
    jv view = {.t = JV_JSON, .u.j = arr};
    jv *items;
    size_t n;
    if (jv_items(r, at, &view, &items, &n))
        return NULL;
    jlistv *l = jv_new_list(r, n);
    if (r->n_mut == r->cap_mut) {
        size_t cap = r->cap_mut ? r->cap_mut * 2 : 8;
        mutated *m = ja_alloc(&r->a, cap * sizeof *m);
        if (m && r->n_mut)
            memcpy(m, r->mut, r->n_mut * sizeof *m);
        r->mut = m;
        r->cap_mut = m ? cap : 0;
        if (!m)
            r->n_mut = 0;
    }
    if (!l || !r->mut) {
        jr_oom(r, at);
        return NULL;
    }
    memcpy(l->v, items, n * sizeof *items);
    l->n = n;
    r->mut[r->n_mut++] = (mutated){arr, l};
    return l;
}

int jr_call_method(rs *r, const jnode *at, const jv *self, const char *name, const args *a, jv *out)
{
    const jv *a0 = jr_arg(a, 0, NULL), *a1 = jr_arg(a, 1, NULL);
    if (self->t == JV_LOOP && !strcmp(name, "changed")) { /* loop.changed(a, ...) */
        jloop *l = self->u.loop;
        int same = l->changed_last && l->changed_n == (size_t)a->npos;
        for (int i = 0; same && i < a->npos; i++)
            same = jv_equal(r, &l->changed_last[i], &a->pos[i], 0);
        if (!same) {
            jv *copy = ja_alloc(&r->a, ((size_t)a->npos + 1) * sizeof *copy);
            if (!copy)
                return jr_oom(r, at);
            memcpy(copy, a->pos, (size_t)a->npos * sizeof *copy);
            l->changed_last = copy;
            l->changed_n = (size_t)a->npos;
        }
        *out = jv_bool(!same);
        return 0;
    }
    if (self->t == JV_LOOP) { /* loop.cycle(a, b, ...) */
        if (!a->npos)
            return jr_fail(r, at, "loop.cycle() needs at least one value");
        *out = a->pos[self->u.loop->index0 % (size_t)a->npos];
        return 0;
    }
    if (self->t == JV_STR) {
        if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip"))
            return str_strip(r, at, self, a0, name[0] == 's' ? 3 : name[0] == 'l' ? 1 : 2, out);
        if (!strcmp(name, "lower") || !strcmp(name, "upper") || !strcmp(name, "capitalize") ||
            !strcmp(name, "title"))
            return jr_case_map(r, at, self,
                               name[0] == 'l'   ? 0
                               : name[0] == 'u' ? 1
                               : name[0] == 'c' ? 2
                                                : 3,
                               out);
        if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
            jv *cands = (jv *)a0;
            size_t nc = 1;
            if (a0 && a0->t == JV_LIST && a0->tuple)
                cands = a0->u.l->v, nc = a0->u.l->n;
            /* Python's start and end: the characters [start, end) are tested */
            const char *p;
            size_t n;
            if (str_span(r, at, self, a->npos > 1 ? &a->pos[1] : NULL, a->npos > 2 ? &a->pos[2] : NULL, &p, &n))
                return -1;
            int hit = 0;
            for (size_t i = 0; i < nc; i++) {
                if (jr_want_str(r, at, &cands[i], name))
                    return -1;
                size_t k = cands[i].u.s.n;
                hit |= p && k <= n && !memcmp(p + (name[0] == 's' ? 0 : n - k), cands[i].u.s.p, k);
            }
            *out = jv_bool(hit);
            return 0;
        }
        if (!strcmp(name, "split"))
            return str_split(r, at, self, jr_arg(a, 0, "sep"), jr_arg(a, 1, "maxsplit"), out);
        if (!strcmp(name, "replace"))
            return str_replace(r, at, self, a0, a1, jr_arg(a, 2, "count"), out);
        if (!strcmp(name, "find") || !strcmp(name, "count")) {
            if (jr_want_str(r, at, a0, name))
                return -1;
            if (name[0] == 'f') {
                int k = find_bytes(self, a0, 0);
                *out = jv_int(k < 0 ? -1 : (int64_t)jv_utf8_count(self->u.s.p, (size_t)k));
                return 0;
            }
            int64_t c = 0;
            if (!a0->u.s.n) {
                *out = jv_int((int64_t)jv_utf8_count(self->u.s.p, self->u.s.n) + 1);
                return 0;
            }
            for (int k = find_bytes(self, a0, 0); k >= 0; k = find_bytes(self, a0, (size_t)k + a0->u.s.n))
                c++;
            *out = jv_int(c);
            return 0;
        }
        if (!strcmp(name, "join")) {
            jv *items;
            size_t n;
            if (!a0 || jv_items(r, at, a0, &items, &n))
                return a0 ? -1 : jr_fail(r, at, "join() takes a sequence");
            for (size_t i = 0; i < n; i++)
                if (items[i].t != JV_STR)
                    return jr_fail(r, at, "str.join(): item %zu is %s, not a string", i,
                                   jv_type_name(&items[i]));
            return join_items(r, at, a0, self, out);
        }
    } else if (jv_is_dict(self)) {
        if (!strcmp(name, "get")) {
            if (!a0)
                return jr_fail(r, at, "get() takes a key");
            if (a0->t != JV_STR || !jv_dict_get(r, self, a0->u.s.p, a0->u.s.n, out))
                *out = a1 ? *a1 : (jv){.t = JV_NONE};
            return 0;
        }
        jv *keys;
        size_t n;
        if (jv_items(r, at, self, &keys, &n))
            return -1;
        jlistv *l = jv_new_list(r, n);
        if (!l)
            return jr_oom(r, at);
        for (size_t i = 0; i < n; i++) {
            jv v;
            jv_dict_get(r, self, keys[i].u.s.p, keys[i].u.s.n, &v);
            if (!strcmp(name, "keys")) {
                l->v[l->n++] = keys[i];
            } else if (!strcmp(name, "values")) {
                l->v[l->n++] = v;
            } else {
                if (pair(r, at, keys[i], v, &l->v[l->n++]))
                    return -1;
            }
        }
        *out = (jv){.t = JV_LIST, .u.l = l};
        return 0;
    } else if (jv_is_list(self)) {
        if (!strcmp(name, "count") || !strcmp(name, "index")) {
            jv *items;
            size_t n;
            if (!a0 || jv_items(r, at, self, &items, &n))
                return a0 ? -1 : jr_fail(r, at, "%s() takes a value", name);
            int64_t c = 0;
            for (size_t i = 0; i < n; i++)
                if (jv_equal(r, &items[i], a0, 0)) {
                    if (name[0] == 'i') {
                        *out = jv_int((int64_t)i);
                        return 0;
                    }
                    c++;
                }
            if (name[0] == 'i')
                return jr_fail(r, at, "index(): the value is not in the list");
            *out = jv_int(c);
            return 0;
        }
        if (self->tuple)
            return jr_fail(r, at, "'tuple' object has no attribute '%s'", name);
        jlistv *l = self->t == JV_LIST ? self->u.l : copy_for_change(r, at, self->u.j);
        if (!l)
            return -1;
        if (!strcmp(name, "append")) {
            if (a->npos != 1)
                return jr_fail(r, at, "append() takes one value");
            if (jv_list_push(r, l, *a0))
                return jr_oom(r, at);
            *out = (jv){.t = JV_NONE};
            return 0;
        }
        /* pop([i]) */
        int64_t i = a0 ? (jr_want_int(r, at, a0, "pop's index") ? INT64_MIN : jv_inum(a0)) : -1;
        if (i == INT64_MIN)
            return -1;
        if (i < 0)
            i += (int64_t)l->n;
        if (i < 0 || (size_t)i >= l->n)
            return jr_fail(r, at, "pop(): index out of range");
        *out = l->v[i];
        memmove(l->v + i, l->v + i + 1, (l->n - (size_t)i - 1) * sizeof *l->v);
        l->n--;
        return 0;
    }
    return jr_fail(r, at, "'%s' has no method '%s'", jv_type_name(self), name);
}

/* ---- Python's % formatting -------------------------------------------------- */

/* Pads text (n bytes, chars code points) to width: spaces on the left, or on
 * the right with '-'. */
static void put_padded(strbuf *b, const char *text, size_t n, size_t chars, long width, int left)
{
    size_t pad = width > 0 && (size_t)width > chars ? (size_t)width - chars : 0;
    for (size_t i = 0; !left && i < pad; i++)
        jr_put(b, " ", 1);
    jr_put(b, text, n);
    for (size_t i = 0; left && i < pad; i++)
        jr_put(b, " ", 1);
}

/* An integer conversion (d i u x X o) as Python prints it: sign, the '#'
 * prefix (0x, 0X, 0o), at least prec digits, then width with spaces or, with
 * '0', zeros after the sign and prefix. */
static void put_int(strbuf *b, int64_t v, char conv, const char *flags, long width, long prec)
{
    char digits[80], out[200];
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    int base = conv == 'x' || conv == 'X' ? 16 : conv == 'o' ? 8 : 10, nd = 0;
    const char *set = conv == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
    do {
        digits[nd++] = set[u % (uint64_t)base];
        u /= (uint64_t)base;
    } while (u);
    while (prec > nd && nd < 64)
        digits[nd++] = '0';
    const char *sign = v < 0 ? "-" : strchr(flags, '+') ? "+" : strchr(flags, ' ') ? " " : "";
    const char *prefix = !strchr(flags, '#') ? ""
                         : conv == 'x'       ? "0x"
                         : conv == 'X'       ? "0X"
                         : conv == 'o'       ? "0o"
                                             : "";
    size_t o = 0, head = strlen(sign) + strlen(prefix);
    long zeros =
        strchr(flags, '0') && !strchr(flags, '-') && width > (long)head + nd ? width - (long)head - nd : 0;
    o += (size_t)snprintf(out, sizeof out, "%s%s", sign, prefix);
    for (long k = 0; k < zeros && o < sizeof out - 70; k++)
        out[o++] = '0';
    while (nd)
        out[o++] = digits[--nd];
    put_padded(b, out, o, o, width, strchr(flags, '-') != NULL);
}

int jr_percent_format(rs *r, const jnode *at, const jv *fmt, const jv *arg, jv *out)
{
    const jv *given = arg; /* a tuple's items, or the one argument */
    size_t nargs = 1, k = 0;
    if (arg->t == JV_LIST && arg->tuple) {
        given = arg->u.l->v;
        nargs = arg->u.l->n;
    }
    strbuf b = {0};
    const char *p = fmt->u.s.p, *end = p + fmt->u.s.n;
    int rc = 0;
    while (p < end && !rc) {
        const char *pct = memchr(p, '%', (size_t)(end - p));
        if (!pct) {
            jr_put(&b, p, (size_t)(end - p));
            break;
        }
        jr_put(&b, p, (size_t)(pct - p));
        p = pct + 1;
        if (p < end && *p == '%') {
            jr_put(&b, "%", 1);
            p++;
            continue;
        }
        char flags[8] = "";
        int nf = 0;
        while (p < end && strchr("-+ 0#", *p) && *p && nf < 7)
            flags[nf++] = *p++;
        long width = -1, prec = -1; /* (both at most 4096: past it, refused) */
        for (; p < end && *p >= '0' && *p <= '9'; p++)
            width = width > 4096 ? 4097 : (width < 0 ? 0 : width) * 10 + (*p - '0');
        if (p < end && *p == '.')
            for (prec = 0, p++; p < end && *p >= '0' && *p <= '9'; p++)
                prec = prec > 4096 ? 4097 : prec * 10 + (*p - '0');
        if (width > 4096 || prec > 4096) {
            rc = jr_fail(r, at, "%%-format: a width or precision above 4096 is not supported");
            break;
        }
        while (p < end && (*p == 'h' || *p == 'l' || *p == 'L'))
            p++;
        if (p >= end) {
            rc = jr_fail(r, at, "%%-format: incomplete format");
            break;
        }
        char conv = *p++;
        if (conv == '(' || conv == '*') {
            rc = jr_fail(r, at, "%%-format: '%c' (mapping keys, '*' widths) is not supported", conv);
            break;
        }
        if (k >= nargs) {
            rc = jr_fail(r, at, "not enough arguments for format string");
            break;
        }
        const jv *v = &given[k++];
        int left = strchr(flags, '-') != NULL;
        if (conv == 's' || conv == 'r' || conv == 'a') {
            strbuf t = {0};
            jv_print(r, &t, v, conv != 's', 0);
            size_t n = t.len, chars = jv_utf8_count(t.p ? t.p : "", t.len);
            if (prec >= 0 && (size_t)prec < chars) { /* at most prec characters */
                size_t i = 0, c = 0;
                while (i < t.len && c < (size_t)prec) {
                    i++;
                    while (i < t.len && ((unsigned char)t.p[i] & 0xC0) == 0x80)
                        i++;
                    c++;
                }
                n = i;
                chars = c;
            }
            put_padded(&b, t.p ? t.p : "", n, chars, width, left);
            free(t.p);
        } else if (strchr("diuxXo", conv)) {
            if (!jv_is_num(v) || (v->t == JV_FLOAT && strchr("xXo", conv)) ||
                (v->t == JV_FLOAT && !(fabs(v->u.f) < 9.2e18))) {
                rc = jr_fail(r, at, "%%%c format: %s is required, not %s", conv,
                             strchr("xXo", conv) ? "an integer" : "a real number", jv_type_name(v));
                break;
            }
            put_int(&b, v->t == JV_FLOAT ? (int64_t)trunc(v->u.f) : jv_inum(v),
                    conv == 'i' || conv == 'u' ? 'd' : conv, flags, width, prec);
        } else if (strchr("fFeEgG", conv)) {
            if (!jv_is_num(v)) {
                rc = jr_fail(r, at, "%%%c format: a real number is required, not %s", conv, jv_type_name(v));
                break;
            }
            char spec[32], text[9000]; /* (4096 digits after the point, 309 before, a sign) */
            snprintf(spec, sizeof spec, "%%%s%s%s%c", flags, width >= 0 ? "*" : "", prec >= 0 ? ".*" : "",
                     conv);
            double x = jv_num(v);
            int len = width >= 0 && prec >= 0 ? snprintf(text, sizeof text, spec, (int)width, (int)prec, x)
                      : width >= 0            ? snprintf(text, sizeof text, spec, (int)width, x)
                      : prec >= 0             ? snprintf(text, sizeof text, spec, (int)prec, x)
                                              : snprintf(text, sizeof text, spec, x);
            jr_put(&b, text, len > 0 && (size_t)len < sizeof text ? (size_t)len : strlen(text));
        } else if (conv == 'c') {
            char one[4];
            size_t n;
            if (v->t == JV_STR && jv_utf8_count(v->u.s.p, v->u.s.n) == 1) {
                put_padded(&b, v->u.s.p, v->u.s.n, 1, width, left);
            } else if ((v->t == JV_INT || v->t == JV_BOOL) && jv_inum(v) >= 0 && jv_inum(v) < 0x110000) {
                n = utf8_encode((uint32_t)jv_inum(v), one);
                put_padded(&b, one, n, 1, width, left);
            } else {
                rc = jr_fail(r, at, "%%c requires an int or a single character, not %s", jv_type_name(v));
            }
        } else {
            rc = jr_fail(r, at, "unsupported format character '%c'", conv);
        }
    }
    if (!rc && k < nargs)
        rc = jr_fail(r, at, "not all arguments converted during string formatting");
    if (rc) {
        free(b.p);
        return -1;
    }
    return jr_text(r, at, &b, out);
}

/* ---- filters ------------------------------------------------------------------- */

/* The attribute "a.b.c" of v (Jinja2's attribute= arguments), undefined when absent. */
static int attr_path(rs *r, const jnode *at, const jv *v, const jv *path, jv *out)
{
    if (path->t == JV_INT) {
        return jr_member(r, at, v, path, 0, out);
    }
    if (jr_want_str(r, at, path, "attribute"))
        return -1;
    *out = *v;
    const char *p = path->u.s.p, *end = p + path->u.s.n;
    while (p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        if (!dot)
            dot = end;
        jv key = jv_str(p, (size_t)(dot - p)), next;
        /* a part of digits is an index, as Jinja2 takes it */
        size_t digits = 0;
        while (p + digits < dot && p[digits] >= '0' && p[digits] <= '9')
            digits++;
        if (digits && p + digits == dot && digits < 19)
            key = jv_int(strtoll(p, NULL, 10));
        if (out->t == JV_UNDEF)
            return 0;
        if (jr_member(r, at, out, &key, 0, &next))
            return -1;
        *out = next;
        p = dot + 1;
    }
    return 0;
}

static int new_list_value(rs *r, const jnode *at, size_t cap, jv *out)
{
    jlistv *l = jv_new_list(r, cap);
    if (!l)
        return jr_oom(r, at);
    *out = (jv){.t = JV_LIST, .u.l = l};
    return 0;
}

/* sort / dictsort comparison */
typedef struct sort_ctx {
    rs *r;
    int reverse, fail;
} sort_ctx;

static int cmp_values(sort_ctx *c, const jv *x, const jv *y)
{
    int o = jv_order(c->r, x, y);
    if (o == 2) {
        c->fail = 1;
        return 0;
    }
    return c->reverse ? -o : o;
}

/* insertion-stable merge sort of items by keys */
static void sort_by(sort_ctx *c, jv *items, jv *keys, jv *tmp_i, jv *tmp_k, size_t n)
{
    if (n < 2)
        return;
    size_t h = n / 2;
    sort_by(c, items, keys, tmp_i, tmp_k, h);
    sort_by(c, items + h, keys + h, tmp_i, tmp_k, n - h);
    size_t i = 0, j = h, o = 0;
    while (i < h || j < n) {
        if (j >= n || (i < h && cmp_values(c, &keys[j], &keys[i]) >= 0)) {
            tmp_i[o] = items[i];
            tmp_k[o++] = keys[i++];
        } else {
            tmp_i[o] = items[j];
            tmp_k[o++] = keys[j++];
        }
    }
    memcpy(items, tmp_i, n * sizeof *items);
    memcpy(keys, tmp_k, n * sizeof *keys);
}

static int lowered_key(rs *r, const jnode *at, const jv *v, int case_sensitive, jv *out)
{
    if (v->t == JV_STR && !case_sensitive)
        return jr_case_map(r, at, v, 0, out);
    *out = *v;
    return 0;
}

static int filter_sort(rs *r, const jnode *at, const jv *v, const args *a, int dictsort, jv *out)
{
    const jv *rev = jr_arg(a, dictsort ? 2 : 0, "reverse"),
             *cs = jr_arg(a, dictsort ? 0 : 1, "case_sensitive"),
             *attr = dictsort ? NULL : jr_arg(a, 2, "attribute"), *by = dictsort ? jr_arg(a, 1, "by") : NULL;
    jv *src;
    size_t n;
    if (dictsort && !jv_is_dict(v))
        return jr_fail(r, at, "dictsort: a %s is not a dict", jv_type_name(v));
    if (jv_items(r, at, v, &src, &n))
        return -1;
    jv *items = ja_alloc(&r->a, (n + 1) * sizeof *items), *keys = ja_alloc(&r->a, (n + 1) * sizeof *keys),
       *ti = ja_alloc(&r->a, (n + 1) * sizeof *ti), *tk = ja_alloc(&r->a, (n + 1) * sizeof *tk);
    if (!items || !keys || !ti || !tk)
        return jr_oom(r, at);
    int by_value = by && by->t == JV_STR && by->u.s.n == 5 && !memcmp(by->u.s.p, "value", 5);
    for (size_t i = 0; i < n; i++) {
        jv key = src[i];
        if (dictsort) {
            jv val;
            jv_dict_get(r, v, src[i].u.s.p, src[i].u.s.n, &val);
            if (pair(r, at, src[i], val, &items[i]))
                return -1;
            key = by_value ? val : src[i];
        } else {
            items[i] = src[i];
            if (attr && attr_path(r, at, &src[i], attr, &key))
                return -1;
        }
        if (lowered_key(r, at, &key, cs && jv_truthy(cs), &keys[i]))
            return -1;
    }
    sort_ctx c = {.r = r, .reverse = rev && jv_truthy(rev)};
    sort_by(&c, items, keys, ti, tk, n);
    if (c.fail)
        return jr_fail(r, at, "sort: the values do not order (mixed types)");
    jlistv *l = jv_new_list(r, 0);
    if (!l)
        return jr_oom(r, at);
    l->v = items;
    l->n = l->cap = n;
    *out = (jv){.t = JV_LIST, .u.l = l};
    return 0;
}

/* select / reject / selectattr / rejectattr / map */
static int filter_each(rs *r, const jnode *at, const char *name, const jv *v, const args *a, jv *out)
{
    int attr = strstr(name, "attr") != NULL, keep_if = name[0] == 's', is_map = !strcmp(name, "map");
    jv *items;
    size_t n;
    if (jv_items(r, at, v, &items, &n) || new_list_value(r, at, n, out))
        return -1;
    const jv *map_attr = is_map ? jr_arg(a, -1, "attribute") : NULL,
             *dflt = is_map ? jr_arg(a, -1, "default") : NULL;
    int first = attr ? 1 : 0;
    const jv *test = jr_arg(a, first, NULL);
    if (attr && !a->npos)
        return jr_fail(r, at, "%s needs an attribute name", name);
    if (test && jr_want_str(r, at, test, is_map ? "map's filter name" : "the test name"))
        return -1;
    args rest = {0}; /* the test's or filter's own arguments */
    if (a->npos > first + 1) {
        rest.pos = a->pos + first + 1;
        rest.npos = a->npos - first - 1;
    }
    for (size_t i = 0; i < n; i++) {
        jv x = items[i];
        if (is_map) {
            if (map_attr) {
                if (attr_path(r, at, &x, map_attr, &x))
                    return -1;
                if (x.t == JV_UNDEF && dflt)
                    x = *dflt;
            } else {
                if (!test)
                    return jr_fail(r, at, "map needs a filter name or attribute=");
                char *fname = ja_strdup(&r->a, test->u.s.p, test->u.s.n);
                if (!fname || jr_filter(r, at, fname, &items[i], &rest, &x))
                    return fname ? -1 : jr_oom(r, at);
            }
            out->u.l->v[out->u.l->n++] = x;
            continue;
        }
        if (attr && attr_path(r, at, &items[i], &a->pos[0], &x))
            return -1;
        int ok;
        if (test) {
            char *tname = ja_strdup(&r->a, test->u.s.p, test->u.s.n);
            if (!tname)
                return jr_oom(r, at);
            if (jr_test(r, at, tname, &x, &rest, &ok))
                return -1;
        } else {
            ok = jv_truthy(&x);
        }
        if (ok == keep_if)
            out->u.l->v[out->u.l->n++] = items[i];
    }
    return 0;
}

/* json.dumps(indent=...) from a dump with separators ", " and ": " (or
 * compact ones): a line per item, nested items indented by pad per level,
 * empty containers kept as [] and {}. */
static void reindent(strbuf *b, const char *j, size_t n, const jv *pad, int compact)
{
    int level = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = j[i];
        if (in_str) {
            jr_put(b, &c, 1);
            if (c == '\\' && i + 1 < n)
                jr_put(b, &j[++i], 1);
            else if (c == '"')
                in_str = 0;
            continue;
        }
        if (c == '"') {
            in_str = 1;
            jr_put(b, &c, 1);
        } else if ((c == '[' || c == '{') && i + 1 < n && (j[i + 1] == ']' || j[i + 1] == '}')) {
            jr_put(b, j + i, 2);
            i++;
        } else if (c == '[' || c == '{' || c == ',' || c == ']' || c == '}') {
            if (c == ']' || c == '}')
                level--;
            if (c == ',' || c == ']' || c == '}') {
                if (c == ',')
                    jr_put(b, &c, 1);
                if (!compact && c == ',' && i + 1 < n && j[i + 1] == ' ')
                    i++;
            } else {
                jr_put(b, &c, 1);
                level++;
            }
            jr_put(b, "\n", 1);
            for (int k = 0; k < level; k++)
                jr_put(b, pad->u.s.p, pad->u.s.n);
            if (c == ']' || c == '}')
                jr_put(b, &c, 1);
        } else if (c == ':') {
            jr_put(b, ": ", 2);
            if (!compact && i + 1 < n && j[i + 1] == ' ')
                i++;
        } else {
            jr_put(b, &c, 1);
        }
    }
}

static int filter_tojson(rs *r, const jnode *at, const jv *v, const args *a, jv *out)
{
    const jv *indent = jr_arg(a, -1, "indent"), *seps = jr_arg(a, -1, "separators"),
             *sort = jr_arg(a, -1, "sort_keys"), *ascii = jr_arg(a, -1, "ensure_ascii");
    if (a->npos)
        return jr_fail(r, at, "tojson takes keyword arguments only");
    jv pad = jv_str("", 0);
    int indented = indent && indent->t != JV_NONE;
    if (indented && indent->t == JV_STR) {
        pad = *indent;
    } else if (indented) {
        if (jr_want_int(r, at, indent, "tojson's indent"))
            return -1;
        int64_t k = jv_inum(indent) < 0 ? 0 : jv_inum(indent) > 64 ? 64 : jv_inum(indent);
        pad = jv_str("                                                                ", (size_t)k);
    }
    if (ascii && jv_truthy(ascii))
        return jr_fail(r, at, "tojson(ensure_ascii=True) is not supported");
    int flags = sort && jv_truthy(sort) ? CHAT_JSON_SORT_KEYS : 0;
    if (seps && seps->t != JV_NONE) {
        jv *s;
        size_t n;
        if (!jv_is_list(seps) || jv_items(r, at, seps, &s, &n) || n != 2 || s[0].t != JV_STR ||
            s[1].t != JV_STR)
            return jr_fail(r, at, "tojson: separators must be two strings");
        int compact = s[0].u.s.n == 1 && s[0].u.s.p[0] == ',' && s[1].u.s.n == 1 && s[1].u.s.p[0] == ':';
        int dflt = s[0].u.s.n == 2 && !memcmp(s[0].u.s.p, ", ", 2) && s[1].u.s.n == 2 &&
                   !memcmp(s[1].u.s.p, ": ", 2);
        if (!compact && !dflt)
            return jr_fail(r, at, "tojson: only the separators (',', ':') and (', ', ': ') are supported");
        flags |= compact ? CHAT_JSON_COMPACT : 0;
    }
    cJSON *j = v->t == JV_JSON ? (cJSON *)v->u.j : jv_to_cjson(r, at, v, 0);
    if (!j)
        return -1;
    char *text = NULL;
    size_t len = 0;
    errbuf e;
    int rc = chat_json_dump(j, flags, &text, &len, &e);
    if (j != v->u.j || v->t != JV_JSON)
        cJSON_Delete(j);
    if (rc)
        return jr_fail(r, at, "tojson: %s", e.msg);
    if (indented) {
        strbuf b = {0};
        reindent(&b, text, len, &pad, flags & CHAT_JSON_COMPACT);
        free(text);
        return jr_text(r, at, &b, out);
    }
    char *p = ja_strdup(&r->a, text, len);
    free(text);
    if (!p)
        return jr_oom(r, at);
    *out = jv_str(p, len);
    return 0;
}

static int filter_indent(rs *r, const jnode *at, const jv *v, const args *a, jv *out)
{
    const jv *w = jr_arg(a, 0, "width"), *first = jr_arg(a, 1, "first"), *blank = jr_arg(a, 2, "blank");
    jv s, pad;
    if (jv_to_str(r, at, v, &s))
        return -1;
    if (w && w->t == JV_STR) {
        pad = *w;
    } else {
        int64_t k = w ? jv_inum(w) : 4;
        if (w && jr_want_int(r, at, w, "indent's width"))
            return -1;
        if (k < 0 || k > 1000)
            return jr_fail(r, at, "indent: width %lld is out of range", (long long)k);
        char *p = ja_alloc(&r->a, (size_t)k + 1);
        if (!p)
            return jr_oom(r, at);
        memset(p, ' ', (size_t)k);
        pad = jv_str(p, (size_t)k);
    }
    strbuf b = {0};
    int at_start = 1, is_first = 1;
    for (size_t i = 0; i < s.u.s.n; i++) {
        if (at_start) {
            size_t e = i;
            while (e < s.u.s.n && s.u.s.p[e] != '\n')
                e++;
            int empty = e == i;
            if ((!is_first || (first && jv_truthy(first))) && (!empty || (blank && jv_truthy(blank))))
                jr_put(&b, pad.u.s.p, pad.u.s.n);
            at_start = 0;
            is_first = 0;
        }
        jr_put(&b, s.u.s.p + i, 1);
        if (s.u.s.p[i] == '\n')
            at_start = 1;
    }
    if (!s.u.s.n && first && jv_truthy(first) && blank && jv_truthy(blank))
        jr_put(&b, pad.u.s.p, pad.u.s.n);
    return jr_text(r, at, &b, out);
}

/* Jinja2's int and float filters: numbers convert; a string is read as
 * Python's int() or float() would (int falls back to float: "3.7" is 3);
 * anything else is the default (0). Values beyond 64-bit integers are refused. */
static int filter_number(rs *r, const jnode *at, const jv *v, const args *a, int to_float, jv *out)
{
    const jv *dflt = jr_arg(a, 0, "default");
    double d;
    if (jv_is_num(v)) {
        if (to_float || v->t != JV_FLOAT) {
            *out = to_float ? jv_float(jv_num(v)) : jv_int(jv_inum(v));
            return 0;
        }
        d = v->u.f;
    } else if (v->t == JV_STR && v->u.s.n < 127 && v->u.s.n == strspn(v->u.s.p, "0123456789+-._eE \t\n\r")) {
        char buf[128], *end;
        size_t n = 0;
        for (size_t i = 0; i < v->u.s.n; i++)
            if (v->u.s.p[i] != '_')
                buf[n++] = v->u.s.p[i];
        buf[n] = 0;
        errno = 0;
        long long i = strtoll(buf, &end, 10);
        while (*end && strchr(" \t\n\r", *end))  /* (the only whitespace let in) */
            end++;
        if (!to_float && end != buf && !*end) {
            if (errno == ERANGE)
                return jr_fail(r, at, "int: %s is out of range", buf);
            *out = jv_int(i);
            return 0;
        }
        d = strtod(buf, &end);
        while (*end && strchr(" \t\n\r", *end))  /* (the only whitespace let in) */
            end++;
        if (end == buf || *end) {
            *out = dflt ? *dflt : to_float ? jv_float(0) : jv_int(0);
            return 0;
        }
        if (to_float) {
            *out = jv_float(d);
            return 0;
        }
    } else {
        *out = dflt ? *dflt : to_float ? jv_float(0) : jv_int(0);
        return 0;
    }
    if (!(fabs(d) < 9.2e18))
        return jr_fail(r, at, "int: %g is out of range", d);
    *out = jv_int((int64_t)trunc(d));
    return 0;
}

static int filter_round(rs *r, const jnode *at, const jv *v, const args *a, jv *out)
{
    const jv *prec = jr_arg(a, 0, "precision"), *method = jr_arg(a, 1, "method");
    if (!jv_is_num(v))
        return jr_fail(r, at, "round: a %s is not a number", jv_type_name(v));
    if (prec && jr_want_int(r, at, prec, "round's precision"))
        return -1;
    int64_t digits = prec ? jv_inum(prec) : 0;
    if (digits > 300 || digits < -300)
        return jr_fail(r, at, "round: precision %lld is out of range", (long long)digits);
    const char *m = method && method->t == JV_STR ? method->u.s.p : "common";
    double scale = pow(10, (double)digits);
    if (!strncmp(m, "ceil", 4) || !strncmp(m, "floor", 5)) {
        *out = jv_float((m[0] == 'c' ? ceil(jv_num(v) * scale) : floor(jv_num(v) * scale)) / scale);
        return 0;
    }
    if (v->t != JV_FLOAT) { /* Python's round of an int is an int */
        int64_t i = jv_inum(v);
        if (digits < 0 && digits > -19) {
            int64_t p = 1;
            for (int64_t k = 0; k < -digits; k++)
                p *= 10;
            int64_t q = i / p, rem = i % p;
            if (rem < 0)
                rem += p, q--;
            if (2 * rem > p || (2 * rem == p && (q & 1)))
                q++;
            i = q * p;
        }
        *out = jv_int(i);
        return 0;
    }
    /* Python rounds the exact binary value to nearest, ties to even: as printf does */
    double x = v->u.f, y;
    if (!isfinite(x)) {
        y = x;
    } else if (digits >= 0) {
        char buf[400];
        snprintf(buf, sizeof buf, "%.*f", (int)(digits < 340 ? digits : 340), x);
        y = strtod(buf, NULL);
    } else {
        y = nearbyint(x / (1 / scale)) * (1 / scale);
    }
    *out = jv_float(y);
    return 0;
}

static int filter_minmax(rs *r, const jnode *at, const jv *v, const args *a, int want_max, jv *out)
{
    jv *items;
    size_t n;
    const jv *cs = jr_arg(a, 0, "case_sensitive"), *attr = jr_arg(a, 1, "attribute");
    if (jv_items(r, at, v, &items, &n))
        return -1;
    if (!n) {
        *out = jv_undef("min/max of nothing");
        return 0;
    }
    size_t best = 0;
    jv bk;
    for (size_t i = 0; i < n; i++) {
        jv k = items[i];
        if ((attr && attr_path(r, at, &items[i], attr, &k)) ||
            lowered_key(r, at, &k, cs && jv_truthy(cs), &k))
            return -1;
        if (i == 0) {
            bk = k;
            continue;
        }
        int o = jv_order(r, &k, &bk);
        if (o == 2)
            return jr_fail(r, at, "%s: the values do not order", want_max ? "max" : "min");
        if (want_max ? o > 0 : o < 0) {
            best = i;
            bk = k;
        }
    }
    *out = items[best];
    return 0;
}

int jr_filter(rs *r, const jnode *at, const char *name, const jv *v, const args *a, jv *out)
{
    const jv *a0 = jr_arg(a, 0, NULL);
    if (!strcmp(name, "tojson"))
        return filter_tojson(r, at, v, a, out);
    if (!strcmp(name, "string")) {
        if (v->t == JV_UNDEF) {
            *out = jv_str("", 0);
            return 0;
        }
        return jv_to_str(r, at, v, out);
    }
    if (!strcmp(name, "safe") || !strcmp(name, "escape") || !strcmp(name, "e")) {
        if (name[0] == 's') {
            *out = *v;
            return 0;
        }
        jv s;
        if (jv_to_str(r, at, v, &s))
            return -1;
        strbuf b = {0};
        for (size_t i = 0; i < s.u.s.n; i++) {
            char c = s.u.s.p[i];
            const char *rep = c == '&'    ? "&amp;"
                              : c == '<'  ? "&lt;"
                              : c == '>'  ? "&gt;"
                              : c == '"'  ? "&#34;"
                              : c == '\'' ? "&#39;"
                                          : NULL;
            if (rep)
                jr_puts(&b, rep);
            else
                jr_put(&b, &c, 1);
        }
        return jr_text(r, at, &b, out);
    }
    if (!strcmp(name, "length") || !strcmp(name, "count")) {
        if (v->t != JV_STR && !jv_is_list(v) && !jv_is_dict(v) && v->t != JV_UNDEF)
            return jr_fail(r, at, "object of type '%s' has no len()", jv_type_name(v));
        *out = jv_int((int64_t)jv_len(v));
        return 0;
    }
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        const jv *boolean = jr_arg(a, 1, "boolean");
        int use = boolean && jv_truthy(boolean) ? !jv_truthy(v) : v->t == JV_UNDEF;
        *out = use ? (a0 ? *a0 : jv_str("", 0)) : *v;
        return 0;
    }
    if (!strcmp(name, "trim")) {
        jv s;
        return jv_to_str(r, at, v, &s) || str_strip(r, at, &s, jr_arg(a, 0, "chars"), 3, out);
    }
    if (!strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "capitalize") ||
        !strcmp(name, "title")) {
        jv s;
        if (jv_to_str(r, at, v, &s))
            return -1;
        return jr_case_map(r, at, &s, name[0] == 'l' ? 0 : name[0] == 'u' ? 1 : name[0] == 'c' ? 2 : 4, out);
    }
    if (!strcmp(name, "replace")) {
        jv s;
        return jv_to_str(r, at, v, &s) ||
               str_replace(r, at, &s, a0, jr_arg(a, 1, NULL), jr_arg(a, 2, "count"), out);
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        jv *items;
        size_t n;
        if (jv_items(r, at, v, &items, &n))
            return -1;
        *out = n ? items[name[0] == 'f' ? 0 : n - 1] : jv_undef(name);
        return 0;
    }
    if (!strcmp(name, "join")) {
        const jv *attr = jr_arg(a, 1, "attribute");
        if (a0 && jr_want_str(r, at, a0, "join's separator"))
            return -1;
        if (!attr)
            return join_items(r, at, v, a0, out);
        jv mapped;
        args ma = {.kw = (const char *[]){"attribute"}, .kwv = (jv *)attr, .nkw = 1};
        return filter_each(r, at, "map", v, &ma, &mapped) || join_items(r, at, &mapped, a0, out);
    }
    if (!strcmp(name, "list")) {
        jv *items;
        size_t n;
        if (jv_items(r, at, v, &items, &n) || new_list_value(r, at, n, out))
            return -1;
        memcpy(out->u.l->v, items, n * sizeof *items);
        out->u.l->n = n;
        return 0;
    }
    if (!strcmp(name, "reverse")) {
        if (v->t == JV_STR) {
            jv *items;
            size_t n;
            if (jv_items(r, at, v, &items, &n))
                return -1;
            strbuf b = {0};
            for (size_t i = n; i-- > 0;)
                jr_put(&b, items[i].u.s.p, items[i].u.s.n);
            return jr_text(r, at, &b, out);
        }
        jv *items;
        size_t n;
        if (jv_items(r, at, v, &items, &n) || new_list_value(r, at, n, out))
            return -1;
        for (size_t i = 0; i < n; i++)
            out->u.l->v[i] = items[n - 1 - i];
        out->u.l->n = n;
        return 0;
    }
    if (!strcmp(name, "items")) {
        if (v->t == JV_UNDEF)
            return new_list_value(r, at, 0, out);
        if (!jv_is_dict(v))
            return jr_fail(r, at, "items: a %s is not a dict", jv_type_name(v));
        return jr_call_method(r, at, v, "items", a, out);
    }
    if (!strcmp(name, "int") || !strcmp(name, "float"))
        return filter_number(r, at, v, a, name[0] == 'f', out);
    if (!strcmp(name, "abs")) {
        if (!jv_is_num(v))
            return jr_fail(r, at, "abs: a %s is not a number", jv_type_name(v));
        if (v->t != JV_FLOAT && jv_inum(v) == INT64_MIN)
            return jr_fail(r, at, "abs: integer overflow");
        *out = v->t == JV_FLOAT ? jv_float(fabs(v->u.f)) : jv_int(jv_inum(v) < 0 ? -jv_inum(v) : jv_inum(v));
        return 0;
    }
    if (!strcmp(name, "round"))
        return filter_round(r, at, v, a, out);
    if (!strcmp(name, "map") || !strcmp(name, "select") || !strcmp(name, "reject") ||
        !strcmp(name, "selectattr") || !strcmp(name, "rejectattr"))
        return filter_each(r, at, name, v, a, out);
    if (!strcmp(name, "unique")) {
        jv *items;
        size_t n;
        if (jv_items(r, at, v, &items, &n) || new_list_value(r, at, n, out))
            return -1;
        const jv *cs = jr_arg(a, 0, "case_sensitive"), *attr = jr_arg(a, 1, "attribute");
        /* the items' keys (an attribute's value with attribute=), as their case says */
        jv *keys = ja_alloc(&r->a, (n ? n : 1) * sizeof *keys);
        if (!keys)
            return jr_oom(r, at);
        for (size_t i = 0; i < n; i++) {
            jv k = items[i];
            if ((attr && attr_path(r, at, &items[i], attr, &k)) ||
                lowered_key(r, at, &k, cs && jv_truthy(cs), &keys[i]))
                return -1;
        }
        size_t kept = 0, compared = 0;
        for (size_t i = 0; i < n; i++) {
            int seen = 0;
            for (size_t j = 0; j < kept && !seen; j++) {
                /* (each item against those kept: the deadline, not the steps, bounds it) */
                if (!(++compared & 0xffff) && jr_past_deadline(r, at))
                    return -1;
                seen = jv_equal(r, &keys[i], &keys[j], 0);
            }
            if (!seen) {
                keys[kept++] = keys[i];
                out->u.l->v[out->u.l->n++] = items[i];
            }
        }
        return 0;
    }
    if (!strcmp(name, "sort") || !strcmp(name, "dictsort"))
        return filter_sort(r, at, v, a, name[0] == 'd', out);
    if (!strcmp(name, "indent"))
        return filter_indent(r, at, v, a, out);
    if (!strcmp(name, "sum")) {
        jv *items;
        size_t n;
        const jv *attr = jr_arg(a, 0, "attribute"), *start = jr_arg(a, 1, "start");
        if (jv_items(r, at, v, &items, &n))
            return -1;
        *out = start ? *start : jv_int(0);
        jnode add = {.kind = JN_BINOP, .op = JOP_ADD, .line = at->line};
        for (size_t i = 0; i < n; i++) {
            jv x = items[i];
            if ((attr && attr_path(r, at, &items[i], attr, &x)) || jv_binop(r, &add, out, &x, out))
                return -1;
        }
        return 0;
    }
    if (!strcmp(name, "min") || !strcmp(name, "max"))
        return filter_minmax(r, at, v, a, name[1] == 'a', out);
    return jr_fail(r, at, "unknown filter '%s'", name);
}

/* ---- tests ---------------------------------------------------------------------- */

int jr_test(rs *r, const jnode *at, const char *name, const jv *v, const args *a, int *out)
{
    const jv *a0 = jr_arg(a, 0, NULL);
    if (!strcmp(name, "defined"))
        *out = v->t != JV_UNDEF;
    else if (!strcmp(name, "undefined"))
        *out = v->t == JV_UNDEF;
    else if (!strcmp(name, "none"))
        *out = v->t == JV_NONE;
    else if (!strcmp(name, "string"))
        *out = v->t == JV_STR;
    else if (!strcmp(name, "number"))
        *out = jv_is_num(v);
    else if (!strcmp(name, "integer"))
        *out = v->t == JV_INT;
    else if (!strcmp(name, "float"))
        *out = v->t == JV_FLOAT;
    else if (!strcmp(name, "boolean"))
        *out = v->t == JV_BOOL;
    else if (!strcmp(name, "true") || !strcmp(name, "false"))
        *out = v->t == JV_BOOL && v->u.b == (name[0] == 't');
    else if (!strcmp(name, "mapping"))
        *out = jv_is_dict(v) && !(v->t == JV_DICT && v->u.d->ns);
    else if (!strcmp(name, "iterable"))
        *out = v->t == JV_STR || jv_is_list(v) || jv_is_dict(v) || v->t == JV_UNDEF;
    else if (!strcmp(name, "sequence"))
        *out = v->t == JV_STR || jv_is_list(v) || jv_is_dict(v);
    else if (!strcmp(name, "callable"))
        *out = v->t == JV_MACRO || v->t == JV_FUNC || v->t == JV_METHOD;
    else if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        jv s;
        if (jr_want_str(r, at, v, "the tested value") || jr_case_map(r, at, v, name[0] == 'u', &s))
            return -1;
        int cased = 0;
        for (size_t i = 0; i < v->u.s.n; i++)
            cased |= (v->u.s.p[i] | 0x20) >= 'a' && (v->u.s.p[i] | 0x20) <= 'z';
        *out = cased && !memcmp(s.u.s.p, v->u.s.p, v->u.s.n);
    } else if (!strcmp(name, "odd") || !strcmp(name, "even")) {
        if (jr_want_int(r, at, v, "the tested value"))
            return -1;
        *out = (jv_inum(v) % 2 != 0) == (name[0] == 'o');
    } else if (!strcmp(name, "divisibleby")) {
        if (jr_want_int(r, at, v, "the tested value") || jr_want_int(r, at, a0, "divisibleby's argument"))
            return -1;
        if (!jv_inum(a0))
            return jr_fail(r, at, "divisibleby(0)");
        *out = jv_inum(v) % jv_inum(a0) == 0;
    } else if (!strcmp(name, "in")) {
        if (!a0)
            return jr_fail(r, at, "'in' test needs a container");
        return jv_contains(r, at, a0, v, out);
    } else if (!strcmp(name, "sameas")) {
        *out = a0 && a0->t == v->t &&
               (v->t == JV_NONE || v->t == JV_UNDEF || (v->t == JV_BOOL && v->u.b == a0->u.b) ||
                jv_equal(r, v, a0, 0));
    } else {
        static const char *const cmp[][2] = {
            {"eq", "=="}, {"equalto", "=="}, {"==", "=="}, {"ne", "!="},      {"lt", "<"},
            {"le", "<="}, {"gt", ">"},       {"ge", ">="}, {"lessthan", "<"}, {"greaterthan", ">"}};
        for (size_t i = 0; i < sizeof cmp / sizeof cmp[0]; i++) {
            if (strcmp(name, cmp[i][0]))
                continue;
            if (!a0)
                return jr_fail(r, at, "test '%s' needs a value to compare with", name);
            jnode c = {.kind = JN_COMPARE, .line = at->line};
            const char *op = cmp[i][1];
            c.op = !strcmp(op, "==")   ? JOP_EQ
                   : !strcmp(op, "!=") ? JOP_NE
                   : !strcmp(op, "<")  ? JOP_LT
                   : !strcmp(op, "<=") ? JOP_LE
                   : !strcmp(op, ">")  ? JOP_GT
                                       : JOP_GE;
            return jv_compare(r, &c, v, a0, out);
        }
        return jr_fail(r, at, "unknown test '%s'", name);
    }
    return 0;
}
