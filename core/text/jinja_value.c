/* jinja_value: the template engine's values (jinja_value.h): errors and
 * output of a rendering, constructors, reading the request's JSON in place,
 * Python's str(), repr() and json.dumps of values, and Python's operators
 * (==, <, in, + - * / // % **, ~). */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/chat_format.h"
#include "core/text/jinja_value.h"

int jr_fail(rs *r, const jnode *at, const char *fmt, ...)
{
    if (r->failed)
        return -1;
    r->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    jinja_error(r->e, at ? at->line : 0, fmt, ap);
    va_end(ap);
    return -1;
}

int jr_oom(rs *r, const jnode *at)
{
    return jr_fail(r, at,
                   r->a.over && r->a.used + 65536 >= MAX_MEMORY
                       ? "the template built more than %u MiB of values"
                       : "out of memory (%u MiB limit)",
                   MAX_MEMORY >> 20);
}

/* Every text a rendering builds is held to MAX_OUTPUT. */
void jr_put(strbuf *b, const char *s, size_t n)
{
    b->limit = MAX_OUTPUT;
    strbuf_put(b, s, n);
}

void jr_puts(strbuf *b, const char *s)
{
    jr_put(b, s, strlen(s));
}

/* A string value of the rendering's arena holding b's text (b is freed). */
int jr_text(rs *r, const jnode *at, strbuf *b, jv *out)
{
    if (b->failed) {
        free(b->p);
        return jr_fail(r, at, "the template printed more than %u MiB", MAX_OUTPUT >> 20);
    }
    char *p = ja_strdup(&r->a, b->p ? b->p : "", b->len);
    free(b->p);
    if (!p)
        return jr_oom(r, at);
    *out = (jv){.t = JV_STR, .u.s = {p, b->len}};
    return 0;
}

/* ---- constructors ---------------------------------------------------------- */

jv jv_str(const char *p, size_t n)
{
    return (jv){.t = JV_STR, .u.s = {p, n}};
}

jv jv_int(int64_t i)
{
    return (jv){.t = JV_INT, .u.i = i};
}

jv jv_float(double f)
{
    return (jv){.t = JV_FLOAT, .u.f = f};
}

jv jv_bool(int b)
{
    return (jv){.t = JV_BOOL, .u.b = !!b};
}

jv jv_undef(const char *name)
{
    return (jv){.t = JV_UNDEF, .name = name};
}

jlistv *jv_new_list(rs *r, size_t cap)
{
    jlistv *l = ja_alloc(&r->a, sizeof *l);
    if (!cap)
        cap = 1; /* never a NULL array, even empty */
    if (l && !(l->v = ja_alloc(&r->a, cap * sizeof *l->v)))
        return NULL;
    if (l)
        l->cap = cap;
    return l;
}

int jv_list_push(rs *r, jlistv *l, jv v)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        jv *nv = ja_alloc(&r->a, cap * sizeof *nv);
        if (!nv)
            return -1;
        if (l->n)
            memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = v;
    return 0;
}

jdictv *jv_new_dict(rs *r)
{
    return ja_alloc(&r->a, sizeof(jdictv));
}

int jv_dict_set(rs *r, jdictv *d, const char *k, size_t kn, jv v)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->kn[i] == kn && !memcmp(d->k[i], k, kn)) {
            d->v[i] = v;
            return 0;
        }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        const char **nk = ja_alloc(&r->a, cap * sizeof *nk);
        size_t *nkn = ja_alloc(&r->a, cap * sizeof *nkn);
        jv *nv = ja_alloc(&r->a, cap * sizeof *nv);
        if (!nk || !nkn || !nv)
            return -1;
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof *nk);
            memcpy(nkn, d->kn, d->n * sizeof *nkn);
            memcpy(nv, d->v, d->n * sizeof *nv);
        }
        d->k = nk;
        d->kn = nkn;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->kn[d->n] = kn;
    d->v[d->n++] = v;
    return 0;
}

/* A context value: arrays and objects stay views (an array the template
 * changed is its copy); scalars become values. */
jv jv_from_json(const rs *r, const cJSON *j)
{
    for (size_t i = 0; i < r->n_mut; i++)
        if (r->mut[i].json == j)
            return (jv){.t = JV_LIST, .u.l = r->mut[i].list};
    if (!j || cJSON_IsNull(j))
        return (jv){.t = JV_NONE};
    if (cJSON_IsBool(j))
        return jv_bool(cJSON_IsTrue(j));
    if (cJSON_IsString(j))
        return jv_str(j->valuestring ? j->valuestring : "", j->valuestring ? strlen(j->valuestring) : 0);
    if (cJSON_IsNumber(j)) {
        const char *sp = j->valuestring;
        int is_float = !sp ? j->valuedouble != floor(j->valuedouble) || fabs(j->valuedouble) >= 9.2e18
                           : strpbrk(sp, ".eE") != NULL;
        jv v;
        if (!is_float && sp) {
            long long i = strtoll(sp, NULL, 10);
            v = (i == LLONG_MAX || i == LLONG_MIN) ? jv_float(strtod(sp, NULL)) : jv_int(i);
        } else {
            v = is_float ? jv_float(j->valuedouble) : jv_int((int64_t)j->valuedouble);
        }
        v.name = sp;
        return v;
    }
    return (jv){.t = JV_JSON, .u.j = j};
}

/* Python dict semantics over a JSON object: a repeated key's last value. */
const cJSON *jv_json_member(const cJSON *o, const char *k, size_t kn)
{
    const cJSON *hit = NULL;
    for (const cJSON *c = o->child; c; c = c->next)
        if (c->string && strlen(c->string) == kn && !memcmp(c->string, k, kn))
            hit = c;
    return hit;
}

/* A repeated key counts once, at its first place. */
static int jv_json_key_first(const cJSON *o, const cJSON *c)
{
    for (const cJSON *d = o->child; d != c; d = d->next)
        if (d->string && c->string && !strcmp(d->string, c->string))
            return 0;
    return 1;
}

int jv_is_list(const jv *v)
{
    return v->t == JV_LIST || (v->t == JV_JSON && cJSON_IsArray(v->u.j));
}

int jv_is_dict(const jv *v)
{
    return v->t == JV_DICT || (v->t == JV_JSON && cJSON_IsObject(v->u.j));
}

int jv_is_num(const jv *v)
{
    return v->t == JV_INT || v->t == JV_FLOAT || v->t == JV_BOOL;
}

double jv_num(const jv *v)
{
    return v->t == JV_FLOAT ? v->u.f : v->t == JV_INT ? (double)v->u.i : v->u.b;
}

int64_t jv_inum(const jv *v)
{
    return v->t == JV_INT ? v->u.i : v->u.b;
}

const char *jv_type_name(const jv *v)
{
    switch (v->t) {
    case JV_UNDEF: return "undefined";
    case JV_NONE: return "None";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return v->tuple ? "tuple" : "list";
    case JV_DICT: return v->u.d->ns ? "namespace" : "dict";
    case JV_JSON: return cJSON_IsArray(v->u.j) ? "list" : "dict";
    case JV_MACRO: return "macro";
    case JV_LOOP: return "loop";
    default: return "function";
    }
}

/* The items of a sequence as an array (JSON views copied into the arena). */
int jv_items(rs *r, const jnode *at, const jv *v, jv **items, size_t *n)
{
    if (v->t == JV_LIST) {
        *items = v->u.l->v;
        *n = v->u.l->n;
        return 0;
    }
    if (v->t == JV_JSON) {
        size_t k = 0, cnt = 0;
        const cJSON *o = v->u.j;
        for (const cJSON *c = o->child; c; c = c->next)
            cnt++;
        jv *out = ja_alloc(&r->a, (cnt ? cnt : 1) * sizeof *out);
        if (!out)
            return jr_oom(r, at);
        for (const cJSON *c = o->child; c; c = c->next) {
            if (cJSON_IsArray(o))
                out[k++] = jv_from_json(r, c);
            else if (jv_json_key_first(o, c))
                out[k++] = jv_str(c->string, strlen(c->string));
        }
        *items = out;
        *n = k;
        return 0;
    }
    if (v->t == JV_DICT) {
        jv *out = ja_alloc(&r->a, (v->u.d->n ? v->u.d->n : 1) * sizeof *out);
        if (!out)
            return jr_oom(r, at);
        for (size_t i = 0; i < v->u.d->n; i++)
            out[i] = jv_str(v->u.d->k[i], v->u.d->kn[i]);
        *items = out;
        *n = v->u.d->n;
        return 0;
    }
    if (v->t == JV_STR) { /* one string per code point */
        jv *out = ja_alloc(&r->a, (v->u.s.n ? v->u.s.n : 1) * sizeof *out);
        if (!out)
            return jr_oom(r, at);
        size_t k = 0;
        for (size_t i = 0; i < v->u.s.n;) {
            size_t j = i + 1;
            while (j < v->u.s.n && ((unsigned char)v->u.s.p[j] & 0xC0) == 0x80)
                j++;
            out[k++] = jv_str(v->u.s.p + i, j - i);
            i = j;
        }
        *items = out;
        *n = k;
        return 0;
    }
    if (v->t == JV_UNDEF) { /* an undefined value iterates as empty */
        static jv none;
        *items = &none;
        *n = 0;
        return 0;
    }
    return jr_fail(r, at, "'%s' object is not iterable", jv_type_name(v));
}

/* Dict lookup: 1 found, 0 missing. */
int jv_dict_get(const rs *r, const jv *d, const char *k, size_t kn, jv *out)
{
    if (d->t == JV_DICT) {
        for (size_t i = 0; i < d->u.d->n; i++)
            if (d->u.d->kn[i] == kn && !memcmp(d->u.d->k[i], k, kn)) {
                *out = d->u.d->v[i];
                return 1;
            }
        return 0;
    }
    const cJSON *m = jv_json_member(d->u.j, k, kn);
    if (m)
        *out = jv_from_json(r, m);
    return m != NULL;
}

size_t jv_utf8_count(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

size_t jv_len(const jv *v)
{
    switch (v->t) {
    case JV_STR: return jv_utf8_count(v->u.s.p, v->u.s.n);
    case JV_LIST: return v->u.l->n;
    case JV_DICT: return v->u.d->n;
    case JV_JSON: {
        size_t n = 0;
        for (const cJSON *c = v->u.j->child; c; c = c->next)
            n += cJSON_IsArray(v->u.j) || jv_json_key_first(v->u.j, c);
        return n;
    }
    default: return 0;
    }
}

int jv_truthy(const jv *v)
{
    switch (v->t) {
    case JV_UNDEF:
    case JV_NONE: return 0;
    case JV_BOOL: return v->u.b;
    case JV_INT: return v->u.i != 0;
    case JV_FLOAT: return v->u.f != 0;
    case JV_STR: return v->u.s.n != 0;
    case JV_LIST:
    case JV_DICT:
    case JV_JSON: return jv_len(v) != 0;
    default: return 1;
    }
}

/* ---- printing: Python's str() and repr() ------------------------------------ */

static void jv_print_number(strbuf *b, const jv *v)
{
    char num[64];
    if (v->name)
        jr_puts(b, chat_py_number_spelled(v->name, num, sizeof num));
    else if (v->t == JV_INT)
        snprintf(num, sizeof num, "%lld", (long long)v->u.i), jr_puts(b, num);
    else
        chat_py_float_str(v->u.f, num, sizeof num), jr_puts(b, num);
}

static void jv_print_repr(strbuf *b, const char *s, size_t n)
{
    char q = memchr(s, '\'', n) && !memchr(s, '"', n) ? '"' : '\'';
    jr_put(b, &q, 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '\\' || c == (unsigned char)q) {
            esc[0] = '\\';
            esc[1] = (char)c;
            jr_put(b, esc, 2);
        } else if (c == '\n') {
            jr_put(b, "\\n", 2);
        } else if (c == '\r') {
            jr_put(b, "\\r", 2);
        } else if (c == '\t') {
            jr_put(b, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", c);
            jr_put(b, esc, 4);
        } else {
            jr_put(b, (const char *)&s[i], 1);
        }
    }
    jr_put(b, &q, 1);
}

static void jv_print_items(rs *r, strbuf *b, const jv *v, int depth)
{
    if (jv_is_list(v)) {
        jv *items;
        size_t n;
        if (jv_items(r, NULL, v, &items, &n))
            return;
        jr_puts(b, v->tuple ? "(" : "[");
        for (size_t i = 0; i < n; i++) {
            if (i)
                jr_puts(b, ", ");
            jv_print(r, b, &items[i], 1, depth + 1);
        }
        jr_puts(b, v->tuple ? (n == 1 ? ",)" : ")") : "]");
        return;
    }
    jr_puts(b, "{");
    if (v->t == JV_DICT) {
        for (size_t i = 0; i < v->u.d->n; i++) {
            if (i)
                jr_puts(b, ", ");
            jv_print_repr(b, v->u.d->k[i], v->u.d->kn[i]);
            jr_puts(b, ": ");
            jv_print(r, b, &v->u.d->v[i], 1, depth + 1);
        }
    } else {
        int first = 1;
        for (const cJSON *c = v->u.j->child; c; c = c->next) {
            if (!jv_json_key_first(v->u.j, c))
                continue;
            if (!first)
                jr_puts(b, ", ");
            first = 0;
            jv_print_repr(b, c->string, strlen(c->string));
            jr_puts(b, ": ");
            jv m = jv_from_json(r, jv_json_member(v->u.j, c->string, strlen(c->string)));
            jv_print(r, b, &m, 1, depth + 1);
        }
    }
    jr_puts(b, "}");
}

void jv_print(rs *r, strbuf *b, const jv *v, int repr, int depth)
{
    if (depth > 500) {
        b->failed = 1;
        return;
    }
    switch (v->t) {
    case JV_UNDEF: break;
    case JV_NONE: jr_puts(b, "None"); break; /* ({{ none }} prints "": see JN_OUTPUT) */
    case JV_BOOL: jr_puts(b, v->u.b ? "True" : "False"); break;
    case JV_INT:
    case JV_FLOAT: jv_print_number(b, v); break;
    case JV_STR:
        if (repr)
            jv_print_repr(b, v->u.s.p, v->u.s.n);
        else
            jr_put(b, v->u.s.p, v->u.s.n);
        break;
    case JV_LIST:
    case JV_JSON: jv_print_items(r, b, v, depth); break;
    case JV_DICT:
        if (v->u.d->ns)
            jr_puts(b, "<Namespace>");
        else
            jv_print_items(r, b, v, depth);
        break;
    default: break; /* macros and functions print nothing */
    }
}

/* str(v) as a value (strings as they are). */
int jv_to_str(rs *r, const jnode *at, const jv *v, jv *out)
{
    if (v->t == JV_STR) {
        *out = *v;
        return 0;
    }
    strbuf b = {0};
    jv_print(r, &b, v, 0, 0);
    return jr_text(r, at, &b, out);
}

/* ---- JSON out (tojson) ---------------------------------------------------- */

cJSON *jv_to_cjson(rs *r, const jnode *at, const jv *v, int depth)
{
    if (depth > 500) {
        jr_fail(r, at, "tojson: the value nests too deeply");
        return NULL;
    }
    cJSON *o = NULL;
    char text[64];
    switch (v->t) {
    case JV_UNDEF: jr_fail(r, at, "tojson: '%s' is undefined", v->name ? v->name : "value"); return NULL;
    case JV_NONE: o = cJSON_CreateNull(); break;
    case JV_BOOL: o = cJSON_CreateBool(v->u.b); break;
    case JV_INT:
    case JV_FLOAT:
        o = cJSON_CreateNumber(jv_num(v));
        if (o && (v->name || v->t == JV_INT || isfinite(v->u.f))) {
            if (!v->name && v->t == JV_INT)
                snprintf(text, sizeof text, "%lld", (long long)v->u.i);
            else if (!v->name)
                chat_py_float_str(v->u.f, text, sizeof text);
            if (!(o->valuestring = strdup(v->name ? v->name : text))) {
                cJSON_Delete(o);
                o = NULL;
            }
        }
        break;
    case JV_STR: {
        char *s = strndup(v->u.s.p, v->u.s.n);
        o = s ? cJSON_CreateString(s) : NULL;
        free(s);
        break;
    }
    case JV_JSON: o = cJSON_Duplicate(v->u.j, 1); break;
    case JV_LIST:
        if (!(o = cJSON_CreateArray()))
            break;
        for (size_t i = 0; i < v->u.l->n; i++) {
            cJSON *c = jv_to_cjson(r, at, &v->u.l->v[i], depth + 1);
            if (!c || !cJSON_AddItemToArray(o, c)) {
                cJSON_Delete(c);
                cJSON_Delete(o);
                return NULL;
            }
        }
        break;
    case JV_DICT:
        if (!(o = cJSON_CreateObject()))
            break;
        for (size_t i = 0; i < v->u.d->n; i++) {
            cJSON *c = jv_to_cjson(r, at, &v->u.d->v[i], depth + 1);
            char *k = strndup(v->u.d->k[i], v->u.d->kn[i]);
            if (!c || !k || !cJSON_AddItemToObject(o, k, c)) {
                free(k);
                cJSON_Delete(c);
                cJSON_Delete(o);
                return NULL;
            }
            free(k);
        }
        break;
    default: jr_fail(r, at, "tojson: a %s is not JSON", jv_type_name(v)); return NULL;
    }
    if (!o)
        jr_oom(r, at);
    return o;
}

/* Python's ==. */
int jv_equal(rs *r, const jv *x, const jv *y, int depth)
{
    if (depth > 500)
        return 0;
    if (jv_is_num(x) && jv_is_num(y))
        return x->t == JV_FLOAT || y->t == JV_FLOAT ? jv_num(x) == jv_num(y) : jv_inum(x) == jv_inum(y);
    if (x->t == JV_STR && y->t == JV_STR)
        return x->u.s.n == y->u.s.n && !memcmp(x->u.s.p, y->u.s.p, x->u.s.n);
    if ((x->t == JV_NONE && y->t == JV_NONE) || (x->t == JV_UNDEF && y->t == JV_UNDEF))
        return 1;
    if (jv_is_list(x) && jv_is_list(y)) {
        jv *a, *b;
        size_t na, nb;
        if (x->tuple != y->tuple || jv_items(r, NULL, x, &a, &na) || jv_items(r, NULL, y, &b, &nb) ||
            na != nb)
            return 0;
        for (size_t i = 0; i < na; i++)
            if (!jv_equal(r, &a[i], &b[i], depth + 1))
                return 0;
        return 1;
    }
    if (jv_is_dict(x) && jv_is_dict(y)) {
        jv *keys;
        size_t n;
        if (jv_len(x) != jv_len(y) || jv_items(r, NULL, x, &keys, &n))
            return 0;
        for (size_t i = 0; i < n; i++) {
            jv a, b;
            if (!jv_dict_get(r, x, keys[i].u.s.p, keys[i].u.s.n, &a) ||
                !jv_dict_get(r, y, keys[i].u.s.p, keys[i].u.s.n, &b) || !jv_equal(r, &a, &b, depth + 1))
                return 0;
        }
        return 1;
    }
    if (x->t == JV_MACRO && y->t == JV_MACRO)
        return x->u.m == y->u.m;
    return 0;
}

/* Python's <: -1 less, 0 equal, 1 greater; 2 when the types do not order. */
int jv_order(rs *r, const jv *x, const jv *y)
{
    if (jv_is_num(x) && jv_is_num(y)) {
        if (x->t != JV_FLOAT && y->t != JV_FLOAT)
            return jv_inum(x) < jv_inum(y) ? -1 : jv_inum(x) > jv_inum(y);
        double a = jv_num(x), b = jv_num(y);
        return a < b ? -1 : a > b ? 1 : a == b ? 0 : 2;
    }
    if (x->t == JV_STR && y->t == JV_STR) {
        size_t n = x->u.s.n < y->u.s.n ? x->u.s.n : y->u.s.n;
        int c = memcmp(x->u.s.p, y->u.s.p, n);
        return c ? (c < 0 ? -1 : 1) : x->u.s.n < y->u.s.n ? -1 : x->u.s.n > y->u.s.n;
    }
    if (jv_is_list(x) && jv_is_list(y)) {
        jv *a, *b;
        size_t na, nb;
        if (jv_items(r, NULL, x, &a, &na) || jv_items(r, NULL, y, &b, &nb))
            return 2;
        for (size_t i = 0; i < na && i < nb; i++)
            if (!jv_equal(r, &a[i], &b[i], 0))
                return jv_order(r, &a[i], &b[i]);
        return na < nb ? -1 : na > nb;
    }
    return 2;
}

int jv_contains(rs *r, const jnode *at, const jv *hay, const jv *needle, int *out)
{
    if (hay->t == JV_STR) {
        if (needle->t != JV_STR)
            return jr_fail(r, at, "'in <string>' requires a string on the left, not %s",
                           jv_type_name(needle));
        *out = 0;
        if (!needle->u.s.n)
            *out = 1;
        for (size_t i = 0; !*out && i + needle->u.s.n <= hay->u.s.n; i++)
            *out = !memcmp(hay->u.s.p + i, needle->u.s.p, needle->u.s.n);
        return 0;
    }
    if (jv_is_dict(hay)) {
        jv tmp;
        *out = needle->t == JV_STR && jv_dict_get(r, hay, needle->u.s.p, needle->u.s.n, &tmp);
        return 0;
    }
    if (jv_is_list(hay) || hay->t == JV_UNDEF) {
        jv *items;
        size_t n;
        if (jv_items(r, at, hay, &items, &n))
            return -1;
        *out = 0;
        for (size_t i = 0; i < n && !*out; i++)
            *out = jv_equal(r, &items[i], needle, 0);
        return 0;
    }
    return jr_fail(r, at, "argument of type '%s' is not iterable", jv_type_name(hay));
}

int jv_compare(rs *r, const jnode *n, const jv *x, const jv *y, int *res)
{
    if (n->op == JOP_EQ || n->op == JOP_NE) {
        *res = jv_equal(r, x, y, 0) == (n->op == JOP_EQ);
        return 0;
    }
    if (n->op == JOP_IN || n->op == JOP_NOTIN) {
        if (jv_contains(r, n, y, x, res))
            return -1;
        *res = *res == (n->op == JOP_IN);
        return 0;
    }
    int c = jv_order(r, x, y);
    if (c == 2)
        return jr_fail(r, n, "'%s' is not supported between %s and %s",
                       n->op == JOP_LT   ? "<"
                       : n->op == JOP_LE ? "<="
                       : n->op == JOP_GT ? ">"
                                         : ">=",
                       jv_type_name(x), jv_type_name(y));
    *res = n->op == JOP_LT ? c < 0 : n->op == JOP_LE ? c <= 0 : n->op == JOP_GT ? c > 0 : c >= 0;
    return 0;
}

static int jv_concat(rs *r, const jnode *at, const char *a, size_t an, const char *b, size_t bn, jv *out)
{
    char *p = ja_alloc(&r->a, an + bn + 1);
    if (!p)
        return jr_oom(r, at);
    memcpy(p, a, an);
    memcpy(p + an, b, bn);
    *out = jv_str(p, an + bn);
    return 0;
}

int jv_binop(rs *r, const jnode *n, const jv *x, const jv *y, jv *out)
{
    if (n->op == JOP_CONCAT) {
        jv a, b;
        if (jv_to_str(r, n, x, &a) || jv_to_str(r, n, y, &b))
            return -1;
        return jv_concat(r, n, a.u.s.p, a.u.s.n, b.u.s.p, b.u.s.n, out);
    }
    if (n->op == JOP_MOD && x->t == JV_STR)
        return jr_percent_format(r, n, x, y, out);
    if (n->op == JOP_ADD && x->t == JV_STR && y->t == JV_STR)
        return jv_concat(r, n, x->u.s.p, x->u.s.n, y->u.s.p, y->u.s.n, out);
    if (n->op == JOP_ADD && jv_is_list(x) && jv_is_list(y)) {
        jv *a, *b;
        size_t na, nb;
        if (jv_items(r, n, x, &a, &na) || jv_items(r, n, y, &b, &nb))
            return -1;
        jlistv *l = jv_new_list(r, na + nb);
        if (!l)
            return jr_oom(r, n);
        memcpy(l->v, a, na * sizeof *a);
        memcpy(l->v + na, b, nb * sizeof *b);
        l->n = na + nb;
        *out = (jv){.t = JV_LIST, .u.l = l, .tuple = x->tuple && y->tuple};
        return 0;
    }
    if (n->op == JOP_MUL && ((x->t == JV_STR && (y->t == JV_INT || y->t == JV_BOOL)) ||
                             (y->t == JV_STR && (x->t == JV_INT || x->t == JV_BOOL)))) {
        const jv *s = x->t == JV_STR ? x : y;
        int64_t k = jv_inum(x->t == JV_STR ? y : x);
        if (k <= 0) {
            *out = jv_str("", 0);
            return 0;
        }
        if ((uint64_t)k * s->u.s.n > MAX_OUTPUT)
            return jr_fail(r, n, "a repeated string longer than %u MiB", MAX_OUTPUT >> 20);
        char *p = ja_alloc(&r->a, (size_t)k * s->u.s.n + 1);
        if (!p)
            return jr_oom(r, n);
        for (int64_t i = 0; i < k; i++)
            memcpy(p + (size_t)i * s->u.s.n, s->u.s.p, s->u.s.n);
        *out = jv_str(p, (size_t)k * s->u.s.n);
        return 0;
    }
    if (n->op == JOP_MUL && ((jv_is_list(x) && (y->t == JV_INT || y->t == JV_BOOL)) ||
                             (jv_is_list(y) && (x->t == JV_INT || x->t == JV_BOOL)))) {
        const jv *l = jv_is_list(x) ? x : y;
        int64_t k = jv_inum(jv_is_list(x) ? y : x);
        jv *items;
        size_t cnt;
        if (jv_items(r, n, l, &items, &cnt))
            return -1;
        if (k < 0)
            k = 0;
        if ((uint64_t)k * cnt > MAX_RANGE)
            return jr_fail(r, n, "a repeated list of more than %d items", MAX_RANGE);
        jlistv *out_l = jv_new_list(r, (size_t)k * cnt);
        if (!out_l)
            return jr_oom(r, n);
        for (int64_t i = 0; i < k; i++)
            for (size_t j = 0; j < cnt; j++)
                out_l->v[out_l->n++] = items[j];
        *out = (jv){.t = JV_LIST, .u.l = out_l, .tuple = l->tuple};
        return 0;
    }
    static const char *const ops[] = {"", "+", "-", "*", "/", "//", "%", "**"};
    if (!jv_is_num(x) || !jv_is_num(y))
        return jr_fail(r, n, "unsupported operand types for %s: %s and %s", ops[n->op], jv_type_name(x),
                       jv_type_name(y));
    int ints = x->t != JV_FLOAT && y->t != JV_FLOAT;
    double a = jv_num(x), b = jv_num(y);
    if (ints && n->op != JOP_DIV) {
        int64_t i = jv_inum(x), j = jv_inum(y), v;
        switch (n->op) {
        case JOP_ADD:
            if (__builtin_add_overflow(i, j, &v))
                return jr_fail(r, n, "integer overflow");
            break;
        case JOP_SUB:
            if (__builtin_sub_overflow(i, j, &v))
                return jr_fail(r, n, "integer overflow");
            break;
        case JOP_MUL:
            if (__builtin_mul_overflow(i, j, &v))
                return jr_fail(r, n, "integer overflow");
            break;
        case JOP_FLOORDIV:
        case JOP_MOD:
            if (!j)
                return jr_fail(r, n, "integer division or modulo by zero");
            if (i == INT64_MIN && j == -1)
                return jr_fail(r, n, "integer overflow");
            v = n->op == JOP_FLOORDIV ? i / j - ((i % j != 0) && ((i < 0) != (j < 0))) : i % j;
            if (n->op == JOP_MOD && v && ((v < 0) != (j < 0)))
                v += j;
            break;
        default: /* JOP_POW */
            if (j < 0 && !i)
                return jr_fail(r, n, "0 cannot be raised to a negative power");
            if (j < 0) {
                *out = jv_float(pow(a, b));
                return 0;
            }
            v = 1;
            for (int64_t k = 0; k < j; k++)
                if (__builtin_mul_overflow(v, i, &v))
                    return jr_fail(r, n, "integer overflow");
                else if (v == 0 || v == 1 || (v == -1 && k > 64))
                    break;
            if (v == -1 && (j % 2) == 0)
                v = 1;
        }
        *out = jv_int(v);
        return 0;
    }
    double v;
    switch (n->op) {
    case JOP_ADD: v = a + b; break;
    case JOP_SUB: v = a - b; break;
    case JOP_MUL: v = a * b; break;
    case JOP_DIV:
        if (b == 0)
            return jr_fail(r, n, "division by zero");
        v = a / b;
        break;
    case JOP_FLOORDIV:
        if (b == 0)
            return jr_fail(r, n, "float floor division by zero");
        v = floor(a / b);
        break;
    case JOP_MOD:
        if (b == 0)
            return jr_fail(r, n, "float modulo");
        v = fmod(a, b);
        if (v && ((v < 0) != (b < 0)))
            v += b;
        break;
    default:
        /* Python raises where C's pow gives an infinity (or NaN) of finite numbers */
        if (a == 0 && b < 0)
            return jr_fail(r, n, "0.0 cannot be raised to a negative power");
        v = pow(a, b);
        if (isfinite(a) && isfinite(b) && !isfinite(v))
            return jr_fail(r, n, isnan(v) ? "a negative number cannot be raised to a fractional power here"
                                          : "numerical result out of range");
    }
    *out = jv_float(v);
    return 0;
}
