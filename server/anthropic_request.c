/* anthropic_request: see anthropic_request.h. */
#include "anthropic_request.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_body.h"

/* Text blocks (or a string) into `parts`; where is the field's path for
 * errors, param the request's field it is in. Blocks of other types are
 * refused, naming the type. */
static int text_blocks(const cJSON *content, const char *param, const char *where, int tool_output,
                       cJSON *parts, oai_error *err)
{
    if (cJSON_IsString(content)) {
        cJSON *p = chat_body_text_part(content->valuestring);
        return p && cJSON_AddItemToArray(parts, p) ? 0 : chat_body_oom(err);
    }
    if (!cJSON_IsArray(content))
        return oai_bad(err, param, "%s must be a string or an array of text blocks", where);
    int k = 0;
    const cJSON *b;
    cJSON_ArrayForEach(b, content) {
        const char *t = chat_body_type(b);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(b, "text");
        if (!cJSON_IsObject(b) || !t)
            return oai_bad(err, param, "%s[%d] must be a block object with a \"type\"", where, k);
        if (tool_output && (!strcmp(t, "image") || !strcmp(t, "document"))) {
            cJSON *p = chat_body_media_part(t);
            if (!p || !cJSON_AddItemToArray(parts, p))
                return chat_body_oom(err);
            k++;
            continue;
        }
        if (strcmp(t, "text"))
            return oai_bad(err, param,
                           "%s[%d] is a block of type '%.40s': here only text blocks are "
                           "taken (the model reads text only)",
                           where, k, t);
        if (!cJSON_IsString(text))
            return oai_bad(err, param, "%s[%d].text must be a string", where, k);
        cJSON *p = chat_body_text_part(text->valuestring);
        if (!p || !cJSON_AddItemToArray(parts, p))
            return chat_body_oom(err);
        k++;
    }
    return 0;
}

/* A user message's blocks: runs of text blocks become user messages, each
 * tool_result a tool message of its own, in their order. */
static int user_message(const cJSON *content, int i, cJSON *out, oai_error *err)
{
    char where[64];
    snprintf(where, sizeof where, "messages[%d].content", i);
    if (cJSON_IsString(content)) {
        cJSON *m = chat_body_message(out, "user");
        return m ? text_blocks(content, "messages", where, 0, cJSON_GetObjectItem(m, "content"), err)
                 : chat_body_oom(err);
    }
    if (cJSON_IsArray(content) && !content->child)
        return oai_bad(err, "messages", "messages[%d].content must not be empty", i);
    cJSON *run = NULL; /* the user message text blocks are going into */
    int k = 0;
    const cJSON *b;
    cJSON_ArrayForEach(b, content) {
        const char *t = chat_body_type(b);
        snprintf(where, sizeof where, "messages[%d].content[%d]", i, k);
        if (!cJSON_IsObject(b) || !t)
            return oai_bad(err, "messages", "%s must be a block object with a \"type\"", where);
        if (!strcmp(t, "text")) {
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(b, "text");
            if (!cJSON_IsString(text))
                return oai_bad(err, "messages", "%s.text must be a string", where);
            cJSON *p = chat_body_text_part(text->valuestring);
            if (!run && !(run = chat_body_message(out, "user")))
                return cJSON_Delete(p), chat_body_oom(err);
            if (!p || !cJSON_AddItemToArray(cJSON_GetObjectItem(run, "content"), p))
                return chat_body_oom(err);
        } else if (!strcmp(t, "tool_result")) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(b, "tool_use_id");
            if (!cJSON_IsString(id))
                return oai_bad(err, "messages", "%s.tool_use_id must be a string", where);
            cJSON *m = chat_body_message(out, "tool");
            if (!m || !cJSON_AddStringToObject(m, "tool_call_id", id->valuestring))
                return chat_body_oom(err);
            const cJSON *c = chat_body_field(b, "content");
            char cw[80];
            snprintf(cw, sizeof cw, "%s.content", where);
            /* is_error has no place in Kimi's format: the result's text says what went wrong */
            if (c && text_blocks(c, "messages", cw, 1, cJSON_GetObjectItem(m, "content"), err))
                return -1;
            run = NULL;
        } else {
            return oai_bad(err, "messages",
                           "%s is a block of type '%.40s': a user message takes text "
                           "and tool_result blocks (the model reads text only)",
                           where, t);
        }
        k++;
    }
    return 0;
}

/* An assistant message's blocks: text into content, tool_use into
 * tool_calls (the input object as the arguments), thinking into
 * reasoning_content. */
static int assistant_message(const cJSON *content, int i, cJSON *out, oai_error *err)
{
    char where[64];
    snprintf(where, sizeof where, "messages[%d].content", i);
    cJSON *m = chat_body_message(out, "assistant");
    if (!m)
        return chat_body_oom(err);
    cJSON *parts = cJSON_GetObjectItem(m, "content");
    if (cJSON_IsString(content))
        return text_blocks(content, "messages", where, 0, parts, err);
    char *reasoning = NULL;
    size_t reasoning_len = 0;
    int k = 0, rc = 0;
    const cJSON *b;
    cJSON_ArrayForEach(b, content) {
        const char *t = chat_body_type(b);
        snprintf(where, sizeof where, "messages[%d].content[%d]", i, k++);
        if (!cJSON_IsObject(b) || !t) {
            rc = oai_bad(err, "messages", "%s must be a block object with a \"type\"", where);
        } else if (!strcmp(t, "text")) {
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(b, "text");
            cJSON *p = cJSON_IsString(text) ? chat_body_text_part(text->valuestring) : NULL;
            rc = !cJSON_IsString(text) ? oai_bad(err, "messages", "%s.text must be a string", where)
                 : p && cJSON_AddItemToArray(parts, p) ? 0
                                                       : chat_body_oom(err);
        } else if (!strcmp(t, "tool_use")) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(b, "id");
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(b, "name");
            const cJSON *input = cJSON_GetObjectItemCaseSensitive(b, "input");
            if (!cJSON_IsString(id) || !cJSON_IsString(name) || !cJSON_IsObject(input)) {
                rc = oai_bad(err, "messages",
                             "%s (tool_use) needs a string \"id\" and \"name\" and an "
                             "object \"input\"",
                             where);
                break;
            }
            /* the object itself: the chat format prints it as json.dumps would */
            rc = chat_body_tool_call(m, id->valuestring, name->valuestring, input) ? chat_body_oom(err) : 0;
        } else if (!strcmp(t, "thinking")) {
            const cJSON *th = cJSON_GetObjectItemCaseSensitive(b, "thinking");
            if (!cJSON_IsString(th)) {
                rc = oai_bad(err, "messages", "%s.thinking must be a string", where);
                break;
            }
            size_t n = strlen(th->valuestring);
            char *nr = realloc(reasoning, reasoning_len + n + 1);
            if (!nr) {
                rc = chat_body_oom(err);
                break;
            }
            memcpy(nr + reasoning_len, th->valuestring, n + 1);
            reasoning = nr;
            reasoning_len += n;
        } else if (strcmp(t, "redacted_thinking")) {
            rc = oai_bad(err, "messages",
                         "%s is a block of type '%.40s': an assistant message takes text, "
                         "tool_use and thinking blocks",
                         where, t);
        }
        if (rc)
            break;
    }
    if (!rc && reasoning && !cJSON_AddStringToObject(m, "reasoning_content", reasoning))
        rc = chat_body_oom(err);
    free(reasoning);
    return rc;
}

/* A system message within the conversation (Claude Code sends them between
 * turns): text only, a system turn of Kimi's format where it stands. */
static int system_message(const cJSON *content, int i, cJSON *out, oai_error *err)
{
    char where[64];
    snprintf(where, sizeof where, "messages[%d].content", i);
    cJSON *m = chat_body_message(out, "system");
    return m ? text_blocks(content, "messages", where, 0, cJSON_GetObjectItem(m, "content"), err)
             : chat_body_oom(err);
}

/* The answer's start: a last assistant message of text only. */
static int assistant_prefix(const cJSON *content, int i, cJSON *prefix_parts, oai_error *err)
{
    char where[64];
    snprintf(where, sizeof where, "messages[%d].content", i);
    if (text_blocks(content, "messages", where, 0, prefix_parts, err)) {
        snprintf(err->message + strlen(err->message), sizeof err->message - strlen(err->message),
                 " (a last assistant message is the answer's start: text only)");
        return -1;
    }
    return 0;
}

static int translate_messages(const cJSON *root, cJSON *out, cJSON *prefix_parts, int *has_prefix,
                              oai_error *err)
{
    const cJSON *system = chat_body_field(root, "system");
    if (system) {
        cJSON *m = chat_body_message(out, "system");
        if (!m)
            return chat_body_oom(err);
        if (text_blocks(system, "system", "system", 0, cJSON_GetObjectItem(m, "content"), err))
            return -1;
    }
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!msgs)
        return oai_bad(err, "messages", "'messages' is required");
    if (!cJSON_IsArray(msgs) || !msgs->child)
        return oai_bad(err, "messages", "'messages' must be a non-empty array of message objects");
    int i = 0, n = cJSON_GetArraySize(msgs);
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsObject(m))
            return oai_bad(err, "messages", "messages[%d] must be an object", i);
        const char *rs = cJSON_IsString(role) ? role->valuestring : "";
        int user = !strcmp(rs, "user"), sys = !strcmp(rs, "system");
        if (!user && !sys && strcmp(rs, "assistant"))
            return oai_bad(err, "messages", "messages[%d].role must be \"user\", \"assistant\" or \"system\"",
                           i);
        if (!cJSON_IsString(content) && !cJSON_IsArray(content))
            return oai_bad(err, "messages", "messages[%d].content must be a string or an array of blocks", i);
        int rc = user         ? user_message(content, i, out, err)
                 : sys        ? system_message(content, i, out, err)
                 : i == n - 1 ? assistant_prefix(content, i, prefix_parts, err)
                              : assistant_message(content, i, out, err);
        if (rc)
            return -1;
        *has_prefix = !user && !sys && i == n - 1;
        i++;
    }
    if (*has_prefix && n == 1)
        return oai_bad(err, "messages",
                       "the messages hold only an assistant message: the conversation "
                       "needs a user message before the answer's start");
    return 0;
}

/* Client tools into OpenAI's function declarations. */
static int translate_tools(const cJSON *tools, cJSON *out_root, oai_error *err)
{
    if (!cJSON_IsArray(tools))
        return oai_bad(err, "tools", "'tools' must be an array");
    cJSON *out = cJSON_AddArrayToObject(out_root, "tools");
    if (!out)
        return chat_body_oom(err);
    int k = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tools) {
        const char *type = chat_body_type(t);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(t, "name");
        const cJSON *desc = chat_body_field(t, "description"),
                    *schema = cJSON_GetObjectItemCaseSensitive(t, "input_schema");
        if (!cJSON_IsObject(t))
            return oai_bad(err, "tools", "tools[%d] must be an object", k);
        if (type && strcmp(type, "custom"))
            return oai_bad(err, "tools",
                           "tools[%d] is a server tool of type '%.60s', which Anthropic's "
                           "servers run: this server takes tools the client runs (name, description, "
                           "input_schema)",
                           k, type);
        if (!cJSON_IsString(name) || !name->valuestring[0])
            return oai_bad(err, "tools", "tools[%d].name must be a non-empty string", k);
        if (desc && !cJSON_IsString(desc))
            return oai_bad(err, "tools", "tools[%d].description must be a string", k);
        if (!cJSON_IsObject(schema))
            return oai_bad(err, "tools", "tools[%d].input_schema must be a JSON Schema object", k);
        if (chat_body_function(out, name->valuestring, desc ? desc->valuestring : NULL, schema))
            return chat_body_oom(err);
        k++;
    }
    return 0;
}

static int translate_tool_choice(const cJSON *tc, cJSON *out_root, oai_error *err)
{
    const char *type = chat_body_type(tc);
    if (!cJSON_IsObject(tc) || !type)
        return oai_bad(err, "tool_choice",
                       "'tool_choice' must be an object with a \"type\": \"auto\", "
                       "\"any\", \"tool\" or \"none\"");
    const cJSON *dp = chat_body_field(tc, "disable_parallel_tool_use");
    if (dp && !cJSON_IsBool(dp))
        return oai_bad(err, "tool_choice", "tool_choice.disable_parallel_tool_use must be a boolean");
    /* the answer ends once one call is made */
    if (cJSON_IsTrue(dp) && !cJSON_AddFalseToObject(out_root, "parallel_tool_calls"))
        return chat_body_oom(err);
    cJSON *v = NULL;
    if (!strcmp(type, "auto") || !strcmp(type, "none") || !strcmp(type, "any")) {
        v = cJSON_CreateString(!strcmp(type, "any") ? "required" : type);
    } else if (!strcmp(type, "tool")) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(tc, "name");
        if (!cJSON_IsString(name))
            return oai_bad(err, "tool_choice", "tool_choice of type \"tool\" needs the tool's \"name\"");
        cJSON *fn = cJSON_CreateObject();
        if ((v = cJSON_CreateObject()) && fn && cJSON_AddStringToObject(v, "type", "function") &&
            cJSON_AddStringToObject(fn, "name", name->valuestring) &&
            cJSON_AddItemToObject(v, "function", fn))
            fn = NULL;
        cJSON_Delete(fn);
        if (fn) {
            cJSON_Delete(v);
            v = NULL;
        }
    } else {
        return oai_bad(err, "tool_choice",
                       "tool_choice.type must be \"auto\", \"any\", \"tool\" or "
                       "\"none\", got '%.40s'",
                       type);
    }
    return v && cJSON_AddItemToObject(out_root, "tool_choice", v) ? 0 : (cJSON_Delete(v), chat_body_oom(err));
}

/* thinking: on or off in out_root's "thinking", the budget into *budget. */
static int translate_thinking(const cJSON *th, cJSON *out_root, int *enabled, int *budget, oai_error *err)
{
    const char *type = chat_body_type(th);
    if (!cJSON_IsObject(th) || !type)
        return oai_bad(err, "thinking",
                       "'thinking' must be an object with a \"type\": \"enabled\", "
                       "\"adaptive\" or \"disabled\"");
    int on = !strcmp(type, "enabled") || !strcmp(type, "adaptive");
    if (!on && strcmp(type, "disabled"))
        return oai_bad(err, "thinking",
                       "thinking.type must be \"enabled\", \"adaptive\" or \"disabled\", "
                       "got '%.40s'",
                       type);
    const cJSON *b = chat_body_field(th, "budget_tokens");
    if (b && strcmp(type, "enabled"))
        return oai_bad(err, "thinking", "thinking.budget_tokens goes with \"type\": \"enabled\"");
    if (b && (!cJSON_IsNumber(b) || b->valuedouble != floor(b->valuedouble) || b->valuedouble < 1 ||
              b->valuedouble > 1 << 30))
        return oai_bad(err, "thinking", "thinking.budget_tokens must be an integer of at least 1");
    *budget = b ? (int)b->valuedouble : 0;
    *enabled = on;
    return cJSON_AddBoolToObject(out_root, "thinking", on) ? 0 : chat_body_oom(err);
}

/* output_config.format (structured outputs: {"type": "json_schema", "schema"})
 * into the chat's response_format: the answer is one value of the schema. */
static int translate_format(const cJSON *f, cJSON *out, oai_error *err)
{
    if (!f)
        return 0;
    const char *type = chat_body_type(f);
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(f, "schema");
    if (!type || strcmp(type, "json_schema") || !cJSON_IsObject(schema))
        return oai_bad(err, "output_config",
                       "output_config.format must be {\"type\": \"json_schema\", "
                       "\"schema\": {...}}");
    cJSON *rf = cJSON_AddObjectToObject(out, "response_format");
    cJSON *js = rf && cJSON_AddStringToObject(rf, "type", "json_schema")
                    ? cJSON_AddObjectToObject(rf, "json_schema")
                    : NULL;
    return js && cJSON_AddStringToObject(js, "name", "output") && !chat_body_copy(js, "schema", schema)
               ? 0
               : chat_body_oom(err);
}

/* The OpenAI chat body the Messages body says; -1 with err set. */
static int translate(const cJSON *root, int counting, cJSON *out, cJSON *prefix_parts, int *has_prefix,
                     int *thinking, int *budget, oai_error *err)
{
    /* what Anthropic's servers run for a request: this server has none of it */
    const cJSON *mcp = chat_body_field(root, "mcp_servers");
    if (mcp && (!cJSON_IsArray(mcp) || mcp->child))
        return oai_bad(err, "mcp_servers",
                       "'mcp_servers' asks Anthropic's servers to reach MCP servers: "
                       "this server has none; give their tools as client tools");
    if (chat_body_field(root, "container"))
        return oai_bad(err, "container",
                       "'container' names a code execution container of Anthropic's "
                       "servers: this server has none");
    static const char *const same[] = {"model", "stream", "temperature", "top_p", "top_k"};
    for (size_t k = 0; k < sizeof same / sizeof *same; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, same[k]);
        if (v && chat_body_copy(out, same[k], v))
            return chat_body_oom(err);
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
    if (!mt && !counting)
        return oai_bad(err, "max_tokens", "'max_tokens' is required: the answer's tokens at most");
    /* 0: the prompt only, into the prompt cache (Anthropic's way to warm it);
     * anthropic_request_parse marks it */
    int prompt_only = cJSON_IsNumber(mt) && mt->valuedouble == 0;
    if (mt && !counting && !prompt_only && chat_body_copy(out, "max_tokens", mt))
        return chat_body_oom(err);
    const cJSON *stop = chat_body_field(root, "stop_sequences");
    if (stop) {
        if (!cJSON_IsArray(stop))
            return oai_bad(err, "stop_sequences", "'stop_sequences' must be an array of strings");
        if (cJSON_GetArraySize(stop) > OAI_MAX_STOP)
            return oai_bad(err, "stop_sequences", "'stop_sequences' holds at most %d strings", OAI_MAX_STOP);
        const cJSON *s;
        cJSON_ArrayForEach(s, stop)
            if (!cJSON_IsString(s) || !s->valuestring[0])
                return oai_bad(err, "stop_sequences", "'stop_sequences' must hold non-empty strings");
        if (chat_body_copy(out, "stop", stop))
            return chat_body_oom(err);
    }
    cJSON *msgs = cJSON_AddArrayToObject(out, "messages");
    if (!msgs)
        return chat_body_oom(err);
    if (translate_messages(root, msgs, prefix_parts, has_prefix, err))
        return -1;
    const cJSON *tools = chat_body_field(root, "tools"), *tc = chat_body_field(root, "tool_choice");
    if (tools && translate_tools(tools, out, err))
        return -1;
    if (tc && translate_tool_choice(tc, out, err))
        return -1;
    const cJSON *oc = chat_body_field(root, "output_config");
    if (oc && (!cJSON_IsObject(oc) || translate_format(chat_body_field(oc, "format"), out, err)))
        return cJSON_IsObject(oc) ? -1 : oai_bad(err, "output_config", "'output_config' must be an object");
    const cJSON *th = chat_body_field(root, "thinking");
    *thinking = -1;
    return th ? translate_thinking(th, out, thinking, budget, err) : 0;
}

/* The prefix's text blocks joined, kept in the request's body as a string. */
static const char *keep_prefix(cJSON *out, const cJSON *parts)
{
    size_t n = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, parts)
        n += strlen(cJSON_GetObjectItem(p, "text")->valuestring);
    char *s = malloc(n + 1);
    if (!s)
        return NULL;
    s[0] = 0;
    cJSON_ArrayForEach(p, parts)
        strcat(s, cJSON_GetObjectItem(p, "text")->valuestring);
    cJSON *v = cJSON_CreateString(s);
    free(s);
    /* a key no parser reads: the translated body is never sent anywhere */
    return v && cJSON_AddItemToObject(out, " assistant_prefix", v) ? v->valuestring : (cJSON_Delete(v), NULL);
}

int anthropic_request_parse(const char *body, size_t len, const chat_options *defaults, int counting,
                            oai_request *r, oai_error *err)
{
    memset(r, 0, sizeof *r);
    cJSON *root = oai_body_parse(body, len, err);
    if (!root)
        return -1;
    cJSON *out = cJSON_CreateObject(), *prefix_parts = cJSON_CreateArray();
    int has_prefix = 0, thinking = -1, budget = 0;
    int rc = !out || !prefix_parts
                 ? chat_body_oom(err)
                 : translate(root, counting, out, prefix_parts, &has_prefix, &thinking, &budget, err);
    const char *prefix = NULL;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
    int prompt_only = !counting && cJSON_IsNumber(mt) && mt->valuedouble == 0;
    if (!rc && has_prefix && thinking == 1)
        rc = oai_bad(err, "messages",
                     "a last assistant message (the answer's start) cannot go with thinking "
                     "enabled: the answer would start inside the reasoning");
    /* a prefilled answer has no reasoning before it */
    if (!rc && has_prefix && thinking < 0 && !cJSON_AddBoolToObject(out, "thinking", 0))
        rc = chat_body_oom(err);
    if (!rc && has_prefix && !(prefix = keep_prefix(out, prefix_parts)))
        rc = chat_body_oom(err);
    cJSON_Delete(root);
    cJSON_Delete(prefix_parts);
    if (rc) {
        cJSON_Delete(out);
        return -1;
    }
    if (oai_request_from_json(OAI_CHAT, out, defaults, r, err))
        return -1;
    r->api = API_ANTHROPIC;
    r->score_only |= prompt_only;
    r->assistant_prefix = prefix;
    r->reasoning_budget = r->copt.thinking ? budget : 0;
    return 0;
}
