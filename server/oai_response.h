/* oai_response: the JSON bodies and Server-Sent Events of the OpenAI API.
 *
 * Chat: "chat.completion" objects, and "chat.completion.chunk" events whose
 * deltas carry role, content, reasoning_content and tool_calls; completions:
 * "text_completion" objects and events. Text from the model is made valid UTF-8
 * first (invalid bytes and NUL become U+FFFD), so a client's JSON parser never
 * sees broken strings. Every function returns a malloc'd string, NULL when out
 * of memory. */
#ifndef MOETIER_OAI_RESPONSE_H
#define MOETIER_OAI_RESPONSE_H

#include <stddef.h>

#include "core/engine/token_logprobs.h"
#include "core/text/tool_calls.h"
#include "oai_request.h"

typedef struct oai_meta {
    oai_kind kind;
    const char *id;             /* "chatcmpl-..." / "cmpl-..." */
    const char *model;
    long long created;          /* Unix seconds */
    int choice;                 /* events: the index of the choice they carry */
} oai_meta;

typedef struct oai_usage {
    int prompt_tokens, completion_tokens, cached_tokens;
    int reasoning_tokens;       /* of the completion's, those inside its reasoning */
} oai_usage;

/* A token as logprobs show it: its bytes (not always whole UTF-8) and
 * log-probability. */
typedef struct oai_token_logprob {
    const char *bytes;
    size_t len;
    float logprob;
    int id;
    int rank;                   /* prompt_logprobs: 1 for the likeliest token; 0 elsewhere */
} oai_token_logprob;

/* One token of the answer in logprobs. */
typedef struct oai_logprob_step {
    oai_token_logprob chosen;
    oai_token_logprob top[LOGPROBS_MAX_TOP];
    int n_top;
    int text_offset;            /* completions: the answer's characters before it */
    int unscored;               /* echo's first prompt token: no log-probability (null) */
} oai_logprob_step;

/* The tokens an event or a response reports; NULL: logprobs not asked for. */
typedef struct oai_logprobs {
    const oai_logprob_step *steps;
    int n;
    int post;   /* llama.cpp's post_sampling_probs: probabilities among the sampler's kept tokens */
} oai_logprobs;

/* {"error": {"message", "type", "param", "code"}} */
char *oai_error_body(const oai_error *e);

/* One streamed event, "data: {...}\n\n": role (first chat event), text
 * (content; for completions the text), reasoning, tool calls numbered from
 * call_index, the log-probabilities of the tokens since the last event;
 * finish_reason non-NULL on the last event. */
char *oai_event_delta(const oai_meta *m, int with_role, const char *text, size_t text_len,
                      const char *reasoning, size_t reasoning_len, const tool_call *calls,
                      int n_calls, int call_index, const oai_logprobs *lp,
                      const char *finish_reason);
/* How far a prompt's prefill is: llama.cpp's prompt_progress {total, cache,
 * processed, time_ms}; processed counts the cached tokens too. */
typedef struct oai_progress {
    int total, cache, processed;
    double ms;                  /* since the prefill began */
} oai_progress;

/* A streamed answer's progress event (return_progress): a chunk with an
 * empty delta (its role when with_role: OpenAI's first chunk) or text, and
 * prompt_progress beside its choices. */
char *oai_event_progress(const oai_meta *m, int with_role, const oai_progress *p);
/* prompt_progress as an object (the llama.cpp route's events too). */
struct cJSON *oai_progress_json(const oai_progress *p);
/* The usage event of stream_options.include_usage (empty choices). */
char *oai_event_usage(const oai_meta *m, const oai_usage *u);
/* An error inside a stream that already started. */
char *oai_event_error(const oai_error *e);

/* One answer of a request (of `n`). */
typedef struct oai_choice {
    const char *text, *reasoning;
    size_t text_len, reasoning_len;
    const tool_call *calls;
    int n_calls;
    const oai_logprobs *lp;     /* NULL: not asked for */
    const char *finish_reason;
} oai_choice;

/* The whole response of a request that did not stream: its n choices, and
 * vLLM's prompt_logprobs unless NULL (chat: beside the choices; completions:
 * in each): a list of {"id": {"logprob", "rank", "decoded_token"}}, the
 * prompt token's and its alternatives', null for the first token. */
char *oai_full_response(const oai_meta *m, const oai_choice *choices, int n, const oai_logprobs *prompt_lp,
                        const oai_usage *u);

/* The response of a request answered by n jobs (a completions batch, n
 * choices made at once) from their full responses (bodies[i], each of
 * choices_per_body choices): the first's, holding every body's choices in
 * order (choice c of body i at index i * choices_per_body + c, as OpenAI
 * numbers a batch's) and the usage summed, a prompt's tokens counted once for
 * each run of bodies_per_prompt bodies (the parts of one prompt). NULL when a
 * body is not such a response or out of memory. */
char *oai_batch_response(char *const *bodies, int n, int choices_per_body, int bodies_per_prompt);

/* GET /v1/models: the model, then its aliases (but "*"), each with vLLM's
 * max_model_len (the positions a request may fill, prompt and answer) */
char *oai_models_body(const char *model, const char *const *aliases, int n_aliases, long long created,
                      int max_model_len);
/* GET /v1/models/{model} */
char *oai_model_body(const char *model, long long created, int max_model_len);

#endif
