/* tool_calls: reasoning / content / tool-call splitting of generated text
 * (see tool_calls.h for the grammar and the handling of malformed text).
 *
 * One state machine serves both APIs: the one-shot parse feeds the whole text
 * to a stream and finishes it, so the two cannot disagree. The stream keeps the
 * unprocessed tail in `pend` and scans it from '<' to '<': a full marker
 * switches state, a tail that is a proper prefix of a marker valid in the
 * current state waits for the next chunk, and everything else is emitted to
 * the current state's sink at once. */
#define _POSIX_C_SOURCE 200809L
#include "tool_calls.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

enum { ST_CONTENT, ST_REASONING, ST_SECTION, ST_CALL_ID, ST_CALL_ARGS };

enum {
    MK_THINK,
    MK_THINK_END,
    MK_SECTION_BEGIN,
    MK_SECTION_BEGIN_ALT,
    MK_SECTION_END,
    MK_SECTION_END_ALT,
    MK_CALL_BEGIN,
    MK_ARG_BEGIN,
    MK_CALL_END,
    MK_DS_SECTION_BEGIN,        /* DeepSeek's */
    MK_DS_SECTION_END,
    MK_DS_CALL_BEGIN,
    MK_DS_SEP,
    MK_DS_CALL_END,
    MK_COUNT
};

static const char *const marker_text[MK_COUNT] = {
    [MK_THINK] = "<think>",
    [MK_THINK_END] = "</think>",
    [MK_SECTION_BEGIN] = "<|tool_calls_section_begin|>",
    [MK_SECTION_BEGIN_ALT] = "<|tool_call_section_begin|>",
    [MK_SECTION_END] = "<|tool_calls_section_end|>",
    [MK_SECTION_END_ALT] = "<|tool_call_section_end|>",
    [MK_CALL_BEGIN] = "<|tool_call_begin|>",
    [MK_ARG_BEGIN] = "<|tool_call_argument_begin|>",
    [MK_CALL_END] = "<|tool_call_end|>",
    [MK_DS_SECTION_BEGIN] = "<｜tool▁calls▁begin｜>",
    [MK_DS_SECTION_END] = "<｜tool▁calls▁end｜>",
    [MK_DS_CALL_BEGIN] = "<｜tool▁call▁begin｜>",
    [MK_DS_SEP] = "<｜tool▁sep｜>",
    [MK_DS_CALL_END] = "<｜tool▁call▁end｜>",
};

#define BIT(m) (1u << (m))
#define SECTION_BEGIN_BITS (BIT(MK_SECTION_BEGIN) | BIT(MK_SECTION_BEGIN_ALT) | BIT(MK_DS_SECTION_BEGIN))
#define SECTION_END_BITS (BIT(MK_SECTION_END) | BIT(MK_SECTION_END_ALT) | BIT(MK_DS_SECTION_END))
#define CALL_BEGIN_BITS (BIT(MK_CALL_BEGIN) | BIT(MK_DS_CALL_BEGIN))
#define ARG_BEGIN_BITS (BIT(MK_ARG_BEGIN) | BIT(MK_DS_SEP))
#define CALL_END_BITS (BIT(MK_CALL_END) | BIT(MK_DS_CALL_END))

/* The markers that mean something in the stream's current state. */
static unsigned active_markers(const tool_stream *s)
{
    switch (s->state) {
    case ST_CONTENT:
        return SECTION_BEGIN_BITS | (s->mode == TOOL_REASONING_NONE ? 0 : BIT(MK_THINK));
    case ST_REASONING:
        return SECTION_BEGIN_BITS | BIT(MK_THINK_END);
    case ST_SECTION:
        return SECTION_END_BITS | CALL_BEGIN_BITS;
    default:
        return SECTION_END_BITS | CALL_BEGIN_BITS | ARG_BEGIN_BITS | CALL_END_BITS;
    }
}

/* ---- buffers ---------------------------------------------------------------- */

static int tt_put(tool_text *t, const char *s, size_t n, errbuf *e)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 64;
        while (cap < t->len + n + 1) {
            if (cap > SIZE_MAX / 2)
                return err_set(e, "out of memory while parsing tool calls");
            cap *= 2;
        }
        char *np = realloc(t->p, cap);
        if (!np)
            return err_set(e, "out of memory while parsing tool calls");
        t->p = np;
        t->cap = cap;
    }
    if (n)
        memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = 0;
    return 0;
}

static char *dup_bytes(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        if (n)
            memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

static void call_free(tool_call *c)
{
    free(c->id);
    free(c->name);
    free(c->arguments);
}

static void drop_delta_calls(tool_stream *s)
{
    for (int i = 0; i < s->n_calls; i++)
        call_free(&s->calls[i]);
    s->n_calls = 0;
}

/* ---- state machine ----------------------------------------------------------- */

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Text belonging to the current state. */
static int emit(tool_stream *s, const char *p, size_t n, errbuf *e)
{
    if (n == 0)
        return 0;
    switch (s->state) {
    case ST_CONTENT: return tt_put(&s->out_content, p, n, e);
    case ST_REASONING: return tt_put(&s->out_reasoning, p, n, e);
    case ST_CALL_ID: return tt_put(&s->id, p, n, e);
    case ST_CALL_ARGS: return tt_put(&s->args, p, n, e);
    default:
        for (size_t i = 0; i < n; i++)
            if (!is_space((unsigned char)p[i])) {
                s->flags |= TOOL_PARSE_MALFORMED;
                break;
            }
        return 0;
    }
}

/* p[0, *n) without the whitespace around it. */
static const char *trim(const char *p, size_t *n)
{
    while (*n && is_space((unsigned char)*p)) {
        p++;
        --*n;
    }
    while (*n && is_space((unsigned char)p[*n - 1]))
        --*n;
    return p;
}

/* A DeepSeek call's name and arguments. V3 writes TYPE<sep>NAME, a line
 * break and the arguments fenced as JSON (```json ... ```); V3.1 writes
 * NAME<sep>ARGUMENTS. */
static void deepseek_call(const char *id, size_t id_len, const char *args, size_t args_len, const char **name,
                          size_t *name_len, const char **arg, size_t *arg_len)
{
    const char *nl = memchr(args, '\n', args_len);
    size_t first = nl ? (size_t)(nl - args) : 0, rest_len = nl ? args_len - first - 1 : 0;
    const char *rest = nl ? nl + 1 : NULL;
    if (nl && rest_len >= 3 && !memcmp(rest, "```", 3)) {
        const char *body_nl = memchr(rest, '\n', rest_len);
        size_t body_len = body_nl ? rest_len - (size_t)(body_nl + 1 - rest) : 0;
        const char *body = body_nl ? trim(body_nl + 1, &body_len) : "";
        if (body_len >= 3 && !memcmp(body + body_len - 3, "```", 3)) {
            body_len -= 3;
            *name_len = first;
            *name = trim(args, name_len);
            *arg_len = body_len;
            *arg = trim(body, arg_len);
            return;
        }
    }
    *name = id;
    *name_len = id_len;
    *arg = args;
    *arg_len = args_len;
}

/* A call's end marker closed it: trim the id, derive the name, queue it. */
static int complete_call(tool_stream *s, errbuf *e)
{
    size_t n = s->id.len, args_len = s->args.len;
    const char *id = trim(s->id.p ? s->id.p : "", &n), *args = s->args.p ? s->args.p : "";
    if (n == 0) {
        s->flags |= TOOL_PARSE_MALFORMED;
        return 0;
    }
    const char *name = id;
    size_t name_len = n;
    char made_id[32];
    static const char prefix[] = "functions.";
    size_t pl = sizeof prefix - 1;
    if (s->deepseek) {
        deepseek_call(id, n, args, s->args.len, &name, &name_len, &args, &args_len);
        if (!name_len) {
            s->flags |= TOOL_PARSE_MALFORMED;
            return 0;
        }
        /* (its ids are not the model's: numbered across the conversation) */
        n = (size_t)snprintf(made_id, sizeof made_id, "call_%d", s->next_index++);
        id = made_id;
    } else {
        args = trim(args, &args_len);   /* (as vLLM's Kimi parser takes them) */
    }
    if (!s->deepseek && n > pl && memcmp(id, prefix, pl) == 0) {
        const char *colon = NULL;
        for (size_t i = pl; i < n; i++)
            if (id[i] == ':')
                colon = id + i;
        if (colon && colon > id + pl) {
            name = id + pl;
            name_len = (size_t)(colon - name);
        }
    }
    if (s->n_calls == s->cap_calls) {
        int cap = s->cap_calls ? s->cap_calls * 2 : 4;
        tool_call *nc = realloc(s->calls, (size_t)cap * sizeof *nc);
        if (!nc)
            return err_set(e, "out of memory while parsing tool calls");
        s->calls = nc;
        s->cap_calls = cap;
    }
    tool_call c = {
        .id = dup_bytes(id, n),
        .name = dup_bytes(name, name_len),
        .arguments = dup_bytes(args, args_len),
    };
    if (!c.id || !c.name || !c.arguments) {
        call_free(&c);
        return err_set(e, "out of memory while parsing tool calls");
    }
    s->calls[s->n_calls++] = c;
    return 0;
}

static void start_call(tool_stream *s, int mk)
{
    s->id.len = 0;
    s->args.len = 0;
    s->deepseek = mk == MK_DS_CALL_BEGIN;
    s->state = ST_CALL_ID;
}

static int on_marker(tool_stream *s, int mk, errbuf *e)
{
    int section_end = (SECTION_END_BITS & BIT(mk)) != 0, call_begin = (CALL_BEGIN_BITS & BIT(mk)) != 0;
    switch (s->state) {
    case ST_CONTENT:
    case ST_REASONING:
        s->state = mk == MK_THINK ? ST_REASONING : mk == MK_THINK_END ? ST_CONTENT : ST_SECTION;
        return 0;
    case ST_SECTION:
        if (call_begin)
            start_call(s, mk);
        else if (section_end)
            s->state = ST_CONTENT;
        return 0;
    default:                    /* inside a call */
        if (s->state == ST_CALL_ID && (ARG_BEGIN_BITS & BIT(mk))) {
            s->state = ST_CALL_ARGS;
            return 0;
        }
        if (s->state == ST_CALL_ARGS && (CALL_END_BITS & BIT(mk))) {
            s->state = ST_SECTION;
            return complete_call(s, e);
        }
        /* a marker that cuts the call short: drop the call, then act on it as
         * the section would */
        s->flags |= TOOL_PARSE_MALFORMED;
        if (call_begin)
            start_call(s, mk);
        else
            s->state = section_end ? ST_CONTENT : ST_SECTION;
        return 0;
    }
}

/* Consumes as much of pend as can be decided; final: nothing more will come. */
static int process(tool_stream *s, int final, errbuf *e)
{
    const char *p = s->pend.p ? s->pend.p : "";  /* nothing pending yet: no buffer */
    size_t n = s->pend.len, pos = 0, j = 0;
    while (1) {
        const char *lt = j < n ? memchr(p + j, '<', n - j) : NULL;
        if (!lt) {
            size_t end = n;
            if (!final && (s->state == ST_CONTENT || s->state == ST_REASONING))
                end -= utf8_unfinished_tail(p + pos, n - pos);
            if (emit(s, p + pos, end - pos, e))
                return -1;
            pos = end;
            break;
        }
        j = (size_t)(lt - p);
        unsigned mask = active_markers(s);
        int hit = -1, partial = 0;
        for (int m = 0; m < MK_COUNT && hit < 0; m++) {
            if (!(mask & BIT(m)))
                continue;
            size_t ml = strlen(marker_text[m]);
            if (n - j >= ml) {
                if (memcmp(p + j, marker_text[m], ml) == 0)
                    hit = m;
            } else if (!final && memcmp(p + j, marker_text[m], n - j) == 0) {
                partial = 1;
            }
        }
        if (hit >= 0) {
            if (emit(s, p + pos, j - pos, e) || on_marker(s, hit, e))
                return -1;
            j += strlen(marker_text[hit]);
            pos = j;
            continue;
        }
        if (partial) {
            if (emit(s, p + pos, j - pos, e))
                return -1;
            pos = j;
            break;
        }
        j++;
    }
    if (pos) {
        memmove(s->pend.p, s->pend.p + pos, n - pos);
        s->pend.len = n - pos;
        s->pend.p[s->pend.len] = 0;
    }
    return 0;
}

/* ---- stream API -------------------------------------------------------------- */

void tool_stream_init(tool_stream *s, tool_reasoning_mode mode)
{
    memset(s, 0, sizeof *s);
    s->mode = mode;
    s->state = mode == TOOL_REASONING_OPEN ? ST_REASONING : ST_CONTENT;
}

void tool_stream_free(tool_stream *s)
{
    drop_delta_calls(s);
    free(s->calls);
    free(s->pend.p);
    free(s->id.p);
    free(s->args.p);
    free(s->out_content.p);
    free(s->out_reasoning.p);
    memset(s, 0, sizeof *s);
}

int tool_stream_marker(const char *name, size_t n)
{
    static const char *const markers[] = {"<think>", "</think>"};
    if (n > 11 && !memcmp(name, "<|tool_call", 11))
        return 1;
    for (size_t i = 0; i < sizeof markers / sizeof *markers; i++)
        if (n == strlen(markers[i]) && !memcmp(name, markers[i], n))
            return 1;
    for (int m = MK_DS_SECTION_BEGIN; m <= MK_DS_CALL_END; m++)
        if (n == strlen(marker_text[m]) && !memcmp(name, marker_text[m], n))
            return 1;
    return 0;
}

int tool_stream_takes(const tool_stream *s, const char *name, size_t n)
{
    unsigned active = active_markers(s);
    for (int m = 0; m < MK_COUNT; m++)
        if ((active & BIT(m)) && n == strlen(marker_text[m]) && !memcmp(name, marker_text[m], n))
            return 1;
    return 0;
}

int tool_stream_in_section(const tool_stream *s)
{
    return s->state == ST_SECTION || s->state == ST_CALL_ID || s->state == ST_CALL_ARGS;
}

static void begin_delta(tool_stream *s)
{
    s->out_content.len = 0;
    s->out_reasoning.len = 0;
    if (s->out_content.p)
        s->out_content.p[0] = 0;
    if (s->out_reasoning.p)
        s->out_reasoning.p[0] = 0;
    drop_delta_calls(s);
}

static void fill_delta(const tool_stream *s, tool_stream_delta *d)
{
    d->content = s->out_content.p ? s->out_content.p : "";
    d->content_len = s->out_content.len;
    d->reasoning = s->out_reasoning.p ? s->out_reasoning.p : "";
    d->reasoning_len = s->out_reasoning.len;
    d->calls = s->calls;
    d->n_calls = s->n_calls;
    d->flags = s->flags;
}

int tool_stream_feed(tool_stream *s, const char *chunk, size_t n, tool_stream_delta *d, errbuf *e)
{
    begin_delta(s);
    if (n && tt_put(&s->pend, chunk, n, e))
        return -1;
    if (process(s, 0, e))
        return -1;
    fill_delta(s, d);
    return 0;
}

int tool_stream_finish(tool_stream *s, tool_stream_delta *d, errbuf *e)
{
    begin_delta(s);
    if (process(s, 1, e))
        return -1;
    if (tool_stream_in_section(s))
        s->flags |= TOOL_PARSE_UNTERMINATED;
    else if (s->state == ST_REASONING)
        s->flags |= TOOL_PARSE_REASONING_OPEN;
    fill_delta(s, d);
    return 0;
}

/* ---- one-shot parse ---------------------------------------------------------- */

void tool_parse_result_free(tool_parse_result *r)
{
    for (int i = 0; i < r->n_calls; i++)
        call_free(&r->calls[i]);
    free(r->calls);
    free(r->content);
    free(r->reasoning);
    memset(r, 0, sizeof *r);
}

/* Moves a delta's text and calls into the result. */
static int collect(tool_stream *s, const tool_stream_delta *d, tool_parse_result *r, tool_text *content,
                   tool_text *reasoning, errbuf *e)
{
    if (tt_put(content, d->content, d->content_len, e) ||
        tt_put(reasoning, d->reasoning, d->reasoning_len, e))
        return -1;
    if (s->n_calls) {
        tool_call *nc = realloc(r->calls, (size_t)(r->n_calls + s->n_calls) * sizeof *nc);
        if (!nc)
            return err_set(e, "out of memory while parsing tool calls");
        r->calls = nc;
        memcpy(r->calls + r->n_calls, s->calls, (size_t)s->n_calls * sizeof *nc);
        r->n_calls += s->n_calls;
        s->n_calls = 0;         /* now owned by r */
    }
    r->flags = d->flags;
    return 0;
}

int tool_calls_parse(const char *text, size_t len, tool_reasoning_mode mode, tool_parse_result *out,
                     errbuf *e)
{
    memset(out, 0, sizeof *out);
    tool_stream s;
    tool_stream_init(&s, mode);
    tool_text content = {0}, reasoning = {0};
    tool_stream_delta d;
    int rc = tool_stream_feed(&s, text, len, &d, e);
    if (rc == 0)
        rc = collect(&s, &d, out, &content, &reasoning, e);
    if (rc == 0)
        rc = tool_stream_finish(&s, &d, e);
    if (rc == 0)
        rc = collect(&s, &d, out, &content, &reasoning, e);
    tool_stream_free(&s);
    if (rc) {
        free(content.p);
        free(reasoning.p);
        tool_parse_result_free(out);
        return -1;
    }
    out->content = content.p ? content.p : dup_bytes("", 0);
    out->content_len = content.len;
    out->reasoning = reasoning.p ? reasoning.p : dup_bytes("", 0);
    out->reasoning_len = reasoning.len;
    if (!out->content || !out->reasoning) {
        tool_parse_result_free(out);
        return err_set(e, "out of memory while parsing tool calls");
    }
    return 0;
}
