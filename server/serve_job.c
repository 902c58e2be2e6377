/* serve_job: the engine thread of the server. Takes queued requests into its
 * slots (--parallel; one by default): KV prefix reuse, prefill, the sampling
 * with stop tokens, stop strings and tool-call parsing, and the events or the
 * final body for the client; the slots' decode steps run together. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/base/progress.h"
#include "core/engine/draft_lookup.h"
#include "core/engine/draft_tuner.h"
#include "core/text/grammar_answer.h"
#include "core/text/json_mask.h"
#include "core/text/reasoning_end.h"
#include "core/text/tool_calls.h"
#include "core/text/utf8.h"
#include "anthropic_response.h"
#include "llama_response.h"
#include "oai_response.h"
#include "responses_response.h"
#include "serve_internal.h"
#include "stop_filter.h"
#include "tiers/tiered_source.h"

void job_release(job *j)
{
    if (--j->refs > 0)
        return;
    oai_request_free(&j->req);
    token_list_free(&j->ids);
    free(j->out);
    free(j);
}

static void append_locked(job *j, const char *p, size_t n)
{
    if (j->out_sent == j->out_len)
        j->out_sent = j->out_len = 0;   /* all sent: start over */
    if (j->out_len + n + 1 > j->out_cap) {
        size_t cap = (j->out_len + n + 1) * 2;
        char *nb = realloc(j->out, cap);
        if (!nb)
            return;     /* the client misses this piece; nothing else is at risk */
        j->out = nb;
        j->out_cap = cap;
    }
    memcpy(j->out + j->out_len, p, n);
    j->out_len += n;
    j->out[j->out_len] = 0;
}

void job_emit(server *s, job *j, char *owned)
{
    if (!owned)
        return;
    j->t_alive = now_seconds();
    pthread_mutex_lock(&s->mu);
    append_locked(j, owned, strlen(owned));
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    free(owned);
}

/* The answer's status is known: the connection may send its headers. */
static void job_set_status(server *s, job *j, int status)
{
    pthread_mutex_lock(&s->mu);
    j->status = status;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static int job_cancelled(server *s, job *j)
{
    pthread_mutex_lock(&s->mu);
    int c = j->cancelled || s->stopping;
    pthread_mutex_unlock(&s->mu);
    return c;
}

/* Cancelled because the server stops, not because the client left. */
static int stopped_by_shutdown(server *s, job *j)
{
    pthread_mutex_lock(&s->mu);
    int r = s->stopping && !j->cancelled;
    pthread_mutex_unlock(&s->mu);
    return r;
}

typedef struct prefill_stop {
    server *s;
    job *j;
} prefill_stop;

/* A stream waiting on a long prefill (K2 on CPUs: minutes for a long prompt)
 * gets a keep-alive every s->o.keep_alive seconds, between chunks: an SSE
 * comment (OpenAI's clients skip it) or Anthropic's ping event, so that
 * clients and proxies that give up on an idle connection keep it open. */
static void keep_alive(server *s, job *j)
{
    if (!j->req.stream || j->status != 200 || now_seconds() - j->t_alive < s->o.keep_alive)
        return;
    job_emit(s, j, strdup(j->req.api == API_ANTHROPIC ? "event: ping\ndata: {\"type\":\"ping\"}\n\n"
                                                      : ": keep-alive\n\n"));
}

static int prefill_stop_requested(void *ctx)
{
    prefill_stop *p = ctx;
    keep_alive(p->s, p->j);
    return job_cancelled(p->s, p->j);
}

/* An error before anything was sent: the status and an error body; for a
 * part of a streamed response, whose stream may have begun with the others',
 * an error event. */
static void job_fail(server *s, job *j, const oai_error *err)
{
    char *body = j->req.api == API_ANTHROPIC ? anthropic_error_body(err)
                 : j->part ? oai_event_error(err) : oai_error_body(err);
    pthread_mutex_lock(&s->mu);
    if (body)
        append_locked(j, body, strlen(body));
    j->status = j->part ? 200 : err->status;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    free(body);
}

typedef struct buf {
    char *p;
    size_t len;
} buf;

static void buf_add(buf *b, const char *p, size_t n)
{
    char *nb = realloc(b->p, b->len + n + 1);
    if (!nb)
        return;
    memcpy(nb + b->len, p, n);
    b->len += n;
    nb[b->len] = 0;
    b->p = nb;
}

/* What a request produced so far, and how it goes out. */
typedef struct answer {
    server *s;
    job *j;
    oai_meta meta;
    int stream, chat, role_sent;        /* role_sent: the first event is out (Anthropic's
                                         * message_start, the Responses API's
                                         * response.created) */
    int anthropic;                      /* Anthropic's Messages API */
    anthropic_stream as;                /* its stream's blocks */
    int responses;                      /* OpenAI's Responses API */
    responses_out ro;                   /* its output items, streamed or kept */
    int llama;                          /* llama.cpp's /completion */
    int *ids;                           /* llama: the answer's token ids, n_ids of them */
    int n_ids, ids_sent;                /* streaming: sent up to ids_sent */
    int prompt_tokens;                  /* llama: the prompt's, each event says */
    int slot;                           /* llama: the slot answering, each event says */
    buf text, reasoning;                /* non-streaming: the whole answer */
    tool_call *calls;                   /* non-streaming: copies */
    int n_calls;
    int calls_seen;                     /* numbering of streamed calls */
    tool_stream ts;
    int want_lp;                        /* logprobs asked for */
    oai_logprob_step *lp;               /* each token's, n_lp of them */
    int n_lp, lp_sent;                  /* streaming: sent up to lp_sent */
    utf8_chars text_chars;              /* characters of the text so far */
    char echo_tail[4];                  /* streaming: the echoed prompt's unfinished last */
    size_t echo_tail_len;               /* character, sent with the text that follows it */
    const char *finish;                 /* once the choice is over; NULL: cut short */
} answer;

/* The log-probabilities of the tokens not yet streamed (all of them when not
 * streaming; NULL when not asked for), and marks them sent. */
static const oai_logprobs *unsent_logprobs(answer *a, oai_logprobs *out)
{
    if (!a->want_lp)
        return NULL;
    *out = (oai_logprobs){a->lp + a->lp_sent, a->n_lp - a->lp_sent, a->j->req.post_sampling};
    if (a->stream)
        a->lp_sent = a->n_lp;
    return out;
}

static oai_token_logprob shown_token(const vocab *v, token_logprob t)
{
    size_t n = 0;
    const char *b = vocab_decode(v, t.id, &n);
    return (oai_token_logprob){b ? b : "", b ? n : 0, t.logprob, t.id, 0};
}

/* Appends a token's log-probabilities to steps[0..*n); st NULL: a prompt's
 * first token, which nothing before it scores. NULL when out of memory. */
static oai_logprob_step *push_logprobs(oai_logprob_step **steps, int *n, const vocab *v, int id,
                                       const step_logprobs *st)
{
    oai_logprob_step *nl = realloc(*steps, (size_t)(*n + 1) * sizeof *nl);
    if (!nl)
        return NULL;
    *steps = nl;
    oai_logprob_step *o = &nl[(*n)++];
    *o = (oai_logprob_step){.chosen = shown_token(v, (token_logprob){id, 0}), .unscored = !st};
    if (st) {
        o->chosen.logprob = st->chosen.logprob;
        o->n_top = st->n_top;
        for (int k = 0; k < st->n_top; k++)
            o->top[k] = shown_token(v, st->top[k]);
    }
    return o;
}

/* Keeps a token's log-probabilities for the answer; st NULL: an echoed
 * prompt's first token. shown: its bytes are in the answer's text, whose
 * characters (as the client gets them: a broken character one U+FFFD) give its
 * text_offset. */
static void answer_logprobs(answer *a, const vocab *v, int id, int shown, const step_logprobs *st)
{
    oai_logprob_step *o = push_logprobs(&a->lp, &a->n_lp, v, id, st);
    if (!o)
        return;
    size_t before;
    utf8_chars_feed(&a->text_chars, o->chosen.bytes, shown ? o->chosen.len : 0, &before);
    o->text_offset = (int)before;
}

/* post_sampling_probs: the draw's kept tokens and the chosen one's
 * probability among them, as log-probabilities. */
static void report_logprobs(const sampler_report *r, int id, int n_top, step_logprobs *st)
{
    st->chosen = (token_logprob){id, r->chosen > 0 ? logf(r->chosen) : LOGPROB_FLOOR};
    st->n_top = r->n < n_top ? r->n : n_top;
    for (int i = 0; i < st->n_top; i++)
        st->top[i] = (token_logprob){r->top[i].id, r->top[i].p > 0 ? logf(r->top[i].p) : LOGPROB_FLOOR};
}

/* A token of llama.cpp's answer (its ids come back with return_tokens). */
static void answer_id(answer *a, int id)
{
    int *grown = realloc(a->ids, (size_t)(a->n_ids + 1) * sizeof *grown);
    if (!grown)
        return;
    a->ids = grown;
    a->ids[a->n_ids++] = id;
}

static char *dup_str(const char *s)
{
    return strdup(s ? s : "");
}

/* Passes text the stop filter released to the client, through the tool-call
 * parser for chat. */
static void answer_text(answer *a, const char *p, size_t n, int final)
{
    const char *content = p, *reasoning = "";
    size_t content_len = n, reasoning_len = 0;
    const tool_call *calls = NULL;
    int n_calls = 0;
    tool_stream_delta d;
    errbuf e;
    if (a->chat) {
        if ((final ? tool_stream_finish(&a->ts, &d, &e) : tool_stream_feed(&a->ts, p, n, &d, &e)))
            return;
        content = d.content;
        content_len = d.content_len;
        reasoning = d.reasoning;
        reasoning_len = d.reasoning_len;
        calls = d.calls;
        n_calls = d.n_calls;
    }
    if (a->j->req.one_call && a->calls_seen + n_calls > 1)
        n_calls = a->calls_seen ? 0 : 1;    /* the first call only (parallel_tool_calls false) */
    if (!content_len && !reasoning_len && !n_calls)
        return;
    if (a->responses) {
        char *events = responses_add(&a->ro, reasoning, reasoning_len, content, content_len, calls, n_calls);
        if (a->stream)
            job_emit(a->s, a->j, events);
        else
            free(events);   /* (the items are kept in a->ro) */
    } else if (a->stream && a->anthropic) {
        job_emit(a->s, a->j, anthropic_event_delta(&a->as, reasoning, reasoning_len, content, content_len,
                                                   calls, n_calls));
    } else if (a->stream && a->llama) {
        oai_logprobs lp;
        const int *ids = a->j->req.return_tokens ? a->ids + a->ids_sent : NULL;
        job_emit(a->s, a->j, llama_event(content, content_len, ids, ids ? a->n_ids - a->ids_sent : 0,
                                         unsent_logprobs(a, &lp), a->slot, a->n_ids, a->prompt_tokens));
        a->ids_sent = a->n_ids;
    } else if (a->stream) {
        oai_logprobs lp;
        char *with_tail = NULL;
        if (a->echo_tail_len) {
            /* (the echo's unfinished character and the text that may finish it:
             * one character, as the unstreamed answer has it) */
            size_t n_all = a->echo_tail_len + content_len;
            if ((with_tail = malloc(n_all))) {
                memcpy(with_tail, a->echo_tail, a->echo_tail_len);
                memcpy(with_tail + a->echo_tail_len, content, content_len);
                content = with_tail;
                content_len = n_all;
            } else {    /* (out of memory: the bytes in order, the character in two) */
                job_emit(a->s, a->j, oai_event_delta(&a->meta, 0, a->echo_tail, a->echo_tail_len, "", 0, NULL,
                                                     0, 0, NULL, NULL));
            }
            a->echo_tail_len = 0;
        }
        job_emit(a->s, a->j, oai_event_delta(&a->meta, a->chat && !a->role_sent, content, content_len,
                                             reasoning, reasoning_len, calls, n_calls,
                                             a->calls_seen, unsent_logprobs(a, &lp), NULL));
        a->role_sent = 1;
        free(with_tail);
    } else {
        buf_add(&a->text, content, content_len);
        buf_add(&a->reasoning, reasoning, reasoning_len);
        tool_call *nc = realloc(a->calls, (size_t)(a->n_calls + n_calls) * sizeof *nc);
        if (nc || !n_calls) {
            a->calls = nc;
            for (int i = 0; i < n_calls; i++)
                a->calls[a->n_calls++] = (tool_call){dup_str(calls[i].id), dup_str(calls[i].name),
                                                     dup_str(calls[i].arguments)};
        }
    }
    a->calls_seen += n_calls;
}

/* A completion's prompt as text: as sent, or its ids' text (sent as ids, or
 * truncated; *decoded then holds it, to be freed); NULL (n 0) when out of
 * memory. */
static const char *prompt_text(const vocab *v, const job *j, char **decoded, size_t *n)
{
    errbuf e;
    *decoded = NULL;
    *n = 0;
    if (!j->truncated && j->req.prompt) {
        *n = strlen(j->req.prompt);
        return j->req.prompt;
    }
    return vocab_decode_ids(v, j->ids.ids, (int)j->ids.n, decoded, n, &e) == 0 ? *decoded : NULL;
}

/* Whether an echoed prompt token's bytes are in the text: a special token (a
 * prompt's bos) is not, unless the answer shows them. */
static int echoed_text(const vocab *v, const job *j, int id)
{
    return !vocab_is_special(v, id) || j->req.keep_special;
}

/* An echoed prompt: the answer's first text, with its tokens' logprobs when
 * asked for; it does not pass the stop filter. */
static void answer_echo(answer *a, const vocab *v, const job *j)
{
    char *decoded = NULL;
    size_t n = 0;
    const char *p = prompt_text(v, j, &decoded, &n);
    if (a->stream) {
        oai_logprobs lp;
        if (p) {
            a->echo_tail_len = utf8_unfinished_tail(p, n);
            n -= a->echo_tail_len;
            memcpy(a->echo_tail, p + n, a->echo_tail_len);
        }
        job_emit(a->s, a->j, oai_event_delta(&a->meta, 0, p, n, "", 0, NULL, 0, 0,
                                             unsent_logprobs(a, &lp), NULL));
    } else {
        buf_add(&a->text, p ? p : "", n);
    }
    free(decoded);
}

static void answer_free(answer *a)
{
    free(a->text.p);
    free(a->reasoning.p);
    for (int i = 0; i < a->n_calls; i++) {
        free(a->calls[i].id);
        free(a->calls[i].name);
        free(a->calls[i].arguments);
    }
    free(a->calls);
    free(a->lp);
    free(a->ids);
    if (a->chat)
        tool_stream_free(&a->ts);
    responses_out_free(&a->ro);
}

static int is_stop_id(const server *s, int id)
{
    for (int i = 0; i < s->n_stop_ids; i++)
        if (s->stop_ids[i] == id)
            return 1;
    return 0;
}

/* one of the request's stop_token_ids (vLLM's: the answer ends after it) */
static int is_request_stop_id(const job *j, int id)
{
    for (int i = 0; i < j->req.n_stop_token_ids; i++)
        if (j->req.stop_token_ids[i] == id)
            return 1;
    return 0;
}

/* Special tokens reach the client only as the tool-call and reasoning markers
 * the chat parser turns into fields (in a chat, where the answer is at one
 * that means something: a section's end outside a section is none); others
 * (reserved, media, ...) are dropped, as OpenAI-style servers do, unless the
 * request keeps them (vLLM's skip_special_tokens false). */
static int shown_special(const server *s, const job *j, const answer *a, int id, const char *name, size_t n)
{
    if (!vocab_is_special(&s->tok->v, id) || j->req.keep_special)
        return 1;
    return tool_stream_marker(name, n) && (!a->chat || tool_stream_takes(&a->ts, name, n));
}

/* The answer's start a client gave, after the prompt's generation prompt:
 * the model goes on from it. -1 when out of memory. */
static int append_prefix(char **text, size_t *len, const char *prefix)
{
    size_t n = strlen(prefix);
    char *grown = realloc(*text, *len + n + 1);
    if (!grown)
        return -1;
    memcpy(grown + *len, prefix, n + 1);
    *text = grown;
    *len += n;
    return 0;
}

/* The tool calls the conversation's assistant turns hold: Kimi numbers a
 * call's id (functions.NAME:K) across the conversation, from 0. */
static int history_calls(const cJSON *messages)
{
    int n = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, messages) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (cJSON_IsString(role) && !strcmp(role->valuestring, "assistant"))
            n += cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(m, "tool_calls"));
    }
    return n;
}

int serve_chat_prompt(server *s, const oai_request *r, char **text, size_t *len, chat_prompt_info *info,
                      oai_error *err)
{
    errbuf e;
    *text = NULL;
    /* vLLM's per-request template: code the server runs, so only when trusted */
    chat_template own = {.vars = s->tpl->vars, .sort_tools = s->tpl->sort_tools};
    if (r->chat_template && !s->o.trust_request_template)
        return oai_fail(err, 400, "invalid_request_error", "chat_template", NULL,
                        "a request's own 'chat_template' is rendered only by a server started with "
                        "--trust-request-chat-template (a template is code the server runs)");
    if (r->chat_template && !(own.jinja = jinja_compile(r->chat_template, strlen(r->chat_template), &e)))
        return oai_fail(err, 400, "invalid_request_error", "chat_template", NULL, "%s", e.msg);
    if (!own.jinja && s->o.no_chat) /* (the server's log at start says which template and why) */
        return oai_fail(err, 400, "invalid_request_error", "messages", "chat_template_unsupported",
                        "this server takes no chat requests: its model's chat template could not be compiled "
                        "(the server's log at start says where; completions take raw prompts; started with "
                        "--chat-template kimi-k2.5, it renders chats in Kimi K2.5's format)");
    const chat_template *tpl = own.jinja ? &own : s->tpl;
    int rc = r->continue_final
                 ? chat_template_render_continue(tpl, r->messages, r->tools, &r->copt, text, len, &e)
                 : chat_template_render(tpl, r->messages, r->tools, &r->copt, text, len, &e);
    if (!rc && info && own.jinja && r->tools) /* (a call rendered through it: only when tools may be held) */
        info->tools = tool_format_detect(&own, &s->tok->v, info->tools_why, sizeof info->tools_why);
    else if (info) {
        info->tools = s->tool_format;
        snprintf(info->tools_why, sizeof info->tools_why, "%s", s->tool_why);
    }
    jinja_free(own.jinja);
    if (rc)
        return oai_fail(err, 400, "invalid_request_error", "messages", NULL, "%s", e.msg);
    /* where the answer starts, as the prompt shows it: K2.5's generation prompt
     * opens <think> with thinking on and closes it with thinking off;
     * K2-Thinking's model opens it itself. An answer that continues a text (a
     * continued message, its start given, no generation prompt) opens none,
     * nor one a request or --no-think asked to be without. */
    if (info) {
        info->reasoning = chat_prompt_reasoning(*text, *len);
        if (info->reasoning == REASONING_MODEL &&
            (r->continue_final || r->assistant_prefix || !r->copt.add_generation_prompt ||
             (r->copt.thinking_set && !r->copt.thinking)))
            info->reasoning = REASONING_CLOSED;
    }
    if (r->assistant_prefix && append_prefix(text, len, r->assistant_prefix)) {
        free(*text);
        *text = NULL;
        return oai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    }
    return 0;
}

int serve_prompt_limit(const server *s)
{
    return s->o.max_prompt_tokens && s->o.max_prompt_tokens < s->ctx - 1 ? s->o.max_prompt_tokens : s->ctx - 1;
}

int job_prompt_ids(server *s, job *j, const job *same, oai_error *err)
{
    token_list *ids = &j->ids;
    errbuf e;
    char *text = NULL;
    size_t len = 0;
    const char *p = j->req.prompt;
    int V = s->m->mw.cfg.vocab_size, rc = 0;
    if (same) {
        /* (its chat first: what follows checks tool_choice against the layout) */
        j->chat = same->chat;
        j->truncated = same->truncated;
        for (size_t i = 0; i < same->ids.n; i++)
            if (token_list_push(ids, same->ids.ids[i]))
                return oai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    } else if (j->req.prompt_ids) {
        const cJSON *x;
        cJSON_ArrayForEach(x, j->req.prompt_ids) {
            if (x->valuedouble >= V)
                return oai_fail(err, 400, "invalid_request_error", "prompt", NULL,
                                "the prompt's token %.0f is outside the vocabulary (0 to %d)",
                                x->valuedouble, V - 1);
            if (token_list_push(ids, (int)x->valuedouble))
                return oai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        }
    } else {
        if (j->req.kind == OAI_CHAT) {
            if (serve_chat_prompt(s, &j->req, &text, &len, &j->chat, err))
                return -1;
            p = text;
        } else {
            len = strlen(p);
        }
        /* (a chat template writes its own start; a raw prompt gets the tokenizer's) */
        rc = (j->req.kind == OAI_CHAT ? tokenizer_encode : tokenizer_encode_prompt)(s->tok, p, len,
                                                                                 TOK_ALLOW_SPECIAL, ids, &e);
        free(text);
    }
    if (rc)
        return oai_fail(err, 400, "invalid_request_error", j->req.kind == OAI_CHAT ? "messages" : "prompt",
                        NULL, "%s", e.msg);
    int ctx = s->ctx, limit = serve_prompt_limit(s);
    if (j->req.truncate_prompt > limit)
        return oai_fail(err, 400, "invalid_request_error", "truncate_prompt_tokens", NULL,
                        "'truncate_prompt_tokens' (%d) is above the %d tokens this server takes in a prompt",
                        j->req.truncate_prompt, limit);
    /* vLLM's: the prompt's end is kept (a conversation's latest turns) */
    int keep = j->req.truncate_prompt < 0 ? limit : j->req.truncate_prompt;
    if (keep && (int)ids->n > keep) {
        memmove(ids->ids, ids->ids + ids->n - (size_t)keep, (size_t)keep * sizeof *ids->ids);
        ids->n = (size_t)keep;
        j->truncated = 1;
    }
    /* (Anthropic's clients read "prompt is too long" as the cue to compact a conversation) */
    if ((int)ids->n > limit && j->req.api == API_ANTHROPIC)
        return oai_fail(err, 400, "invalid_request_error", "messages", "context_length_exceeded",
                        "prompt is too long: %zu tokens > %d maximum (context %d)", ids->n, limit, ctx);
    if ((int)ids->n > limit)
        return oai_fail(err, 400, "invalid_request_error", j->req.kind == OAI_CHAT ? "messages" : "prompt",
                        "context_length_exceeded",
                        "the prompt has %zu tokens; this server takes at most %d (context %d)",
                        ids->n, limit, ctx);
    if (ids->n == 0)
        return oai_fail(err, 400, "invalid_request_error", "prompt", NULL, "the prompt is empty");
    float dry = j->req.dry_multiplier >= 0 ? j->req.dry_multiplier : s->o.sp.dry_multiplier;
    if (j->req.has_dry_breakers && dry > 0 &&
        dry_breakers_build(&j->req.dry, s->tok, j->req.dry_breakers, j->req.n_dry_breakers, &e))
        return oai_fail(err, 400, "invalid_request_error", "dry_sequence_breakers", NULL, "%s", e.msg);
    if ((j->req.tool_choice_required || j->req.tool_choice_name) && j->chat.tools == TOOL_FORMAT_NONE)
        return oai_fail(err, 400, "invalid_request_error", "tool_choice", NULL,
                        "this model's tool calls cannot be forced: %s", j->chat.tools_why);
    if (j->req.tool_choice_required || j->req.tool_choice_name) {
        if (!(j->req.force = calloc(1, sizeof *j->req.force)))
            return oai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        if (tool_force_init(j->req.force, &s->tok->v, j->chat.tools, j->req.tools, j->req.tool_choice_name,
                            &e)) {
            free(j->req.force);
            j->req.force = NULL;
            return oai_fail(err, 400, "invalid_request_error", "tool_choice", NULL, "%s", e.msg);
        }
    } else if (j->req.tools && !j->req.schema && !j->req.regex && !j->req.grammar && !s->o.free_tool_calls) {
        /* tool_choice auto: the calls the model begins are held to the format and
         * the parameters; tools that cannot be held leave them free */
        if (!(j->req.force = calloc(1, sizeof *j->req.force)))
            return oai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        if (tool_force_init_lazy(j->req.force, &s->tok->v, j->chat.tools, j->req.tools, &e)) {
            free(j->req.force);
            j->req.force = NULL;
        }
    }
    if (j->req.force) {
        j->req.force->first_call = history_calls(j->req.messages);
        tool_force_restart(j->req.force);
    }
    for (int i = 0; i < j->req.n_stop_token_ids; i++)
        if (j->req.stop_token_ids[i] >= V)
            return oai_fail(err, 400, "invalid_request_error", "stop_token_ids", NULL,
                            "stop_token_ids names token %d: the model's vocabulary has tokens 0 to %d",
                            j->req.stop_token_ids[i], V - 1);
    for (int i = 0; i < j->req.n_bias; i++)
        if (j->req.bias[i].id >= V)
            return oai_fail(err, 400, "invalid_request_error", "logit_bias", NULL,
                            "logit_bias names token %d: the model's vocabulary has tokens 0 to %d",
                            j->req.bias[i].id, V - 1);
    return 0;
}

static uint64_t fresh_seed(const job *j)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 20 ^ (uint64_t)j->seq * 0x9E3779B97F4A7C15ull;
}

static void snapshot_tiers(server *s)
{
    tier_layer_stats all;
    if (tiered_source_totals(&s->m->src, &all))
        return;
    serve_metrics *m = &s->metrics;
    m->have_tiers = 1;
    m->dram_hits = all.hits;
    m->dram_misses = all.misses + all.early;   /* (an early read is a read) */
    m->nvme_bytes_read = all.bytes_read;
    m->stall_seconds = all.stall_seconds;
}

/* A request in its slot: from its prompt through its last token. */
struct slot_run {
    job *j;
    int slot;
    sampler_params sp;          /* the request's sampling; choice c draws with seed + c */
    sampler smp;                /* the current choice's */
    stop_filter sf;
    answer *answers;            /* [n choices], each made in turn from the prompt */
    answer *a;                  /* the current choice's */
    int choice;
    int n, reuse, done;         /* prompt tokens, of them reused, in the cache */
    int shared;                 /* of the reused, copied from another slot's cache */
    int max_new, k, generated;  /* k: the current choice's tokens; generated: all choices' */
    int echo_lp;                /* echo with logprobs: the prompt is scored */
    int scored;                 /* every prompt position's logits are needed (echo_lp,
                                 * prompt_logprobs): none is reused, pieces are small */
    oai_logprob_step *plp;      /* prompt_logprobs: each prompt token's, n_plp of them */
    sampler_kept kept[LOGPROBS_MAX_TOP]; /* post_sampling_probs: what the draw chose from */
    sampler_report report;
    int n_plp;
    int next;                   /* the token to step next (decoding) */
    draft_accept accept;        /* --draft-lookup: how its guesses fare */
    float *raw;                 /* [vocab] the logits before sampling (logprobs) */
    float *prompt_logits;       /* [vocab] n > 1: the prompt's last logits, each choice's start */
    json_prefix json;           /* response_format json_object or json_schema: the answer so far */
    regex_answer pattern;       /* guided_regex or guided_choice: the answer so far */
    mask_memo *pattern_masks;   /* its masks by state, for all its choices */
    grammar_answer grammar;     /* a grammar's parse of the answer so far */
    reasoning_gate gate;        /* inside a reasoning (gate.reasoning): a schema or a forced
                                 * call waits for its end; its tokens are counted and held to
                                 * its budget */
    int indent;                 /* n_indent: the current line's indentation so far; -1 on the
                                 * answer's first line, or once the line's text began */
    int new_line;               /* t_max_predict_ms: the answer's text holds a line break */
    double t_answer;            /* when the current choice's first token came */
    int think_tokens;           /* the reasoning's tokens so far */
    int reasoning_generated;    /* all choices' reasoning tokens */
    token_list close;           /* its budget spent: the tokens that end it, forced */
    size_t close_at;
    enum { RUN_PREFILL, RUN_DECODE, RUN_ENDED } state;
    const char *finish;         /* NULL: cut short (the client left, a shutdown) */
    int failed;                 /* an engine failure, in e */
    errbuf e;
    double t0, t1, t_first;
    double t_chunk;             /* when its last prefill chunk ended (0: none yet) */
    float *logits;              /* [vocab] */
};

void slot_swap(server *s, int i)
{
    if (i > 0)
        engine_seq_swap(&s->m->en, &s->slots[i].seq);
}

/* The ids slot i's cache holds, *n of them (outside a swap). */
static const int *slot_ids(const server *s, int i, int *n)
{
    const engine *en = &s->m->en;
    *n = i ? s->slots[i].seq.n_past : en->n_past;
    return i ? s->slots[i].seq.cached_ids : en->cached_ids;
}

int slots_create(server *s, errbuf *e)
{
    int n = s->o.parallel;
    size_t rows = (size_t)n * (size_t)(1 + s->o.draft);
    s->slots = calloc((size_t)n, sizeof *s->slots);
    s->views = calloc((size_t)n, sizeof *s->views);
    s->step_rows = malloc(rows * (size_t)s->m->mw.cfg.vocab_size * sizeof *s->step_rows);
    if (!s->slots || !s->views || !s->step_rows) {
        slots_destroy(s);
        return err_set(e, "out of memory for %d slots and a step's %zu rows of logits", n, rows);
    }
    for (int i = 0; i < n; i++)
        s->views[i].state = "idle";
    draft_cost_init(&s->step_cost);
    draft_accept_init(&s->accept_seen);
    for (int i = 1; i < n; i++)
        if (engine_seq_create(&s->m->en, &s->slots[i].seq, e)) {
            slots_destroy(s);
            return err_prefix(e, "--parallel %d: slot %d: ", n, i);
        }
    return 0;
}

void slots_destroy(server *s)
{
    for (int i = 1; s->slots && i < s->o.parallel; i++)
        engine_seq_destroy(&s->slots[i].seq);
    free(s->slots);
    free(s->views);
    free(s->step_rows);
    s->slots = NULL;
    s->views = NULL;
    s->step_rows = NULL;
}

static void run_free(slot_run *r)
{
    sampler_destroy(&r->smp);
    free(r->logits);
    free(r->raw);
    free(r->prompt_logits);
    free(r->plp);
    stop_filter_free(&r->sf);
    grammar_answer_free(&r->grammar);
    mask_memo_free(r->pattern_masks);
    token_list_free(&r->close);
    for (int c = 0; r->answers && c <= r->choice; c++)
        answer_free(&r->answers[c]);
    free(r->answers);
    free(r);
}

/* Starts choice c: its sampler (seed + c, the prompt in its repetition
 * window), stop filter, JSON state and answer. -1 when out of memory. */
static int choice_begin(server *s, slot_run *r, int c)
{
    job *j = r->j;
    errbuf e;
    sampler_params sp = r->sp;
    sp.seed += (uint64_t)c;
    sampler_destroy(&r->smp);
    if (sampler_create(&r->smp, &sp, s->m->mw.cfg.vocab_size, &e))
        return -1;
    for (int k = 0; k < r->n; k++)  /* the repetition penalty looks back over the prompt too */
        sampler_accept(&r->smp, j->ids.ids[k]);
    stop_filter_free(&r->sf);
    stop_filter_init(&r->sf, j->req.stop, j->req.n_stop);
    if (j->req.schema)
        json_prefix_init(&r->json, j->req.schema);
    if (j->req.regex)
        regex_answer_init(&r->pattern, j->req.regex);
    if (j->req.grammar) {
        grammar_answer_free(&r->grammar);
        if (grammar_answer_init(&r->grammar, j->req.grammar))
            return -1;
    }
    if (j->req.force)
        tool_force_restart(j->req.force);
    reasoning_gate_init(&r->gate, j->req.kind == OAI_CHAT ? j->chat.reasoning : REASONING_CLOSED, s->think_begin);
    r->think_tokens = 0;
    r->indent = -1;
    r->new_line = 0;
    r->close.n = 0;
    r->close_at = 0;
    r->choice = c;
    r->a = &r->answers[c];
    *r->a = (answer){.s = s, .j = j, .stream = j->req.stream, .chat = j->req.kind == OAI_CHAT,
                     .want_lp = j->req.logprobs, .anthropic = j->req.api == API_ANTHROPIC,
                     .responses = j->req.api == API_RESPONSES, .llama = j->req.api == API_LLAMA,
                     .prompt_tokens = r->n, .slot = r->slot};
    r->a->meta = (oai_meta){.kind = j->req.kind, .id = j->id, .model = s->model_name,
                            .created = j->created, .choice = j->choice0 + c};
    if (r->a->responses) {
        responses_out_init(&r->a->ro, &r->a->meta, j->req.tool_namespaces, j->req.stream);
        r->a->ro.summary = j->req.reasoning_summary;
        r->a->ro.settings = j->req.response_settings;
    }
    if (r->a->chat) {
        tool_stream_init(&r->a->ts,
                         j->chat.reasoning == REASONING_OPEN ? TOOL_REASONING_OPEN : TOOL_REASONING_TAGS);
        r->a->ts.next_index = history_calls(j->req.messages);   /* (DeepSeek's calls' ids) */
    }
    r->k = 0;
    draft_accept_restart(&r->accept);
    r->finish = "length";
    return 0;
}

/* The first events of a stream in Anthropic's or the Responses API's shape, as
 * the answer begins: Anthropic's message_start with the usage known then (the
 * prompt's tokens the prompt cache gave; message_delta has the final count),
 * or response.created and response.in_progress. */
static void stream_begin(server *s, slot_run *r)
{
    answer *a = r->a;
    if (!a->stream || a->role_sent || (!a->anthropic && !a->responses))
        return;
    oai_usage u = {.prompt_tokens = r->n, .cached_tokens = r->reuse};
    job_emit(s, r->j, a->anthropic ? anthropic_event_start(&a->meta, &u) : responses_event_start(&a->ro));
    a->role_sent = 1;
}

/* Sets up job j in slot i: its sampler, its answer, and the slot's cache
 * holding as much of its prompt as the cache or the prompt cache has. NULL
 * when out of memory (the job is answered). */
static slot_run *run_begin(server *s, int i, job *j)
{
    engine *en = &s->m->en;
    oai_error err;
    int V = s->m->mw.cfg.vocab_size, n_choices = j->req.n_choices > 1 ? j->req.n_choices : 1;
    slot_run *r = calloc(1, sizeof *r);
    if (r) {
        r->j = j;
        r->slot = i;
        draft_accept_start_from(&r->accept, &s->accept_seen);
        r->n = (int)j->ids.n;
        r->logits = malloc((size_t)V * sizeof *r->logits);
        r->raw = j->req.logprobs ? malloc((size_t)V * sizeof *r->raw) : NULL;
        r->prompt_logits = n_choices > 1 ? malloc((size_t)V * sizeof *r->prompt_logits) : NULL;
        r->answers = calloc((size_t)n_choices, sizeof *r->answers);
        sampler_params *sp = &r->sp;
        *sp = s->o.sp;
        if (j->req.api != API_LLAMA)
            j->req.post_sampling = 0; /* (llama.cpp's field: the OpenAI routes' logprobs are the model's) */
        if (j->req.temperature >= 0)
            sp->temperature = j->req.temperature;
        if (j->req.top_p > 0)
            sp->top_p = j->req.top_p;
        if (j->req.top_k >= 0)
            sp->top_k = j->req.top_k;
        if (j->req.min_p >= 0)
            sp->min_p = j->req.min_p;
        if (j->req.repeat_penalty > 0)
            sp->repeat_penalty = j->req.repeat_penalty;
        if (j->req.has_repeat_last_n)
            sp->repeat_last_n = j->req.repeat_last_n < 0 ? s->ctx : j->req.repeat_last_n;
        if (j->req.dry_multiplier >= 0)
            sp->dry_multiplier = j->req.dry_multiplier;
        if (j->req.dry_base >= 0)
            sp->dry_base = j->req.dry_base;
        if (j->req.dry_allowed_length >= 0)
            sp->dry_allowed_length = j->req.dry_allowed_length;
        if (j->req.has_dry_penalty_last_n)
            sp->dry_penalty_last_n = j->req.dry_penalty_last_n;
        if (sp->dry_penalty_last_n < 0 || sp->dry_penalty_last_n > s->ctx)
            sp->dry_penalty_last_n = s->ctx; /* (-1: the context; more never holds more tokens) */
        sp->dry_breakers = dry_breakers_view(j->req.has_dry_breakers ? &j->req.dry : &s->dry_default);
        if (j->req.has_top_n_sigma)
            sp->top_n_sigma = j->req.top_n_sigma;
        if (j->req.xtc_probability >= 0)
            sp->xtc_probability = j->req.xtc_probability;
        if (j->req.xtc_threshold >= 0)
            sp->xtc_threshold = j->req.xtc_threshold;
        if (j->req.typical_p >= 0)
            sp->typical_p = j->req.typical_p;
        if (j->req.dynatemp_range >= 0)
            sp->dynatemp_range = j->req.dynatemp_range;
        if (j->req.dynatemp_exponent == j->req.dynatemp_exponent)
            sp->dynatemp_exponent = j->req.dynatemp_exponent;
        if (j->req.mirostat >= 0)
            sp->mirostat = j->req.mirostat;
        if (j->req.mirostat_tau == j->req.mirostat_tau)
            sp->mirostat_tau = j->req.mirostat_tau;
        if (j->req.mirostat_eta == j->req.mirostat_eta)
            sp->mirostat_eta = j->req.mirostat_eta;
        if (j->req.presence_penalty == j->req.presence_penalty)
            sp->presence_penalty = j->req.presence_penalty;
        if (j->req.frequency_penalty == j->req.frequency_penalty)
            sp->frequency_penalty = j->req.frequency_penalty;
        sp->bias = j->req.bias;
        sp->n_bias = j->req.n_bias;
        sp->seed = j->req.has_seed ? j->req.seed : fresh_seed(j);
    }
    if (!r || !r->logits || (j->req.logprobs && !r->raw) || (n_choices > 1 && !r->prompt_logits) ||
        !r->answers || choice_begin(s, r, 0)) {
        if (r)
            run_free(r);
        oai_fail(&err, 500, "server_error", NULL, NULL, "out of memory");
        job_fail(s, j, &err);
        return NULL;
    }
    int ctx = en->kv.max_ctx;
    r->max_new = j->req.max_tokens ? j->req.max_tokens : s->o.default_max_tokens;
    if (r->max_new <= 0 || r->max_new > ctx - r->n)
        r->max_new = ctx - r->n;
    if (j->req.score_only)
        r->max_new = 0;
    r->echo_lp = j->req.echo && j->req.logprobs;
    r->scored = r->echo_lp || j->req.prompt_logprobs;
    if (r->echo_lp)
        answer_logprobs(r->a, &s->tok->v, j->ids.ids[0], echoed_text(&s->tok->v, j, j->ids.ids[0]), NULL);
    if (j->req.prompt_logprobs)
        push_logprobs(&r->plp, &r->n_plp, &s->tok->v, j->ids.ids[0], NULL);
    job_set_status(s, j, 200);
    r->t0 = now_seconds();
    slot_swap(s, i);
    r->reuse = prompt_cache_prepare(&s->pc, en, j->ids.ids, r->n, &s->slots[i].prompt_end);
    if (r->scored)      /* every position's logits are needed: none is reused */
        r->reuse = 0;
    r->failed = engine_truncate(en, r->reuse, &r->e) != 0;
    slot_swap(s, i);
    r->done = r->reuse;
    r->state = r->failed ? RUN_ENDED : RUN_PREFILL;
    j->t_alive = r->t0;
    if (!r->failed)
        stream_begin(s, r);
    return r;
}

/* 1 when the reasoning has had the tokens its budget allows (thinking's
 * budget_tokens) and the tokens that end it, those of what "</think>" still
 * lacks after the text so far, are to be forced: the next is
 * r->close.ids[r->close_at]. */
static int reasoning_over_budget(server *s, slot_run *r)
{
    int budget = r->j->req.reasoning_budget;
    if (!r->gate.reasoning || !budget || r->think_tokens < budget)
        return 0;
    if (!r->close.n) {
        static const char end[] = "</think>";
        size_t m = (size_t)r->gate.end.matched;
        /* whole, it is the model's own token where the vocabulary has one (as
         * Kimi's and DeepSeek-R1's do), not its spelling: the model ends its
         * reasoning as it was trained to; a part already written leaves only
         * text to add */
        int flags = m ? 0 : TOK_ALLOW_SPECIAL;
        errbuf e;
        if (tokenizer_encode(s->tok, end + m, sizeof end - 1 - m, flags, &r->close, &e))
            r->close.n = 0;     /* out of memory: the reasoning goes on */
    }
    return r->close_at < r->close.n;
}

/* The logits of the slot's last token are in r->logits: the next token is
 * sampled, passed on to the client, and either kept in r->next for the next
 * step (returns 1) or the answer is complete (0, r->finish says why). */
/* llama.cpp's n_indent on the answer's text p[0, *n): a line after the first
 * whose text starts indented by fewer than `least` spaces or tabs ends the
 * answer before that text (its line break and indentation stay, as llama.cpp
 * leaves them): *n is cut there, and 1 returned. */
static int indent_ends(slot_run *r, int least, const char *p, size_t *n)
{
    for (size_t i = 0; i < *n; i++) {
        if (p[i] == '\n') {
            r->indent = 0;
        } else if (r->indent < 0) {
            continue;
        } else if (p[i] == ' ' || p[i] == '\t') {
            r->indent++;
        } else if (r->indent < least) {
            *n = i;
            return 1;
        } else {
            r->indent = -1;
        }
    }
    return 0;
}

static int next_token(server *s, slot_run *r)
{
    job *j = r->j;
    if (r->k >= r->max_new)
        return 0;
    if (job_cancelled(s, j)) {
        r->finish = NULL;
        return 0;
    }
    int next, V = s->m->mw.cfg.vocab_size;
    if (r->raw)     /* the sampler changes the logits it penalises */
        memcpy(r->raw, r->logits, (size_t)V * sizeof *r->raw);
    /* a forced text (a test hook) is the whole answer, or its start */
    int forcing = s->has_forced && (r->k < (int)s->forced.n || !s->forced_is_prefix);
    int closing = !forcing && reasoning_over_budget(s, r);
    if (!forcing && (j->req.ignore_eos || r->k < j->req.min_tokens)) {
        /* vLLM's: the answer may not end yet (min_tokens) or at all (ignore_eos) */
        for (int i = 0; i < s->n_stop_ids; i++)
            r->logits[s->stop_ids[i]] = -INFINITY;
        for (int i = 0; i < j->req.n_stop_token_ids && r->k < j->req.min_tokens; i++)
            r->logits[j->req.stop_token_ids[i]] = -INFINITY;
    }
    /* the answer after the reasoning is held as a whole */
    int held = j->req.schema || j->req.regex || j->req.grammar;
    int reasoning = r->gate.reasoning;
    if (!forcing && reasoning && (held || (j->req.force && !j->req.force->lazy)))
        reasoning_end_mask(&r->gate.end, &s->tok->v, j->req.regex || j->req.grammar, r->logits, V);
    if (!forcing && reasoning && held && s->section_begin >= 0)
        r->logits[s->section_begin] = -INFINITY;    /* (a section would end it, the answer unwritten) */
    /* the answer's first token may open a reasoning the model writes itself,
     * whatever holds the answer after it */
    float opener = r->gate.may_open ? r->logits[r->gate.think_begin] : 0;
    if (!forcing && !reasoning &&
        ((j->req.schema &&
          !json_mask_logits(&r->json, &s->tok->v, &s->jv, s->stop_ids, s->n_stop_ids, r->logits, V)) ||
         (j->req.regex &&
          !regex_answer_mask(&r->pattern, &r->pattern_masks, &s->tok->v, &s->jv, s->stop_ids, s->n_stop_ids,
                             r->logits, V)) ||
         (j->req.force && !tool_force_mask(j->req.force, &s->jv, s->stop_ids, s->n_stop_ids, r->logits, V)))) {
        r->finish = "stop";     /* the answer is whole and no end token is known */
        return 0;
    }
    if (!forcing && !reasoning && j->req.grammar) {
        int may =
            grammar_answer_mask(&r->grammar, &s->tok->v, &s->jv, s->stop_ids, s->n_stop_ids, r->logits, V);
        if (may < 0) {
            r->failed = 1;
            err_set(&r->e, "%s", grammar_answer_strerror(may));
            return 0;
        }
        if (!may) {
            r->finish = "stop";     /* the answer is whole and no end token is known */
            return 0;
        }
    }
    if (r->gate.may_open)
        r->logits[r->gate.think_begin] = opener;
    if (forcing)
        next = r->k < (int)s->forced.n ? s->forced.ids[r->k] : s->stop_ids[0];
    else if (closing)
        next = r->close.ids[r->close_at++];
    else {
        r->report = (sampler_report){r->kept, LOGPROBS_MAX_TOP, 0, 0};
        r->smp.report = j->req.post_sampling ? &r->report : NULL;
        next = sampler_sample(&r->smp, r->logits);
    }
    if (forcing || closing) { /* (no draw: the token was certain) */
        r->kept[0] = (sampler_kept){next, 1.0f};
        r->report = (sampler_report){r->kept, LOGPROBS_MAX_TOP, 1, 1.0f};
    }
    sampler_accept_output(&r->smp, next);
    if (!r->t_first)
        r->t_first = now_seconds();
    if (!r->k)
        r->t_answer = now_seconds();
    if (is_stop_id(s, next)) {
        r->finish = "stop";
        return 0;
    }
    r->generated++;
    size_t bn = 0, after = 0;
    const char *bytes = vocab_decode(&s->tok->v, next, &bn);
    if (!bytes)
        bn = 0;
    int section = reasoning && next == s->section_begin;
    int part = section ? GATE_ANSWER : reasoning_gate_feed(&r->gate, next, bytes ? bytes : "", bn, &after);
    if (section) {
        /* a tool-call section ends the reasoning (the answer's parser reads it so) */
        r->gate.reasoning = 0;
        if (j->req.force)
            tool_force_accept(j->req.force, next);
    } else if (part != GATE_ANSWER) {
        r->think_tokens += reasoning;   /* (the token opening it is not the budget's) */
        r->reasoning_generated++;
        /* the bytes after "</think>" in its last token: whitespace (the mask) */
        if (part == GATE_CLOSED && j->req.schema)
            json_prefix_feed(&r->json, bytes + after, bn - after);
        /* (a pattern's answer: nothing follows "</think>" in its token, the mask) */
    } else {
        if (j->req.force)
            tool_force_accept(j->req.force, next);
        if (j->req.schema)
            json_prefix_feed(&r->json, bytes ? bytes : "", bn);
        if (j->req.regex)
            regex_answer_feed(&r->pattern, bytes ? bytes : "", bn);
        if (j->req.grammar)
            grammar_answer_feed(&r->grammar, bytes ? bytes : "", bn);
    }
    if (r->raw) {
        step_logprobs st;
        if (j->req.post_sampling)
            report_logprobs(&r->report, next, j->req.top_logprobs, &st);
        else
            step_logprobs_compute(r->raw, V, next, j->req.top_logprobs, &st);
        answer_logprobs(r->a, &s->tok->v, next, bytes && shown_special(s, j, r->a, next, bytes, bn), &st);
    }
    if (r->a->llama)
        answer_id(r->a, next);
    if (bytes && !shown_special(s, j, r->a, next, bytes, bn))
        bytes = NULL, bn = 0;
    /* llama.cpp's limits for code completion, on the answer's text */
    int text = bytes && part == GATE_ANSWER;
    int cut = text && j->req.n_indent > 0 && indent_ends(r, j->req.n_indent, bytes, &bn);
    r->new_line |= text && memchr(bytes, '\n', bn) != NULL;
    const char *rel;
    size_t rel_len;
    int st;
    if (bytes && r->a->chat && vocab_is_special(&s->tok->v, next) && tool_stream_marker(bytes, bn)) {
        /* a chat answer's reasoning and tool-call markers are no text: the
         * parser takes them, a stop string neither matches inside one nor
         * spans one (the text on its two sides goes to different fields) */
        stop_filter_finish(&r->sf, &rel, &rel_len);
        answer_text(r->a, rel, rel_len, 0);
        answer_text(r->a, bytes, bn, 0);
        st = 0;
    } else {
        /* vLLM's min_tokens: a stop string ends the answer once it has that
         * many tokens (this one counted) */
        st = (r->k + 1 < j->req.min_tokens ? stop_filter_feed_early : stop_filter_feed)(
            &r->sf, bytes ? bytes : "", bytes ? bn : 0, &rel, &rel_len);
        answer_text(r->a, rel, rel_len, 0);
    }
    if (st == 1 && j->req.include_stop) /* (vLLM's include_stop_str_in_output) */
        answer_text(r->a, j->req.stop[r->sf.which], strlen(j->req.stop[r->sf.which]), 0);
    if (st == 1 || (j->req.one_call && r->a->calls_seen) || is_request_stop_id(j, next)) {
        r->finish = "stop";
        return 0;
    }
    if (cut || (j->req.t_max_predict_ms > 0 && r->new_line &&
                (now_seconds() - r->t_answer) * 1e3 > j->req.t_max_predict_ms))
        return 0;   /* (finish "length": llama.cpp's stop_type "limit") */
    if (++r->k == r->max_new)
        return 0;
    r->next = next;
    return 1;
}

/* The current choice's end: what the filters held goes out and its finish
 * reason is fixed; streamed, its last event (finish_reason) is sent. */
static void choice_end(server *s, slot_run *r)
{
    answer *a = r->a;
    if (!r->sf.stopped) {
        const char *rel;
        size_t rel_len;
        stop_filter_finish(&r->sf, &rel, &rel_len);
        answer_text(a, rel, rel_len, 0);
    }
    if (a->echo_tail_len) {
        /* (no text came after the echo: its unfinished character goes alone) */
        char tail[sizeof a->echo_tail];
        size_t n = a->echo_tail_len;
        memcpy(tail, a->echo_tail, n);
        a->echo_tail_len = 0;
        answer_text(a, tail, n, 0);
    }
    if (a->chat)
        answer_text(a, "", 0, 1);
    a->finish = r->finish && !strcmp(r->finish, "stop") && a->calls_seen ? "tool_calls" : r->finish;
    if (!a->stream || !a->finish || r->failed || a->anthropic || a->responses || a->llama)
        return;     /* (Anthropic's, the Responses API's and llama.cpp's streams end in run_end, with
                     * the usage) */
    oai_logprobs lp;
    if (a->chat && !a->role_sent)
        job_emit(s, r->j, oai_event_delta(&a->meta, 1, "", 0, "", 0, NULL, 0, 0, NULL, NULL));
    job_emit(s, r->j, oai_event_delta(&a->meta, 0, "", 0, "", 0, NULL, 0, 0, unsent_logprobs(a, &lp),
                                      a->finish));
}

/* After a choice's last token: the next choice starts from the prompt (1),
 * or the request is done (0: the last choice made, or the request cut short). */
static int choice_next(server *s, slot_run *r)
{
    if (!r->finish || r->failed || r->choice + 1 >= r->j->req.n_choices)
        return 0;
    choice_end(s, r);
    slot_swap(s, r->slot);
    r->failed = engine_truncate(&s->m->en, r->n, &r->e) != 0;
    slot_swap(s, r->slot);
    if (!r->failed && choice_begin(s, r, r->choice + 1)) {
        r->failed = 1;
        err_set(&r->e, "out of memory for choice %d", r->choice + 1);
    }
    if (r->failed)
        return 0;
    memcpy(r->logits, r->prompt_logits, (size_t)s->m->mw.cfg.vocab_size * sizeof *r->logits);
    return 1;
}

/* The request's next token to step, through its choices: 1 decoding, 0 done. */
static int step_on(server *s, slot_run *r)
{
    while (!next_token(s, r))
        if (!choice_next(s, r))
            return 0;
    return 1;
}

/* An Anthropic answer made to its end: the stream's last events, or the
 * whole message. */
static void anthropic_end(server *s, slot_run *r, const oai_usage *u)
{
    answer *a = r->a;
    const char *seq = r->sf.stopped ? r->j->req.stop[r->sf.which] : NULL;
    if (a->stream) {
        stream_begin(s, r);
        job_emit(s, r->j, anthropic_event_end(&a->as, a->finish, seq, u));
        return;
    }
    oai_choice ch = {a->text.p, a->reasoning.p, a->text.len, a->reasoning.len, a->calls, a->n_calls,
                     NULL, a->finish};
    job_emit(s, r->j, anthropic_full_response(&a->meta, &ch, seq, u));
}

/* An error event of a stream that began, in its API's shape. */
static char *stream_error(slot_run *r, const oai_error *err)
{
    if (r->a->anthropic)
        return anthropic_event_error(err);
    return r->a->responses ? responses_event_error(&r->a->ro, err) : oai_event_error(err);
}

/* A Responses API answer made to its end: the stream's last events, or the
 * whole response. */
static void responses_end(server *s, slot_run *r, const oai_usage *u)
{
    answer *a = r->a;
    if (a->stream) {
        stream_begin(s, r);
        job_emit(s, r->j, responses_event_end(&a->ro, a->finish, u));
    } else {
        job_emit(s, r->j, responses_body(&a->ro, a->finish, u));
    }
}

/* llama.cpp's answer made to its end: the stream's last event, or the body,
 * with its counts and timings. */
static void llama_end(server *s, slot_run *r, double t2)
{
    answer *a = r->a;
    const job *j = r->j;
    char *decoded = NULL;
    size_t prompt_len = 0;
    const char *prompt = prompt_text(&s->tok->v, j, &decoded, &prompt_len);
    oai_logprobs lp;
    int word = r->sf.stopped && r->finish && !strcmp(r->finish, "stop");
    llama_result res = {
        .model = s->model_name,
        .content = a->stream ? "" : a->text.p,
        .content_len = a->stream ? 0 : a->text.len,
        .ids = j->req.return_tokens ? a->ids + a->ids_sent : NULL,
        .n_ids = j->req.return_tokens ? a->n_ids - a->ids_sent : 0,
        .lp = unsent_logprobs(a, &lp),
        .prompt = prompt,
        .prompt_len = prompt_len,
        .slot = r->slot,
        .tokens_predicted = r->generated,
        .tokens_evaluated = r->n,
        .tokens_cached = r->reuse,
        .stop_type = !r->finish ? "none" : strcmp(r->finish, "stop") ? "limit" : word ? "word" : "eos",
        .stopping_word = word ? j->req.stop[r->sf.which] : "",
        .prompt_n = r->n - r->reuse,
        .prompt_ms = (r->t1 - r->t0) * 1e3,
        .predicted_ms = (t2 - r->t1) * 1e3,
    };
    job_emit(s, r->j, llama_result_body(&res, a->stream));
    free(decoded);
}

/* The answer's end for the client, and the request in the metrics. */
static void run_end(server *s, slot_run *r)
{
    job *j = r->j;
    oai_error err;
    const char *finish = r->finish;
    int stream = j->req.stream;
    double t2 = now_seconds();
    if (!r->t1)
        r->t1 = t2;
    choice_end(s, r);
    s->accept_seen = r->accept;     /* the next request starts from what this one learned */
    if (s->o.draft) {
        pthread_mutex_lock(&s->mu);
        for (int c = 0; c < DRAFT_MATCH_CLASSES; c++)
            for (int g = 0; g < DRAFT_GUESS_MAX; g++)
                s->metrics.draft_chance[c][g] = draft_accept_chance(&r->accept, c, g);
        pthread_mutex_unlock(&s->mu);
    }
    oai_usage u = {.prompt_tokens = r->n, .completion_tokens = r->generated,
                   .cached_tokens = r->reuse, .reasoning_tokens = r->reasoning_generated};
    if (r->failed) {
        /* an engine failure (I/O error of a tier, ...): the client learns why */
        oai_fail(&err, 500, "server_error", NULL, NULL, "%s", r->e.msg);
        if (stream)
            job_emit(s, j, stream_error(r, &err));
        else
            job_fail(s, j, &err);
    } else if (finish && j->req.api == API_ANTHROPIC) {
        anthropic_end(s, r, &u);
    } else if (finish && j->req.api == API_RESPONSES) {
        responses_end(s, r, &u);
    } else if (finish && j->req.api == API_LLAMA) {
        llama_end(s, r, t2);
    } else if (finish && stream && j->part) {
        j->usage = u;       /* the response sums the parts' and ends the stream */
        j->part_finished = 1;
    } else if (finish && stream) {
        if (j->req.include_usage)
            job_emit(s, j, oai_event_usage(&r->a->meta, &u));
        job_emit(s, j, strdup("data: [DONE]\n\n"));
    } else if (finish) {
        int n = r->choice + 1;
        oai_choice ch[OAI_MAX_CHOICES];
        oai_logprobs lp[OAI_MAX_CHOICES];
        for (int c = 0; c < n; c++) {
            answer *a = &r->answers[c];
            ch[c] = (oai_choice){a->text.p, a->reasoning.p, a->text.len, a->reasoning.len, a->calls,
                                 a->n_calls, unsent_logprobs(a, &lp[c]), a->finish};
        }
        oai_logprobs plp = {r->plp, r->n_plp, 0};
        job_emit(s, j, oai_full_response(&r->a->meta, ch, n, j->req.prompt_logprobs ? &plp : NULL, &u));
    } else if (stopped_by_shutdown(s, j)) {
        oai_fail(&err, 503, "server_error", NULL, NULL, SHUTTING_DOWN);
        if (stream)
            job_emit(s, j, stream_error(r, &err));
        else
            job_fail(s, j, &err);
    }
    pthread_mutex_lock(&s->mu);
    serve_metrics *m = &s->metrics;
    m->prompt_tokens += (uint64_t)r->n;
    m->prompt_tokens_cached += (uint64_t)r->reuse;
    m->prompt_cache_bytes = s->pc.bytes;
    m->prompt_cache_entries = s->pc.n;
    m->prompt_tokens_restored = s->pc.restored_tokens;
    m->prompt_tokens_shared += (uint64_t)r->shared;
    m->completion_tokens += (uint64_t)r->generated;
    m->prefill_seconds += r->t1 - r->t0;
    m->decode_seconds += t2 - r->t1;
    if (r->t_first)
        serve_metrics_observe(m, SERVE_LATENCY_TTFT, r->t_first - j->t_arrival);
    if (r->t_first && r->generated > 1)
        serve_metrics_observe(m, SERVE_LATENCY_TPOT, (t2 - r->t_first) / (r->generated - 1));
    serve_metrics_observe(m, SERVE_LATENCY_E2E, t2 - j->t_arrival);
    serve_metrics_observe(m, SERVE_LATENCY_QUEUE, r->t0 - j->t_arrival);
    if (r->generated > 1 && t2 > r->t_first)
        m->last_decode_tokens_per_second = (double)(r->generated - 1) / (t2 - r->t_first);
    if (!finish)
        m->requests_cancelled++;
    snapshot_tiers(s);
    pthread_mutex_unlock(&s->mu);
    /* the request's line in the log, as llama.cpp's server prints its timings */
    double decode = t2 - r->t1;
    fprintf(stderr, "moetier serve: %s: prompt %d tokens (%d cached) in %.2f s, %d generated in %.2f s "
            "(%.2f tokens/s), %s\n", j->id, r->n, r->reuse, r->t1 - r->t0, r->generated, decode,
            r->generated && decode > 0 ? r->generated / decode : 0.0,
            r->failed ? "failed" : finish ? finish : "cancelled");
}

/* A scored prompt, prefilled in pieces of at most this many tokens: their
 * logits take pieces x vocabulary floats (42 MB at K2's) */
#define SCORED_PROMPT_CHUNK 64

/* vLLM's rank of a token: how many tokens are at least as likely (1: the
 * likeliest); an impossible (NaN) token's is the vocabulary's size. */
static int token_rank(const float *logits, int V, int id)
{
    float x = logits[id];
    if (isnan(x))
        return V;
    int rank = 0;
    for (int i = 0; i < V; i++)
        rank += logits[i] >= x;
    return rank;
}

/* The log-probabilities of the prompt's tokens after the n just prefilled
 * (rows: their logits, row t the distribution of token done + t + 1), for
 * the echo and prompt_logprobs; the last prompt position's logits become the
 * first answer token's. */
static void score_prompt(server *s, slot_run *r, const float *rows, int n)
{
    int V = s->m->mw.cfg.vocab_size;
    const oai_request *q = &r->j->req;
    for (int t = 0; t < n; t++) {
        const float *row = rows + (size_t)t * (size_t)V;
        int p = r->done + t, id;
        if (p + 1 == r->n) {
            memcpy(r->logits, row, (size_t)V * sizeof *row);
            continue;
        }
        id = r->j->ids.ids[p + 1];
        step_logprobs st;
        if (r->echo_lp) {
            step_logprobs_compute(row, V, id, q->top_logprobs, &st);
            answer_logprobs(r->a, &s->tok->v, id, echoed_text(&s->tok->v, r->j, id), &st);
        }
        if (!q->prompt_logprobs)
            continue;
        step_logprobs_compute(row, V, id, q->prompt_top_logprobs, &st);
        oai_logprob_step *o = push_logprobs(&r->plp, &r->n_plp, &s->tok->v, id, &st);
        if (!o)
            continue;
        o->chosen.rank = token_rank(row, V, id);
        for (int k = 0; k < o->n_top; k++)
            o->top[k].rank = k + 1;
    }
}

/* The longest start of slot i's prompt that another slot's cache holds (a
 * conversation with the same beginning, another choice of the same request,
 * the prompts of a batch with one preamble), when longer than what slot i
 * has: copied from there instead of computed. At most the prompt's n - 1
 * tokens, so that its last one still yields logits. */
static void take_shared_prefix(server *s, int i, slot_run *r)
{
    int from = -1, m = r->done;
    for (int k = 0; k < s->o.parallel; k++) {
        int held;
        const int *ids = slot_ids(s, k, &held);
        int common = k == i ? 0 : ids_common_prefix(ids, held, r->j->ids.ids, r->n - 1);
        if (common > m) {
            from = k;
            m = common;
        }
    }
    if (from < 0)
        return;
    errbuf e;
    slot_swap(s, i);
    /* while slot i's cache is the engine's, slot 0's waits in slot i's place */
    int ok = !engine_copy_prefix(&s->m->en, &s->slots[i && !from ? i : from].seq, m, &e);
    slot_swap(s, i);
    if (!ok)
        return;
    r->shared += m - r->done;
    r->reuse += m - r->done;
    r->done = m;
}

/* After a prefill chunk of a streamed request that asked (return_progress):
 * how far its prompt is, as llama.cpp's server tells it (a request's n
 * choices made at once: the first part's). */
static void prompt_progress(server *s, slot_run *r)
{
    answer *a = r->a;
    const job *j = r->j;
    if (!j->req.stream || !j->req.return_progress || a->anthropic || a->responses ||
        (j->part && j->choice0))
        return;
    oai_progress p = {r->n, r->reuse, r->done, 1e3 * (now_seconds() - r->t0)};
    if (a->llama) {
        job_emit(s, r->j, llama_event_progress(&p));
        return;
    }
    job_emit(s, r->j, oai_event_progress(&a->meta, a->chat && !a->role_sent, &p));
    a->role_sent = 1;
}

/* Prefills a chunk of slot i's prompt (the other slots' tokens and new
 * requests wait for no more than that; a stream hears how far it is). Once
 * the prompt is in, its first token is sampled. */
static void slot_prefill(server *s, int i)
{
    engine *en = &s->m->en;
    slot_run *r = s->slots[i].run;
    if (!r->scored)     /* (a scored prompt needs every position's logits) */
        take_shared_prefix(s, i, r);
    int left = r->n - r->done, n = left > en->max_chunk ? en->max_chunk : left;
    if (r->scored && n > SCORED_PROMPT_CHUNK)
        n = SCORED_PROMPT_CHUNK;
    int last = n == left;
    size_t V = (size_t)s->m->mw.cfg.vocab_size;
    float *rows = r->scored ? malloc((size_t)n * V * sizeof *rows) : NULL;
    if (r->scored && !rows) {
        r->failed = 1;
        err_set(&r->e, "out of memory for the logits of %d prompt tokens", n);
        r->state = RUN_ENDED;
        return;
    }
    /* a long prompt stops within a chunk when its client leaves or the server stops;
     * the chunks done stay in the cache for the next request that shares them */
    prefill_stop ps = {s, r->j};
    slot_swap(s, i);
    en->stop_requested = prefill_stop_requested;
    en->stop_ctx = &ps;
    int before = en->n_past;
    s->prefilling = i;
    int rc = engine_forward(en, r->j->ids.ids + r->done, n, rows ? rows : last ? r->logits : NULL,
                            rows != NULL, &r->e);
    s->prefilling = -1;
    if (rows && !rc)
        score_prompt(s, r, rows, n);
    free(rows);
    r->done += en->n_past - before;
    r->t_chunk = now_seconds();
    if (!rc)
        prompt_progress(s, r);
    en->stop_requested = NULL;
    en->stop_ctx = NULL;
    if (rc < 0)
        engine_reset(en);
    slot_swap(s, i);
    r->failed = rc < 0;
    if (rc == 1)
        r->finish = NULL;
    if (!rc && !last)
        return;
    r->t1 = now_seconds();
    if (!rc && r->j->req.echo)
        answer_echo(r->a, &s->tok->v, r->j);
    if (!rc && r->prompt_logits)
        memcpy(r->prompt_logits, r->logits, V * sizeof *r->logits);
    r->state = !rc && step_on(s, r) ? RUN_DECODE : RUN_ENDED;
}

/* After a step: the slot's next token, or the end of its answer. */
static void run_stepped(server *s, slot_run *r, int rc, const errbuf *e)
{
    r->failed = rc != 0;
    if (rc)
        r->e = *e;
    r->state = !rc && step_on(s, r) ? RUN_DECODE : RUN_ENDED;
}

/* Slot i's guesses for its next step (--draft-lookup) into out and their
 * chances, the lookup noted for its tuning; returns how many. */
static int slot_guesses(server *s, int i, int *out, double *chance)
{
    slot_run *r = s->slots[i].run;
    if (!s->o.draft)
        return 0;
    int match;
    slot_swap(s, i);
    int g = draft_lookup_step(&s->m->en, r->next, s->o.draft, r->max_new - r->k - 1, out, &match);
    slot_swap(s, i);
    draft_accept_lookup(&r->accept, out, g, match);
    draft_accept_chances(&r->accept, match, chance);
    return g;
}

/* After a step without failure: rows [1 + g][vocab] are slot i's token and
 * the g tokens guessed after it (ids[1..g]). They go to next_token in turn
 * while the token drawn is the next guess; the cache then drops the guesses
 * not taken (unless a new choice started from the prompt). Returns 0, or -1
 * with the run's error set when a row to draw from holds a NaN (nan[]). */
static int take_rows(server *s, int i, const float *rows, const unsigned char *nan, const int *ids, int g)
{
    slot_run *r = s->slots[i].run;
    size_t V = (size_t)s->m->mw.cfg.vocab_size;
    int used = 0, choice = r->choice;
    for (;;) {
        if (nan[used]) {
            /* (the rows of guesses not taken are never read, whatever they hold) */
            const engine_seq *q = i ? &s->slots[i].seq : NULL;
            int n_past = q ? q->n_past : s->m->en.n_past;
            return err_set(&r->e, "the logits at position %d are NaN: " ENGINE_NAN_WHY,
                           n_past - (g + 1) + used);
        }
        memcpy(r->logits, rows + (size_t)used * V, V * sizeof *rows);
        run_stepped(s, r, 0, NULL);
        if (r->state != RUN_DECODE || r->choice != choice)
            break;
        draft_accept_token(&r->accept, r->next);
        if (used == g || r->next != ids[used + 1])
            break;
        used++;
    }
    if (r->choice == choice && used < g) {
        slot_swap(s, i);
        if (engine_drop_guesses(&s->m->en, g - used, &r->e)) {
            r->failed = 1;
            r->state = RUN_ENDED;
        }
        slot_swap(s, i);
    }
    if (!g)
        return 0;
    pthread_mutex_lock(&s->mu);
    s->metrics.draft_tokens += (uint64_t)g;
    s->metrics.draft_tokens_accepted += (uint64_t)used;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* One decode step of every slot that has a token to step, together, each
 * with the tokens guessed after its own (--draft-lookup). */
static void slots_decode(server *s, const int *which, int n)
{
    engine *en = &s->m->en;
    double t0 = now_seconds();
    pthread_mutex_lock(&s->mu);
    s->metrics.decode_steps++;
    s->metrics.decode_step_rows += (uint64_t)n;
    pthread_mutex_unlock(&s->mu);
    size_t V = (size_t)s->m->mw.cfg.vocab_size;
    /* each slot's rows: its token, then the guesses that the step's measured
     * cost says pay, within one pass */
    int ids[n * ENGINE_DRAFT_MAX_T], at[n + 1], avail[n], g[n], guess[n][ENGINE_DRAFT_MAX_T - 1];
    engine_seq *seqs[n * ENGINE_DRAFT_MAX_T];
    double chance[n][DRAFT_GUESS_MAX];
    for (int k = 0; k < n; k++)
        avail[k] = slot_guesses(s, which[k], guess[k], chance[k]);
    draft_choose(&s->step_cost, chance[0], avail, n, engine_step_rows(en) - n, g);
    at[0] = 0;
    for (int k = 0; k < n; k++) {
        at[k + 1] = at[k] + 1 + g[k];
        ids[at[k]] = s->slots[which[k]].run->next;
        memcpy(ids + at[k] + 1, guess[k], (size_t)g[k] * sizeof *ids);
        for (int t = at[k]; t < at[k + 1]; t++)
            seqs[t] = which[k] ? &s->slots[which[k]].seq : NULL;
    }
    int rows_n = at[n];
    float *rows = s->step_rows;
    unsigned char nan[n * ENGINE_DRAFT_MAX_T];
    errbuf e;
    int rc;
    if (n == 1) {
        /* one slot: its rows in one attention call of the engine's own sequence */
        slot_swap(s, which[0]);
        rc = engine_decode_tokens(en, ids, rows_n, rows, nan, &e);
        slot_swap(s, which[0]);
    } else {
        rc = engine_decode_seqs(en, seqs, ids, rows_n, rows, nan, &e);
    }
    if (!rc) {
        draft_cost_add(&s->step_cost, rows_n, now_seconds() - t0);
        if (rows_n <= SERVE_METRICS_STEP_ROWS && rows_n <= DRAFT_COST_ROWS) {
            pthread_mutex_lock(&s->mu);
            s->metrics.step_seconds[rows_n] = s->step_cost.seconds[rows_n];
            pthread_mutex_unlock(&s->mu);
        }
    }
    for (int k = 0; k < n; k++) {
        slot_run *r = s->slots[which[k]].run;
        /* a NaN fails the sequence it is in, not the others of the step */
        int failed = rc || take_rows(s, which[k], rows + (size_t)at[k] * V, nan + at[k], ids + at[k], g[k]);
        if (!failed)
            continue;
        if (seqs[at[k]])
            seqs[at[k]]->n_past = 0;
        else
            engine_reset(en);
        run_stepped(s, r, -1, rc ? &e : &r->e);
    }
    s->step_end = now_seconds();
    s->step_took = s->step_end - t0;
}

/* The slots generating now into which[]; returns how many. */
static int decoding_slots(const server *s, int *which)
{
    int n = 0;
    for (int i = 0; i < s->o.parallel; i++)
        if (s->slots[i].run && s->slots[i].run->state == RUN_DECODE)
            which[n++] = i;
    return n;
}

/* A free slot for a prompt: of those whose conversation it continues (it
 * shares at least half of the slot's positions; an empty slot too), the one
 * sharing most; else the least recently used. A conversation's next turn so
 * finds its own cache, and a new conversation that merely starts the same way
 * (the chat template, a system prompt) takes an empty or old slot rather than
 * another conversation's. */
static int pick_slot(server *s, const job *j)
{
    int best = -1, best_shared = -1, lru = -1;
    for (int i = 0; i < s->o.parallel; i++) {
        slot *sl = &s->slots[i];
        if (sl->run)
            continue;
        if (lru < 0 || sl->last_used < s->slots[lru].last_used)
            lru = i;
        int n_past;
        const int *cached = slot_ids(s, i, &n_past);
        int shared = ids_common_prefix(cached, n_past, j->ids.ids, (int)j->ids.n);
        if (2 * shared >= n_past && shared > best_shared) {
            best = i;
            best_shared = shared;
        }
    }
    return best >= 0 ? best : lru;
}

/* A job leaves its slot (or was never given one): answered, released. */
static void job_done_locked(server *s, job *j)
{
    j->phase = JOB_DONE;
    s->n_jobs--;
    s->metrics.queue_depth = s->n_jobs;
    pthread_cond_broadcast(&s->cv);
    job_release(j);
}

/* With no request waiting, one step towards a --prompt-cache-dir that holds
 * the cache as it is now (a crash then loses little): an entry written, or,
 * once all are, the files of entries gone deleted (but for the start of a
 * conversation whose write failed); when that freed room, the failed writes
 * are tried again. */
static void sync_prompt_cache_step(server *s)
{
    const char *dir = s->o.prompt_cache_dir;
    errbuf e;
    int r = prompt_cache_write_pending(&s->pc, dir, &s->pc_id, &s->m->en, &e);
    if (r < 0)
        fprintf(stderr, "moetier serve: warning: a conversation of the prompt cache was not "
                "written to %s: %s\n", dir, e.msg);
    if (r != 0)
        return;
    int failed = 0, removed;
    for (int i = 0; i < s->pc.n; i++)
        failed |= s->pc.entries[i].on_disk < 0;
    if (prompt_cache_remove_stale(&s->pc, dir, &s->pc_id, &s->m->en, &removed, &e)) {
        fprintf(stderr, "moetier serve: warning: %s\n", e.msg);
    } else if (failed && removed) {
        /* (twice at most: a failure room does not mend, a file size limit or
         * an I/O error, is not tried after every eviction) */
        int again = 0;
        for (int i = 0; i < s->pc.n; i++)
            if (s->pc.entries[i].on_disk < 0 && s->pc.entries[i].failed_writes < 2) {
                s->pc.entries[i].on_disk = 0;
                again = 1;
            }
        if (again)
            return;     /* not in sync yet: the next idle step writes them */
    }
    s->pc_synced = s->pc.changes;
}

/* Takes queued jobs into free slots (s->mu held); those cancelled, or
 * queued when the server stops, are answered at once. */
static void admit_locked(server *s)
{
    for (;;) {
        job *j = s->head;
        int i = j && !j->cancelled && !s->stopping ? pick_slot(s, j) : -1;
        if (!j || (i < 0 && !j->cancelled && !s->stopping))
            return;
        s->head = j->next;
        if (!s->head)
            s->tail = NULL;
        if (i >= 0) {
            j->phase = JOB_RUNNING;
            pthread_mutex_unlock(&s->mu);
            slot_run *r = run_begin(s, i, j);
            pthread_mutex_lock(&s->mu);
            if (r) {
                s->metrics.running++;
                s->slots[i].run = r;
                s->slots[i].last_used = now_seconds();
                continue;
            }
        } else if (!j->cancelled) {
            oai_error err;
            oai_fail(&err, 503, "server_error", NULL, NULL, SHUTTING_DOWN);
            /* (a part of a stream that may have begun: an error event) */
            char *body = j->part ? oai_event_error(&err) : oai_error_body(&err);
            if (body)
                append_locked(j, body, strlen(body));
            free(body);
            j->status = j->part ? 200 : 503;
        } else {
            s->metrics.requests_cancelled++;
        }
        job_done_locked(s, j);
    }
}

/* The slots as GET /slots shows them (s->mu held; between passes, and in a
 * chunk's pauses with every slot in its place). */
static void publish_slots_locked(server *s)
{
    for (int i = 0; i < s->o.parallel; i++) {
        const slot_run *r = s->slots[i].run;
        slot_view *v = &s->views[i];
        slot_ids(s, i, &v->n_past);
        v->state = !r ? "idle" : r->state == RUN_PREFILL ? "prefilling" : "generating";
        snprintf(v->request, sizeof v->request, "%s", r ? r->j->id : "");
        v->prompt_tokens = r ? r->n : 0;
        v->prompt_done = r ? r->done : 0;
        v->generated = r ? r->generated : 0;
    }
}

/* Whether prompt a's next chunk comes before b's: prompts take chunks in
 * turn, a new one first (oldest request first), so a short prompt waits for
 * no more than a chunk of a long one. */
static int waited_longer(const slot_run *a, const slot_run *b)
{
    return a->t_chunk != b->t_chunk ? a->t_chunk < b->t_chunk : a->j->seq < b->j->seq;
}

/* Whether slot i's prompt waits for an earlier request's still prefilling
 * whose prompt shares most of what slot i has left to prefill, and has not
 * yet prefilled all of that (a request's n choices, a batch's preamble; not
 * the chat template's first tokens): that one computes the shared part once,
 * then it is copied (take_shared_prefix). */
static int waits_for_shared(const server *s, int i)
{
    const slot_run *a = s->slots[i].run;
    for (int k = 0; k < s->o.parallel; k++) {
        const slot_run *b = s->slots[k].run;
        if (k == i || !b || b->state != RUN_PREFILL || b->j->seq >= a->j->seq)
            continue;
        int shared = ids_common_prefix(a->j->ids.ids, a->n - 1, b->j->ids.ids, b->n);
        if (2 * (shared - a->done) > a->n - a->done && shared > b->done)
            return 1;
    }
    return 0;
}

/* The runs that ended leave their slots: answered, freed (s->mu held). */
static void end_runs_locked(server *s)
{
    for (int i = 0; i < s->o.parallel; i++) {
        slot_run *r = s->slots[i].run;
        if (!r || r->state != RUN_ENDED)
            continue;
        pthread_mutex_unlock(&s->mu);
        run_end(s, r);
        pthread_mutex_lock(&s->mu);
        s->slots[i].run = NULL;
        s->metrics.running--;
        s->slots[i].last_used = now_seconds();
        job_done_locked(s, r->j);
        run_free(r);
    }
}

/* The new prompt (no chunk yet) that runs between the layers of another's
 * chunk: the oldest of those with no more than a quarter of a chunk left to
 * prefill (a question sent behind a document, a conversation's next turn),
 * which so waits for a layer of the long prompt rather than the rest of its
 * chunk, and keeps the generating slots' wait short; -1 if none. */
static int short_new_prompt(const server *s)
{
    int best = -1, most = s->m->en.max_chunk / 4;
    for (int k = 0; k < s->o.parallel; k++) {
        const slot_run *r = s->slots[k].run;
        if (k != s->prefilling && r && r->state == RUN_PREFILL && !r->t_chunk &&
            r->n - r->done <= most && !waits_for_shared(s, k) &&
            (best < 0 || r->j->seq < s->slots[best].run->j->seq))
            best = k;
    }
    return best;
}

/* Whether the generating slots' next step is due inside a prompt's chunk:
 * --decode-interval has passed since their last step, and at least as long
 * as that step took (so the prompt keeps half the time or more). */
static int step_due(const server *s)
{
    double due = s->step_took > s->o.decode_interval ? s->step_took : s->o.decode_interval;
    return s->o.decode_interval > 0 && now_seconds() - s->step_end >= due;
}

/* The engine's pause_wanted while a prompt's chunk runs: a request waits in
 * the queue with a slot free, a short new prompt in a slot, or a step is due. */
static int work_between_layers(void *ctx)
{
    server *s = ctx;
    int which[s->o.parallel], free_slot = 0;
    if (s->prefilling < 0)
        return 0;
    for (int k = 0; k < s->o.parallel; k++)
        free_slot |= !s->slots[k].run;
    pthread_mutex_lock(&s->mu);
    int queued = free_slot && s->head != NULL;
    pthread_mutex_unlock(&s->mu);
    return queued || short_new_prompt(s) >= 0 || (step_due(s) && decoding_slots(s, which));
}

/* The engine's between_layers while slot i's prompt chunk is prefilled: new
 * requests take free slots and a short new prompt is prefilled; a due step
 * of the generating slots, the runs it ends answered, and GET /slots told.
 * Slot i is swapped out meanwhile, so every slot is where a pass finds it. */
static void between_chunk_layers(void *ctx)
{
    server *s = ctx;
    int which[s->o.parallel], n, k, i = s->prefilling;
    if (i < 0)
        return;
    slot_swap(s, i);
    pthread_mutex_lock(&s->mu);
    admit_locked(s);
    pthread_mutex_unlock(&s->mu);
    if ((k = short_new_prompt(s)) >= 0) {
        slot_prefill(s, k);
        s->prefilling = i;
        pthread_mutex_lock(&s->mu);
        s->metrics.prompts_between_layers++;
        pthread_mutex_unlock(&s->mu);
    }
    int step = step_due(s) && (n = decoding_slots(s, which));
    if (step)
        slots_decode(s, which, n);
    pthread_mutex_lock(&s->mu);
    s->metrics.decode_steps_in_prefill += (uint64_t)step;
    end_runs_locked(s);
    publish_slots_locked(s);
    pthread_mutex_unlock(&s->mu);
    slot_swap(s, i);
}

/* Lets work run between the layers of a prompt's chunk (between_chunk_layers);
 * without the memory for it, new prompts and generating slots wait for the
 * chunk's end, as said. */
static void allow_work_in_chunks(server *s)
{
    engine *en = &s->m->en;
    errbuf e;
    s->prefilling = -1;
    if (s->o.parallel < 2)
        return;
    if (engine_allow_pauses(en, &e)) {
        fprintf(stderr, "moetier serve: warning: %s: new prompts and generating requests wait "
                "for each prompt chunk's end\n", e.msg);
        return;
    }
    en->between_layers = between_chunk_layers;
    en->pause_wanted = work_between_layers;
    en->between_ctx = s;
}

void *serve_engine_main(void *arg)
{
    server *s = arg;
    int P = s->o.parallel;
    allow_work_in_chunks(s);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        admit_locked(s);
        publish_slots_locked(s);
        int busy = 0;
        for (int i = 0; i < P; i++)
            busy += s->slots[i].run != NULL;
        if (!busy) {
            if (s->stopping)
                break;
            if (s->o.prompt_cache_dir && s->pc_synced != s->pc.changes) {
                pthread_mutex_unlock(&s->mu);
                sync_prompt_cache_step(s);
                pthread_mutex_lock(&s->mu);
            } else if (!s->head) {
                pthread_cond_wait(&s->cv, &s->mu);
            }
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        /* a pass: a chunk of the prompt that has waited longest for one (the
         * generating slots may step between its layers), then every
         * generating slot's next token together */
        int decoding[P], n_dec, next = -1;
        for (int i = 0; i < P; i++)
            if (s->slots[i].run && s->slots[i].run->state == RUN_PREFILL &&
                (next < 0 || waited_longer(s->slots[i].run, s->slots[next].run)) &&
                !waits_for_shared(s, i))
                next = i;
        if (next >= 0)
            slot_prefill(s, next);
        if ((n_dec = decoding_slots(s, decoding)))
            slots_decode(s, decoding, n_dec);
        pthread_mutex_lock(&s->mu);
        if (s->m->profile) {
            backend_profile_snapshot(s->m->profile, s->metrics.profile);
            s->metrics.have_profile = 1;
        }
        end_runs_locked(s);
    }
    pthread_mutex_unlock(&s->mu);
    s->m->en.between_layers = NULL;
    s->m->en.pause_wanted = NULL;
    return NULL;
}
