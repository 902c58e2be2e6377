/* json_schema and json_prefix with a schema: what cannot be enforced is
 * refused by name; on random schemas (objects with required and optional
 * properties, closed or open, arrays with bounds, strings with lengths,
 * integers and numbers with bounds, enums, consts, type lists, anyOf, $ref),
 * every prefix of a random instance is taken and the
 * whole completes, and random mutations of instances are judged as a plain
 * validator of the parsed document judges them. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/chat_format.h"
#include "core/text/json_prefix.h"
#include "core/text/json_schema.h"
#include "core/text/utf8.h"
#include "testutil.h"

/* (as a request's JSON is read: numbers keep their spelling) */
static int compile_text(const char *text, json_schema *s, errbuf *e)
{
    cJSON *j = chat_json_parse(text, strlen(text), NULL);
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
    refused("{\"type\": \"string\", \"pattern\": \"(a)\\\\1\"}", "#: pattern: a backreference is not held");
    refused("{\"type\": \"string\", \"format\": \"uri\"}", "format 'uri' is not held");
    refused("{\"type\": \"string\", \"format\": \"date\", \"pattern\": \"^2\"}", "together are not held");
    refused("{\"type\": \"string\", \"pattern\": \"^a{5}$\", \"maxLength\": 4}", "no string of its pattern");
    refused("{\"type\": \"string\", \"format\": \"date\", \"maxLength\": 300}", "above 255");
    refused("{\"type\": \"string\", \"pattern\": 5}", "'pattern' must be a string");
    refused("{\"uniqueItems\": true}", "'uniqueItems' is not enforced");
    refused("{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"integer\", \"multipleOf\": 3}}}",
            "#/properties/a: 'multipleOf'");
    refused("{\"type\": \"string\", \"minLength\": 3, \"maxLength\": 2}", "'minLength' is above");
    refused("{\"type\": \"string\", \"maxLength\": -1}", "'maxLength' must be a whole number");
    refused("{\"type\": \"integer\", \"minimum\": 1.5, \"maximum\": 1.9}", "no integer is within");
    refused("{\"type\": \"number\", \"exclusiveMinimum\": 2, \"maximum\": 2}", "no number is within");
    refused("{\"type\": \"number\", \"minimum\": 2, \"exclusiveMaximum\": true, \"maximum\": 2}",
            "no number is within");
    refused("{\"type\": \"number\", \"maximum\": \"3\"}", "'maximum' must be a number");
    refused("{\"type\": \"number\", \"maximum\": 1e50}", "more than 40 digits");
    refused("{\"allOf\": [{\"type\": \"string\"}, {\"minLength\": 1}]}", "'allOf' is enforced only");
    refused("{\"allOf\": [{\"type\": \"string\"}], \"maxLength\": 2}", "'allOf' is enforced only");
    refused("{\"enum\": [\"a\"], \"maxLength\": 3}", "'maxLength' is enforced with a type");
    refused("{\"$ref\": \"#/$defs/missing\"}", "names no definition");
    refused("{\"anyOf\": [{\"type\": \"integer\"}, {\"type\": \"number\"}]}", "begin alike");
    refused("{\"type\": \"object\", \"properties\": {}, \"required\": [\"x\"]}", "'x'");
    refused("{\"type\": \"wat\"}", "unknown type");
    refused("{\"type\": \"array\", \"minItems\": 3, \"maxItems\": 2}", "above");
    refused("{\"enum\": [\"a\"], \"type\": \"integer\"}", "no value of its enum has its type");
    refused("{\"enum\": [1], \"anyOf\": [{\"type\": \"integer\"}]}", "only one of");
    refused("{\"anyOf\": [{\"type\": \"integer\"}], \"type\": \"integer\"}", "type only beside enum or const");
    /* (taken, null would be refused silently) */
    refused("{\"anyOf\": [{\"type\": \"integer\"}], \"nullable\": true}", "'nullable' is enforced with a type");
    refused("{\"$ref\": \"#/$defs/x\", \"nullable\": true, \"$defs\": {\"x\": {\"type\": \"string\"}}}",
            "not beside $ref");
    /* alternatives alike through a definition still being compiled (taken,
     * [[]] was complete though two alternatives match []) */
    refused("{\"$ref\": \"#/$defs/X\", \"$defs\": {\"X\": {\"anyOf\": [{\"type\": \"array\", \"items\": "
            "{\"oneOf\": [{\"$ref\": \"#/$defs/X\"}, {\"type\": \"array\"}]}}, {\"type\": \"null\"}]}}}",
            "its own definition recurses into begin alike");
    /* (taken, ^a|b$ was held as ^(a|b)$) */
    refused("{\"type\": \"string\", \"pattern\": \"^a|b$\"}", "beside a '|' outside a group");
}

/* Thousands of long patterns (a hostile request's schema) are refused once
 * their automata pass the budget, not compiled for many seconds. */
Test(json_schema, a_schemas_patterns_have_a_budget, .timeout = 60)
{
    size_t cap = 20 * 64 * 80 + 4096, n = 0;
    char *text = malloc(cap);
    cr_assert_not_null(text);
    n += (size_t)snprintf(text + n, cap - n, "{\"type\": \"object\", \"properties\": {");
    for (int o = 0; o < 20; o++) {
        n += (size_t)snprintf(text + n, cap - n, "%s\"o%d\": {\"type\": \"object\", \"properties\": {",
                              o ? ", " : "", o);
        for (int k = 0; k < 64; k++)
            n += (size_t)snprintf(text + n, cap - n, "%s\"p%d\": {\"type\": \"string\", \"pattern\": "
                                  "\"^[a-z]{509}$\"}", k ? ", " : "", k);
        n += (size_t)snprintf(text + n, cap - n, "}}");
    }
    snprintf(text + n, cap - n, "}}");
    refused(text, "patterns and formats are more than one answer is held to");
    free(text);
}

/* A definition that stands for itself before any byte (through $ref and anyOf
 * alone) is refused, naming it: taken, a value's first byte was matched
 * against its alternatives forever (a request that hung the server), or no
 * value could begin and the answer was whitespace. Recursion through a
 * container, the usual tree, is taken. */
Test(json_schema, a_definition_standing_for_itself_is_refused)
{
    refused("{\"$ref\": \"#/$defs/a\", \"$defs\": {\"a\": {\"anyOf\": [{\"$ref\": \"#/$defs/a\"}, "
            "{\"type\": \"null\"}]}}}", "definition 'a' refers to itself");
    refused("{\"$ref\": \"#/$defs/a\", \"$defs\": {\"a\": {\"$ref\": \"#/$defs/a\"}}}",
            "definition 'a' refers to itself");
    refused("{\"type\": \"object\", \"properties\": {\"x\": {\"$ref\": \"#/definitions/b\"}}, "
            "\"definitions\": {\"a\": {\"anyOf\": [{\"type\": \"string\"}, {\"$ref\": "
            "\"#/definitions/b\"}]}, \"b\": {\"allOf\": [{\"$ref\": \"#/definitions/a\"}]}}}",
            "refers to itself");
    const char *tree = "{\"$ref\": \"#/$defs/n\", \"$defs\": {\"n\": {\"anyOf\": [{\"type\": "
                       "\"null\"}, {\"type\": \"object\", \"properties\": {\"kids\": {\"type\": "
                       "\"array\", \"items\": {\"$ref\": \"#/$defs/n\"}}}}]}}}";
    json_schema s;
    errbuf e;
    cr_assert_eq(compile_text(tree, &s, &e), 0, "%s", e.msg);
    json_prefix j;
    json_prefix_init(&j, &s);
    const char *doc = "{\"kids\": [null, {\"kids\": []}]}";
    cr_expect_eq(json_prefix_feed(&j, doc, strlen(doc)), 0);
    cr_expect_eq(json_prefix_complete(&j), 1);
    json_schema_free(&s);
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
        /* a key written with an escape names no property: it could be one
         * ("\u0061ge" is "age") and skip its schema */
        {"{\"n\\u0061me\": 1}", -1}, {"{\"\\u0061ge\": \"x\", \"name\": \"x\"}", -1}, {"{\"name\": \"x\\u0061\"}", 1},
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

static void judged(const char *schema, const char *const *texts, const int *want, int n, int lenient)
{
    json_schema s;
    errbuf e;
    cJSON *j = chat_json_parse(schema, strlen(schema), NULL);
    cr_assert_not_null(j, "%s", schema);
    cr_assert_eq(lenient ? json_schema_compile_lenient(j, &s, &e) : json_schema_compile(j, &s, &e), 0, "%s: %s",
                 schema, e.msg);
    cJSON_Delete(j);
    for (int i = 0; i < n; i++)
        cr_expect_eq(judge(&s, texts[i], strlen(texts[i])), want[i], "'%s' under %s", texts[i], schema);
    json_schema_free(&s);
}

#define JUDGED(schema, lenient, ...)                                                                   \
    do {                                                                                               \
        static const struct {                                                                          \
            const char *t;                                                                             \
            int want;                                                                                  \
        } c_[] = {__VA_ARGS__};                                                                        \
        const char *t_[sizeof c_ / sizeof *c_];                                                        \
        int w_[sizeof c_ / sizeof *c_];                                                                \
        for (size_t i_ = 0; i_ < sizeof c_ / sizeof *c_; i_++)                                         \
            t_[i_] = c_[i_].t, w_[i_] = c_[i_].want;                                                   \
        judged(schema, t_, w_, (int)(sizeof c_ / sizeof *c_), lenient);                                \
    } while (0)

/* a const is one value, an array too; enum and const numbers are answered
 * as written (not rounded to 15 digits); keywords beside $ref, anyOf, oneOf,
 * enum and const would be dropped, so they are refused; an anyOf a tool's
 * schema makes "any value" takes any string */
Test(json_schema, consts_enums_and_what_stands_beside_them)
{
    JUDGED("{\"const\": [1, 2, 3]}", 0, {"[1,2,3]", 1}, {"3", -1}, {"1", -1}, {"[1,2]", -1});
    JUDGED("{\"const\": []}", 0, {"[]", 1}, {"[1]", -1});
    JUDGED("{\"const\": 9007199254740993}", 0, {"9007199254740993", 1}, {"9.00719925474099e+15", -1});
    JUDGED("{\"enum\": [0.30000000000000004, 123456789012345678]}", 0, {"0.30000000000000004", 1},
           {"0.3", 0}, {"123456789012345678", 1});
    refused("{\"$defs\": {\"A\": {\"type\": \"object\"}}, \"$ref\": \"#/$defs/A\", \"required\": [\"x\"]}",
            "#: 'required' is enforced with a type, not beside $ref");
    refused("{\"anyOf\": [{\"type\": \"object\"}, {\"type\": \"null\"}], \"required\": [\"a\"]}",
            "'required' is enforced with a type");
    refused("{\"const\": [1, 2], \"maxItems\": 1}", "'maxItems' is enforced with a type");
    JUDGED("{\"$defs\": {\"A\": {\"type\": \"string\"}}, \"$ref\": \"#/$defs/A\", \"description\": \"d\"}", 0,
           {"\"x\"", 1});
    JUDGED("{\"anyOf\": [{\"type\": \"string\", \"maxLength\": 30}, {\"type\": \"string\", \"format\": \"date\"}]}", 1,
           {"\"\"", 1}, {"\"a\"", 1}, {"\"2024-01-01\"", 1}, {"[1, 2]", 1});
}

Test(json_schema, string_lengths_count_characters)
{
    JUDGED("{\"type\": \"string\", \"minLength\": 2, \"maxLength\": 3}", 0,
           {"\"ab\"", 1}, {"\"a\"", -1}, {"\"a", 0}, {"\"abc", 0}, {"\"abcd", -1}, {"\"abc\\", -1},
           {"\"\xc3\xa9\xe2\x82\xac\"", 1}, {"\"\xc3\xa9\xe2\x82\xac\xc3\xa9\xc3\xa9", -1},
           {"\"\\u00e9\\n\"", 1}, {"\"\\ud83d\\ude00\"", -1}, {"\"a\\ud83d\\ude00\"", 1},
           {"\"ab\\ud83d\\ude00\"", 1}, {"\"ab\\ud83d\\ude00x", -1}, {"\"ab\\ud83d\\u0041", -1},
           {"\"ab\\ud83d\\uD", 0}, {"\"ab\\ud83d\\uDc", 0}, {"\"ab\\ud83d\\u0", -1},
           {"\"ab\\ud83d\\uDB", -1}, {"\"ab\\ud83d\\n", -1}, {"\"ab\\ud83d\"", 1});
    JUDGED("{\"type\": \"object\", \"properties\": {\"k\": {\"type\": [\"string\", \"null\"], \"maxLength\": 1}}}", 0,
           {"{\"k\": \"x\"}", 1}, {"{\"k\": \"xy\"}", -1}, {"{\"k\": null}", 1}, {"{\"longer key\": 1}", 1});
}

Test(json_schema, patterns_and_formats_hold_the_string_as_it_is_written)
{
    JUDGED("{\"type\": \"string\", \"pattern\": \"^[A-Z]{2}-\\\\d+$\", \"maxLength\": 5}", 0,
           {"\"AB-1\"", 1}, {"\"AB-12\"", 1}, {"\"AB-123", -1}, {"\"AB-", 0}, {"\"AB-\"", -1},
           {"\"Ab", -1}, {"\"AB-12a", -1}, {"\"\\u0041B-9\"", 1}, {"\"\\u004", 0}, {"\"\\u0061", -1},
           {"\"\\u00", 0}, {"\"\\u01", -1});
    /* without anchors the pattern may match anywhere; a UTF-8 character is judged by its code point */
    JUDGED("{\"type\": \"string\", \"pattern\": \"\xc3\xa9t\xc3\xa9\", \"minLength\": 4}", 0,
           {"\"un \xc3\xa9t\xc3\xa9\"", 1}, {"\"\xc3\xa9t\xc3\xa9\"", -1}, {"\"\xc3\xa9t\xc3\xa9!\"", 1},
           {"\"\xc3\xa9t\xc3", 0}, {"\"x\"", -1}, {"\"x", 0});
    JUDGED("{\"type\": \"string\", \"pattern\": \"^[a-z]+$\"}", 0,
           {"\"abc\"", 1}, {"\"\xc3", -1}, {"\"a\\n", -1}, {"\"a\\ud83d", -1}, {"\"a\\", 0}, {"\"a\\u0062\"", 1});
    JUDGED("{\"type\": \"object\", \"properties\": {\"when\": {\"type\": \"string\", \"format\": \"date-time\"}, "
           "\"id\": {\"type\": [\"string\", \"null\"], \"format\": \"uuid\"}, \"n\": {\"type\": \"integer\", "
           "\"format\": \"int32\"}}}", 0,
           {"{\"when\": \"2024-02-29T23:59:60Z\"}", 1}, {"{\"when\": \"2023-02-29", -1},
           {"{\"when\": \"2024-02-29T24", -1}, {"{\"id\": null, \"n\": 7}", 1},
           {"{\"id\": \"123e4567-e89b-12d3-a456-426614174000\"}", 1}, {"{\"id\": \"123g", -1});
    /* a lenient compile leaves a format it does not hold to the model */
    JUDGED("{\"type\": \"string\", \"format\": \"uri\"}", 1, {"\"not a uri\"", 1});
    /* a host name's 253 characters, an address's 254 */
    char name[300], text[320];
    for (int len = 253; len <= 255; len += 2) {
        for (int i = 0; i < len; i++)
            name[i] = i % 50 == 49 ? '.' : 'a';
        name[len] = 0;
        snprintf(text, sizeof text, "\"%s\"", name);
        json_schema sch;
        errbuf e;
        cr_assert_eq(compile_text("{\"type\": \"string\", \"format\": \"hostname\"}", &sch, &e), 0, "%s", e.msg);
        cr_expect_eq(judge(&sch, text, strlen(text)), len <= 253 ? 1 : -1, "a host name of %d characters", len);
        json_schema_free(&sch);
    }
    /* a surrogate pair written as two escapes is its character; a lone half is refused */
    JUDGED("{\"type\": \"string\", \"pattern\": \"^\\\\uD83D\\\\uDE00[\\\\uD83D\\\\uDE01-\\\\uD83D\\\\uDE4F]$\"}", 0,
           {"\"\xf0\x9f\x98\x80\xf0\x9f\x98\x81\"", 1}, {"\"\xf0\x9f\x98\x80\xf0\x9f\x98\x80\"", -1});
    refused("{\"type\": \"string\", \"pattern\": \"^\\\\uD83D$\"}", "lone surrogate");
    refused("{\"type\": \"string\", \"pattern\": \"^[\\\\uD800-\\\\uDFFF]+$\"}", "lone surrogate");
}

Test(json_schema, number_bounds_are_held_exactly)
{
    JUDGED("{\"type\": \"integer\", \"minimum\": -5, \"exclusiveMaximum\": 120}", 0,
           {"119", 1}, {"12", 1}, {"120", -1}, {"1200", -1}, {"-5", 1}, {"-6", -1}, {"-50", -1}, {"-0", 1},
           {"0", 1}, {"-", 0}, {"1.5", -1}, {"1e2", -1});
    JUDGED("{\"type\": \"number\", \"minimum\": 0.1, \"maximum\": 0.3}", 0,
           {"0.3", 1}, {"0.30", 1}, {"0.300001", -1}, {"0.1", 1}, {"0.09", -1}, {"0.2999", 1}, {"0", 0},
           {"0.", 0}, {"1", -1}, {"0.35", -1}, {"3e-1", -1}, {"-", -1}, {"00", -1});
    JUDGED("{\"type\": \"number\", \"exclusiveMinimum\": 0}", 0,
           {"0", 0}, {"0.0", 0}, {"0.01", 1}, {"-", -1}, {"7", 1}, {"123456789012", 1});
    JUDGED("{\"type\": \"number\", \"minimum\": -2.5, \"maximum\": -1}", 0,
           {"-2.5", 1}, {"-2.51", -1}, {"-1", 1}, {"-1.0", 1}, {"-0.99", -1}, {"-10", -1}, {"-", 0}, {"0", -1});
    JUDGED("{\"type\": \"integer\", \"minimum\": 10, \"exclusiveMinimum\": true}", 0,   /* draft 4 */
           {"10", 0}, {"10]", -1}, {"11", 1}, {"1", 0}, {"100", 1}, {"-", -1});
    JUDGED("{\"type\": \"number\", \"maximum\": 1e21, \"minimum\": 0.0000001}", 0,
           {"1000000000000000000000", 1}, {"1000000000000000000001", -1}, {"0.0000001", 1}, {"0.00000009", -1});
    /* as validators read numbers, as doubles: an exclusive bound is held one
     * double inward (0.99999999999999999999 reads as 1.0), and an integer
     * bound no double is (a schema's 2^53 + 1) too */
    /* at the length cap (48 characters) a bounded number must hold: the last
     * digit of "0.000...0" under an exclusive minimum of 0 may not be 0 */
    JUDGED("{\"type\": \"number\", \"exclusiveMinimum\": 0, \"maximum\": 1}", 0,
           {"0.000000000000000000000000000000000000000000000", 0},
           {"0.0000000000000000000000000000000000000000000000", -1},
           {"0.0000000000000000000000000000000000000000000001", 1});
    JUDGED("{\"type\": \"number\", \"exclusiveMaximum\": 1}", 0,
           {"0.9999999999999999", 1}, {"0.99999999999999999", -1}, {"0.5", 1}, {"1", -1});
    JUDGED("{\"type\": \"integer\", \"minimum\": 9007199254740993}", 0,
           {"9007199254740992", 0}, {"9007199254740994", 1});
    JUDGED("{\"type\": \"integer\", \"maximum\": 9007199254740992}", 0,   /* (a double: exact) */
           {"9007199254740992", 1}, {"9007199254740993", -1});
    /* inside a document: the number ends at the byte after it */
    JUDGED("{\"type\": \"array\", \"items\": {\"type\": \"integer\", \"maximum\": 9}}", 0,
           {"[9, 1]", 1}, {"[10]", -1}, {"[1,", 0}, {"[09]", -1});
    /* Pydantic's enums and Literals carry their type: the values of another type are none */
    JUDGED("{\"enum\": [\"red\", \"green\", 3, 1.5], \"type\": \"string\", \"title\": \"Color\"}", 0,
           {"\"red\"", 1}, {"\"green\"", 1}, {"3", -1}, {"\"blue\"", -1});
    JUDGED("{\"enum\": [\"a\", 3, 1.5, null], \"type\": \"integer\", \"nullable\": true}", 0,
           {"3", 1}, {"1.5", -1}, {"null", 1}, {"\"a\"", -1});
    JUDGED("{\"const\": \"x\", \"type\": \"string\"}", 0, {"\"x\"", 1}, {"\"y\"", -1});
    /* Pydantic's allOf around a $ref; a lenient compile leaves what it cannot hold */
    JUDGED("{\"type\": \"object\", \"properties\": {\"p\": {\"allOf\": [{\"$ref\": \"#/$defs/p\"}], "
           "\"default\": 1}}, \"$defs\": {\"p\": {\"type\": \"integer\", \"maximum\": 3}}}", 0,
           {"{\"p\": 3}", 1}, {"{\"p\": 4}", -1});
    JUDGED("{\"type\": \"integer\", \"minimum\": 5, \"multipleOf\": 2}", 1, {"4", 0}, {"-4", -1}, {"6", 1}, {"7", 1});
    JUDGED("{\"type\": \"integer\", \"minimum\": 2, \"maximum\": 1}", 1, {"7", 1});
    JUDGED("{\"allOf\": [{\"type\": \"string\"}, {\"minLength\": 1}]}", 1, {"[1]", 1});
}

/* ---- random schemas and instances ---- */


/* ---- bounded numbers: every prefix taken goes on to a number within ---- */

static int number_syntax_ok(const char *t, size_t n)
{
    size_t i = t[0] == '-';
    if (i == n || t[i] < '0' || t[i] > '9')
        return 0;
    if (t[i] == '0')
        i++;
    else
        while (i < n && t[i] >= '0' && t[i] <= '9')
            i++;
    if (i < n && t[i] == '.') {
        if (++i == n)
            return 0;
        while (i < n && t[i] >= '0' && t[i] <= '9')
            i++;
    }
    return i == n;
}

/* whether some text of at most max bytes from t[0, n) is whole (each prefix taken) */
static int finishes(const json_schema *s, char *t, size_t n, size_t max)
{
    static const char alphabet[] = "-0123456789.";
    if (judge(s, t, n) == 1)
        return 1;
    for (size_t k = 0; n < max && k < sizeof alphabet - 1; k++) {
        t[n] = alphabet[k];
        if (judge(s, t, n + 1) >= 0 && finishes(s, t, n + 1, max))
            return 1;
    }
    return 0;
}

Test(json_schema, bounded_numbers_never_reach_a_dead_end, .timeout = 120)
{
    static const double at[] = {-19.5, -10, -5, -1, -0.5, 0, 0.1, 0.5, 1, 5, 9.5, 10, 15, 19, 50, 99};
    static const char alphabet[] = "-0123456789.";
    test_rng g = {.s = 11};
    int checked = 0;
    for (int trial = 0; trial < 150; trial++) {
        int integer = test_rnd(&g, 2), lo = (int)test_rnd(&g, 16), hi = lo + (int)test_rnd(&g, (uint32_t)(16 - lo));
        int side = (int)test_rnd(&g, 3), lo_x = test_rnd(&g, 3) == 0, hi_x = test_rnd(&g, 3) == 0;
        if (lo == hi)
            lo_x = hi_x = 0;
        char schema[256];
        int w = snprintf(schema, sizeof schema, "{\"type\": \"%s\"", integer ? "integer" : "number");
        if (side != 1)
            w += snprintf(schema + w, sizeof schema - (size_t)w, ", \"%s\": %g", lo_x ? "exclusiveMinimum" : "minimum", at[lo]);
        if (side != 0)
            w += snprintf(schema + w, sizeof schema - (size_t)w, ", \"%s\": %g", hi_x ? "exclusiveMaximum" : "maximum", at[hi]);
        snprintf(schema + w, sizeof schema - (size_t)w, "}");
        json_schema s;
        errbuf e;
        cJSON *j = cJSON_Parse(schema);
        int rc = json_schema_compile(j, &s, &e);
        cJSON_Delete(j);
        if (rc) {   /* only an integer range without an integer */
            cr_assert(integer && strstr(e.msg, "no integer"), "%s: %s", schema, e.msg);
            continue;
        }
        /* every text of up to 4 bytes: taken as a prefix only when it goes on to a
         * whole number within 7 bytes; whole exactly when it is a number within */
        char t[16];
        for (int len = 1; len <= 4; len++) {
            int total = 1;
            for (int k = 0; k < len; k++)
                total *= (int)(sizeof alphabet - 1);
            for (int code = 0; code < total; code++) {
                for (int k = 0, c = code; k < len; k++, c /= (int)(sizeof alphabet - 1))
                    t[k] = alphabet[c % (int)(sizeof alphabet - 1)];
                t[len] = 0;
                int got = judge(&s, t, (size_t)len);
                int num = number_syntax_ok(t, (size_t)len) && !(integer && memchr(t, '.', (size_t)len));
                double x = num ? strtod(t, NULL) : 0;
                int within = num && (side == 1 || (lo_x ? x > at[lo] : x >= at[lo])) &&
                             (side == 0 || (hi_x ? x < at[hi] : x <= at[hi]));
                cr_assert_eq(got == 1, within, "'%.*s' under %s: whole %d, within %d", len, t, schema, got == 1, within);
                if (got == 0)
                    cr_assert(finishes(&s, t, (size_t)len, 7), "'%.*s' under %s goes on to no number within", len,
                              t, schema);
                checked++;
            }
        }
        json_schema_free(&s);
    }
    cr_log_info("%d texts judged", checked);
}

static const char *const words[] = {"a", "bc", "name", "id", "x", "list", "ab", "value"};

static cJSON *gen_schema(test_rng *g, int depth, cJSON *defs);

/* lengths of a string; bounds of a number (quarters) or an integer, one or
 * both ends, either exclusive, with a value always within */
static void add_limits(test_rng *g, cJSON *o, const char *type)
{
    if (!strcmp(type, "string")) {
        int lo = (int)test_rnd(g, 3);
        if (test_rnd(g, 2))
            cJSON_AddNumberToObject(o, "minLength", lo);
        if (test_rnd(g, 2))
            cJSON_AddNumberToObject(o, "maxLength", lo + (int)test_rnd(g, 4));
        return;
    }
    if (strcmp(type, "integer") && strcmp(type, "number"))
        return;
    double lo = ((double)test_rnd(g, 81) - 40) / 4, hi = lo + 0.5 + (double)test_rnd(g, 24) / 4;
    int side = (int)test_rnd(g, 3);
    if (side != 1)
        cJSON_AddNumberToObject(o, test_rnd(g, 3) ? "minimum" : "exclusiveMinimum", lo);
    if (side != 0)
        cJSON_AddNumberToObject(o, test_rnd(g, 3) ? "maximum" : "exclusiveMaximum", !strcmp(type, "integer") ? hi + 1 : hi);
}

/* the bounds of a number's schema, lo and hi, and whether each is exclusive
 * (no bound: +-1e9); 0 when it has none */
static int limits_of(const cJSON *sch, double *lo, int *lo_x, double *hi, int *hi_x)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(sch, "minimum");
    const cJSON *ax = cJSON_GetObjectItemCaseSensitive(sch, "exclusiveMinimum");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(sch, "maximum");
    const cJSON *bx = cJSON_GetObjectItemCaseSensitive(sch, "exclusiveMaximum");
    *lo = a ? a->valuedouble : ax ? ax->valuedouble : -1e9;
    *hi = b ? b->valuedouble : bx ? bx->valuedouble : 1e9;
    *lo_x = ax != NULL;
    *hi_x = bx != NULL;
    return a || ax || b || bx;
}

/* code points of UTF-8 text */
static int chars_of(const char *t)
{
    int n = 0;
    for (; *t; t++)
        n += ((unsigned char)*t & 0xc0) != 0x80;
    return n;
}

static cJSON *gen_object_schema(test_rng *g, int depth, cJSON *defs)
{
    cJSON *o = cJSON_CreateObject(), *props = cJSON_CreateObject(), *req = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "type", "object");
    int n = (int)test_rnd(g, 4);
    for (int i = 0; i < n; i++) {
        const char *k = words[test_rnd(g, 8)];
        if (cJSON_GetObjectItemCaseSensitive(props, k))
            continue;
        cJSON_AddItemToObject(props, k, gen_schema(g, depth + 1, defs));
        if (test_rnd(g, 2))
            cJSON_AddItemToArray(req, cJSON_CreateString(k));
    }
    cJSON_AddItemToObject(o, "properties", props);
    cJSON_AddItemToObject(o, "required", req);
    uint32_t add = test_rnd(g, 3);
    if (add < 2)
        cJSON_AddBoolToObject(o, "additionalProperties", add == 1);
    return o;
}

static cJSON *gen_schema(test_rng *g, int depth, cJSON *defs)
{
    static const char *const scalars[] = {"string", "integer", "number", "boolean", "null"};
    cJSON *o;
    switch (depth > 3 ? test_rnd(g, 3) : test_rnd(g, 9)) {
    case 0:
    case 1: {
        o = cJSON_CreateObject();
        const char *t = scalars[test_rnd(g, 5)];
        cJSON_AddStringToObject(o, "type", t);
        if (test_rnd(g, 2))
            add_limits(g, o, t);
        return o;
    }
    case 2: {   /* an enum of letters, numbers, literals */
        o = cJSON_CreateObject();
        cJSON *e = cJSON_AddArrayToObject(o, "enum");
        static const char *const vals[] = {"\"a\"", "\"bc\"", "\"b\"", "1", "12", "1.5", "-3", "true",
                                           "null", "false"};
        int n = 1 + (int)test_rnd(g, 4);
        for (int i = 0; i < n; i++)
            cJSON_AddItemToArray(e, cJSON_Parse(vals[test_rnd(g, 10)]));
        return o;
    }
    case 3:
        o = cJSON_CreateObject();
        cJSON *t = cJSON_AddArrayToObject(o, "type");
        cJSON_AddItemToArray(t, cJSON_CreateString(scalars[test_rnd(g, 4)]));
        cJSON_AddItemToArray(t, cJSON_CreateString("null"));
        return o;
    case 4:
    case 5:
        return gen_object_schema(g, depth, defs);
    case 6: {
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "array");
        cJSON_AddItemToObject(o, "items", gen_schema(g, depth + 1, defs));
        int lo = (int)test_rnd(g, 3);
        if (test_rnd(g, 2))
            cJSON_AddNumberToObject(o, "minItems", lo);
        if (test_rnd(g, 2))
            cJSON_AddNumberToObject(o, "maxItems", lo + (int)test_rnd(g, 3));
        return o;
    }
    case 7: {   /* anyOf with alternatives that begin apart */
        o = cJSON_CreateObject();
        cJSON *a = cJSON_AddArrayToObject(o, "anyOf");
        cJSON_AddItemToArray(a, gen_object_schema(g, depth + 1, defs));
        cJSON_AddItemToArray(a, cJSON_Parse(test_rnd(g, 2) ? "{\"type\": \"string\"}" : "{\"type\": \"integer\"}"));
        if (test_rnd(g, 2))
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
static cJSON *gen_instance(test_rng *g, const cJSON *sch, const cJSON *root, int depth)
{
    sch = resolve(sch, root);
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(sch, "enum");
    if (en)
        return cJSON_Duplicate(cJSON_GetArrayItem(en, (int)test_rnd(g, (uint32_t)cJSON_GetArraySize(en))), 1);
    const cJSON *any = cJSON_GetObjectItemCaseSensitive(sch, "anyOf");
    if (any)
        return gen_instance(g, cJSON_GetArrayItem(any, (int)test_rnd(g, (uint32_t)cJSON_GetArraySize(any))), root,
                            depth);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(sch, "type");
    const char *t = cJSON_IsArray(type) ? cJSON_GetArrayItem(type, (int)test_rnd(g, 2))->valuestring
                                        : type->valuestring;
    double nlo, nhi;
    int lo_x, hi_x;
    if (!strcmp(t, "string")) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(sch, "minLength");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(sch, "maxLength");
        int min = a ? a->valueint : 0, max = b ? b->valueint : min + 4;
        char text[32];
        static const char *const pieces[] = {"a", "z", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", " "};
        text[0] = 0;
        for (int k = min + (int)test_rnd(g, (uint32_t)(max - min + 1)); k > 0; k--)
            strcat(text, pieces[test_rnd(g, 6)]);
        return cJSON_CreateString(text);
    }
    if ((!strcmp(t, "integer") || !strcmp(t, "number")) && limits_of(sch, &nlo, &lo_x, &nhi, &hi_x)) {
        /* a value on the grid of eighths (integers) within the bounds */
        double step = !strcmp(t, "integer") ? 1 : 0.125, from = nlo > -1e8 ? nlo : nhi - 40;
        for (;;) {
            double x = ceil(from / step) * step + step * test_rnd(g, 40);
            if ((lo_x ? x > nlo : x >= nlo) && (hi_x ? x < nhi : x <= nhi))
                return cJSON_CreateNumber(x);
        }
    }
    if (!strcmp(t, "integer"))
        return cJSON_CreateNumber((double)test_rnd(g, 2000) - 1000);
    if (!strcmp(t, "number"))
        return cJSON_CreateNumber(((double)test_rnd(g, 2000) - 1000) / 8);
    if (!strcmp(t, "boolean"))
        return cJSON_CreateBool(test_rnd(g, 2));
    if (!strcmp(t, "null"))
        return cJSON_CreateNull();
    if (!strcmp(t, "array")) {
        const cJSON *lo = cJSON_GetObjectItemCaseSensitive(sch, "minItems");
        const cJSON *hi = cJSON_GetObjectItemCaseSensitive(sch, "maxItems");
        int a = lo ? lo->valueint : 0, b = hi ? hi->valueint : a + 3;
        if (depth > 6)
            b = a;
        cJSON *arr = cJSON_CreateArray();
        for (int i = a + (int)test_rnd(g, (uint32_t)(b - a + 1)); i > 0; i--)
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
        if (required || (test_rnd(g, 2) && depth < 6))
            cJSON_AddItemToObject(o, p->string, gen_instance(g, p, root, depth + 1));
    }
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(sch, "additionalProperties");
    if ((!add || cJSON_IsTrue(add)) && test_rnd(g, 3) == 0 && !cJSON_GetObjectItemCaseSensitive(o, "extra"))
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
        double nlo, nhi;
        int lo_x, hi_x, bounded = limits_of(sch, &nlo, &lo_x, &nhi, &hi_x);
        int within = cJSON_IsNumber(v) && (lo_x ? v->valuedouble > nlo : v->valuedouble >= nlo) &&
                     (hi_x ? v->valuedouble < nhi : v->valuedouble <= nhi) &&
                     !(bounded && strpbrk(v->valuestring ? v->valuestring : "", "eE"));
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(sch, "minLength");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(sch, "maxLength");
        if (!strcmp(t, "string"))
            ok |= cJSON_IsString(v) && (!a || chars_of(v->valuestring) >= a->valueint) &&
                  (!b || chars_of(v->valuestring) <= b->valueint);
        else if (!strcmp(t, "number"))
            ok |= within;
        else if (!strcmp(t, "integer"))
            ok |= within && !strpbrk(v->valuestring ? v->valuestring : ".", ".eE");
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
    test_rng g = {.s = 7};
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
                size_t len = n, at = test_rnd(&g, (uint32_t)n);
                static const char bytes[] = "{}[]\",:0-.e1 tnabx";
                char b = bytes[test_rnd(&g, sizeof bytes - 1)];
                switch (test_rnd(&g, 3)) {
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
