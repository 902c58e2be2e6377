/* generate: the decode loop shared by `run` and `chat`: sample, stream the
 * text, stop at an end token or the length limit, feed the token back. */
#ifndef MOETIER_GENERATE_H
#define MOETIER_GENERATE_H

#include <stdio.h>

#include "cli_common.h"
#include "core/engine/sampler.h"
#include "core/text/json_mask.h"
#include "core/text/tokenizer.h"

typedef struct gen_params {
    int max_new;
    const int *stop_ids;        /* generation ends after one of these */
    int n_stop;
    int show_special;           /* print special tokens' names */
    FILE *out;                  /* streamed text; NULL: none */
    void (*on_token)(void *ctx, int id);    /* optional, called for every generated id */
    void *ctx;
    /* optional: the answer is held to this schema (--json-schema; needs the
     * tokenizer), jv its token table; it ends once the value is whole */
    const json_schema *schema;
    const json_vocab *jv;
} gen_params;

/* logits holds the distribution after the prompt; generated ids (the stop
 * token included) are appended to out. Returns 0; -1 with e set; 1 when the
 * engine's stop_requested ended it; or GEN_CONTEXT_FULL when the last id had
 * no room left in the context (the ids so far are in out, as with a length
 * limit). */
#define GEN_CONTEXT_FULL 2
int generate(cli_model *m, const tokenizer *tok, sampler *s, float *logits, const gen_params *p,
             token_list *out, errbuf *e);

#endif
