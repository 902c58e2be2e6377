/* json_schema: a JSON Schema compiled for constrained output (response_format
 * json_schema), the part of it a byte automaton can hold to as the answer is
 * written (json_prefix.h).
 *
 * Taken: "type" (a name or a list), "properties", "required",
 * "additionalProperties" (false, true or a schema; absent: any other key),
 * "items", "minItems", "maxItems", "minLength", "maxLength" (characters:
 * code points, a surrogate pair's escapes one), "pattern" and "format"
 * (json_regex.h: held as the string is written; beside them lengths up to
 * 255, and no \u escape of a surrogate: an astral character is written as
 * UTF-8), "minimum", "maximum",
 * "exclusiveMinimum", "exclusiveMaximum" (numbers, or draft 4's booleans;
 * json_bounds.h: held exactly, a bounded number written without exponent),
 * "enum", "const", "anyOf" / "oneOf" whose alternatives begin with different
 * bytes (object, array, string, number, true/false, null, or an enum's
 * values), "allOf" of one schema (Pydantic's wrapper of a "$ref"), "$ref"
 * to "#/$defs/..." or "#/definitions/..." (recursion included), "nullable";
 * annotations (title, description, default, examples, $schema, $id,
 * $comment, deprecated, readOnly, writeOnly) are ignored. Any other keyword
 * (multipleOf, uniqueItems, a format not held, ...) is refused by name rather
 * than left unenforced. An enum or const value must be written as cJSON prints it
 * (compact, with its escapes); a "type" beside it (Pydantic's enums) keeps the
 * values of that type. "integer" takes no fraction or exponent. */
#ifndef MOETIER_JSON_SCHEMA_H
#define MOETIER_JSON_SCHEMA_H

#include <cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/errbuf.h"
#include "json_bounds.h"
#include "json_regex.h"

#define JSON_SCHEMA_MAX_PROPS 64    /* properties of one object */
#define JSON_SCHEMA_MAX_ENUM 64     /* values of one enum */
#define JSON_SCHEMA_MAX_NODES 4096

enum {
    JT_OBJECT = 1, JT_ARRAY = 2, JT_STRING = 4, JT_NUMBER = 8, JT_INTEGER = 16, JT_BOOLEAN = 32,
    JT_NULL = 64, JT_ALL = 127
};

typedef struct js_node {
    unsigned types;             /* JT_* a value may have; 0 for an enum or anyOf */
    /* objects */
    int n_props;
    char **key;                 /* each property's name as written in JSON (escaped) */
    size_t *key_len;
    int *prop;                  /* each property's node */
    uint64_t required;          /* bit i: property i is required */
    int extra;                  /* the node of other keys' values; -1: no other key */
    /* arrays */
    int items;
    int min_items, max_items;
    /* strings: their length in characters (code points); their pattern or
     * format, NULL if none */
    int min_len, max_len;
    json_regex *re;
    /* numbers: their bounds, when bounded */
    int bounded;
    json_bounds bounds;
    /* enum / const: the values as cJSON prints them */
    int n_enum;
    char **enum_text;
    size_t *enum_len;
    /* anyOf / oneOf */
    int n_alt;
    int *alt;
    uint8_t first[32];          /* bit b: a value of this node may begin with byte b */
} js_node;

/* Node 0 is any JSON value. */
typedef struct json_schema {
    js_node *node;
    int n, cap;
    int root;
} json_schema;

/* Compiles schema (an object, or true) into s; -1 with e naming the keyword
 * and where it is (a JSON pointer) when it cannot be enforced. */
int json_schema_compile(const cJSON *schema, json_schema *s, errbuf *e);
/* The same, but keywords that cannot be enforced (pattern, format, ...),
 * limits no value meets and allOf of several schemas are left out rather
 * than refused: the structure is held, those constraints are the model's to
 * keep (a tool's parameters, as non-strict function calling treats them). */
int json_schema_compile_lenient(const cJSON *schema, json_schema *s, errbuf *e);
/* The schema of an answer that is any JSON object (response_format json_object). */
int json_schema_any_object(json_schema *s, errbuf *e);
void json_schema_free(json_schema *s);

#endif
