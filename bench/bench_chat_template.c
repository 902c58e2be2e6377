/* bench_chat_template: rendering a conversation through the template engine
 * (core/text/jinja*.c) against the native renderer (chat_format.c) on Kimi
 * K2.5's own template, in the same run: conversations of 10, 100 and 1,000
 * messages (user and assistant turns, every fifth assistant turn with a tool
 * call and its tool answer, 8 tools declared). The ratio engine / native says
 * what interpreting the template costs over the hand-written renderer; the
 * absolute figure, the milliseconds per rendering, is what a request pays
 * before its prompt is tokenized. One JSON line per size; the engine's
 * compile time once. A second template file given (argv[2]: e.g. a
 * checkpoint's Kimi-K2-Thinking template) is timed on the same conversations.
 *
 * Usage: bench_chat_template [KIMI_TOKENIZER_DIR [TEMPLATE_FILE]] */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/base/fileutil.h"
#include "core/text/chat_template.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static cJSON *conversation(int n)
{
    cJSON *m = cJSON_CreateArray();
    cJSON *sys = cJSON_CreateObject();
    cJSON_AddStringToObject(sys, "role", "system");
    cJSON_AddStringToObject(sys, "content", "You are Kimi, an AI assistant created by Moonshot AI.");
    cJSON_AddItemToArray(m, sys);
    for (int i = 1; i < n; i++) {
        cJSON *x = cJSON_CreateObject();
        char text[256];
        snprintf(text, sizeof text,
                 "Message %d: the quick brown fox jumps over the lazy dog, then asks "
                 "about the weather in city %d and what to pack for it.",
                 i, i % 37);
        if (i % 2) {
            cJSON_AddStringToObject(x, "role", "user");
            cJSON_AddStringToObject(x, "content", text);
        } else if (i % 10 == 0) {
            cJSON_AddStringToObject(x, "role", "assistant");
            cJSON_AddStringToObject(x, "content", "");
            cJSON *calls = cJSON_AddArrayToObject(x, "tool_calls"), *c = cJSON_CreateObject();
            char id[64];
            snprintf(id, sizeof id, "functions.weather:%d", i);
            cJSON_AddStringToObject(c, "id", id);
            cJSON_AddStringToObject(c, "type", "function");
            cJSON *fn = cJSON_AddObjectToObject(c, "function");
            cJSON_AddStringToObject(fn, "name", "weather");
            cJSON_AddStringToObject(fn, "arguments", "{\"city\": \"Paris\", \"days\": 3}");
            cJSON_AddItemToArray(calls, c);
            cJSON_AddItemToArray(m, x);
            x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "role", "tool");
            cJSON_AddStringToObject(x, "tool_call_id", id);
            cJSON_AddStringToObject(x, "content", "{\"forecast\": [\"sun\", \"rain\", \"sun\"]}");
        } else {
            cJSON_AddStringToObject(x, "role", "assistant");
            cJSON_AddStringToObject(x, "content", text);
            cJSON_AddStringToObject(x, "reasoning_content", "Let me think about that.");
        }
        cJSON_AddItemToArray(m, x);
    }
    return m;
}

static cJSON *tools(void)
{
    cJSON *t = cJSON_CreateArray();
    for (int i = 0; i < 8; i++) {
        char json[512];
        snprintf(
            json, sizeof json,
            "{\"type\": \"function\", \"function\": {\"name\": \"tool_%d\", \"description\": \"Does thing %d.\","
            " \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"},"
            " \"days\": {\"type\": \"integer\", \"minimum\": 1}}, \"required\": [\"city\"]}}}",
            i, i);
        cJSON_AddItemToArray(t, cJSON_Parse(json));
    }
    return t;
}

/* Seconds per rendering (at least 0.3 s of repetitions). */
static double time_render(const chat_template *t, const cJSON *msgs, const cJSON *tl, size_t *len)
{
    errbuf e;
    int reps = 0;
    double t0 = now(), t1;
    do {
        char *out = NULL;
        if (chat_template_render(t, msgs, tl, NULL, &out, len, &e)) {
            fprintf(stderr, "bench_chat_template: %s\n", e.msg);
            exit(1);
        }
        free(out);
        reps++;
    } while ((t1 = now()) - t0 < 0.3);
    return (t1 - t0) / reps;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "../shared/testdata/kimi-tokenizer";
    chat_template native, engine, other = {0};
    errbuf e;
    double c0 = now();
    if (chat_template_open(dir, NULL, &native, &e) || chat_template_open(dir, "jinja", &engine, &e) ||
        (argc > 2 && chat_template_open(dir, argv[2], &other, &e))) {
        fprintf(stderr, "bench_chat_template: %s\n", e.msg);
        return 1;
    }
    double compile_ms = (now() - c0) * 1e3;
    cJSON *tl = tools();
    static const int sizes[] = {10, 100, 1000};
    for (int k = 0; k < 3; k++) {
        cJSON *msgs = conversation(sizes[k]);
        size_t bytes, bytes_engine;
        double tn = time_render(&native, msgs, tl, &bytes),
               tj = time_render(&engine, msgs, tl, &bytes_engine);
        printf("{\"bench\": \"chat_template\", \"messages\": %d, \"prompt_bytes\": %zu, \"native_ms\": %.4f, "
               "\"engine_ms\": %.4f, \"ratio\": %.2f, \"engine_mb_per_s\": %.1f, \"same_bytes\": %s",
               cJSON_GetArraySize(msgs), bytes, tn * 1e3, tj * 1e3, tj / tn, (double)bytes_engine / tj / 1e6,
               bytes == bytes_engine ? "true" : "false");
        if (other.jinja) {
            size_t ob;
            double to = time_render(&other, msgs, tl, &ob);
            printf(", \"file_ms\": %.4f, \"file_bytes\": %zu", to * 1e3, ob);
        }
        printf(", \"compile_ms\": %.3f}\n", compile_ms);
        cJSON_Delete(msgs);
    }
    cJSON_Delete(tl);
    chat_template_close(&native);
    chat_template_close(&engine);
    chat_template_close(&other);
    return 0;
}
