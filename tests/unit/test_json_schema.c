/* json_schema and json_prefix with a schema: what cannot be enforced is
 * refused by name; on random schemas (objects with required and optional
 * properties, closed or open, arrays with bounds, enums, consts, integers,
 * type lists, anyOf, $ref), every prefix of a random instance is taken and the
 * whole completes, and random mutations of instances are judged as a plain
 * validator of the parsed document judges them. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/chat_format.h"
#include "core/text/json_prefix.h"
#include "core/text/json_schema.h"
#include "core/text/utf8.h"

static int compile_text(const char *text, json_schema *s, errbuf *e)
{
    cJSON *j = cJSON_Parse(text);
    cr_assert_not_null(j, "%s", text);
    int rc = json_schema_compile(j, s, e);
    cJSON_Delete(j);
    return rc;
}

static void refused(const char *schema, const char *why)
{
    json_schema s;
    errbuf e;
    cr_expect_neq(compile_text(schema, &s, &e), 0, "taken: %s", schema);
    cr_expect(strstr(e.msg, why) != NULL, "'%s' for %s", e.msg, schema);
}

Test(json_schema, refuses_what_it_cannot_enforce)
{
    refused("{\"type\": \"string\", \"pattern\": \"^a\"}", "'pattern' is not enforced");
    refused("{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"integer\", \"minimum\": 3}}}",
            "#/properties/a: 'minimum'");
    refused("{\"$ref\": \"#/$defs/missing\"}", "names no definition");
    refused("{\"anyOf\": [{\"type\": \"integer\"}, {\"type\": \"number\"}]}", "begin alike");
    refused("{\"type\": \"object\", \"properties\": {}, \"required\": [\"x\"]}", "'x'");
    refused("{\"type\": \"wat\"}", "unknown type");
    refused("{\"type\": \"array\", \"minItems\": 3, \"maxItems\": 2}", "above");
    refused("{\"enum\": [1], \"type\": \"integer\"}", "only one of");
}

/* 1 whole, 0 a prefix, -1 neither */
static int judge(const json_schema *s, const char *t, size_t n)
{
    json_prefix j;
    json_prefix_init(&j, s);
    if (json_prefix_feed(&j, t, n))
        return -1;
    return json_prefix_complete(&j);
}

Test(json_schema, fixed_cases)
{
    json_schema s;
    errbuf e;
    cr_assert_eq(compile_text("{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\"}, "
                              "\"age\": {\"type\": \"integer\"}, \"tags\": {\"type\": \"array\", \"items\": "
                              "{\"enum\": [\"a\", \"b\", 10]}, \"maxItems\": 2}}, \"required\": [\"name\"], "
                              "\"additionalProperties\": false}", &s, &e), 0, "%s", e.msg);
    static const struct {
        const char *t;
        int want;
    } cases[] = {
        {"{\"name\": \"x\"}", 1}, {"{\"age\": 3, \"name\": \"x\"}", 1}, {"{\"name\": \"x\", \"tags\": [\"a\", 10]}", 1},
        {"{}", -1}, {"{\"age\": 3}", -1}, {"{\"name\": 1}", -1}, {"{\"name\": \"x\", \"age\": 3.5}", -1},
        {"{\"name\": \"x\", \"age\": 1e3}", -1}, {"{\"nam\": \"x\"}", -1}, {"{\"other\"", -1},
        {"{\"name\": \"x\", \"name\": \"y\"}", -1}, {"{\"name\": \"x\", \"tags\": [\"c\"]}", -1},
        {"{\"name\": \"x\", \"tags\": [\"a\", \"b\", \"a\"]}", -1}, {"{\"name\": \"x\", \"tags\": [1", 0},
        {"{\"name\": \"x\", \"tags\": [10", 0}, {"{\"name\": \"x\", \"tags\": [100", -1}, {"[]", -1},
        {"{\"na", 0}, {"{\"age\": -", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        cr_expect_eq(judge(&s, cases[i].t, strlen(cases[i].t)), cases[i].want, "'%s'", cases[i].t);
    json_schema_free(&s);
    /* a recursive definition, a nullable union, a number at the top */
    cr_assert_eq(compile_text("{\"$defs\": {\"node\": {\"type\": \"object\", \"properties\": {\"next\": "
                              "{\"anyOf\": [{\"$ref\": \"#/$defs/node\"}, {\"type\": \"null\"}]}}, "
                              "\"required\": [\"next\"], \"additionalProperties\": false}}, "
                              "\"$ref\": \"#/$defs/node\"}", &s, &e), 0, "%s", e.msg);
    const char *list = "{\"next\": {\"next\": {\"next\": null}}}";
    cr_expect_eq(judge(&s, list, strlen(list)), 1);
    cr_expect_eq(judge(&s, "{\"next\": {}}", 12), -1);
    json_schema_free(&s);
    cr_assert_eq(compile_text("{\"type\": \"integer\"}", &s, &e), 0, "%s", e.msg);
    cr_expect_eq(judge(&s, "12", 2), 1, "a whole number that may go on");
    cr_expect_eq(judge(&s, "12.", 3), -1);
    json_schema_free(&s);
}

/* ---- random schemas and instances ---- */

typedef struct rng {
    uint64_t s;
} rng;

static uint32_t rnd(rng *g, uint32_t n)
{
    g->s = g->s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g->s >> 33) % n;
}

static const char *const words[] = {"a", "bc", "name", "id", "x", "list", "ab", "value"};

static cJSON *gen_schema(rng *g, int depth, cJSON *defs);

static cJSON *gen_object_schema(rng *g, int depth, cJSON *defs)
{
    cJSON *o = cJSON_CreateObject(), *props = cJSON_CreateObject(), *req = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "type", "object");
    int n = (int)rnd(g, 4);
    for (int i = 0; i < n; i++) {
        const char *k = words[rnd(g, 8)];
        if (cJSON_GetObjectItemCaseSensitive(props, k))
            continue;
        cJSON_AddItemToObject(props, k, gen_schema(g, depth + 1, defs));
        if (rnd(g, 2))
            cJSON_AddItemToArray(req, cJSON_CreateString(k));
    }
    cJSON_AddItemToObject(o, "properties", props);
    cJSON_AddItemToObject(o, "required", req);
    uint32_t add = rnd(g, 3);
    if (add < 2)
        cJSON_AddBoolToObject(o, "additionalProperties", add == 1);
    return o;
}

static cJSON *gen_schema(rng *g, int depth, cJSON *defs)
{
    static const char *const scalars[] = {"string", "integer", "number", "boolean", "null"};
    cJSON *o;
    switch (depth > 3 ? rnd(g, 3) : rnd(g, 9)) {
    case 0:
    case 1:
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", scalars[rnd(g, 5)]);
        return o;
    case 2: {   /* an enum of letters, numbers, literals */
        o = cJSON_CreateObject();
        cJSON *e = cJSON_AddArrayToObject(o, "enum");
        static const char *const vals[] = {"\"a\"", "\"bc\"", "\"b\"", "1", "12", "1.5", "-3", "true",
                                           "null", "false"};
        int n = 1 + (int)rnd(g, 4);
        for (int i = 0; i < n; i++)
            cJSON_AddItemToArray(e, cJSON_Parse(vals[rnd(g, 10)]));
        return o;
    }
    case 3:
        o = cJSON_CreateObject();
        cJSON *t = cJSON_AddArrayToObject(o, "type");
        cJSON_AddItemToArray(t, cJSON_CreateString(scalars[rnd(g, 4)]));
        cJSON_AddItemToArray(t, cJSON_CreateString("null"));
        return o;
    case 4:
    case 5:
        return gen_object_schema(g, depth, defs);
    case 6: {
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "array");
        cJSON_AddItemToObject(o, "items", gen_schema(g, depth + 1, defs));
        int lo = (int)rnd(g, 3);
        if (rnd(g, 2))
            cJSON_AddNumberToObject(o, "minItems", lo);
        if (rnd(g, 2))
            cJSON_AddNumberToObject(o, "maxItems", lo + (int)rnd(g, 3));
        return o;
    }
    case 7: {   /* anyOf with alternatives that begin apart */
        o = cJSON_CreateObject();
        cJSON *a = cJSON_AddArrayToObject(o, "anyOf");
        cJSON_AddItemToArray(a, gen_object_schema(g, depth + 1, defs));
        cJSON_AddItemToArray(a, cJSON_Parse(rnd(g, 2) ? "{\"type\": \"string\"}" : "{\"type\": \"integer\"}"));
        if (rnd(g, 2))
            cJSON_AddItemToArray(a, cJSON_Parse("{\"type\": \"null\"}"));
        return o;
    }
    default: {  /* a definition, referred to */
        char name[16];
        snprintf(name, sizeof name, "d%d", cJSON_GetArraySize(defs));
        cJSON_AddItemToObject(defs, name, gen_object_schema(g, depth + 1, defs));
        char ref[32];
        snprintf(ref, sizeof ref, "#/$defs/%s", name);
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "$ref", ref);
        return o;
    }
    }
}

static const cJSON *resolve(const cJSON *sch, const cJSON *root)
{
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(sch, "$ref");
    if (!ref)
        return sch;
    return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "$defs"),
                                            ref->valuestring + 8);
}

/* an instance the schema takes (NULL when the draw found none, e.g. an
 * impossible bound) */
static cJSON *gen_instance(rng *g, const cJSON *sch, const cJSON *root, int depth)
{
    sch = resolve(sch, root);
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(sch, "enum");
    if (en)
        return cJSON_Duplicate(cJSON_GetArrayItem(en, (int)rnd(g, (uint32_t)cJSON_GetArraySize(en))), 1);
    const cJSON *any = cJSON_GetObjectItemCaseSensitive(sch, "anyOf");
    if (any)
        return gen_instance(g, cJSON_GetArrayItem(any, (int)rnd(g, (uint32_t)cJSON_GetArraySize(any))), root,
                            depth);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(sch, "type");
    const char *t = cJSON_IsArray(type) ? cJSON_GetArrayItem(type, (int)rnd(g, 2))->valuestring
                                        : type->valuestring;
    if (!strcmp(t, "string"))
        return cJSON_CreateString(words[rnd(g, 8)]);
    if (!strcmp(t, "integer"))
        return cJSON_CreateNumber((double)rnd(g, 2000) - 1000);
    if (!strcmp(t, "number"))
        return cJSON_CreateNumber(((double)rnd(g, 2000) - 1000) / 8);
    if (!strcmp(t, "boolean"))
        return cJSON_CreateBool(rnd(g, 2));
    if (!strcmp(t, "null"))
        return cJSON_CreateNull();
    if (!strcmp(t, "array")) {
        const cJSON *lo = cJSON_GetObjectItemCaseSensitive(sch, "minItems");
        const cJSON *hi = cJSON_GetObjectItemCaseSensitive(sch, "maxItems");
        int a = lo ? lo->valueint : 0, b = hi ? hi->valueint : a + 3;
        if (depth > 6)
            b = a;
        cJSON *arr = cJSON_CreateArray();
        for (int i = a + (int)rnd(g, (uint32_t)(b - a + 1)); i > 0; i--)
            cJSON_AddItemToArray(arr, gen_instance(g, cJSON_GetObjectItemCaseSensitive(sch, "items"), root,
                                                   depth + 1));
        return arr;
    }
    cJSON *o = cJSON_CreateObject();
    const cJSON *p, *req = cJSON_GetObjectItemCaseSensitive(sch, "required");
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(sch, "properties")) {
        int required = 0;
        const cJSON *r;
        cJSON_ArrayForEach(r, req) required |= !strcmp(r->valuestring, p->string);
        if (required || (rnd(g, 2) && depth < 6))
            cJSON_AddItemToObject(o, p->string, gen_instance(g, p, root, depth + 1));
    }
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(sch, "additionalProperties");
    if ((!add || cJSON_IsTrue(add)) && rnd(g, 3) == 0 && !cJSON_GetObjectItemCaseSensitive(o, "extra"))
        cJSON_AddItemToObject(o, "extra", cJSON_CreateNumber(7));
    return o;
}

/* what a plain validator says of a parsed document (numbers by their spelling) */
static int valid(const cJSON *v, const cJSON *sch, const cJSON *root)
{
    sch = resolve(sch, root);
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(sch, "enum"), *x;
    if (en) {
        char *mine = cJSON_IsNumber(v) && v->valuestring ? strdup(v->valuestring) : cJSON_PrintUnformatted(v);
        int ok = 0;
        cJSON_ArrayForEach(x, en) {
            char *t = cJSON_PrintUnformatted(x);
            ok |= !strcmp(t, mine);
            free(t);
        }
        free(mine);
        return ok;
    }
    const cJSON *any = cJSON_GetObjectItemCaseSensitive(sch, "anyOf");
    if (any) {
        cJSON_ArrayForEach(x, any) if (valid(v, x, root)) return 1;
        return 0;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(sch, "type");
    int ok = 0;
    for (int i = 0; i < (cJSON_IsArray(type) ? cJSON_GetArraySize(type) : 1); i++) {
        const char *t = cJSON_IsArray(type) ? cJSON_GetArrayItem(type, i)->valuestring : type->valuestring;
        if (!strcmp(t, "string"))
            ok |= cJSON_IsString(v);
        else if (!strcmp(t, "number"))
            ok |= cJSON_IsNumber(v);
        else if (!strcmp(t, "integer"))
            ok |= cJSON_IsNumber(v) && !strpbrk(v->valuestring ? v->valuestring : ".", ".eE");
        else if (!strcmp(t, "boolean"))
            ok |= cJSON_IsBool(v);
        else if (!strcmp(t, "null"))
            ok |= cJSON_IsNull(v);
        else if (!strcmp(t, "array") && cJSON_IsArray(v)) {
            const cJSON *lo = cJSON_GetObjectItemCaseSensitive(sch, "minItems");
            const cJSON *hi = cJSON_GetObjectItemCaseSensitive(sch, "maxItems");
            int n = cJSON_GetArraySize(v), good = (!lo || n >= lo->valueint) && (!hi || n <= hi->valueint);
            cJSON_ArrayForEach(x, v) good &= valid(x, cJSON_GetObjectItemCaseSensitive(sch, "items"), root);
            ok |= good;
        } else if (!strcmp(t, "object") && cJSON_IsObject(v)) {
            const cJSON *props = cJSON_GetObjectItemCaseSensitive(sch, "properties");
            const cJSON *add = cJSON_GetObjectItemCaseSensitive(sch, "additionalProperties"), *r;
            int good = 1;
            for (const cJSON *k = v->child; k; k = k->next) {
                for (const cJSON *d = v->child; d != k; d = d->next)
                    good &= strcmp(d->string, k->string) != 0;    /* a key twice */
                const cJSON *ps = cJSON_GetObjectItemCaseSensitive(props, k->string);
                if (ps)
                    good &= valid(k, ps, root);
                else
                    good &= !cJSON_IsFalse(add);
            }
            cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(sch, "required"))
                good &= cJSON_GetObjectItemCaseSensitive(v, r->valuestring) != NULL;
            ok |= good;
        }
    }
    return ok;
}

static int reference(const char *t, size_t n, const cJSON *schema)
{
    if (n == 0 || utf8_validate((const uint8_t *)t, n) < n || strchr(" \t\r\n", t[n - 1]))
        return 0;   /* the automaton takes nothing after the value */
    const char *end;
    cJSON *doc = chat_json_parse(t, n, &end);
    int ok = doc && valid(doc, schema, schema);
    cJSON_Delete(doc);
    return ok;
}

Test(json_schema, random_schemas_instances_and_mutations, .timeout = 120)
{
    rng g = {.s = 7};
    int instances = 0, compared = 0, mismatches = 0, whole = 0;
    for (int trial = 0; trial < 400; trial++) {
        cJSON *defs = cJSON_CreateObject();
        cJSON *root = gen_object_schema(&g, 0, defs);
        cJSON_AddItemToObject(root, "$defs", defs);
        json_schema s;
        errbuf e;
        cr_assert_eq(json_schema_compile(root, &s, &e), 0, "%s", e.msg);
        for (int k = 0; k < 6; k++) {
            cJSON *inst = gen_instance(&g, root, root, 0);
            char *t = k % 2 ? cJSON_PrintUnformatted(inst) : cJSON_Print(inst);
            size_t n = strlen(t);
            cJSON_Delete(inst);
            instances++;
            for (size_t p = 0; p < n; p++)
                cr_assert_geq(judge(&s, t, p), 0, "trial %d: the prefix of %zu bytes of '%s' refused", trial, p, t);
            char *sch = cJSON_PrintUnformatted(root);
            cr_assert_eq(judge(&s, t, n), 1, "trial %d: '%s' not whole under %s", trial, t, sch);
            free(sch);
            for (int m = 0; m < 6; m++) {
                char *c = malloc(n + 2);
                memcpy(c, t, n + 1);
                size_t len = n, at = rnd(&g, (uint32_t)n);
                static const char bytes[] = "{}[]\",:0-.e1 tnabx";
                char b = bytes[rnd(&g, sizeof bytes - 1)];
                switch (rnd(&g, 3)) {
                case 0: c[at] = b; break;
                case 1: memmove(c + at, c + at + 1, len - at); len--; break;
                default: memmove(c + at + 1, c + at, len - at + 1); c[at] = b; len++; break;
                }
                int got = judge(&s, c, len) == 1, want = reference(c, len, root);
                compared++;
                whole += want;
                if (got != want && mismatches++ < 5) {
                    char *sch2 = cJSON_PrintUnformatted(root);
                    cr_log_error("'%.*s' under %s: the automaton says %d, the validator %d", (int)len, c,
                                 sch2, got, want);
                    free(sch2);
                }
                free(c);
            }
            free(t);
        }
        json_schema_free(&s);
        cJSON_Delete(root);
    }
    cr_expect_eq(mismatches, 0, "%d of %d mutated documents judged otherwise", mismatches, compared);
    cr_expect(whole > compared / 20 && whole < compared, "mutations valid: %d of %d", whole, compared);
    cr_log_info("%d instances, %d mutations (%d valid)", instances, compared, whole);
}
