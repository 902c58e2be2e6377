/* llama_response: the answer of llama.cpp's /completion in its shape.
 *
 * Streamed, each piece of text is an event {"index", "content", "tokens",
 * "stop": false, "id_slot": -1, "tokens_predicted", "tokens_evaluated"} (with
 * "completion_probabilities" for n_probs), and the last one is the whole
 * result with "stop": true and no text; llama.cpp sends no [DONE]. Not
 * streamed, the result is the body: the text, "stop_type" ("eos", "limit",
 * "word" with its "stopping_word"), token counts and "timings" as llama.cpp
 * reports them. Text is made valid UTF-8 first; every function returns a
 * malloc'd string, NULL when out of memory. */
#ifndef MOETIER_LLAMA_RESPONSE_H
#define MOETIER_LLAMA_RESPONSE_H

#include <stddef.h>

#include "oai_response.h"

typedef struct llama_result {
    const char *model;
    const char *content; /* the answer's text; "" on a stream's last event */
    size_t content_len;
    const int *ids; /* return_tokens: the answer's token ids; NULL: [] */
    int n_ids;
    const oai_logprobs *lp; /* n_probs: the tokens' probabilities; NULL: none asked */
    const char *prompt;     /* the prompt's text */
    size_t prompt_len;
    int slot;
    int tokens_predicted, tokens_evaluated, tokens_cached;
    const char *stop_type;     /* "eos", "limit", "word" or "none" (cut short) */
    const char *stopping_word; /* "word": the stop string; else "" */
    int prompt_n;              /* prompt tokens computed (not cached) */
    double prompt_ms, predicted_ms;
} llama_result;

/* One streamed piece: "data: {...}\n\n". */
char *llama_event(const char *text, size_t len, const int *ids, int n_ids, const oai_logprobs *lp, int slot,
                  int tokens_predicted, int tokens_evaluated);
/* A progress event of a streamed prompt (return_progress): no text, and
 * prompt_progress. */
char *llama_event_progress(const oai_progress *p);
/* The result: the body, or (stream) its last event. */
char *llama_result_body(const llama_result *res, int stream);
/* Several prompts' results (their bodies, in order) as llama.cpp answers a
 * request with a list of prompts: an array of them, each's "index" its
 * prompt's place; NULL when one is not a result or out of memory. */
char *llama_batch_response(char *const *bodies, int n);

#endif
