/* test_chat: the native Kimi K2.5 chat template and the tool-call parser.
 *
 * Every conversation of kimi-tokenizer/chat_cases.jsonl must render to its
 * `rendered` text byte for byte (the fixtures come from @huggingface/jinja on
 * chat_template.jinja); the fixture template must be recognised and others
 * refused by name; bad inputs must give errors naming the message and field;
 * the choices the template leaves open (null fields, empty tool_calls, Python
 * number printing) are pinned down. The tool-call parser must split content,
 * reasoning and calls, survive malformed text, and give the same result when
 * the text arrives cut at any byte. */
#include <criterion/criterion.h>
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/fileutil.h"
#include "core/text/chat_format.h"
#include "core/text/chat_template.h"
#include "core/text/tool_calls.h"
#include "testutil.h"

TestSuite(chat);

/* ---- helpers --------------------------------------------------------------------- */

static char *kimi_path(const char *file)
{
    char rel[256];
    snprintf(rel, sizeof rel, "kimi-tokenizer/%s", file);
    char *p = test_data_path(rel);
    cr_assert_not_null(p);
    if (!test_path_exists(p)) {
        free(p);
        cr_skip_test("kimi-tokenizer testdata is absent (set MOETIER_TESTDATA to ../shared/testdata)");
    }
    return p;
}

/* Renders a conversation given as JSON text {messages, tools?, options...};
 * returns the text (malloc'd) or NULL with e set. */
static char *render_json(const char *json, chat_template_kind kind, errbuf *e)
{
    cJSON *req = chat_json_parse(json, strlen(json), NULL);
    cr_assert_not_null(req, "bad test JSON: %s", json);
    chat_options o;
    chat_options_default(&o);
    char *out = NULL;
    if (chat_options_from_json(req, &o, e) == 0)
        chat_format_render(kind, cJSON_GetObjectItem(req, "messages"), cJSON_GetObjectItem(req, "tools"),
                           &o, &out, NULL, e);
    cJSON_Delete(req);
    return out;
}

static void expect_render(const char *json, const char *want)
{
    errbuf e = {{0}};
    char *got = render_json(json, CHAT_TEMPLATE_K25, &e);
    cr_assert_not_null(got, "%s: %s", json, e.msg);
    cr_expect_str_eq(got, want, "%s", json);
    free(got);
}

static void expect_render_error(const char *json, const char *needle1, const char *needle2)
{
    errbuf e = {{0}};
    char *got = render_json(json, CHAT_TEMPLATE_K25, &e);
    cr_expect_null(got, "%s rendered as %s", json, got ? got : "");
    free(got);
    cr_expect(strstr(e.msg, needle1) != NULL, "error for %s: \"%s\" lacks \"%s\"", json, e.msg, needle1);
    if (needle2)
        cr_expect(strstr(e.msg, needle2) != NULL, "error for %s: \"%s\" lacks \"%s\"", json, e.msg,
                  needle2);
}

/* ---- the fixtures -------------------------------------------------------------------- */

static int render_case(const cJSON *c, chat_template_kind kind, char **out, errbuf *e)
{
    chat_options o;
    chat_options_default(&o);
    cr_assert_eq(chat_options_from_json(c, &o, e), 0, "%s", e->msg);
    return chat_format_render(kind, cJSON_GetObjectItem(c, "messages"), cJSON_GetObjectItem(c, "tools"), &o,
                              out, NULL, e);
}

Test(chat, fixtures_render_exactly)
{
    char *path = kimi_path("chat_cases.jsonl");
    char *text = test_read_file(path, NULL);
    cr_assert_not_null(text, "%s", path);
    int n = 0, ok = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *c = cJSON_Parse(line);
        cr_assert_not_null(c, "%s: bad JSON line", path);
        const char *id = cJSON_GetObjectItem(c, "id")->valuestring;
        const char *want = cJSON_GetObjectItem(c, "rendered")->valuestring;
        char *got = NULL;
        errbuf e = {{0}};
        int rc = render_case(c, CHAT_TEMPLATE_K25, &got, &e);
        cr_expect_eq(rc, 0, "%s: %s", id, e.msg);
        if (rc == 0) {
            size_t k = 0;
            while (got[k] && got[k] == want[k])
                k++;
            int same = strcmp(got, want) == 0;
            cr_expect(same, "%s: differs at byte %zu: got \"%.60s\" want \"%.60s\"", id, k, got + k, want + k);
            ok += same;
        }
        free(got);
        cJSON_Delete(c);
        n++;
    }
    free(text);
    free(path);
    cr_expect_eq(n, 23, "chat_cases.jsonl has %d cases", n);
    cr_expect_eq(ok, n, "%d of %d fixtures render exactly", ok, n);
}

/* The official K2.5 template differs only in the video placeholder. */
Test(chat, moonshot_video_placeholder)
{
    char *path = kimi_path("chat_cases.jsonl");
    char *text = test_read_file(path, NULL);
    cr_assert_not_null(text);
    int seen_video = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *c = cJSON_Parse(line);
        const char *want = cJSON_GetObjectItem(c, "rendered")->valuestring;
        char *got = NULL;
        errbuf e = {{0}};
        cr_assert_eq(render_case(c, CHAT_TEMPLATE_K25_MOONSHOT, &got, &e), 0, "%s", e.msg);
        const char *kite = "<|kite_video_placeholder|>", *k25 = "<|kimi_k25_video_placeholder|>";
        const char *at = strstr(want, kite);
        if (at) {
            seen_video = 1;
            size_t pre = (size_t)(at - want);
            cr_expect_eq(strncmp(got, want, pre), 0);
            cr_expect_eq(strncmp(got + pre, k25, strlen(k25)), 0);
            cr_expect_str_eq(got + pre + strlen(k25), at + strlen(kite));
        } else {
            cr_expect_str_eq(got, want);
        }
        free(got);
        cJSON_Delete(c);
    }
    cr_expect(seen_video);
    free(text);
    free(path);
}

/* ---- template recognition ----------------------------------------------------------- */

Test(chat, detect_fixture_template)
{
    char *path = kimi_path("chat_template.jinja");
    char *tpl = test_read_file(path, NULL);
    cr_assert_not_null(tpl);
    chat_template_kind k = CHAT_TEMPLATE_K25_MOONSHOT;
    errbuf e = {{0}};
    cr_expect_eq(chat_template_detect(tpl, &k, &e), 0, "%s", e.msg);
    cr_expect_eq(k, CHAT_TEMPLATE_K25);

    /* the same with K2.5's own placeholder name */
    const char *kite = "<|kite_video_placeholder|>";
    char *at = strstr(tpl, kite);
    cr_assert_not_null(at);
    char *moon = NULL;
    cr_assert(asprintf(&moon, "%.*s<|kimi_k25_video_placeholder|>%s", (int)(at - tpl), tpl,
                       at + strlen(kite)) > 0);
    cr_expect_eq(chat_template_detect(moon, &k, &e), 0, "%s", e.msg);
    cr_expect_eq(k, CHAT_TEMPLATE_K25_MOONSHOT);
    free(moon);

    /* neither placeholder */
    char *none = NULL;
    cr_assert(asprintf(&none, "%.*s%s", (int)(at - tpl), tpl, at + strlen(kite)) > 0);
    cr_expect_neq(chat_template_detect(none, &k, &e), 0);
    cr_expect(strstr(e.msg, "unsupported chat template") != NULL, "%s", e.msg);
    free(none);
    free(tpl);
    free(path);
}

Test(chat, detect_rejects_unknown_templates)
{
    chat_template_kind k;
    errbuf e = {{0}};
    const char *chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    cr_expect_neq(chat_template_detect(chatml, &k, &e), 0);
    cr_expect(strstr(e.msg, "unsupported chat template") != NULL, "%s", e.msg);
    cr_expect(strstr(e.msg, "tools_ts_str") != NULL, "names what is missing: %s", e.msg);

    const char *k2 = "{%- if tools -%}<|im_system|>tool_declare<|im_middle|>{{ tools | tojson }}<|im_end|>"
                     "{%- endif -%}{% for message in messages %}{%- if loop.first and "
                     "messages[0]['role'] != 'system' -%}<|im_system|>system<|im_middle|>You are Kimi, "
                     "an AI assistant created by Moonshot AI.<|im_end|>{% endif %}<|im_user|>"
                     "<|im_assistant|><|media_start|>{% endfor %}";
    cr_expect_neq(chat_template_detect(k2, &k, &e), 0);
    cr_expect(strstr(e.msg, "unsupported chat template") != NULL, "%s", e.msg);

    const char *k2_thinking = "{%- if messages|length == 0 or messages[0]['role'] != 'system' -%}"
                              "<|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by "
                              "Moonshot AI.<|im_end|>{%- endif -%}<|im_assistant|><think></think>"
                              "<|media_start|>";
    cr_expect_neq(chat_template_detect(k2_thinking, &k, &e), 0);

    cr_expect_neq(chat_template_detect("", &k, &e), 0);
    cr_expect(strstr(e.msg, "unsupported chat template") != NULL, "%s", e.msg);
    cr_expect_neq(chat_template_detect(NULL, &k, &e), 0);
}

Test(chat, formats_by_name)
{
    chat_template_kind k = CHAT_TEMPLATE_K25;
    errbuf e;
    cr_expect_eq(chat_template_from_name("kimi-k2.5", &k, &e), 0);
    cr_expect_eq(k, CHAT_TEMPLATE_K25_MOONSHOT);
    cr_expect_eq(chat_template_from_name("kimi-k2.5-kite", &k, &e), 0);
    cr_expect_eq(k, CHAT_TEMPLATE_K25);
    cr_expect_neq(chat_template_from_name("chatml", &k, &e), 0);
    cr_expect(strstr(e.msg, "'chatml'") && strstr(e.msg, "kimi-k2.5-kite"), "%s", e.msg);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    errbuf e = {{0}};
    cr_assert_eq(file_write_atomic(path, text, strlen(text), &e), 0, "%s", e.msg);
}

static void expect_open(const char *dir, const char *name, int native_kind, const char *renders)
{
    chat_template t;
    errbuf e = {{0}};
    cr_assert_eq(chat_template_open(dir, name, &t, &e), 0, "%s", e.msg);
    if (native_kind >= 0) {
        cr_expect_null(t.jinja, "%s: rendered natively", dir);
        cr_expect_eq((int)t.kind, native_kind);
    } else {
        cr_expect_not_null(t.jinja, "%s: interpreted", dir);
    }
    if (renders) {
        cJSON *msgs = cJSON_Parse("[{\"role\": \"user\", \"content\": \"Hi\"}]");
        char *out = NULL;
        cr_expect_eq(chat_template_render(&t, msgs, NULL, NULL, &out, NULL, &e), 0, "%s", e.msg);
        cr_expect_str_eq(out ? out : "", renders);
        free(out);
        cJSON_Delete(msgs);
    }
    chat_template_close(&t);
}

Test(chat, load_from_model_dir)
{
    errbuf e = {{0}};
    char *tpl_path = kimi_path("chat_template.jinja");
    char *tpl = test_read_file(tpl_path, NULL);
    cr_assert_not_null(tpl);
    char *dir = test_data_path("kimi-tokenizer");
    const char *k25_hi = "<|im_user|>user<|im_middle|>Hi<|im_end|><|im_assistant|>assistant<|im_middle|><think>";
    expect_open(dir, NULL, CHAT_TEMPLATE_K25, k25_hi);
    expect_open(dir, "jinja", -1, k25_hi);  /* the same text through the engine */
    expect_open(dir, "kimi-k2.5", CHAT_TEMPLATE_K25_MOONSHOT, NULL);
    free(dir);

    char *tmp = test_make_tmpdir("chat");
    cr_assert_not_null(tmp);
    /* nothing at all: the K2.5 format */
    expect_open(tmp, NULL, CHAT_TEMPLATE_K25, k25_hi);
    chat_template t;
    cr_expect_neq(chat_template_open(tmp, "jinja", &t, &e), 0, "no template to interpret");
    cr_expect(strstr(e.msg, "has no chat template") != NULL, "%s", e.msg);
    /* tokenizer_config.json without a template: the default too */
    write_text(tmp, "tokenizer_config.json", "{\"bos_token\": \"[BOS]\"}");
    expect_open(tmp, NULL, CHAT_TEMPLATE_K25, NULL);
    /* the template inside tokenizer_config.json, as a string and as a list */
    cJSON *cfg = cJSON_CreateObject();
    cJSON_AddStringToObject(cfg, "chat_template", tpl);
    char *cfg_text = cJSON_Print(cfg);
    write_text(tmp, "tokenizer_config.json", cfg_text);
    expect_open(tmp, NULL, CHAT_TEMPLATE_K25, NULL);
    free(cfg_text);
    cJSON_Delete(cfg);
    cfg = cJSON_Parse("{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"x\"}]}");
    cJSON *def = cJSON_CreateObject();
    cJSON_AddStringToObject(def, "name", "default");
    cJSON_AddStringToObject(def, "template", tpl);
    cJSON_AddItemToArray(cJSON_GetObjectItem(cfg, "chat_template"), def);
    cfg_text = cJSON_Print(cfg);
    write_text(tmp, "tokenizer_config.json", cfg_text);
    expect_open(tmp, NULL, CHAT_TEMPLATE_K25, NULL);
    free(cfg_text);
    cJSON_Delete(cfg);
    /* another template in tokenizer_config.json: interpreted, its special tokens given */
    write_text(tmp, "tokenizer_config.json", "{\"chat_template\": \"{{ bos_token }}{{ messages[0].content }}!\", "
                                             "\"bos_token\": {\"content\": \"[BOS]\"}}");
    expect_open(tmp, NULL, -1, "[BOS]Hi!");
    /* one that does not compile: the file and the line */
    write_text(tmp, "tokenizer_config.json", "{\"chat_template\": \"line one\\n{% if %}\"}");
    cr_expect_neq(chat_template_open(tmp, NULL, &t, &e), 0);
    cr_expect(strstr(e.msg, "tokenizer_config.json") && strstr(e.msg, "line 2"), "%s", e.msg);
    /* chat_template.jinja wins over tokenizer_config.json */
    write_text(tmp, "chat_template.jinja", tpl);
    expect_open(tmp, NULL, CHAT_TEMPLATE_K25, NULL);
    write_text(tmp, "chat_template.jinja", "{% for m in messages %}<{{ m.content }}>{% endfor %}");
    expect_open(tmp, NULL, -1, "<Hi>");
    write_text(tmp, "chat_template.jinja", "{% for m in messages %}");
    cr_expect_neq(chat_template_open(tmp, NULL, &t, &e), 0);
    cr_expect(strstr(e.msg, "chat_template.jinja") && strstr(e.msg, "endfor"), "%s", e.msg);
    test_remove_tree(tmp);
    free(tmp);
    free(tpl);
    free(tpl_path);
}

/* ---- inputs the fixtures do not cover -------------------------------------------------- */

Test(chat, input_errors_name_the_message)
{
    expect_render_error("{\"messages\": {\"role\": \"user\"}}", "messages", "array");
    expect_render_error("{\"messages\": \"hi\"}", "messages", "array");
    expect_render_error("{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"content\": \"b\"}]}",
                        "messages[1]", "role");
    expect_render_error("{\"messages\": [{\"role\": 3, \"content\": \"b\"}]}", "messages[0].role", NULL);
    expect_render_error("{\"messages\": [{\"role\": \"user\"}, 7]}", "messages[1]", "object");
    expect_render_error("{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": "
                        "\"a\"}, \"oops\"]}]}",
                        "messages[0].content[1]", "object");
    expect_render_error("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"user\", "
                        "\"content\": [{\"type\": \"audio_url\", \"audio_url\": {}}]}]}",
                        "messages[1].content[0]", "audio_url");
    expect_render_error("{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"input_audio\", "
                        "\"text\": null, \"input_audio\": {}}]}]}",
                        "messages[0].content[0]", "input_audio");
    expect_render_error("{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": "
                        "7}]}]}",
                        "messages[0].content[0]", "text");
    expect_render_error("{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", "messages[0].content",
                        NULL);
    expect_render_error("{\"messages\": [{\"role\": \"user\", \"content\": {\"text\": \"a\"}}]}",
                        "messages[0].content", NULL);
    expect_render_error("{\"messages\": [{\"role\": \"user\", \"name\": 5, \"content\": \"a\"}]}",
                        "messages[0].name", NULL);
    expect_render_error("{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": "
                        "\"assistant\", \"content\": \"b\", \"tool_calls\": {\"id\": \"x\"}}]}",
                        "messages[1].tool_calls", NULL);
    expect_render_error("{\"messages\": [{\"role\": \"assistant\", \"tool_calls\": [{\"id\": \"a\", "
                        "\"function\": {\"name\": \"f\", \"arguments\": \"{}\"}}, {\"id\": \"b\"}]}]}",
                        "messages[0].tool_calls[1].function", NULL);
    expect_render_error("{\"messages\": [{\"role\": \"assistant\", \"tool_calls\": [{\"id\": \"a\", "
                        "\"function\": {\"name\": \"f\"}}]}]}",
                        "messages[0].tool_calls[0].function.arguments", "missing");
    expect_render_error("{\"messages\": [{\"role\": \"assistant\", \"tool_calls\": [7]}]}",
                        "messages[0].tool_calls[0]", NULL);
    expect_render_error("{\"messages\": [{\"role\": \"assistant\", \"tool_calls\": [{\"id\": 1, "
                        "\"function\": {\"arguments\": \"{}\"}}]}]}",
                        "messages[0].tool_calls[0].id", NULL);
    expect_render_error("{\"messages\": [{\"role\": \"tool\", \"tool_call_id\": 3, \"content\": \"r\"}]}",
                        "messages[0].tool_call_id", NULL);
    /* reasoning is only read where it is printed (the suffix) */
    expect_render_error("{\"messages\": [{\"role\": \"assistant\", \"content\": \"a\", \"reasoning\": 1, "
                        "\"tool_calls\": [{\"id\": \"i\", \"function\": {\"arguments\": \"{}\"}}]}]}",
                        "messages[0].reasoning", NULL);
    expect_render("{\"messages\": [{\"role\": \"assistant\", \"content\": \"a\", \"reasoning\": 1}], "
                  "\"add_generation_prompt\": false}",
                  "<|im_assistant|>assistant<|im_middle|><think></think>a<|im_end|>");
    expect_render_error("{\"messages\": [], \"tools\": {\"type\": \"function\"}}", "tools", NULL);
    expect_render_error("{\"messages\": [], \"thinking\": \"yes\"}", "thinking", NULL);
    expect_render_error("{\"messages\": [], \"tools_ts_str\": 1}", "tools_ts_str", NULL);

    errbuf e = {{0}};
    char *out = (char *)1;
    cr_expect_neq(chat_format_render(CHAT_TEMPLATE_K25, NULL, NULL, NULL, &out, NULL, &e), 0);
    cr_expect_null(out);
    cr_expect(strstr(e.msg, "messages") != NULL, "%s", e.msg);
}

Test(chat, null_and_edge_semantics)
{
    /* a null reasoning prints "" and hides reasoning_content (dict.get semantics) */
    expect_render("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", "
                  "\"content\": \"\", \"reasoning\": null, \"reasoning_content\": \"hidden\", \"tool_calls\": "
                  "[{\"id\": \"functions.f:0\", \"function\": {\"arguments\": {}}}]}]}",
                  "<|im_user|>user<|im_middle|>q<|im_end|><|im_assistant|>assistant<|im_middle|>"
                  "<think></think><|tool_calls_section_begin|><|tool_call_begin|>functions.f:0"
                  "<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|><|im_end|>"
                  "<|im_assistant|>assistant<|im_middle|><think>");
    /* reasoning_content is used when reasoning is absent; "reasoning" wins over it */
    expect_render("{\"messages\": [{\"role\": \"assistant\", \"reasoning_content\": \"rc\", \"tool_calls\": "
                  "[{\"id\": \"x\", \"function\": {\"arguments\": null}}]}], \"add_generation_prompt\": false}",
                  "<|im_assistant|>assistant<|im_middle|><think>rc</think><|tool_calls_section_begin|>"
                  "<|tool_call_begin|>x<|tool_call_argument_begin|>null<|tool_call_end|>"
                  "<|tool_calls_section_end|><|im_end|>");
    expect_render("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", "
                  "\"reasoning\": \"r\", \"reasoning_content\": \"rc\", \"content\": \"a\"}], "
                  "\"preserve_thinking\": true, \"add_generation_prompt\": false}",
                  "<|im_user|>user<|im_middle|>q<|im_end|><|im_assistant|>assistant<|im_middle|>"
                  "<think>r</think>a<|im_end|>");
    /* thinking off: suffix assistants get <think></think>, unless preserve_thinking */
    expect_render("{\"messages\": [{\"role\": \"assistant\", \"reasoning\": \"r\", \"tool_calls\": [{\"id\": "
                  "\"x\", \"function\": {\"arguments\": \"{}\"}}]}], \"thinking\": false}",
                  "<|im_assistant|>assistant<|im_middle|><think></think><|tool_calls_section_begin|>"
                  "<|tool_call_begin|>x<|tool_call_argument_begin|>{}<|tool_call_end|>"
                  "<|tool_calls_section_end|><|im_end|><|im_assistant|>assistant<|im_middle|>"
                  "<think></think>");
    expect_render("{\"messages\": [{\"role\": \"assistant\", \"reasoning\": \"r\", \"content\": \"a\"}], "
                  "\"thinking\": false, \"preserve_thinking\": true, \"add_generation_prompt\": false}",
                  "<|im_assistant|>assistant<|im_middle|><think>r</think>a<|im_end|>");
    /* tool_calls: [] is "no tool calls": the message is history */
    expect_render("{\"messages\": [{\"role\": \"assistant\", \"content\": \"a\", \"reasoning\": \"r\", "
                  "\"tool_calls\": []}], \"add_generation_prompt\": false}",
                  "<|im_assistant|>assistant<|im_middle|><think></think>a<|im_end|>");
    /* absent/null tool_call_id and absent content; unknown roles are system-like;
     * empty name falls back to the role; a part without type renders its text */
    expect_render("{\"messages\": [{\"role\": \"tool\"}, {\"role\": \"tool\", \"tool_call_id\": null, "
                  "\"content\": null}, {\"role\": \"developer\", \"content\": \"d\"}, {\"role\": \"user\", "
                  "\"name\": \"\"}, {\"role\": \"user\", \"name\": null, \"content\": [{\"text\": \"t\"}]}], "
                  "\"add_generation_prompt\": false}",
                  "<|im_system|>tool<|im_middle|>## Return of \n<|im_end|>"
                  "<|im_system|>tool<|im_middle|>## Return of \n<|im_end|>"
                  "<|im_system|>developer<|im_middle|>d<|im_end|>"
                  "<|im_user|>user<|im_middle|><|im_end|>"
                  "<|im_user|>user<|im_middle|>t<|im_end|>");
    /* text parts with a null or absent text and OpenAI refusal parts print
     * nothing ({{ content['text'] }}) */
    expect_render("{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": null}, "
                  "{\"type\": \"text\"}, {\"type\": \"text\", \"text\": \"q\"}]}, {\"role\": \"assistant\", "
                  "\"content\": [{\"type\": \"refusal\", \"refusal\": \"I can't.\"}]}], "
                  "\"add_generation_prompt\": false}",
                  "<|im_user|>user<|im_middle|>q<|im_end|>"
                  "<|im_assistant|>assistant<|im_middle|><think></think><|im_end|>");
    /* floats keep Python's spelling in tools and object arguments (Python
     * clients send schema bounds such as 0.0) */
    expect_render("{\"messages\": [{\"role\": \"assistant\", \"tool_calls\": [{\"id\": \"i\", \"function\": "
                  "{\"arguments\": {\"x\": 1.0, \"n\": 18446744073709551617}}}]}], \"tools\": [{\"type\": "
                  "\"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"number\", "
                  "\"minimum\": 0.0, \"maximum\": 1e16, \"default\": -0.0}}}], \"add_generation_prompt\": false}",
                  "<|im_system|>tool_declare<|im_middle|>[{\"function\":{\"name\":\"f\",\"parameters\":"
                  "{\"default\":-0.0,\"maximum\":1e+16,\"minimum\":0.0,\"type\":\"number\"}},"
                  "\"type\":\"function\"}]<|im_end|>"
                  "<|im_assistant|>assistant<|im_middle|><think></think><|tool_calls_section_begin|>"
                  "<|tool_call_begin|>i<|tool_call_argument_begin|>{\"x\": 1.0, \"n\": 18446744073709551617}"
                  "<|tool_call_end|><|tool_calls_section_end|><|im_end|>");
    /* duplicated keys: the last one wins, as with json.loads */
    expect_render("{\"messages\": [{\"role\": \"user\", \"content\": \"first\", \"content\": \"second\"}], "
                  "\"add_generation_prompt\": false}",
                  "<|im_user|>user<|im_middle|>second<|im_end|>");
    /* empty conversation, empty tools list: only the generation prompt */
    expect_render("{\"messages\": [], \"tools\": []}", "<|im_assistant|>assistant<|im_middle|><think>");
    expect_render("{\"messages\": [], \"add_generation_prompt\": false}", "");
    /* tools_ts_str is only used when tools are given */
    expect_render("{\"messages\": [], \"tools_ts_str\": \"TS\", \"add_generation_prompt\": false}", "");
    expect_render("{\"messages\": [], \"tools\": [{\"b\": 1, \"a\": [{\"d\": 2, \"c\": 1.5}]}], "
                  "\"tools_ts_str\": \"\", \"add_generation_prompt\": false}",
                  "<|im_system|>tool_declare<|im_middle|>[{\"a\":[{\"c\":1.5,\"d\":2}],\"b\":1}]<|im_end|>");
    /* object arguments keep their key order, with Python's default separators */
    expect_render("{\"messages\": [{\"role\": \"assistant\", \"tool_calls\": [{\"id\": \"i\", \"function\": "
                  "{\"arguments\": {\"z\": [1, 2.5, \"é\\n\"], \"a\": {\"y\": true, \"x\": null}}}}]}], "
                  "\"add_generation_prompt\": false}",
                  "<|im_assistant|>assistant<|im_middle|><think></think><|tool_calls_section_begin|>"
                  "<|tool_call_begin|>i<|tool_call_argument_begin|>{\"z\": [1, 2.5, \"é\\n\"], \"a\": "
                  "{\"y\": true, \"x\": null}}<|tool_call_end|><|tool_calls_section_end|><|im_end|>");
}

/* json.dumps of json.loads(json): parsed by chat_json_parse, so numbers keep
 * their spelling. */
static void expect_dump(const char *json, int flags, const char *want)
{
    cJSON *v = chat_json_parse(json, strlen(json), NULL);
    cr_assert_not_null(v, "%s", json);
    char *got = NULL;
    size_t len = 0;
    errbuf e = {{0}};
    cr_assert_eq(chat_json_dump(v, flags, &got, &len, &e), 0, "%s", e.msg);
    cr_expect_str_eq(got, want, "%s", json);
    cr_expect_eq(len, strlen(want));
    free(got);
    cJSON_Delete(v);
}

Test(chat, json_dump_like_python)
{
    /* json.dumps(x, ensure_ascii=False) for the values of json.loads(text)
     * (the expected texts are Python 3's): ints print their digits, floats
     * (a fraction or an exponent) their repr */
    expect_dump("[0, -0, 7, -12, 100000, 9007199254740992, 0.1, -2.5, 1.5e-5, 0.0001, 1e16, 1e15, 1e22, "
                "123456.789, 1e300, 2.2250738585072014e-308, 5e-324, 1.7976931348623157e308, 0.3, 1e400]",
                0,
                "[0, 0, 7, -12, 100000, 9007199254740992, 0.1, -2.5, 1.5e-05, 0.0001, 1e+16, "
                "1000000000000000.0, 1e+22, 123456.789, 1e+300, 2.2250738585072014e-308, 5e-324, "
                "1.7976931348623157e+308, 0.3, Infinity]");
    expect_dump("[1.0, -0.0, 0.0, 1E2, 1e-0, 2.50, 18446744073709551616, -9223372036854775809, "
                "9007199254740993, 123456789012345678901234567890]",
                0,
                "[1.0, -0.0, 0.0, 100.0, 1.0, 2.5, 18446744073709551616, -9223372036854775809, "
                "9007199254740993, 123456789012345678901234567890]");
    /* numbers inside strings and keys are not numbers; duplicates keep their order */
    expect_dump("{\"1.0\": \"2.0 -0\", \"k\": [\"\\\"3.0\", 4.0], \"k\": 5.0}", 0,
                "{\"1.0\": \"2.0 -0\", \"k\": 5.0}");
    expect_dump("[1.25e-7, 12345678.9, 0.000123, 3.14159e20, -1e-10]", CHAT_JSON_COMPACT,
                "[1.25e-07,12345678.9,0.000123,3.14159e+20,-1e-10]");
    expect_dump("{\"s\": \"q\\\"b\\\\n\\nr\\rt\\tb\\bf\\f\\u0001\\u001f\\u007f é 中 😀 \\u2028\"}", 0,
                "{\"s\": \"q\\\"b\\\\n\\nr\\rt\\tb\\bf\\f\\u0001\\u001f\x7f é 中 😀 \xe2\x80\xa8\"}");
    expect_dump("{\"b\": {\"z\": 1, \"y\": [{\"k\": 1, \"j\": 2}]}, \"a\": [], \"c\": {}}",
                CHAT_JSON_COMPACT | CHAT_JSON_SORT_KEYS, "{\"a\":[],\"b\":{\"y\":[{\"j\":2,\"k\":1}],\"z\":1},\"c\":{}}");
    expect_dump("{\"b\": 1, \"a\": 2, \"b\": 3}", 0, "{\"b\": 3, \"a\": 2}");
    expect_dump("{\"b\": 1, \"a\": 2, \"b\": 3}", CHAT_JSON_SORT_KEYS, "{\"a\": 2, \"b\": 3}");
    /* keys sort by code point (UTF-8 byte order), uppercase before lowercase */
    expect_dump("{\"é\": 1, \"z\": 2, \"Z\": 3, \"\": 4}", CHAT_JSON_COMPACT | CHAT_JSON_SORT_KEYS,
                "{\"\":4,\"Z\":3,\"z\":2,\"é\":1}");
    expect_dump("\"plain\"", 0, "\"plain\"");
    expect_dump("true", 0, "true");

    /* numbers without a spelling (plain cJSON, or built in code) print from
     * their double: integral ones as ints */
    cJSON *v = cJSON_Parse("[1.0, -0.0, 1e16, 2.5]");
    char *got = NULL;
    errbuf e = {{0}};
    cr_assert_eq(chat_json_dump(v, 0, &got, NULL, &e), 0, "%s", e.msg);
    cr_expect_str_eq(got, "[1, 0, 10000000000000000, 2.5]");
    free(got);
    cJSON_Delete(v);
}

/* What json.loads refuses, the parse refuses too, with *end near the fault:
 * data after the value (cJSON stops there and took it) and numbers outside
 * the JSON grammar (cJSON reads them with strtod). */
static void expect_refused_n(const char *json, size_t len, long near)
{
    const char *end = NULL;
    cJSON *v = chat_json_parse(json, len, &end);
    cr_expect_null(v, "%s was taken", json);
    cJSON_Delete(v);
    cr_expect(end && end - json == near, "%s: fault at %ld, expected %ld", json,
              end ? (long)(end - json) : -1L, near);
}

static void expect_refused(const char *json, long near)
{
    expect_refused_n(json, strlen(json), near);
}

Test(chat, json_parse_is_strict_like_python)
{
    expect_refused("{} x", 3);
    expect_refused("{\"a\": 1}\n{\"b\": 2}", 9);
    expect_refused_n("[1]\0", 4, 3);
    expect_refused("{\"a\": 01}", 6);
    expect_refused("[2, 1.]", 4);
    expect_refused("[1.e5]", 1);
    expect_refused("[-01.5]", 1);
    expect_refused_n("{\"a\": \"x\0y\"}", 11, 8);
    expect_refused("{\"a\": \"x\ny\"}", 8);
    expect_refused("{\"a\":\x01 1}", 5);
    expect_refused("[\"\\\x02\"]", 3);
    expect_dump("{\"a\":\t\"x\\ny\\\"\",\r\n\"b\": 1}", 0, "{\"a\": \"x\\ny\\\"\", \"b\": 1}");
    expect_dump(" {\"a\": [0, -0.5, 1e5]} \r\n\t", 0, "{\"a\": [0, -0.5, 100000.0]}");
}

/* ---- tool-call parsing ------------------------------------------------------------------ */

#define SEC_B "<|tool_calls_section_begin|>"
#define SEC_E "<|tool_calls_section_end|>"
#define CALL_B "<|tool_call_begin|>"
#define ARG_B "<|tool_call_argument_begin|>"
#define CALL_E "<|tool_call_end|>"

static void parse_ok(const char *text, tool_reasoning_mode mode, tool_parse_result *r)
{
    errbuf e = {{0}};
    cr_assert_eq(tool_calls_parse(text, strlen(text), mode, r, &e), 0, "%s", e.msg);
}

static void expect_call(const tool_parse_result *r, int i, const char *id, const char *name, const char *args)
{
    cr_assert_gt(r->n_calls, i, "call %d missing", i);
    cr_expect_str_eq(r->calls[i].id, id);
    cr_expect_str_eq(r->calls[i].name, name);
    cr_expect_str_eq(r->calls[i].arguments, args);
}

Test(chat, tool_calls_single)
{
    tool_parse_result r;
    parse_ok(SEC_B CALL_B "functions.get_weather:0" ARG_B "{\"city\": \"Paris\"}" CALL_E SEC_E,
             TOOL_REASONING_TAGS, &r);
    cr_expect_str_eq(r.content, "");
    cr_expect_eq(r.content_len, 0u);
    cr_expect_str_eq(r.reasoning, "");
    cr_expect_eq(r.n_calls, 1);
    cr_expect_eq(r.flags, 0);
    expect_call(&r, 0, "functions.get_weather:0", "get_weather", "{\"city\": \"Paris\"}");
    tool_parse_result_free(&r);
    /* the whitespace around the id and the arguments is not theirs (vLLM's parser) */
    parse_ok(SEC_B CALL_B " functions.f:1\n" ARG_B "\n {\"a\": \" x \"}\n\t" CALL_E SEC_E, TOOL_REASONING_TAGS, &r);
    expect_call(&r, 0, "functions.f:1", "f", "{\"a\": \" x \"}");
    tool_parse_result_free(&r);

    /* plain text: all content */
    parse_ok("Just an answer. {\"not\": \"a call\"} <b>bold</b>", TOOL_REASONING_TAGS, &r);
    cr_expect_str_eq(r.content, "Just an answer. {\"not\": \"a call\"} <b>bold</b>");
    cr_expect_eq(r.n_calls, 0);
    cr_expect_eq(r.flags, 0);
    tool_parse_result_free(&r);

    parse_ok("", TOOL_REASONING_OPEN, &r);
    cr_expect_str_eq(r.content, "");
    cr_expect_eq(r.flags, TOOL_PARSE_REASONING_OPEN);
    tool_parse_result_free(&r);
}

Test(chat, tool_calls_parallel_and_content_before)
{
    tool_parse_result r;
    parse_ok("Let me check both.\n" SEC_B " " CALL_B "functions.get_weather:0" ARG_B "{\"city\": \"北京\"}" CALL_E
             "\n" CALL_B " functions.get_weather:1 " ARG_B "{\"city\": \"上海\"}" CALL_E CALL_B "search:2" ARG_B
             "{}" CALL_E CALL_B "functions.a.b:3" ARG_B "[]" CALL_E SEC_E "<|im_end|>",
             TOOL_REASONING_TAGS, &r);
    cr_expect_str_eq(r.content, "Let me check both.\n<|im_end|>");
    cr_expect_eq(r.n_calls, 4);
    cr_expect_eq(r.flags, 0);
    expect_call(&r, 0, "functions.get_weather:0", "get_weather", "{\"city\": \"北京\"}");
    expect_call(&r, 1, "functions.get_weather:1", "get_weather", "{\"city\": \"上海\"}");
    expect_call(&r, 2, "search:2", "search:2", "{}");
    expect_call(&r, 3, "functions.a.b:3", "a.b", "[]");
    tool_parse_result_free(&r);

    /* the singular section spelling some outputs use */
    parse_ok("<|tool_call_section_begin|>" CALL_B "functions.f:0" ARG_B "{}" CALL_E "<|tool_call_section_end|>",
             TOOL_REASONING_TAGS, &r);
    cr_expect_eq(r.n_calls, 1);
    cr_expect_eq(r.flags, 0);
    tool_parse_result_free(&r);
}

/* DeepSeek's markers (the V3 family) */
#define DS_SEC_B "<｜tool▁calls▁begin｜>"
#define DS_SEC_E "<｜tool▁calls▁end｜>"
#define DS_CALL_B "<｜tool▁call▁begin｜>"
#define DS_SEP "<｜tool▁sep｜>"
#define DS_CALL_E "<｜tool▁call▁end｜>"

Test(chat, tool_calls_in_deepseek_formats)
{
    tool_parse_result r;
    /* V3: TYPE<sep>NAME, then the arguments fenced as JSON (as its template
     * writes them back); parallel calls; numbered ids from next_index 0 */
    parse_ok("Checking." DS_SEC_B DS_CALL_B "function" DS_SEP "get_weather\n```json\n{\"city\": \"Paris\"}\n```"
             DS_CALL_E "\n" DS_CALL_B "function" DS_SEP "get_time\n```json\n{\"tz\": \"CET\", \"s\": \"```\"}\n```"
             DS_CALL_E DS_SEC_E "<｜end▁of▁sentence｜>",
             TOOL_REASONING_TAGS, &r);
    cr_expect_str_eq(r.content, "Checking.<｜end▁of▁sentence｜>");
    cr_expect_eq(r.flags, 0);
    cr_assert_eq(r.n_calls, 2);
    expect_call(&r, 0, "call_0", "get_weather", "{\"city\": \"Paris\"}");
    expect_call(&r, 1, "call_1", "get_time", "{\"tz\": \"CET\", \"s\": \"```\"}");
    tool_parse_result_free(&r);
    /* V3.1: NAME<sep>ARGUMENTS, after reasoning */
    parse_ok("plan</think>" DS_SEC_B DS_CALL_B "search" DS_SEP "{\"q\": \"moe\"}" DS_CALL_E DS_SEC_E,
             TOOL_REASONING_OPEN, &r);
    cr_expect_str_eq(r.reasoning, "plan");
    cr_assert_eq(r.n_calls, 1);
    expect_call(&r, 0, "call_0", "search", "{\"q\": \"moe\"}");
    tool_parse_result_free(&r);
    /* a call without a name is dropped; an open one is reported */
    parse_ok(DS_SEC_B DS_CALL_B " " DS_SEP "{}" DS_CALL_E DS_CALL_B "f" DS_SEP "{\"a\":", TOOL_REASONING_TAGS, &r);
    cr_expect_eq(r.n_calls, 0);
    cr_expect_eq(r.flags, TOOL_PARSE_MALFORMED | TOOL_PARSE_UNTERMINATED);
    tool_parse_result_free(&r);
    /* ids go on from the calls the conversation already holds */
    tool_stream st;
    tool_stream_init(&st, TOOL_REASONING_TAGS);
    st.next_index = 3;
    tool_stream_delta d;
    errbuf e;
    const char *text = DS_SEC_B DS_CALL_B "f" DS_SEP "{}" DS_CALL_E DS_SEC_E;
    cr_assert_eq(tool_stream_feed(&st, text, strlen(text), &d, &e), 0);
    cr_assert_eq(d.n_calls, 1);
    cr_expect_str_eq(d.calls[0].id, "call_3");
    tool_stream_free(&st);
    /* the markers are the stream's, so their tokens reach it */
    cr_expect(tool_stream_marker(DS_SEP, strlen(DS_SEP)));
    cr_expect(!tool_stream_marker("<｜User｜>", strlen("<｜User｜>")));
}

#define NESTED_ARGS                                                                                     \
    "{\"code\": \"int main() { if (x) { return \\\"}\\\"; } }\", \"nested\": {\"a\": [{\"b\": {}}]}, "  \
    "\"sym\": \"<|im_end| <think> < > & \\\\ \\n \\u00e9 😀 {{ }} %\"}"

Test(chat, tool_calls_nested_braces_and_specials)
{
    tool_parse_result r;
    parse_ok(SEC_B CALL_B "functions.run_code:0" ARG_B NESTED_ARGS CALL_E SEC_E, TOOL_REASONING_TAGS, &r);
    cr_expect_eq(r.n_calls, 1);
    cr_expect_eq(r.flags, 0);
    expect_call(&r, 0, "functions.run_code:0", "run_code", NESTED_ARGS);
    cJSON *j = cJSON_Parse(r.calls[0].arguments);
    cr_expect_not_null(j, "arguments are kept as valid JSON");
    cJSON_Delete(j);
    tool_parse_result_free(&r);
}

Test(chat, tool_calls_malformed)
{
    tool_parse_result r;
    /* unterminated section: the complete call is kept */
    parse_ok("ok " SEC_B CALL_B "functions.f:0" ARG_B "{\"a\": 1}" CALL_E CALL_B "functions.g:1" ARG_B "{\"b\":",
             TOOL_REASONING_TAGS, &r);
    cr_expect_str_eq(r.content, "ok ");
    cr_expect_eq(r.n_calls, 1);
    expect_call(&r, 0, "functions.f:0", "f", "{\"a\": 1}");
    cr_expect(r.flags & TOOL_PARSE_UNTERMINATED);
    tool_parse_result_free(&r);

    /* section open, no call */
    parse_ok("x" SEC_B, TOOL_REASONING_TAGS, &r);
    cr_expect_str_eq(r.content, "x");
    cr_expect_eq(r.n_calls, 0);
    cr_expect_eq(r.flags, TOOL_PARSE_UNTERMINATED);
    tool_parse_result_free(&r);

    /* ends in the middle of a marker: that partial marker is not content */
    parse_ok("x" SEC_B CALL_B "functions.f:0<|tool_call_argu", TOOL_REASONING_TAGS, &r);
    cr_expect_str_eq(r.content, "x");
    cr_expect_eq(r.n_calls, 0);
    cr_expect(r.flags & TOOL_PARSE_UNTERMINATED);
    tool_parse_result_free(&r);

    /* a call cut short by the next call, garbage between calls, an empty id,
     * a call closed by the section end: dropped and flagged */
    parse_ok(SEC_B CALL_B "functions.a:0" ARG_B "{" CALL_B "functions.b:1" ARG_B "{}" CALL_E " junk " CALL_B
             "  " ARG_B "{}" CALL_E CALL_B "functions.c:2" CALL_E CALL_B "functions.d:3" ARG_B "{}" SEC_E "tail",
             TOOL_REASONING_TAGS, &r);
    cr_expect_eq(r.n_calls, 1);
    expect_call(&r, 0, "functions.b:1", "b", "{}");
    cr_expect_eq(r.flags, TOOL_PARSE_MALFORMED);
    cr_expect_str_eq(r.content, "tail");
    tool_parse_result_free(&r);

    /* stray markers outside a section are content */
    parse_ok(CALL_B "x" ARG_B "{}" CALL_E SEC_E "</think>", TOOL_REASONING_TAGS, &r);
    cr_expect_str_eq(r.content, CALL_B "x" ARG_B "{}" CALL_E SEC_E "</think>");
    cr_expect_eq(r.n_calls, 0);
    cr_expect_eq(r.flags, 0);
    tool_parse_result_free(&r);

    /* NUL bytes and invalid UTF-8 pass through without trouble */
    const char weird[] = "a\0b\xff\xc3" SEC_B CALL_B "f\0:0" ARG_B "\xe2\x82" CALL_E;
    errbuf e = {{0}};
    cr_assert_eq(tool_calls_parse(weird, sizeof weird - 1, TOOL_REASONING_TAGS, &r, &e), 0);
    cr_expect_eq(r.content_len, 5u);
    cr_expect_eq(memcmp(r.content, "a\0b\xff\xc3", 5), 0);
    cr_expect_eq(r.n_calls, 1);
    cr_expect(r.flags & TOOL_PARSE_UNTERMINATED);
    tool_parse_result_free(&r);
}

Test(chat, reasoning_split)
{
    tool_parse_result r;
    /* thinking on: the prompt ended with <think> */
    parse_ok("Let me think.\nStep 1.</think>The answer is 4.", TOOL_REASONING_OPEN, &r);
    cr_expect_str_eq(r.reasoning, "Let me think.\nStep 1.");
    cr_expect_str_eq(r.content, "The answer is 4.");
    cr_expect_eq(r.flags, 0);
    tool_parse_result_free(&r);

    /* the model opens the block itself */
    parse_ok("<think>hmm</think>Hi <think>more</think>!", TOOL_REASONING_TAGS, &r);
    cr_expect_str_eq(r.reasoning, "hmmmore");
    cr_expect_str_eq(r.content, "Hi !");
    tool_parse_result_free(&r);

    /* think tags as plain text */
    parse_ok("<think>hmm</think>Hi", TOOL_REASONING_NONE, &r);
    cr_expect_str_eq(r.reasoning, "");
    cr_expect_str_eq(r.content, "<think>hmm</think>Hi");
    tool_parse_result_free(&r);

    /* still thinking at the end */
    parse_ok("partial thought", TOOL_REASONING_OPEN, &r);
    cr_expect_str_eq(r.reasoning, "partial thought");
    cr_expect_str_eq(r.content, "");
    cr_expect_eq(r.flags, TOOL_PARSE_REASONING_OPEN);
    tool_parse_result_free(&r);

    /* reasoning, then a tool call; a section also ends an unclosed reasoning */
    parse_ok("need weather</think>" SEC_B CALL_B "functions.w:0" ARG_B "{}" CALL_E SEC_E, TOOL_REASONING_OPEN, &r);
    cr_expect_str_eq(r.reasoning, "need weather");
    cr_expect_str_eq(r.content, "");
    cr_expect_eq(r.n_calls, 1);
    cr_expect_eq(r.flags, 0);
    tool_parse_result_free(&r);
    parse_ok("need weather" SEC_B CALL_B "functions.w:0" ARG_B "{}" CALL_E SEC_E "done", TOOL_REASONING_OPEN, &r);
    cr_expect_str_eq(r.reasoning, "need weather");
    cr_expect_str_eq(r.content, "done");
    cr_expect_eq(r.n_calls, 1);
    tool_parse_result_free(&r);
}

/* Streaming: the text fed in pieces; deltas are concatenated. */
typedef struct acc {
    char *content, *reasoning;
    size_t nc, nr;
    tool_call calls[16];
    int n_calls, flags;
} acc;

static void append(char **dst, size_t *n, const char *s, size_t len)
{
    *dst = realloc(*dst, *n + len + 1);
    cr_assert_not_null(*dst);
    memcpy(*dst + *n, s, len);
    *n += len;
    (*dst)[*n] = 0;
}

static void acc_delta(acc *a, const tool_stream_delta *d)
{
    append(&a->content, &a->nc, d->content, d->content_len);
    append(&a->reasoning, &a->nr, d->reasoning, d->reasoning_len);
    for (int i = 0; i < d->n_calls; i++) {
        cr_assert_lt(a->n_calls, 16);
        a->calls[a->n_calls].id = strdup(d->calls[i].id);
        a->calls[a->n_calls].name = strdup(d->calls[i].name);
        a->calls[a->n_calls].arguments = strdup(d->calls[i].arguments);
        a->n_calls++;
    }
    a->flags = d->flags;
}

static void acc_free(acc *a)
{
    free(a->content);
    free(a->reasoning);
    for (int i = 0; i < a->n_calls; i++) {
        free(a->calls[i].id);
        free(a->calls[i].name);
        free(a->calls[i].arguments);
    }
}

/* Whether s[0..n) is a sequence of whole UTF-8 characters (structure only;
 * the texts fed below are valid UTF-8). */
static int utf8_whole(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
        if (len == 0 || i + len > n)
            return 0;
        for (size_t k = 1; k < len; k++)
            if (((unsigned char)s[i + k] & 0xc0) != 0x80)
                return 0;
        i += len;
    }
    return 1;
}

/* Feeds text cut at the given offsets (ascending), checking that no delta
 * ever ends inside a UTF-8 character. */
static void stream_parse(const char *text, size_t len, const size_t *cuts, int n_cuts, tool_reasoning_mode mode,
                         acc *a)
{
    memset(a, 0, sizeof *a);
    tool_stream s;
    tool_stream_init(&s, mode);
    tool_stream_delta d;
    errbuf e = {{0}};
    size_t at = 0;
    for (int i = 0; i <= n_cuts; i++) {
        size_t to = i < n_cuts ? cuts[i] : len;
        cr_assert_eq(tool_stream_feed(&s, text + at, to - at, &d, &e), 0, "%s", e.msg);
        cr_expect_eq(strlen(d.content), d.content_len);
        cr_expect(utf8_whole(d.content, d.content_len), "content delta cuts a UTF-8 character");
        cr_expect(utf8_whole(d.reasoning, d.reasoning_len), "reasoning delta cuts a UTF-8 character");
        acc_delta(a, &d);
        at = to;
    }
    cr_assert_eq(tool_stream_finish(&s, &d, &e), 0, "%s", e.msg);
    acc_delta(a, &d);
    tool_stream_free(&s);
}

static void expect_same(const acc *a, const tool_parse_result *r, const char *what)
{
    cr_expect_eq(a->nc, r->content_len, "%s: content length", what);
    cr_expect_eq(memcmp(a->content, r->content, r->content_len), 0, "%s: content \"%s\" vs \"%s\"", what,
                 a->content, r->content);
    cr_expect_eq(a->nr, r->reasoning_len, "%s: reasoning length", what);
    cr_expect_eq(memcmp(a->reasoning, r->reasoning, r->reasoning_len), 0, "%s: reasoning", what);
    cr_expect_eq(a->flags, r->flags, "%s: flags", what);
    cr_assert_eq(a->n_calls, r->n_calls, "%s: calls", what);
    for (int i = 0; i < r->n_calls; i++) {
        cr_expect_str_eq(a->calls[i].id, r->calls[i].id, "%s", what);
        cr_expect_str_eq(a->calls[i].name, r->calls[i].name, "%s", what);
        cr_expect_str_eq(a->calls[i].arguments, r->calls[i].arguments, "%s", what);
    }
}

static void check_every_split(const char *text, tool_reasoning_mode mode)
{
    size_t len = strlen(text);
    tool_parse_result r;
    parse_ok(text, mode, &r);
    acc a;
    char what[64];
    for (size_t k = 0; k <= len; k++) {
        stream_parse(text, len, &k, 1, mode, &a);
        snprintf(what, sizeof what, "cut at %zu", k);
        expect_same(&a, &r, what);
        acc_free(&a);
    }
    /* byte by byte */
    size_t *cuts = calloc(len + 1, sizeof *cuts);
    cr_assert_not_null(cuts);
    for (size_t k = 0; k < len; k++)
        cuts[k] = k + 1;
    stream_parse(text, len, cuts, (int)len, mode, &a);
    expect_same(&a, &r, "byte by byte");
    acc_free(&a);
    /* every pair of cuts 7 bytes apart */
    for (size_t k = 0; k + 7 <= len; k++) {
        size_t two[2] = {k, k + 7};
        stream_parse(text, len, two, 2, mode, &a);
        snprintf(what, sizeof what, "cuts at %zu, %zu", k, k + 7);
        expect_same(&a, &r, what);
        acc_free(&a);
    }
    free(cuts);
    tool_parse_result_free(&r);
}

Test(chat, tool_calls_stream_matches_one_shot)
{
    check_every_split("Sure — checking «Paris» 😀.\n" SEC_B CALL_B "functions.get_weather:0" ARG_B
                      "{\"city\": \"Paris\", \"q\": \"<a> {b} [c]\"}" CALL_E CALL_B "functions.web_search:1" ARG_B
                      NESTED_ARGS CALL_E SEC_E "<|im_end|>",
                      TOOL_REASONING_TAGS);
    check_every_split("思考中… <|tool_ not a marker </thin</think>答案" SEC_B CALL_B "functions.f:0" ARG_B "{}" CALL_E
                      " x " CALL_B "functions.g:1" ARG_B "{\"a\":",
                      TOOL_REASONING_OPEN);
    check_every_split("DeepSeek: " DS_SEC_B DS_CALL_B "function" DS_SEP "f\n```json\n{\"a\": \"<｜x｜>\"}\n```" DS_CALL_E
                      DS_CALL_B "g" DS_SEP "{}" DS_CALL_E DS_SEC_E " <｜tool▁ not one",
                      TOOL_REASONING_TAGS);
    check_every_split("<think>r</think><thin<think>k</think>c<|tool_call_section_begin|>" CALL_B
                      "functions.h:0" ARG_B "1" CALL_E "<|tool_call_section_end|>end<",
                      TOOL_REASONING_TAGS);
}

static int feed_str(tool_stream *s, const char *text, tool_stream_delta *d)
{
    errbuf e = {{0}};
    return tool_stream_feed(s, text, strlen(text), d, &e);
}

Test(chat, tool_stream_holds_back_only_possible_markers)
{
    tool_stream s;
    tool_stream_init(&s, TOOL_REASONING_TAGS);
    tool_stream_delta d;
    errbuf e = {{0}};
    /* which markers mean something where the stream is (a special token's
     * that does not is dropped by the server) */
    cr_expect(tool_stream_takes(&s, SEC_B, strlen(SEC_B)) && tool_stream_takes(&s, "<think>", 7));
    cr_expect(!tool_stream_takes(&s, SEC_E, strlen(SEC_E)) && !tool_stream_takes(&s, CALL_E, strlen(CALL_E)) &&
              !tool_stream_takes(&s, "</think>", 8) && !tool_stream_takes(&s, "<think", 6));
    cr_assert_eq(tool_stream_feed(&s, "Hello <|tool_ca", 15, &d, &e), 0);
    cr_expect_str_eq(d.content, "Hello ");
    cr_expect_eq(tool_stream_in_section(&s), 0);
    cr_assert_eq(tool_stream_feed(&s, "lls_section_begin|>", 19, &d, &e), 0);
    cr_expect_str_eq(d.content, "");
    cr_expect_eq(tool_stream_in_section(&s), 1);
    cr_expect(tool_stream_takes(&s, SEC_E, strlen(SEC_E)) && tool_stream_takes(&s, CALL_B, strlen(CALL_B)) &&
              !tool_stream_takes(&s, SEC_B, strlen(SEC_B)) && !tool_stream_takes(&s, ARG_B, strlen(ARG_B)));
    cr_assert_eq(feed_str(&s, CALL_B "functions.f:0" ARG_B "{\"x\": 1}", &d), 0);
    cr_expect_eq(d.n_calls, 0);
    cr_assert_eq(feed_str(&s, CALL_E, &d), 0);
    cr_expect_eq(d.n_calls, 1, "a call is delivered as soon as it closes");
    cr_expect_str_eq(d.calls[0].name, "f");
    cr_expect_str_eq(d.calls[0].arguments, "{\"x\": 1}");
    cr_assert_eq(feed_str(&s, SEC_E "a <b> c <", &d), 0);
    cr_expect_str_eq(d.content, "a <b> c ");
    cr_assert_eq(tool_stream_feed(&s, "\xe4\xb8", 2, &d, &e), 0);
    cr_expect_str_eq(d.content, "<", "'<' followed by a non-marker byte is released");
    cr_assert_eq(tool_stream_feed(&s, "\xad!", 2, &d, &e), 0);
    cr_expect_str_eq(d.content, "中!");
    cr_assert_eq(tool_stream_feed(&s, "<", 1, &d, &e), 0);
    cr_expect_str_eq(d.content, "");
    cr_assert_eq(tool_stream_finish(&s, &d, &e), 0);
    cr_expect_str_eq(d.content, "<");
    cr_expect_eq(d.flags, 0);
    tool_stream_free(&s);
}
