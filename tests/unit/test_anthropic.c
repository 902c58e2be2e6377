/* Anthropic's Messages API without a socket: requests rewritten into the chat
 * request they say (the same prompt as the OpenAI body of the same
 * conversation, rendered), refusals naming the field, and the response's
 * blocks and stream events. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/chat_format.h"
#include "server/anthropic_request.h"
#include "server/anthropic_response.h"

static void parse_ok(const char *body, int counting, oai_request *r)
{
    oai_error err;
    cr_assert_eq(anthropic_request_parse(body, strlen(body), NULL, counting, r, &err), 0, "%s: %s", body,
                 err.message);
    cr_assert_eq(r->api, API_ANTHROPIC);
    cr_assert_eq(r->kind, OAI_CHAT);
}

/* The chat text a request's messages and tools render to (malloc'd). */
static char *rendered(const oai_request *r)
{
    char *text;
    errbuf e;
    cr_assert_eq(chat_format_render(CHAT_TEMPLATE_K25, r->messages, r->tools, &r->copt, &text, NULL, &e), 0,
                 "%s", e.msg);
    return text;
}

Test(anthropic_request, a_conversation_renders_as_its_openai_body_does)
{
    const char *anth =
        "{\"model\": \"m\", \"max_tokens\": 9, \"system\": [{\"type\": \"text\", \"text\": \"Be terse.\"}, "
        "{\"type\": \"text\", \"text\": \" Use tools.\", \"cache_control\": {\"type\": \"ephemeral\"}}], "
        "\"tools\": [{\"name\": \"get_weather\", \"description\": \"Weather\", \"input_schema\": {\"type\": "
        "\"object\", \"properties\": {\"city\": {\"type\": \"string\"}, \"days\": {\"maximum\": 1.0}}}}], "
        "\"messages\": ["
        "{\"role\": \"user\", \"content\": \"Weather in Paris?\"}, "
        "{\"role\": \"assistant\", \"content\": [{\"type\": \"thinking\", \"thinking\": \"Ask.\", \"signature\": \"s\"}, "
        "{\"type\": \"redacted_thinking\", \"data\": \"x\"}, {\"type\": \"text\", \"text\": \"Checking.\"}, "
        "{\"type\": \"tool_use\", \"id\": \"functions.get_weather:0\", \"name\": \"get_weather\", "
        "\"input\": {\"city\": \"Paris\", \"days\": 1.0}}]}, "
        "{\"role\": \"user\", \"content\": [{\"type\": \"tool_result\", \"tool_use_id\": \"functions.get_weather:0\", "
        "\"content\": \"18 C\", \"is_error\": false}, {\"type\": \"text\", \"text\": \"And \"}, "
        "{\"type\": \"text\", \"text\": \"tomorrow?\"}]}, {\"role\": \"system\", \"content\": \"Be brief.\"}]}";
    const char *oai =
        "{\"model\": \"m\", \"max_tokens\": 9, \"tools\": [{\"type\": \"function\", \"function\": {\"name\": "
        "\"get_weather\", \"description\": \"Weather\", \"parameters\": {\"type\": \"object\", \"properties\": "
        "{\"city\": {\"type\": \"string\"}, \"days\": {\"maximum\": 1.0}}}}}], \"messages\": ["
        "{\"role\": \"system\", \"content\": \"Be terse. Use tools.\"}, "
        "{\"role\": \"user\", \"content\": \"Weather in Paris?\"}, "
        "{\"role\": \"assistant\", \"content\": \"Checking.\", \"reasoning_content\": \"Ask.\", \"tool_calls\": "
        "[{\"id\": \"functions.get_weather:0\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\", "
        "\"arguments\": \"{\\\"city\\\": \\\"Paris\\\", \\\"days\\\": 1.0}\"}}]}, "
        "{\"role\": \"tool\", \"tool_call_id\": \"functions.get_weather:0\", \"content\": \"18 C\"}, "
        "{\"role\": \"user\", \"content\": \"And tomorrow?\"}, {\"role\": \"system\", \"content\": \"Be brief.\"}]}";
    for (int thinking = 0; thinking < 2; thinking++) {
        chat_options o;
        chat_options_default(&o);
        o.thinking = thinking;
        oai_request a, b;
        oai_error err;
        cr_assert_eq(anthropic_request_parse(anth, strlen(anth), &o, 0, &a, &err), 0, "%s", err.message);
        cr_assert_eq(oai_request_parse(OAI_CHAT, oai, strlen(oai), &o, &b, &err), 0, "%s", err.message);
        char *ta = rendered(&a), *tb = rendered(&b);
        cr_assert_str_eq(ta, tb);
        cr_assert(strstr(ta, "\"days\": 1.0"), "a number's spelling is kept: %s", ta);
        cr_assert_eq(a.max_tokens, 9);
        cr_assert_null(a.assistant_prefix);
        free(ta);
        free(tb);
        oai_request_free(&a);
        oai_request_free(&b);
    }
}

Test(anthropic_request, sampling_stops_tools_and_thinking_map_to_the_chat_request)
{
    oai_request r;
    parse_ok("{\"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"temperature\": 0.5, "
             "\"top_p\": 0.9, \"top_k\": 7, \"stream\": true, \"stop_sequences\": [\"END\", \"##\"], "
             "\"metadata\": {\"user_id\": \"u\"}, \"thinking\": {\"type\": \"enabled\", \"budget_tokens\": 2048}, "
             "\"context_management\": {\"edits\": [{\"type\": \"clear_thinking_20251015\", \"keep\": \"all\"}]}, "
             "\"output_config\": {\"effort\": \"high\"}}", 0, &r);
    cr_expect_float_eq(r.temperature, 0.5f, 1e-6);
    cr_expect_float_eq(r.top_p, 0.9f, 1e-6);
    cr_expect_eq(r.top_k, 7);
    cr_expect(r.stream);
    cr_assert_eq(r.n_stop, 2);
    cr_expect_str_eq(r.stop[0], "END");
    cr_expect_str_eq(r.stop[1], "##");
    cr_expect(r.copt.thinking);
    cr_expect_eq(r.reasoning_budget, 2048);
    oai_request_free(&r);

    chat_options on;
    chat_options_default(&on);
    oai_error err;
    const char *off = "{\"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], "
                      "\"thinking\": {\"type\": \"disabled\"}}";
    cr_assert_eq(anthropic_request_parse(off, strlen(off), &on, 0, &r, &err), 0, "%s", err.message);
    cr_expect(!r.copt.thinking, "thinking disabled overrides the server's default");
    cr_expect_eq(r.reasoning_budget, 0);
    oai_request_free(&r);
    chat_options no;
    chat_options_default(&no);
    no.thinking = 0;
    const char *adaptive = "{\"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], "
                           "\"thinking\": {\"type\": \"adaptive\"}}";
    cr_assert_eq(anthropic_request_parse(adaptive, strlen(adaptive), &no, 0, &r, &err), 0, "%s", err.message);
    cr_expect(r.copt.thinking && !r.reasoning_budget, "adaptive: on, without a budget");
    oai_request_free(&r);

    /* tool_choice: any is OpenAI's required, tool a named function, none drops the tools */
#define TOOL "\"tools\": [{\"name\": \"f\", \"input_schema\": {\"type\": \"object\"}}]"
#define ONE "\"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]"
    parse_ok("{" ONE ", " TOOL ", \"tool_choice\": {\"type\": \"any\"}}", 0, &r);
    cr_expect(r.tool_choice_required && r.tools);
    oai_request_free(&r);
    parse_ok("{" ONE ", " TOOL ", \"tool_choice\": {\"type\": \"tool\", \"name\": \"f\", "
             "\"disable_parallel_tool_use\": true}}", 0, &r);
    cr_expect_str_eq(r.tool_choice_name, "f");
    oai_request_free(&r);
    parse_ok("{" ONE ", " TOOL ", \"tool_choice\": {\"type\": \"none\"}}", 0, &r);
    cr_expect_null(r.tools);
    oai_request_free(&r);
    parse_ok("{" ONE ", " TOOL ", \"tool_choice\": {\"type\": \"auto\"}}", 0, &r);
    cr_expect(r.tools && !r.tool_choice_required && !r.tool_choice_name && !r.one_call);
    oai_request_free(&r);
    parse_ok("{" ONE ", " TOOL ", \"tool_choice\": {\"type\": \"auto\", \"disable_parallel_tool_use\": true}}", 0, &r);
    cr_expect(r.one_call, "disable_parallel_tool_use: the answer ends with its first call");
    oai_request_free(&r);
    /* structured outputs: the answer held to the schema */
    parse_ok("{" ONE ", \"output_config\": {\"effort\": \"low\", \"format\": {\"type\": \"json_schema\", "
             "\"schema\": {\"type\": \"object\"}}}}", 0, &r);
    cr_expect_not_null(r.schema);
    oai_request_free(&r);
    /* count_tokens takes no max_tokens */
    parse_ok("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", 1, &r);
    oai_request_free(&r);
}

Test(anthropic_request, a_last_assistant_message_is_the_answers_start)
{
    chat_options on;
    chat_options_default(&on);
    oai_request r;
    oai_error err;
    const char *body = "{\"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, "
                       "{\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"text\": \"Sure\"}, "
                       "{\"type\": \"text\", \"text\": \", here\"}]}]}";
    cr_assert_eq(anthropic_request_parse(body, strlen(body), &on, 0, &r, &err), 0, "%s", err.message);
    cr_assert_str_eq(r.assistant_prefix, "Sure, here");
    cr_expect(!r.copt.thinking, "a given start has no reasoning before it");
    cr_assert_eq(cJSON_GetArraySize(r.messages), 1, "the start is not a message of the conversation");
    char *text = rendered(&r);
    size_t n = strlen(text);
    cr_expect(n > 15 && !strcmp(text + n - 15, "<think></think>"), "%s", text);
    free(text);
    oai_request_free(&r);
}

/* An image or document a tool returned stands as text saying so (every later
 * turn would carry it: a refusal would end the conversation); one a user
 * sends is refused (above). */
Test(anthropic_request, media_in_a_tool_result_stand_as_text)
{
    oai_request r;
    parse_ok("{\"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"tool_result\", "
             "\"tool_use_id\": \"a\", \"content\": [{\"type\": \"text\", \"text\": \"shot:\"}, {\"type\": \"image\", "
             "\"source\": {\"type\": \"base64\", \"media_type\": \"image/png\", \"data\": \"AA==\"}}]}]}]}",
             0, &r);
    char *text = rendered(&r);
    cr_expect(strstr(text, "shot:[an attachment (image) was here: this model reads text only]"), "%s", text);
    free(text);
    oai_request_free(&r);
}

static void refuse(const char *body, int status, const char *param, const char *words)
{
    oai_request r;
    oai_error err;
    cr_assert_eq(anthropic_request_parse(body, strlen(body), NULL, 0, &r, &err), -1, "accepted: %s", body);
    cr_assert_eq(err.status, status, "%s", body);
    cr_assert_str_eq(err.param, param, "%s: %s", body, err.message);
    cr_assert(strstr(err.message, words), "%s: '%s' lacks '%s'", body, err.message, words);
    char *b = anthropic_error_body(&err);
    cJSON *j = cJSON_Parse(b);
    cr_assert_str_eq(cJSON_GetObjectItem(j, "type")->valuestring, "error");
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "type")->valuestring,
                     "invalid_request_error");
    cJSON_Delete(j);
    free(b);
    oai_request_free(&r);
}

/* max_tokens 0: the prompt only (Anthropic's way to warm its cache) */
Test(anthropic_request, max_tokens_0_computes_the_prompt_only)
{
    oai_request r;
    parse_ok("{\"max_tokens\": 0, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", 0, &r);
    cr_expect(r.score_only);
    oai_request_free(&r);
    parse_ok("{\"max_tokens\": 3, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", 0, &r);
    cr_expect(!r.score_only);
    cr_expect_eq(r.max_tokens, 3);
    oai_request_free(&r);
}

Test(anthropic_request, refuses_bad_bodies_naming_the_field)
{
    refuse("{\"messages\": [", 400, "", "JSON");
    refuse("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", 400, "max_tokens", "required");
    refuse("{\"max_tokens\": -1, " "\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", 400, "max_tokens",
           "between");
    refuse("{\"max_tokens\": 0.5, " "\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", 400, "max_tokens",
           "between");
    refuse("{\"max_tokens\": 5}", 400, "messages", "required");
    refuse("{\"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": []}]}", 400, "messages",
           "messages[0].content must not be empty");
    refuse("{\"max_tokens\": 5, \"messages\": []}", 400, "messages", "non-empty");
    refuse("{\"max_tokens\": 5, \"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}", 400, "messages",
           "\"user\", \"assistant\" or \"system\"");
    refuse("{\"max_tokens\": 5, \"messages\": [{\"role\": \"system\", \"content\": [{\"type\": \"tool_result\"}]}]}",
           400, "messages", "only text blocks");
    refuse("{\"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": 3}]}", 400, "messages",
           "messages[0].content");
    refuse("{\"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image\", "
           "\"source\": {}}]}]}", 400, "messages", "messages[0].content[0] is a block of type 'image'");
    refuse("{\"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"tool_result\", "
           "\"tool_use_id\": \"a\", \"content\": [{\"type\": \"video\"}]}]}]}", 400, "messages",
           "messages[0].content[0].content[0]");
    refuse("{\"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"tool_result\"}]}]}",
           400, "messages", "tool_use_id");
    refuse("{\"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", "
           "\"content\": [{\"type\": \"tool_use\", \"id\": \"a\", \"name\": \"f\", \"input\": \"{}\"}]}, "
           "{\"role\": \"user\", \"content\": \"y\"}]}", 400, "messages", "object \"input\"");
    refuse("{\"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", "
           "\"content\": [{\"type\": \"tool_use\", \"id\": \"a\", \"name\": \"f\", \"input\": {}}]}]}", 400,
           "messages", "text only");
    refuse("{\"max_tokens\": 5, \"messages\": [{\"role\": \"assistant\", \"content\": \"x\"}]}", 400, "messages",
           "needs a user message");
    refuse("{\"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", "
           "\"content\": \"y\"}], \"thinking\": {\"type\": \"enabled\"}}", 400, "messages", "thinking");
    refuse("{" ONE ", \"system\": 4}", 400, "system", "system");
    refuse("{" ONE ", \"tools\": [{\"type\": \"bash_20250124\", \"name\": \"bash\"}]}", 400, "tools",
           "server tool");
    refuse("{" ONE ", \"tools\": [{\"name\": \"f\"}]}", 400, "tools", "input_schema");
    refuse("{" ONE ", \"tools\": [{\"input_schema\": {}}]}", 400, "tools", "name");
    refuse("{" ONE ", \"tool_choice\": {\"type\": \"any\"}}", 400, "tool_choice", "no 'tools'");
    refuse("{" ONE ", " TOOL ", \"tool_choice\": {\"type\": \"tool\"}}", 400, "tool_choice", "name");
    refuse("{" ONE ", " TOOL ", \"tool_choice\": \"any\"}", 400, "tool_choice", "object");
    refuse("{" ONE ", \"thinking\": {\"type\": \"on\"}}", 400, "thinking", "thinking.type");
    refuse("{" ONE ", \"thinking\": {\"type\": \"enabled\", \"budget_tokens\": 0}}", 400, "thinking",
           "budget_tokens");
    refuse("{" ONE ", \"thinking\": {\"type\": \"disabled\", \"budget_tokens\": 9}}", 400, "thinking",
           "budget_tokens");
    refuse("{" ONE ", \"stop_sequences\": \"x\"}", 400, "stop_sequences", "array");
    refuse("{" ONE ", \"stop_sequences\": [\"\"]}", 400, "stop_sequences", "non-empty");
    refuse("{" ONE ", \"temperature\": 3}", 400, "temperature", "between");
    refuse("{" ONE ", \"output_config\": {\"format\": {\"type\": \"json_schema\"}}}", 400, "output_config",
           "schema");
    refuse("{" ONE ", \"output_config\": 1}", 400, "output_config", "object");
    refuse("{" ONE ", \"mcp_servers\": [{\"type\": \"url\", \"url\": \"https://x\", \"name\": \"x\"}]}", 400,
           "mcp_servers", "MCP");
    refuse("{" ONE ", \"container\": \"c1\"}", 400, "container", "container");
}
#undef ONE
#undef TOOL

/* The stream's events as (name, type, index) triples, checked to be framed
 * "event: NAME\ndata: JSON\n\n" with data.type == NAME. */
typedef struct ev {
    char name[32];
    int index;
    cJSON *data;
} ev;

static int events(const char *s, ev *out, int max)
{
    int n = 0;
    while (*s) {
        cr_assert(!strncmp(s, "event: ", 7), "%s", s);
        const char *nl = strchr(s, '\n');
        cr_assert(nl && nl - s - 7 < 32);
        cr_assert_lt(n, max);
        ev *e = &out[n++];
        snprintf(e->name, sizeof e->name, "%.*s", (int)(nl - s - 7), s + 7);
        cr_assert(!strncmp(nl + 1, "data: ", 6));
        const char *end = strstr(nl + 1, "\n\n");
        cr_assert(end);
        e->data = cJSON_ParseWithLength(nl + 7, (size_t)(end - nl - 7));
        cr_assert(e->data, "%.*s", (int)(end - nl - 7), nl + 7);
        cr_assert_str_eq(cJSON_GetObjectItem(e->data, "type")->valuestring, e->name);
        const cJSON *i = cJSON_GetObjectItem(e->data, "index");
        e->index = i ? i->valueint : -1;
        s = end + 2;
    }
    return n;
}

static const char *delta_str(const ev *e, const char *field)
{
    return cJSON_GetObjectItem(cJSON_GetObjectItem(e->data, "delta"), field)->valuestring;
}

Test(anthropic_response, a_stream_opens_fills_and_closes_each_block_in_turn)
{
    anthropic_stream st = {0};
    tool_call good = {"functions.f:0", "f", "{\"a\": 1.50}"}, bad = {"functions.g:1", "g", "{\"a\": "};
    char *parts[4];
    parts[0] = anthropic_event_delta(&st, "plan", 4, "", 0, NULL, 0);
    parts[1] = anthropic_event_delta(&st, " more", 5, "Hi\xff", 3, &good, 1);
    parts[2] = anthropic_event_delta(&st, "", 0, "", 0, &bad, 1);
    oai_usage u = {.prompt_tokens = 10, .completion_tokens = 7, .cached_tokens = 4};
    parts[3] = anthropic_event_end(&st, "tool_calls", NULL, &u);
    size_t n = 0;
    for (int i = 0; i < 4; i++)
        n += strlen(parts[i]);
    char *all = calloc(1, n + 1);
    for (int i = 0; i < 4; i++) {
        strcat(all, parts[i]);
        free(parts[i]);
    }
    ev e[32];
    int k = events(all, e, 32);
    const char *want[] = {"content_block_start", "content_block_delta", "content_block_delta",
                          "content_block_stop", "content_block_start", "content_block_delta",
                          "content_block_stop", "content_block_start", "content_block_delta",
                          "content_block_stop", "content_block_start", "content_block_delta",
                          "content_block_stop", "message_delta", "message_stop"};
    const int index[] = {0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, -1, -1};
    cr_assert_eq(k, 15);
    for (int i = 0; i < k; i++) {
        cr_assert_str_eq(e[i].name, want[i], "event %d", i);
        cr_assert_eq(e[i].index, index[i], "event %d", i);
    }
    cr_expect_str_eq(delta_str(&e[1], "thinking"), "plan");
    cr_expect_str_eq(delta_str(&e[2], "thinking"), " more");
    cr_expect_str_eq(delta_str(&e[5], "text"), "Hi\xef\xbf\xbd", "invalid bytes become U+FFFD");
    const cJSON *tu = cJSON_GetObjectItem(e[7].data, "content_block");
    cr_expect_str_eq(cJSON_GetObjectItem(tu, "type")->valuestring, "tool_use");
    cr_expect_str_eq(cJSON_GetObjectItem(tu, "id")->valuestring, "functions.f:0");
    cr_expect_str_eq(cJSON_GetObjectItem(tu, "name")->valuestring, "f");
    cr_expect_str_eq(delta_str(&e[8], "partial_json"), "{\"a\": 1.50}", "the model's own text");
    /* arguments that are no JSON object: shown as text, not a call */
    cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(e[10].data, "content_block"), "type")->valuestring,
                     "text");
    cr_expect(strstr(delta_str(&e[11], "text"), "{\"a\": "));
    cr_expect_str_eq(delta_str(&e[13], "stop_reason"), "tool_use");
    cr_expect(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(e[13].data, "delta"), "stop_sequence")));
    const cJSON *us = cJSON_GetObjectItem(e[13].data, "usage");
    cr_expect_eq(cJSON_GetObjectItem(us, "output_tokens")->valueint, 7);
    cr_expect_eq(cJSON_GetObjectItem(us, "input_tokens")->valueint, 6, "the prompt's tokens computed");
    cr_expect_eq(cJSON_GetObjectItem(us, "cache_read_input_tokens")->valueint, 4);
    for (int i = 0; i < k; i++)
        cJSON_Delete(e[i].data);
    free(all);
}

Test(anthropic_response, a_whole_message_holds_its_blocks_and_usage)
{
    tool_call calls[2] = {{"functions.f:0", "f", "{\"x\": [1, 2.0]}"}, {"functions.g:1", "g", "[1]"}};
    oai_choice c = {.text = "Done.", .text_len = 5, .reasoning = "Why", .reasoning_len = 3, .calls = calls,
                    .n_calls = 2};
    oai_meta m = {.id = "msg_3", .model = "kimi"};
    oai_usage u = {.prompt_tokens = 20, .completion_tokens = 6, .cached_tokens = 15};
    c.finish_reason = "tool_calls";
    char *s = anthropic_full_response(&m, &c, NULL, &u);
    cJSON *j = cJSON_Parse(s);
    cr_assert(j, "%s", s);
    cr_expect_str_eq(cJSON_GetObjectItem(j, "type")->valuestring, "message");
    cr_expect_str_eq(cJSON_GetObjectItem(j, "id")->valuestring, "msg_3");
    cr_expect_str_eq(cJSON_GetObjectItem(j, "role")->valuestring, "assistant");
    cr_expect_str_eq(cJSON_GetObjectItem(j, "model")->valuestring, "kimi");
    cr_expect_str_eq(cJSON_GetObjectItem(j, "stop_reason")->valuestring, "tool_use");
    const cJSON *content = cJSON_GetObjectItem(j, "content");
    cr_assert_eq(cJSON_GetArraySize(content), 3);
    const cJSON *b0 = cJSON_GetArrayItem(content, 0), *b1 = cJSON_GetArrayItem(content, 1),
                *b2 = cJSON_GetArrayItem(content, 2);
    cr_expect_str_eq(cJSON_GetObjectItem(b0, "thinking")->valuestring, "Why");
    cr_expect_str_eq(cJSON_GetObjectItem(b1, "type")->valuestring, "text");
    cr_expect(!strncmp(cJSON_GetObjectItem(b1, "text")->valuestring, "Done.[tool call g", 17), "the call "
              "that is not an object follows the text");
    cr_expect_str_eq(cJSON_GetObjectItem(b2, "type")->valuestring, "tool_use");
    cr_expect(strstr(s, "\"input\":{\"x\": [1, 2.0]}"), "the input is the model's text: %s", s);
    const cJSON *us = cJSON_GetObjectItem(j, "usage");
    cr_expect_eq(cJSON_GetObjectItem(us, "input_tokens")->valueint, 5);
    cr_expect_eq(cJSON_GetObjectItem(us, "cache_read_input_tokens")->valueint, 15);
    cr_expect_eq(cJSON_GetObjectItem(us, "output_tokens")->valueint, 6);
    cJSON_Delete(j);
    free(s);
    /* only a call that cannot be a tool_use: no tool_use block, so the turn just ends */
    c.calls = &calls[1];
    c.n_calls = 1;
    s = anthropic_full_response(&m, &c, NULL, &u);
    j = cJSON_Parse(s);
    cr_assert(j, "%s", s);
    cr_expect_str_eq(cJSON_GetObjectItem(j, "stop_reason")->valuestring, "end_turn");
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "content")), 2, "thinking and text: %s", s);
    cJSON_Delete(j);
    free(s);
    /* a byte token's 0 in the text is one U+FFFD, and the text goes on after it
     * (as the stream has it) */
    oai_choice z = {.text = "ab\0cd", .text_len = 5, .finish_reason = "stop"};
    s = anthropic_full_response(&m, &z, NULL, &u);
    j = cJSON_Parse(s);
    cr_assert(j, "%s", s);
    const cJSON *t = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "content"), 0), "text");
    cr_expect(cJSON_IsString(t) && !strcmp(t->valuestring, "ab\xef\xbf\xbd" "cd"), "%s", s);
    cJSON_Delete(j);
    free(s);
}

Test(anthropic_response, stop_reasons_and_error_types)
{
    cr_expect_str_eq(anthropic_stop_reason("length", NULL, 1), "max_tokens");
    cr_expect_str_eq(anthropic_stop_reason("stop", "END", 0), "stop_sequence");
    cr_expect_str_eq(anthropic_stop_reason("stop", NULL, 0), "end_turn");
    cr_expect_str_eq(anthropic_stop_reason("tool_calls", NULL, 1), "tool_use");
    cr_expect_str_eq(anthropic_stop_reason("tool_calls", NULL, 0), "end_turn", "no usable call");
    const struct { int status; const char *type; } t[] = {
        {400, "invalid_request_error"}, {401, "authentication_error"}, {404, "not_found_error"},
        {413, "request_too_large"}, {503, "overloaded_error"}, {500, "api_error"}};
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        oai_error err;
        oai_fail(&err, t[i].status, "x", NULL, NULL, "what \"went\" wrong");
        char *b = anthropic_error_body(&err), *event = anthropic_event_error(&err);
        cJSON *j = cJSON_Parse(b);
        const cJSON *e = cJSON_GetObjectItem(j, "error");
        cr_expect_str_eq(cJSON_GetObjectItem(e, "type")->valuestring, t[i].type);
        cr_expect_str_eq(cJSON_GetObjectItem(e, "message")->valuestring, "what \"went\" wrong");
        cr_expect(!strncmp(event, "event: error\ndata: ", 19) && strstr(event, b), "%s", event);
        cJSON_Delete(j);
        free(b);
        free(event);
    }
}
