/* json_prefix: whether bytes are the beginning of a JSON value that a
 * schema takes (json_schema.h; RFC 8259 JSON), fed incrementally, for
 * constrained output (response_format json_object and json_schema).
 *
 * A state accepts exactly the byte strings that some continuation makes one
 * complete value the schema takes, with two bounds a model could otherwise run
 * past: nesting deeper than JSON_PREFIX_MAX_DEPTH and more than
 * JSON_PREFIX_MAX_WS whitespace bytes in a row. Strings must be valid UTF-8 (no
 * overlong forms, surrogates or code points past U+10FFFF) without raw control
 * characters; an object never holds a key twice. Nothing follows the value but
 * its end. A bounded string or number is held to its bounds as it is written
 * (json_schema.h, json_bounds.h): no prefix is taken that no value within
 * them continues. */
#ifndef MOETIER_JSON_PREFIX_H
#define MOETIER_JSON_PREFIX_H

#include <stddef.h>
#include <stdint.h>

#include "json_schema.h"

#define JSON_PREFIX_MAX_DEPTH 64
#define JSON_PREFIX_MAX_WS 64

typedef struct json_frame {
    int16_t node;               /* the container's schema node */
    int16_t prop;               /* objects: the property being read; -1 another key */
    int32_t count;              /* arrays: items begun */
    uint64_t seen;              /* objects: properties given */
} json_frame;

typedef struct json_prefix {
    const json_schema *schema;
    uint8_t depth;
    uint8_t state;              /* what the next byte may be (json_prefix.c) */
    uint8_t sub;                /* progress inside a literal or \u escape */
    uint8_t utf8_left;          /* continuation bytes a string's character still needs */
    uint8_t utf8_lo, utf8_hi;   /* the next continuation byte's range */
    uint8_t in_key;             /* the string being read is an object's key */
    uint8_t ws;                 /* whitespace bytes in a row */
    uint8_t int_only;           /* the number being read must be an integer */
    int16_t value_node;         /* the node the value that begins next must match */
    int16_t enum_node;          /* in an enum's value: its node */
    uint16_t pos;               /* bytes read of the key or the enum value */
    uint64_t cand;              /* the properties or enum values they still match */
    /* a string value: its node, its characters so far (json_schema.h counts
     * code points), whether the last was a high surrogate's \u escape (a low
     * one's then adds none), the \u escape's value so far, and with a
     * pattern or format the code point being read */
    int16_t str_node;
    uint8_t esc_hi;
    uint16_t hex;
    uint32_t str_len;
    uint32_t cp;
    /* a number: its node; when bounded, its sign and digits so far */
    int16_t num_node;
    uint8_t num_neg, num_len;
    /* the parts a copy takes only while live (json_prefix_copy) */
    json_regex_set re;          /* a pattern's or format's state */
    char num[JSON_NUMBER_MAX];  /* the bounded number's digits */
    uint8_t stack[JSON_PREFIX_MAX_DEPTH];   /* '{' or '[' of each open container */
    json_frame frame[JSON_PREFIX_MAX_DEPTH];    /* (only the first depth are live) */
} json_prefix;

/* A value of schema s (kept by the caller while the state is used). */
void json_prefix_init(json_prefix *j, const json_schema *s);
/* Copies the live part of src (what a feed reads: the pattern's state only
 * inside such a string, the digits only inside a bounded number, the open
 * containers): for trying bytes on a copy, once per token a mask feeds. */
void json_prefix_copy(json_prefix *dst, const json_prefix *src);
/* Takes bytes p[0, n): 0 when the input so far is still a prefix of some value
 * the schema takes (the state moved on), -1 when not (the state is then
 * undefined: feed a copy to try). */
int json_prefix_feed(json_prefix *j, const char *p, size_t n);
/* Inside a string value (not a key, not an enum's) between characters, where
 * any whole characters and escapes go on it: how many more characters it may
 * take (INT_MAX: no bound); else -1. */
int json_prefix_string_room(const json_prefix *j);
/* Inside a string value held to a pattern or format, between characters:
 * whether plain text t[0, n) (whole UTF-8 characters, no quote, backslash or
 * control byte) may go on it (1) or not (0); -1 elsewhere. */
int json_prefix_pattern_takes(const json_prefix *j, const char *t, size_t n);
/* The same for code points cp[0, n) (whole characters, none of them a quote,
 * backslash or control character). */
int json_prefix_pattern_takes_cps(const json_prefix *j, const uint32_t *cp, size_t n);
/* There: the pattern or format the string is held to; NULL elsewhere. */
const json_regex *json_prefix_pattern(const json_prefix *j);
/* 1 when the input is a whole value the schema takes (a number may still go
 * on: 12 is whole, and so is 123). */
int json_prefix_complete(const json_prefix *j);

#endif
