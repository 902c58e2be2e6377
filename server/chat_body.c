/* chat_body: see chat_body.h. */
#include "chat_body.h"

#include <stdio.h>

int chat_body_oom(oai_error *err)
{
    return oai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
}

const cJSON *chat_body_field(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

const char *chat_body_type(const cJSON *o)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

int chat_body_copy(cJSON *o, const char *name, const cJSON *v)
{
    cJSON *c = cJSON_Duplicate(v, 1);
    if (c && cJSON_AddItemToObject(o, name, c))
        return 0;
    cJSON_Delete(c);
    return -1;
}

cJSON *chat_body_text_part(const char *text)
{
    cJSON *p = cJSON_CreateObject();
    if (p && (!cJSON_AddStringToObject(p, "type", "text") || !cJSON_AddStringToObject(p, "text", text))) {
        cJSON_Delete(p);
        return NULL;
    }
    return p;
}

cJSON *chat_body_media_part(const char *type)
{
    char text[128];
    snprintf(text, sizeof text, "[an attachment (%.40s) was here: this model reads text only]", type);
    return chat_body_text_part(text);
}

cJSON *chat_body_message(cJSON *messages, const char *role)
{
    cJSON *m = cJSON_CreateObject();
    if (!m || !cJSON_AddStringToObject(m, "role", role) || !cJSON_AddArrayToObject(m, "content") ||
        !cJSON_AddItemToArray(messages, m)) {
        cJSON_Delete(m);
        return NULL;
    }
    return m;
}

int chat_body_tool_call(cJSON *message, const char *id, const char *name, const cJSON *arguments)
{
    cJSON *calls = cJSON_GetObjectItemCaseSensitive(message, "tool_calls");
    if (!calls && !(calls = cJSON_AddArrayToObject(message, "tool_calls")))
        return -1;
    cJSON *call = cJSON_CreateObject();
    if (!call || !cJSON_AddItemToArray(calls, call)) {
        cJSON_Delete(call);
        return -1;
    }
    cJSON *fn = cJSON_AddObjectToObject(call, "function");
    return fn && cJSON_AddStringToObject(call, "id", id) &&
                   cJSON_AddStringToObject(call, "type", "function") &&
                   cJSON_AddStringToObject(fn, "name", name) && !chat_body_copy(fn, "arguments", arguments)
               ? 0
               : -1;
}

int chat_body_function(cJSON *tools, const char *name, const char *description, const cJSON *parameters)
{
    cJSON *decl = cJSON_CreateObject();
    if (!decl || !cJSON_AddItemToArray(tools, decl)) {
        cJSON_Delete(decl);
        return -1;
    }
    cJSON *fn = cJSON_AddObjectToObject(decl, "function");
    return fn && cJSON_AddStringToObject(decl, "type", "function") &&
                   cJSON_AddStringToObject(fn, "name", name) &&
                   (!description || cJSON_AddStringToObject(fn, "description", description)) &&
                   (!parameters || !chat_body_copy(fn, "parameters", parameters))
               ? 0
               : -1;
}
