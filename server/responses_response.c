/* responses_response: see responses_response.h. */
#include "responses_response.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_out.h"

void responses_out_init(responses_out *o, const oai_meta *m, const cJSON *namespaces, int stream)
{
    memset(o, 0, sizeof *o);
    o->meta = *m;
    o->namespaces = namespaces;
    o->stream = stream;
}

void responses_out_free(responses_out *o)
{
    for (int i = 0; i < o->n; i++) {
        free(o->items[i].text);
        free(o->items[i].call_id);
        free(o->items[i].name);
        free(o->items[i].ns);
    }
    free(o->items);
    memset(o, 0, sizeof *o);
}

/* Appends "event: TYPE\ndata: {...}\n\n" (the event's type and sequence
 * number added) to *out; takes ev. -1 when out of memory (*out freed, NULL). */
static int add_event(responses_out *o, char **out, const char *type, cJSON *ev)
{
    cJSON *head = cJSON_CreateObject();
    cJSON_AddStringToObject(head, "type", type);
    cJSON_AddNumberToObject(head, "sequence_number", o->seq++);
    for (cJSON *c = ev ? ev->child : NULL; c;) { /* the type and number first, as OpenAI sends them */
        cJSON *next = c->next;
        cJSON_AddItemToObject(head, c->string, cJSON_DetachItemViaPointer(ev, c));
        c = next;
    }
    cJSON_Delete(ev);
    return json_sse_append(out, type, head);
}

static const char *item_prefix(int kind)
{
    return kind == RESPONSES_REASONING ? "rs" : kind == RESPONSES_MESSAGE ? "msg" : "fc";
}

/* An item's status: the last one of a response cut by max_output_tokens is
 * incomplete. */
static const char *item_status(const responses_out *o, int i, int done)
{
    return !done ? "in_progress" : o->incomplete && i == o->n - 1 ? "incomplete" : "completed";
}

/* An item's text part: the message's output_text, the reasoning's
 * reasoning_text content or (o->summary) summary_text. */
static cJSON *text_part_json(const responses_out *o, const responses_item *it, int done)
{
    cJSON *p = cJSON_CreateObject();
    int reasoning = it->kind == RESPONSES_REASONING;
    cJSON_AddStringToObject(p, "type", !reasoning ? "output_text" : o->summary ? "summary_text" : "reasoning_text");
    cJSON_AddItemToObject(p, "text", done ? json_clean_string(it->text, it->len) : cJSON_CreateString(""));
    if (!reasoning) {
        cJSON_AddArrayToObject(p, "annotations");
        cJSON_AddArrayToObject(p, "logprobs");
    }
    return p;
}

/* Item i as the API shows it: done (its whole content) or just added. */
static cJSON *item_json(const responses_out *o, int i, int done)
{
    const responses_item *it = &o->items[i];
    char id[96];
    snprintf(id, sizeof id, "%s_%s_%d", item_prefix(it->kind), o->meta.id, i);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", id);
    if (it->kind == RESPONSES_REASONING) {
        cJSON_AddStringToObject(j, "type", "reasoning");
        cJSON *summary = cJSON_AddArrayToObject(j, "summary"), *content = cJSON_AddArrayToObject(j, "content");
        if (done)
            cJSON_AddItemToArray(o->summary ? summary : content, text_part_json(o, it, 1));
    } else if (it->kind == RESPONSES_MESSAGE) {
        cJSON_AddStringToObject(j, "type", "message");
        cJSON_AddStringToObject(j, "status", item_status(o, i, done));
        cJSON_AddStringToObject(j, "role", "assistant");
        cJSON *content = cJSON_AddArrayToObject(j, "content");
        if (done) {
            cJSON *p = cJSON_CreateObject();
            cJSON_AddStringToObject(p, "type", "output_text");
            cJSON_AddItemToObject(p, "text", json_clean_string(it->text, it->len));
            cJSON_AddArrayToObject(p, "annotations");
            cJSON_AddArrayToObject(p, "logprobs");
            cJSON_AddItemToArray(content, p);
        }
    } else {
        cJSON_AddStringToObject(j, "type", "function_call");
        cJSON_AddStringToObject(j, "status", item_status(o, i, done));
        cJSON_AddItemToObject(j, "call_id", json_clean_string(it->call_id, strlen(it->call_id)));
        cJSON_AddItemToObject(j, "name", json_clean_string(it->name, strlen(it->name)));
        if (it->ns)
            cJSON_AddItemToObject(j, "namespace", json_clean_string(it->ns, strlen(it->ns)));
        cJSON_AddItemToObject(j, "arguments",
                              done ? json_clean_string(it->text, it->len) : cJSON_CreateString(""));
    }
    return j;
}

/* The fields every delta and done event of item i carries. */
static cJSON *item_event(const responses_out *o, int i)
{
    char id[96];
    snprintf(id, sizeof id, "%s_%s_%d", item_prefix(o->items[i].kind), o->meta.id, i);
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "item_id", id);
    cJSON_AddNumberToObject(e, "output_index", i);
    return e;
}

/* A text item's part events: the fields of item_event and the part's index,
 * and each event's type (of the message's text, the reasoning's content, or
 * the reasoning's summary) */
typedef struct text_events {
    const char *index, *part_added, *delta, *done, *part_done;
} text_events;

static text_events text_events_of(const responses_out *o, int kind)
{
    if (kind == RESPONSES_MESSAGE)
        return (text_events){"content_index", "response.content_part.added", "response.output_text.delta",
                             "response.output_text.done", "response.content_part.done"};
    if (!o->summary)
        return (text_events){"content_index", "response.content_part.added", "response.reasoning_text.delta",
                             "response.reasoning_text.done", "response.content_part.done"};
    return (text_events){"summary_index", "response.reasoning_summary_part.added",
                         "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
                         "response.reasoning_summary_part.done"};
}

static cJSON *text_event(const responses_out *o, int i, const text_events *te)
{
    cJSON *e = item_event(o, i);
    cJSON_AddNumberToObject(e, te->index, 0);
    return e;
}

/* The last item's done events (streamed), and it closed. */
static int close_item(responses_out *o, char **out)
{
    if (!o->open)
        return 0;
    o->open = 0;
    int i = o->n - 1;
    const responses_item *it = &o->items[i];
    cJSON *e;
    if (it->kind == RESPONSES_CALL) {
        e = item_event(o, i);
        cJSON_AddItemToObject(e, "name", json_clean_string(it->name, strlen(it->name)));
        if (it->ns)
            cJSON_AddItemToObject(e, "namespace", json_clean_string(it->ns, strlen(it->ns)));
        cJSON_AddItemToObject(e, "arguments", json_clean_string(it->text, it->len));
        if (add_event(o, out, "response.function_call_arguments.done", e))
            return -1;
    } else {
        text_events te = text_events_of(o, it->kind);
        e = text_event(o, i, &te);
        cJSON_AddItemToObject(e, "text", json_clean_string(it->text, it->len));
        if (it->kind == RESPONSES_MESSAGE)
            cJSON_AddArrayToObject(e, "logprobs");
        if (add_event(o, out, te.done, e))
            return -1;
        e = text_event(o, i, &te);
        cJSON_AddItemToObject(e, "part", text_part_json(o, it, 1));
        if (add_event(o, out, te.part_done, e))
            return -1;
    }
    e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "output_index", i);
    cJSON_AddItemToObject(e, "item", item_json(o, i, 1));
    return add_event(o, out, "response.output_item.done", e);
}

/* A new item (the open one closed first), taking its fields; streamed, its
 * added events. -1 when out of memory (the fields then freed, or the item
 * kept). */
static int open_item(responses_out *o, char **out, responses_item it)
{
    responses_item *grown =
        o->stream && close_item(o, out) ? NULL : realloc(o->items, (size_t)(o->n + 1) * sizeof *grown);
    if (!grown) {
        free(it.text);
        free(it.call_id);
        free(it.name);
        free(it.ns);
        return -1;
    }
    o->items = grown;
    o->items[o->n++] = it;
    if (!o->stream)
        return 0;
    o->open = 1;
    int i = o->n - 1, kind = it.kind;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "output_index", i);
    cJSON_AddItemToObject(e, "item", item_json(o, i, 0));
    if (add_event(o, out, "response.output_item.added", e) || kind == RESPONSES_CALL)
        return *out ? 0 : -1;
    text_events te = text_events_of(o, kind);
    e = text_event(o, i, &te);
    cJSON_AddItemToObject(e, "part", text_part_json(o, &o->items[i], 0));
    return add_event(o, out, te.part_added, e);
}

static int append_text(responses_item *it, const char *p, size_t n)
{
    char *grown = realloc(it->text, it->len + n + 1);
    if (!grown)
        return -1;
    memcpy(grown + it->len, p, n);
    it->len += n;
    grown[it->len] = 0;
    it->text = grown;
    return 0;
}

/* Reasoning or text into the item of its kind (the last one, or a new one). */
static int text_piece(responses_out *o, char **out, int kind, const char *p, size_t n)
{
    if ((!o->n || o->items[o->n - 1].kind != kind || (o->stream && !o->open)) &&
        open_item(o, out, (responses_item){.kind = kind}))
        return -1;
    int i = o->n - 1;
    if (append_text(&o->items[i], p, n))
        return -1;
    if (!o->stream)
        return 0;
    text_events te = text_events_of(o, kind);
    cJSON *e = text_event(o, i, &te);
    cJSON_AddItemToObject(e, "delta", json_clean_string(p, n));
    if (kind == RESPONSES_MESSAGE)
        cJSON_AddArrayToObject(e, "logprobs");
    return add_event(o, out, te.delta, e);
}

/* The namespace a declared function's qualified name starts with, or NULL. */
static const char *namespace_of(const responses_out *o, const char *name)
{
    const cJSON *ns;
    cJSON_ArrayForEach(ns, o->namespaces) {
        size_t n = strlen(ns->valuestring);
        if (!strncmp(name, ns->valuestring, n) && name[n] == '.')
            return ns->valuestring;
    }
    return NULL;
}

static int call_piece(responses_out *o, char **out, const tool_call *c)
{
    const char *name = c->name ? c->name : "", *ns = namespace_of(o, name);
    const char *args = c->arguments ? c->arguments : "";
    responses_item it = {.kind = RESPONSES_CALL,
                         .call_id = strdup(c->id ? c->id : ""),
                         .name = strdup(ns ? name + strlen(ns) + 1 : name),
                         .ns = ns ? strdup(ns) : NULL};
    if (!it.call_id || !it.name || (ns && !it.ns) || append_text(&it, args, strlen(args))) {
        free(it.call_id);
        free(it.name);
        free(it.ns);
        free(it.text);
        return -1;
    }
    if (open_item(o, out, it))
        return -1;
    if (!o->stream)
        return 0;
    cJSON *e = item_event(o, o->n - 1);
    cJSON_AddItemToObject(e, "delta", json_clean_string(args, strlen(args)));
    return add_event(o, out, "response.function_call_arguments.delta", e);
}

char *responses_add(responses_out *o, const char *reasoning, size_t reasoning_len, const char *text,
                    size_t text_len, const tool_call *calls, int n_calls)
{
    char *out = strdup("");
    if (out && reasoning_len && text_piece(o, &out, RESPONSES_REASONING, reasoning, reasoning_len))
        return free(out), NULL;
    if (out && text_len && text_piece(o, &out, RESPONSES_MESSAGE, text, text_len))
        return free(out), NULL;
    for (int i = 0; out && i < n_calls; i++)
        if (call_piece(o, &out, &calls[i]))
            return free(out), NULL;
    return out;
}

static cJSON *usage_json(const oai_usage *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "input_tokens", u->prompt_tokens);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(o, "input_tokens_details"), "cached_tokens",
                            u->cached_tokens);
    cJSON_AddNumberToObject(o, "output_tokens", u->completion_tokens);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(o, "output_tokens_details"), "reasoning_tokens",
                            u->reasoning_tokens);
    cJSON_AddNumberToObject(o, "total_tokens", u->prompt_tokens + u->completion_tokens);
    return o;
}

/* The response object; finish NULL: still in progress (no items, no usage). */
static cJSON *response_json(const responses_out *o, const char *finish, const oai_usage *u)
{
    int incomplete = finish && !strcmp(finish, "length");
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", o->meta.id);
    cJSON_AddStringToObject(r, "object", "response");
    cJSON_AddNumberToObject(r, "created_at", (double)o->meta.created);
    cJSON_AddStringToObject(r, "status", !finish ? "in_progress" : incomplete ? "incomplete" : "completed");
    cJSON_AddStringToObject(r, "model", o->meta.model);
    for (const cJSON *f = o->settings ? o->settings->child : NULL; f; f = f->next)
        cJSON_AddItemToObject(r, f->string, cJSON_Duplicate(f, 1));
    cJSON *output = cJSON_AddArrayToObject(r, "output");
    for (int i = 0; finish && i < o->n; i++)
        cJSON_AddItemToArray(output, item_json(o, i, 1));
    cJSON_AddNullToObject(r, "error");
    if (incomplete)
        cJSON_AddStringToObject(cJSON_AddObjectToObject(r, "incomplete_details"), "reason",
                                "max_output_tokens");
    else
        cJSON_AddNullToObject(r, "incomplete_details");
    if (u)
        cJSON_AddItemToObject(r, "usage", usage_json(u));
    else
        cJSON_AddNullToObject(r, "usage");
    return r;
}

char *responses_event_start(responses_out *o)
{
    char *out = NULL;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddItemToObject(e, "response", response_json(o, NULL, NULL));
    if (add_event(o, &out, "response.created", e))
        return NULL;
    e = cJSON_CreateObject();
    cJSON_AddItemToObject(e, "response", response_json(o, NULL, NULL));
    return add_event(o, &out, "response.in_progress", e) ? NULL : out;
}

char *responses_event_end(responses_out *o, const char *finish, const oai_usage *u)
{
    o->incomplete = finish && !strcmp(finish, "length");
    char *out = strdup("");
    if (!out || close_item(o, &out))
        return NULL;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddItemToObject(e, "response", response_json(o, finish, u));
    int incomplete = finish && !strcmp(finish, "length");
    return add_event(o, &out, incomplete ? "response.incomplete" : "response.completed", e) ? NULL : out;
}

char *responses_body(responses_out *o, const char *finish, const oai_usage *u)
{
    o->incomplete = finish && !strcmp(finish, "length");
    cJSON *r = response_json(o, finish, u);
    char *s = r ? cJSON_PrintUnformatted(r) : NULL;
    cJSON_Delete(r);
    return s;
}

char *responses_event_error(responses_out *o, const oai_error *err)
{
    char *out = NULL;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "code", err->code[0] ? err->code : err->type);
    cJSON_AddItemToObject(e, "message", json_clean_string(err->message, strlen(err->message)));
    if (err->param[0])
        cJSON_AddStringToObject(e, "param", err->param);
    else
        cJSON_AddNullToObject(e, "param");
    return add_event(o, &out, "error", e) ? NULL : out;
}
