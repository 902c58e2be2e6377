/* token_groups: a vocabulary's tokens grouped by what a set of character
 * classes tells apart, so that a mask tries each group once instead of each
 * token (a pattern's classes: pattern_tokens.h; a grammar's: grammar_trie.h).
 *
 * What reads code points only through classes (a pattern's automaton, a
 * grammar's parse) treats alike the code points that the same classes hold:
 * an atom. A token of whole UTF-8 characters is, to it, its sequence of
 * atoms, so tokens with the same sequence are taken or refused together from
 * any state, and one string stands for them all: each character replaced by
 * its atom's representative, a code point of the atom (never NUL or a
 * surrogate). K2's vocabulary under [A-Za-z ,.]+ falls into a few hundred
 * groups. A token with a character no class holds, or a NUL (no answer holds
 * one), is refused from every state. */
#ifndef MOETIER_TOKEN_GROUPS_H
#define MOETIER_TOKEN_GROUPS_H

#include <stdint.h>

#include "vocab.h"

#define TG_SPLIT (-1) /* not whole UTF-8 characters (or special, or empty): fed as bytes */
#define TG_NEVER (-2) /* a character no class holds, or a NUL: never taken */

/* A class: sorted, disjoint [lo, hi] pairs, or (negated) the code points
 * outside them. */
typedef struct class_ranges {
    const uint32_t *pairs; /* [2 * n] */
    uint32_t n;
    uint8_t negated;
} class_ranges;

typedef struct token_groups {
    const vocab *v; /* the vocabulary it was built for */
    int n_vocab;
    int *group;    /* [n_vocab] each token's group, or TG_SPLIT / TG_NEVER */
    uint32_t *cps; /* each group's characters: one representative per atom */
    int *at;       /* [n_groups + 1]: group g is cps[at[g], at[g + 1]) */
    int n_groups;
} token_groups;

/* The classes' atoms cost (intervals between range ends) x (classes / 64);
 * past this a grammar of very many classes is not grouped (its tokens are
 * then tried one by one, as correct and slower). */
#define TG_MAX_ATOM_WORK (1L << 25)

/* Groups v's tokens by classes cls[0, n_cls). 0; -1 out of memory, or the
 * classes past TG_MAX_ATOM_WORK. */
int token_groups_build(token_groups *tg, const vocab *v, const class_ranges *cls, int n_cls);
void token_groups_free(token_groups *tg);

#endif
