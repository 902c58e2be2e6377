/* json_prefix: every prefix of a JSON object is taken and only a whole object
 * completes; against the server's strict JSON parser (chat_json_parse, with
 * UTF-8 validation) on random objects and random mutations of them. json_mask
 * on Kimi's vocabulary against the automaton fed the prefix from the start
 * and then the token (a whole copy of the state between, not the mask's). */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/chat_format.h"
#include "core/text/json_mask.h"
#include "core/text/json_prefix.h"
#include "core/text/tokenizer.h"
#include "core/text/utf8.h"
#include "testutil.h"

/* the schema of response_format json_object */
static const json_schema *any_object(void)
{
    static json_schema s;
    static int made;
    errbuf e;
    if (!made)
        cr_assert_eq(json_schema_any_object(&s, &e), 0, "%s", e.msg);
    made = 1;
    return &s;
}

/* 1: a complete object; 0: a prefix of one; -1: neither */
static int judge(const char *s, size_t n)
{
    json_prefix j;
    json_prefix_init(&j, any_object());
    if (json_prefix_feed(&j, s, n))
        return -1;
    return json_prefix_complete(&j);
}

Test(json_prefix, fixed_cases)
{
    static const struct {
        const char *s;
        int want;
    } cases[] = {
        {"", 0}, {" \n{", 0}, {"{}", 1}, {"{\"a\":1}", 1}, {"{\"a\": [1, -2.5e+3, true, null, {}]}", 1},
        {"{\"a\":\"x\\u00e9\\n\"}", 1}, {"{\"\xc3\xa9\": false}", 1}, {"{\"a\":0", 0}, {"{\"a\":-", 0},
        {"{\"a\":1.", 0}, {"{\"a\":1e", 0}, {"{\"a\":tr", 0}, {"{\"a\":\"\xe2\x82", 0},
        {"[]", -1}, {"1", -1}, {"\"a\"", -1}, {"{}x", -1}, {"{} ", -1}, {"{\"a\":01}", -1},
        {"{\"a\":1.}", -1}, {"{\"a\":.5}", -1}, {"{\"a\":+1}", -1}, {"{a:1}", -1}, {"{\"a\" 1}", -1},
        {"{\"a\":1,}", -1}, {"{\"a\":[1,]}", -1}, {"{\"a\":tru}", -1}, {"{\"a\":\"\x01\"}", -1},
        {"{\"a\":\"\\x\"}", -1}, {"{\"a\":\"\\u12g4\"}", -1}, {"{\"a\":\"\xc0\xaf\"}", -1},
        {"{\"a\":\"\xed\xa0\x80\"}", -1}, {"{\"a\":\"\xf4\x90\x80\x80\"}", -1}, {"{\"a\":]", -1},
        {"{\"a\":[}", -1}, {"{\"a\":1]", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        cr_expect_eq(judge(cases[i].s, strlen(cases[i].s)), cases[i].want, "'%s'", cases[i].s);
    char deep[2 * JSON_PREFIX_MAX_DEPTH + 8];
    int n = 0;
    deep[n++] = '{';
    deep[n++] = '"';
    deep[n++] = '"';
    deep[n++] = ':';
    for (int d = 1; d < JSON_PREFIX_MAX_DEPTH; d++)
        deep[n++] = '[';
    cr_expect_eq(judge(deep, (size_t)n), 0, "%d levels", JSON_PREFIX_MAX_DEPTH);
    deep[n++] = '[';
    cr_expect_eq(judge(deep, (size_t)n), -1, "one level more");
    char ws[JSON_PREFIX_MAX_WS + 2];
    memset(ws, ' ', sizeof ws);
    ws[sizeof ws - 1] = '{';
    cr_expect_eq(judge(ws, sizeof ws - 1), -1, "a run of whitespace past the bound");
    cr_expect_eq(judge(ws + 1, sizeof ws - 1), 0, "the bound itself");
}

typedef struct gen {
    uint64_t s;
    char *p;
    size_t n, cap;
} gen;

static uint32_t rnd(gen *g, uint32_t n)
{
    g->s = g->s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g->s >> 33) % n;
}

static void put(gen *g, const char *s)
{
    size_t k = strlen(s);
    if (g->n + k + 1 > g->cap) {
        g->cap = 2 * (g->n + k + 1);
        g->p = realloc(g->p, g->cap);
    }
    memcpy(g->p + g->n, s, k + 1);
    g->n += k;
}

static void ws(gen *g)
{
    static const char *const w[] = {"", "", " ", "\n  ", "\t", "\r\n"};
    put(g, w[rnd(g, 6)]);
}

static void string(gen *g)
{
    static const char *const parts[] = {"a", "key", " ", "\\n", "\\\"", "\\\\", "\\/", "\\u00e9",
                                        "\\u20AC", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "{",
                                        "]", ":", ","};
    put(g, "\"");
    for (int k = rnd(g, 5); k > 0; k--)
        put(g, parts[rnd(g, 16)]);
    put(g, "\"");
}

static void value(gen *g, int depth);

static void container(gen *g, int depth, int object)
{
    put(g, object ? "{" : "[");
    int n = depth > 4 ? 0 : (int)rnd(g, 4);
    for (int i = 0; i < n; i++) {
        ws(g);
        if (i)
            put(g, ",");
        ws(g);
        if (object) {
            string(g);
            ws(g);
            put(g, ":");
            ws(g);
        }
        value(g, depth + 1);
    }
    ws(g);
    put(g, object ? "}" : "]");
}

static void value(gen *g, int depth)
{
    static const char *const atoms[] = {"0", "-0", "7", "-12", "3.25", "1e5", "2E-3", "-0.5e+10",
                                        "true", "false", "null"};
    switch (rnd(g, 5)) {
    case 0: container(g, depth, 1); break;
    case 1: container(g, depth, 0); break;
    case 2: string(g); break;
    default: put(g, atoms[rnd(g, 11)]); break;
    }
}

/* what the strict parser says: 1 a whole object with nothing after it (the
 * automaton takes no trailing whitespace), else 0 */
static int reference(const char *s, size_t n)
{
    if (n == 0 || s[n - 1] != '}' || utf8_validate((const uint8_t *)s, n) < n)
        return 0;
    const char *end;
    cJSON *root = chat_json_parse(s, n, &end);
    int ok = root && cJSON_IsObject(root);
    cJSON_Delete(root);
    return ok;
}

/* a lone surrogate escape, which JSON's grammar allows and the parser refuses */
static int has_surrogate_escape(const char *s, size_t n)
{
    for (size_t i = 0; i + 2 < n; i++)
        if (s[i] == '\\' && s[i + 1] == 'u' && (s[i + 2] == 'd' || s[i + 2] == 'D'))
            return 1;
    return 0;
}

Test(json_prefix, agrees_with_the_strict_parser, .timeout = 60)
{
    gen g = {.s = 99};
    int compared = 0, mismatches = 0;
    for (int trial = 0; trial < 3000; trial++) {
        g.n = 0;
        put(&g, "");
        ws(&g);
        container(&g, 0, 1);
        /* every prefix of a whole object is a prefix, the whole complete */
        for (size_t k = 0; k < g.n; k++)
            cr_assert_geq(judge(g.p, k), 0, "trial %d: the prefix of %zu bytes of '%s' was refused",
                          trial, k, g.p);
        cr_assert_eq(judge(g.p, g.n), 1, "trial %d: '%s' is not complete", trial, g.p);
        /* mutations: complete exactly when the parser takes the whole */
        for (int m = 0; m < 4; m++) {
            char *c = malloc(g.n + 2);
            memcpy(c, g.p, g.n + 1);
            size_t n = g.n, at = rnd(&g, (uint32_t)n);
            static const char bytes[] = "{}[]\",:0-.e+ \\ut1\x80\xc3\x01x";
            char b = bytes[rnd(&g, sizeof bytes - 1)];
            switch (rnd(&g, 3)) {
            case 0: c[at] = b; break;                                  /* replace */
            case 1: memmove(c + at, c + at + 1, n - at); n--; break;   /* delete */
            default: memmove(c + at + 1, c + at, n - at + 1); c[at] = b; n++; break;   /* insert */
            }
            if (!has_surrogate_escape(c, n)) {
                int got = judge(c, n) == 1, want = reference(c, n);
                compared++;
                if (got != want && mismatches++ < 5)
                    cr_log_error("'%.*s': the automaton says %d, the parser %d", (int)n, c, got, want);
            }
            free(c);
        }
    }
    free(g.p);
    cr_expect_eq(mismatches, 0, "%d of %d mutated documents judged otherwise", mismatches, compared);
}

/* A schema written as JSON text, compiled (the test fails if it does not). */
static void compiled(const char *text, json_schema *s)
{
    errbuf e;
    cJSON *j = cJSON_Parse(text);
    cr_assert_not_null(j, "%s", text);
    cr_assert_eq(json_schema_compile(j, s, &e), 0, "%s", e.msg);
    cJSON_Delete(j);
}

/* json_mask_logits on Kimi's vocabulary, at each prefix of a value: a
 * regular token stays possible exactly when its bytes, fed after the prefix
 * (fed from the start), still make a prefix; special tokens never, and once the
 * value is whole only the end tokens. Any object, a schema whose required
 * keys, enum and item bound live in the automaton's frames, bounds, and
 * patterns (whose tokens the mask tries by group). */
Test(json_prefix, mask_on_kimis_vocabulary, .timeout = 120)
{
    tokenizer tok;
    errbuf e;
    test_kimi_tokenizer_or_skip(&tok);
    const vocab *v = &tok.v;
    int V = v->n_vocab, end_ids[1] = {vocab_find_special(v, "<|im_end|>")};
    cr_assert_geq(end_ids[0], 0);
    float *logits = malloc((size_t)V * sizeof *logits);
    json_schema schema;
    compiled("{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}, "
             "\"days\": {\"type\": \"array\", \"items\": {\"enum\": [\"mon\", \"tue\"]}, "
             "\"maxItems\": 2}, \"n\": {\"type\": \"integer\"}}, \"required\": [\"city\", \"n\"], "
             "\"additionalProperties\": false}",
             &schema);
    /* bounds: a short string's room decides the plain tokens the table takes at once */
    json_schema bounded;
    compiled("{\"type\": \"object\", \"properties\": {\"code\": {\"type\": \"string\", \"minLength\": 2, "
             "\"maxLength\": 6}, \"score\": {\"type\": \"number\", \"minimum\": -1.5, \"exclusiveMaximum\": "
             "10}, \"n\": {\"type\": \"integer\", \"minimum\": 3, \"maximum\": 40}, \"when\": {\"type\": "
             "\"string\", \"format\": \"date\"}, \"tag\": {\"type\": \"string\", \"pattern\": "
             "\"^[a-z\xc3\xa9]+\\\\d?$\", \"maxLength\": 6}}, \"required\": [\"code\", \"score\", \"n\"], "
             "\"additionalProperties\": false}",
             &bounded);
    /* patterns whose raw tokens the mask tries a group at a time (pattern_tokens.h):
     * anchored letters and punctuation, and an unanchored one with \w and \s */
    json_schema patterned;
    compiled("{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\", \"pattern\": "
             "\"^[A-Za-z ,.]+$\", \"minLength\": 3, \"maxLength\": 12}, \"id\": {\"type\": \"string\", "
             "\"pattern\": \"x[0-9]{2}|\\\\w+-\\\\s\"}}, \"required\": [\"name\", \"id\"], "
             "\"additionalProperties\": false}",
             &patterned);
    const struct {
        const json_schema *s;
        const char *doc;
    } cases[] = {{any_object(), "{\"k\\u00e9y\": [1.5e-3, true, {\"\xe2\x82\xac\": null}], \"n\": -0}"},
                 {&schema, "{\"days\": [\"tue\", \"mon\"], \"city\": \"Paris\", \"n\": 12}"},
                 {&bounded, "{\"code\": \"ab\xc3\xa9\\u20acz\", \"score\": 9.75, \"n\": 17, \"when\": "
                            "\"2024-02-29\", \"tag\": \"\xc3\xa9t\\u00e9s1\"}"},
                 {&patterned, "{\"name\": \"Ann, B. Co\", \"id\": \"#ab_9- !\"}"}};
    enum { N_CASES = sizeof cases / sizeof *cases };
    json_vocab jv;
    cr_assert_eq(json_vocab_build(&jv, v, &e), 0, "%s", e.msg);
    for (size_t c = 0; c < 2 * N_CASES; c++) {  /* each case with the token table and without */
        const json_vocab *table = c < N_CASES ? &jv : NULL;
        const char *doc = cases[c % N_CASES].doc;
        size_t len = strlen(doc);
        for (size_t k = 0; k <= len; k++) {
            json_prefix j;
            json_prefix_init(&j, cases[c % N_CASES].s);
            cr_assert_eq(json_prefix_feed(&j, doc, k), 0);
            for (int i = 0; i < V; i++)
                logits[i] = 1.0f;
            int possible = json_mask_logits(&j, v, table, end_ids, 1, logits, V), counted = 0;
            for (int id = 0; id < V; id++) {
                int want;
                if (vocab_is_special(v, id)) {
                    want = k == len && id == end_ids[0];
                } else {
                    size_t n;
                    const char *b = vocab_decode(v, id, &n);
                    /* the whole state after the prefix (a plain copy, not the
                     * mask's live-part one), then the token's bytes */
                    json_prefix r = j;
                    want = n > 0 && json_prefix_feed(&r, b, n) == 0;
                }
                counted += want;
                cr_assert_eq(logits[id] == 1.0f, want, "case %zu, prefix of %zu bytes, token %d", c, k, id);
            }
            cr_assert_eq(possible, counted);
            cr_assert_gt(possible, 0, "case %zu, prefix of %zu bytes: no token may follow", c, k);
        }
    }
    json_vocab_free(&jv);
    json_schema_free(&schema);
    json_schema_free(&bounded);
    json_schema_free(&patterned);
    free(logits);
    tokenizer_free(&tok);
}
