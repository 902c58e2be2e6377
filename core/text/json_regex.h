/* json_regex: a string's pattern (JSON Schema's "pattern", a subset of
 * ECMA-262 regular expressions) or format ("date", "time", "date-time",
 * "uuid", "email", "ipv4", "hostname") as an automaton over code points that
 * a string is held to while it is written.
 *
 * The automaton is Glushkov's: a state is a set of positions (the pattern's
 * characters and classes, repeats written out), so no epsilon moves; every
 * position left can still reach a match, and each knows the lengths of the
 * completions after it (up to 255, and whether longer ones exist), so a
 * string's prefix is taken only when some completion matches, also within
 * its minLength and maxLength.
 *
 * Taken: literals, escapes (\d \D \w \W \s \S, \t \n \v \f \r \0, \xHH,
 * \uHHHH, escaped punctuation), '.', classes with ranges and negation,
 * groups ((...), (?:...), (?<name>...)), '|', quantifiers (* + ? {n} {n,}
 * {n,m}, lazy or not: the same strings), '^' at the start and '$' at the end
 * (without them the pattern may match anywhere in the string, as JSON Schema
 * reads it). Refused by name: backreferences, lookaround, word boundaries,
 * \p{...}, anchors elsewhere, a pattern of more than JSON_REGEX_MAX_POS
 * positions written out. */
#ifndef MOETIER_JSON_REGEX_H
#define MOETIER_JSON_REGEX_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/errbuf.h"

#define JSON_REGEX_MAX_POS 511 /* positions; 0 is the start */
#define JSON_REGEX_WORDS 8     /* (JSON_REGEX_MAX_POS + 1) / 64 */
#define JSON_REGEX_LENS 256    /* completion lengths known exactly: 0 to 255 */

typedef struct json_regex_set {
    uint64_t w[JSON_REGEX_WORDS];
} json_regex_set;

typedef struct json_regex_range {
    uint32_t lo, hi;
} json_regex_range;

typedef struct json_regex {
    int n_pos; /* positions 1 to n_pos */
    int *cls;  /* each position's class */
    int n_cls;
    int *cls_at;                            /* class c: ranges [cls_at[c], cls_at[c + 1]) */
    json_regex_range *ranges;               /* sorted, apart */
    json_regex_set *follow;                 /* follow[p]: the positions after p; follow[0]: the first */
    json_regex_set last;                    /* the positions a match may end at (0: the empty string) */
    uint64_t (*lens)[JSON_REGEX_LENS / 64]; /* bit l: a completion of l code points after p */
    uint8_t *longer;                        /* a completion of more than 255 after p */
    /* what a user of the pattern keeps with it (pattern_tokens.h), freed by
     * memo_free in json_regex_free; NULL: nothing */
    void *memo;
    void (*memo_free)(void *memo);
} json_regex;

/* pattern[0, len) (UTF-8). -1 with e saying what is not taken and where. */
int json_regex_compile(json_regex *r, const char *pattern, size_t len, errbuf *e);
/* A format's automaton; -1 with e set for a format not held. */
int json_regex_format(json_regex *r, const char *format, errbuf *e);
void json_regex_free(json_regex *r);

/* The state before the string's first code point. */
void json_regex_start(json_regex_set *s);
/* Whether some code point in [lo, hi] may come next with a completion after
 * it whose length (with it) lies in [min, max] (max < 0: any). */
int json_regex_may_take(const json_regex *r, const json_regex_set *s, uint32_t lo, uint32_t hi, long min,
                        long max);
/* Takes code point c (one json_regex_may_take allowed). */
void json_regex_step(const json_regex *r, json_regex_set *s, uint32_t c);
/* Both at once: takes c, and returns whether that was allowed (with [min,
 * max] as json_regex_may_take has them); the state is undefined when not. */
int json_regex_take(const json_regex *r, json_regex_set *s, uint32_t c, long min, long max);
/* Whether class c (of r->cls) holds a code point in [lo, hi]. */
int json_regex_class_meets(const json_regex *r, int c, uint32_t lo, uint32_t hi);
/* Whether the string may end now. */
int json_regex_accepts(const json_regex *r, const json_regex_set *s);
/* Whether some completion's length lies in [min, max] (max < 0: any), the
 * empty one included. */
int json_regex_feasible(const json_regex *r, const json_regex_set *s, long min, long max);

#endif
