/* pattern_tokens: a vocabulary's tokens grouped by what a pattern's automaton
 * (json_regex.h) tells apart, so that a mask tries each group once instead of
 * each token.
 *
 * The automaton reads a code point only through the classes that hold it, so
 * the code points held by the same classes (an atom) act alike. A token of
 * whole UTF-8 characters is, to the automaton, its sequence of atoms: tokens
 * with the same sequence are taken or refused together from any state (K2's
 * vocabulary under [A-Za-z ,.]+ falls into a few hundred groups). A token with
 * a character that no class holds, or a NUL, is refused from every state. The table is
 * built on first use for a vocabulary and kept with the pattern until
 * json_regex_free. */
#ifndef MOETIER_PATTERN_TOKENS_H
#define MOETIER_PATTERN_TOKENS_H

#include <stdint.h>

#include "json_regex.h"
#include "vocab.h"

#define PT_SPLIT (-1) /* not whole UTF-8 characters (or special, or empty): fed as bytes */
#define PT_NEVER (-2) /* a character no class holds, or a NUL (no answer holds one): never taken */

typedef struct pattern_tokens {
    const vocab *v; /* the vocabulary it was built for */
    int n_vocab;
    int *group;    /* [n_vocab] each token's group, or PT_SPLIT / PT_NEVER */
    uint32_t *cps; /* each group's characters: one code point per atom */
    int *at;       /* [n_groups + 1]: group g is cps[at[g], at[g + 1]) */
    int n_groups;
    int8_t *taken; /* [n_groups] in one state: 0 not yet tried, 1 taken, -1 refused */
} pattern_tokens;

/* Whether a state takes code points cp[0, n) (1) or not (0). */
typedef int (*pattern_take_fn)(const void *state, const uint32_t *cp, int n);

/* r's table for v, built on first use and kept in r (the pattern is not
 * changed: the table is a memo); NULL when out of memory (the caller then
 * feeds each token). */
pattern_tokens *pattern_tokens_get(const json_regex *r, const vocab *v);
/* A new state: the groups' outcomes are forgotten. */
void pattern_tokens_reset(pattern_tokens *pt);
/* Whether the state takes token id, whose group is not PT_SPLIT: its group
 * tried once per state by take. */
int pattern_tokens_taken(pattern_tokens *pt, int id, pattern_take_fn take, const void *state);

#endif
