/* serve: the OpenAI-compatible HTTP server behind `moetier serve`.
 *
 * libmicrohttpd runs one thread per connection; one engine thread serves the
 * queued requests, one at a time or up to --parallel at once in slots, each
 * with its KV cache (a request whose prompt continues a slot's conversation
 * prefills only its new tail; earlier conversations' caches are kept in host
 * memory and copied back when their next turn comes), their decode steps
 * computed together.
 * A connection thread parses and validates its request, queues it (503 when
 * the queue is full) and then waits: for the whole answer, or for each
 * streamed event, which it passes on as Server-Sent Events. While waiting it
 * watches its socket, so a client that goes away (queued or mid-stream) is
 * cancelled at once and the engine moves on at the next token.
 *
 * Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models,
 * POST /tokenize and /detokenize (serve_tokens.h), GET /health, GET /metrics (Prometheus text). Errors are OpenAI-style JSON:
 * 400 malformed body or field, 401 bad or missing API key, 404 unknown route
 * or model, 405 wrong method, 413 body or prompt too large, 503 queue full,
 * 500 engine failure.
 *
 * Test hook: MOETIER_SERVE_FORCE_TEXT=TEXT makes every answer the tokens of
 * TEXT (special tokens allowed) instead of sampled ones, the model still
 * running a forward step per token, so tool-call parsing and streaming can be
 * tested end to end on random-weight models that never emit tool calls. */
#ifndef MOETIER_SERVE_H
#define MOETIER_SERVE_H

#include <stddef.h>

#include "core/app/cli_common.h"
#include "core/engine/sampler.h"
#include "core/text/chat_template.h"
#include "core/text/tokenizer.h"
#include "api_keys.h"

#define SERVE_MAX_ALIASES 16

typedef struct serve_options {
    const char *host;           /* default 127.0.0.1 */
    /* comma-separated: the names a request may call a server bound to this
     * machine by besides its addresses, and the web pages' origins it
     * answers besides its own (request_origin.h); NULL none, "*" any */
    const char *allowed_hosts, *allowed_origins;
    int port;                   /* 0: any free port (printed) */
    api_keys keys;              /* the keys a request may send (none: no check) */
    const char *model_name;     /* the id clients name (`moetier serve`: the directory's name) */
    /* more ids a request may name for the same model (--alias); "*": any */
    const char *aliases[SERVE_MAX_ALIASES];
    int n_aliases;
    size_t max_body;            /* bytes of a request body (413 beyond) */
    int max_prompt_tokens;      /* 0: the context size less one */
    int max_queue;              /* requests waiting or running (503 beyond) */
    /* requests run at once (--parallel), each in a slot with its own KV cache
     * of the context / parallel positions; their decode steps go together */
    int parallel;
    int default_max_tokens;     /* when a request gives none; 0: up to the context */
    /* --draft-lookup: tokens guessed from each conversation (draft_lookup) and
     * checked in the step of the token generated before them; 0: off */
    int draft;
    /* --free-tool-calls: with tool_choice auto, the calls the model writes are
     * left as written instead of held to Kimi's format and the parameters */
    int free_tool_calls;
    /* --keep-alive: seconds a stream waiting on its prefill goes without a byte
     * before a keep-alive is sent between chunks (0: after every chunk) */
    double keep_alive;
    /* --decode-interval: while a prompt's chunk is prefilled, the generating
     * slots get a step between its layers once this many seconds (and at
     * least as long as their last step took) have passed since their last
     * step; 0: they wait for the chunk's end */
    double decode_interval;
    chat_options copt;          /* chat template defaults (--no-think) */
    /* chat requests are refused: the model's chat template is not one
     * moetier renders (completions still take raw prompts) */
    int no_chat;
    int trust_request_template; /* --trust-request-chat-template: a request's own chat_template
                                   is rendered (it is code the server runs) */
    sampler_params sp;          /* sampling defaults; requests override temperature, top_p, seed */
    int seed_given;             /* --seed: sp.seed seeds the requests without a seed of their
                                   own (llama.cpp's); else each is seeded afresh */
    const char *const *dry_breakers; /* DRY's sequence breakers when a request names none */
    int n_dry_breakers;
    /* host memory for earlier conversations' KV caches (core/engine/prompt_cache.h)
     * in GB; < 0: serve_prompt_cache_default_gb() */
    double prompt_cache_gb;
    /* NULL, or where the prompt cache is kept across restarts
     * (core/engine/prompt_cache_disk.h): read at start, written while idle and
     * at a clean stop */
    const char *prompt_cache_dir;
    int no_webui;               /* --no-webui: GET / is a 404 instead of the chat page */
} serve_options;

void serve_options_default(serve_options *o);
/* The prompt cache's default size in GB: the smaller of 4 GB and a sixteenth
 * of the memory available now (before the model is opened, whose automatic
 * DRAM tier is then planned without it: tier_flags.reserve_bytes). */
double serve_prompt_cache_default_gb(void);

/* Serves until SIGINT or SIGTERM. The model, tokenizer and template stay owned
 * by the caller. Returns 0 after a clean shutdown, -1 with e set when the
 * server cannot start. */
int serve_run(cli_model *m, const tokenizer *tok, const chat_template *tpl, const serve_options *o,
              errbuf *e);

#endif
