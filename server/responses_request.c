/* responses_request: see responses_request.h. */
#include "responses_request.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_body.h"

/* What the items so far leave for the next ones: the assistant message the
 * calls that follow it join, and reasoning waiting for the assistant turn it
 * belongs to. */
typedef struct items_state {
    cJSON *messages;
    cJSON *assistant; /* the last message, when it is the assistant's */
    char *reasoning;  /* malloc'd, NULL: none */
} items_state;

static int is_text_part(const char *t)
{
    return !strcmp(t, "input_text") || !strcmp(t, "output_text") || !strcmp(t, "text");
}

/* A message's content (a string or text parts) into parts; a tool's output
 * may hold images and files, which stand as text saying so. */
static int content_parts(const cJSON *content, const char *where, int tool_output, cJSON *parts,
                         oai_error *err)
{
    if (cJSON_IsString(content)) {
        cJSON *p = chat_body_text_part(content->valuestring);
        return p && cJSON_AddItemToArray(parts, p) ? 0 : chat_body_oom(err);
    }
    if (!cJSON_IsArray(content))
        return oai_bad(err, "input", "%s must be a string or an array of content parts", where);
    int k = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, content) {
        const char *t = chat_body_type(c);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(c, "text");
        if (!t)
            return oai_bad(err, "input", "%s[%d] must be a part with a \"type\"", where, k);
        if (!strcmp(t, "refusal")) { /* an earlier refusal, as the chat format drops it */
            k++;
            continue;
        }
        if (tool_output && (!strcmp(t, "input_image") || !strcmp(t, "input_file"))) {
            cJSON *p = chat_body_media_part(t);
            if (!p || !cJSON_AddItemToArray(parts, p))
                return chat_body_oom(err);
            k++;
            continue;
        }
        if (!is_text_part(t))
            return oai_bad(err, "input",
                           "%s[%d] is a part of type '%.40s': the model reads text only (input_text "
                           "and output_text parts)",
                           where, k, t);
        if (!cJSON_IsString(text))
            return oai_bad(err, "input", "%s[%d].text must be a string", where, k);
        cJSON *p = chat_body_text_part(text->valuestring);
        if (!p || !cJSON_AddItemToArray(parts, p))
            return chat_body_oom(err);
        k++;
    }
    return 0;
}

/* A new message of role; an assistant's takes the reasoning waiting. */
static cJSON *begin_message(items_state *st, const char *role)
{
    cJSON *m = chat_body_message(st->messages, role);
    int assistant = m && !strcmp(role, "assistant");
    if (assistant && st->reasoning) {
        if (!cJSON_AddStringToObject(m, "reasoning_content", st->reasoning))
            return NULL;
        free(st->reasoning);
        st->reasoning = NULL;
    }
    st->assistant = assistant ? m : NULL;
    return m;
}

static int message_item(items_state *st, const cJSON *it, const char *where, oai_error *err)
{
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role");
    const char *rs = cJSON_IsString(role) ? role->valuestring : "";
    const char *as = !strcmp(rs, "developer") ? "system" : rs;
    if (strcmp(as, "user") && strcmp(as, "assistant") && strcmp(as, "system"))
        return oai_bad(err, "input", "%s.role must be \"user\", \"assistant\", \"system\" or \"developer\"",
                       where);
    char cw[80];
    snprintf(cw, sizeof cw, "%s.content", where);
    cJSON *m = begin_message(st, as);
    return m ? content_parts(cJSON_GetObjectItemCaseSensitive(it, "content"), cw, 0,
                             cJSON_GetObjectItem(m, "content"), err)
             : chat_body_oom(err);
}

/* The name the model knows a call's function by: NAMESPACE.NAME in a namespace. */
static char *qualified_name(const cJSON *it)
{
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
    const cJSON *ns = chat_body_field(it, "namespace");
    size_t n = strlen(name->valuestring) + (cJSON_IsString(ns) ? strlen(ns->valuestring) + 1 : 0) + 1;
    char *q = malloc(n);
    if (q)
        snprintf(q, n, "%s%s%s", cJSON_IsString(ns) ? ns->valuestring : "", cJSON_IsString(ns) ? "." : "",
                 name->valuestring);
    return q;
}

static int call_item(items_state *st, const cJSON *it, const char *where, oai_error *err)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "call_id");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(it, "arguments");
    const cJSON *ns = chat_body_field(it, "namespace");
    if (!cJSON_IsString(id) || !cJSON_IsString(name) || !cJSON_IsString(args) || (ns && !cJSON_IsString(ns)))
        return oai_bad(err, "input",
                       "%s (function_call) needs strings \"call_id\", \"name\" and \"arguments\"", where);
    cJSON *m = st->assistant && !st->reasoning ? st->assistant : begin_message(st, "assistant");
    char *q = m ? qualified_name(it) : NULL;
    int rc = q && !chat_body_tool_call(m, id->valuestring, q, args) ? 0 : chat_body_oom(err);
    free(q);
    return rc;
}

static int output_item(items_state *st, const cJSON *it, const char *where, oai_error *err)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "call_id");
    const cJSON *out = cJSON_GetObjectItemCaseSensitive(it, "output");
    if (!cJSON_IsString(id))
        return oai_bad(err, "input", "%s.call_id must be a string", where);
    cJSON *m = begin_message(st, "tool");
    if (!m || !cJSON_AddStringToObject(m, "tool_call_id", id->valuestring))
        return chat_body_oom(err);
    char cw[80];
    snprintf(cw, sizeof cw, "%s.output", where);
    return out ? content_parts(out, cw, 1, cJSON_GetObjectItem(m, "content"), err) : 0;
}

/* A reasoning item's text (its content, else its summary), kept for the
 * next assistant turn. */
static int reasoning_item(items_state *st, const cJSON *it, const char *where, oai_error *err)
{
    const cJSON *parts = chat_body_field(it, "content");
    if (!parts || !cJSON_GetArraySize(parts))
        parts = chat_body_field(it, "summary");
    if (parts && !cJSON_IsArray(parts))
        return oai_bad(err, "input", "%s (reasoning): content and summary must be arrays", where);
    const cJSON *p;
    cJSON_ArrayForEach(p, parts) {
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsString(text))
            return oai_bad(err, "input", "%s (reasoning): each part needs a string \"text\"", where);
        size_t have = st->reasoning ? strlen(st->reasoning) : 0, n = strlen(text->valuestring);
        char *grown = realloc(st->reasoning, have + n + 1);
        if (!grown)
            return chat_body_oom(err);
        memcpy(grown + have, text->valuestring, n + 1);
        st->reasoning = grown;
    }
    return 0;
}

static int translate_input(const cJSON *root, cJSON *messages, oai_error *err)
{
    const cJSON *ins = chat_body_field(root, "instructions");
    if (ins && !cJSON_IsString(ins))
        return oai_bad(err, "instructions", "'instructions' must be a string");
    items_state st = {.messages = messages};
    if (ins) {
        cJSON *m = begin_message(&st, "system");
        if (!m)
            return chat_body_oom(err);
        if (content_parts(ins, "instructions", 0, cJSON_GetObjectItem(m, "content"), err))
            return -1;
    }
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(root, "input");
    if (cJSON_IsString(input)) {
        cJSON *m = begin_message(&st, "user");
        return m ? content_parts(input, "input", 0, cJSON_GetObjectItem(m, "content"), err)
                 : chat_body_oom(err);
    }
    if (!cJSON_IsArray(input) || !input->child)
        return oai_bad(err, "input", "'input' must be a string or a non-empty array of items");
    int i = 0, rc = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, input) {
        char where[48];
        snprintf(where, sizeof where, "input[%d]", i++);
        const char *t = chat_body_type(it);
        if (!cJSON_IsObject(it))
            rc = oai_bad(err, "input", "%s must be an object", where);
        else if (!t || !strcmp(t, "message"))
            rc = message_item(&st, it, where, err);
        else if (!strcmp(t, "function_call"))
            rc = call_item(&st, it, where, err);
        else if (!strcmp(t, "function_call_output"))
            rc = output_item(&st, it, where, err);
        else if (!strcmp(t, "reasoning"))
            rc = reasoning_item(&st, it, where, err);
        else if (!strcmp(t, "item_reference"))
            rc = oai_bad(err, "input",
                         "%s is an item reference: this server keeps no responses to "
                         "refer to; send the item itself",
                         where);
        else
            rc = oai_bad(err, "input",
                         "%s is an item of type '%.40s', which this server does not "
                         "take (messages, function calls and their outputs, reasoning)",
                         where, t);
        if (rc)
            break;
    }
    free(st.reasoning);
    return rc;
}

/* Hosted tools run by OpenAI's servers: the model here has none of them. */
static int hosted_tool(const char *type)
{
    static const char *const prefixes[] = {
        "web_search",  "file_search", "code_interpreter", "image_generation", "computer", "mcp",
        "local_shell", "shell",       "apply_patch",      "tool_search"};
    for (size_t k = 0; k < sizeof prefixes / sizeof *prefixes; k++)
        if (!strncmp(type, prefixes[k], strlen(prefixes[k])))
            return 1;
    return 0;
}

/* One function tool (in a namespace when ns is not NULL) into tools. */
static int function_tool(const cJSON *t, const char *ns, const char *where, cJSON *tools, oai_error *err)
{
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(t, "name");
    const cJSON *desc = chat_body_field(t, "description"), *params = chat_body_field(t, "parameters");
    if (!cJSON_IsString(name) || !name->valuestring[0])
        return oai_bad(err, "tools", "%s.name must be a non-empty string", where);
    if ((desc && !cJSON_IsString(desc)) || (params && !cJSON_IsObject(params)))
        return oai_bad(err, "tools", "%s: description must be a string, parameters a JSON Schema object",
                       where);
    size_t n = strlen(name->valuestring) + (ns ? strlen(ns) + 1 : 0) + 1;
    char *q = malloc(n);
    if (q)
        snprintf(q, n, "%s%s%s", ns ? ns : "", ns ? "." : "", name->valuestring);
    int rc =
        q && !chat_body_function(tools, q, desc ? desc->valuestring : NULL, params) ? 0 : chat_body_oom(err);
    free(q);
    return rc;
}

/* tools into out's "tools", the namespaces' names into namespaces. */
static int translate_tools(const cJSON *tools, cJSON *out, cJSON *namespaces, oai_error *err)
{
    if (!cJSON_IsArray(tools))
        return oai_bad(err, "tools", "'tools' must be an array");
    cJSON *decl = cJSON_AddArrayToObject(out, "tools");
    if (!decl)
        return chat_body_oom(err);
    int k = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tools) {
        char where[48];
        snprintf(where, sizeof where, "tools[%d]", k++);
        const char *type = chat_body_type(t);
        if (!type)
            return oai_bad(err, "tools", "%s must be an object with a \"type\"", where);
        if (!strcmp(type, "function")) {
            if (function_tool(t, NULL, where, decl, err))
                return -1;
        } else if (!strcmp(type, "namespace")) {
            const cJSON *ns = cJSON_GetObjectItemCaseSensitive(t, "name");
            const cJSON *inner = cJSON_GetObjectItemCaseSensitive(t, "tools");
            if (!cJSON_IsString(ns) || !ns->valuestring[0] || strchr(ns->valuestring, '.') ||
                !cJSON_IsArray(inner))
                return oai_bad(err, "tools", "%s (namespace) needs a \"name\" without dots and \"tools\"",
                               where);
            cJSON *s = cJSON_CreateString(ns->valuestring);
            if (!s || !cJSON_AddItemToArray(namespaces, s))
                return cJSON_Delete(s), chat_body_oom(err);
            int j = 0;
            const cJSON *f;
            cJSON_ArrayForEach(f, inner) {
                char fw[80];
                snprintf(fw, sizeof fw, "%s.tools[%d]", where, j++);
                const char *ft = chat_body_type(f);
                if (!ft || strcmp(ft, "function"))
                    return oai_bad(err, "tools",
                                   "%s is not a function tool: this server calls only "
                                   "function tools",
                                   fw);
                if (function_tool(f, ns->valuestring, fw, decl, err))
                    return -1;
            }
        } else if (!hosted_tool(type)) {
            return oai_bad(err, "tools",
                           "%s is a tool of type '%.40s': this server declares function "
                           "tools (and namespaces of them) to the model",
                           where, type);
        }
    }
    return 0;
}

static int translate_tool_choice(const cJSON *tc, cJSON *out, oai_error *err)
{
    if (cJSON_IsString(tc))
        return chat_body_copy(out, "tool_choice", tc) ? chat_body_oom(err) : 0;
    const char *type = chat_body_type(tc);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(tc, "name");
    if (!type || strcmp(type, "function") || !cJSON_IsString(name))
        return oai_bad(err, "tool_choice",
                       "'tool_choice' must be \"auto\", \"none\", \"required\" or "
                       "{\"type\": \"function\", \"name\": ...}");
    cJSON *v = cJSON_CreateObject(), *fn = cJSON_CreateObject();
    if (!v || !fn || !cJSON_AddItemToObject(out, "tool_choice", v)) {
        cJSON_Delete(v);
        cJSON_Delete(fn);
        return chat_body_oom(err);
    }
    if (!cJSON_AddItemToObject(v, "function", fn)) {
        cJSON_Delete(fn);
        return chat_body_oom(err);
    }
    return cJSON_AddStringToObject(v, "type", "function") &&
                   cJSON_AddStringToObject(fn, "name", name->valuestring)
               ? 0
               : chat_body_oom(err);
}

/* text.format into the chat's response_format. */
static int translate_format(const cJSON *text, cJSON *out, oai_error *err)
{
    const cJSON *f = chat_body_field(text, "format");
    const char *type = chat_body_type(f);
    if (!f)
        return 0;
    if (!type)
        return oai_bad(err, "text", "text.format must be an object with a \"type\"");
    if (!strcmp(type, "text"))
        return 0;
    cJSON *rf = cJSON_AddObjectToObject(out, "response_format");
    if (!rf || !cJSON_AddStringToObject(rf, "type", type))
        return chat_body_oom(err);
    if (strcmp(type, "json_schema"))
        return 0; /* json_object, or what the chat route refuses by name */
    if (!cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(f, "schema")))
        return oai_bad(err, "text", "text.format of type json_schema needs a \"schema\" object");
    cJSON *js = cJSON_AddObjectToObject(rf, "json_schema");
    static const char *const keys[] = {"name", "schema", "strict", "description"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(f, keys[k]);
        if (v && (!js || chat_body_copy(js, keys[k], v)))
            return chat_body_oom(err);
    }
    return js ? 0 : chat_body_oom(err);
}

static int refuse_stored(const cJSON *root, oai_error *err)
{
    static const char *const stored[] = {"previous_response_id", "conversation"};
    for (size_t k = 0; k < sizeof stored / sizeof *stored; k++)
        if (chat_body_field(root, stored[k]))
            return oai_bad(err, stored[k],
                           "'%s' needs a stored response: this server keeps none; send "
                           "the whole conversation in 'input'",
                           stored[k]);
    /* a stored prompt template would change the answer: not silently left out */
    if (chat_body_field(root, "prompt"))
        return oai_bad(err, "prompt",
                       "'prompt' names a stored prompt template: this server keeps none; send "
                       "the instructions and input themselves");
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "background")))
        return oai_bad(err, "background",
                       "'background' needs a stored response: this server keeps "
                       "none; send the request with 'background' false and wait for it");
    /* logprobs are the chat and completions routes' (an empty list here would be silently wrong) */
    const cJSON *tl = chat_body_field(root, "top_logprobs"), *inc = chat_body_field(root, "include"), *x;
    if (tl && !(cJSON_IsNumber(tl) && tl->valuedouble == 0))
        return oai_bad(err, "top_logprobs",
                       "'top_logprobs' is not supported on /v1/responses: ask "
                       "/v1/chat/completions for logprobs");
    cJSON_ArrayForEach(x, inc) {
        if (cJSON_IsString(x) && !strcmp(x->valuestring, "message.output_text.logprobs"))
            return oai_bad(err, "include",
                           "'include' asks for message.output_text.logprobs, which /v1/responses "
                           "does not give: ask /v1/chat/completions for logprobs");
    }
    /* (max_tool_calls bounds the hosted tools' calls, and this server drops
     * those tools: it has nothing to bound) */
    return 0;
}

static int translate(const cJSON *root, cJSON *out, cJSON *namespaces, int *summary, oai_error *err)
{
    if (refuse_stored(root, err))
        return -1;
    static const char *const same[] = {"model", "stream", "temperature", "top_p", "parallel_tool_calls"};
    for (size_t k = 0; k < sizeof same / sizeof *same; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, same[k]);
        if (v && chat_body_copy(out, same[k], v))
            return chat_body_oom(err);
    }
    const cJSON *mt = chat_body_field(root, "max_output_tokens");
    if (mt && !(cJSON_IsNumber(mt) && mt->valuedouble == floor(mt->valuedouble) && mt->valuedouble >= 1 &&
                mt->valuedouble <= (double)(1 << 30)))
        return oai_bad(err, "max_output_tokens", "'max_output_tokens' must be an integer from 1 to %d",
                       1 << 30);
    if (mt && chat_body_copy(out, "max_tokens", mt))
        return chat_body_oom(err);
    cJSON *messages = cJSON_AddArrayToObject(out, "messages");
    if (!messages)
        return chat_body_oom(err);
    if (translate_input(root, messages, err))
        return -1;
    const cJSON *tools = chat_body_field(root, "tools"), *tc = chat_body_field(root, "tool_choice");
    if (tools && translate_tools(tools, out, namespaces, err))
        return -1;
    if (tc && translate_tool_choice(tc, out, err))
        return -1;
    const cJSON *declared = cJSON_GetObjectItemCaseSensitive(out, "tools");
    int asks_call = cJSON_IsObject(tc) || (cJSON_IsString(tc) && !strcmp(tc->valuestring, "required"));
    if (asks_call && cJSON_GetArraySize(declared) == 0 && cJSON_GetArraySize(tools) > 0)
        return oai_bad(err, "tool_choice", "'tool_choice' asks for a call, but every tool given is a hosted "
                       "tool, which this server leaves out: declare function tools");
    const cJSON *text = chat_body_field(root, "text");
    if (text && (!cJSON_IsObject(text) || translate_format(text, out, err)))
        return cJSON_IsObject(text) ? -1 : oai_bad(err, "text", "'text' must be an object");
    const cJSON *reasoning = chat_body_field(root, "reasoning");
    const cJSON *effort = chat_body_field(reasoning, "effort");
    if (reasoning && !cJSON_IsObject(reasoning))
        return oai_bad(err, "reasoning", "'reasoning' must be an object");
    static const char *const efforts[] = {"none", "minimal", "low", "medium", "high", "xhigh", "max"};
    int known = 0;
    for (size_t k = 0; effort && cJSON_IsString(effort) && k < sizeof efforts / sizeof *efforts; k++)
        known |= !strcmp(effort->valuestring, efforts[k]);
    if (effort && !known)
        return oai_bad(err, "reasoning", "reasoning.effort must be one of none, minimal, low, medium, high, "
                       "xhigh and max (any but none turns thinking on)");
    if (effort && !cJSON_AddBoolToObject(out, "thinking", strcmp(effort->valuestring, "none") != 0))
        return chat_body_oom(err);
    /* a summary asked for: the model writes none, so its reasoning is given as
     * one (as Ollama gives a thinking model's), for clients that show only
     * summaries (Codex) */
    const cJSON *summary_kind = chat_body_field(reasoning, "summary");
    if (summary_kind && !cJSON_IsNull(summary_kind) &&
        (!cJSON_IsString(summary_kind) || (strcmp(summary_kind->valuestring, "auto") &&
                                           strcmp(summary_kind->valuestring, "concise") &&
                                           strcmp(summary_kind->valuestring, "detailed"))))
        return oai_bad(err, "reasoning", "reasoning.summary must be \"auto\", \"concise\", \"detailed\" or null");
    *summary = summary_kind && !cJSON_IsNull(summary_kind);
    return 0;
}

/* The request's settings as OpenAI's response object repeats them: each field
 * there, null or the default when the request left it out; store false (this
 * server keeps no response). NULL when out of memory. */
static cJSON *response_settings(const cJSON *root)
{
    static const struct {
        const char *name, *absent;
    } fields[] = {
        {"instructions", "null"}, {"metadata", "{}"}, {"parallel_tool_calls", "true"},
        {"temperature", "null"}, {"top_p", "null"}, {"tool_choice", "\"auto\""}, {"tools", "[]"},
        {"max_output_tokens", "null"}, {"previous_response_id", "null"},
        {"reasoning", "{\"effort\": null, \"summary\": null}"},
        {"text", "{\"format\": {\"type\": \"text\"}}"}, {"truncation", "\"disabled\""},
    };
    cJSON *e = cJSON_CreateObject();
    for (size_t k = 0; e && k < sizeof fields / sizeof *fields; k++) {
        const cJSON *v = chat_body_field(root, fields[k].name);
        cJSON *x = v ? cJSON_Duplicate(v, 1) : cJSON_Parse(fields[k].absent);
        if (!x || !cJSON_AddItemToObject(e, fields[k].name, x)) {
            cJSON_Delete(x);
            cJSON_Delete(e);
            return NULL;
        }
    }
    if (e && !cJSON_AddFalseToObject(e, "store")) {
        cJSON_Delete(e);
        return NULL;
    }
    return e;
}

int responses_request_parse(const char *body, size_t len, const chat_options *defaults, oai_request *r,
                            oai_error *err)
{
    memset(r, 0, sizeof *r);
    cJSON *root = oai_body_parse(body, len, err);
    if (!root)
        return -1;
    cJSON *out = cJSON_CreateObject(), *namespaces = cJSON_CreateArray();
    int summary = 0;
    int rc = !out || !namespaces ? chat_body_oom(err) : translate(root, out, namespaces, &summary, err);
    cJSON *settings = rc ? NULL : response_settings(root);
    /* (under a key no parser reads, as the namespaces below) */
    if (!rc && !(settings && cJSON_AddItemToObject(out, " response_settings", settings))) {
        cJSON_Delete(settings);
        rc = chat_body_oom(err);
    }
    cJSON_Delete(root);
    /* a key no parser reads: the translated body is never sent anywhere */
    if (!rc && cJSON_GetArraySize(namespaces)) {
        if (cJSON_AddItemToObject(out, " tool_namespaces", namespaces))
            namespaces = NULL; /* out holds it */
        else
            rc = chat_body_oom(err);
    }
    const cJSON *kept = cJSON_GetObjectItemCaseSensitive(out, " tool_namespaces");
    cJSON_Delete(namespaces);
    if (rc) {
        cJSON_Delete(out);
        return -1;
    }
    if (oai_request_from_json(OAI_CHAT, out, defaults, r, err))
        return -1;
    r->api = API_RESPONSES;
    r->tool_namespaces = kept;
    r->response_settings = cJSON_GetObjectItemCaseSensitive(r->root, " response_settings");
    r->reasoning_summary = summary;
    return 0;
}
