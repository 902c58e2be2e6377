/* json_mask: the tokens that may come next in an answer constrained to JSON
 * (response_format json_object or json_schema).
 *
 * A regular token may come when the automaton takes its bytes after the
 * answer so far; a special token never, except an end token once the value
 * is whole (and then nothing else, unless a number may still go on). Every
 * token is decided (K2's 163,840 in about a millisecond, bench_json_mask):
 * those whose first byte cannot come next at once, where few bytes may come
 * next those whose first two cannot (the pairs tried once per mask), plain
 * text inside a free string at once, plain text inside a string held to a
 * pattern a group of alike tokens at a time (pattern_tokens.h), the others by
 * feeding their bytes to a copy of the state; so the draw is exactly the
 * sampler's over the tokens left. */
#ifndef MOETIER_JSON_MASK_H
#define MOETIER_JSON_MASK_H

#include "json_prefix.h"
#include "vocab.h"

/* What the mask looks up per token, built once per vocabulary: its first
 * byte, whether it is plain string text (whole characters and escapes, no
 * quote that ends the string), which any free string with room for its
 * characters takes, and how many characters it adds (code points; an escape
 * is one). */
typedef struct json_vocab {
    uint8_t *first;
    uint8_t *plain;
    uint8_t *chars;
    uint8_t *raw;       /* plain without escapes: its bytes are its characters */
    int n;
    struct vocab_trie *trie;    /* the tokens' bytes as a trie, built on first use (grammar_answer) */
} json_vocab;

int json_vocab_build(json_vocab *jv, const vocab *v, errbuf *e);
void json_vocab_free(json_vocab *jv);

/* Sets to -inf the logits[0, V) of the tokens that cannot follow the answer
 * held in j; end_ids[0, n_end) end it. jv: v's table, or NULL (every token's
 * bytes are then fed). Returns how many tokens may follow. */
int json_mask_logits(const json_prefix *j, const vocab *v, const json_vocab *jv, const int *end_ids,
                     int n_end, float *logits, int V);

#endif
