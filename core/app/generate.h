/* generate: the decode loop shared by `run` and `chat`: sample, stream the
 * text, stop at an end token or the length limit, feed the token back. */
#ifndef MOETIER_GENERATE_H
#define MOETIER_GENERATE_H

#include <stdio.h>

#include "cli_common.h"
#include "core/engine/sampler.h"
#include "core/text/gbnf.h"
#include "core/text/json_mask.h"
#include "core/text/reasoning_end.h"
#include "core/text/tokenizer.h"

/* tokens guessed (draft_lookup) and checked, and those kept */
typedef struct gen_draft_stats {
    unsigned long long drafted, accepted, steps;
} gen_draft_stats;

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
    /* optional, instead: the answer is a text of this grammar's root
     * (--grammar; needs the tokenizer and jv); it ends once whole and no
     * token may follow */
    const gbnf *grammar;
    /* with a schema or grammar: where the chat prompt leaves the answer.
     * Inside or opening a reasoning (think_begin, the "<think>" token, the
     * answer's first one), it holds the answer after "</think>"; section_begin
     * (a tool-call section, -1 if none) may not end it there. */
    reasoning_start reasoning;
    int think_begin, section_begin;
    /* --draft-lookup: up to this many tokens are guessed from the context
     * (draft_lookup) for the step of each generated token, and as many of
     * them checked in it as the tuner (draft_tuner) expects to pay; 0: off,
     * at most ENGINE_DRAFT_MAX_T - 1. A guess is kept only where the sampler,
     * drawing as it would one token at a time, picks it, so the answer is the
     * same (bit for bit, logits included) */
    int draft;
    gen_draft_stats *draft_stats;   /* optional: counted into */
    /* optional: what --draft-lookup learned of the guesses and the steps'
     * times (draft_tuner), kept from one call to the next; NULL: learned anew */
    struct draft_tuner *tuner;
} gen_params;

/* logits holds the distribution after the prompt; generated ids (the stop
 * token included) are appended to out. Returns 0; -1 with e set; 1 when the
 * engine's stop_requested ended it; or GEN_CONTEXT_FULL when the last id had
 * no room left in the context (the ids so far are in out, as with a length
 * limit). */
#define GEN_CONTEXT_FULL 2
int generate(cli_model *m, const tokenizer *tok, sampler *s, float *logits, const gen_params *p,
             token_list *out, errbuf *e);
/* "draft lookup: ..." on f: tokens guessed, steps, kept */
void gen_draft_stats_print(const gen_draft_stats *st, FILE *f);

#endif
