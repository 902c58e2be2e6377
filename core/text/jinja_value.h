/* jinja_value: the template engine's values and the state of one rendering,
 * shared by the evaluator (jinja_render.c), the values' operations
 * (jinja_value.c) and the filters, tests, methods and functions
 * (jinja_builtins.c). Internal to the engine: see jinja.h. */
#ifndef MOETIER_JINJA_VALUE_H
#define MOETIER_JINJA_VALUE_H

#include <cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/strbuf.h"
#include "core/text/jinja_internal.h"

#define MAX_OUTPUT (64u << 20)  /* bytes a rendering may print */
#define MAX_MEMORY (256u << 20) /* bytes of values a rendering may build */
#define MAX_STEPS 10000000L     /* expressions and statements evaluated */
#define MAX_SECONDS 10.0        /* of the clock (a built-in's work is no step) */
#define MAX_CALL_DEPTH 200      /* macro calls inside macro calls */
#define MAX_RANGE 100000        /* items of one range() or repeated list (as Jinja2's sandbox) */

/* ---- values ---------------------------------------------------------------- */

typedef enum jvt {
    JV_UNDEF,
    JV_NONE,
    JV_BOOL,
    JV_INT,
    JV_FLOAT,
    JV_STR,
    JV_LIST,
    JV_DICT,
    JV_JSON,
    JV_MACRO,
    JV_FUNC,
    JV_METHOD,
    JV_LOOP,
} jvt;

typedef struct jlistv jlistv;
typedef struct jdictv jdictv;
typedef struct jloop jloop;
typedef struct jmethod jmethod;

typedef struct jv {
    jvt t;
    int tuple;        /* a LIST made as a tuple (printed "(a, b)") */
    const char *name; /* UNDEF: the name that was missing; INT/FLOAT: JSON spelling; FUNC/METHOD: name */
    union {
        int b;
        int64_t i;
        double f;
        struct {
            const char *p;
            size_t n;
        } s;
        jlistv *l;
        jdictv *d;
        const cJSON *j; /* an array or object of the context */
        const jnode *m; /* a macro */
        jmethod *meth;
        jloop *loop;
    } u;
} jv;

struct jlistv {
    jv *v;
    size_t n, cap;
};

struct jdictv {
    const char **k;
    size_t *kn;
    jv *v;
    size_t n, cap;
    int ns; /* a namespace(): attributes may be set */
};

struct jmethod {
    jv self;
};

struct jloop {
    const jv *items;
    size_t index0, length;
    const jv *changed_last;     /* loop.changed's values the last time, NULL before its first call */
    size_t changed_n;
};

/* ---- the rendering's state ------------------------------------------------- */

typedef struct frame frame;
struct frame {
    frame *parent;
    const char **names;
    jv *vals;
    int n, cap;
};

typedef struct mutated {
    const cJSON *json; /* an array of the context ... */
    jlistv *list;      /* ... that the template changed: its copy, seen everywhere from now on */
} mutated;

typedef struct indexed {
    const cJSON *json; /* a long array of the context indexed by the template ... */
    jv *items;         /* ... read once into an array, so that x[i] in a loop is not a walk */
    size_t n;
} indexed;

typedef struct rs {
    jarena a;
    mutated *mut;
    size_t n_mut, cap_mut;
    indexed *idx;
    size_t n_idx, cap_idx;
    errbuf *e;
    int failed;
    const cJSON *ctx;
    frame *globals;
    long steps;
    double deadline;            /* now_seconds() at which the rendering gives up */
    int depth;
} rs;

typedef struct args {
    jv *pos;
    int npos;
    const char **kw;
    jv *kwv;
    int nkw;
} args;

/* ---- jinja_value.c: errors, output, constructors, access, Python's operators */

/* -1 with the error when the rendering is past its deadline (MAX_SECONDS):
 * for built-ins whose own work grows faster than their input */
int jr_past_deadline(rs *r, const jnode *at);
int jr_fail(rs *r, const jnode *at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int jr_fail(rs *r, const jnode *at, const char *fmt, ...);
int jr_oom(rs *r, const jnode *at);
void jr_put(strbuf *b, const char *s, size_t n);
void jr_puts(strbuf *b, const char *s);
int jr_text(rs *r, const jnode *at, strbuf *b, jv *out);
jv jv_str(const char *p, size_t n);
jv jv_int(int64_t i);
jv jv_float(double f);
jv jv_bool(int b);
jv jv_undef(const char *name);
jlistv *jv_new_list(rs *r, size_t cap);
int jv_list_push(rs *r, jlistv *l, jv v);
jdictv *jv_new_dict(rs *r);
int jv_dict_set(rs *r, jdictv *d, const char *k, size_t kn, jv v);
jv jv_from_json(const rs *r, const cJSON *j);
const cJSON *jv_json_member(const cJSON *o, const char *k, size_t kn);
int jv_is_list(const jv *v);
int jv_is_dict(const jv *v);
int jv_is_num(const jv *v);
double jv_num(const jv *v);
int64_t jv_inum(const jv *v);
const char *jv_type_name(const jv *v);
int jv_items(rs *r, const jnode *at, const jv *v, jv **items, size_t *n);
int jv_dict_get(const rs *r, const jv *d, const char *k, size_t kn, jv *out);
size_t jv_utf8_count(const char *s, size_t n);
size_t jv_len(const jv *v);
int jv_truthy(const jv *v);
void jv_print(rs *r, strbuf *b, const jv *v, int repr, int depth);
int jv_to_str(rs *r, const jnode *at, const jv *v, jv *out);
cJSON *jv_to_cjson(rs *r, const jnode *at, const jv *v, int depth);
int jv_equal(rs *r, const jv *x, const jv *y, int depth);
int jv_order(rs *r, const jv *x, const jv *y);
int jv_contains(rs *r, const jnode *at, const jv *hay, const jv *needle, int *out);
int jv_compare(rs *r, const jnode *n, const jv *x, const jv *y, int *res);
int jv_binop(rs *r, const jnode *n, const jv *x, const jv *y, jv *out);

/* ---- jinja_builtins.c: arguments, functions, methods, filters, tests ------- */

const jv *jr_arg(const args *a, int k, const char *kw);
int jr_want_int(rs *r, const jnode *at, const jv *v, const char *what);
int jr_call_function(rs *r, const jnode *at, const char *name, const args *a, jv *out);
int jr_call_method(rs *r, const jnode *at, const jv *self, const char *name, const args *a, jv *out);
int jr_test(rs *r, const jnode *at, const char *name, const jv *v, const args *a, int *out);
int jr_filter(rs *r, const jnode *at, const char *name, const jv *v, const args *a, jv *out);
/* Python's fmt % arg (arg a tuple of arguments, or one argument). */
int jr_percent_format(rs *r, const jnode *at, const jv *fmt, const jv *arg, jv *out);

/* ---- jinja_render.c: obj.name (attr 1) and obj[key] ------------------------- */

int jr_member(rs *r, const jnode *at, const jv *obj, const jv *key, int attr, jv *out);

#endif
