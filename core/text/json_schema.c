/* json_schema: see json_schema.h. Nodes are kept by index (the array grows
 * while children compile); a $ref'd definition gets its index before its body
 * compiles, so a schema may refer to itself. */
#include "json_schema.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_format.h"

#define MAX_DEFS 256

typedef struct compiler {
    json_schema *s;
    const cJSON *root;
    struct {
        const cJSON *def;
        int node;
    } defs[MAX_DEFS];
    int n_defs;
    int lenient;                /* unknown keywords are left out, not refused */
    double pattern_work;        /* of the patterns and formats compiled: their automata's size */
    errbuf *e;
} compiler;

/* The patterns' and formats' work a schema may take ((256 + positions) x
 * positions each, what an automaton's making grows with: about 1.5 s here),
 * so that one request's schema of thousands cannot hold a thread for long. */
#define MAX_PATTERN_WORK 2e8

static void set_first(js_node *n, int b)
{
    n->first[b >> 3] |= (uint8_t)(1u << (b & 7));
}

static void first_of_types(js_node *n)
{
    if (n->types & JT_OBJECT)
        set_first(n, '{');
    if (n->types & JT_ARRAY)
        set_first(n, '[');
    if (n->types & JT_STRING)
        set_first(n, '"');
    if (n->types & (JT_NUMBER | JT_INTEGER)) {
        set_first(n, '-');
        for (int d = '0'; d <= '9'; d++)
            set_first(n, d);
    }
    if (n->types & JT_BOOLEAN) {
        set_first(n, 't');
        set_first(n, 'f');
    }
    if (n->types & JT_NULL)
        set_first(n, 'n');
}

static int new_node(compiler *c)
{
    json_schema *s = c->s;
    if (s->n == JSON_SCHEMA_MAX_NODES)
        return err_set(c->e, "the schema has more than %d parts", JSON_SCHEMA_MAX_NODES);
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        js_node *nn = realloc(s->node, (size_t)cap * sizeof *nn);
        if (!nn)
            return err_set(c->e, "out of memory for the schema");
        s->node = nn;
        s->cap = cap;
    }
    js_node *n = &s->node[s->n];
    memset(n, 0, sizeof *n);
    n->extra = -1;
    n->max_items = INT_MAX;
    n->max_len = INT_MAX;
    return s->n++;
}

/* n made a node that takes any value: objects any key, arrays any items,
 * strings any length */
static void any_value_node(js_node *n)
{
    memset(n, 0, sizeof *n);
    n->max_items = INT_MAX;
    n->max_len = INT_MAX;
    n->types = JT_ALL;
    n->extra = 0;
    first_of_types(n);
}

/* node 0: any value */
static int any_node(compiler *c)
{
    int i = new_node(c);
    if (i >= 0)
        any_value_node(&c->s->node[i]);
    return i;
}

static int is_annotation(const char *k)
{
    static const char *const names[] = {"title", "description", "default", "examples", "$schema",
                                        "$id", "$comment", "deprecated", "readOnly", "writeOnly",
                                        "$defs", "definitions"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(k, names[i]))
            return 1;
    return 0;
}

static const char *const limits[] = {"minLength", "maxLength", "pattern", "format", "minimum", "maximum",
                                     "exclusiveMinimum", "exclusiveMaximum"};

/* a string's or a number's limit (compile_limits) */
static int is_limit(const char *k)
{
    for (size_t i = 0; i < sizeof limits / sizeof *limits; i++)
        if (!strcmp(k, limits[i]))
            return 1;
    return 0;
}

static int is_taken(const char *k)
{
    static const char *const names[] = {"type", "properties", "required", "additionalProperties",
                                        "items", "minItems", "maxItems", "enum", "const", "anyOf",
                                        "oneOf", "allOf", "$ref", "nullable"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(k, names[i]))
            return 1;
    return is_annotation(k) || is_limit(k);
}

static int compile_at(compiler *c, const cJSON *sch, const char *path, int i);

static int compile(compiler *c, const cJSON *sch, const char *path)
{
    return compile_at(c, sch, path, -1);
}

/* the definition "#/$defs/NAME" (or #/definitions/NAME) names, compiled once */
static int ref_node(compiler *c, const char *ref, const char *path)
{
    const char *name = NULL, *folder = NULL;
    if (!strncmp(ref, "#/$defs/", 8))
        name = ref + 8, folder = "$defs";
    else if (!strncmp(ref, "#/definitions/", 14))
        name = ref + 14, folder = "definitions";
    const cJSON *def = name ? cJSON_GetObjectItemCaseSensitive(
                                  cJSON_GetObjectItemCaseSensitive(c->root, folder), name)
                            : NULL;
    if (!def)
        return err_set(c->e, "%s: '$ref' '%.200s' names no definition of the schema (only "
                       "#/$defs/NAME and #/definitions/NAME are followed)", path, ref);
    for (int i = 0; i < c->n_defs; i++)
        if (c->defs[i].def == def)
            return c->defs[i].node;
    if (c->n_defs == MAX_DEFS)
        return err_set(c->e, "%s: more than %d definitions", path, MAX_DEFS);
    char sub[512];
    snprintf(sub, sizeof sub, "#/%s/%s", folder, name);
    int i = new_node(c);
    if (i < 0)
        return -1;
    c->defs[c->n_defs].def = def;
    c->defs[c->n_defs++].node = i;
    return compile_at(c, def, sub, i);
}

static int type_bits(const cJSON *t, unsigned *out, const char *path, errbuf *e)
{
    static const struct {
        const char *name;
        unsigned bit;
    } types[] = {{"object", JT_OBJECT}, {"array", JT_ARRAY}, {"string", JT_STRING}, {"number", JT_NUMBER},
                 {"integer", JT_INTEGER}, {"boolean", JT_BOOLEAN}, {"null", JT_NULL}};
    const cJSON *one;
    *out = 0;
    if (cJSON_IsString(t)) {
        for (size_t i = 0; i < sizeof types / sizeof *types; i++)
            if (!strcmp(t->valuestring, types[i].name))
                *out = types[i].bit;
        if (*out)
            return 0;
        return err_set(e, "%s: unknown type '%.40s'", path, t->valuestring);
    }
    if (!cJSON_IsArray(t) || !t->child)
        return err_set(e, "%s: 'type' must be a type name or a list of them", path);
    cJSON_ArrayForEach(one, t) {
        unsigned b;
        if (type_bits(one, &b, path, e))
            return -1;
        *out |= b;
    }
    return 0;
}

/* a value's JT_ bits (an integral number's: number and integer) */
static unsigned value_type(const cJSON *v)
{
    if (cJSON_IsNumber(v))
        return JT_NUMBER | (v->valuedouble == floor(v->valuedouble) ? JT_INTEGER : 0);
    return cJSON_IsString(v) ? JT_STRING : cJSON_IsBool(v) ? JT_BOOLEAN : cJSON_IsNull(v) ? JT_NULL
           : cJSON_IsArray(v) ? JT_ARRAY : JT_OBJECT;
}

/* An enum's values (or a const's one value, an array too) of the types
 * given (JT_ALL: no "type"; Pydantic writes one beside its enums): the others
 * are not values. Each is the answer's text as written (json.dumps of it: a
 * number keeps its spelling, so 9007199254740993 is not rounded). */
static int compile_enum(compiler *c, int i, const cJSON *values, int is_const, unsigned types,
                        const char *path)
{
    int n = is_const ? 1 : cJSON_GetArraySize(values);
    if (n < 1 || n > JSON_SCHEMA_MAX_ENUM)
        return err_set(c->e, "%s: an enum of 1 to %d values is taken (%d given)", path,
                       JSON_SCHEMA_MAX_ENUM, n);
    js_node *node = &c->s->node[i];
    node->enum_text = calloc((size_t)n, sizeof *node->enum_text);
    node->enum_len = calloc((size_t)n, sizeof *node->enum_len);
    if (!node->enum_text || !node->enum_len)
        return err_set(c->e, "out of memory for the schema");
    const cJSON *v = is_const ? values : values->child;
    for (int k = 0; k < n; k++, v = v->next) {
        if (!(value_type(v) & types))
            continue;
        char *t;
        size_t len;
        if (chat_json_dump(v, CHAT_JSON_COMPACT, &t, &len, c->e))
            return err_prefix(c->e, "%s: ", path);
        node->enum_text[node->n_enum] = t;
        node->enum_len[node->n_enum++] = len;
        set_first(node, (unsigned char)t[0]);
    }
    if (!node->n_enum)
        return err_set(c->e, "%s: no value of its %s has its type", path, is_const ? "const" : "enum");
    return i;
}

static int compile_any_of(compiler *c, int i, const cJSON *alts, const char *path, const char *kw)
{
    int n = cJSON_IsArray(alts) ? cJSON_GetArraySize(alts) : 0;
    if (n < 1)
        return err_set(c->e, "%s: '%s' must be a non-empty list of schemas", path, kw);
    int *alt = calloc((size_t)n, sizeof *alt);
    if (!alt)
        return err_set(c->e, "out of memory for the schema");
    c->s->node[i].alt = alt;
    const cJSON *a;
    int k = 0;
    cJSON_ArrayForEach(a, alts) {
        char sub[512];
        snprintf(sub, sizeof sub, "%s/%s/%d", path, kw, k);
        int ai = compile(c, a, sub);
        if (ai < 0)
            return -1;
        js_node *node = &c->s->node[i];
        const js_node *an = &c->s->node[ai];
        int alike = 0;
        for (int b = 0; b < 32; b++) {
            alike |= (node->first[b] & an->first[b]) != 0;
            node->first[b] |= an->first[b];
        }
        if (alike && c->lenient) {  /* any value, then */
            free(node->alt);
            any_value_node(node);
            return i;
        }
        if (alike)
            return err_set(c->e, "%s: the alternatives of '%s' begin alike (two can start with "
                           "the same byte), so the answer cannot be held to one as it is "
                           "written", path, kw);
        node->alt[node->n_alt++] = ai;
        k++;
    }
    return i;
}

static int compile_object(compiler *c, int i, const cJSON *sch, const char *path)
{
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(sch, "properties"), *p;
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(sch, "required");
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(sch, "additionalProperties");
    int n = props ? cJSON_GetArraySize(props) : 0;
    if (props && !cJSON_IsObject(props))
        return err_set(c->e, "%s: 'properties' must be an object", path);
    if (n > JSON_SCHEMA_MAX_PROPS)
        return err_set(c->e, "%s: more than %d properties", path, JSON_SCHEMA_MAX_PROPS);
    js_node *node = &c->s->node[i];
    node->key = calloc((size_t)n + 1, sizeof *node->key);
    node->key_len = calloc((size_t)n + 1, sizeof *node->key_len);
    node->prop = calloc((size_t)n + 1, sizeof *node->prop);
    if (!node->key || !node->key_len || !node->prop)
        return err_set(c->e, "out of memory for the schema");
    cJSON_ArrayForEach(p, props) {
        cJSON *name = cJSON_CreateString(p->string);
        char *quoted = name ? cJSON_PrintUnformatted(name) : NULL;
        cJSON_Delete(name);
        if (!quoted)
            return err_set(c->e, "out of memory for the schema");
        size_t len = strlen(quoted) - 2;    /* the name as written, without its quotes */
        memmove(quoted, quoted + 1, len);
        quoted[len] = 0;
        char sub[512];
        snprintf(sub, sizeof sub, "%s/properties/%.200s", path, p->string);
        int k = c->s->node[i].n_props;
        c->s->node[i].key[k] = quoted;
        c->s->node[i].key_len[k] = len;
        c->s->node[i].n_props++;
        int pi = compile(c, p, sub);
        if (pi < 0)
            return -1;
        c->s->node[i].prop[k] = pi;
    }
    node = &c->s->node[i];
    const cJSON *r;
    if (req && !cJSON_IsArray(req))
        return err_set(c->e, "%s: 'required' must be a list of names", path);
    cJSON_ArrayForEach(r, req) {
        int k = 0;
        while (k < node->n_props && !(cJSON_IsString(r) && !strcmp(cJSON_GetArrayItem(props, k)->string,
                                                                   r->valuestring)))
            k++;
        if (k == node->n_props)
            return err_set(c->e, "%s: 'required' names '%.100s', which is not among the properties",
                           path, cJSON_IsString(r) ? r->valuestring : "(not a string)");
        node->required |= 1ull << k;
    }
    if (!add || cJSON_IsTrue(add)) {
        node->extra = 0;
    } else if (cJSON_IsFalse(add)) {
        node->extra = -1;
    } else {
        char sub[512];
        snprintf(sub, sizeof sub, "%s/additionalProperties", path);
        int ai = compile(c, add, sub);
        if (ai < 0)
            return -1;
        c->s->node[i].extra = ai;
    }
    return i;
}

static int compile_array(compiler *c, int i, const cJSON *sch, const char *path)
{
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(sch, "items");
    const char *bounds[] = {"minItems", "maxItems"};
    int v[2] = {0, INT_MAX};
    for (int k = 0; k < 2; k++) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(sch, bounds[k]);
        if (!b)
            continue;
        if (!cJSON_IsNumber(b) || b->valuedouble < 0 || b->valuedouble > 1e9 ||
            b->valuedouble != floor(b->valuedouble))
            return err_set(c->e, "%s: '%s' must be a whole number from 0", path, bounds[k]);
        v[k] = (int)b->valuedouble;
    }
    if (v[0] > v[1])
        return err_set(c->e, "%s: 'minItems' is above 'maxItems'", path);
    int ii = 0;
    if (items) {
        char sub[512];
        snprintf(sub, sizeof sub, "%s/items", path);
        if ((ii = compile(c, items, sub)) < 0)
            return -1;
    }
    js_node *node = &c->s->node[i];
    node->items = ii;
    node->min_items = v[0];
    node->max_items = v[1];
    return i;
}

/* a whole number from 0 for keyword kw of sch (absent: *out unchanged) */
static int count_limit(compiler *c, const cJSON *sch, const char *kw, int *out, const char *path)
{
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(sch, kw);
    if (!b)
        return 0;
    if (!cJSON_IsNumber(b) || b->valuedouble < 0 || b->valuedouble > 1e9 ||
        b->valuedouble != floor(b->valuedouble))
        return err_set(c->e, "%s: '%s' must be a whole number from 0", path, kw);
    *out = (int)b->valuedouble;
    return 0;
}

/* one end of a number's bounds: 'minimum' and 'exclusiveMinimum' (a number,
 * or draft 4's boolean making 'minimum' exclusive), the tighter kept */
static int number_limit(compiler *c, const cJSON *sch, int lower, int *has, double *x, int *excl,
                        const char **spelled, const char *path)
{
    const char *kw = lower ? "minimum" : "maximum", *xkw = lower ? "exclusiveMinimum" : "exclusiveMaximum";
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(sch, kw);
    const cJSON *xv = cJSON_GetObjectItemCaseSensitive(sch, xkw);
    *has = *excl = 0;
    if (v && !cJSON_IsNumber(v))
        return err_set(c->e, "%s: '%s' must be a number", path, kw);
    if (xv && !cJSON_IsNumber(xv) && !cJSON_IsBool(xv))
        return err_set(c->e, "%s: '%s' must be a number (or, in draft 4, a boolean)", path, xkw);
    *spelled = NULL;
    if (v) {
        *has = 1;
        *x = v->valuedouble;
        *excl = cJSON_IsTrue(xv);
        *spelled = v->valuestring;
    }
    if (cJSON_IsNumber(xv) &&
        (!*has || (lower ? xv->valuedouble >= *x : xv->valuedouble <= *x))) {
        *has = *excl = 1;
        *x = xv->valuedouble;
        *spelled = xv->valuestring;
    }
    return 0;
}

static void drop_regex(js_node *n)
{
    if (n->re)
        json_regex_free(n->re);
    free(n->re);
    n->re = NULL;
}

/* A string's pattern or format (vacuous on a node that takes no string),
 * with room for its lengths: a string held to both must find a match of a
 * length within them. */
static int compile_pattern(compiler *c, js_node *n, const cJSON *sch, const char *path)
{
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(sch, "pattern");
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(sch, "format");
    if ((!pat && !fmt) || !(n->types & JT_STRING))
        return 0;
    if (pat && fmt)
        return err_set(c->e, "%s: 'pattern' and 'format' together are not held", path);
    if (!cJSON_IsString(pat ? pat : fmt))
        return err_set(c->e, "%s: '%s' must be a string", path, pat ? "pattern" : "format");
    if (c->pattern_work > MAX_PATTERN_WORK)
        return err_set(c->e, "%s: the schema's patterns and formats are more than one answer is held to "
                       "(their automata past %.0e)", path, MAX_PATTERN_WORK);
    if (!(n->re = calloc(1, sizeof *n->re)))
        return err_set(c->e, "out of memory for the schema");
    if (pat ? json_regex_compile(n->re, pat->valuestring, strlen(pat->valuestring), c->e)
            : json_regex_format(n->re, fmt->valuestring, c->e)) {
        free(n->re);
        n->re = NULL;
        return err_prefix(c->e, "%s: ", path);
    }
    c->pattern_work += (256.0 + n->re->n_pos) * n->re->n_pos;
    /* a host name is at most 253 characters, an address 254 (RFC 1034, 5321):
     * their patterns hold the labels, the length is held here */
    int implied = !fmt ? 0 : !strcmp(fmt->valuestring, "hostname") ? 253
                           : !strcmp(fmt->valuestring, "email")    ? 254 : 0;
    if (implied && n->max_len > implied)
        n->max_len = implied;
    if (n->min_len >= JSON_REGEX_LENS || (n->max_len != INT_MAX && n->max_len >= JSON_REGEX_LENS))
        return err_set(c->e, "%s: 'minLength' or 'maxLength' above %d beside a pattern or format is not held",
                       path, JSON_REGEX_LENS - 1);
    json_regex_set start;
    json_regex_start(&start);
    if (!json_regex_feasible(n->re, &start, n->min_len, n->max_len == INT_MAX ? -1 : n->max_len))
        return err_set(c->e, "%s: no string of its %s has a length within 'minLength' and 'maxLength'", path,
                       pat ? "pattern" : "format");
    return 0;
}

/* Validators read an answer as a double (Python's json, JavaScript) and
 * compare that with the bound: held to the bound's exact decimal, an answer
 * whose double is the bound itself would pass an exclusive bound
 * ("0.99999999999999999999" reads as 1.0), and an integer bound past 2^53
 * that no double is (spelled: its text in the schema, as chat_json_parse
 * keeps it) is another number than Python compares with. Such a bound is
 * moved one double inward and made inclusive (what is lost lies within half a
 * double's step of it), where its decimal stays short enough (exclusiveMinimum
 * 0 stays: no bounded answer of ours reads as 0 but 0). */
static void bound_as_validators_read(int lower, int integer, const char *spelled, double *x, int *excl)
{
    char exact[400];
    int rounded = 0;
    if (fabs(*x) >= 0x1p53 && spelled && spelled[strspn(spelled, "-0123456789")] == 0) {
        snprintf(exact, sizeof exact, "%.0f", *x);     /* (a double's integer digits, all exact) */
        rounded = strcmp(exact, spelled) != 0;
    }
    if (!*excl && !rounded)
        return;
    double in = nextafter(*x, lower ? INFINITY : -INFINITY);
    json_bounds fits;
    errbuf ignored;
    if (!json_bounds_init(&fits, lower, in, 0, !lower, in, 0, integer, &ignored)) {
        *x = in;
        *excl = 0;
    }
}

/* minLength and maxLength, pattern or format; the number bounds (integer:
 * whole ones) */
static int compile_limits(compiler *c, int i, const cJSON *sch, const char *path)
{
    js_node *n = &c->s->node[i];
    if (count_limit(c, sch, "minLength", &n->min_len, path) ||
        count_limit(c, sch, "maxLength", &n->max_len, path))
        return -1;
    if (n->min_len > n->max_len)
        return err_set(c->e, "%s: 'minLength' is above 'maxLength'", path);
    if (compile_pattern(c, n, sch, path))
        return -1;
    int has_lo, has_hi, lo_x, hi_x;
    double lo = 0, hi = 0;
    const char *lo_text, *hi_text;
    if (number_limit(c, sch, 1, &has_lo, &lo, &lo_x, &lo_text, path) ||
        number_limit(c, sch, 0, &has_hi, &hi, &hi_x, &hi_text, path))
        return -1;
    if (!has_lo && !has_hi)
        return 0;
    int integer = !(n->types & JT_NUMBER);
    if (has_lo)
        bound_as_validators_read(1, integer, lo_text, &lo, &lo_x);
    if (has_hi)
        bound_as_validators_read(0, integer, hi_text, &hi, &hi_x);
    if (json_bounds_init(&n->bounds, has_lo, lo, lo_x, has_hi, hi, hi_x, integer, c->e))
        return err_prefix(c->e, "%s: ", path);
    if (!json_bounds_satisfiable(&n->bounds))
        return err_set(c->e, "%s: no %s is within its minimum and maximum", path,
                       integer ? "integer" : "number");
    n->bounded = 1;
    return 0;
}

/* node i (a definition's) stands for node t: an anyOf of that one */
static int alias(compiler *c, int i, int t)
{
    js_node *node = &c->s->node[i];
    if (!(node->alt = malloc(sizeof *node->alt)))
        return err_set(c->e, "out of memory for the schema");
    node->alt[node->n_alt++] = t;
    memcpy(node->first, c->s->node[t].first, sizeof node->first);
    return i;
}

/* node i (or a new one, i < 0) takes any value */
static int any_value(compiler *c, int i)
{
    if (i < 0)
        return 0;
    js_node *n = &c->s->node[i];
    n->types = JT_ALL;
    n->extra = 0;
    first_of_types(n);
    return i;
}

/* "allOf" of one schema, alone: that schema (a lenient compile takes any
 * value for what it cannot hold) */
static int compile_all_of(compiler *c, int i, const cJSON *sch, const cJSON *all, const char *path)
{
    int others = 0;
    for (const cJSON *k = sch->child; k; k = k->next)
        others += strcmp(k->string, "allOf") && !is_annotation(k->string);
    if (!cJSON_IsArray(all) || cJSON_GetArraySize(all) != 1 || others)
        return c->lenient ? any_value(c, i)
                          : err_set(c->e, "%s: 'allOf' is enforced only as a list of one schema with no "
                                    "other keywords beside it", path);
    char sub[512];
    snprintf(sub, sizeof sub, "%s/allOf/0", path);
    int t = compile(c, all->child, sub);
    return t < 0 || i < 0 ? t : alias(c, i, t);
}

/* Compiles sch into node i (a definition's, given before its body compiles),
 * or into a new node (i < 0; true and $ref then give the node they mean). */
static int compile_at(compiler *c, const cJSON *sch, const char *path, int i)
{
    if (cJSON_IsTrue(sch))
        return any_value(c, i);
    if (!cJSON_IsObject(sch))
        return err_set(c->e, "%s: a schema must be an object (or true)", path);
    for (const cJSON *k = sch->child; k && !c->lenient; k = k->next)
        if (!is_taken(k->string))
            return err_set(c->e, "%s: '%.60s' is not enforced by this server", path, k->string);
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(sch, "$ref");
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(sch, "enum");
    const cJSON *cn = cJSON_GetObjectItemCaseSensitive(sch, "const");
    const cJSON *any = cJSON_GetObjectItemCaseSensitive(sch, "anyOf");
    const cJSON *one = cJSON_GetObjectItemCaseSensitive(sch, "oneOf");
    const cJSON *all = cJSON_GetObjectItemCaseSensitive(sch, "allOf");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(sch, "type");
    if (all)
        return compile_all_of(c, i, sch, all, path);
    int kinds = !!ref + !!en + !!cn + !!any + !!one;
    if (kinds > 1 || (kinds && type && !en && !cn))
        return err_set(c->e, "%s: only one of $ref, enum, const, anyOf and oneOf may be given, and "
                       "type only beside enum or const", path);
    if ((ref || any || one) && !c->lenient && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sch, "nullable")))
        return err_set(c->e, "%s: 'nullable' is enforced with a type, enum or const, not beside $ref, anyOf or "
                       "oneOf (add {\"type\": \"null\"} to an anyOf)", path);
    /* beside these only annotations (and a type beside enum or const): in
     * newer drafts the keywords beside a $ref apply too, and beside an anyOf
     * in every draft, which this compiler would drop */
    static const char *const kind_keys[] = {"$ref", "enum", "const", "anyOf", "oneOf"};
    for (const cJSON *k = sch->child; k && kinds && !c->lenient; k = k->next) {
        int fine = is_annotation(k->string) ||
                   ((en || cn) && (!strcmp(k->string, "type") || !strcmp(k->string, "nullable")));
        for (size_t j = 0; j < sizeof kind_keys / sizeof *kind_keys; j++)
            fine |= !strcmp(k->string, kind_keys[j]);
        if (!fine)
            return err_set(c->e, "%s: '%s' is enforced with a type, not beside $ref, enum, const, anyOf "
                           "or oneOf (put it in the referenced schema or in each alternative)", path,
                           k->string);
    }
    if (ref) {
        int t = cJSON_IsString(ref) ? ref_node(c, ref->valuestring, path)
                                    : err_set(c->e, "%s: '$ref' must be a string", path);
        /* a definition that is a reference: an anyOf of that one */
        return t < 0 || i < 0 ? t : alias(c, i, t);
    }
    if (i < 0 && (i = new_node(c)) < 0)
        return -1;
    if (en || cn) {
        unsigned of_type = JT_ALL;  /* an enum's values of its type */
        if (type && type_bits(type, &of_type, path, c->e))
            return -1;
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sch, "nullable")))
            of_type |= JT_NULL;
        return en && !cJSON_IsArray(en) ? err_set(c->e, "%s: 'enum' must be a list", path)
                                        : compile_enum(c, i, en ? en : cn, !en, of_type, path);
    }
    if (any || one)
        return compile_any_of(c, i, any ? any : one, path, any ? "anyOf" : "oneOf");
    js_node *node = &c->s->node[i];
    if (type) {
        if (type_bits(type, &node->types, path, c->e))
            return -1;
    } else {
        /* without a type: what the keywords describe, else anything */
        int obj = cJSON_GetObjectItemCaseSensitive(sch, "properties") ||
                  cJSON_GetObjectItemCaseSensitive(sch, "required") ||
                  cJSON_GetObjectItemCaseSensitive(sch, "additionalProperties");
        int arr = cJSON_GetObjectItemCaseSensitive(sch, "items") ||
                  cJSON_GetObjectItemCaseSensitive(sch, "minItems") ||
                  cJSON_GetObjectItemCaseSensitive(sch, "maxItems");
        node->types = obj || arr ? (obj ? JT_OBJECT : 0) | (arr ? JT_ARRAY : 0) : JT_ALL;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sch, "nullable")))
        node->types |= JT_NULL;
    if (node->types & JT_NUMBER)
        node->types &= ~(unsigned)JT_INTEGER;   /* number takes every integer */
    first_of_types(node);
    if (compile_limits(c, i, sch, path)) {
        if (!c->lenient)
            return -1;
        node = &c->s->node[i];  /* limits that cannot be held are left to the model */
        node->min_len = 0;
        node->max_len = INT_MAX;
        node->bounded = 0;
        drop_regex(node);
    }
    unsigned types = node->types;   /* node moves when the children's nodes are added */
    if ((types & JT_OBJECT) && compile_object(c, i, sch, path) < 0)
        return -1;
    if ((types & JT_ARRAY) && compile_array(c, i, sch, path) < 0)
        return -1;
    return i;
}

/* A definition that reaches itself through $ref and anyOf alone would stand
 * for itself before any byte of a value (a value's first byte is matched
 * against the alternatives in turn, which would never end): refused, naming
 * it. A depth-first walk over the alternatives, with its own stack. */
static int refuse_alternative_cycles(compiler *c)
{
    json_schema *s = c->s;
    unsigned char *mark = calloc((size_t)s->n, 1);  /* 1: on the walk, 2: done */
    int *stack = malloc((size_t)s->n * sizeof *stack), *next = malloc((size_t)s->n * sizeof *next);
    int rc = 0;
    if (!mark || !stack || !next)
        rc = err_set(c->e, "out of memory for the schema");
    for (int from = 0; !rc && from < s->n; from++) {
        if (mark[from])
            continue;
        int depth = 0;
        stack[depth] = from;
        next[depth++] = 0;
        mark[from] = 1;
        while (depth && !rc) {
            const js_node *n = &s->node[stack[depth - 1]];
            if (next[depth - 1] == n->n_alt) {
                mark[stack[--depth]] = 2;
                continue;
            }
            int t = n->alt[next[depth - 1]++];
            if (mark[t] == 1) {     /* the cycle: from t on the walk to its top */
                const char *name = "#";
                int on = depth - 1;
                while (stack[on] != t)
                    on--;
                for (int k = 0; k < c->n_defs; k++)
                    for (int d = on; d < depth; d++)
                        if (c->defs[k].node == stack[d])
                            name = c->defs[k].def->string;
                rc = err_set(c->e, "definition '%.200s' refers to itself through $ref and anyOf "
                             "before any value of its own: no JSON value could begin", name);
            } else if (!mark[t]) {
                mark[t] = 1;
                stack[depth] = t;
                next[depth++] = 0;
            }
        }
    }
    free(mark);
    free(stack);
    free(next);
    return rc;
}

/* An alternative that is a definition still being compiled (recursion:
 * X = anyOf[{items: oneOf[$ref X, ...]}, ...]) gave its bytes before it had
 * them all: the first bytes of every node of alternatives are settled once
 * all is compiled (they only grow), and the alternatives checked again for
 * beginning alike (a lenient compile takes any value there instead). */
static int settle_alternatives(compiler *c)
{
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = 0; i < c->s->n; i++) {
            js_node *n = &c->s->node[i];
            for (int k = 0; k < n->n_alt; k++)
                for (int b = 0; b < 32; b++) {
                    uint8_t more = c->s->node[n->alt[k]].first[b] & (uint8_t)~n->first[b];
                    n->first[b] |= more;
                    changed |= more != 0;
                }
        }
    }
    for (int i = 0; i < c->s->n; i++) {
        js_node *n = &c->s->node[i];
        uint8_t seen[32] = {0};
        int alike = 0;
        for (int k = 0; k < n->n_alt; k++)
            for (int b = 0; b < 32; b++) {
                alike |= (seen[b] & c->s->node[n->alt[k]].first[b]) != 0;
                seen[b] |= c->s->node[n->alt[k]].first[b];
            }
        if (alike && !c->lenient)
            return err_set(c->e, "the alternatives of an 'anyOf' or 'oneOf' that its own definition recurses "
                           "into begin alike (two can start with the same byte), so the answer cannot be "
                           "held to one as it is written");
        if (alike) {
            free(n->alt);
            any_value_node(n);
        }
    }
    return 0;
}

static int compile_root(const cJSON *schema, json_schema *s, int lenient, errbuf *e)
{
    memset(s, 0, sizeof *s);
    compiler c = {.s = s, .root = schema, .lenient = lenient, .e = e};
    if (any_node(&c) < 0 || (s->root = compile(&c, schema, "#")) < 0 ||
        refuse_alternative_cycles(&c) || settle_alternatives(&c)) {
        json_schema_free(s);
        return -1;
    }
    return 0;
}

int json_schema_compile(const cJSON *schema, json_schema *s, errbuf *e)
{
    return compile_root(schema, s, 0, e);
}

int json_schema_compile_lenient(const cJSON *schema, json_schema *s, errbuf *e)
{
    return compile_root(schema, s, 1, e);
}

int json_schema_any_object(json_schema *s, errbuf *e)
{
    cJSON *obj = cJSON_CreateObject();
    if (!obj || !cJSON_AddStringToObject(obj, "type", "object")) {
        cJSON_Delete(obj);
        return err_set(e, "out of memory for the schema");
    }
    int rc = json_schema_compile(obj, s, e);
    cJSON_Delete(obj);
    return rc;
}

void json_schema_free(json_schema *s)
{
    for (int i = 0; i < s->n; i++) {
        js_node *n = &s->node[i];
        for (int k = 0; k < n->n_props; k++)
            free(n->key[k]);
        for (int k = 0; k < n->n_enum; k++)
            free(n->enum_text[k]);
        free(n->key);
        free(n->key_len);
        free(n->prop);
        free(n->enum_text);
        free(n->enum_len);
        free(n->alt);
        drop_regex(n);
    }
    free(s->node);
    memset(s, 0, sizeof *s);
}
