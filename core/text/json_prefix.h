/* json_prefix: whether bytes are the beginning of a JSON object (RFC 8259),
 * fed incrementally, for output constrained to JSON (response_format
 * json_object).
 *
 * A state accepts exactly the byte strings that some continuation makes one
 * complete JSON object, with two bounds a model could otherwise run past:
 * nesting deeper than JSON_PREFIX_MAX_DEPTH and more than JSON_PREFIX_MAX_WS
 * whitespace bytes in a row. Strings must be valid UTF-8 (no overlong forms,
 * surrogates or code points past U+10FFFF) without raw control characters.
 * Once the object is closed nothing more is taken. The state is a plain value:
 * copying it tries bytes without changing the original. */
#ifndef MOETIER_JSON_PREFIX_H
#define MOETIER_JSON_PREFIX_H

#include <stddef.h>
#include <stdint.h>

#define JSON_PREFIX_MAX_DEPTH 64
#define JSON_PREFIX_MAX_WS 64

typedef struct json_prefix {
    uint8_t stack[JSON_PREFIX_MAX_DEPTH];   /* '{' or '[' of each open container */
    uint8_t depth;
    uint8_t state;              /* what the next byte may be (json_prefix.c) */
    uint8_t sub;                /* progress inside a literal or \u escape */
    uint8_t utf8_left;          /* continuation bytes a string's character still needs */
    uint8_t utf8_lo, utf8_hi;   /* the next continuation byte's range */
    uint8_t in_key;             /* the string being read is an object's key */
    uint8_t ws;                 /* whitespace bytes in a row */
} json_prefix;

void json_prefix_init(json_prefix *j);
/* Takes bytes p[0, n): 0 when the input so far is still a prefix of some JSON
 * object (the state moved on), -1 when not (the state is then undefined: feed
 * a copy to try). */
int json_prefix_feed(json_prefix *j, const char *p, size_t n);
/* 1 when the input is one complete object. */
int json_prefix_complete(const json_prefix *j);

#endif
