/* OpenAI's Responses API without a socket: requests rewritten into the chat
 * request they say (the same prompt as the chat body of the same
 * conversation, rendered), refusals naming the field, and the output items
 * and stream events. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/chat_format.h"
#include "server/responses_request.h"
#include "server/responses_response.h"

static char *rendered(const oai_request *r)
{
    char *text;
    errbuf e;
    cr_assert_eq(chat_format_render(CHAT_TEMPLATE_K25, r->messages, r->tools, &r->copt, &text, NULL, &e), 0,
                 "%s", e.msg);
    return text;
}

Test(responses_request, a_conversation_renders_as_its_chat_body_does)
{
    const char *resp =
        "{\"model\": \"m\", \"max_output_tokens\": 9, \"instructions\": \"Be terse.\", \"store\": false, "
        "\"include\": [\"reasoning.encrypted_content\"], \"prompt_cache_key\": \"k\", \"parallel_tool_calls\": true, "
        "\"tools\": [{\"type\": \"function\", \"name\": \"get_weather\", \"description\": \"Weather\", \"strict\": false, "
        "\"parameters\": {\"type\": \"object\", \"properties\": {\"days\": {\"maximum\": 1.0}}}}, "
        "{\"type\": \"namespace\", \"name\": \"fs\", \"description\": \"Files\", \"tools\": [{\"type\": \"function\", "
        "\"name\": \"read\", \"parameters\": {\"type\": \"object\"}}]}, {\"type\": \"web_search\"}], "
        "\"input\": ["
        "{\"type\": \"message\", \"role\": \"developer\", \"content\": [{\"type\": \"input_text\", \"text\": \"Use tools.\"}]}, "
        "{\"role\": \"user\", \"content\": \"Weather in Paris?\"}, "
        "{\"type\": \"reasoning\", \"id\": \"rs_1\", \"summary\": [], \"content\": [{\"type\": \"reasoning_text\", "
        "\"text\": \"Ask.\"}]}, "
        "{\"type\": \"message\", \"role\": \"assistant\", \"content\": [{\"type\": \"output_text\", \"text\": \"Checking.\", "
        "\"annotations\": []}]}, "
        "{\"type\": \"function_call\", \"call_id\": \"functions.get_weather:0\", \"name\": \"get_weather\", "
        "\"arguments\": \"{\\\"days\\\": 1.0}\"}, "
        "{\"type\": \"function_call\", \"call_id\": \"functions.fs.read:1\", \"name\": \"read\", \"namespace\": \"fs\", "
        "\"arguments\": \"{}\"}, "
        "{\"type\": \"function_call_output\", \"call_id\": \"functions.get_weather:0\", \"output\": \"18 C\"}, "
        "{\"type\": \"function_call_output\", \"call_id\": \"functions.fs.read:1\", \"output\": [{\"type\": "
        "\"input_text\", \"text\": \"ok\"}]}, "
        "{\"role\": \"user\", \"content\": [{\"type\": \"input_text\", \"text\": \"And \"}, {\"type\": \"input_text\", "
        "\"text\": \"tomorrow?\"}]}]}";
    const char *chat =
        "{\"model\": \"m\", \"max_tokens\": 9, \"tools\": [{\"type\": \"function\", \"function\": {\"name\": "
        "\"get_weather\", \"description\": \"Weather\", \"parameters\": {\"type\": \"object\", \"properties\": "
        "{\"days\": {\"maximum\": 1.0}}}}}, {\"type\": \"function\", \"function\": {\"name\": \"fs.read\", "
        "\"parameters\": {\"type\": \"object\"}}}], \"messages\": ["
        "{\"role\": \"system\", \"content\": \"Be terse.\"}, {\"role\": \"system\", \"content\": \"Use tools.\"}, "
        "{\"role\": \"user\", \"content\": \"Weather in Paris?\"}, "
        "{\"role\": \"assistant\", \"content\": \"Checking.\", \"reasoning_content\": \"Ask.\", \"tool_calls\": "
        "[{\"id\": \"functions.get_weather:0\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\", "
        "\"arguments\": \"{\\\"days\\\": 1.0}\"}}, {\"id\": \"functions.fs.read:1\", \"type\": \"function\", "
        "\"function\": {\"name\": \"fs.read\", \"arguments\": \"{}\"}}]}, "
        "{\"role\": \"tool\", \"tool_call_id\": \"functions.get_weather:0\", \"content\": \"18 C\"}, "
        "{\"role\": \"tool\", \"tool_call_id\": \"functions.fs.read:1\", \"content\": \"ok\"}, "
        "{\"role\": \"user\", \"content\": \"And tomorrow?\"}]}";
    for (int thinking = 0; thinking < 2; thinking++) {
        chat_options o;
        chat_options_default(&o);
        o.thinking = thinking;
        oai_request a, b;
        oai_error err;
        cr_assert_eq(responses_request_parse(resp, strlen(resp), &o, &a, &err), 0, "%s", err.message);
        cr_assert_eq(oai_request_parse(OAI_CHAT, chat, strlen(chat), &o, &b, &err), 0, "%s", err.message);
        cr_assert_eq(a.api, API_RESPONSES);
        char *ta = rendered(&a), *tb = rendered(&b);
        cr_assert_str_eq(ta, tb);
        cr_assert_eq(a.max_tokens, 9);
        cr_assert_eq(cJSON_GetArraySize(a.tool_namespaces), 1);
        cr_assert_str_eq(a.tool_namespaces->child->valuestring, "fs");
        free(ta);
        free(tb);
        oai_request_free(&a);
        oai_request_free(&b);
    }
}

static void parse_ok(const char *body, oai_request *r)
{
    oai_error err;
    cr_assert_eq(responses_request_parse(body, strlen(body), NULL, r, &err), 0, "%s: %s", body, err.message);
}

Test(responses_request, fields_map_to_the_chat_request)
{
    oai_request r;
    parse_ok("{\"input\": \"hi\", \"temperature\": 0.5, \"top_p\": 0.9, \"stream\": true, \"parallel_tool_calls\": false, "
             "\"reasoning\": {\"effort\": \"none\", \"summary\": \"auto\"}, \"text\": {\"format\": {\"type\": "
             "\"json_schema\", \"name\": \"x\", \"schema\": {\"type\": \"object\"}, \"strict\": true}}}", &r);
    cr_expect_float_eq(r.temperature, 0.5f, 1e-6);
    cr_expect_float_eq(r.top_p, 0.9f, 1e-6);
    cr_expect(r.stream && r.one_call);
    cr_expect(!r.copt.thinking, "effort none: thinking off");
    cr_expect(r.reasoning_summary, "a summary asked for");
    cr_expect_not_null(r.schema, "text.format json_schema holds the answer");
    cr_expect_eq(cJSON_GetArraySize(r.messages), 1);
    oai_request_free(&r);
    parse_ok("{\"input\": \"hi\", \"reasoning\": {\"effort\": \"high\"}, \"tools\": [{\"type\": \"function\", "
             "\"name\": \"f\"}], \"tool_choice\": {\"type\": \"function\", \"name\": \"f\"}}", &r);
    cr_expect(r.copt.thinking);
    cr_expect(!r.reasoning_summary, "no summary asked for");
    cr_expect_str_eq(r.tool_choice_name, "f");
    oai_request_free(&r);
    parse_ok("{\"input\": \"hi\", \"tools\": [{\"type\": \"web_search_preview\"}, {\"type\": \"file_search\"}]}", &r);
    cr_expect_null(r.tools, "hosted tools are not declared to the model");
    oai_request_free(&r);
    /* max_tool_calls bounds the hosted tools' calls (none here); effort max turns thinking on */
    parse_ok("{\"input\": \"hi\", \"max_tool_calls\": 2, \"reasoning\": {\"effort\": \"max\"}}", &r);
    cr_expect(r.copt.thinking);
    oai_request_free(&r);
    parse_ok("{\"input\": \"hi\", \"tools\": [{\"type\": \"function\", \"name\": \"f\"}], \"tool_choice\": \"required\"}",
             &r);
    cr_expect(r.tool_choice_required);
    oai_request_free(&r);
}

Test(responses_request, media_in_a_call_output_stand_as_text)
{
    oai_request r;
    parse_ok("{\"input\": [{\"type\": \"function_call_output\", \"call_id\": \"c\", \"output\": [{\"type\": "
             "\"input_text\", \"text\": \"shot:\"}, {\"type\": \"input_image\", \"image_url\": \"data:x\"}]}]}", &r);
    char *text = rendered(&r);
    cr_expect(strstr(text, "shot:[an attachment (input_image) was here: this model reads text only]"), "%s", text);
    free(text);
    oai_request_free(&r);
}

static void refuse(const char *body, const char *param, const char *words)
{
    oai_request r;
    oai_error err;
    cr_assert_eq(responses_request_parse(body, strlen(body), NULL, &r, &err), -1, "accepted: %s", body);
    cr_assert_eq(err.status, 400, "%s", body);
    cr_assert_str_eq(err.param, param, "%s: %s", body, err.message);
    cr_assert(strstr(err.message, words), "%s: '%s' lacks '%s'", body, err.message, words);
    oai_request_free(&r);
}

Test(responses_request, refuses_bad_bodies_naming_the_field)
{
    refuse("{\"input\": ", "", "JSON");
    refuse("{}", "input", "'input'");
    refuse("{\"input\": []}", "input", "non-empty");
    refuse("{\"input\": 3}", "input", "'input'");
    refuse("{\"input\": \"x\", \"instructions\": 3}", "instructions", "string");
    refuse("{\"input\": [{\"role\": \"tool\", \"content\": \"x\"}]}", "input", "input[0].role");
    refuse("{\"input\": [{\"role\": \"user\", \"content\": [{\"type\": \"input_image\", \"image_url\": \"x\"}]}]}",
           "input", "input[0].content[0] is a part of type 'input_image'");
    refuse("{\"input\": [{\"type\": \"function_call\", \"name\": \"f\", \"arguments\": \"{}\"}]}", "input",
           "call_id");
    refuse("{\"input\": [{\"type\": \"function_call_output\", \"output\": \"x\"}]}", "input", "input[0].call_id");
    refuse("{\"input\": [{\"type\": \"item_reference\", \"id\": \"x\"}]}", "input", "keeps no responses");
    refuse("{\"input\": [{\"type\": \"computer_call\"}]}", "input", "'computer_call'");
    refuse("{\"input\": [{\"type\": \"reasoning\", \"summary\": [{\"type\": \"summary_text\"}]}]}", "input", "text");
    refuse("{\"input\": \"x\", \"previous_response_id\": \"resp_1\"}", "previous_response_id", "keeps none");
    refuse("{\"input\": \"x\", \"conversation\": \"c\"}", "conversation", "keeps none");
    refuse("{\"input\": \"x\", \"background\": true}", "background", "keeps");
    refuse("{\"input\": \"x\", \"prompt\": {\"id\": \"pmpt_1\"}}", "prompt", "stored prompt template");
    refuse("{\"input\": \"x\", \"tools\": [{\"type\": \"web_search\"}], \"tool_choice\": \"required\"}",
           "tool_choice", "every tool given is a hosted tool");
    refuse("{\"input\": \"x\", \"top_logprobs\": 3}", "top_logprobs", "chat/completions");
    refuse("{\"input\": \"x\", \"include\": [\"reasoning.encrypted_content\", \"message.output_text.logprobs\"]}",
           "include", "logprobs");
    refuse("{\"input\": \"x\", \"tools\": [{\"type\": \"custom\", \"name\": \"patch\"}]}", "tools", "'custom'");
    refuse("{\"input\": \"x\", \"tools\": [{\"type\": \"function\"}]}", "tools", "tools[0].name");
    refuse("{\"input\": \"x\", \"tools\": [{\"type\": \"namespace\", \"name\": \"a.b\", \"tools\": []}]}", "tools",
           "without dots");
    refuse("{\"input\": \"x\", \"tools\": [{\"type\": \"function\", \"name\": \"f\"}], \"tool_choice\": "
           "{\"type\": \"allowed_tools\"}}", "tool_choice", "'tool_choice'");
    refuse("{\"input\": \"x\", \"tool_choice\": \"required\"}", "tool_choice", "no 'tools'");
    refuse("{\"input\": \"x\", \"reasoning\": {\"effort\": 1}}", "reasoning", "effort");
    refuse("{\"input\": \"x\", \"reasoning\": {\"summary\": \"long\"}}", "reasoning", "reasoning.summary");
    refuse("{\"input\": \"x\", \"reasoning\": {\"summary\": true}}", "reasoning", "\"detailed\" or null");
    refuse("{\"input\": \"x\", \"text\": 1}", "text", "object");
    refuse("{\"input\": \"x\", \"text\": {\"format\": {\"type\": \"json_schema\"}}}", "text",
           "text.format of type json_schema needs a \"schema\"");
    refuse("{\"input\": \"x\", \"reasoning\": {\"effort\": \"bogus\"}}", "reasoning", "xhigh");
    refuse("{\"input\": \"x\", \"max_output_tokens\": 0}", "max_output_tokens", "'max_output_tokens'");
    refuse("{\"input\": \"x\", \"max_output_tokens\": 2.5}", "max_output_tokens", "integer");
}

/* The events of a stream: "event: TYPE\ndata: {type: TYPE, sequence_number:
 * n, ...}", numbered from `from` on. Returns how many; their data in out. */
static int events(const char *s, cJSON **out, int max, int from)
{
    int n = 0;
    while (*s) {
        cr_assert(!strncmp(s, "event: ", 7), "%s", s);
        const char *nl = strchr(s, '\n'), *end = strstr(s, "\n\n");
        cr_assert(nl && end && !strncmp(nl + 1, "data: ", 6));
        cr_assert_lt(n, max);
        cJSON *d = cJSON_ParseWithLength(nl + 7, (size_t)(end - nl - 7));
        cr_assert(d);
        cr_assert(!strncmp(cJSON_GetObjectItem(d, "type")->valuestring, s + 7, (size_t)(nl - s - 7)));
        cr_assert_eq(cJSON_GetObjectItem(d, "sequence_number")->valueint, from + n, "numbered in order");
        out[n++] = d;
        s = end + 2;
    }
    return n;
}

static const char *type_of(const cJSON *e)
{
    return cJSON_GetObjectItem(e, "type")->valuestring;
}

Test(responses_response, a_stream_adds_fills_and_ends_each_item_in_turn)
{
    cJSON *ns = cJSON_Parse("[\"fs\"]");
    oai_meta m = {.id = "resp_7", .model = "kimi", .created = 5};
    responses_out o;
    responses_out_init(&o, &m, ns, 1);
    tool_call calls[2] = {{"functions.fs.read:0", "fs.read", "{\"p\": 1}"}, {"functions.f:1", "f", "not json"}};
    char *parts[4] = {responses_event_start(&o), responses_add(&o, "plan", 4, "", 0, NULL, 0),
                      responses_add(&o, "!", 1, "Hi\xff", 3, calls, 2), NULL};
    oai_usage u = {.prompt_tokens = 10, .completion_tokens = 7, .cached_tokens = 4, .reasoning_tokens = 2};
    parts[3] = responses_event_end(&o, "length", &u);
    cJSON *e[64];
    int k = 0;
    for (int i = 0; i < 4; i++) {
        cr_assert_not_null(parts[i]);
        k += events(parts[i], e + k, 64 - k, k);
        free(parts[i]);
    }
    const char *want[] = {
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.reasoning_text.delta",
        "response.reasoning_text.delta", "response.reasoning_text.done", "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.incomplete"};
    cr_assert_eq(k, (int)(sizeof want / sizeof *want));
    for (int i = 0; i < k; i++)
        cr_assert_str_eq(type_of(e[i]), want[i], "event %d", i);
    cr_expect_str_eq(cJSON_GetObjectItem(e[6], "text")->valuestring, "plan!");
    cr_expect_str_eq(cJSON_GetObjectItem(e[11], "delta")->valuestring, "Hi\xef\xbf\xbd");
    const cJSON *call = cJSON_GetObjectItem(e[18], "item");
    cr_expect_str_eq(cJSON_GetObjectItem(call, "name")->valuestring, "read");
    cr_expect_str_eq(cJSON_GetObjectItem(call, "namespace")->valuestring, "fs");
    cr_expect_str_eq(cJSON_GetObjectItem(call, "call_id")->valuestring, "functions.fs.read:0");
    cr_expect_str_eq(cJSON_GetObjectItem(call, "arguments")->valuestring, "{\"p\": 1}");
    cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(e[22], "item"), "arguments")->valuestring, "not json",
                     "arguments are the model's text, JSON or not");
    cr_expect_null(cJSON_GetObjectItem(cJSON_GetObjectItem(e[22], "item"), "namespace"));
    /* the arguments' done event names the function too (the SDK's type needs it) */
    cr_expect_str_eq(cJSON_GetObjectItem(e[17], "name")->valuestring, "read");
    cr_expect_str_eq(cJSON_GetObjectItem(e[17], "namespace")->valuestring, "fs");
    cr_expect_str_eq(cJSON_GetObjectItem(e[21], "name")->valuestring, "f");
    const cJSON *r = cJSON_GetObjectItem(e[k - 1], "response");
    cr_expect_str_eq(cJSON_GetObjectItem(r, "status")->valuestring, "incomplete");
    cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "incomplete_details"), "reason")->valuestring,
                     "max_output_tokens");
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(r, "output")), 4);
    const cJSON *out = cJSON_GetObjectItem(r, "output");
    cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(out, 2), "status")->valuestring, "completed");
    cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(out, 3), "status")->valuestring, "incomplete",
                     "the item the limit cut");
    cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(e[22], "item"), "status")->valuestring, "incomplete");
    const cJSON *us = cJSON_GetObjectItem(r, "usage");
    cr_expect_eq(cJSON_GetObjectItem(us, "input_tokens")->valueint, 10);
    cr_expect_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(us, "input_tokens_details"), "cached_tokens")->valueint, 4);
    cr_expect_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(us, "output_tokens_details"), "reasoning_tokens")->valueint,
                 2);
    cr_expect_eq(cJSON_GetObjectItem(us, "total_tokens")->valueint, 17);
    /* every item's added and done events carry its id and index */
    cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(e[2], "item"), "id")->valuestring, "rs_resp_7_0");
    cr_expect_eq(cJSON_GetObjectItem(e[11], "output_index")->valueint, 1);
    for (int i = 0; i < k; i++)
        cJSON_Delete(e[i]);
    responses_out_free(&o);
    cJSON_Delete(ns);
}

/* The response object repeats the request's settings, as OpenAI's does (its
 * SDKs' types have each field): what the request set, else null or the
 * default; store false (no response is kept). */
Test(responses_response, the_response_repeats_the_requests_settings)
{
    oai_meta m = {.id = "resp_3", .model = "kimi", .created = 5};
    const char *bodies[2] = {"{\"input\": \"hi\", \"instructions\": \"Be brief.\", \"temperature\": 0.5, "
                             "\"tools\": [{\"type\": \"function\", \"name\": \"f\"}], \"tool_choice\": \"required\", "
                             "\"metadata\": {\"k\": \"v\"}, \"max_output_tokens\": 9}",
                             "{\"input\": \"hi\"}"};
    for (int b = 0; b < 2; b++) {
        oai_request r;
        parse_ok(bodies[b], &r);
        cr_assert_not_null(r.response_settings);
        responses_out o;
        responses_out_init(&o, &m, NULL, 0);
        o.settings = r.response_settings;
        char *body = responses_body(&o, "stop", &(oai_usage){.prompt_tokens = 1});
        cJSON *resp = cJSON_Parse(body);
        cr_assert_not_null(resp, "%s", body);
        const cJSON *t = cJSON_GetObjectItem(resp, "temperature"), *tools = cJSON_GetObjectItem(resp, "tools");
        if (!b) {
            cr_expect_str_eq(cJSON_GetObjectItem(resp, "instructions")->valuestring, "Be brief.");
            cr_expect(cJSON_IsNumber(t) && t->valuedouble == 0.5);
            cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(tools, 0), "name")->valuestring, "f");
            cr_expect_str_eq(cJSON_GetObjectItem(resp, "tool_choice")->valuestring, "required");
            cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(resp, "metadata"), "k")->valuestring, "v");
            cr_expect_eq(cJSON_GetObjectItem(resp, "max_output_tokens")->valueint, 9);
        } else {
            cr_expect(cJSON_IsNull(cJSON_GetObjectItem(resp, "instructions")));
            cr_expect(cJSON_IsNull(t));
            cr_expect(cJSON_IsArray(tools) && cJSON_GetArraySize(tools) == 0);
            cr_expect_str_eq(cJSON_GetObjectItem(resp, "tool_choice")->valuestring, "auto");
            cr_expect(cJSON_IsTrue(cJSON_GetObjectItem(resp, "parallel_tool_calls")));
            cr_expect_str_eq(cJSON_GetObjectItem(resp, "truncation")->valuestring, "disabled");
            cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(resp, "text"), "format"),
                                                 "type")->valuestring, "text");
        }
        cr_expect(cJSON_IsFalse(cJSON_GetObjectItem(resp, "store")));
        cr_expect(cJSON_IsNull(cJSON_GetObjectItem(resp, "previous_response_id")));
        cr_expect_str_eq(cJSON_GetObjectItem(resp, "status")->valuestring, "completed");
        cJSON_Delete(resp);
        free(body);
        responses_out_free(&o);
        oai_request_free(&r);
    }
}

/* reasoning.summary asked for: the reasoning comes as the item's summary,
 * streamed as the API streams a summary's part and text; the rest as ever;
 * the whole response holds the same item. */
Test(responses_response, a_summary_asked_for_carries_the_reasoning)
{
    oai_meta m = {.id = "resp_9", .model = "kimi", .created = 5};
    for (int stream = 1; stream >= 0; stream--) {
        responses_out o;
        responses_out_init(&o, &m, NULL, stream);
        o.summary = 1;
        char *parts[4] = {stream ? responses_event_start(&o) : strdup(""), responses_add(&o, "th", 2, "", 0, NULL, 0),
                          responses_add(&o, "ink", 3, "Yes.", 4, NULL, 0), NULL};
        oai_usage u = {.prompt_tokens = 3, .completion_tokens = 4};
        parts[3] = stream ? responses_event_end(&o, "stop", &u) : responses_body(&o, "stop", &u);
        const cJSON *item;
        cJSON *e[32], *whole = NULL;
        int k = 0;
        if (stream) {
            for (int i = 0; i < 4; i++) {
                cr_assert_not_null(parts[i]);
                k += events(parts[i], e + k, 32 - k, k);
            }
            const char *want[] = {
                "response.created", "response.in_progress", "response.output_item.added",
                "response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done", "response.output_item.done",
                "response.output_item.added", "response.content_part.added", "response.output_text.delta",
                "response.output_text.done", "response.content_part.done", "response.output_item.done",
                "response.completed"};
            cr_assert_eq(k, (int)(sizeof want / sizeof *want));
            for (int i = 0; i < k; i++)
                cr_assert_str_eq(type_of(e[i]), want[i], "event %d", i);
            cr_expect_eq(cJSON_GetObjectItem(e[5], "summary_index")->valueint, 0);
            cr_expect_str_eq(cJSON_GetObjectItem(e[5], "delta")->valuestring, "ink");
            cr_expect_str_eq(cJSON_GetObjectItem(e[6], "text")->valuestring, "think");
            cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(e[7], "part"), "type")->valuestring,
                             "summary_text");
            item = cJSON_GetObjectItem(e[8], "item");
        } else {
            whole = cJSON_Parse(parts[3]);
            cr_assert_not_null(whole);
            item = cJSON_GetArrayItem(cJSON_GetObjectItem(whole, "output"), 0);
        }
        const cJSON *summary = cJSON_GetObjectItem(item, "summary");
        cr_expect_eq(cJSON_GetArraySize(summary), 1);
        cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(summary, 0), "type")->valuestring, "summary_text");
        cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(summary, 0), "text")->valuestring, "think");
        cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(item, "content")), 0, "the text once, as the summary");
        for (int i = 0; i < k; i++)
            cJSON_Delete(e[i]);
        cJSON_Delete(whole);
        for (int i = 0; i < 4; i++)
            free(parts[i]);
        responses_out_free(&o);
    }
}

Test(responses_response, a_whole_response_holds_the_items_as_a_stream_would)
{
    oai_meta m = {.id = "resp_3", .model = "kimi", .created = 5};
    responses_out o;
    responses_out_init(&o, &m, NULL, 0);
    tool_call call = {"functions.f:0", "f", "{}"};
    char *a = responses_add(&o, "Why", 3, "", 0, NULL, 0), *b = responses_add(&o, "", 0, "Done.", 5, &call, 1);
    cr_expect_str_eq(a, "", "nothing streamed");
    cr_expect_str_eq(b, "");
    free(a);
    free(b);
    oai_usage u = {.prompt_tokens = 3, .completion_tokens = 2};
    char *s = responses_body(&o, "tool_calls", &u);
    cJSON *j = cJSON_Parse(s);
    cr_assert(j, "%s", s);
    cr_expect_str_eq(cJSON_GetObjectItem(j, "object")->valuestring, "response");
    cr_expect_str_eq(cJSON_GetObjectItem(j, "status")->valuestring, "completed");
    cr_expect(cJSON_IsNull(cJSON_GetObjectItem(j, "incomplete_details")));
    const cJSON *out = cJSON_GetObjectItem(j, "output");
    cr_assert_eq(cJSON_GetArraySize(out), 3);
    const char *types[] = {"reasoning", "message", "function_call"};
    for (int i = 0; i < 3; i++)
        cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(out, i), "type")->valuestring, types[i]);
    const cJSON *msg = cJSON_GetArrayItem(out, 1);
    cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(msg, "content"), 0), "text")
                         ->valuestring, "Done.");
    cJSON_Delete(j);
    free(s);
    oai_error err;
    oai_fail(&err, 500, "server_error", NULL, NULL, "disk \"gone\"");
    char *ev = responses_event_error(&o, &err);
    cr_expect(!strncmp(ev, "event: error\ndata: ", 19) && strstr(ev, "disk \\\"gone\\\""), "%s", ev);
    free(ev);
    responses_out_free(&o);
}
