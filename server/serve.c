/* serve: see serve.h. This file is the HTTP side: routing, limits, the API
 * key, queueing, and passing each job's output to its connection. */
#include "serve.h"

#include <cJSON.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/base/meminfo.h"
#include "core/base/progress.h"
#include "core/base/stop_signal.h"
#include "anthropic_request.h"
#include "anthropic_response.h"
#include "json_out.h"
#include "llama_request.h"
#include "llama_response.h"
#include "oai_response.h"
#include "request_origin.h"
#include "responses_request.h"
#include "serve_internal.h"
#include "serve_infill.h"
#include "serve_tokens.h"
#include "webui_page.h"

void serve_options_default(serve_options *o)
{
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->max_body = 4u << 20;
    o->max_queue = 32;
    o->parallel = 1;
    o->prompt_cache_gb = -1;
    o->keep_alive = 10;
    o->decode_interval = 0.5;
    chat_options_default(&o->copt);
    o->sp = sampler_defaults();
    o->dry_breakers = dry_default_breakers;
    o->n_dry_breakers = (int)(sizeof dry_default_breakers / sizeof *dry_default_breakers);
}

double serve_prompt_cache_default_gb(void)
{
    uint64_t total, avail;
    meminfo_read(&total, &avail);
    return avail / 16 < 4000000000u ? (double)(avail / 16) / 1e9 : 4.0;
}

/* seconds a stopping server waits for its answers to reach their clients */
#define SHUTDOWN_GRACE_S 30

/* Per request: the body as it arrives. */
typedef struct conn_ctx {
    char *body;
    size_t len, cap;
    int too_large;
    int answering;              /* counted in s->answering until the request completes */
} conn_ctx;

/* A streaming response's source: one job, or the parts of one request (its
 * n choices made at once), whose events it sends whole, taking the parts in
 * turn, and whose end (the usage summed, [DONE]) it sends itself once all
 * are done. */
typedef struct stream_ctx {
    server *s;
    job *one, **jobs;           /* jobs: &one, or the parts */
    int n;
    int cur;                    /* a job whose bytes were cut short, or -1 */
    int next;                   /* the part to look at first */
    char *tail;                 /* the parts' end (parts_end), once made */
    size_t tail_sent;
    int tail_made;
    int fd;
} stream_ctx;

static int client_gone(int fd)
{
    if (fd < 0)
        return 0;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static int conn_fd(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* Waits (s->mu held) until ready(arg); 0, or -1 when the client left. A
 * stopping server still answers: its engine ends a job within a chunk or a
 * token, with a 503 or an error event. */
static int wait_until(server *s, int fd, int (*ready)(const void *), const void *arg)
{
    while (!ready(arg)) {
        if (client_gone(fd))
            return -1;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    return 0;
}

/* The same until done(j); the job is cancelled when the client left. */
static int wait_for(server *s, job *j, int fd, int (*done)(const void *))
{
    if (!wait_until(s, fd, done, j))
        return 0;
    j->cancelled = 1;
    pthread_cond_broadcast(&s->cv);
    return -1;
}

static int status_known(const void *arg)
{
    const job *j = arg;
    return j->status != 0 || j->phase == JOB_DONE;
}

static int job_done(const void *arg)
{
    const job *j = arg;
    return j->phase == JOB_DONE;
}

/* The request's origin checked (request_origin.h): -1 refused (why says
 * it), else 1 when it is an allowed cross-origin one (CORS headers go on its
 * answer), 0 otherwise. */
static int origin_of(const server *s, struct MHD_Connection *c, char *why, size_t n)
{
    int cors;
    if (request_origin_check(s->loopback, MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host"),
                             MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin"), s->o.allowed_hosts,
                             s->o.allowed_origins, &cors, why, n))
        return -1;
    return cors;
}

/* Queues r (which it releases) and counts its status in the metrics. */
static enum MHD_Result queue_counted(server *s, struct MHD_Connection *c, int status, struct MHD_Response *r)
{
    char why[8];
    if (s->o.allowed_origins && origin_of(s, c, why, sizeof why) == 1) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin",
                                MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin"));
        MHD_add_response_header(r, "Vary", "Origin");
    }
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    pthread_mutex_lock(&s->mu);
    serve_metrics_count_status(&s->metrics, status);
    pthread_mutex_unlock(&s->mu);
    return ret;
}

/* A body, and an Allow header when allow is not NULL (a 405's). */
static enum MHD_Result send_body_allow(server *s, struct MHD_Connection *c, int status, char *owned,
                                       const char *type, const char *allow)
{
    if (!owned)
        owned = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\"}}");
    struct MHD_Response *r =
        MHD_create_response_from_buffer(owned ? strlen(owned) : 0, owned, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(owned);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    if (allow)
        MHD_add_response_header(r, "Allow", allow);
    return queue_counted(s, c, status, r);
}

static enum MHD_Result send_body(server *s, struct MHD_Connection *c, int status, char *owned,
                                 const char *type)
{
    return send_body_allow(s, c, status, owned, type, NULL);
}

/* s with each `from` in it made `to`, into out (cut to its size). */
static void replace_all(char *out, size_t size, const char *s, const char *from, const char *to)
{
    size_t n = 0, fl = strlen(from), tl = strlen(to);
    while (*s && n + 1 < size) {
        if (!strncmp(s, from, fl)) {
            size_t k = tl < size - 1 - n ? tl : size - 1 - n;
            memcpy(out + n, to, k);
            n += k;
            s += fl;
        } else {
            out[n++] = *s++;
        }
    }
    out[n] = 0;
}

/* A translated request's fields as its client named them: the checks run on
 * the chat request the Anthropic or Responses one became. */
static void name_as_sent(oai_api api, oai_error *e)
{
    static const struct {
        oai_api api;
        const char *chat, *sent;
    } names[] = {
        {API_RESPONSES, "response_format.json_schema.schema", "text.format.schema"},
        {API_RESPONSES, "response_format", "text.format"},
        {API_ANTHROPIC, "response_format.json_schema.schema", "output_config.format.schema"},
        {API_ANTHROPIC, "response_format", "output_config.format"},
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        if (names[i].api != api)
            continue;
        char t[sizeof e->message];
        replace_all(t, sizeof e->param, e->param, names[i].chat, names[i].sent);
        snprintf(e->param, sizeof e->param, "%s", t);
        replace_all(t, sizeof t, e->message, names[i].chat, names[i].sent);
        snprintf(e->message, sizeof e->message, "%s", t);
    }
}

/* An error body in the shape of the API the request came by. */
static char *error_body(oai_api api, const oai_error *e)
{
    oai_error named = *e;
    name_as_sent(api, &named);
    return api == API_ANTHROPIC ? anthropic_error_body(&named) : oai_error_body(&named);
}

static enum MHD_Result send_error_as(server *s, struct MHD_Connection *c, oai_api api, int status,
                                     const char *type, const char *param, const char *code,
                                     const char *msg)
{
    oai_error e;
    oai_fail(&e, status, type, param, code, "%s", msg);
    return send_body(s, c, status, error_body(api, &e), "application/json");
}

static enum MHD_Result send_error(server *s, struct MHD_Connection *c, int status, const char *type,
                                  const char *param, const char *code, const char *msg)
{
    return send_error_as(s, c, API_OPENAI, status, type, param, code, msg);
}

/* 405 for a route that takes only the methods allow lists ("GET, HEAD" or
 * "POST"), naming them in the Allow header as RFC 9110 asks. */
static enum MHD_Result wrong_method(server *s, struct MHD_Connection *c, oai_api api, const char *allow,
                                    const char *route)
{
    oai_error e;
    oai_fail(&e, 405, "invalid_request_error", NULL, NULL, "use %s %s", strncmp(allow, "GET", 3) ? "POST" : "GET",
             route);
    return send_body_allow(s, c, 405, error_body(api, &e), "application/json", allow);
}

/* The answer to an allowed cross-origin page's preflight: the methods and
 * the headers its requests may use (queue_counted adds the origin). */
static enum MHD_Result send_preflight(server *s, struct MHD_Connection *c)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS");
    /* the headers it asks for, whatever they are (the SDKs' own x-stainless-*,
     * Anthropic's browser switch): the page is one the operator allowed */
    const char *asked = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Access-Control-Request-Headers");
    MHD_add_response_header(r, "Access-Control-Allow-Headers",
                            asked ? asked : "Authorization, Content-Type, x-api-key, anthropic-version");
    MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    return queue_counted(s, c, 204, r);
}

/* GET / : the chat page (webui_page.h), unless --no-webui. Its policy lets
 * it run only its own inline script and reach only this server. */
static enum MHD_Result send_page(server *s, struct MHD_Connection *c, const char *method)
{
    if (s->o.no_webui)
        return send_error(s, c, 404, "invalid_request_error", NULL, "not_found",
                          "this server's chat page is off (serve --no-webui)");
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return wrong_method(s, c, API_OPENAI, "GET, HEAD", "/");
    size_t len;
    const char *page = webui_page(&len);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)page, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "text/html; charset=utf-8");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
                            "frame-ancestors 'none'");
    return queue_counted(s, c, 200, r);
}

static int stream_ready(const void *arg)
{
    const stream_ctx *sc = arg;
    int done = 1;
    for (int k = 0; k < sc->n; k++) {
        if (sc->jobs[k]->out_len > sc->jobs[k]->out_sent)
            return 1;
        done &= sc->jobs[k]->phase == JOB_DONE;
    }
    return done;
}

/* The next part with bytes to send (in turn), or -1. */
static int part_with_output(stream_ctx *sc)
{
    for (int i = 0; i < sc->n; i++) {
        int k = (sc->next + i) % sc->n;
        if (sc->jobs[k]->out_len > sc->jobs[k]->out_sent) {
            sc->next = (k + 1) % sc->n;
            return k;
        }
    }
    return -1;
}

/* Job k's bytes, as many as fit. Jobs append whole events (job_emit), so
 * only a part cut short by max must go on before another's are sent. */
static size_t send_part(stream_ctx *sc, int k, char *out, size_t max)
{
    job *j = sc->jobs[k];
    size_t len = j->out_len - j->out_sent, n = len < max ? len : max;
    memcpy(out, j->out + j->out_sent, n);
    j->out_sent += n;
    sc->cur = n < len ? k : -1;
    return n;
}

/* The parts' end: the usage summed (the prompt counted once) when asked for,
 * and [DONE]; only when every part finished its answer (else their error
 * events end the stream, as a single job's does). NULL when there is none. */
static char *parts_end(server *s, const stream_ctx *sc)
{
    const job *j0 = sc->jobs[0];
    oai_usage u = j0->usage;
    for (int k = 0; k < sc->n; k++) {
        if (!sc->jobs[k]->part_finished)
            return NULL;
        if (k) {
            u.completion_tokens += sc->jobs[k]->usage.completion_tokens;
            u.reasoning_tokens += sc->jobs[k]->usage.reasoning_tokens;
        }
    }
    oai_meta m = {.kind = j0->req.kind, .id = j0->id, .model = s->model_name, .created = j0->created};
    char *usage = j0->req.include_usage ? oai_event_usage(&m, &u) : NULL;
    const char *done = "data: [DONE]\n\n";
    size_t ul = usage ? strlen(usage) : 0;
    char *tail = malloc(ul + strlen(done) + 1);
    if (tail) {
        memcpy(tail, usage ? usage : "", ul);
        strcpy(tail + ul, done);
    }
    free(usage);
    return tail;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    stream_ctx *sc = cls;
    server *s = sc->s;
    ssize_t ret;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int k = sc->cur >= 0 ? sc->cur : part_with_output(sc);
        if (k >= 0) {
            ret = (ssize_t)send_part(sc, k, out, max);
            break;
        }
        if (stream_ready(sc)) {     /* every job done, all sent */
            if (sc->n > 1 && !sc->tail_made) {
                sc->tail = parts_end(s, sc);
                sc->tail_made = 1;
            }
            size_t left = sc->tail ? strlen(sc->tail + sc->tail_sent) : 0;
            if (left) {
                size_t n = left < max ? left : max;
                memcpy(out, sc->tail + sc->tail_sent, n);
                sc->tail_sent += n;
                ret = (ssize_t)n;
                break;
            }
            ret = MHD_CONTENT_READER_END_OF_STREAM;
            break;
        }
        if (wait_until(s, sc->fd, stream_ready, sc)) {
            for (int i = 0; i < sc->n; i++)
                sc->jobs[i]->cancelled = 1;
            pthread_cond_broadcast(&s->cv);
            ret = MHD_CONTENT_READER_END_WITH_ERROR;   /* the client left: close */
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return ret;
}

static void stream_free(void *cls)
{
    stream_ctx *sc = cls;
    server *s = sc->s;
    pthread_mutex_lock(&s->mu);
    for (int k = 0; k < sc->n; k++) {
        if (sc->jobs[k]->phase != JOB_DONE)
            sc->jobs[k]->cancelled = 1;     /* the connection ended before the stream did */
        job_release(sc->jobs[k]);
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (sc->jobs != &sc->one)
        free(sc->jobs);
    free(sc->tail);
    free(sc);
}

/* Takes a queued job whose client left out of the queue (s->mu held), so its
 * place is free at once, not once the engine reaches it. */
static void unqueue(server *s, job *j)
{
    job **p = &s->head, *prev = NULL;
    while (*p && *p != j) {
        prev = *p;
        p = &(*p)->next;
    }
    if (!*p)
        return;
    *p = j->next;
    if (s->tail == j)
        s->tail = prev;
    j->phase = JOB_DONE;
    s->n_jobs--;
    s->metrics.queue_depth = s->n_jobs;
    s->metrics.requests_cancelled++;
    pthread_cond_broadcast(&s->cv);
    job_release(j);     /* the queue's reference */
}

/* A job never queued: nothing else refers to it. */
static void discard_job(job *j)
{
    oai_request_free(&j->req);
    token_list_free(&j->ids);
    free(j);
}

/* Queues job j (s->mu held), referred to by the connection and the queue. */
static void enqueue_locked(server *s, job *j, oai_kind kind)
{
    const char *prefix = j->req.api == API_ANTHROPIC   ? "msg_"
                         : j->req.api == API_RESPONSES ? "resp_"
                         : kind == OAI_CHAT            ? "chatcmpl-"
                                                       : "cmpl-";
    j->refs = 2;
    j->created = (long long)time(NULL);
    j->t_arrival = now_seconds();
    j->seq = ++s->seq;
    snprintf(j->id, sizeof j->id, "%s%lld", prefix, j->seq);
    if (s->tail)
        s->tail->next = j;
    else
        s->head = j;
    s->tail = j;
    s->n_jobs++;
    s->metrics.queue_depth = s->n_jobs;
    pthread_cond_broadcast(&s->cv);
}

/* With s->mu held: 0 when a request may enter the queue; else s->mu is
 * released and the 503 to send is 1 (full) or 2 (stopping) */
static int queue_closed_unlock(server *s)
{
    if (s->n_jobs < s->o.max_queue && !s->stopping)
        return 0;
    int closed = s->stopping ? 2 : 1;
    pthread_mutex_unlock(&s->mu);
    return closed;
}

static enum MHD_Result send_queue_refusal(server *s, struct MHD_Connection *c, oai_api api, int closed)
{
    if (closed == 2)
        return send_error_as(s, c, api, 503, "server_error", NULL, NULL, SHUTTING_DOWN);
    return send_error_as(s, c, api, 503, "server_error", NULL, "queue_full",
                         "the server is busy (its request queue is full); retry later");
}

/* Streams the events of jobs[0..n) (one job, or a request's parts), whose
 * references pass to the response (jobs itself when n > 1). */
static enum MHD_Result send_stream(server *s, struct MHD_Connection *c, job **jobs, int n, int fd)
{
    stream_ctx *sc = calloc(1, sizeof *sc);
    struct MHD_Response *r =
        sc ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, sc, stream_free)
           : NULL;
    if (!r) {
        free(sc);
        pthread_mutex_lock(&s->mu);
        for (int k = 0; k < n; k++) {
            jobs[k]->cancelled = 1;
            job_release(jobs[k]);
        }
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        if (n > 1)
            free(jobs);
        return MHD_NO;
    }
    *sc = (stream_ctx){.s = s, .one = jobs[0], .jobs = n > 1 ? jobs : &sc->one, .n = n, .cur = -1,
                       .fd = fd};
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    return queue_counted(s, c, 200, r);
}

/* serve --seed: a request naming no seed takes the server's (llama.cpp's;
 * its /completion's seed -1 still asks for a fresh one). */
static void default_seed(const server *s, oai_request *r)
{
    if (!r->has_seed && !r->seed_fresh && s->o.seed_given) {
        r->has_seed = 1;
        r->seed = s->o.sp.seed;
    }
}

/* The jobs a request is answered by: `prompts` of them (a batch's prompts,
 * else 1), each in `parts` (its n choices as jobs of their own, else 1).
 * Each is checked as a request of its own; NULL with err set (naming the
 * prompt of a batch) when one is refused. */
static job **split_jobs(server *s, const job *b, oai_kind kind, const char *body, size_t len,
                        int prompts, int parts, oai_error *err)
{
    int n = prompts * parts;
    job **jobs = calloc((size_t)n, sizeof *jobs);
    if (!jobs) {
        oai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        return NULL;
    }
    for (int i = 0; i < prompts; i++) {
        char *one = prompts > 1 ? oai_batch_body(&b->req, i) : NULL;
        const char *src = prompts > 1 ? one : body;
        size_t src_len = one ? strlen(one) : len;
        for (int c = 0; c < parts; c++) {
            job *j = src ? calloc(1, sizeof *j) : NULL;
            /* the prompt's choices after the first take its ids and chat
             * prompt (the parse is the job's own: its request holds the job's
             * seed and forcing) */
            const job *same = c ? jobs[i * parts] : NULL;
            int rc = !j ? oai_fail(err, 500, "server_error", NULL, NULL, "out of memory")
                     : oai_request_parse(kind, src, src_len, &s->o.copt, &j->req, err)
                       || job_prompt_ids(s, j, same, err);
            jobs[i * parts + c] = j;
            if (!rc && b->req.api == API_LLAMA) {
                /* (a prompt of llama.cpp's list: its body is the translated request's) */
                j->req.api = API_LLAMA;
                j->req.return_tokens = b->req.return_tokens;
                j->req.seed_fresh = b->req.seed_fresh;
                j->req.score_only |= b->req.score_only;     /* (n_predict 0) */
            }
            if (!rc)
                default_seed(s, &j->req);   /* (before seed + c: the choices still differ) */
            if (!rc && parts > 1) {
                /* choice c as the request's c-th made alone would be (seed + c) */
                j->req.n_choices = 1;
                j->req.seed += (uint64_t)c;
                j->part = j->req.stream;    /* streamed: its events carry index c */
                j->choice0 = j->req.stream ? c : 0;
            }
            if (!rc)
                continue;
            if (prompts > 1) {
                char msg[sizeof err->message];
                snprintf(msg, sizeof msg, "prompt %d of the batch: %s", i, err->message);
                snprintf(err->message, sizeof err->message, "%s", msg);
            }
            for (int k = 0; k <= i * parts + c; k++)
                if (jobs[k])
                    discard_job(jobs[k]);
            free(jobs);
            free(one);
            return NULL;
        }
        free(one);
    }
    return jobs;
}

/* A request answered by several jobs (split_jobs): a completions batch, or n
 * choices with --parallel, each job taking a slot of its own. The answer,
 * once all are done, holds every prompt's choices in order
 * (oai_batch_response), and a job that fails fails the request; streamed (n
 * choices), their events go out as they come (send_stream). They enter the
 * queue if one request would. */
static enum MHD_Result handle_split(server *s, struct MHD_Connection *c, conn_ctx *cx, job *b,
                                    oai_kind kind, int prompts, int parts)
{
    oai_error err;
    int n = prompts * parts, per_job = parts > 1 ? 1 : b->req.n_choices, stream = b->req.stream;
    oai_api b_api = b->req.api;
    job **jobs = split_jobs(s, b, kind, cx->body ? cx->body : "", cx->len, prompts, parts, &err);
    discard_job(b);
    if (!jobs)
        return send_body(s, c, err.status, oai_error_body(&err), "application/json");
    int fd = conn_fd(c);
    pthread_mutex_lock(&s->mu);
    int closed = queue_closed_unlock(s);
    if (closed) {
        for (int i = 0; i < n; i++)
            discard_job(jobs[i]);
        free(jobs);
        return send_queue_refusal(s, c, API_OPENAI, closed);
    }
    cx->answering = 1;
    s->answering++;
    for (int i = 0; i < n; i++)
        enqueue_locked(s, jobs[i], kind);
    for (int i = 1; stream && i < n; i++) {     /* one response: its id on every part's events */
        memcpy(jobs[i]->id, jobs[0]->id, sizeof jobs[i]->id);
        jobs[i]->created = jobs[0]->created;
    }
    /* a stream starts once its first part runs (the others' failures come as
     * error events: job_fail); else the answer waits for every job */
    int gone = 0;
    for (int i = 0; i < (stream ? 1 : n) && !gone; i++)
        gone = wait_for(s, jobs[i], fd, stream ? status_known : job_done);
    int failed = -1;
    for (int i = 0; i < n && failed < 0 && !gone; i++)
        if (jobs[i]->status != 200 && (!stream || i == 0))
            failed = i;
    if (stream && !gone && failed < 0) {
        pthread_mutex_unlock(&s->mu);
        return send_stream(s, c, jobs, n, fd);
    }
    /* the answer's bodies copied out (the merge runs without s->mu): the
     * first failed prompt's, or every prompt's */
    char *error = NULL, **bodies = NULL;
    if (!gone && failed >= 0)
        error = jobs[failed]->out ? strndup(jobs[failed]->out, jobs[failed]->out_len) : NULL;
    else if (!gone && (bodies = calloc((size_t)n, sizeof *bodies)))
        for (int i = 0; i < n; i++)
            bodies[i] = jobs[i]->out ? strndup(jobs[i]->out, jobs[i]->out_len) : NULL;
    int status = failed >= 0 ? (jobs[failed]->status ? jobs[failed]->status : 500) : 200;
    for (int i = 0; i < n; i++) {
        if (gone || (stream && jobs[i]->phase != JOB_DONE)) {
            jobs[i]->cancelled = 1;
            if (jobs[i]->phase == JOB_QUEUED)
                unqueue(s, jobs[i]);
        }
        job_release(jobs[i]);
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    free(jobs);
    if (gone)
        return MHD_NO;      /* nobody to answer: close */
    char *body = error;
    if (bodies) {
        int all = 1;
        for (int i = 0; i < n; i++)
            all &= bodies[i] != NULL;
        body = !all                         ? NULL
               : b_api == API_LLAMA ? llama_batch_response(bodies, n)
                                    : oai_batch_response(bodies, n, per_job, parts);
        for (int i = 0; i < n; i++)
            free(bodies[i]);
        free(bodies);
    }
    if (!body)
        return send_error(s, c, 500, "server_error", NULL, NULL, "out of memory");
    return send_body(s, c, status, body, "application/json");
}

/* 1 when a request naming this model is answered: the served id, an alias,
 * or any name with --alias '*'. */
static int model_served(const server *s, const char *name)
{
    if (!strcmp(name, s->model_name))
        return 1;
    for (int i = 0; i < s->o.n_aliases; i++)
        if (!strcmp(s->o.aliases[i], "*") || !strcmp(s->o.aliases[i], name))
            return 1;
    return 0;
}

/* A parsed request's job, or NULL with the error sent (*ret). */
static job *parse_job(server *s, struct MHD_Connection *c, oai_kind kind, oai_api api, int counting,
                      const conn_ctx *cx, enum MHD_Result *ret)
{
    job *j = calloc(1, sizeof *j);
    if (!j) {
        *ret = send_error_as(s, c, api, 500, "server_error", NULL, NULL, "out of memory");
        return NULL;
    }
    oai_error err;
    const char *body = cx->body ? cx->body : "";
    const chat_options *d = &s->o.copt;
    int rc = api == API_ANTHROPIC   ? anthropic_request_parse(body, cx->len, d, counting, &j->req, &err)
             : api == API_RESPONSES ? responses_request_parse(body, cx->len, d, &j->req, &err)
             : api == API_LLAMA     ? llama_request_parse(body, cx->len, d, &j->req, &err)
                                    : oai_request_parse(kind, body, cx->len, d, &j->req, &err);
    if (rc) {
        discard_job(j);
        *ret = send_body(s, c, err.status, error_body(api, &err), "application/json");
        return NULL;
    }
    if (j->req.model && !model_served(s, j->req.model)) {
        char msg[400];
        snprintf(msg, sizeof msg, "the model '%.200s' does not exist; this server serves '%.150s'",
                 j->req.model, s->model_name);
        discard_job(j);
        *ret = send_error_as(s, c, api, 404, "invalid_request_error", "model", "model_not_found", msg);
        return NULL;
    }
    default_seed(s, &j->req);
    return j;
}

/* POST /apply-template (llama.cpp's): a chat request's prompt as the model
 * would read it, {"prompt": TEXT}, for checking what a conversation renders
 * to. */
static enum MHD_Result handle_apply_template(server *s, struct MHD_Connection *c, conn_ctx *cx)
{
    enum MHD_Result ret;
    job *j = parse_job(s, c, OAI_CHAT, API_OPENAI, 1, cx, &ret);
    if (!j)
        return ret;
    oai_error err;
    char *text;
    size_t len;
    if (serve_chat_prompt(s, &j->req, &text, &len, NULL, &err)) {
        discard_job(j);
        return send_body(s, c, err.status, oai_error_body(&err), "application/json");
    }
    discard_job(j);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "prompt", json_clean_string(text, len));
    free(text);
    return send_body(s, c, 200, json_print_and_delete(root), "application/json");
}

/* The routes of OpenAI's API reached without "/v1", as clients given a base
 * URL without it send them (llama.cpp takes them too), and llama.cpp's
 * "/v1/health": the route they stand for (in buf when rewritten). */
static const char *canonical_route(const char *url, char *buf, size_t cap)
{
    static const char *const bare[] = {"/chat/completions", "/completions", "/models", "/responses",
                                       "/messages"};
    if (!strcmp(url, "/v1/health"))
        return "/health";
    for (size_t i = 0; i < sizeof bare / sizeof *bare; i++) {
        size_t n = strlen(bare[i]);
        if (!strncmp(url, bare[i], n) && (!url[n] || url[n] == '/') &&
            (size_t)snprintf(buf, cap, "/v1%s", url) < cap)
            return buf;
    }
    return url;
}

/* POST /v1/messages/count_tokens (Anthropic's) and /v1/responses/input_tokens
 * (the Responses API's): the prompt's tokens, as the request would be
 * prefilled. */
static enum MHD_Result handle_count_tokens(server *s, struct MHD_Connection *c, oai_api api, conn_ctx *cx)
{
    enum MHD_Result ret;
    job *j = parse_job(s, c, OAI_CHAT, api, 1, cx, &ret);
    if (!j)
        return ret;
    oai_error err;
    if (job_prompt_ids(s, j, NULL, &err)) {
        discard_job(j);
        return send_body(s, c, err.status, error_body(api, &err), "application/json");
    }
    char body[96];
    if (api == API_ANTHROPIC)
        snprintf(body, sizeof body, "{\"input_tokens\":%zu}", j->ids.n);
    else
        snprintf(body, sizeof body, "{\"object\":\"response.input_tokens\",\"input_tokens\":%zu}", j->ids.n);
    discard_job(j);
    return send_body(s, c, 200, strdup(body), "application/json");
}

static enum MHD_Result handle_completion(server *s, struct MHD_Connection *c, oai_kind kind,
                                         oai_api api, conn_ctx *cx)
{
    enum MHD_Result ret;
    job *j = parse_job(s, c, kind, api, 0, cx, &ret);
    if (!j)
        return ret;
    oai_error err;
    /* n choices, with slots to make them at once: each a job of its own (the
     * prompt prefilled once, the others copying it: take_shared_prefix); an
     * echo makes them one after another in one slot */
    int parts = j->req.n_choices > 1 && s->o.parallel > 1 && !j->req.echo ? j->req.n_choices : 1;
    if (j->req.batch_n || parts > 1)
        return handle_split(s, c, cx, j, kind, j->req.batch_n ? j->req.batch_n : 1, parts);
    if (job_prompt_ids(s, j, NULL, &err)) {
        discard_job(j);
        return send_body(s, c, err.status, error_body(api, &err), "application/json");
    }
    int fd = conn_fd(c);
    pthread_mutex_lock(&s->mu);
    int closed = queue_closed_unlock(s);
    if (closed) {
        discard_job(j);
        return send_queue_refusal(s, c, api, closed);
    }
    cx->answering = 1;
    s->answering++;
    enqueue_locked(s, j, kind);
    int gone = wait_for(s, j, fd, status_known);
    if (!gone && (j->status != 200 || !j->req.stream))
        gone = wait_for(s, j, fd, job_done);
    if (gone) {
        if (j->phase == JOB_QUEUED)
            unqueue(s, j);
        job_release(j);
        pthread_mutex_unlock(&s->mu);
        return MHD_NO;      /* nobody to answer: close */
    }
    int status = j->status ? j->status : 500;
    if (status != 200 || !j->req.stream) {
        char *body = j->out ? strndup(j->out + j->out_sent, j->out_len - j->out_sent) : NULL;
        job_release(j);
        pthread_mutex_unlock(&s->mu);
        return send_body(s, c, status, body, "application/json");
    }
    pthread_mutex_unlock(&s->mu);
    return send_stream(s, c, &j, 1, fd);
}

/* A fill-in-the-middle request (serve_infill.h) as the completions request it
 * says, run as one: llama.cpp's /infill, or OpenAI's completions with a
 * suffix. */
static enum MHD_Result handle_fim(server *s, struct MHD_Connection *c, conn_ctx *cx, oai_api api)
{
    oai_error err;
    int limit = serve_prompt_limit(s);
    const char *in = cx->body ? cx->body : "";
    char *body = api == API_LLAMA ? serve_infill_body(s->tok, limit, in, cx->len, &err)
                                  : serve_suffix_body(s->tok, limit, in, cx->len, &err);
    if (!body)
        return send_body(s, c, err.status, oai_error_body(&err), "application/json");
    free(cx->body);
    cx->body = body;
    cx->len = strlen(body);
    cx->cap = cx->len + 1;
    return handle_completion(s, c, OAI_COMPLETION, api, cx);
}

/* Whether an OpenAI completions body asks for a suffix (not "" or null). */
static int asks_suffix(const conn_ctx *cx)
{
    if (!cx->body || !strstr(cx->body, "\"suffix\""))
        return 0;   /* (most bodies: no parse) */
    cJSON *root = cJSON_ParseWithLength(cx->body, cx->len);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "suffix");
    int asks = v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && !v->valuestring[0]);
    cJSON_Delete(root);
    return asks;
}

/* GET /slots: each slot's state, as the engine thread last published it */
static char *slots_body(server *s)
{
    cJSON *arr = cJSON_CreateArray();
    pthread_mutex_lock(&s->mu);
    for (int i = 0; arr && i < s->o.parallel; i++) {
        const slot_view *v = &s->views[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", i);
        cJSON_AddStringToObject(o, "state", v->state);
        cJSON_AddNumberToObject(o, "n_ctx", s->ctx);
        cJSON_AddNumberToObject(o, "n_past", v->n_past);
        if (*v->request) {
            cJSON_AddStringToObject(o, "request", v->request);
            cJSON_AddNumberToObject(o, "prompt_tokens", v->prompt_tokens);
            cJSON_AddNumberToObject(o, "prompt_done", v->prompt_done);
            cJSON_AddNumberToObject(o, "generated", v->generated);
        }
        cJSON_AddItemToArray(arr, o);
    }
    pthread_mutex_unlock(&s->mu);
    char *body = arr ? cJSON_PrintUnformatted(arr) : NULL;
    cJSON_Delete(arr);
    return body;
}

/* GET /props (llama.cpp's): what llama.cpp's web UI and tools read of a
 * server: its context, slots, default sampling, model and chat format */
static char *props_body(server *s)
{
    cJSON *root = cJSON_CreateObject(), *g = cJSON_AddObjectToObject(root, "default_generation_settings");
    cJSON_AddNumberToObject(g, "n_ctx", s->ctx);
    cJSON *p = cJSON_AddObjectToObject(g, "params");
    const sampler_params *sp = &s->o.sp;
    cJSON_AddNumberToObject(p, "temperature", json_float(sp->temperature));
    cJSON_AddNumberToObject(p, "top_k", sp->top_k);
    cJSON_AddNumberToObject(p, "top_p", json_float(sp->top_p));
    cJSON_AddNumberToObject(p, "min_p", json_float(sp->min_p));
    cJSON_AddNumberToObject(p, "repeat_penalty", json_float(sp->repeat_penalty));
    cJSON_AddNumberToObject(p, "repeat_last_n", sp->repeat_last_n);
    cJSON_AddNumberToObject(p, "presence_penalty", json_float(sp->presence_penalty));
    cJSON_AddNumberToObject(p, "frequency_penalty", json_float(sp->frequency_penalty));
    /* llama.cpp's samplers (-1: the context, as a request says it) */
    const struct {
        const char *name;
        double v;
    } more[] = {{"dry_multiplier", sp->dry_multiplier},   {"dry_base", sp->dry_base},
                {"dry_allowed_length", sp->dry_allowed_length}, {"dry_penalty_last_n", sp->dry_penalty_last_n},
                {"top_n_sigma", sp->top_n_sigma},         {"xtc_probability", sp->xtc_probability},
                {"xtc_threshold", sp->xtc_threshold},     {"typical_p", sp->typical_p},
                {"dynatemp_range", sp->dynatemp_range},   {"dynatemp_exponent", sp->dynatemp_exponent},
                {"mirostat", sp->mirostat},               {"mirostat_tau", sp->mirostat_tau},
                {"mirostat_eta", sp->mirostat_eta}};
    for (size_t i = 0; i < sizeof more / sizeof *more; i++)
        cJSON_AddNumberToObject(p, more[i].name, json_float((float)more[i].v));
    cJSON *brk = cJSON_AddArrayToObject(p, "dry_sequence_breakers");
    for (int i = 0; brk && i < s->o.n_dry_breakers; i++)
        cJSON_AddItemToArray(brk, cJSON_CreateString(s->o.dry_breakers[i]));
    cJSON_AddNumberToObject(p, "n_predict", s->o.default_max_tokens ? s->o.default_max_tokens : -1);
    cJSON_AddNumberToObject(root, "total_slots", s->o.parallel);
    cJSON_AddStringToObject(root, "model_alias", s->model_name);
    cJSON_AddStringToObject(root, "model_path", s->model_name);
    /* "": chat requests are refused (the model's template did not compile) */
    cJSON_AddStringToObject(root, "chat_template", s->o.no_chat ? "" : s->tpl->label);
    cJSON *m = cJSON_AddObjectToObject(root, "modalities");
    cJSON_AddBoolToObject(m, "vision", 0);
    cJSON_AddBoolToObject(m, "audio", 0);
    cJSON_AddStringToObject(root, "build_info", "moetier");
    return json_print_and_delete(root);
}

/* The key in "Authorization: Bearer KEY" (OpenAI's clients), else in
 * "x-api-key: KEY" (Anthropic's); NULL when neither is sent. */
static const char *sent_key(struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (h && !strncasecmp(h, "Bearer ", 7))     /* the scheme is case-insensitive */
        return h + 7;
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key");
}

static int key_ok(const server *s, struct MHD_Connection *c)
{
    return !s->o.keys.n || api_keys_match(&s->o.keys, sent_key(c));
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    server *s = cls;
    conn_ctx *cx = *con_cls;
    if (!cx) {
        if (!(cx = calloc(1, sizeof *cx)))
            return MHD_NO;
        *con_cls = cx;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (!cl || strtoull(cl, NULL, 10) <= s->o.max_body)
            return MHD_YES;
        /* answered now, before the body: a client declaring gigabytes is not
         * kept waiting for them (nor invited by "100 Continue") */
        cx->too_large = 1;
    }
    else if (*upload_size) {
        if (!cx->too_large && cx->len + *upload_size > s->o.max_body)
            cx->too_large = 1;
        if (!cx->too_large) {
            if (cx->len + *upload_size + 1 > cx->cap) {
                size_t cap = (cx->len + *upload_size + 1) * 2;
                if (cap > s->o.max_body + 1)
                    cap = s->o.max_body + 1;
                char *nb = realloc(cx->body, cap);
                if (!nb)
                    return MHD_NO;
                cx->body = nb;
                cx->cap = cap;
            }
            memcpy(cx->body + cx->len, upload, *upload_size);
            cx->len += *upload_size;
            cx->body[cx->len] = 0;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    char route[512];
    url = canonical_route(url, route, sizeof route);
    /* Anthropic's routes answer errors in Anthropic's shape */
    int messages = !strcmp(url, "/v1/messages"), count = !strcmp(url, "/v1/messages/count_tokens");
    oai_api api = messages || count ? API_ANTHROPIC : API_OPENAI;
    char why[512];
    int cors = origin_of(s, c, why, sizeof why);
    if (cors < 0)
        return send_error_as(s, c, api, 403, "invalid_request_error", NULL, "forbidden_origin", why);
    if (cors && !strcmp(method, "OPTIONS"))     /* an allowed page's preflight */
        return send_preflight(s, c);
    if (!strcmp(url, "/") || !strcmp(url, "/index.html"))   /* (no data: asks for no key) */
        return send_page(s, c, method);
    if (strcmp(url, "/health") && !key_ok(s, c))
        return send_error_as(s, c, api, 401, "invalid_request_error", NULL, "invalid_api_key",
                             "a valid API key is required: send 'Authorization: Bearer <key>' or "
                             "'x-api-key: <key>'");
    if (cx->too_large) {
        char msg[160];
        snprintf(msg, sizeof msg, "the request body is larger than this server's limit of %zu bytes "
                 "(--max-body)", s->o.max_body);
        return send_error_as(s, c, api, 413, "invalid_request_error", NULL, "request_too_large", msg);
    }
    /* (libmicrohttpd sends a HEAD's answer without its body) */
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    if (!strcmp(url, "/health")) {
        if (!get)
            return wrong_method(s, c, API_OPENAI, "GET, HEAD", "/health");
        pthread_mutex_lock(&s->mu);
        int running = s->metrics.running;
        pthread_mutex_unlock(&s->mu);
        char body[96];
        snprintf(body, sizeof body, "{\"status\":\"ok\",\"slots_idle\":%d,\"slots_processing\":%d}",
                 s->o.parallel - running, running);
        return send_body(s, c, 200, strdup(body), "application/json");
    }
    if (!strcmp(url, "/metrics")) {
        if (!get)
            return wrong_method(s, c, API_OPENAI, "GET, HEAD", "/metrics");
        pthread_mutex_lock(&s->mu);
        serve_metrics snap = s->metrics;
        pthread_mutex_unlock(&s->mu);
        return send_body(s, c, 200, serve_metrics_render(&snap), "text/plain; version=0.0.4");
    }
    if (!strcmp(url, "/props")) {
        if (!get)
            return wrong_method(s, c, API_OPENAI, "GET, HEAD", "/props");
        return send_body(s, c, 200, props_body(s), "application/json");
    }
    if (!strcmp(url, "/slots")) {
        if (!get)
            return wrong_method(s, c, API_OPENAI, "GET, HEAD", "/slots");
        return send_body(s, c, 200, slots_body(s), "application/json");
    }
    /* the models in Anthropic's shape to its SDKs (they send anthropic-version) */
    int anthropic = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "anthropic-version") != NULL;
    if (!strcmp(url, "/v1/models")) {
        if (!get)
            return wrong_method(s, c, API_OPENAI, "GET, HEAD", "/v1/models");
        return send_body(s, c, 200,
                         anthropic ? anthropic_models_body(s->model_name, s->o.aliases, s->o.n_aliases)
                                   : oai_models_body(s->model_name, s->o.aliases, s->o.n_aliases, 0, s->ctx),
                         "application/json");
    }
    if (!strncmp(url, "/v1/models/", 11)) {
        if (!get)
            return wrong_method(s, c, API_OPENAI, "GET, HEAD", "/v1/models/{model}");
        if (!model_served(s, url + 11))
            return send_error_as(s, c, anthropic ? API_ANTHROPIC : API_OPENAI, 404, "invalid_request_error",
                                 "model", "model_not_found", "no such model on this server");
        return send_body(s, c, 200,
                         anthropic ? anthropic_model_body(url + 11) : oai_model_body(url + 11, 0, s->ctx),
                         "application/json");
    }
    int tokenize = !strcmp(url, "/tokenize"), detokenize = !strcmp(url, "/detokenize");
    if (tokenize || detokenize) {
        if (!post)
            return wrong_method(s, c, API_OPENAI, "POST", url);
        oai_error err;
        const char *body = cx->body ? cx->body : "";
        char *out = tokenize ? serve_tokenize(s, body, cx->len, &err) : serve_detokenize(s, body, cx->len, &err);
        return out ? send_body(s, c, 200, out, "application/json")
                   : send_body(s, c, err.status, oai_error_body(&err), "application/json");
    }
    if (!strcmp(url, "/apply-template")) {
        if (!post)
            return wrong_method(s, c, API_OPENAI, "POST", url);
        return handle_apply_template(s, c, cx);
    }
    if (!strcmp(url, "/infill")) {         /* llama.cpp's fill-in-the-middle */
        if (!post)
            return wrong_method(s, c, API_OPENAI, "POST", url);
        return handle_fim(s, c, cx, API_LLAMA);
    }
    if (!strcmp(url, "/completion")) {     /* llama.cpp's own */
        if (!post)
            return wrong_method(s, c, API_OPENAI, "POST", url);
        return handle_completion(s, c, OAI_COMPLETION, API_LLAMA, cx);
    }
    int chat = !strcmp(url, "/v1/chat/completions"), compl = !strcmp(url, "/v1/completions");
    int responses = !strcmp(url, "/v1/responses");
    if (chat || compl || responses) {
        if (!post)
            return wrong_method(s, c, API_OPENAI, "POST", url);
        oai_api api_of = responses ? API_RESPONSES : API_OPENAI;
        if (compl && asks_suffix(cx))
            return handle_fim(s, c, cx, API_OPENAI);
        return handle_completion(s, c, compl ? OAI_COMPLETION : OAI_CHAT, api_of, cx);
    }
    if (!strcmp(url, "/v1/responses/input_tokens")) {
        if (!post)
            return wrong_method(s, c, API_OPENAI, "POST", url);
        return handle_count_tokens(s, c, API_RESPONSES, cx);
    }
    if (!strncmp(url, "/v1/responses/", 14))
        return send_error(s, c, 404, "invalid_request_error", NULL, "not_found",
                          "this server keeps no responses: each is answered once, to its request");
    if (messages || count) {
        if (!post)
            return wrong_method(s, c, api, "POST", url);
        return messages ? handle_completion(s, c, OAI_CHAT, api, cx) : handle_count_tokens(s, c, api, cx);
    }
    char msg[300];
    snprintf(msg, sizeof msg, "unknown route %.8s %.200s", method, url);
    return send_error(s, c, 404, "invalid_request_error", NULL, "unknown_url", msg);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    conn_ctx *cx = *con_cls;
    server *s = cls;
    if (cx && cx->answering) {
        pthread_mutex_lock(&s->mu);
        s->answering--;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    if (cx) {
        free(cx->body);
        free(cx);
        *con_cls = NULL;
    }
}

/* --prompt-cache-dir: what earlier runs of the server kept */
static int load_prompt_cache(server *s, errbuf *e)
{
    const char *dir = s->o.prompt_cache_dir;
    if (cli_model_prompt_identity(s->m, &s->pc_id, e))
        return err_prefix(e, "--prompt-cache-dir: ");
    if ((s->pc_lock = prompt_cache_dir_lock(dir, &s->pc_id, e)) < 0)
        return err_prefix(e, "--prompt-cache-dir: ");
    prompt_disk_counts c;
    if (prompt_cache_load_dir(&s->pc, dir, &s->pc_id, &s->m->en, &c, e))
        return err_prefix(e, "--prompt-cache-dir: ");
    s->pc_synced = s->pc.changes;       /* the directory holds what was read */
    fprintf(stderr, "moetier serve: prompt cache: %d conversation%s (%lld tokens) read from %s",
            c.loaded, c.loaded == 1 ? "" : "s", c.loaded_tokens, dir);
    if (c.left_out)
        fprintf(stderr, "; %d more did not fit in --prompt-cache-gb (left as they are)", c.left_out);
    if (c.unusable)
        fprintf(stderr, "; %d not used, left as they are (%s%s)", c.unusable, c.first_problem,
                c.unusable > 1 ? ", and more" : "");
    if (c.damaged)
        fprintf(stderr, "; %d damaged, to be deleted (%s%s)", c.damaged, c.first_damage,
                c.damaged > 1 ? ", and more" : "");
    fputc('\n', stderr);
    return 0;
}

/* --prompt-cache-dir at a clean stop: the slots' conversations too */
static void store_prompt_cache(server *s)
{
    const char *dir = s->o.prompt_cache_dir;
    for (int i = 0; i < s->o.parallel; i++) {
        slot_swap(s, i);
        prompt_cache_keep(&s->pc, &s->m->en);
        slot_swap(s, i);
    }
    prompt_disk_counts c;
    errbuf e;
    if (prompt_cache_store_dir(&s->pc, dir, &s->pc_id, &s->m->en, &c, &e))
        fprintf(stderr, "moetier serve: warning: the prompt cache was not all written to %s: %s\n",
                dir, e.msg);
    int kept = 0;
    for (int i = 0; i < s->pc.n; i++)
        kept += s->pc.entries[i].on_disk == 1;
    fprintf(stderr, "moetier serve: prompt cache: %d conversation%s in %s (%d written, %d "
            "removed)\n", kept, kept == 1 ? "" : "s", dir, c.written, c.removed);
}

static int setup(server *s, cli_model *m, const tokenizer *tok, const chat_template *tpl,
                 const serve_options *o, errbuf *e)
{
    s->m = m;
    s->ctx = m->en.kv.max_ctx;
    s->pc_lock = -1;
    s->tok = tok;
    s->tpl = tpl;
    s->o = *o;
    snprintf(s->model_name, sizeof s->model_name, "%s", o->model_name ? o->model_name : "model");
    s->n_stop_ids = vocab_reply_stop_ids(&tok->v, m->mw.cfg.eos_token_ids, m->mw.cfg.n_eos,
                                         s->stop_ids);
    s->section_begin = tool_section_begin(&tok->v);
    s->think_begin = vocab_find_special(&tok->v, "<think>");
    s->tool_format = tool_format_detect(tpl, &tok->v, s->tool_why, sizeof s->tool_why);
    if (!s->n_stop_ids)
        return err_set(e, "the tokenizer has no end token (<|im_end|>, [EOS] or eos_token_id)");
    if (json_vocab_build(&s->jv, &tok->v, e) ||
        dry_breakers_build(&s->dry_default, tok, o->dry_breakers, o->n_dry_breakers, e))
        return -1;
    const char *forced = getenv("MOETIER_SERVE_FORCE_TEXT");
    if (!forced && (forced = getenv("MOETIER_SERVE_FORCE_PREFIX")))
        s->forced_is_prefix = 1;
    if (forced) {
        if (tokenizer_encode(tok, forced, strlen(forced), TOK_ALLOW_SPECIAL, &s->forced, e))
            return -1;
        s->has_forced = 1;
    }
    double budget = (o->prompt_cache_gb < 0 ? serve_prompt_cache_default_gb() : o->prompt_cache_gb) * 1e9;
    prompt_cache_init(&s->pc, (size_t)budget);
    if (budget > 0) {
        size_t per = prompt_cache_position_bytes(&m->en);
        fprintf(stderr, "moetier serve: prompt cache: %.2f GB of host memory keeps earlier "
                "conversations' KV caches (%.0f tokens in all; --prompt-cache-gb)\n", budget / 1e9,
                budget / (double)per);
    }
    if ((o->prompt_cache_dir && load_prompt_cache(s, e)) || slots_create(s, e)) {
        prompt_cache_free(&s->pc);
        if (s->pc_lock >= 0)
            close(s->pc_lock);
        return -1;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    return 0;
}

int serve_run(cli_model *m, const tokenizer *tok, const chat_template *tpl, const serve_options *o,
              errbuf *e)
{
    server *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(e, "out of memory");
    if (setup(s, m, tok, tpl, o, e)) {
        token_list_free(&s->forced);
        free(s);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    int gai = getaddrinfo(o->host, port, &hints, &ai);
    if (gai) {
        err_set(e, "--host %s: %s", o->host, gai_strerror(gai));
        goto fail;
    }
    if (stop_signal_install()) {
        freeaddrinfo(ai);
        err_set(e, "cannot set up the stop signals: %s", strerror(errno));
        goto fail;
    }
    signal(SIGPIPE, SIG_IGN);
    pthread_t engine_thread;
    if (pthread_create(&engine_thread, NULL, serve_engine_main, s)) {
        freeaddrinfo(ai);
        stop_signal_uninstall();
        err_set(e, "cannot start the engine thread");
        goto fail;
    }
    s->loopback = request_origin_loopback(ai->ai_addr);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)o->port, NULL, NULL, handle, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_NOTIFY_COMPLETED, completed, s, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(o->max_queue + 64), MHD_OPTION_CONNECTION_TIMEOUT, 300u, MHD_OPTION_END);
    freeaddrinfo(ai);
    int rc = 0;
    if (!d) {
        err_set(e, "cannot listen on %s:%d (%s)", o->host, o->port,
                errno ? strerror(errno) : "address in use or not available");
        rc = -1;
    } else {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
        if (s->tool_format != TOOL_FORMAT_NONE)
            fprintf(stderr, "moetier serve: tool calls held to %s (tool_choice; auto: once begun)\n",
                    tool_format_name(s->tool_format));
        else
            fprintf(stderr, "moetier serve: tool calls not held (tool_choice refused): %s\n", s->tool_why);
        fprintf(stderr, "moetier serve: listening on http://%s:%u (model '%s', %d requests queued "
                "at most, %d at once with %d positions each)\n", o->host,
                di ? di->port : (unsigned)o->port, s->model_name, o->max_queue, o->parallel,
                s->ctx);
        if (!o->no_webui)
            fprintf(stderr, "moetier serve: chat in a browser at http://%s:%u/\n", o->host,
                    di ? di->port : (unsigned)o->port);
        fflush(stderr);
        int sig = stop_signal_wait();
        fprintf(stderr, "moetier serve: %s, stopping (another one ends the process at once)\n",
                sig == SIGINT ? "SIGINT" : "SIGTERM");
    }
    /* the engine ends its job within a chunk or a token and answers the queue with
     * 503s; the daemon stops once those answers are out (or after a grace period:
     * a client that stopped reading, a prefill chunk that takes longer) */
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->cv);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += SHUTDOWN_GRACE_S;
    while (d && s->answering > 0 && pthread_cond_timedwait(&s->cv, &s->mu, &until) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&s->mu);
    if (d)
        MHD_stop_daemon(d);
    pthread_join(engine_thread, NULL);
    if (s->o.prompt_cache_dir && s->pc.budget)
        store_prompt_cache(s);
    stop_signal_uninstall();
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    token_list_free(&s->forced);
    json_vocab_free(&s->jv);
    dry_breakers_free(&s->dry_default);
    prompt_cache_free(&s->pc);
    slots_destroy(s);
    if (s->pc_lock >= 0)
        close(s->pc_lock);
    free(s);
    return rc;
fail:
    if (s->pc_lock >= 0)
        close(s->pc_lock);
    slots_destroy(s);
    prompt_cache_free(&s->pc);
    token_list_free(&s->forced);
    json_vocab_free(&s->jv);
    dry_breakers_free(&s->dry_default);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
    return -1;
}
