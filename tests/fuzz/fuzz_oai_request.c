/* Fuzz target: the server's request handling short of the engine: parsing and
 * validating a body as a chat, a completions, an Anthropic Messages and a
 * Responses API request
 * (a response_format
 * schema compiled, and each tool's parameters as calls are held, a guided
 * pattern or choice; each prompt of a batch as a request of its own, which must
 * be accepted as one prompt), rendering an accepted chat's prompt, the stop-string filter
 * (min_tokens' first bytes early)
 * and the schema's automaton over the body's bytes, logprobs in both response
 * shapes, Anthropic's blocks and the Responses API's items and their events
 * over the body's bytes, the body as llama.cpp's /completion and that answer's
 * shape, and the UTF-8
 * cleaning of everything sent back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/chat_format.h"
#include "core/text/chat_template.h"
#include "core/text/json_prefix.h"
#include "core/text/utf8.h"
#include "server/anthropic_request.h"
#include "server/anthropic_response.h"
#include "server/llama_request.h"
#include "server/llama_response.h"
#include "server/oai_request.h"
#include "server/oai_response.h"
#include "server/responses_request.h"
#include "server/responses_response.h"
#include "server/stop_filter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* the bytes as an answer to a schema, byte after byte */
static void feed_schema(const json_schema *schema, const uint8_t *data, size_t size)
{
    json_prefix j;
    json_prefix_init(&j, schema);
    for (size_t i = 0; i < size && json_prefix_feed(&j, (const char *)data + i, 1) == 0; i++)
        json_prefix_complete(&j);
}

/* each tool's parameters compiled as a call's arguments are held (leniently,
 * as clients send them) and the bytes fed to what compiles */
static void tool_params(const oai_request *r, const uint8_t *data, size_t size)
{
    const cJSON *t;
    cJSON_ArrayForEach(t, r->tools) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
        json_schema s;
        errbuf e;
        if (!params || json_schema_compile_lenient(params, &s, &e))
            continue;
        feed_schema(&s, data, size);
        json_schema_free(&s);
    }
}

static void filter(const oai_request *r, const uint8_t *data, size_t size)
{
    stop_filter f;
    stop_filter_init(&f, r->stop, r->n_stop);
    size_t total = 0;
    for (size_t i = 0; i < size; i += 3) {
        const char *out;
        size_t n;
        /* the first bytes as an answer's first min_tokens tokens */
        int st = (i < (size_t)r->min_tokens ? stop_filter_feed_early : stop_filter_feed)(
            &f, (const char *)data + i, size - i < 3 ? size - i : 3, &out, &n);
        total += n;
        if (st == 1)
            break;
    }
    const char *out;
    size_t n;
    stop_filter_finish(&f, &out, &n);
    if (total + n > size)   /* never more text out than in */
        abort();
    stop_filter_free(&f);
}

/* n bytes of the input from at (fewer at its end) as a token */
static oai_token_logprob piece(const uint8_t *data, size_t size, size_t at, size_t n, float logprob)
{
    size_t from = at < size ? at : size;
    return (oai_token_logprob){.bytes = (const char *)data + from, .len = n < size - from ? n : size - from,
                               .logprob = logprob};
}

/* logprobs whose tokens are overlapping pieces of the input (any bytes, as
 * tokens are; equal texts among a completion's alternatives), in both APIs'
 * shapes, and as prompt_logprobs: the body must be JSON */
static void logprobs_body(const uint8_t *data, size_t size)
{
    oai_logprob_step st[4];
    memset(st, 0, sizeof st);
    size_t len = size / 6 + 1;
    for (int i = 0; i < 4; i++) {
        st[i].chosen = piece(data, size, (size_t)i * len, len, -(float)i);
        st[i].chosen.id = i;
        for (int k = 0; k <= i; k++) {
            st[i].top[st[i].n_top] = piece(data, size, (size_t)(i + k) * len / 2, len, -(float)k);
            st[i].top[st[i].n_top++].id = k;    /* (the chosen token among them, or not) */
        }
    }
    st[0].unscored = 1;
    oai_logprobs lp = {st, 4, 0};
    oai_usage u = {0};
    for (int kind = 0; kind < 2; kind++) {
        oai_meta m = {.kind = (oai_kind)kind, .id = "x", .model = "m"};
        oai_choice ch[2] = {{.text = "", .reasoning = "", .lp = &lp, .finish_reason = "stop"},
                            {.text = (const char *)data, .text_len = size, .reasoning = "",
                             .lp = &lp, .finish_reason = "length"}};
        char *body = oai_full_response(&m, ch, 2, &lp, &u);
        cJSON *root = body ? cJSON_Parse(body) : NULL;
        if (body && !root)
            abort();
        cJSON_Delete(root);
        free(body);
    }
}

/* Each event's data is JSON. */
static void check_events(const char *s)
{
    for (const char *d = s ? strstr(s, "data: ") : NULL; d; d = strstr(d, "data: ")) {
        const char *end = strstr(d, "\n\n");
        cJSON *v = end ? cJSON_ParseWithLength(d + 6, (size_t)(end - d - 6)) : NULL;
        if (!v)
            abort();
        cJSON_Delete(v);
        d = end;
    }
}

/* The body as a Messages request (refused with a reason, or rendered), and
 * its bytes as the reasoning, text and call arguments of an answer: every
 * event and the whole message are JSON. */
/* A request of another API's shape parsed (rc 0) has its prompt rendered;
 * refused, it is a 400 with a reason. */
static void rendered_or_refused(int rc, const oai_request *r, const oai_error *err)
{
    if (rc) {
        if (err->status != 400 || !err->message[0])
            abort();
        return;
    }
    char *text = NULL;
    errbuf e;
    if (chat_format_render(CHAT_TEMPLATE_K25, r->messages, r->tools, &r->copt, &text, NULL, &e) == 0)
        free(text);
}

static void anthropic(const uint8_t *data, size_t size, const oai_request *as_chat)
{
    oai_request r;
    oai_error err;
    /* as a message or a count_tokens body, by the input's length */
    int rc = anthropic_request_parse((const char *)data, size, NULL, (int)(size & 1), &r, &err);
    rendered_or_refused(rc, &r, &err);
    oai_request_free(&r);
    char *args = strndup((const char *)data, size);
    if (!args)
        return;
    tool_call call = {"functions.f:0", "f", args};
    anthropic_stream st = {0};
    size_t half = size / 2;
    char *ev[3] = {anthropic_event_delta(&st, (const char *)data, half, "", 0, NULL, 0),
                   anthropic_event_delta(&st, "", 0, (const char *)data + half, size - half, &call, 1),
                   anthropic_event_end(&st, "stop", as_chat && as_chat->n_stop ? as_chat->stop[0] : NULL,
                                       &(oai_usage){0})};
    for (int i = 0; i < 3; i++) {
        check_events(ev[i]);
        free(ev[i]);
    }
    oai_choice ch = {.text = (const char *)data, .text_len = size, .reasoning = (const char *)data,
                     .reasoning_len = half, .calls = &call, .n_calls = 1};
    oai_meta m = {.id = "msg_1", .model = "m"};
    ch.finish_reason = "tool_calls";
    char *body = anthropic_full_response(&m, &ch, NULL, &(oai_usage){0});
    cJSON *root = body ? cJSON_Parse(body) : NULL;
    if (body && !root)
        abort();
    cJSON_Delete(root);
    free(body);
    free(args);
}

/* The body as a Responses request (refused with a reason, or rendered), and
 * its bytes as an answer's items, streamed and whole: every event and the
 * response are JSON. */
static void responses(const uint8_t *data, size_t size)
{
    oai_request r;
    oai_error err;
    rendered_or_refused(responses_request_parse((const char *)data, size, NULL, &r, &err), &r, &err);
    char *args = strndup((const char *)data, size);
    if (args) {
        tool_call call = {"functions.ns.f:0", "ns.f", args};
        oai_meta m = {.id = "resp_1", .model = "m"};
        size_t half = size / 2;
        {   /* streamed or not by the input's length, to spend the time once */
            responses_out o;
            responses_out_init(&o, &m, r.tool_namespaces, (int)(size & 1));
            o.summary = r.reasoning_summary || (size & 2);   /* the reasoning as a summary */
            char *ev[4] = {responses_event_start(&o),
                           responses_add(&o, (const char *)data, half, (const char *)data + half, size - half,
                                         &call, 1),
                           responses_event_end(&o, size % 2 ? "length" : "stop", &(oai_usage){0}),
                           responses_body(&o, "stop", &(oai_usage){0})};
            for (int i = 0; i < 3; i++) {
                check_events(ev[i]);
                free(ev[i]);
            }
            cJSON *root = ev[3] ? cJSON_Parse(ev[3]) : NULL;
            if (ev[3] && !root)
                abort();
            cJSON_Delete(root);
            free(ev[3]);
            responses_out_free(&o);
        }
        free(args);
    }
    oai_request_free(&r);
}

/* The body as llama.cpp's /completion (accepted, or refused with a 400 and a
 * reason), and its bytes as that answer, streamed and whole: JSON. */
static void llama(const uint8_t *data, size_t size)
{
    oai_request r;
    oai_error err;
    if (llama_request_parse((const char *)data, size, NULL, &r, &err) == 0) {
        if (r.api != API_LLAMA || r.kind != OAI_COMPLETION)
            abort();
    } else if (err.status != 400 || !err.message[0]) {
        abort();
    }
    oai_request_free(&r);   /* (a refused request may hold its body too) */
    int ids[3] = {1, 2, 3};
    llama_result res = {.model = "m", .content = (const char *)data, .content_len = size, .ids = ids,
                        .n_ids = 3, .prompt = (const char *)data, .prompt_len = size / 2,
                        .stop_type = "word", .stopping_word = "x", .prompt_ms = 1};
    char *ev = llama_event((const char *)data, size, ids, 3, NULL, 0, 1, 2), *last = llama_result_body(&res, 1);
    char *body = llama_result_body(&res, 0);
    check_events(ev);
    check_events(last);
    /* a prompt's progress events, in this route's shape and OpenAI's */
    oai_progress pp = {(int)size, (int)(size / 3), (int)(size / 2), (double)size * 1e3};
    oai_meta pm = {.kind = size & 1 ? OAI_CHAT : OAI_COMPLETION, .id = "x", .model = "m"};
    char *progress[2] = {llama_event_progress(&pp), oai_event_progress(&pm, (int)(size & 2), &pp)};
    for (int i = 0; i < 2; i++) {
        check_events(progress[i]);
        free(progress[i]);
    }
    cJSON *root = body ? cJSON_Parse(body) : NULL;
    if (body && !root)
        abort();
    cJSON_Delete(root);
    free(ev);
    free(last);
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    llama(data, size);
    responses(data, size);
    logprobs_body(data, size);
    for (int kind = 0; kind < 2; kind++) {
        oai_request r;
        oai_error err;
        if (oai_request_parse((oai_kind)kind, (const char *)data, size, NULL, &r, &err) == 0) {
            if (kind == OAI_CHAT) {
                char *text = NULL;
                size_t len;
                errbuf e;
                if (chat_format_render(CHAT_TEMPLATE_K25, r.messages, r.tools, &r.copt, &text, &len, &e) == 0)
                    free(text);
                chat_template k25 = {.kind = CHAT_TEMPLATE_K25};
                if (r.continue_final &&
                    chat_template_render_continue(&k25, r.messages, r.tools, &r.copt, &text, &len, &e) == 0) {
                    if (!text || strlen(text) != len)
                        abort();
                    free(text);
                }
                if (r.chat_template) {  /* a request's own template, as a trusted server renders it */
                    jinja_template *t = jinja_compile(r.chat_template, strlen(r.chat_template), &e);
                    chat_template own = {.jinja = t};
                    if (t && chat_template_render(&own, r.messages, r.tools, &r.copt, &text, NULL, &e) == 0)
                        free(text);
                    jinja_free(t);
                }
            }
            filter(&r, data, size);
            for (int i = 0; i < r.batch_n; i++) {
                char *one = oai_batch_body(&r, i);
                oai_request q;
                if (one && (oai_request_parse(OAI_COMPLETION, one, strlen(one), NULL, &q, &err) ||
                            q.batch_n))
                    abort();    /* a batch's prompt alone is a valid request of one prompt */
                if (one)
                    oai_request_free(&q);
                free(one);
            }
            if (r.schema)       /* the body's bytes as an answer to its own schema */
                feed_schema(r.schema, data, size);
            if (r.regex) {      /* or to its own guided pattern */
                regex_answer a;
                regex_answer_init(&a, r.regex);
                for (size_t i = 0; i < size && regex_answer_feed(&a, (const char *)data + i, 1) == 0; i++)
                    regex_answer_complete(&a);
            }
            tool_params(&r, data, size);
        } else if (err.status != 400 || !err.message[0]) {
            abort();    /* every refusal is a 400 with a reason */
        }
        if (kind == OAI_CHAT)
            anthropic(data, size, r.root ? &r : NULL);
        oai_request_free(&r);
    }
    char *clean = utf8_clean((const char *)data, size);
    free(clean);
    return 0;
}
