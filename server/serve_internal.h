/* serve_internal: what the HTTP side (serve.c) and the engine side
 * (serve_job.c) of the server share: the queue of jobs and its lock. */
#ifndef MOETIER_SERVE_INTERNAL_H
#define MOETIER_SERVE_INTERNAL_H

#include <pthread.h>

#include "core/app/cli_prompt_file.h"
#include "core/engine/draft_tuner.h"
#include "core/engine/prompt_cache.h"
#include "core/engine/prompt_cache_disk.h"
#include "core/text/json_mask.h"
#include "oai_request.h"
#include "oai_response.h"
#include "serve.h"
#include "serve_metrics.h"

typedef enum job_phase { JOB_QUEUED, JOB_RUNNING, JOB_DONE } job_phase;

/* What a chat's rendered prompt says about its answer (serve_chat_prompt). */
typedef struct chat_prompt_info {
    reasoning_start reasoning;  /* where the prompt leaves the answer */
    tool_format tools;          /* the layout its template writes calls in (tool_choice holds them so) */
    char tools_why[200];        /* why none, when none */
} chat_prompt_info;

typedef struct job {
    struct job *next;
    oai_request req;
    token_list ids;             /* the prompt, validated before the job is queued */
    int truncated;              /* truncate_prompt_tokens dropped the prompt's start */
    chat_prompt_info chat;      /* chat: what its prompt says of the answer */
    long long seq;              /* its number among the server's requests */
    char id[48];
    long long created;
    double t_arrival;
    job_phase phase;
    int status;                 /* HTTP status once known; 0 before */
    int cancelled;              /* the client went away */
    double t_alive;             /* streamed: when bytes for it were last emitted (engine thread) */
    int refs;                   /* the connection and the queue/engine */
    char *out;                  /* bytes for the client: events, or the whole body */
    size_t out_len, out_cap, out_sent;
    /* one of the jobs of a streamed request whose n choices are made at once:
     * its choice's index, and its usage once done; the response ends the
     * stream (the summed usage, [DONE]) */
    int part, choice0;
    int part_finished;          /* its answer made to the end (usage holds its count) */
    oai_usage usage;
} job;

/* A request being answered: the engine side's state of one conversation
 * (serve_job.c). */
typedef struct slot_run slot_run;

/* One of the --parallel places a request runs in: its conversation's KV cache
 * (slot 0's is the engine's own), kept after the request so that the
 * conversation's next turn, sent to the same slot, prefills only what is new. */
typedef struct slot {
    engine_seq seq;             /* unused in slot 0 */
    int prompt_end;             /* its conversation's last prompt's length (prompt_cache_prepare) */
    slot_run *run;              /* NULL: free */
    double last_used;
} slot;

/* What GET /slots shows of a slot, published by the engine thread between
 * its passes and in a prompt chunk's pauses (under the server's lock). */
typedef struct slot_view {
    const char *state;          /* "idle", "prefilling" or "generating" */
    int n_past;                 /* positions its cache holds */
    char request[48];           /* the id of the request in it ("" when idle) */
    int prompt_tokens, prompt_done, generated;
} slot_view;

/* the 503 message of requests a stopping server does not run to the end */
#define SHUTTING_DOWN "the server is shutting down"

typedef struct server {
    cli_model *m;
    const tokenizer *tok;
    const chat_template *tpl;
    serve_options o;
    int loopback;               /* listening on a loopback address only (request_origin.h) */
    char model_name[256];
    int stop_ids[VOCAB_MAX_REPLY_STOPS], n_stop_ids;
    int section_begin;          /* a tool-call section's first marker, Kimi's or DeepSeek's; -1 if none */
    tool_format tool_format;    /* the format the model's template writes calls in (tool_choice holds them so) */
    char tool_why[200];         /* why none, when none */
    int think_begin;            /* <think>, -1 if none: an answer's first token may open a reasoning */
    token_list forced;          /* MOETIER_SERVE_FORCE_TEXT (the whole answer) or
                                 * MOETIER_SERVE_FORCE_PREFIX (its start): test hooks */
    json_vocab jv;              /* the tokenizer's table for JSON-constrained answers */
    dry_breakers dry_default;   /* DRY's breakers for requests that name none */
    int has_forced, forced_is_prefix;
    pthread_mutex_t mu;         /* guards everything below, and jobs' shared fields */
    pthread_cond_t cv;          /* broadcast on any change of a job or the queue */
    job *head, *tail;
    int n_jobs;                 /* queued or running */
    int answering;              /* requests given a job whose connection is not done */
    int stopping;
    long long seq;
    serve_metrics metrics;
    prompt_cache pc;            /* the engine thread's alone */
    prompt_identity pc_id;      /* what --prompt-cache-dir's files are named by */
    uint64_t pc_synced;         /* pc.changes when the directory last matched it */
    int pc_lock;                /* --prompt-cache-dir held for this server (-1: none) */
    slot *slots;                /* [o.parallel], the engine thread's alone */
    float *step_rows;           /* [o.parallel * (1 + o.draft)][vocab]: a decode step's logits */
    draft_cost step_cost;       /* --draft-lookup: decode steps' times by rows */
    draft_accept accept_seen;   /* and how the last finished request's guesses fared */
    slot_view *views;           /* [o.parallel] */
    int prefilling;             /* the slot whose prefill chunk runs, -1: none */
    double step_end, step_took; /* the last decode step's end and time (slots_decode) */
    /* a slot's positions, for the other threads: the engine thread swaps the
     * slots' caches in and out of the engine */
    int ctx;
} server;

/* Makes slot i's conversation the engine's (or back again): a no-op for slot 0. */
void slot_swap(server *s, int i);
/* The slots' KV caches (slot 0: the engine's own); 0, or -1 with e set. */
int slots_create(server *s, errbuf *e);
void slots_destroy(server *s);

/* A chat request's prompt as the model reads it: the conversation in the
 * chat template, then the answer's start a client gave (malloc'd into *text);
 * info (may be NULL) says where it leaves the answer (inside reasoning,
 * outside, or the model's to open) and the layout of the tool calls its
 * template writes (a request's own template's, else the server's); -1 with
 * err set (a 400, also when the server takes no chat: no_chat). */
int serve_chat_prompt(server *s, const oai_request *r, char **text, size_t *len, chat_prompt_info *info,
                      oai_error *err);
/* The prompt's token ids into j->ids: the chat rendered, tokenized and held to
 * the context, on the connection's thread so a bad request never waits in the
 * queue; -1 with err set (a 400). same: NULL, or a job made from the same
 * body (another choice of it), whose ids and chat prompt are taken instead of
 * rendering and encoding again. */
int job_prompt_ids(server *s, job *j, const job *same, oai_error *err);
/* The most tokens a prompt may have: --max-prompt, at most a slot's positions
 * less one. */
int serve_prompt_limit(const server *s);
/* The engine thread: serves queued jobs until s->stopping. */
void *serve_engine_main(void *arg);
/* Drops one reference (s->mu held); frees the job at zero. */
void job_release(job *j);
/* Appends bytes for the client and wakes its connection (takes s->mu). */
void job_emit(server *s, job *j, char *owned);

#endif
