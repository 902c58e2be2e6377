/* Fuzz target: the chat template renderer and the tool-call parser.
 *
 * The bytes are parsed as JSON: an object is a request {messages, tools,
 * add_generation_prompt, thinking, preserve_thinking, tools_ts_str}, an array
 * is the messages alone; both are rendered with every template kind and
 * printed with every JSON flag combination. The same bytes are then parsed as
 * generated text in each reasoning mode, one shot and as a stream cut into
 * chunks; the two must agree exactly (abort otherwise), since the server relies
 * on streaming giving what a one-shot parse gives. And the bytes are read as a
 * conversation file (chat's /load): what loads is messages a template renders,
 * and loads again as itself once written out. */
#include <cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/json_alloc.h"
#include "core/text/chat_file.h"
#include "core/text/chat_format.h"
#include "core/text/tool_calls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_render(const char *text, size_t size)
{
    cJSON *root = chat_json_parse(text, size, NULL);
    if (!root)
        return;
    errbuf e;
    const cJSON *messages = root, *tools = NULL;
    chat_options o;
    chat_options_default(&o);
    if (cJSON_IsObject(root)) {
        messages = cJSON_GetObjectItemCaseSensitive(root, "messages");
        tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
        if (chat_options_from_json(root, &o, &e))
            chat_options_default(&o);
    }
    for (int kind = CHAT_TEMPLATE_K25; kind <= CHAT_TEMPLATE_K25_MOONSHOT; kind++) {
        char *out = NULL;
        size_t len = 0;
        if (chat_format_render((chat_template_kind)kind, messages, tools, &o, &out, &len, &e) == 0) {
            if (!out || strlen(out) != len)
                abort();
            free(out);
        } else if (out) {
            abort();
        }
    }
    for (int flags = 0; flags < 4; flags++) {
        char *out = NULL;
        if (chat_json_dump(root, flags, &out, NULL, &e) == 0)
            free(out);
    }
    cJSON_Delete(root);
}

static void fuzz_conversation_file(const char *text, size_t size)
{
    errbuf e;
    cJSON *messages = chat_file_parse(text, size, "fuzz.json", &e);
    if (!messages)
        return;
    const cJSON *m;
    cJSON_ArrayForEach(m, messages) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m, "content")))
            abort();
    }
    chat_options o;
    chat_options_default(&o);
    char *out = NULL;
    size_t len = 0;
    if (chat_format_render(CHAT_TEMPLATE_K25, messages, NULL, &o, &out, &len, &e) == 0)
        free(out);
    /* written out (as /save does) and read back: the same messages */
    char *saved = cJSON_PrintUnformatted(messages);
    if (saved) {
        cJSON *again = chat_file_parse(saved, strlen(saved), "saved.json", &e);
        if (!again && !json_alloc_failed())
            abort();
        if (again && !cJSON_Compare(again, messages, 1))
            abort();
        cJSON_Delete(again);
        free(saved);
    }
    cJSON_Delete(messages);
}

static int same_bytes(const char *a, size_t na, const char *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na) == 0);
}

/* Appends n bytes to a malloc'd buffer; aborts when out of memory. */
static void append(char **buf, size_t *len, const char *s, size_t n)
{
    char *nb = realloc(*buf, *len + n + 1);
    if (!nb)
        abort();
    memcpy(nb + *len, s, n);
    *len += n;
    nb[*len] = 0;
    *buf = nb;
}

/* What the stream has produced so far, checked against the one-shot result. */
typedef struct seen {
    const tool_parse_result *r;
    char *content, *reasoning;
    size_t nc, nr;
    int n_calls;
} seen;

static int absorb(seen *w, const tool_stream_delta *d)
{
    append(&w->content, &w->nc, d->content, d->content_len);
    append(&w->reasoning, &w->nr, d->reasoning, d->reasoning_len);
    for (int i = 0; i < d->n_calls; i++, w->n_calls++) {
        const tool_call *want = w->n_calls < w->r->n_calls ? &w->r->calls[w->n_calls] : NULL;
        if (!want || strcmp(d->calls[i].id, want->id) || strcmp(d->calls[i].name, want->name) ||
            strcmp(d->calls[i].arguments, want->arguments))
            return 0;
    }
    return 1;
}

static void fuzz_tool_calls(const char *text, size_t size, tool_reasoning_mode mode)
{
    errbuf e;
    tool_parse_result r;
    if (tool_calls_parse(text, size, mode, &r, &e))
        return;
    tool_stream s;
    tool_stream_init(&s, mode);
    tool_stream_delta d = {0};
    seen w = {.r = &r};
    int ok = 1;
    /* chunk sizes from the data itself, 1..16 bytes */
    for (size_t at = 0; at < size && ok;) {
        size_t step = 1 + (unsigned char)text[at] % 16;
        if (step > size - at)
            step = size - at;
        if (tool_stream_feed(&s, text + at, step, &d, &e))
            goto out;           /* out of memory: nothing to compare */
        at += step;
        ok = absorb(&w, &d);
    }
    if (ok) {
        if (tool_stream_finish(&s, &d, &e))
            goto out;
        ok = absorb(&w, &d);
    }
    if (!ok || !same_bytes(w.content, w.nc, r.content, r.content_len) ||
        !same_bytes(w.reasoning, w.nr, r.reasoning, r.reasoning_len) || w.n_calls != r.n_calls ||
        d.flags != r.flags)
        abort();
out:
    free(w.content);
    free(w.reasoning);
    tool_stream_free(&s);
    tool_parse_result_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = 0;
    fuzz_render(text, size);
    fuzz_conversation_file(text, size);
    fuzz_tool_calls(text, size, TOOL_REASONING_TAGS);
    fuzz_tool_calls(text, size, TOOL_REASONING_OPEN);
    fuzz_tool_calls(text, size, TOOL_REASONING_NONE);
    free(text);
    return 0;
}
