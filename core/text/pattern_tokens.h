/* pattern_tokens: a vocabulary's tokens grouped by what a pattern's automaton
 * (json_regex.h) tells apart (token_groups.h), so that a mask tries each group
 * once instead of each token. The table is built on first use for a
 * vocabulary and kept with the pattern until json_regex_free. */
#ifndef MOETIER_PATTERN_TOKENS_H
#define MOETIER_PATTERN_TOKENS_H

#include <stdint.h>

#include "json_regex.h"
#include "token_groups.h"
#include "vocab.h"

typedef struct pattern_tokens {
    token_groups tg;
    int8_t *taken; /* [tg.n_groups] in one state: 0 not yet tried, 1 taken, -1 refused */
} pattern_tokens;

/* Whether a state takes code points cp[0, n) (1) or not (0). */
typedef int (*pattern_take_fn)(const void *state, const uint32_t *cp, int n);

/* r's table for v, built on first use and kept in r (the pattern is not
 * changed: the table is a memo); NULL when out of memory (the caller then
 * feeds each token). */
pattern_tokens *pattern_tokens_get(const json_regex *r, const vocab *v);
/* A new state: the groups' outcomes are forgotten. */
void pattern_tokens_reset(pattern_tokens *pt);
/* Whether the state takes token id, whose group is not TG_SPLIT: its group
 * tried once per state by take. */
int pattern_tokens_taken(pattern_tokens *pt, int id, pattern_take_fn take, const void *state);

#endif
