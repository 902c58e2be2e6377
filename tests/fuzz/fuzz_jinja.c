/* Fuzz target: the chat template engine (core/text/jinja*.c).
 *
 * The bytes up to the first NUL are a template; after it, a JSON object of
 * variables (a conversation with tools when absent or not JSON). Compiling
 * must succeed or say why; rendering must give a NUL-terminated text of the
 * length it reports, or fail saying why, within the engine's limits. */
#include <cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/chat_format.h"
#include "core/text/jinja.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char default_vars[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Hi\"}, {\"type\": \"image_url\"}]},"
    " {\"role\": \"assistant\", \"content\": \"\", \"reasoning_content\": \"hm\", \"tool_calls\":"
    " [{\"id\": \"functions.f:0\", \"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\":"
    " {\"x\": 1.0, \"y\": [true, null, \"s\"]}}}]},"
    " {\"role\": \"tool\", \"tool_call_id\": \"functions.f:0\", \"content\": \"42\"}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {}}}],"
    " \"add_generation_prompt\": true, \"bos_token\": \"[BOS]\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *nul = memchr(text, 0, size);
    size_t tlen = nul ? (size_t)(nul - text) : size;
    errbuf e;
    e.msg[0] = 0;
    jinja_template *t = jinja_compile(text, tlen, &e);
    if (!t) {
        if (!e.msg[0])
            abort(); /* a refusal must say why */
        return 0;
    }
    cJSON *vars = nul ? chat_json_parse(nul + 1, size - tlen - 1, NULL) : NULL;
    if (!cJSON_IsObject(vars)) {
        cJSON_Delete(vars);
        vars = chat_json_parse(default_vars, sizeof default_vars - 1, NULL);
    }
    char *out = NULL;
    size_t len = 0;
    e.msg[0] = 0;
    if (jinja_render(t, vars, &out, &len, &e) == 0) {
        if (!out || out[len] != 0)
            abort();
        free(out);
    } else if (out || !e.msg[0]) {
        abort();
    }
    cJSON_Delete(vars);
    jinja_free(t);
    return 0;
}
