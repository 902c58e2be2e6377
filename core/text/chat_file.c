/* chat_file: a conversation file's messages, checked. */
#include "chat_file.h"

#include <string.h>

#include "core/base/json_alloc.h"

/* a message's text field: a string, or (allowed) null or absent as "" */
static int text_field(const cJSON *m, const char *key, int may_lack, const char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, key);
    *out = cJSON_IsString(v) ? v->valuestring : "";
    return cJSON_IsString(v) || (may_lack && (!v || cJSON_IsNull(v)));
}

cJSON *chat_file_parse(const char *text, size_t len, const char *name, errbuf *e)
{
    cJSON *root = json_parse_watched(text, len), *out = NULL;
    if (!root) {
        err_set(e, "%s: %s", name, json_parse_failure("not valid JSON"));
        return NULL;
    }
    const cJSON *list = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "messages") : root;
    if (!cJSON_IsArray(list)) {
        err_set(e, "%s: expected a list of messages, or an object whose \"messages\" is one (a chat "
                "request, a conversation the chat page exported)", name);
        goto done;
    }
    if (!(out = cJSON_CreateArray())) {
        err_set(e, "%s: out of memory reading the conversation", name);
        goto done;
    }
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, list) {
        const char *role = NULL, *content, *reasoning;
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (cJSON_IsString(r))
            role = r->valuestring;
        int assistant = role && !strcmp(role, "assistant");
        if (!role || (strcmp(role, "system") && strcmp(role, "user") && !assistant)) {
            err_set(e, "%s: message %d: 'role' must be \"system\", \"user\" or \"assistant\"", name, i);
            goto fail;
        }
        if (!text_field(m, "content", assistant, &content)) {
            err_set(e, "%s: message %d (%s): 'content' must be text (chat takes no parts, images or "
                    "tool calls)", name, i, role);
            goto fail;
        }
        const char *key = cJSON_GetObjectItemCaseSensitive(m, "reasoning_content") ? "reasoning_content"
                                                                                   : "reasoning";
        if (!text_field(m, key, 1, &reasoning)) {
            err_set(e, "%s: message %d (%s): '%s' must be text", name, i, role, key);
            goto fail;
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(out, o);
        if (!cJSON_AddStringToObject(o, "role", role) || !cJSON_AddStringToObject(o, "content", content) ||
            (assistant && *reasoning && !cJSON_AddStringToObject(o, "reasoning_content", reasoning))) {
            err_set(e, "%s: out of memory reading the conversation", name);
            goto fail;
        }
        i++;
    }
    goto done;
fail:
    cJSON_Delete(out);
    out = NULL;
done:
    cJSON_Delete(root);
    return out;
}
