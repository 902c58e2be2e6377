/* jinja_render: runs a compiled template (jinja_parse.c) over JSON variables.
 *
 * Values are Python's as Jinja2 sees them (jinja_value.h). The request's JSON
 * is read in place; lists and dicts the template builds live in the
 * rendering's arena. Scoping is Jinja2's: each loop iteration has its own
 * frame (a set inside it does not survive the iteration), a macro sees the
 * top-level names as they are when it is called, and namespaces are the way
 * to carry state out of a loop. Filters, tests, methods and functions are in
 * jinja_builtins.c. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "core/base/progress.h"
#include "core/text/jinja_value.h"

/* ---- names ----------------------------------------------------------------- */

static const char *const builtins[] = {"range", "namespace", "raise_exception", "strftime_now", "dict", NULL};

static int frame_set(rs *r, const jnode *at, frame *f, const char *name, jv v)
{
    for (int i = f->n - 1; i >= 0; i--)
        if (!strcmp(f->names[i], name)) {
            f->vals[i] = v;
            return 0;
        }
    if (f->n == f->cap) {
        int cap = f->cap ? f->cap * 2 : 8;
        const char **nn = ja_alloc(&r->a, (size_t)cap * sizeof *nn);
        jv *nv = ja_alloc(&r->a, (size_t)cap * sizeof *nv);
        if (!nn || !nv)
            return jr_oom(r, at);
        if (f->n) {
            memcpy(nn, f->names, (size_t)f->n * sizeof *nn);
            memcpy(nv, f->vals, (size_t)f->n * sizeof *nv);
        }
        f->names = nn;
        f->vals = nv;
        f->cap = cap;
    }
    f->names[f->n] = name;
    f->vals[f->n++] = v;
    return 0;
}

static jv lookup(rs *r, frame *f, const char *name)
{
    for (; f; f = f->parent)
        for (int i = f->n - 1; i >= 0; i--)
            if (!strcmp(f->names[i], name))
                return f->vals[i];
    if (r->ctx) {
        const cJSON *m = jv_json_member(r->ctx, name, strlen(name));
        if (m)
            return jv_from_json(r, m);
    }
    for (int i = 0; builtins[i]; i++)
        if (!strcmp(builtins[i], name))
            return (jv){.t = JV_FUNC, .name = builtins[i]};
    return jv_undef(name);
}

static int ev(rs *r, frame *f, const jnode *n, jv *out);
static int run(rs *r, frame *f, const jnodes *body, strbuf *out);
static int call_value(rs *r, const jnode *n, const jv *callee, const args *a, jv *out);

static int eval_args(rs *r, frame *f, const jnode *n, args *a)
{
    memset(a, 0, sizeof *a);
    a->pos = ja_alloc(&r->a, (size_t)(n->args.n + 1) * sizeof *a->pos);
    a->kw = ja_alloc(&r->a, (size_t)(n->kwargs.n + 1) * sizeof *a->kw);
    a->kwv = ja_alloc(&r->a, (size_t)(n->kwargs.n + 1) * sizeof *a->kwv);
    if (!a->pos || !a->kw || !a->kwv)
        return jr_oom(r, n);
    for (int i = 0; i < n->args.n; i++)
        if (ev(r, f, n->args.v[i], &a->pos[a->npos++]))
            return -1;
    for (int i = 0; i < n->kwargs.n; i++) {
        a->kw[i] = n->kwargs.v[i]->str;
        if (ev(r, f, n->kwargs.v[i]->a, &a->kwv[a->nkw++]))
            return -1;
    }
    return 0;
}

static const char *const str_methods[] = {"capitalize", "count",  "endswith", "find",   "join",
                                          "lower",      "lstrip", "replace",  "rstrip", "split",
                                          "startswith", "strip",  "title",    "upper",  NULL};
static const char *const dict_methods[] = {"get", "items", "keys", "values", NULL};
static const char *const list_methods[] = {"append", "count", "index", "pop", NULL};

static int names_has(const char *const *l, const char *s, size_t n)
{
    for (; *l; l++)
        if (strlen(*l) == n && !memcmp(*l, s, n))
            return 1;
    return 0;
}

static int bound(rs *r, const jnode *at, const jv *self, const char *name, jv *out)
{
    jmethod *m = ja_alloc(&r->a, sizeof *m);
    if (!m)
        return jr_oom(r, at);
    m->self = *self;
    *out = (jv){.t = JV_METHOD, .name = name, .u.meth = m};
    return 0;
}

/* Items up to this index of a context array are reached by walking its list;
 * past it the array is read once into the rendering's arena (few arrays are
 * that long, so the table stays short). */
#define SHORT_WALK 32

static int index_long_array(rs *r, const jnode *at, const cJSON *arr, int64_t i, jv *out)
{
    size_t k = 0;
    while (k < r->n_idx && r->idx[k].json != arr)
        k++;
    if (k == r->n_idx) {
        if (r->n_idx == r->cap_idx) {
            size_t cap = r->cap_idx ? r->cap_idx * 2 : 8;
            indexed *t = ja_alloc(&r->a, cap * sizeof *t);
            if (!t)
                return jr_oom(r, at);
            if (r->n_idx)
                memcpy(t, r->idx, r->n_idx * sizeof *t);
            r->idx = t;
            r->cap_idx = cap;
        }
        jv view = {.t = JV_JSON, .u.j = arr};
        indexed *e = &r->idx[r->n_idx];
        if (jv_items(r, at, &view, &e->items, &e->n))
            return -1;
        e->json = arr;
        r->n_idx++;
    }
    *out = (size_t)i < r->idx[k].n ? r->idx[k].items[i] : jv_undef("item");
    return 0;
}

/* obj.name (attribute first, as Jinja2's getattr) or obj[key] (item first). */
int jr_member(rs *r, const jnode *at, const jv *obj, const jv *key, int attr, jv *out)
{
    if (obj->t == JV_UNDEF)
        return jr_fail(r, at, "'%s' is undefined", obj->name ? obj->name : "value");
    if (key->t == JV_STR) {
        const char *k = key->u.s.p;
        size_t kn = key->u.s.n;
        const char *const *methods = obj->t == JV_STR                                          ? str_methods
                                     : jv_is_dict(obj) && !(obj->t == JV_DICT && obj->u.d->ns) ? dict_methods
                                     : jv_is_list(obj)                                         ? list_methods
                                                                                               : NULL;
        if (attr && methods && names_has(methods, k, kn))
            return bound(r, at, obj, ja_strdup(&r->a, k, kn), out);
        if (obj->t == JV_LOOP) {
            jloop *l = obj->u.loop;
            static const char *const fields[] = {"index",  "index0", "revindex", "revindex0", "first",
                                                 "last",   "length", "previtem", "nextitem",  "depth",
                                                 "depth0", "cycle",  "changed", NULL};
            int which = -1;
            for (int i = 0; fields[i]; i++)
                if (strlen(fields[i]) == kn && !memcmp(fields[i], k, kn))
                    which = i;
            switch (which) {
            case 0: *out = jv_int((int64_t)l->index0 + 1); return 0;
            case 1: *out = jv_int((int64_t)l->index0); return 0;
            case 2: *out = jv_int((int64_t)(l->length - l->index0)); return 0;
            case 3: *out = jv_int((int64_t)(l->length - l->index0 - 1)); return 0;
            case 4: *out = jv_bool(l->index0 == 0); return 0;
            case 5: *out = jv_bool(l->index0 + 1 == l->length); return 0;
            case 6: *out = jv_int((int64_t)l->length); return 0;
            case 7: *out = l->index0 ? l->items[l->index0 - 1] : jv_undef("previtem"); return 0;
            case 8:
                *out = l->index0 + 1 < l->length ? l->items[l->index0 + 1] : jv_undef("nextitem");
                return 0;
            case 9: *out = jv_int(1); return 0;
            case 10: *out = jv_int(0); return 0;
            case 11: return bound(r, at, obj, "cycle", out);
            case 12: return bound(r, at, obj, "changed", out);
            default: {   /* undefined, as Jinja2's: printed, nothing; called, an error naming it */
                char *name = ja_alloc(&r->a, kn + 6);
                if (!name)
                    return jr_oom(r, at);
                memcpy(name, "loop.", 5);
                memcpy(name + 5, k, kn);
                *out = jv_undef(name);
                return 0;
            }
            }
        }
        if (jv_is_dict(obj)) {
            if (!jv_dict_get(r, obj, k, kn, out)) {
                if (!attr && methods && names_has(methods, k, kn))
                    return bound(r, at, obj, ja_strdup(&r->a, k, kn), out);
                *out = jv_undef(ja_strdup(&r->a, k, kn));
            }
            return 0;
        }
        if (!attr && methods && names_has(methods, k, kn))
            return bound(r, at, obj, ja_strdup(&r->a, k, kn), out);
        /* a string's or list's method this engine lacks ("'str.format' is
         * undefined" when called, rather than a name that reads as the
         * template's own mistake) */
        const char *type = obj->t == JV_STR ? "str." : jv_is_list(obj) ? "list." : "";
        char *name = ja_alloc(&r->a, strlen(type) + kn + 1);
        if (!name)
            return jr_oom(r, at);
        memcpy(name, type, strlen(type));
        memcpy(name + strlen(type), k, kn);
        *out = jv_undef(name);
        return 0;
    }
    if ((key->t == JV_INT || key->t == JV_BOOL) && obj->t == JV_JSON) {
        /* the request's array read in place (messages[i] in a loop must not copy it each time) */
        int64_t i = jv_inum(key);
        if (i < 0)
            i += (int64_t)jv_len(obj);
        if (i >= SHORT_WALK)
            return index_long_array(r, at, obj->u.j, i, out);
        const cJSON *c = i >= 0 ? obj->u.j->child : NULL;
        for (int64_t k = 0; c && k < i; k++)
            c = c->next;
        *out = c ? jv_from_json(r, c) : jv_undef("item");
        return 0;
    }
    if ((key->t == JV_INT || key->t == JV_BOOL) && (jv_is_list(obj) || obj->t == JV_STR)) {
        jv *items;
        size_t n;
        if (jv_items(r, at, obj, &items, &n))
            return -1;
        int64_t i = jv_inum(key);
        if (i < 0)
            i += (int64_t)n;
        *out = i >= 0 && (size_t)i < n ? items[i] : jv_undef("item");
        return 0;
    }
    *out = jv_undef("item");
    return 0;
}

/* Python slice bounds over n items. */
static void slice_bounds(int64_t n, const jv *lo, const jv *hi, int64_t step, int64_t *start, int64_t *stop)
{
    int64_t def_start = step > 0 ? 0 : n - 1, def_stop = step > 0 ? n : -1;
    int64_t b[2] = {def_start, def_stop};
    const jv *in[2] = {lo, hi};
    for (int k = 0; k < 2; k++) {
        if (!in[k] || in[k]->t == JV_NONE)
            continue;
        int64_t v = jv_inum(in[k]);
        if (v < 0)
            v += n;
        if (step > 0)
            v = v < 0 ? 0 : v > n ? n : v;
        else
            v = v < -1 ? -1 : v > n - 1 ? n - 1 : v;
        b[k] = v;
    }
    *start = b[0];
    *stop = b[1];
}

static int eval_slice(rs *r, frame *f, const jnode *n, jv *out)
{
    jv obj, parts[3];
    const jv *p[3] = {0};
    if (ev(r, f, n->a, &obj))
        return -1;
    for (int k = 0; k < 3; k++) {
        if (!n->args.v[k])
            continue;
        if (ev(r, f, n->args.v[k], &parts[k]))
            return -1;
        if (parts[k].t != JV_NONE && jr_want_int(r, n, &parts[k], "a slice index"))
            return -1;
        p[k] = &parts[k];
    }
    int64_t step = p[2] && p[2]->t != JV_NONE ? jv_inum(p[2]) : 1;
    if (!step)
        return jr_fail(r, n, "slice step cannot be zero");
    jv *items;
    size_t cnt;
    if (!jv_is_list(&obj) && obj.t != JV_STR)
        return obj.t == JV_UNDEF ? jr_fail(r, n, "'%s' is undefined", obj.name ? obj.name : "value")
                                 : jr_fail(r, n, "a %s cannot be sliced", jv_type_name(&obj));
    if (jv_items(r, n, &obj, &items, &cnt))
        return -1;
    int64_t start, stop;
    slice_bounds((int64_t)cnt, p[0], p[1], step, &start, &stop);
    jlistv *l = jv_new_list(r, 0);
    if (!l)
        return jr_oom(r, n);
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
        if (jv_list_push(r, l, items[i]))
            return jr_oom(r, n);
    if (obj.t != JV_STR) {
        *out = (jv){.t = JV_LIST, .u.l = l, .tuple = obj.tuple};
        return 0;
    }
    strbuf b = {0};
    for (size_t i = 0; i < l->n; i++)
        jr_put(&b, l->v[i].u.s.p, l->v[i].u.s.n);
    return jr_text(r, n, &b, out);
}

/* One more expression or statement, held to MAX_STEPS; and every 64 steps
 * to the deadline, as one step may be a built-in's search through a string
 * of many megabytes. */
int jr_past_deadline(rs *r, const jnode *at)
{
    return now_seconds() > r->deadline ? jr_fail(r, at, "the template ran longer than %.0f seconds", MAX_SECONDS)
                                       : 0;
}

static int step(rs *r, const jnode *n)
{
    if (++r->steps > MAX_STEPS)
        return jr_fail(r, n, "the template ran more than %ld steps", MAX_STEPS);
    return r->steps & 63 ? 0 : jr_past_deadline(r, n);
}

static int ev(rs *r, frame *f, const jnode *n, jv *out)
{
    if (step(r, n))
        return -1;
    switch (n->kind) {
    case JN_STR: *out = jv_str(n->str, n->len); return 0;
    case JN_INT: *out = jv_int(n->ival); return 0;
    case JN_FLOAT: *out = jv_float(n->fval); return 0;
    case JN_BOOL: *out = jv_bool((int)n->ival); return 0;
    case JN_NONE: *out = (jv){.t = JV_NONE}; return 0;
    case JN_NAME: *out = lookup(r, f, n->str); return 0;
    case JN_LIST:
    case JN_TUPLE: {
        jlistv *l = jv_new_list(r, (size_t)n->args.n);
        if (!l)
            return jr_oom(r, n);
        for (int i = 0; i < n->args.n; i++)
            if (ev(r, f, n->args.v[i], &l->v[l->n++]))
                return -1;
        *out = (jv){.t = JV_LIST, .u.l = l, .tuple = n->kind == JN_TUPLE};
        return 0;
    }
    case JN_DICT: {
        jdictv *d = jv_new_dict(r);
        if (!d)
            return jr_oom(r, n);
        for (int i = 0; i + 1 < n->args.n; i += 2) {
            jv k, v;
            if (ev(r, f, n->args.v[i], &k) || ev(r, f, n->args.v[i + 1], &v))
                return -1;
            if (k.t != JV_STR)
                return jr_fail(r, n, "dict keys must be strings here, not %s", jv_type_name(&k));
            if (jv_dict_set(r, d, k.u.s.p, k.u.s.n, v))
                return jr_oom(r, n);
        }
        *out = (jv){.t = JV_DICT, .u.d = d};
        return 0;
    }
    case JN_ATTR: {
        jv obj;
        if (ev(r, f, n->a, &obj))
            return -1;
        jv key = jv_str(n->str, strlen(n->str));
        return jr_member(r, n, &obj, &key, 1, out);
    }
    case JN_ITEM: {
        jv obj, key;
        if (ev(r, f, n->a, &obj) || ev(r, f, n->b, &key))
            return -1;
        return jr_member(r, n, &obj, &key, 0, out);
    }
    case JN_SLICE: return eval_slice(r, f, n, out);
    case JN_CALL: {
        jv callee;
        args a;
        if (ev(r, f, n->a, &callee) || eval_args(r, f, n, &a))
            return -1;
        return call_value(r, n, &callee, &a, out);
    }
    case JN_FILTER: {
        jv v;
        args a;
        if (ev(r, f, n->a, &v) || eval_args(r, f, n, &a))
            return -1;
        return jr_filter(r, n, n->str, &v, &a, out);
    }
    case JN_TEST: {
        jv v;
        args a;
        int res;
        if (ev(r, f, n->a, &v) || eval_args(r, f, n, &a) || jr_test(r, n, n->str, &v, &a, &res))
            return -1;
        *out = jv_bool(res != (int)n->ival);
        return 0;
    }
    case JN_NEG:
    case JN_POS: {
        jv v;
        if (ev(r, f, n->a, &v))
            return -1;
        if (!jv_is_num(&v))
            return jr_fail(r, n, "bad operand type for unary %c: %s", n->kind == JN_NEG ? '-' : '+',
                           jv_type_name(&v));
        if (n->kind == JN_POS)
            *out = v.t == JV_BOOL ? jv_int(v.u.b) : (jv){.t = v.t, .u = v.u};
        else if (v.t == JV_FLOAT)
            *out = jv_float(-v.u.f);
        else if (jv_inum(&v) == INT64_MIN)
            return jr_fail(r, n, "integer overflow");
        else
            *out = jv_int(-jv_inum(&v));
        return 0;
    }
    case JN_NOT: {
        jv v;
        if (ev(r, f, n->a, &v))
            return -1;
        *out = jv_bool(!jv_truthy(&v));
        return 0;
    }
    case JN_AND:
    case JN_OR: { /* Python's: the deciding operand itself */
        if (ev(r, f, n->a, out))
            return -1;
        if (jv_truthy(out) == (n->kind == JN_OR))
            return 0;
        return ev(r, f, n->b, out);
    }
    case JN_BINOP: {
        jv x, y;
        if (ev(r, f, n->a, &x) || ev(r, f, n->b, &y))
            return -1;
        return jv_binop(r, n, &x, &y, out);
    }
    case JN_COMPARE: {
        jv x, y;
        int res;
        if (ev(r, f, n->a, &x) || ev(r, f, n->b, &y) || jv_compare(r, n, &x, &y, &res))
            return -1;
        *out = jv_bool(res);
        return 0;
    }
    case JN_COND: {
        jv c;
        if (ev(r, f, n->a, &c))
            return -1;
        if (jv_truthy(&c))
            return ev(r, f, n->b, out);
        if (n->c)
            return ev(r, f, n->c, out);
        *out = jv_undef("value");
        return 0;
    }
    default: return jr_fail(r, n, "not an expression");
    }
}

/* ---- functions and methods --------------------------------------------------- */

static int call_macro(rs *r, const jnode *at, const jnode *m, const args *a, jv *out)
{
    if (r->depth >= MAX_CALL_DEPTH)
        return jr_fail(r, at, "macro calls nest more than %d deep", MAX_CALL_DEPTH);
    if (a->npos > m->nnames)
        return jr_fail(r, at, "macro '%s' takes %d arguments, %d given", m->str, m->nnames, a->npos);
    frame *f = ja_alloc(&r->a, sizeof *f);
    if (!f)
        return jr_oom(r, at);
    f->parent = r->globals;
    for (int k = 0; k < a->nkw; k++) {
        int known = 0;
        for (int i = 0; i < m->nnames; i++)
            known |= !strcmp(m->names[i], a->kw[k]);
        if (!known)
            return jr_fail(r, at, "macro '%s' has no parameter '%s'", m->str, a->kw[k]);
    }
    for (int i = 0; i < m->nnames; i++) {
        const jv *given = jr_arg(a, i, m->names[i]);
        jv v;
        if (given)
            v = *given;
        else if (m->args.v[i]) {
            if (ev(r, f, m->args.v[i], &v))
                return -1;
        } else
            v = jv_undef(m->names[i]);
        if (frame_set(r, at, f, m->names[i], v))
            return -1;
    }
    strbuf b = {0};
    r->depth++;
    int rc = run(r, f, &m->body, &b);
    r->depth--;
    if (rc < 0) {
        free(b.p);
        return -1;
    }
    return jr_text(r, at, &b, out);
}

static int call_value(rs *r, const jnode *n, const jv *callee, const args *a, jv *out)
{
    switch (callee->t) {
    case JV_MACRO: return call_macro(r, n, callee->u.m, a, out);
    case JV_FUNC: return jr_call_function(r, n, callee->name, a, out);
    case JV_METHOD: return jr_call_method(r, n, &callee->u.meth->self, callee->name, a, out);
    case JV_UNDEF: return jr_fail(r, n, "'%s' is undefined", callee->name ? callee->name : "value");
    default: return jr_fail(r, n, "a %s is not callable", jv_type_name(callee));
    }
}

/* ---- statements ----------------------------------------------------------------- */

enum { RUN_OK = 0, RUN_BREAK = 1, RUN_CONTINUE = 2 };

static int bind_targets(rs *r, const jnode *n, frame *f, const jv *item)
{
    if (n->nnames == 1)
        return frame_set(r, n, f, n->names[0], *item);
    jv *parts;
    size_t k;
    if (!jv_is_list(item) && item->t != JV_STR)
        return jr_fail(r, n, "cannot unpack a %s into %d names", jv_type_name(item), n->nnames);
    if (jv_items(r, n, item, &parts, &k))
        return -1;
    if (k != (size_t)n->nnames)
        return jr_fail(r, n, "cannot unpack %zu values into %d names", k, n->nnames);
    for (int i = 0; i < n->nnames; i++)
        if (frame_set(r, n, f, n->names[i], parts[i]))
            return -1;
    return 0;
}

static int run_for(rs *r, frame *f, const jnode *n, strbuf *out)
{
    jv seq;
    if (ev(r, f, n->a, &seq))
        return -1;
    jv *items;
    size_t cnt;
    if (jv_is_dict(&seq) || jv_is_list(&seq) || seq.t == JV_STR || seq.t == JV_UNDEF) {
        if (jv_items(r, n, &seq, &items, &cnt))
            return -1;
    } else {
        return jr_fail(r, n, "'%s' object is not iterable", jv_type_name(&seq));
    }
    if (n->b) { /* "for x in xs if cond": filtered first, so loop.* counts what is kept */
        jv *kept = ja_alloc(&r->a, (cnt + 1) * sizeof *kept);
        if (!kept)
            return jr_oom(r, n);
        size_t k = 0;
        for (size_t i = 0; i < cnt; i++) {
            frame it = {.parent = f};
            jv c;
            if (bind_targets(r, n, &it, &items[i]) || ev(r, &it, n->b, &c))
                return -1;
            if (jv_truthy(&c))
                kept[k++] = items[i];
        }
        items = kept;
        cnt = k;
    }
    jloop loop = {.items = items, .length = cnt};
    int completed = 0; /* Jinja2 runs the else block unless an iteration reached its body's end */
    for (size_t i = 0; i < cnt; i++) {
        frame it = {.parent = f};
        loop.index0 = i;
        if (bind_targets(r, n, &it, &items[i]) ||
            frame_set(r, n, &it, "loop", (jv){.t = JV_LOOP, .u.loop = &loop}))
            return -1;
        int rc = run(r, &it, &n->body, out);
        if (rc < 0)
            return -1;
        if (rc == RUN_BREAK)
            break;
        completed |= rc == RUN_OK;
    }
    if (!completed)
        return run(r, f, &n->orelse, out) < 0 ? -1 : RUN_OK;
    return RUN_OK;
}

static int run_set(rs *r, frame *f, const jnode *n)
{
    jv v;
    if (n->kind == JN_SET_BLOCK) {
        strbuf b = {0};
        int rc = run(r, f, &n->body, &b);
        if (rc < 0) {
            free(b.p);
            return -1;
        }
        if (jr_text(r, n, &b, &v))
            return -1;
    } else if (ev(r, f, n->a, &v)) {
        return -1;
    }
    if (n->nnames == 1 || n->ival)
        return bind_targets(r, n, f, &v);
    jv ns = lookup(r, f, n->names[0]);
    if (ns.t != JV_DICT || !ns.u.d->ns)
        return jr_fail(r, n, "'set %s.%s': '%s' is not a namespace()", n->names[0], n->names[1], n->names[0]);
    return jv_dict_set(r, ns.u.d, n->names[1], strlen(n->names[1]), v) ? jr_oom(r, n) : 0;
}

/* {% filter %}: the body's text through each filter in turn, then printed. */
static int run_filter_block(rs *r, frame *f, const jnode *n, strbuf *out)
{
    strbuf b = {0};
    jv v;
    int rc = run(r, f, &n->body, &b); /* (a break or continue inside ends the body, and goes on out) */
    if (rc < 0) {
        free(b.p);
        return -1;
    }
    if (jr_text(r, n, &b, &v))
        return -1;
    for (int i = 0; i < n->args.n; i++) {
        args a;
        if (eval_args(r, f, n->args.v[i], &a) || jr_filter(r, n->args.v[i], n->args.v[i]->str, &v, &a, &v))
            return -1;
    }
    if (v.t != JV_NONE)
        jv_print(r, out, &v, 0, 0);
    return rc;
}

static int run(rs *r, frame *f, const jnodes *body, strbuf *out)
{
    for (int i = 0; i < body->n; i++) {
        const jnode *n = body->v[i];
        if (step(r, n))
            return -1;
        if (out->failed)
            return jr_fail(r, n, "the template printed more than %u MiB", MAX_OUTPUT >> 20);
        int rc = RUN_OK;
        switch (n->kind) {
        case JN_TEXT: jr_put(out, n->str, n->len); break;
        case JN_OUTPUT: {
            jv v;
            if (ev(r, f, n->a, &v))
                return -1;
            if (v.t != JV_NONE) /* a printed None is "" (jinja.h) */
                jv_print(r, out, &v, 0, 0);
            break;
        }
        case JN_IF: {
            jv c;
            if (ev(r, f, n->a, &c))
                return -1;
            rc = run(r, f, jv_truthy(&c) ? &n->body : &n->orelse, out);
            break;
        }
        case JN_FOR: rc = run_for(r, f, n, out); break;
        case JN_SET:
        case JN_SET_BLOCK: rc = run_set(r, f, n); break;
        case JN_FILTER_BLOCK: rc = run_filter_block(r, f, n, out); break;
        case JN_MACRO: rc = frame_set(r, n, f, n->str, (jv){.t = JV_MACRO, .u.m = n}); break;
        case JN_BREAK: return RUN_BREAK;
        case JN_CONTINUE: return RUN_CONTINUE;
        default: return jr_fail(r, n, "not a statement");
        }
        if (rc)
            return rc;
    }
    return RUN_OK;
}

int jinja_render(const jinja_template *t, const cJSON *ctx, char **out, size_t *out_len, errbuf *e)
{
    *out = NULL;
    if (out_len)
        *out_len = 0;
    if (ctx && !cJSON_IsObject(ctx))
        return err_set(e, "chat template: the variables must be a JSON object");
    rs r = {.e = e, .ctx = ctx, .a = {.limit = MAX_MEMORY}, .deadline = now_seconds() + MAX_SECONDS};
    frame globals = {0};
    r.globals = &globals;
    strbuf b = {0};
    int rc = run(&r, &globals, &t->body, &b);
    if (rc >= 0 && b.failed)
        rc = jr_fail(&r, NULL, "the template printed more than %u MiB", MAX_OUTPUT >> 20);
    ja_free(&r.a);
    if (rc < 0) {
        free(b.p);
        return -1;
    }
    if (!b.p && !(b.p = calloc(1, 1)))
        return err_set(e, "chat template: out of memory");
    *out = b.p;
    if (out_len)
        *out_len = b.len;
    return 0;
}
