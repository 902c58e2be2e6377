/* oai_request: parses and validates the body of an OpenAI-style request
 * (POST /v1/chat/completions or /v1/completions) into what the engine needs.
 *
 * Every malformed body or field is refused with the HTTP status and the
 * OpenAI-style error fields the client gets back: a message naming the field
 * and what was expected, and `param` (the field's name). Unknown fields are
 * ignored, as OpenAI-compatible servers do, so newer clients keep working.
 *
 * Accepted fields: model, messages (chat), prompt (completions: a string, token
 * ids, or an array of either: a batch of up to OAI_MAX_BATCH prompts, each
 * answered as a request of its own, not streamed), tools, tool_choice ("auto", "none", "required" or a
 * named function: anything but "none" declares the tools to the model;
 * "required" and a named function hold the answer to tool calls, after the
 * reasoning when thinking is on; with "auto" a call the model begins is held
 * unless the server has --free-tool-calls), parallel_tool_calls (false: the answer ends once one call is made),
 * temperature [0, 2], top_p (0, 1], max_tokens
 * / max_completion_tokens (>= 1), stop (a string or up to OAI_MAX_STOP strings), seed,
 * stream, stream_options.include_usage, n (1 to 16 choices; not with echo),
 * presence_penalty and
 * frequency_penalty [-2, 2], logit_bias ({"token id": bias in [-100, 100]}),
 * logprobs (chat: true with top_logprobs 0 to 20; completions: the number of
 * alternatives, 0 to 20), response_format (text; json_object: the answer is
 * one JSON object; json_schema: one value its schema takes, as far as
 * json_schema.h enforces it; with thinking on, after the reasoning), completions' echo (the prompt comes back before the
 * answer, with its tokens' logprobs; max_tokens may then be 0), and the chat template switches "thinking" (also
 * inside chat_template_kwargs), reasoning_effort ("none": thinking off, any
 * other effort: on); the extensions of vLLM and llama.cpp top_k (0
 * or -1: off), min_p [0, 1), repetition_penalty (or repeat_penalty) > 0 and its window repeat_last_n;
 * llama.cpp's DRY (dry_multiplier >= 0, dry_base >= 1, dry_allowed_length, dry_penalty_last_n
 * (-1: the context), dry_sequence_breakers), top_n_sigma, XTC (xtc_probability,
 * xtc_threshold in [0, 1]), typical_p, dynatemp_range and dynatemp_exponent, and Mirostat
 * (mirostat 0-2, mirostat_tau, mirostat_eta), and its code completion limits n_indent and
 * t_max_predict_ms;
 * vLLM's ends (stop_token_ids, min_tokens, ignore_eos), guided decoding,
 * truncate_prompt_tokens, skip_special_tokens and prompt_logprobs (0 to 20 alternatives; not
 * streamed, one choice).
 *
 * Known fields whose effect this server does not have (chat's echo, best_of,
 * suffix (a completion's is made a fill-in-the-middle prompt before this parse,
 * serve_infill.h), schema keywords json_schema.h does not enforce) are refused unless they ask for
 * nothing: an answer without what was asked would be silently wrong. */
#ifndef MOETIER_OAI_REQUEST_H
#define MOETIER_OAI_REQUEST_H

#include <cJSON.h>
#include <stdint.h>

#include "core/engine/sampler.h"
#include "core/text/chat_format.h"
#include "core/text/dry_breakers.h"
#include "core/text/json_schema.h"
#include "core/text/gbnf.h"
#include "core/text/regex_answer.h"
#include "core/text/tool_force.h"

#define OAI_MAX_STOP 16
#define OAI_MAX_CHOICE_LIST 256     /* guided_choice's strings */
#define OAI_MAX_BATCH 256
#define OAI_MAX_CHOICES 16

typedef enum oai_kind { OAI_CHAT, OAI_COMPLETION } oai_kind;

/* The API a request came by, and its answer goes out in: OpenAI's chat and
 * completions, or a chat request underneath: Anthropic's Messages API
 * (anthropic_request.h) or OpenAI's Responses API (responses_request.h); or
 * a completions request underneath: llama.cpp's /completion
 * (llama_request.h). */
typedef enum oai_api { API_OPENAI, API_ANTHROPIC, API_RESPONSES, API_LLAMA } oai_api;

typedef struct oai_error {
    int status;                 /* HTTP status: 400, 404, 413, ... */
    char type[48];              /* "invalid_request_error", ... */
    char param[48];             /* the offending field, "" when none */
    char code[48];              /* "model_not_found", ... "" when none */
    char message[256];
} oai_error;

typedef struct oai_request {
    oai_kind kind;
    oai_api api;
    cJSON *root;                /* owns the parsed body; the pointers below point into it */
    const char *model;          /* NULL when absent */
    const cJSON *messages;      /* chat */
    const cJSON *tools;         /* chat, NULL when none (or tool_choice "none") */
    int tool_choice_required;   /* tool_choice "required": the answer is tool calls */
    const char *tool_choice_name;   /* tool_choice naming a function: one call of it */
    int one_call;               /* parallel_tool_calls false: the answer ends with its first call */
    tool_force *force;          /* forced or auto calls' constraint (set up with the
                                 * vocabulary, job_prompt_ids); NULL: free */
    const char *prompt;         /* completions: text, or NULL when given as ids */
    const cJSON *prompt_ids;    /* completions: token ids (not yet checked against the
                                 * vocabulary) */
    int batch_n;                /* completions: 2 or more prompts (prompt and prompt_ids
                                 * then unset; oai_batch_body); 0 otherwise */
    int stream, include_usage;
    int return_progress;        /* llama.cpp's: a streamed answer's prompt_progress events */
    int max_tokens;             /* 0: up to the context */
    int n_choices;              /* n: answers made from the prompt (with --parallel, serve.c
                                 * may make each a job of its own) */
    int echo;                   /* completions: the prompt comes back first */
    int score_only;             /* echo with max_tokens 0: nothing is generated */
    float temperature, top_p;   /* -1 when absent: the server's default */
    float min_p;                /* -1 when absent */
    float repeat_penalty;       /* 0 when absent */
    int top_k;                  /* -1 when absent; 0: off */
    float presence_penalty, frequency_penalty;  /* NaN when absent: the server's default */
    sampler_bias *bias;         /* logit_bias, n_bias entries (ids not yet
                                 * checked against the vocabulary) */
    int n_bias;
    json_schema *schema;        /* response_format json_object or json_schema (or vLLM's
                                 * guided_json): what the answer must be; NULL: free text */
    json_regex *regex;          /* vLLM's guided_regex or guided_choice: the pattern the
                                 * whole answer matches; NULL: none */
    gbnf *grammar;              /* llama.cpp's grammar, vLLM's guided_grammar: the GBNF
                                 * grammar whose root the whole answer is; NULL: none */
    int logprobs;               /* 1: each token's log-probability is returned */
    int top_logprobs;           /* with that many alternatives per token */
    int prompt_logprobs;        /* vLLM's: 1 when each prompt token's log-probability
                                 * and rank are returned */
    int prompt_top_logprobs;    /* with that many alternatives per token */
    int has_seed;
    uint64_t seed;
    int seed_fresh;             /* llama.cpp's seed -1: a fresh seed even under serve --seed */
    const char *stop[OAI_MAX_STOP];
    int n_stop;
    /* vLLM's: tokens that end the answer (after their text, if not special),
     * ids not yet checked against the vocabulary; the end tokens and these
     * banned before min_tokens, the end tokens always with ignore_eos */
    int stop_token_ids[OAI_MAX_STOP];
    int n_stop_token_ids;
    int min_tokens;
    int ignore_eos;
    int include_stop;           /* vLLM's include_stop_str_in_output: the stop string that
                                 * ended the answer stays in its text */
    int post_sampling;          /* llama.cpp's post_sampling_probs: the logprobs asked for are
                                 * those of the sampler's kept tokens (sampler_report) */
    int keep_special;           /* vLLM's skip_special_tokens false: special tokens' text
                                 * stays in the answer */
    int return_tokens;          /* llama.cpp's: the answer's token ids come back too */
    int repeat_last_n;          /* llama.cpp's: the repetition penalty's window when
                                 * has_repeat_last_n (-1: the context) */
    int has_repeat_last_n;
    /* llama.cpp's samplers (sampler.h), each -1 when absent but where said */
    float dry_multiplier, dry_base;
    int dry_allowed_length;
    int dry_penalty_last_n, has_dry_penalty_last_n; /* -1: the context */
    const char *dry_breakers[DRY_MAX_BREAKERS];     /* dry_sequence_breakers, in root */
    int n_dry_breakers, has_dry_breakers;
    float top_n_sigma;
    int has_top_n_sigma;
    float xtc_probability, xtc_threshold;
    float typical_p, dynatemp_range, dynatemp_exponent, mirostat_tau, mirostat_eta;
    int mirostat;
    dry_breakers dry;           /* dry_breakers' tokens (made with the vocabulary, serve_job.c) */
    int n_indent;               /* llama.cpp's: a line of the answer after its first, indented by
                                 * fewer spaces or tabs, ends it before its text; 0: no rule */
    double t_max_predict_ms;    /* llama.cpp's: once the answer holds a line break, it ends when
                                 * this long has passed since its first token; 0: no limit */
    int truncate_prompt;        /* vLLM's truncate_prompt_tokens: the prompt's last this many
                                 * tokens are kept; -1: as many as the server takes; 0: all */
    chat_options copt;          /* thinking etc.; starts from the server's defaults */
    int reasoning_budget;       /* with thinking: the reasoning's tokens at most, its end
                                 * forced after them; 0: no limit */
    const char *assistant_prefix;   /* chat: the answer's start, given by the client
                                     * (Anthropic's final assistant message); NULL: none */
    int continue_final;         /* vLLM's continue_final_message: the prompt ends inside the
                                 * last message, which the answer continues */
    const char *chat_template;  /* vLLM's: the request's own chat template (Jinja); NULL: the
                                 * model's (served only with --trust-request-chat-template) */
    const cJSON *tool_namespaces;   /* Responses: the namespaces' names (strings) whose
                                     * functions are declared as NAMESPACE.NAME; NULL: none */
    int reasoning_summary;      /* Responses: reasoning.summary asked for (auto, concise,
                                 * detailed): the reasoning comes as the item's summary */
    const cJSON *response_settings; /* Responses: the request's settings as the response
                                     * object repeats them (in root); NULL: none */
} oai_request;

/* The body as a JSON object: refused (NULL, err a 400) when it is not UTF-8,
 * not JSON as json.loads takes it, not an object, holds a key twice in one
 * object or an escaped NUL. */
cJSON *oai_body_parse(const char *body, size_t len, oai_error *err);
/* Parses body[0..len) of a request of `kind`. defaults: the server's chat
 * options (the request may override "thinking"). Returns 0, or -1 with err
 * filled (status 400). */
int oai_request_parse(oai_kind kind, const char *body, size_t len, const chat_options *defaults,
                      oai_request *r, oai_error *err);
/* The same from a body already parsed (oai_body_parse), whose ownership
 * passes to r whatever the result. */
int oai_request_from_json(oai_kind kind, cJSON *root, const chat_options *defaults, oai_request *r,
                          oai_error *err);
void oai_request_free(oai_request *r);
/* The body of a batch's prompt i as a request of its own: the batch's body
 * with "prompt" its i-th element (malloc'd; NULL when out of memory). */
char *oai_batch_body(const oai_request *r, int i);

/* Fills err; returns -1 (for `return oai_fail(...)`). */
int oai_fail(oai_error *err, int status, const char *type, const char *param, const char *code,
             const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* A 400 invalid_request_error naming param; returns -1. */
int oai_bad(oai_error *err, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
