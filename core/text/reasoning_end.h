/* reasoning_end: where a thinking model's reasoning ends in its answer.
 *
 * Kimi's thinking models answer "<think>...reasoning...</think>answer" (the
 * prompt ends with "<think>"), and "</think>" is plain text to the tokenizer:
 * several tokens, or part of one. A JSON schema or a forced tool call holds
 * only the answer after it, so the server follows the bytes of the reasoning
 * until they close it. A token that would close it and go on with more than
 * whitespace in the same token would put text no mask saw into the answer:
 * such tokens are banned while the reasoning is open. */
#ifndef MOETIER_REASONING_END_H
#define MOETIER_REASONING_END_H

#include <stddef.h>

#include "vocab.h"

typedef struct reasoning_end {
    int matched;        /* bytes of "</think>" matched so far */
} reasoning_end;

void reasoning_end_init(reasoning_end *m);
/* Feeds n bytes of the reasoning: 1 when they close it, with *after the
 * offset of the first byte after "</think>"; else 0. */
int reasoning_end_feed(reasoning_end *m, const char *b, size_t n, size_t *after);
/* logits[t] = -inf for each token t of v that would close the reasoning and
 * carry more than whitespace after "</think>" (bare: anything at all, for an
 * answer held to a pattern, which would have to take that whitespace) */
void reasoning_end_mask(const reasoning_end *m, const vocab *v, int bare, float *logits, int n_logits);

#endif
