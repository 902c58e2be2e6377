/* reasoning_end: where a thinking model's reasoning ends in its answer.
 *
 * Kimi's thinking models answer "<think>...reasoning...</think>answer" (the
 * prompt ends with "<think>"), and "</think>" is plain text to the tokenizer:
 * several tokens, or part of one. A JSON schema or a forced tool call holds
 * only the answer after it, so the server follows the bytes of the reasoning
 * until they close it. A token that would close it and go on with more than
 * whitespace in the same token would put text no mask saw into the answer:
 * such tokens are banned while the reasoning is open.
 *
 * Where the prompt leaves the answer's start to the model (K2-Thinking's
 * template: the model writes "<think>" itself), the gate lets the answer's
 * first token open the reasoning: a held answer then starts after it, as it
 * does after a prompt that opened it. */
#ifndef MOETIER_REASONING_END_H
#define MOETIER_REASONING_END_H

#include <stddef.h>

#include "reasoning_start.h"
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

typedef struct reasoning_gate {
    int reasoning;      /* inside the reasoning: a held answer waits for its end */
    int may_open;       /* the next token may open it (REASONING_MODEL, first token) */
    int think_begin;    /* the token "<think>", -1: the vocabulary has none */
    reasoning_end end;
} reasoning_gate;

void reasoning_gate_init(reasoning_gate *g, reasoning_start start, int think_begin);

enum {
    GATE_REASONING = 0,     /* the token is the reasoning's (the one opening it included) */
    GATE_CLOSED,            /* it closes the reasoning: the answer starts at *after */
    GATE_ANSWER,            /* it is the answer's */
};
/* Follows token id, bytes b[0..n): one of GATE_*. */
int reasoning_gate_feed(reasoning_gate *g, int id, const char *b, size_t n, size_t *after);

#endif
