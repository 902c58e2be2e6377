/* vocab_trie: a vocabulary's regular tokens in a trie of their bytes, so that
 * a mask can walk every token whose bytes begin alike once for the shared
 * start (grammar_answer.h). Special tokens and tokens without bytes are not
 * in it. Built once per vocabulary (json_vocab keeps it). */
#ifndef MOETIER_VOCAB_TRIE_H
#define MOETIER_VOCAB_TRIE_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/errbuf.h"
#include "vocab.h"

typedef struct vocab_trie {
    int32_t *child;   /* [n] first child, -1: none; children in byte order */
    int32_t *sibling; /* [n] next sibling, -1: none */
    int32_t *token;   /* [n] a token whose bytes end here, -1: none */
    int32_t *same;    /* [n_vocab] the next token with the same bytes, -1: none */
    uint8_t *byte;    /* [n] the byte leading here (node 0, the root: none) */
    int n, n_vocab;
} vocab_trie;

int vocab_trie_build(vocab_trie *t, const vocab *v, errbuf *e);

/* Any keys as a trie: token id (below n_vocab) at bytes b[0, n) (n > 0);
 * keys with the same bytes are chained in `same`. keys[] is sorted here. */
typedef struct trie_key {
    const char *b;
    size_t n;
    int32_t id;
} trie_key;
int vocab_trie_build_keys(vocab_trie *t, int n_vocab, trie_key *keys, int n_keys, errbuf *e);
void vocab_trie_free(vocab_trie *t);

#endif
