/* anthropic_response: see anthropic_response.h. */
#include "anthropic_response.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/chat_format.h"
#include "core/text/utf8.h"
#include "json_out.h"

static cJSON *typed(const char *type)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    return o;
}

const char *anthropic_stop_reason(const char *finish, const char *stop_sequence, int tool_uses)
{
    if (finish && !strcmp(finish, "length"))
        return "max_tokens";
    if (stop_sequence)
        return "stop_sequence";
    return tool_uses ? "tool_use" : "end_turn";
}

/* The call's arguments as valid JSON text of an object, malloc'd; NULL when
 * they are not one. */
static char *object_arguments(const tool_call *c)
{
    const char *a = c->arguments ? c->arguments : "";
    char *clean = utf8_clean(a, strlen(a));
    cJSON *v = clean ? chat_json_parse(clean, strlen(clean), NULL) : NULL;
    int ok = cJSON_IsObject(v);
    cJSON_Delete(v);
    if (!ok) {
        free(clean);
        return NULL;
    }
    return clean;
}

/* A call whose arguments are not an object, as the text that shows it. */
static char *call_as_text(const tool_call *c)
{
    static const char fmt[] = "[tool call %s with arguments that are not a JSON object: %s]";
    const char *name = c->name ? c->name : "", *a = c->arguments ? c->arguments : "";
    size_t n = sizeof fmt + strlen(name) + strlen(a);
    char *s = malloc(n);
    if (s)
        snprintf(s, n, fmt, name, a);
    return s;
}

static const char *error_type(int status)
{
    switch (status) {
    case 400:
    case 405: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: return "overloaded_error";
    default: return "api_error";
    }
}

static cJSON *error_json(const oai_error *e)
{
    cJSON *root = typed("error"), *err = typed(error_type(e->status));
    cJSON_AddItemToObject(err, "message", json_clean_string(e->message, strlen(e->message)));
    cJSON_AddItemToObject(root, "error", err);
    return root;
}

char *anthropic_error_body(const oai_error *e)
{
    return json_print_and_delete(error_json(e));
}

char *anthropic_event_error(const oai_error *e)
{
    char *out = NULL;
    json_sse_append(&out, "error", error_json(e));
    return out;
}

static cJSON *usage_json(const oai_usage *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "input_tokens", u->prompt_tokens - u->cached_tokens);
    cJSON_AddNumberToObject(o, "cache_creation_input_tokens", 0);
    cJSON_AddNumberToObject(o, "cache_read_input_tokens", u->cached_tokens);
    cJSON_AddNumberToObject(o, "output_tokens", u->completion_tokens);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(o, "output_tokens_details"), "thinking_tokens",
                            u->reasoning_tokens);
    return o;
}

static cJSON *message_json(const oai_meta *m)
{
    cJSON *msg = typed("message");
    cJSON_AddStringToObject(msg, "id", m->id);
    cJSON_AddStringToObject(msg, "role", "assistant");
    cJSON_AddStringToObject(msg, "model", m->model);
    cJSON_AddArrayToObject(msg, "content");
    return msg;
}

static void add_stop(cJSON *o, const char *stop_reason, const char *stop_sequence)
{
    if (stop_reason)
        cJSON_AddStringToObject(o, "stop_reason", stop_reason);
    else
        cJSON_AddNullToObject(o, "stop_reason");
    if (stop_sequence)
        cJSON_AddItemToObject(o, "stop_sequence", json_clean_string(stop_sequence, strlen(stop_sequence)));
    else
        cJSON_AddNullToObject(o, "stop_sequence");
}

char *anthropic_event_start(const oai_meta *m, const oai_usage *u)
{
    cJSON *root = typed("message_start"), *msg = message_json(m);
    add_stop(msg, NULL, NULL);
    cJSON_AddItemToObject(msg, "usage", usage_json(u));
    cJSON_AddItemToObject(root, "message", msg);
    char *out = NULL;
    json_sse_append(&out, "message_start", root);
    return out;
}

static int close_block(char **out, anthropic_stream *st)
{
    if (!st->open)
        return 0;
    cJSON *e = typed("content_block_stop");
    cJSON_AddNumberToObject(e, "index", st->blocks - 1);
    st->open = 0;
    return json_sse_append(out, "content_block_stop", e);
}

/* Opens a block described by `block` (taken) after closing the open one. */
static int open_block(char **out, anthropic_stream *st, int kind, cJSON *block)
{
    if (close_block(out, st)) {
        cJSON_Delete(block);
        return -1;
    }
    cJSON *e = typed("content_block_start");
    cJSON_AddNumberToObject(e, "index", st->blocks++);
    cJSON_AddItemToObject(e, "content_block", block);
    st->open = kind;
    return json_sse_append(out, "content_block_start", e);
}

/* A delta of the open block: {"type": type, field: text}. */
static int block_delta(char **out, const anthropic_stream *st, const char *type, const char *field,
                       cJSON *text)
{
    cJSON *e = typed("content_block_delta"), *d = typed(type);
    cJSON_AddNumberToObject(e, "index", st->blocks - 1);
    cJSON_AddItemToObject(d, field, text);
    cJSON_AddItemToObject(e, "delta", d);
    return json_sse_append(out, "content_block_delta", e);
}

static int text_piece(char **out, anthropic_stream *st, const char *p, size_t n)
{
    if (st->open != ANTHROPIC_BLOCK_TEXT) {
        cJSON *b = typed("text");
        cJSON_AddStringToObject(b, "text", "");
        if (open_block(out, st, ANTHROPIC_BLOCK_TEXT, b))
            return -1;
    }
    return block_delta(out, st, "text_delta", "text", json_clean_string(p, n));
}

static int thinking_piece(char **out, anthropic_stream *st, const char *p, size_t n)
{
    if (st->open != ANTHROPIC_BLOCK_THINKING) {
        cJSON *b = typed("thinking");
        cJSON_AddStringToObject(b, "thinking", "");
        cJSON_AddStringToObject(b, "signature", "");
        if (open_block(out, st, ANTHROPIC_BLOCK_THINKING, b))
            return -1;
    }
    return block_delta(out, st, "thinking_delta", "thinking", json_clean_string(p, n));
}

static int call_piece(char **out, anthropic_stream *st, const tool_call *c)
{
    char *args = object_arguments(c);
    if (!args) {
        char *t = call_as_text(c);
        int rc = t ? text_piece(out, st, t, strlen(t)) : -1;
        free(t);
        return rc;
    }
    cJSON *b = typed("tool_use");
    cJSON_AddItemToObject(b, "id", json_clean_string(c->id, strlen(c->id ? c->id : "")));
    cJSON_AddItemToObject(b, "name", json_clean_string(c->name, strlen(c->name ? c->name : "")));
    cJSON_AddObjectToObject(b, "input");
    int rc = open_block(out, st, -1, b) ||
             block_delta(out, st, "input_json_delta", "partial_json", cJSON_CreateString(args)) ||
             close_block(out, st);
    free(args);
    st->tool_uses++;
    return rc;
}

char *anthropic_event_delta(anthropic_stream *st, const char *reasoning, size_t reasoning_len,
                            const char *text, size_t text_len, const tool_call *calls, int n_calls)
{
    char *out = strdup("");
    if (out && reasoning_len && thinking_piece(&out, st, reasoning, reasoning_len))
        return NULL;
    if (out && text_len && text_piece(&out, st, text, text_len))
        return NULL;
    for (int i = 0; out && i < n_calls; i++)
        if (call_piece(&out, st, &calls[i]))
            return NULL;
    return out;
}

char *anthropic_event_end(anthropic_stream *st, const char *finish, const char *stop_sequence,
                          const oai_usage *u)
{
    const char *stop_reason = anthropic_stop_reason(finish, stop_sequence, st->tool_uses);
    char *out = strdup("");
    if (!out || close_block(&out, st))
        return NULL;
    cJSON *e = typed("message_delta"), *d = cJSON_CreateObject();
    add_stop(d, stop_reason, stop_sequence);
    cJSON_AddItemToObject(e, "delta", d);
    cJSON_AddItemToObject(e, "usage", usage_json(u));
    if (json_sse_append(&out, "message_delta", e) || json_sse_append(&out, "message_stop", typed("message_stop")))
        return NULL;
    return out;
}

char *anthropic_full_response(const oai_meta *m, const oai_choice *c, const char *stop_sequence,
                              const oai_usage *u)
{
    cJSON *root = message_json(m), *content = cJSON_GetObjectItem(root, "content");
    if (c->reasoning_len) {
        cJSON *b = typed("thinking");
        cJSON_AddItemToObject(b, "thinking", json_clean_string(c->reasoning, c->reasoning_len));
        cJSON_AddStringToObject(b, "signature", "");
        cJSON_AddItemToArray(content, b);
    }
    /* the calls, each parsed once: tool_use blocks (after the text), or text
     * after the model's own when they cannot be one */
    cJSON *uses = cJSON_CreateArray();
    /* (by its length: a byte token may put a 0 in the model's text) */
    size_t text_len = c->text ? c->text_len : 0;
    char *text = malloc(text_len + 1);
    if (text) {
        memcpy(text, c->text ? c->text : "", text_len);
        text[text_len] = 0;
    }
    for (int i = 0; text && uses && i < c->n_calls; i++) {
        char *args = object_arguments(&c->calls[i]);
        if (args) {
            cJSON *b = typed("tool_use");
            cJSON_AddItemToObject(b, "id", json_clean_string(c->calls[i].id, strlen(c->calls[i].id)));
            cJSON_AddItemToObject(b, "name", json_clean_string(c->calls[i].name, strlen(c->calls[i].name)));
            cJSON_AddItemToObject(b, "input", cJSON_CreateRaw(args)); /* the model's text, checked */
            cJSON_AddItemToArray(uses, b);
            free(args);
            continue;
        }
        char *t = call_as_text(&c->calls[i]);
        size_t t_len = t ? strlen(t) : 0;
        char *joined = t ? malloc(text_len + t_len + 1) : NULL;
        if (joined) {
            memcpy(joined, text, text_len);
            memcpy(joined + text_len, t, t_len + 1);
            text_len += t_len;
        }
        free(t);
        free(text);
        text = joined;
    }
    if (!text || !uses) {
        free(text);
        cJSON_Delete(uses);
        cJSON_Delete(root);
        return NULL;
    }
    if (text_len) {
        cJSON *b = typed("text");
        cJSON_AddItemToObject(b, "text", json_clean_string(text, text_len));
        cJSON_AddItemToArray(content, b);
    }
    free(text);
    int tool_uses = cJSON_GetArraySize(uses);
    while (uses->child)
        cJSON_AddItemToArray(content, cJSON_DetachItemViaPointer(uses, uses->child));
    cJSON_Delete(uses);
    add_stop(root, anthropic_stop_reason(c->finish_reason, stop_sequence, tool_uses), stop_sequence);
    cJSON_AddItemToObject(root, "usage", usage_json(u));
    return json_print_and_delete(root);
}

/* (created_at: the epoch, as the OpenAI shape's created is 0: a local model
 * has no release date) */
static cJSON *anthropic_model(const char *model)
{
    cJSON *mo = cJSON_CreateObject();
    cJSON_AddStringToObject(mo, "type", "model");
    cJSON_AddStringToObject(mo, "id", model);
    cJSON_AddStringToObject(mo, "display_name", model);
    cJSON_AddStringToObject(mo, "created_at", "1970-01-01T00:00:00Z");
    return mo;
}

char *anthropic_models_body(const char *model, const char *const *aliases, int n_aliases)
{
    cJSON *root = cJSON_CreateObject(), *data = cJSON_AddArrayToObject(root, "data");
    const char *last = model;
    cJSON_AddItemToArray(data, anthropic_model(model));
    for (int i = 0; i < n_aliases; i++)
        if (strcmp(aliases[i], "*"))
            cJSON_AddItemToArray(data, anthropic_model(last = aliases[i]));
    cJSON_AddFalseToObject(root, "has_more");
    cJSON_AddStringToObject(root, "first_id", model);
    cJSON_AddStringToObject(root, "last_id", last);
    return json_print_and_delete(root);
}

char *anthropic_model_body(const char *model)
{
    return json_print_and_delete(anthropic_model(model));
}
