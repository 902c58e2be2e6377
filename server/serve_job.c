/* serve_job: the engine thread of the server. Takes queued requests in turn:
 * prompt rendering and tokenization, KV prefix reuse, prefill, the sampling
 * loop with stop tokens, stop strings and tool-call parsing, and the events or
 * the final body for the client. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/base/progress.h"
#include "core/text/tool_calls.h"
#include "oai_response.h"
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

static int prefill_stop_requested(void *ctx)
{
    prefill_stop *p = ctx;
    return job_cancelled(p->s, p->j);
}

/* An error before anything was sent: the status and an error body. */
static void job_fail(server *s, job *j, const oai_error *err)
{
    char *body = oai_error_body(err);
    pthread_mutex_lock(&s->mu);
    if (body)
        append_locked(j, body, strlen(body));
    j->status = err->status;
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
    int stream, chat, role_sent;
    buf text, reasoning;                /* non-streaming: the whole answer */
    tool_call *calls;                   /* non-streaming: copies */
    int n_calls;
    int calls_seen;                     /* numbering of streamed calls */
    tool_stream ts;
} answer;

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
    if (!content_len && !reasoning_len && !n_calls)
        return;
    if (a->stream) {
        job_emit(a->s, a->j, oai_event_delta(&a->meta, a->chat && !a->role_sent, content, content_len,
                                             reasoning, reasoning_len, calls, n_calls,
                                             a->calls_seen, NULL));
        a->role_sent = 1;
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
    if (a->chat)
        tool_stream_free(&a->ts);
}

static int is_stop_id(const server *s, int id)
{
    for (int i = 0; i < s->n_stop_ids; i++)
        if (s->stop_ids[i] == id)
            return 1;
    return 0;
}

/* Special tokens reach the client only as the tool-call and reasoning markers
 * the chat parser turns into fields; others (reserved, media, ...) are dropped,
 * as OpenAI-style servers do. */
static int shown_special(const server *s, int id, const char *name, size_t n)
{
    return !vocab_is_special(&s->tok->v, id) || tool_stream_marker(name, n);
}

int job_prompt_ids(server *s, job *j, oai_error *err)
{
    token_list *ids = &j->ids;
    errbuf e;
    char *text = NULL;
    size_t len = 0;
    const char *p = j->req.prompt;
    if (j->req.kind == OAI_CHAT) {
        if (chat_format_render(s->kind, j->req.messages, j->req.tools, &j->req.copt, &text, &len, &e))
            return oai_fail(err, 400, "invalid_request_error", "messages", NULL, "%s", e.msg);
        p = text;
    } else {
        len = strlen(p);
    }
    int rc = tokenizer_encode(s->tok, p, len, TOK_ALLOW_SPECIAL, ids, &e);
    free(text);
    if (rc)
        return oai_fail(err, 400, "invalid_request_error", j->req.kind == OAI_CHAT ? "messages" : "prompt",
                        NULL, "%s", e.msg);
    int ctx = s->m->en.kv.max_ctx;
    int limit = s->o.max_prompt_tokens ? s->o.max_prompt_tokens : ctx - 1;
    if (limit > ctx - 1)
        limit = ctx - 1;
    if ((int)ids->n > limit)
        return oai_fail(err, 400, "invalid_request_error", j->req.kind == OAI_CHAT ? "messages" : "prompt",
                        "context_length_exceeded",
                        "the prompt has %zu tokens; this server takes at most %d (context %d)",
                        ids->n, limit, ctx);
    if (ids->n == 0)
        return oai_fail(err, 400, "invalid_request_error", "prompt", NULL, "the prompt is empty");
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
    int nl = 0;
    const tier_layer_stats *st = tiered_source_stats(&s->m->src, &nl);
    if (!st)
        return;
    serve_metrics *m = &s->metrics;
    m->have_tiers = 1;
    m->dram_hits = m->dram_misses = m->nvme_bytes_read = 0;
    m->stall_seconds = 0;
    for (int l = 0; l < nl; l++) {
        m->dram_hits += st[l].hits;
        m->dram_misses += st[l].misses;
        m->nvme_bytes_read += st[l].bytes_read;
        m->stall_seconds += st[l].stall_seconds;
    }
}

static void run_job(server *s, job *j)
{
    engine *en = &s->m->en;
    oai_error err;
    const token_list ids = j->ids;
    float *logits = NULL;
    sampler smp;
    int have_sampler = 0;
    stop_filter sf;
    stop_filter_init(&sf, j->req.stop, j->req.n_stop);
    answer a = {.s = s, .j = j, .stream = j->req.stream, .chat = j->req.kind == OAI_CHAT};
    a.meta = (oai_meta){.kind = j->req.kind, .id = j->id, .model = s->model_name, .created = j->created};
    if (a.chat)
        tool_stream_init(&a.ts, j->req.copt.thinking ? TOOL_REASONING_OPEN : TOOL_REASONING_TAGS);
    int n = (int)ids.n, ctx = en->kv.max_ctx;
    int max_new = j->req.max_tokens ? j->req.max_tokens : s->o.default_max_tokens;
    if (max_new <= 0 || max_new > ctx - n)
        max_new = ctx - n;
    sampler_params sp = s->o.sp;
    if (j->req.temperature >= 0)
        sp.temperature = j->req.temperature;
    if (j->req.top_p > 0)
        sp.top_p = j->req.top_p;
    if (j->req.top_k >= 0)
        sp.top_k = j->req.top_k;
    if (j->req.min_p >= 0)
        sp.min_p = j->req.min_p;
    if (j->req.repeat_penalty > 0)
        sp.repeat_penalty = j->req.repeat_penalty;
    sp.seed = j->req.has_seed ? j->req.seed : fresh_seed(j);
    errbuf e;
    logits = malloc((size_t)s->m->mw.cfg.vocab_size * sizeof *logits);
    if (!logits || sampler_create(&smp, &sp, s->m->mw.cfg.vocab_size, &e)) {
        oai_fail(&err, 500, "server_error", NULL, NULL, "out of memory");
        job_fail(s, j, &err);
        goto out;
    }
    have_sampler = 1;
    for (int i = 0; i < n; i++)     /* the repetition penalty looks back over the prompt too */
        sampler_accept(&smp, ids.ids[i]);
    job_set_status(s, j, 200);

    double t0 = now_seconds();
    int reuse = prompt_cache_prepare(&s->pc, en, ids.ids, n);
    int rc = engine_truncate(en, reuse, &e);
    if (!rc) {
        /* a long prompt stops within a chunk when its client leaves or the server stops;
         * the chunks done stay in the cache for the next request that shares them */
        prefill_stop ps = {s, j};
        en->stop_requested = prefill_stop_requested;
        en->stop_ctx = &ps;
        rc = engine_forward(en, ids.ids + reuse, n - reuse, logits, 0, &e);
        en->stop_requested = NULL;
        en->stop_ctx = NULL;
    }
    double t1 = now_seconds(), t_first = 0;
    const char *finish = "length";
    if (rc == 1) {
        finish = NULL;
        rc = 0;
    }
    int generated = 0;
    for (int k = 0; !rc && finish && k < max_new; k++) {
        if (job_cancelled(s, j)) {
            finish = NULL;
            break;
        }
        int next;
        if (s->has_forced)
            next = k < (int)s->forced.n ? s->forced.ids[k] : s->stop_ids[0];
        else
            next = sampler_sample(&smp, logits);
        sampler_accept(&smp, next);
        if (!t_first)
            t_first = now_seconds();
        if (is_stop_id(s, next)) {
            finish = "stop";
            break;
        }
        generated++;
        size_t bn;
        const char *bytes = vocab_decode(&s->tok->v, next, &bn);
        if (bytes && !shown_special(s, next, bytes, bn))
            bytes = NULL, bn = 0;
        const char *rel;
        size_t rel_len;
        int st = stop_filter_feed(&sf, bytes ? bytes : "", bytes ? bn : 0, &rel, &rel_len);
        answer_text(&a, rel, rel_len, 0);
        if (st == 1) {
            finish = "stop";
            break;
        }
        if (k + 1 == max_new)
            break;
        rc = engine_decode(en, next, logits, &e);
    }
    double t2 = now_seconds();
    if (!sf.stopped) {
        const char *rel;
        size_t rel_len;
        stop_filter_finish(&sf, &rel, &rel_len);
        answer_text(&a, rel, rel_len, 0);
    }
    if (a.chat)
        answer_text(&a, "", 0, 1);
    if (finish && !strcmp(finish, "stop") && a.calls_seen)
        finish = "tool_calls";
    oai_usage u = {.prompt_tokens = n, .completion_tokens = generated, .cached_tokens = reuse};
    if (rc) {
        /* an engine failure (I/O error of a tier, ...): the client learns why */
        oai_fail(&err, 500, "server_error", NULL, NULL, "%s", e.msg);
        if (a.stream)
            job_emit(s, j, oai_event_error(&err));
        else
            job_fail(s, j, &err);
        engine_reset(en);
    } else if (finish && a.stream) {
        if (a.chat && !a.role_sent)
            job_emit(s, j, oai_event_delta(&a.meta, 1, "", 0, "", 0, NULL, 0, 0, NULL));
        job_emit(s, j, oai_event_delta(&a.meta, 0, "", 0, "", 0, NULL, 0, 0, finish));
        if (j->req.include_usage)
            job_emit(s, j, oai_event_usage(&a.meta, &u));
        job_emit(s, j, strdup("data: [DONE]\n\n"));
    } else if (finish) {
        job_emit(s, j, oai_full_response(&a.meta, a.text.p, a.text.len, a.reasoning.p,
                                         a.reasoning.len, a.calls, a.n_calls, finish, &u));
    } else if (stopped_by_shutdown(s, j)) {
        oai_fail(&err, 503, "server_error", NULL, NULL, SHUTTING_DOWN);
        if (a.stream)
            job_emit(s, j, oai_event_error(&err));
        else
            job_fail(s, j, &err);
    }
    pthread_mutex_lock(&s->mu);
    serve_metrics *m = &s->metrics;
    m->prompt_tokens += (uint64_t)n;
    m->prompt_tokens_cached += (uint64_t)reuse;
    m->prompt_cache_bytes = s->pc.bytes;
    m->prompt_cache_entries = s->pc.n;
    m->prompt_tokens_restored = s->pc.restored_tokens;
    m->completion_tokens += (uint64_t)generated;
    m->prefill_seconds += t1 - t0;
    m->decode_seconds += t2 - t1;
    if (t_first) {
        m->ttft_seconds_sum += t_first - j->t_arrival;
        m->ttft_count++;
    }
    if (generated > 1 && t2 > t_first)
        m->last_decode_tokens_per_second = (double)(generated - 1) / (t2 - t_first);
    if (!finish)
        m->requests_cancelled++;
    snapshot_tiers(s);
    pthread_mutex_unlock(&s->mu);
out:
    if (have_sampler)
        sampler_destroy(&smp);
    free(logits);
    stop_filter_free(&sf);
    answer_free(&a);
}

/* With no request waiting, one step towards a --prompt-cache-dir that holds
 * the cache as it is now (a crash then loses little): an entry written, or,
 * once all are, the files of entries gone deleted (unless a write failed:
 * what is there may be all that is left of a conversation). */
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
    if (!failed && prompt_cache_remove_stale(&s->pc, dir, &s->pc_id, &removed, &e))
        fprintf(stderr, "moetier serve: warning: %s\n", e.msg);
    s->pc_synced = s->pc.changes;
}

void *serve_engine_main(void *arg)
{
    server *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->stopping) {
            if (s->o.prompt_cache_dir && s->pc_synced != s->pc.changes) {
                pthread_mutex_unlock(&s->mu);
                sync_prompt_cache_step(s);
                pthread_mutex_lock(&s->mu);
                continue;
            }
            pthread_cond_wait(&s->cv, &s->mu);
        }
        job *j = s->head;
        if (!j)
            break;
        s->head = j->next;
        if (!s->head)
            s->tail = NULL;
        if (!j->cancelled && !s->stopping) {
            j->phase = JOB_RUNNING;
            pthread_mutex_unlock(&s->mu);
            run_job(s, j);
            pthread_mutex_lock(&s->mu);
        } else {
            if (!j->cancelled) {
                oai_error err;
                oai_fail(&err, 503, "server_error", NULL, NULL, SHUTTING_DOWN);
                char *body = oai_error_body(&err);
                if (body)
                    append_locked(j, body, strlen(body));
                free(body);
                j->status = 503;
            }
            s->metrics.requests_cancelled += (uint64_t)j->cancelled;
        }
        j->phase = JOB_DONE;
        s->n_jobs--;
        s->metrics.queue_depth = s->n_jobs;
        pthread_cond_broadcast(&s->cv);
        job_release(j);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}
