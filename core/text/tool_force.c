/* tool_force: see tool_force.h. */
#include "tool_force.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* P_FREE: a lazy constraint before the section. DeepSeek-V3's layout adds
 * P_NAME (the name, a line break and the fence "```json\n", after the type
 * "function" and its separator, which take P_ID), P_TAIL (a line break and the
 * fence after the arguments) and P_NEXT (the next call's marker after the
 * line break between calls). */
enum { P_FREE, P_SECTION, P_CALL, P_ID, P_NAME, P_ARGS, P_TAIL, P_AFTER_CALL, P_NEXT, P_END };

/* DeepSeek-V3's pieces of text around a call's name and arguments */
#define V3_TYPE "function"
#define V3_OPEN "\n```json\n"
#define V3_CLOSE "\n```"

/* the markers of each format: section begin, call begin, argument begin,
 * call end, section end */
static const char *const kimi_markers[5] = {"<|tool_calls_section_begin|>", "<|tool_call_begin|>",
                                            "<|tool_call_argument_begin|>", "<|tool_call_end|>",
                                            "<|tool_calls_section_end|>"};
static const char *const deepseek_markers[5] = {"<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>",
                                                "<｜tool▁sep｜>", "<｜tool▁call▁end｜>",
                                                "<｜tool▁calls▁end｜>"};

int tool_section_begin(const vocab *v)
{
    int id = vocab_find_special(v, kimi_markers[0]);
    return id >= 0 ? id : vocab_find_special(v, deepseek_markers[0]);
}

static int has_markers(const vocab *v, const char *const *names)
{
    for (int i = 0; i < 5; i++)
        if (vocab_find_special(v, names[i]) < 0)
            return 0;
    return 1;
}

tool_format tool_format_detect(const chat_template *t, const vocab *v, char *why, size_t cap)
{
    snprintf(why, cap, "the tokenizer has neither Kimi's nor DeepSeek's tool-call tokens");
    if (has_markers(v, kimi_markers))
        return TOOL_FORMAT_KIMI;
    if (!has_markers(v, deepseek_markers))
        return TOOL_FORMAT_NONE;
    /* which of DeepSeek's layouts: V3 writes TYPE<sep>NAME and fenced JSON,
     * V3.1 NAME<sep>ARGS; the model's own template says */
    /* (content null: V3's template writes calls only then) */
    const char *probe = "[{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", "
                        "\"content\": null, \"tool_calls\": [{\"id\": \"call_0\", \"type\": "
                        "\"function\", \"function\": {\"name\": \"probe_fn\", \"arguments\": "
                        "\"{}\"}}]}]";
    cJSON *messages = cJSON_Parse(probe);
    chat_options o;
    chat_options_default(&o);
    o.add_generation_prompt = 0;
    char *text = NULL;
    size_t len;
    errbuf e;
    int rendered = messages && t && chat_template_render(t, messages, NULL, &o, &text, &len, &e) == 0;
    cJSON_Delete(messages);
    tool_format f = TOOL_FORMAT_NONE;
    if (rendered && strstr(text, "<｜tool▁call▁begin｜>probe_fn<｜tool▁sep｜>{}"))
        f = TOOL_FORMAT_DEEPSEEK;
    else if (rendered && strstr(text, "<｜tool▁call▁begin｜>" V3_TYPE "<｜tool▁sep｜>probe_fn" V3_OPEN
                                      "{}" V3_CLOSE "<｜tool▁call▁end｜>"))
        f = TOOL_FORMAT_DEEPSEEK_V3;
    else
        snprintf(why, cap, "the chat template writes neither DeepSeek-V3's nor V3.1's calls");
    free(text);
    return f;
}

const char *tool_format_name(tool_format f)
{
    switch (f) {
    case TOOL_FORMAT_KIMI: return "Kimi's format";
    case TOOL_FORMAT_DEEPSEEK: return "DeepSeek-V3.1's layout";
    case TOOL_FORMAT_DEEPSEEK_V3: return "DeepSeek-V3's layout";
    default: return "none";
    }
}

static int marker(const vocab *v, const char *name, int *id, errbuf *e)
{
    *id = vocab_find_special(v, name);
    return *id < 0 ? err_set(e, "the tokenizer has no %s token: tool calls cannot be held", name) : 0;
}

/* A function's parameters: its schema, compiled leniently; a lazy constraint
 * takes any object where the schema cannot be compiled (clients send many
 * tools, and refusing one would refuse the request) */
static int compile_params(const cJSON *params, int lazy, json_schema *out, errbuf *e)
{
    if (params && !json_schema_compile_lenient(params, out, e))
        return 0;
    return params && !lazy ? -1 : json_schema_any_object(out, e);
}

static int init(tool_force *f, const vocab *v, tool_format fmt, const cJSON *tools, const char *name,
                int lazy, errbuf *e)
{
    memset(f, 0, sizeof *f);
    f->v = v;
    f->format = fmt;
    f->once = name != NULL;
    f->lazy = lazy;
    if (fmt == TOOL_FORMAT_NONE)
        return err_set(e, "this model's tool calls are in no format the server holds them to");
    const char *const *mk = fmt == TOOL_FORMAT_KIMI ? kimi_markers : deepseek_markers;
    if (marker(v, mk[0], &f->section_begin, e) || marker(v, mk[1], &f->call_begin, e) ||
        marker(v, mk[2], &f->argument_begin, e) || marker(v, mk[3], &f->call_end, e) ||
        marker(v, mk[4], &f->section_end, e))
        return -1;
    int n = cJSON_GetArraySize(tools);
    if (n > TOOL_FORCE_MAX_FUNCTIONS)
        return err_set(e, "tool_choice: more than %d tools", TOOL_FORCE_MAX_FUNCTIONS);
    if (!(f->fn = calloc((size_t)n + 1, sizeof *f->fn)))
        return err_set(e, "out of memory");
    const cJSON *t;
    cJSON_ArrayForEach(t, tools) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
        if (!cJSON_IsString(nm) || (name && strcmp(name, nm->valuestring)))
            continue;
        if (strlen(nm->valuestring) > 200 || strpbrk(nm->valuestring, ": \t\r\n<")) {
            tool_force_free(f);
            return err_set(e, "tool_choice: the function name '%.60s' cannot be held to (at most "
                           "200 bytes, no ':', '<' or whitespace)", nm->valuestring);
        }
        tool_force_fn *x = &f->fn[f->n_fn];
        int rc = compile_params(params, lazy, &x->params, e);
        if (rc || !(x->name = strdup(nm->valuestring))) {
            if (!rc)
                json_schema_free(&x->params);
            tool_force_free(f);
            return rc ? err_prefix(e, "tools: function '%.60s': parameters: ", nm->valuestring)
                      : err_set(e, "out of memory");
        }
        f->n_fn++;
    }
    if (!f->n_fn) {
        tool_force_free(f);
        return err_set(e, "tool_choice names the function '%.60s', which is not among the tools",
                       name ? name : "");
    }
    tool_force_restart(f);
    return 0;
}

int tool_force_init(tool_force *f, const vocab *v, tool_format fmt, const cJSON *tools, const char *name,
                    errbuf *e)
{
    return init(f, v, fmt, tools, name, 0, e);
}

int tool_force_init_lazy(tool_force *f, const vocab *v, tool_format fmt, const cJSON *tools, errbuf *e)
{
    return init(f, v, fmt, tools, NULL, 1, e);
}

void tool_force_free(tool_force *f)
{
    for (int i = 0; f->fn && i < f->n_fn; i++) {
        free(f->fn[i].name);
        json_schema_free(&f->fn[i].params);
    }
    free(f->fn);
    f->fn = NULL;
    f->n_fn = 0;
}

void tool_force_restart(tool_force *f)
{
    f->phase = f->lazy ? P_FREE : P_SECTION;
    f->calls = 0;
    f->id_len = 0;
}

/* function i's text in phase P_ID (Kimi's "functions.NAME:K", V3.1's NAME,
 * V3's type) or P_NAME (V3's NAME and the opening fence) */
static int id_of(const tool_force *f, int i, char *out, size_t cap)
{
    if (f->phase == P_NAME)
        return snprintf(out, cap, "%s" V3_OPEN, f->fn[i].name);
    if (f->format == TOOL_FORMAT_DEEPSEEK_V3)
        return snprintf(out, cap, V3_TYPE);
    if (f->format == TOOL_FORMAT_DEEPSEEK)
        return snprintf(out, cap, "%s", f->fn[i].name);
    return snprintf(out, cap, "functions.%s:%d", f->fn[i].name, f->first_call + f->calls);
}

/* -inf but for the listed ids; how many of them are in range */
static int only(float *logits, int V, const int *ids, int n)
{
    float keep[4];
    int count = 0;
    for (int k = 0; k < n; k++)
        keep[k] = ids[k] >= 0 && ids[k] < V ? logits[ids[k]] : 0;
    for (int i = 0; i < V; i++)
        logits[i] = -INFINITY;
    for (int k = 0; k < n; k++)
        if (ids[k] >= 0 && ids[k] < V) {
            logits[ids[k]] = keep[k];
            count++;
        }
    return count;
}

/* the rest of a function's id after the bytes written so far */
typedef struct id_rest {
    const char *p;
    size_t n;
} id_rest;

static int rest_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : (an > bn) - (an < bn);
}

static int rest_order(const void *x, const void *y)
{
    const id_rest *a = x, *b = y;
    return rest_cmp(a->p, a->n, b->p, b->n);
}

/* whether bytes b[0, bn) begin one of the rests (sorted): the rests that
 * begin with b are together from the first rest not below b */
static int begins_a_rest(const id_rest *r, int n, const char *b, size_t bn)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (rest_cmp(r[mid].p, r[mid].n, b, bn) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && r[lo].n >= bn && !memcmp(r[lo].p, b, bn);
}

/* The tokens that may come while the answer writes one of the texts lits[0,
 * n), of which the f->id_len bytes in f->id are written: a regular token whose
 * bytes go on one of them, `marker` once one is whole, `alt` before any is
 * begun (-1: none). logits: set to -inf where a token may not come, or NULL
 * to list the tokens that may in out[0, cap) instead (a phase's alternative
 * to another mask). Returns how many may. jv: the token table, whose first
 * bytes settle most tokens at once. */
static int literal_mask(const tool_force *f, const json_vocab *jv, char (*lits)[TOOL_FORCE_ID_MAX], int n_lits,
                        int marker, int alt, float *logits, int V, int *out, int cap)
{
    id_rest rest[TOOL_FORCE_MAX_FUNCTIONS];
    int n = 0, whole = 0, possible = 0;
    for (int i = 0; i < n_lits; i++) {
        size_t l = strlen(lits[i]);
        if (l < (size_t)f->id_len || memcmp(lits[i], f->id, (size_t)f->id_len))
            continue;
        whole |= l == (size_t)f->id_len;
        rest[n++] = (id_rest){lits[i] + f->id_len, l - (size_t)f->id_len};
    }
    qsort(rest, (size_t)n, sizeof *rest, rest_order);
    uint8_t first_ok[256] = {0};
    for (int k = 0; k < n; k++)
        if (rest[k].n)
            first_ok[(uint8_t)rest[k].p[0]] = 1;
    for (int id = 0; id < V; id++) {
        size_t bn;
        const char *b = (jv && id < jv->n && !first_ok[jv->first[id]]) || vocab_is_special(f->v, id)
                            ? NULL : vocab_decode(f->v, id, &bn);
        int ok = b && bn && begins_a_rest(rest, n, b, bn);
        if (id == marker)
            ok = whole;
        if (id == alt)
            ok = f->id_len == 0;
        if (ok && !logits) {
            if (possible < cap)
                out[possible] = id;
        }
        if (ok)
            possible++;
        else if (logits)
            logits[id] = -INFINITY;
    }
    return possible;
}

/* the texts of the phase: one a function (P_ID, P_NAME) or a fixed one */
static int phase_texts(const tool_force *f, char (*lits)[TOOL_FORCE_ID_MAX])
{
    if (f->phase == P_TAIL || f->phase == P_AFTER_CALL) {
        snprintf(lits[0], TOOL_FORCE_ID_MAX, "%s", f->phase == P_TAIL ? V3_CLOSE : "\n");
        return 1;
    }
    for (int i = 0; i < f->n_fn; i++)
        id_of(f, i, lits[i], TOOL_FORCE_ID_MAX);
    return f->n_fn;
}

/* literal_mask over the phase's texts, restricting logits */
static int literal_phase(const tool_force *f, const json_vocab *jv, int marker, int alt, float *logits, int V)
{
    char lits[TOOL_FORCE_MAX_FUNCTIONS][TOOL_FORCE_ID_MAX];
    return literal_mask(f, jv, lits, phase_texts(f, lits), marker, alt, logits, V, NULL, 0);
}

/* V3's arguments: the JSON value, and once it is whole the line break that
 * begins the closing fence */
static int v3_args_mask(const tool_force *f, const json_vocab *jv, float *logits, int V)
{
    int tail[16], n_tail = 0;
    float kept[16];
    char lits[1][TOOL_FORCE_ID_MAX];
    if (json_prefix_complete(&f->args)) {
        tool_force at = *f;
        at.phase = P_TAIL;
        at.id_len = 0;
        n_tail = literal_mask(&at, jv, lits, phase_texts(&at, lits), -1, -1, NULL, V, tail, 16);
        n_tail = n_tail < 16 ? n_tail : 16;
        for (int k = 0; k < n_tail; k++)
            kept[k] = logits[tail[k]];
    }
    int n = json_mask_logits(&f->args, f->v, jv, NULL, 0, logits, V);
    for (int k = 0; k < n_tail; k++)
        if (logits[tail[k]] == -INFINITY) {
            logits[tail[k]] = kept[k];
            n++;
        }
    return n;
}

int tool_force_mask(const tool_force *f, const json_vocab *jv, const int *end_ids, int n_end,
                    float *logits, int V)
{
    int after[2] = {f->section_end, f->call_begin};
    int v3 = f->format == TOOL_FORMAT_DEEPSEEK_V3;
    switch (f->phase) {
    case P_FREE: return V;
    case P_SECTION: return only(logits, V, &f->section_begin, 1);
    case P_CALL: return only(logits, V, &f->call_begin, 1);
    case P_NEXT: return only(logits, V, &f->call_begin, 1);
    case P_ID:
    case P_NAME:
    case P_TAIL:
        return literal_phase(f, jv, f->phase == P_ID ? f->argument_begin : f->phase == P_TAIL ? f->call_end : -1,
                             -1, logits, V);
    case P_ARGS:
        return v3 ? v3_args_mask(f, jv, logits, V)
                  : json_mask_logits(&f->args, f->v, jv, &f->call_end, 1, logits, V);
    case P_AFTER_CALL:
        /* V3 writes a line break before another call */
        if (v3 && !f->once)
            return literal_phase(f, jv, -1, f->section_end, logits, V);
        return only(logits, V, after, f->once ? 1 : 2);
    default: {
        int keep = 0;
        for (int i = 0; i < V; i++) {
            int end = 0;
            for (int k = 0; k < n_end; k++)
                end |= end_ids[k] == i;
            if (end)
                keep++;
            else
                logits[i] = -INFINITY;
        }
        return keep;
    }
    }
}

/* the text written so far in a literal phase goes on by b[0, n) */
static void add_text(tool_force *f, const char *b, size_t n)
{
    if (b && f->id_len + n < sizeof f->id) {
        memcpy(f->id + f->id_len, b, n);
        f->id_len += (int)n;
    }
}

/* the function whose text of this phase is the text written, or -1 */
static int whole_text(const tool_force *f)
{
    char lit[TOOL_FORCE_ID_MAX];
    for (int i = 0; i < f->n_fn; i++)
        if (id_of(f, i, lit, sizeof lit) == f->id_len && !memcmp(lit, f->id, (size_t)f->id_len))
            return i;
    return -1;
}

void tool_force_accept(tool_force *f, int id)
{
    size_t n = 0;
    const char *b = vocab_is_special(f->v, id) ? NULL : vocab_decode(f->v, id, &n);
    switch (f->phase) {
    case P_FREE:
        if (id == f->section_begin)
            f->phase = P_CALL;
        break;
    case P_SECTION:
        f->phase = P_CALL;
        break;
    case P_CALL:
        f->phase = P_ID;
        f->id_len = 0;
        break;
    case P_ID:
        if (id == f->argument_begin) {
            /* (a token the mask refused, forced, leaves the function before) */
            int w = whole_text(f);
            f->chosen = w >= 0 ? w : f->chosen;
            f->id_len = 0;
            if (f->format == TOOL_FORMAT_DEEPSEEK_V3) {
                f->phase = P_NAME;  /* the name comes after the type */
                break;
            }
            json_prefix_init(&f->args, &f->fn[f->chosen].params);
            f->phase = P_ARGS;
        } else {
            add_text(f, b, n);
        }
        break;
    case P_NAME: {
        add_text(f, b, n);
        int w = whole_text(f);
        if (w >= 0) {
            f->chosen = w;
            json_prefix_init(&f->args, &f->fn[f->chosen].params);
            f->phase = P_ARGS;
            f->id_len = 0;
        }
        break;
    }
    case P_ARGS:
        if (id == f->call_end) {
            f->calls++;
            f->phase = P_AFTER_CALL;
            f->id_len = 0;
        } else if (f->format == TOOL_FORMAT_DEEPSEEK_V3 && b && n && b[0] == '\n' &&
                   json_prefix_complete(&f->args)) {
            f->phase = P_TAIL;   /* (a whole value takes nothing more) */
            add_text(f, b, n);
        } else if (b) {
            json_prefix_feed(&f->args, b, n);
        }
        break;
    case P_TAIL:
        if (id == f->call_end) {
            f->calls++;
            f->phase = P_AFTER_CALL;
            f->id_len = 0;
        } else {
            add_text(f, b, n);
        }
        break;
    case P_AFTER_CALL:
        if (f->format == TOOL_FORMAT_DEEPSEEK_V3 && id != f->section_end) {
            f->phase = P_NEXT;  /* the line break between calls */
            break;
        }
        f->phase = id == f->call_begin ? P_ID : P_END;
        f->id_len = 0;
        break;
    case P_NEXT:
        f->phase = P_ID;
        f->id_len = 0;
        break;
    default:
        break;
    }
}
