/* The server's parts that need no socket: request validation (status, field
 * named), the stop-string filter against a one-shot reference over every way
 * of cutting the text, UTF-8 cleaning of what is sent back, and the
 * latency histograms of /metrics. */
#include <criterion/criterion.h>
#include <netdb.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/json_alloc.h"
#include "core/text/utf8.h"
#include "server/api_keys.h"
#include "server/json_out.h"
#include "server/llama_request.h"
#include "server/serve_metrics.h"
#include "server/oai_request.h"
#include "server/oai_response.h"
#include "server/request_origin.h"
#include "server/stop_filter.h"
#include "testutil.h"

static void refuse(oai_kind kind, const char *body, const char *param)
{
    oai_request r;
    oai_error err;
    cr_assert_eq(oai_request_parse(kind, body, strlen(body), NULL, &r, &err), -1, "accepted: %s", body);
    cr_assert_eq(err.status, 400, "%s", body);
    cr_assert_str_eq(err.param, param, "%s: %s", body, err.message);
    cr_assert(err.message[0]);
    oai_request_free(&r);
}

Test(server_request, refuses_bad_bodies_naming_the_field)
{
    refuse(OAI_CHAT, "{\"messages\": [", "");
    refuse(OAI_CHAT, "[1, 2]", "");
    refuse(OAI_CHAT, "{}", "messages");
    refuse(OAI_CHAT, "{\"messages\": []}", "messages");
    refuse(OAI_CHAT, "{\"messages\": [{\"content\": \"x\"}]}", "messages");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"model\": 3}", "model");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"temperature\": 2.5}", "temperature");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"top_p\": 0}", "top_p");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"max_tokens\": 1.5}", "max_tokens");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"max_completion_tokens\": 0}", "max_completion_tokens");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"n\": 17}", "n");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"n\": 1.5}", "n");
    refuse(OAI_COMPLETION, "{\"prompt\": \"a\", \"n\": 2, \"echo\": true}", "n");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"stream\": \"yes\"}", "stream");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"stream_options\": {}}", "stream_options");
    refuse(OAI_COMPLETION, "{\"prompt\": \"a\", \"stream\": false, \"stream_options\": {\"include_usage\": true}}",
           "stream_options");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"stop\": [\"a\", 1]}", "stop");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"stop\": [\"a\",\"b\",\"c\",\"d\",\"e\",\"f\","
           "\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\",\"q\"]}", "stop");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"tools\": [{\"type\": \"function\"}]}", "tools");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"tool_choice\": \"always\"}", "tool_choice");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"parallel_tool_calls\": 0}", "parallel_tool_calls");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"reasoning_effort\": 1}", "reasoning_effort");
    /* a call asked for: tools needed, not with a JSON response_format */
#define TOOLS "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]"
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"tool_choice\": \"required\"}", "tool_choice");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], " TOOLS ", \"tool_choice\": {\"type\": "
           "\"function\"}}", "tool_choice");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], " TOOLS ", \"tool_choice\": {\"type\": "
           "\"tool\", \"function\": {\"name\": \"f\"}}}", "tool_choice");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"tools\": [{\"type\": \"retrieval\", "
           "\"function\": {\"name\": \"f\"}}]}", "tools");
    /* legacy function calls and spoken answers: asked for, not made */
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"functions\": [{\"name\": \"f\"}]}",
           "functions");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"function_call\": \"auto\"}", "function_call");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"audio\": {\"voice\": \"alloy\"}}", "audio");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"modalities\": [\"text\", \"audio\"]}",
           "modalities");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], " TOOLS ", \"thinking\": false, "
           "\"tool_choice\": \"required\", \"response_format\": {\"type\": \"json_object\"}}",
           "response_format");
#undef TOOLS
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"thinking\": 1}", "thinking");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"top_k\": 2.5}", "top_k");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"top_k\": -2}", "top_k");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"min_p\": 1.5}", "min_p");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"min_p\": 1}", "min_p");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"repetition_penalty\": 0}",
           "repetition_penalty");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"repeat_penalty\": \"1\"}",
           "repeat_penalty");
    /* what json.loads refuses: data after the object (it was dropped) and
     * numbers outside the JSON grammar (read as if valid) */
    refuse(OAI_COMPLETION, "{\"prompt\": \"a\"} {\"prompt\": \"b\"}", "");
    refuse(OAI_COMPLETION, "{\"prompt\": \"a\", \"max_tokens\": 01}", "");
    refuse(OAI_COMPLETION, "{\"prompt\": \"a\", \"temperature\": 1.}", "");
    refuse(OAI_COMPLETION, "{\"prompt\": \"a\tb\"}", "");    /* a raw tab in a string */
    /* nesting past the parser's limit is named as such, not as invalid JSON */
    for (int depth = 1000; depth <= 1001; depth++) {
        char *deep = malloc(2 * (size_t)depth + 20);
        int n = sprintf(deep, "{\"prompt\": ");
        for (int i = 1; i < depth; i++)
            deep[n++] = '[';
        for (int i = 1; i < depth; i++)
            deep[n++] = ']';
        strcpy(deep + n, "}");
        oai_request r;
        oai_error err;
        cr_assert_eq(oai_request_parse(OAI_COMPLETION, deep, strlen(deep), NULL, &r, &err), -1);
        cr_expect(strstr(err.message, depth > 1000 ? "deeper than 1000 levels (byte 1010)"
                                                   : "'prompt'"), "%d: %s", depth, err.message);
        oai_request_free(&r);
        free(deep);
    }
    /* a repeated key has no agreed meaning (first or last wins, by client) */
    refuse(OAI_COMPLETION, "{\"prompt\": \"a\", \"max_tokens\": 2, \"max_tokens\": 3}", "");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\", \"content\": \"b\"}]}", "");
    /* what this server cannot do is refused, not silently left out */
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"logprobs\": \"yes\"}", "logprobs");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"top_logprobs\": 2}", "top_logprobs");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"logprobs\": true, \"top_logprobs\": 21}",
           "top_logprobs");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"logprobs\": true, \"top_logprobs\": 1.5}",
           "top_logprobs");
    refuse(OAI_COMPLETION, "{\"prompt\": \"a\", \"logprobs\": 21}", "logprobs");
    refuse(OAI_COMPLETION, "{\"prompt\": \"a\", \"logprobs\": true}", "logprobs");
    refuse(OAI_COMPLETION, "{\"prompt\": \"a\", \"logprobs\": 2, \"top_logprobs\": 2}", "top_logprobs");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"presence_penalty\": 2.5}",
           "presence_penalty");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"frequency_penalty\": \"1\"}",
           "frequency_penalty");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"logit_bias\": {\"5\": 101}}",
           "logit_bias");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"logit_bias\": {\"05\": 1}}",
           "logit_bias");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"logit_bias\": {\"-5\": 1}}",
           "logit_bias");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"logit_bias\": {\"a\": 1}}",
           "logit_bias");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"logit_bias\": [5]}", "logit_bias");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"response_format\": "
           "{\"type\": \"json_schema\", \"json_schema\": {}}}", "response_format");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"response_format\": \"text\"}",
           "response_format");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"echo\": true}", "echo");
    refuse(OAI_COMPLETION, "{\"prompt\": \"a\", \"echo\": 1}", "echo");
    refuse(OAI_COMPLETION, "{\"prompt\": \"a\", \"max_tokens\": 0}", "max_tokens");
    refuse(OAI_COMPLETION, "{\"prompt\": \"a\", \"best_of\": 3}", "best_of");
    refuse(OAI_COMPLETION, "{\"prompt\": \"a\", \"suffix\": \"end\"}", "suffix");
    refuse(OAI_COMPLETION, "{\"prompt\": 12}", "prompt");
    refuse(OAI_COMPLETION, "{\"prompt\": [\"a\", 3]}", "prompt");
    refuse(OAI_COMPLETION, "{\"prompt\": [[1, 2], [-3]]}", "prompt");
    refuse(OAI_COMPLETION, "{\"prompt\": [\"a\", \"b\"], \"stream\": true}", "stream");
    refuse(OAI_COMPLETION, "{\"prompt\": [1, -2]}", "prompt");
    refuse(OAI_COMPLETION, "{\"prompt\": [1, 2.5]}", "prompt");
    refuse(OAI_COMPLETION, "{\"prompt\": []}", "prompt");
    refuse(OAI_COMPLETION, "{}", "prompt");
    /* a NUL would end the C string: the text after it would be lost unseen */
    refuse(OAI_COMPLETION, "{\"prompt\": \"a\\u0000b\"}", "");
    /* cJSON reads a \u escape without four hex digits as U+0000: the same cut */
    refuse(OAI_COMPLETION, "{\"prompt\": \"a\\u12g4b\"}", "");
    refuse(OAI_COMPLETION, "{\"prompt\": \"a\\u\"}", "");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"\\\\\\u0000\"}]}", "");
    /* JSON is UTF-8 (RFC 8259): a stray byte, an overlong form, a surrogate */
    refuse(OAI_COMPLETION, "{\"prompt\": \"a\xff\"}", "");
    refuse(OAI_COMPLETION, "{\"prompt\": \"\xc0\xaf\"}", "");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"\xed\xa0\x80\"}]}", "");
    /* the model reads text only: an image would become a placeholder */
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": "
           "\"what is this?\"}, {\"type\": \"image_url\", \"image_url\": {\"url\": \"data:,\"}}]}]}",
           "messages");
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"user\", "
           "\"content\": [{\"type\": \"video\"}]}]}", "messages");
}

/* A backslash escaped before "u0000" makes it text, not a NUL. */
/* A completions batch: strings or token ids, each prompt's body the batch's
 * with that prompt alone; past OAI_MAX_BATCH prompts refused. */
/* A body the server could not parse for want of memory is answered 500 "out
 * of memory", never a 400 that blames the body: each allocation of the
 * parse fails in turn until the request parses whole. */
Test(server_request, memory_running_out_is_not_bad_json)
{
    json_alloc_install();
    const char *body = "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": "
                       "\"hi\"}], \"temperature\": 0.5, \"max_tokens\": 3, \"stop\": [\"a\", \"b\"]}";
    int n, failed = 0;
    for (n = 1; n < 10000; n++) {
        oai_request r;
        oai_error err = {0};
        json_alloc_fail_at(n);
        int rc = oai_request_parse(OAI_CHAT, body, strlen(body), NULL, &r, &err);
        json_alloc_fail_at(0);
        if (rc == 0) {
            oai_request_free(&r);
            break;
        }
        failed++;
        cr_expect_eq(err.status, 500, "allocation %d failed: %d %s", n, err.status, err.message);
        cr_expect(strstr(err.message, "out of memory"), "allocation %d: %s", n, err.message);
    }
    cr_expect_lt(n, 10000, "the request never parsed");
    cr_expect_gt(failed, 10, "only %d allocations failed", failed);
}

Test(server_request, a_batch_of_prompts_as_requests_of_their_own)
{
    const char *body = "{\"prompt\": [\"first\", [7, 8, 9]], \"max_tokens\": 3, \"echo\": true}";
    oai_request r, one;
    oai_error err;
    cr_assert_eq(oai_request_parse(OAI_COMPLETION, body, strlen(body), NULL, &r, &err), 0, "%s",
                 err.message);
    cr_expect_eq(r.batch_n, 2);
    cr_expect(!r.prompt && !r.prompt_ids);
    for (int i = 0; i < 2; i++) {
        char *b = oai_batch_body(&r, i);
        cr_assert_not_null(b);
        cr_assert_eq(oai_request_parse(OAI_COMPLETION, b, strlen(b), NULL, &one, &err), 0, "%s: %s",
                     b, err.message);
        cr_expect_eq(one.batch_n, 0, "%s", b);
        cr_expect_eq(one.max_tokens, 3, "%s", b);
        cr_expect_eq(one.echo, 1, "%s", b);
        if (i == 0)
            cr_expect(one.prompt && !strcmp(one.prompt, "first"), "%s", b);
        else
            cr_expect(one.prompt_ids && cJSON_GetArraySize(one.prompt_ids) == 3, "%s", b);
        oai_request_free(&one);
        free(b);
    }
    oai_request_free(&r);
    /* one prompt in an array is a prompt, not a batch */
    body = "{\"prompt\": [[7, 8]]}";
    cr_assert_eq(oai_request_parse(OAI_COMPLETION, body, strlen(body), NULL, &r, &err), 0);
    cr_expect(r.batch_n == 0 && r.prompt_ids && cJSON_GetArraySize(r.prompt_ids) == 2);
    oai_request_free(&r);
    char big[16 + 4 * (OAI_MAX_BATCH + 1)];
    int n = sprintf(big, "{\"prompt\": [");
    for (int i = 0; i <= OAI_MAX_BATCH; i++)
        n += sprintf(big + n, "%s\"a\"", i ? "," : "");
    strcpy(big + n, "]}");
    refuse(OAI_COMPLETION, big, "prompt");
}

Test(server_request, an_escaped_backslash_before_u0000_is_text)
{
    const char *body = "{\"prompt\": \"a\\\\u0000b\"}";
    oai_request r;
    oai_error err;
    cr_assert_eq(oai_request_parse(OAI_COMPLETION, body, strlen(body), NULL, &r, &err), 0, "%s",
                 err.message);
    cr_expect_str_eq(r.prompt, "a\\u0000b");
    oai_request_free(&r);
}

Test(server_request, takes_every_supported_field)
{
    const char *body = "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
                       "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], "
                       "\"temperature\": 0, \"top_p\": 0.5, \"max_tokens\": 7, \"seed\": -3, "
                       "\"stop\": [\"x\", \"\", \"yz\"], \"stream\": true, "
                       "\"stream_options\": {\"include_usage\": true}, "
                       "\"chat_template_kwargs\": {\"thinking\": false}, \"parallel_tool_calls\": false, "
                       "\"modalities\": [\"text\"], \"functions\": [], \"function_call\": \"none\", \"unknown\": {}}";
    oai_request r;
    oai_error err;
    cr_assert_eq(oai_request_parse(OAI_CHAT, body, strlen(body), NULL, &r, &err), 0, "%s", err.message);
    cr_assert_str_eq(r.model, "m");
    cr_assert_not_null(r.tools);
    cr_assert(r.one_call, "parallel_tool_calls false: the answer ends with its first call");
    oai_request_free(&r);
    const char *effort = "{\"messages\": [{\"role\": \"user\"}], \"thinking\": true, \"reasoning_effort\": \"none\"}";
    cr_assert_eq(oai_request_parse(OAI_CHAT, effort, strlen(effort), NULL, &r, &err), 0, "%s", err.message);
    cr_assert(!r.copt.thinking, "reasoning_effort none: thinking off");
    oai_request_free(&r);
    const char *high = "{\"messages\": [{\"role\": \"user\"}], \"thinking\": false, \"reasoning_effort\": \"high\"}";
    cr_assert_eq(oai_request_parse(OAI_CHAT, high, strlen(high), NULL, &r, &err), 0, "%s", err.message);
    cr_assert(r.copt.thinking, "reasoning_effort high: thinking on");
    oai_request_free(&r);
    cr_assert_eq(oai_request_parse(OAI_CHAT, body, strlen(body), NULL, &r, &err), 0, "%s", err.message);
    cr_assert_eq(r.temperature, 0.0f);
    cr_assert_eq(r.top_p, 0.5f);
    cr_assert_eq(r.max_tokens, 7);
    cr_assert(r.has_seed && r.seed == (uint64_t)-3);
    cr_assert_eq(r.n_stop, 2);      /* the empty stop string is dropped */
    cr_assert_str_eq(r.stop[1], "yz");
    cr_assert(r.stream && r.include_usage);
    cr_assert_eq(r.copt.thinking, 0);
    oai_request_free(&r);
    const char *none = "{\"messages\": [{\"role\": \"user\"}], \"tools\": [{\"type\": \"function\", "
                       "\"function\": {\"name\": \"f\"}}], \"tool_choice\": \"none\"}";
    cr_assert_eq(oai_request_parse(OAI_CHAT, none, strlen(none), NULL, &r, &err), 0);
    cr_assert_null(r.tools, "tool_choice none declares no tools");
    oai_request_free(&r);
    /* a tool's type, and a named tool_choice's, may be left out (vLLM's "function") */
    const char *untyped = "{\"messages\": [{\"role\": \"user\"}], \"tools\": [{\"function\": {\"name\": "
                          "\"f\"}}], \"tool_choice\": {\"function\": {\"name\": \"f\"}}}";
    cr_assert_eq(oai_request_parse(OAI_CHAT, untyped, strlen(untyped), NULL, &r, &err), 0, "%s", err.message);
    cr_assert(r.tools && r.tool_choice_name && !strcmp(r.tool_choice_name, "f"));
    oai_request_free(&r);
    cr_assert_eq(oai_request_parse(OAI_CHAT, none, strlen(none), NULL, &r, &err), 0);
    cr_assert(!r.one_call, "absent: calls in parallel");
    cr_assert_eq(r.temperature, -1.0f, "absent: the server's default");
    oai_request_free(&r);
    const char *tiny = "{\"messages\": [{\"role\": \"user\"}], \"top_p\": 1e-50}";
    cr_assert_eq(oai_request_parse(OAI_CHAT, tiny, strlen(tiny), NULL, &r, &err), 0, "%s", err.message);
    cr_assert(r.top_p > 0, "a top_p below float's range is the likeliest token, not the default");
    oai_request_free(&r);
    /* with thinking on, a schema or a forced call holds the answer after the
     * reasoning (serve_job.c): both taken */
    const char *thinking[] = {
        "{\"messages\": [{\"role\": \"user\"}], \"thinking\": true, \"response_format\": "
        "{\"type\": \"json_object\"}}",
        "{\"messages\": [{\"role\": \"user\"}], \"thinking\": true, \"tools\": [{\"type\": "
        "\"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": \"required\"}"};
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(oai_request_parse(OAI_CHAT, thinking[i], strlen(thinking[i]), NULL, &r, &err), 0,
                     "%s: %s", thinking[i], err.message);
        cr_expect(r.copt.thinking && (r.schema || r.tool_choice_required), "%s", thinking[i]);
        oai_request_free(&r);
    }
    /* max_completion_tokens replaced max_tokens: it wins, in either order */
    const char *both[] = {
        "{\"messages\": [{\"role\": \"user\"}], \"max_tokens\": 9, \"max_completion_tokens\": 4}",
        "{\"messages\": [{\"role\": \"user\"}], \"max_completion_tokens\": 4, \"max_tokens\": 9}"};
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(oai_request_parse(OAI_CHAT, both[i], strlen(both[i]), NULL, &r, &err), 0);
        cr_expect_eq(r.max_tokens, 4, "%s", both[i]);
        oai_request_free(&r);
    }
    refuse(OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}], \"max_tokens\": 0.5, "
           "\"max_completion_tokens\": 4}", "max_tokens");
    /* the sampling extensions; the fields this server cannot honour, when they
     * ask for nothing (as clients send them by default) */
    const char *ext = "{\"prompt\": \"a\", \"top_k\": 40, \"min_p\": 0.05, \"repeat_penalty\": 1.3, "
                      "\"repetition_penalty\": 1.1, \"logprobs\": null, \"top_logprobs\": 0, "
                      "\"presence_penalty\": 0, \"frequency_penalty\": 0.0, \"logit_bias\": {}, "
                      "\"response_format\": {\"type\": \"text\"}, \"echo\": false, \"best_of\": 1, "
                      "\"suffix\": \"\"}";
    cr_assert_eq(oai_request_parse(OAI_COMPLETION, ext, strlen(ext), NULL, &r, &err), 0, "%s",
                 err.message);
    cr_expect_eq(r.top_k, 40);
    cr_expect_eq(r.min_p, 0.05f);
    cr_expect_eq(r.repeat_penalty, 1.1f, "repetition_penalty wins over repeat_penalty");
    oai_request_free(&r);
    const char *off = "{\"messages\": [{\"role\": \"user\"}], \"top_k\": -1, \"logprobs\": false}";
    cr_assert_eq(oai_request_parse(OAI_CHAT, off, strlen(off), NULL, &r, &err), 0, "%s", err.message);
    cr_expect_eq(r.top_k, 0, "-1 turns top_k off, as in vLLM");
    cr_expect_eq(r.min_p, -1.0f, "absent: the server's default");
    cr_expect_eq(r.repeat_penalty, 0.0f, "absent: the server's default");
    cr_expect_eq(r.logprobs, 0);
    oai_request_free(&r);
    /* penalties, biases and logprobs as OpenAI takes them */
    const char *chat = "{\"messages\": [{\"role\": \"user\"}], \"logprobs\": true, \"top_logprobs\": 3, "
                       "\"presence_penalty\": 0.5, \"frequency_penalty\": -1, "
                       "\"logit_bias\": {\"5\": -100, \"0\": 2.5}}";
    cr_assert_eq(oai_request_parse(OAI_CHAT, chat, strlen(chat), NULL, &r, &err), 0, "%s", err.message);
    cr_expect(r.logprobs == 1 && r.top_logprobs == 3);
    cr_expect(r.presence_penalty == 0.5f && r.frequency_penalty == -1.0f);
    cr_assert_eq(r.n_bias, 2);
    cr_expect(r.bias[0].id == 5 && r.bias[0].bias == -100.0f && r.bias[1].id == 0 &&
              r.bias[1].bias == 2.5f);
    oai_request_free(&r);
    const char *cmpl = "{\"prompt\": \"a\", \"logprobs\": 0}";
    cr_assert_eq(oai_request_parse(OAI_COMPLETION, cmpl, strlen(cmpl), NULL, &r, &err), 0, "%s",
                 err.message);
    cr_expect(r.logprobs == 1 && r.top_logprobs == 0, "completions' 0: the chosen token's only");
    oai_request_free(&r);
    const char *id_forms[] = {"{\"prompt\": [5, 0, 7]}", "{\"prompt\": [[5, 0, 7]]}"};
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(oai_request_parse(OAI_COMPLETION, id_forms[i], strlen(id_forms[i]), NULL, &r, &err),
                     0, "%s", err.message);
        cr_expect(r.prompt == NULL && cJSON_GetArraySize(r.prompt_ids) == 3, "%s", id_forms[i]);
        oai_request_free(&r);
    }
    const char *json = "{\"messages\": [{\"role\": \"user\"}], \"thinking\": false, "
                       "\"response_format\": {\"type\": \"json_object\"}}";
    cr_assert_eq(oai_request_parse(OAI_CHAT, json, strlen(json), NULL, &r, &err), 0, "%s", err.message);
    cr_expect(r.schema != NULL);
    oai_request_free(&r);
    const char *score = "{\"prompt\": \"a\", \"echo\": true, \"max_tokens\": 0, \"logprobs\": 1}";
    cr_assert_eq(oai_request_parse(OAI_COMPLETION, score, strlen(score), NULL, &r, &err), 0, "%s",
                 err.message);
    cr_expect(r.echo && r.score_only, "echo with max_tokens 0: the prompt scored, nothing generated");
    oai_request_free(&r);
}

/* llama.cpp's /completion body in OpenAI's words: n_predict, n_probs, seed
 * -1, logit_bias pairs with a ban, return_tokens; what it cannot hold refused. */
Test(server_request, llama_completion_translated)
{
    oai_request r;
    oai_error err;
    const char *body = "{\"prompt\": \"hi\", \"n_predict\": 7, \"n_probs\": 3, \"seed\": -1, \"return_tokens\": true, "
                       "\"logit_bias\": [[5, false], [9, 2.5]], \"repeat_last_n\": -1, \"cache_prompt\": false}";
    cr_assert_eq(llama_request_parse(body, strlen(body), NULL, &r, &err), 0, "%s", err.message);
    cr_expect_eq(r.api, API_LLAMA);
    cr_expect_eq(r.kind, OAI_COMPLETION);
    cr_expect_str_eq(r.prompt, "hi");
    cr_expect_eq(r.max_tokens, 7);
    cr_expect(r.logprobs && r.top_logprobs == 3);
    cr_expect(!r.has_seed, "seed -1: a fresh one");
    cr_expect(r.return_tokens);
    cr_expect(r.has_repeat_last_n && r.repeat_last_n == -1);
    cr_assert_eq(r.n_bias, 2);
    for (int i = 0; i < 2; i++)
        cr_expect(r.bias[i].id == 5 ? r.bias[i].bias == -100 : r.bias[i].id == 9 && r.bias[i].bias == 2.5f);
    oai_request_free(&r);
    body = "{\"prompt\": [1, 2], \"n_predict\": -1}";
    cr_assert_eq(llama_request_parse(body, strlen(body), NULL, &r, &err), 0, "%s", err.message);
    cr_expect(r.max_tokens == 0 && cJSON_GetArraySize(r.prompt_ids) == 2, "-1: up to the context");
    cr_expect(!r.score_only);
    oai_request_free(&r);
    body = "{\"prompt\": \"a\", \"n_predict\": -7}";
    cr_assert_eq(llama_request_parse(body, strlen(body), NULL, &r, &err), 0, "%s", err.message);
    cr_expect(r.max_tokens == 0 && !r.score_only, "below 0: up to the context");
    oai_request_free(&r);
    /* 0: the prompt computed, nothing generated (llama.cpp's cache warming) */
    body = "{\"prompt\": \"a\", \"n_predict\": 0}";
    cr_assert_eq(llama_request_parse(body, strlen(body), NULL, &r, &err), 0, "%s", err.message);
    cr_expect(r.score_only && !r.echo);
    oai_request_free(&r);
    /* llama.cpp's DRY, top-n-sigma and XTC fields */
    body = "{\"prompt\": \"a\", \"dry_multiplier\": 0.8, \"dry_base\": 2, \"dry_allowed_length\": 3, "
           "\"dry_penalty_last_n\": -1, \"dry_sequence_breakers\": [\"\\n\", \"###\"], \"top_n_sigma\": 1.5, "
           "\"xtc_probability\": 0.5, \"xtc_threshold\": 0.2}";
    cr_assert_eq(llama_request_parse(body, strlen(body), NULL, &r, &err), 0, "%s", err.message);
    cr_expect(r.dry_multiplier == 0.8f && r.dry_base == 2 && r.dry_allowed_length == 3);
    cr_expect(r.has_dry_penalty_last_n && r.dry_penalty_last_n == -1);
    cr_expect(r.has_dry_breakers && r.n_dry_breakers == 2 && !strcmp(r.dry_breakers[1], "###"));
    cr_expect(r.has_top_n_sigma && r.top_n_sigma == 1.5f);
    cr_expect(r.xtc_probability == 0.5f && r.xtc_threshold == 0.2f);
    cr_expect(r.mirostat == -1 && r.typical_p == -1 && isnan(r.mirostat_tau), "absent: the server's");
    oai_request_free(&r);
    body = "{\"prompt\": \"a\", \"mirostat\": 2, \"mirostat_tau\": 4, \"mirostat_eta\": 0.2, \"typical_p\": 0.9, "
           "\"dynatemp_range\": 0.5, \"dynatemp_exponent\": 2}";
    cr_assert_eq(llama_request_parse(body, strlen(body), NULL, &r, &err), 0, "%s", err.message);
    cr_expect(r.mirostat == 2 && r.mirostat_tau == 4 && r.mirostat_eta == 0.2f && r.typical_p == 0.9f);
    cr_expect(r.dynatemp_range == 0.5f && r.dynatemp_exponent == 2);
    oai_request_free(&r);
    /* llama.cpp's code completion limits */
    body = "{\"prompt\": \"a\", \"n_indent\": 4, \"t_max_predict_ms\": 250}";
    cr_assert_eq(llama_request_parse(body, strlen(body), NULL, &r, &err), 0, "%s", err.message);
    cr_expect_eq(r.n_indent, 4);
    cr_expect_eq(r.t_max_predict_ms, 250);
    oai_request_free(&r);
    /* a list of prompts, text or ids: a batch of them, each answered */
    body = "{\"prompt\": [\"a\", [1, 2], \"b\"], \"n_predict\": 2}";
    cr_assert_eq(llama_request_parse(body, strlen(body), NULL, &r, &err), 0, "%s", err.message);
    cr_expect_eq(r.batch_n, 3);
    cr_expect_eq(r.api, API_LLAMA);
    oai_request_free(&r);
    const struct {
        const char *body, *param;
    } bad[] = {{"{\"prompt\": \"a\", \"n_predict\": 1.5}", "n_predict"},
               {"{\"prompt\": \"a\", \"n_predict\": 2147483648}", "n_predict"},
               {"{\"prompt\": \"a\", \"n_probs\": 50}", "n_probs"},
               {"{\"prompt\": \"a\", \"n_probs\": -1}", "n_probs"},
               {"{\"prompt\": [\"a\", 1]}", "prompt"},
               {"{\"prompt\": \"a\", \"logit_bias\": {\"x\": 1}}", "logit_bias"},
               {"{\"prompt\": \"a\", \"xtc_probability\": 1.5}", "xtc_probability"},
               {"{\"prompt\": \"a\", \"typical_p\": 1.5}", "typical_p"},
               {"{\"prompt\": \"a\", \"mirostat\": 3}", "mirostat"},
               {"{\"prompt\": \"a\", \"n_indent\": -1}", "n_indent"},
               {"{\"prompt\": \"a\", \"n_indent\": 1.5}", "n_indent"},
               {"{\"prompt\": \"a\", \"t_max_predict_ms\": -5}", "t_max_predict_ms"},
               {"{\"prompt\": \"a\", \"t_max_predict_ms\": \"1s\"}", "t_max_predict_ms"},
               {"{\"prompt\": \"a\", \"dry_sequence_breakers\": \"\\n\"}", "dry_sequence_breakers"},
               {"{\"prompt\": \"a\", \"post_sampling_probs\": 1}", "post_sampling_probs"},
               {"{\"prompt\": \"a\", \"lora\": [{\"id\": 0}]}", "lora"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_expect_neq(llama_request_parse(bad[i].body, strlen(bad[i].body), NULL, &r, &err), 0, "%s", bad[i].body);
        cr_expect_str_eq(err.param, bad[i].param, "%s", bad[i].body);
        oai_request_free(&r);
    }
}

/* The filter's output over chunks must equal the text cut before the stop
 * string that completes first after its first `early` bytes (fed as early
 * ones: they may not end one), whatever the chunking, and name that string. */
static void filter_case_early(const char *text, const char *const *stop, int n_stop, size_t early)
{
    /* reference: the stop string that ends first past early (the longer one on a tie) */
    size_t len = strlen(text), want = len, end = (size_t)-1;
    int which = -1;
    for (int i = 0; i < n_stop; i++) {
        size_t sl = strlen(stop[i]);
        for (size_t at = 0; at + sl <= len; at++) {
            size_t e = at + sl;
            if (e <= early || memcmp(text + at, stop[i], sl))
                continue;
            if (e < end || (e == end && at < want)) {
                end = e;
                want = at;
                which = i;
            }
            break;
        }
    }
    for (size_t chunk = 1; chunk <= len; chunk++) {
        stop_filter f;
        stop_filter_init(&f, stop, n_stop);
        char got[256] = "";
        size_t gl = 0;
        int stopped = 0;
        for (size_t i = 0; i < len && !stopped;) {
            /* (a piece is early or not as a whole, as a token is) */
            size_t n_in = len - i < chunk ? len - i : chunk;
            if (i < early && i + n_in > early)
                n_in = early - i;
            const char *out;
            size_t n;
            stopped = (i < early ? stop_filter_feed_early : stop_filter_feed)(&f, text + i, n_in, &out, &n) == 1;
            memcpy(got + gl, out, n);
            gl += n;
            i += n_in;
        }
        if (!stopped) {
            const char *out;
            size_t n;
            stop_filter_finish(&f, &out, &n);
            memcpy(got + gl, out, n);
            gl += n;
        }
        cr_assert_eq(stopped, want < len, "'%s' early %zu chunk %zu", text, early, chunk);
        cr_assert(!stopped || f.which == which, "'%s' early %zu chunk %zu: stop string %d, not %d", text,
                  early, chunk, f.which, which);
        cr_assert_eq(gl, want, "'%s' early %zu chunk %zu: got '%.*s'", text, early, chunk, (int)gl, got);
        cr_assert(!memcmp(got, text, want));
        stop_filter_free(&f);
    }
}

static void filter_case(const char *text, const char *const *stop, int n_stop)
{
    filter_case_early(text, stop, n_stop, 0);
}

Test(server_stop_filter, cuts_at_the_earliest_stop_string_for_any_chunking)
{
    const char *s1[] = {"STOP", "TO"};
    filter_case("hello STOP world", s1, 2);
    filter_case("no stop here, ST", s1, 2);
    filter_case("aaSTOSTOP", s1, 2);
    const char *s2[] = {"\n\n", "caf\xc3\xa9"};
    filter_case("un caf\xc3\xa9 noir", s2, 2);
    filter_case("line\nline\n\nrest", s2, 2);
    filter_case("\xe2\x82\xac and \xf0\x9f\x98\x80", s2, 2);
    filter_case("plain", NULL, 0);
}

/* vLLM's min_tokens: a stop string ending in the answer's first tokens does
 * not stop it; one that begins there and ends later does, cut whole. Random
 * texts over a small alphabet, so stop strings overlap and repeat. */
Test(server_stop_filter, early_bytes_end_no_stop_string)
{
    const char *s1[] = {"STOP", "TO"};
    filter_case_early("STOP and STOP", s1, 2, 4);
    filter_case_early("STOP and STOP", s1, 2, 3);
    filter_case_early("aaSTOSTOP", s1, 2, 5);
    test_rng g = {61};
    for (int c = 0; c < 400; c++) {
        char text[24], stops[3][5];
        const char *stop[3];
        int len = 1 + (int)test_rnd(&g, 20), n_stop = 1 + (int)test_rnd(&g, 3);
        for (int i = 0; i < len; i++)
            text[i] = "ab\n"[test_rnd(&g, 3)];
        text[len] = 0;
        for (int k = 0; k < n_stop; k++) {
            int sl = 1 + (int)test_rnd(&g, 4);
            for (int i = 0; i < sl; i++)
                stops[k][i] = "ab\n"[test_rnd(&g, 3)];
            stops[k][sl] = 0;
            stop[k] = stops[k];
        }
        filter_case_early(text, stop, n_stop, test_rnd(&g, (unsigned)len + 1));
    }
}

Test(server_stop_filter, holds_back_unfinished_characters)
{
    stop_filter f;
    stop_filter_init(&f, NULL, 0);
    const char *out;
    size_t n;
    stop_filter_feed(&f, "a\xe2\x82", 3, &out, &n);
    cr_assert_eq(n, 1, "only 'a' is whole");
    stop_filter_feed(&f, "\xac", 1, &out, &n);
    cr_assert_eq(n, 3);
    cr_assert(!memcmp(out, "\xe2\x82\xac", 3));
    stop_filter_free(&f);
}

Test(server_response, utf8_cleaning_replaces_invalid_bytes_only)
{
    struct { const char *in; size_t n; const char *want; } cases[] = {
        {"plain", 5, "plain"},
        {"caf\xc3\xa9", 5, "caf\xc3\xa9"},
        {"\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80"},
        {"a\xff" "b", 3, "a\xef\xbf\xbd" "b"},
        {"\xc3", 1, "\xef\xbf\xbd"},
        {"\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},   /* a surrogate */
        {"\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd"},                   /* overlong */
        {"a\0b", 3, "a\xef\xbf\xbd" "b"},
        /* a character cut short is one U+FFFD, as Python's errors="replace" */
        {"\xe4\xb8" "A", 3, "\xef\xbf\xbd" "A"},
        {"\xf0\x9f\x98" "B", 4, "\xef\xbf\xbd" "B"},
        {"\xf0\x9f\x98", 3, "\xef\xbf\xbd"},
        {"\xf0\x9f\xe4\xb8\xad", 5, "\xef\xbf\xbd\xe4\xb8\xad"},
        {"\xe0\x80", 2, "\xef\xbf\xbd\xef\xbf\xbd"},                   /* E0 goes on from A0 */
        {"\xf4\x90\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},   /* past U+10FFFF */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *s = utf8_clean(cases[i].in, cases[i].n);
        cr_assert_str_eq(s, cases[i].want, "case %zu", i);
        free(s);
    }
}

/* The characters utf8_clean makes of text[0, n) that begin before each byte
 * (one that begins before a byte inside it is counted): before[i] for i in
 * [0, n]. */
static void clean_chars_before(const char *text, size_t n, size_t *before)
{
    size_t chars = 0;
    for (size_t i = 0; i < n; chars++) {
        /* a valid character is whole; a broken one is one U+FFFD: a byte that
         * begins none (a NUL too), or the longest start of a character that
         * some continuation bytes would have completed */
        unsigned char b = (unsigned char)text[i];
        size_t full = b < 0x80 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4, k = full;
        if (!b || full > n - i || utf8_validate((const uint8_t *)text + i, full) != full) {
            k = 1;
            for (size_t m = 2; b >= 0xc2 && b <= 0xf4 && m < full && m <= n - i; m++) {
                uint8_t whole[4] = {0x80, 0x80, 0x80, 0x80};
                memcpy(whole, text + i, m);
                if (utf8_validate(whole, full) != full)
                    break;
                k = m;
            }
        }
        for (size_t j = 0; j < k; j++)
            before[i + j] = chars + (j > 0);
        i += k;
    }
    before[n] = chars;
}

/* utf8_chars: a text's characters counted piece by piece are those
 * utf8_clean makes of the whole (its text_offset for completions' logprobs),
 * whatever the pieces, and the characters before a piece are known with it */
Test(server_response, characters_counted_piece_by_piece_are_the_cleaned_texts)
{
    static const char *units[] = {"a", " ", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                                  "\xc3", "\xe2\x82", "\xf0\x9f", "\x9b", "\xbf", "\xff", "\xed\xa0\x80",
                                  "\xc0\xaf", "\xe0\x80", "\xf4\x90", "\xef\xbf\xbd"};
    srand(7);
    int checked = 0;
    for (int round = 0; round < 2000; round++) {
        char text[256];
        size_t n = 0, before[257];
        while (n < 200) {
            const char *u = units[rand() % (int)(sizeof units / sizeof *units)];
            memcpy(text + n, u, strlen(u));
            n += strlen(u);
        }
        clean_chars_before(text, n, before);
        char *cleaned = utf8_clean(text, n);
        size_t cleaned_chars = 0;
        for (const char *o = cleaned; *o; o++)
            cleaned_chars += ((unsigned char)*o & 0xc0) != 0x80;
        free(cleaned);
        cr_assert_eq(cleaned_chars, before[n], "round %d: the reference is utf8_clean's", round);
        utf8_chars c = {0};
        for (size_t at = 0; at < n;) {
            size_t len = 1 + (size_t)(rand() % 6), got;
            if (len > n - at)
                len = n - at;
            utf8_chars_feed(&c, text + at, len, &got);
            cr_assert_eq(got, before[at], "round %d: %zu characters before byte %zu, counted %zu", round,
                         before[at], at, got);
            checked++;
            at += len;
        }
        /* what the text's end leaves open is one character */
        cr_assert_eq(c.n, before[n], "round %d", round);
    }
    cr_assert_gt(checked, 10000);
}

/* json_float: a setting's float printed as the user wrote it, and always
 * read back as that float */
Test(server_response, floats_print_as_their_shortest_decimal)
{
    struct { float f; const char *want; } cases[] = {
        {0.6f, "0.6"}, {0.1f, "0.1"}, {0.95f, "0.95"}, {1.75f, "1.75"}, {3.0f, "3"}, {-1.0f, "-1"},
        {1e-7f, "1e-07"}, {16777217.0f, "16777216"}, {0.0f, "0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cJSON *n = cJSON_CreateNumber(json_float(cases[i].f));
        char *text = cJSON_PrintUnformatted(n);
        cr_assert_str_eq(text, cases[i].want, "case %zu", i);
        free(text);
        cJSON_Delete(n);
    }
    uint64_t rng = 7;
    for (int i = 0; i < 200000; i++) {
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        uint32_t bits = (uint32_t)(rng >> 32);
        float f;
        memcpy(&f, &bits, sizeof f);
        if (!isfinite(f))
            continue;
        cr_assert_eq((float)json_float(f), f, "0x%08x does not read back", bits);
    }
}

Test(server_response, tool_calls_and_usage_in_the_openai_shape)
{
    tool_call call = {"functions.f:0", "f", "{\"a\": 1}"};
    oai_meta m = {.kind = OAI_CHAT, .id = "chatcmpl-1", .model = "m", .created = 5};
    oai_usage u = {.prompt_tokens = 3, .completion_tokens = 2, .cached_tokens = 1};
    oai_choice ch = {.text = "", .reasoning = "why", .reasoning_len = 3, .calls = &call, .n_calls = 1,
                     .finish_reason = "tool_calls"};
    char *body = oai_full_response(&m, &ch, 1, NULL, &u);
    cJSON *root = cJSON_Parse(body);
    cr_assert_not_null(root);
    cJSON *msg = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(root, "choices"), 0), "message");
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(msg, "content")), "no text with a call: content null");
    cr_assert_str_eq(cJSON_GetObjectItem(msg, "reasoning_content")->valuestring, "why");
    cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(msg, "tool_calls"), 0);
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "function"), "arguments")->valuestring,
                     "{\"a\": 1}");
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(root, "usage"), "total_tokens")->valueint, 5);
    cJSON_Delete(root);
    free(body);
    char *ev = oai_event_delta(&m, 0, NULL, 0, NULL, 0, &call, 1, 2, NULL, NULL);
    cr_assert(!strncmp(ev, "data: {", 7) && strstr(ev, "\"index\":2") && !strcmp(ev + strlen(ev) - 2, "\n\n"),
              "%s", ev);
    free(ev);
}

/* A batch's response: the prompts' choices in order, numbered prompt by
 * prompt (two prompts of n = 2: indices 0 to 3), the usage summed. */
Test(server_response, a_batch_numbers_every_prompts_choices_and_sums_usage)
{
    oai_meta m = {.kind = OAI_COMPLETION, .id = "cmpl-1", .model = "m", .created = 5};
    oai_choice ch[2] = {{.text = "a", .text_len = 1, .finish_reason = "stop"},
                        {.text = "b", .text_len = 1, .finish_reason = "length"}};
    oai_usage u0 = {.prompt_tokens = 3, .completion_tokens = 2, .cached_tokens = 1},
              u1 = {.prompt_tokens = 4, .completion_tokens = 5};
    char *bodies[2];
    bodies[0] = oai_full_response(&m, ch, 2, NULL, &u0);
    m.id = "cmpl-2";
    ch[0].text = "c";
    bodies[1] = oai_full_response(&m, ch, 2, NULL, &u1);
    char *merged = oai_batch_response(bodies, 2, 2, 1);
    cJSON *root = cJSON_Parse(merged);
    cr_assert_not_null(root, "%s", merged);
    cr_expect_str_eq(cJSON_GetObjectItem(root, "id")->valuestring, "cmpl-1");
    cJSON *choices = cJSON_GetObjectItem(root, "choices");
    cr_assert_eq(cJSON_GetArraySize(choices), 4, "%s", merged);
    const char *texts[4] = {"a", "b", "c", "b"};
    for (int i = 0; i < 4; i++) {
        cJSON *c = cJSON_GetArrayItem(choices, i);
        cr_expect_eq(cJSON_GetObjectItem(c, "index")->valueint, i, "%s", merged);
        cr_expect_str_eq(cJSON_GetObjectItem(c, "text")->valuestring, texts[i]);
    }
    cJSON *us = cJSON_GetObjectItem(root, "usage");
    cr_expect_eq(cJSON_GetObjectItem(us, "prompt_tokens")->valueint, 7);
    cr_expect_eq(cJSON_GetObjectItem(us, "completion_tokens")->valueint, 7);
    cr_expect_eq(cJSON_GetObjectItem(us, "total_tokens")->valueint, 14);
    cr_expect_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(us, "prompt_tokens_details"),
                                     "cached_tokens")->valueint, 1);
    cr_expect_null(cJSON_GetObjectItem(us, "completion_tokens_details"), "completions: no reasoning counted");
    cJSON_Delete(root);
    free(merged);
    free(bodies[1]);
    bodies[1] = strdup("{\"error\": {}}");
    cr_expect_null(oai_batch_response(bodies, 2, 2, 1), "a body without choices is not merged");
    free(bodies[0]);
    free(bodies[1]);
}

/* n choices made as jobs of their own, for two prompts (bodies of one choice
 * each, two a prompt): numbered 0 to 3 in order, each prompt's tokens counted
 * once, every choice's completion tokens summed. */
Test(server_response, choices_made_apart_count_their_prompt_once)
{
    oai_meta m = {.kind = OAI_CHAT, .id = "chatcmpl-1", .model = "m", .created = 5};
    char *bodies[4];
    for (int i = 0; i < 4; i++) {
        char text[2] = {(char)('a' + i), 0};
        oai_choice ch = {.text = text, .text_len = 1, .finish_reason = "stop"};
        oai_usage u = {.prompt_tokens = i < 2 ? 10 : 20, .completion_tokens = i + 1,
                       .cached_tokens = i % 2 ? 9 : 0, .reasoning_tokens = i};
        bodies[i] = oai_full_response(&m, &ch, 1, NULL, &u);
    }
    char *merged = oai_batch_response(bodies, 4, 1, 2);
    cJSON *root = cJSON_Parse(merged);
    cr_assert_not_null(root, "%s", merged);
    cJSON *choices = cJSON_GetObjectItem(root, "choices");
    cr_assert_eq(cJSON_GetArraySize(choices), 4, "%s", merged);
    for (int i = 0; i < 4; i++) {
        cJSON *c = cJSON_GetArrayItem(choices, i);
        char text[2] = {(char)('a' + i), 0};
        cr_expect_eq(cJSON_GetObjectItem(c, "index")->valueint, i, "%s", merged);
        cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(c, "message"), "content")->valuestring, text);
    }
    cJSON *us = cJSON_GetObjectItem(root, "usage");
    cr_expect_eq(cJSON_GetObjectItem(us, "prompt_tokens")->valueint, 30, "%s", merged);
    cr_expect_eq(cJSON_GetObjectItem(us, "completion_tokens")->valueint, 10, "%s", merged);
    cr_expect_eq(cJSON_GetObjectItem(us, "total_tokens")->valueint, 40, "%s", merged);
    cr_expect_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(us, "prompt_tokens_details"),
                                     "cached_tokens")->valueint, 0, "%s", merged);
    cr_expect_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(us, "completion_tokens_details"),
                                     "reasoning_tokens")->valueint, 6, "every choice's reasoning: %s", merged);
    cJSON_Delete(root);
    free(merged);
    for (int i = 0; i < 4; i++)
        free(bodies[i]);
}

/* logprobs in both APIs' shapes: chat's tokens with their bytes and
 * alternatives; completions' parallel lists, whose alternatives hold the
 * chosen token and one entry per text. */
Test(server_response, logprobs_in_the_openai_shape)
{
    oai_logprob_step st[2] = {
        {.chosen = {"Hi", 2, -0.25f}, .n_top = 2, .top = {{"Hi", 2, -0.25f}, {"Ho", 2, -1.5f}}},
        {.chosen = {"\xc3", 1, -3.0f}, .n_top = 2, .top = {{"!", 1, -0.5f}, {"!", 1, -0.75f}},
         .text_offset = 2}};
    oai_logprobs lp = {st, 2, 0};
    oai_meta m = {.kind = OAI_CHAT, .id = "chatcmpl-1", .model = "m", .created = 5};
    oai_usage u = {.prompt_tokens = 3, .completion_tokens = 2};
    oai_choice hi = {.text = "Hi", .text_len = 2, .reasoning = "", .lp = &lp, .finish_reason = "stop"};
    char *body = oai_full_response(&m, &hi, 1, NULL, &u);
    cJSON *root = cJSON_Parse(body);
    cr_assert_not_null(root, "%s", body);
    cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "choices"), 0);
    cJSON *content = cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "logprobs"), "content");
    cr_assert_eq(cJSON_GetArraySize(content), 2, "%s", body);
    cJSON *t1 = cJSON_GetArrayItem(content, 1);
    cr_expect_str_eq(cJSON_GetObjectItem(t1, "token")->valuestring, "\xef\xbf\xbd", "a partial character");
    cr_expect_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(t1, "bytes"), 0)->valueint, 0xc3);
    cr_expect_eq(cJSON_GetObjectItem(t1, "logprob")->valuedouble, -3.0);
    cJSON *alt = cJSON_GetArrayItem(cJSON_GetObjectItem(t1, "top_logprobs"), 1);
    cr_expect_eq(cJSON_GetObjectItem(alt, "logprob")->valuedouble, -0.75);
    cJSON_Delete(root);
    free(body);
    char *ev = oai_event_delta(&m, 0, "Hi", 2, NULL, 0, NULL, 0, 0, NULL, NULL);
    cr_expect(strstr(ev, "\"logprobs\":null") != NULL, "not asked for: null, as OpenAI sends it: %s", ev);
    free(ev);
    m.kind = OAI_COMPLETION;
    body = oai_full_response(&m, &hi, 1, NULL, &u);
    root = cJSON_Parse(body);
    cJSON *l = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(root, "choices"), 0), "logprobs");
    cr_assert_not_null(l, "%s", body);
    cr_expect_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(l, "tokens"), 0)->valuestring, "Hi");
    cr_expect_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(l, "token_logprobs"), 1)->valuedouble, -3.0);
    cr_expect_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(l, "text_offset"), 1)->valueint, 2);
    cJSON *alts0 = cJSON_GetArrayItem(cJSON_GetObjectItem(l, "top_logprobs"), 0);
    cJSON *alts1 = cJSON_GetArrayItem(cJSON_GetObjectItem(l, "top_logprobs"), 1);
    cr_expect_eq(cJSON_GetArraySize(alts0), 2, "Hi and Ho: %s", body);
    cr_expect_eq(cJSON_GetArraySize(alts1), 2, "one '!' (the likelier) and the chosen: %s", body);
    cr_expect_eq(cJSON_GetObjectItem(alts1, "!")->valuedouble, -0.5);
    cJSON_Delete(root);
    free(body);
}

/* The keys a server takes: --api-key's and a file's lines (comments and
 * blank lines skipped, spaces around a key dropped); any of them matches, a
 * prefix, an extension or nothing does not; a file without a key, a key with
 * a space inside or an unreadable file is refused naming the file and line. */
Test(server_keys, a_file_of_keys_and_the_check)
{
    char *dir = test_make_tmpdir("apikeys");
    char path[600], empty[600];
    snprintf(path, sizeof path, "%s/keys.txt", dir);
    snprintf(empty, sizeof empty, "%s/none.txt", dir);
    const char *text = "# the team's keys\n  alpha-1  \r\n\nbeta-22\n";
    test_write_file(path, text, strlen(text));
    test_write_file(empty, "# none yet\n\n", 12);
    api_keys k = {0};
    errbuf e;
    cr_assert_eq(api_keys_add(&k, "sesame", "--api-key", &e), 0, "%s", e.msg);
    cr_assert_eq(api_keys_read_file(&k, path, &e), 0, "%s", e.msg);
    cr_expect_eq(k.n, 3);
    const char *yes[] = {"sesame", "alpha-1", "beta-22"};
    const char *no[] = {"", "sesam", "sesame2", "alpha-", "beta-222", "# the team's keys", " alpha-1"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        cr_expect(api_keys_match(&k, yes[i]), "%s is a key", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        cr_expect(!api_keys_match(&k, no[i]), "'%s' is no key", no[i]);
    cr_expect(!api_keys_match(&k, NULL), "no key sent");
    cr_expect_neq(api_keys_read_file(&k, empty, &e), 0);
    cr_expect(strstr(e.msg, "none.txt: no key in it") != NULL, "%s", e.msg);
    const char *spaced = "good\nbad key\n";
    test_write_file(empty, spaced, strlen(spaced));
    cr_expect_neq(api_keys_read_file(&k, empty, &e), 0);
    cr_expect(strstr(e.msg, "none.txt line 2: a key must not hold spaces") != NULL, "%s", e.msg);
    cr_expect_neq(api_keys_read_file(&k, dir, &e), 0, "a directory is no key file");
    cr_expect_neq(api_keys_add(&k, "", "--api-key", &e), 0);
    cr_expect(strstr(e.msg, "--api-key: a key must not be empty") != NULL, "%s", e.msg);
    api_keys_free(&k);
    cr_expect_eq(k.n, 0);
    test_remove_tree(dir);
    free(dir);
}

/* The latencies as Prometheus histograms: each bucket counts the observations
 * at most its bound (one on a bound is in its bucket), +Inf and _count all of
 * them, _sum their seconds; every line a comment or a sample. */
Test(serve_metrics, latencies_are_cumulative_histograms)
{
    serve_metrics m;
    memset(&m, 0, sizeof m);
    serve_metrics_observe(&m, SERVE_LATENCY_TTFT, 0.05);
    serve_metrics_observe(&m, SERVE_LATENCY_TTFT, 0.07);
    serve_metrics_observe(&m, SERVE_LATENCY_TTFT, 3000);
    serve_metrics_observe(&m, SERVE_LATENCY_QUEUE, 0);
    char *t = serve_metrics_render(&m);
    cr_assert_not_null(t);
    const char *want[] = {
        "# TYPE moetier_time_to_first_token_seconds histogram\n",
        "moetier_time_to_first_token_seconds_bucket{le=\"0.05\"} 1\n",
        "moetier_time_to_first_token_seconds_bucket{le=\"0.1\"} 2\n",
        "moetier_time_to_first_token_seconds_bucket{le=\"2560\"} 2\n",
        "moetier_time_to_first_token_seconds_bucket{le=\"+Inf\"} 3\n",
        "moetier_time_to_first_token_seconds_sum 3000.120000\n",
        "moetier_time_to_first_token_seconds_count 3\n",
        "moetier_request_queue_time_seconds_bucket{le=\"0.01\"} 1\n",
        "moetier_request_time_per_output_token_seconds_count 0\n",
        "moetier_e2e_request_latency_seconds_bucket{le=\"+Inf\"} 0\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        cr_expect(strstr(t, want[i]), "missing: %s", want[i]);
    for (const char *line = t; *line;) {
        const char *nl = strchr(line, '\n');
        cr_assert_not_null(nl, "an unended line");
        char name[128];
        double v;
        cr_expect(*line == '#' || sscanf(line, "%127[a-z_]%*[^ ] %lf", name, &v) == 2 ||
                      sscanf(line, "%127[a-z_] %lf", name, &v) == 2,
                  "not a sample: %.*s", (int)(nl - line), line);
        line = nl + 1;
    }
    free(t);
}

/* Which browsers' requests the server answers (request_origin.h): its own
 * page's, and clients that send no Origin; another page's only when allowed
 * (then with CORS); on a loopback address, only requests that call it by such
 * an address or an allowed name (a page's own name resolved to 127.0.0.1, DNS
 * rebinding, is refused); a page under an allowed name (a reverse proxy's,
 * any port) is the server's own. */
Test(server_request, only_allowed_pages_and_names_are_answered)
{
    enum { OK = 0, ORIGIN = 1, HOST = 2 };
    static const struct {
        int loopback;
        const char *host, *origin, *hosts, *origins;
        int want, cors;
    } cases[] = {
        {1, "127.0.0.1:8080", NULL, NULL, NULL, OK, 0},           /* curl, an SDK */
        {1, "localhost:8080", NULL, NULL, NULL, OK, 0},
        {1, "LOCALHOST", NULL, NULL, NULL, OK, 0},
        {1, "[::1]:8080", NULL, NULL, NULL, OK, 0},
        {1, "127.0.0.2", NULL, NULL, NULL, OK, 0},
        {1, "127.1:8080", NULL, NULL, NULL, OK, 0},            /* (--host 127.1) */
        {1, "127.0.0.1:8080", "http://127.0.0.1:8080", NULL, NULL, OK, 0},   /* the chat page */
        {1, "localhost:8080", "http://localhost:8080", NULL, NULL, OK, 0},
        {1, "[::1]:8080", "http://[::1]:8080", NULL, NULL, OK, 0},
        {1, "127.0.0.1:8080", "http://evil.example", NULL, NULL, ORIGIN, 0},    /* forgery */
        {1, "127.0.0.1:8080", "http://127.0.0.1:9999", NULL, NULL, ORIGIN, 0},  /* another port's page */
        {1, "127.0.0.1:8080", "null", NULL, "*", ORIGIN, 0},
        {1, "127.0.0.1:8080", "http://app.example", NULL, "http://app.example", OK, 1},
        {1, "127.0.0.1:8080", "http://app.example", NULL, "http://a.example, http://app.example", OK, 1},
        {1, "127.0.0.1:8080", "http://app.example:81", NULL, "http://app.example", ORIGIN, 0},
        {1, "127.0.0.1:8080", "http://x.example", NULL, "*", OK, 1},
        {1, "rebind.example:8080", "http://rebind.example:8080", NULL, NULL, HOST, 0},  /* rebinding */
        {1, "rebind.example:8080", NULL, NULL, NULL, HOST, 0},
        {1, "127.0.0.1.evil.example", NULL, NULL, NULL, HOST, 0},
        {1, "localhost.evil.example", NULL, NULL, NULL, HOST, 0},
        /* a reverse proxy: its name passed on, or its own address (nginx's default) */
        {1, "chat.example.com", "https://chat.example.com", "chat.example.com", NULL, OK, 0},
        {1, "chat.example.com", "https://chat.example.com:8443", "chat.example.com", NULL, OK, 0},
        {1, "127.0.0.1:8080", "https://chat.example.com", "chat.example.com", NULL, OK, 0},
        {1, "127.0.0.1:8080", "https://chat.example.com", NULL, "https://chat.example.com", OK, 1},
        {1, "other.internal", NULL, "*", NULL, OK, 0},
        {1, "127.0.0.1:8080", "https://evil.example", "*", NULL, ORIGIN, 0},  /* '*' names: not pages */
        /* bound for the network: any name (the API key keeps pages out there) */
        {0, "gpu-box.lan:8080", NULL, NULL, NULL, OK, 0},
        {0, "gpu-box.lan:8080", "http://gpu-box.lan:8080", NULL, NULL, OK, 0},
        {0, "gpu-box.lan:8080", "http://evil.example", NULL, NULL, ORIGIN, 0},
        {0, NULL, "http://evil.example", NULL, NULL, ORIGIN, 0},         /* HTTP/1.0, no Host */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char why[512] = "";
        int cors = -1;
        int rc = request_origin_check(cases[i].loopback, cases[i].host, cases[i].origin, cases[i].hosts,
                                      cases[i].origins, &cors, why, sizeof why);
        cr_expect_eq(rc, cases[i].want ? -1 : 0, "case %zu (%s, %s): %s", i, cases[i].host,
                     cases[i].origin ? cases[i].origin : "no origin", why);
        cr_expect_eq(cors, cases[i].cors, "case %zu: cors", i);
        if (cases[i].want)
            cr_expect(strstr(why, cases[i].want == ORIGIN ? "--allowed-origin" : "--allowed-host"), "case %zu: %s",
                      i, why);
    }
}

/* the loopback addresses, however --host spelled them */
Test(server_request, loopback_is_the_address_bound)
{
    static const struct { const char *host; int want; } cases[] = {
        {"127.0.0.1", 1}, {"127.1", 1}, {"localhost", 1}, {"::1", 1}, {"0:0:0:0:0:0:0:1", 1},
        {"::ffff:127.0.0.1", 1}, {"0.0.0.0", 0}, {"::", 0}, {"10.1.2.3", 0}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                 .ai_flags = AI_NUMERICSERV | AI_PASSIVE}, *ai = NULL;
        if (getaddrinfo(cases[i].host, "8080", &hints, &ai)) {
            cr_expect(strcmp(cases[i].host, "localhost"), "%s does not resolve", cases[i].host);
            continue;
        }
        cr_expect_eq(request_origin_loopback(ai->ai_addr), cases[i].want, "%s", cases[i].host);
        freeaddrinfo(ai);
    }
}
