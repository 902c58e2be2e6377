/* grammar_trie: a vocabulary's tokens as a trie over what a grammar tells
 * apart, for its mask (grammar_answer.h). Tokens that the grammar's classes
 * do not tell apart (token_groups.h) share one path, their representatives'
 * UTF-8, and all sit at its end; tokens that are not whole characters keep
 * their own bytes; tokens with a character no class holds are left out
 * (never taken). A mask through it feeds each group once: under
 * [A-Za-z ,.]+ K2's 163,840 tokens walk as a few thousand paths. Built on
 * first use and kept with the grammar until gbnf_free. */
#ifndef MOETIER_GRAMMAR_TRIE_H
#define MOETIER_GRAMMAR_TRIE_H

#include "gbnf.h"
#include "vocab.h"
#include "vocab_trie.h"

/* g's trie for v (the grammar is not changed: the trie is a memo); NULL
 * when out of memory or when the grammar has too many classes to group
 * (the caller then walks the vocabulary's own trie). */
const vocab_trie *grammar_trie_get(const gbnf *g, const vocab *v);

#endif
