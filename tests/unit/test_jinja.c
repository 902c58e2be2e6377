/* The template engine (core/text/jinja*.c) against Python Jinja2's output
 * (tests/data/jinja_cases.jsonl, written by tests/tools/jinja_cases.py), and
 * against the native renderer on Kimi K2.5's own template. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/chat_format.h"
#include "core/text/chat_template.h"
#include "core/text/jinja.h"
#include "testutil.h"

static char *render(const char *tpl, const cJSON *ctx, errbuf *e)
{
    jinja_template *t = jinja_compile(tpl, strlen(tpl), e);
    if (!t)
        return NULL;
    char *out = NULL;
    jinja_render(t, ctx, &out, NULL, e);
    jinja_free(t);
    return out;
}

Test(jinja, python_jinja2_cases)
{
    size_t len;
    char *text = test_read_file("tests/data/jinja_cases.jsonl", &len);
    cr_assert_not_null(text);
    int n = 0, bad = 0, skipped = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        /* chat_json_parse keeps each number's spelling, as a request's JSON is read */
        cJSON *c = chat_json_parse(line, strlen(line), NULL);
        cr_assert_not_null(c, "bad JSON line: %.80s", line);
        const char *id = cJSON_GetObjectItem(c, "id")->valuestring;
        if (strstr(line, "\\u0000")) { /* a NUL cannot pass through cJSON's strings */
            skipped++;
            cJSON_Delete(c);
            continue;
        }
        const char *tpl = cJSON_GetObjectItem(c, "template")->valuestring;
        const cJSON *want = cJSON_GetObjectItem(c, "rendered");
        errbuf e = {{0}};
        char *got = render(tpl, cJSON_GetObjectItem(c, "context"), &e);
        n++;
        if (want && (!got || strcmp(got, want->valuestring))) {
            bad++;
            cr_log_error("%s: got %s%s%s, want \"%s\"", id, got ? "\"" : "error: ", got ? got : e.msg,
                         got ? "\"" : "", want->valuestring);
        } else if (!want && got) {
            bad++;
            cr_log_error("%s: rendered \"%s\", but Jinja2 raises", id, got);
        } else if (!want && !strstr(e.msg, "chat template line")) {
            bad++;
            cr_log_error("%s: the error does not name the line: %s", id, e.msg);
        }
        free(got);
        cJSON_Delete(c);
    }
    free(text);
    cr_expect_eq(bad, 0, "%d of %d cases differ from Jinja2", bad, n);
    cr_expect_gt(n, 150);
    cr_expect_lt(skipped, 3);
}

/* Chains the renderer would walk by recursion as deep as they are long (a
 * request's own template may be hostile): refused with the line, no crash;
 * a chain of 150 links renders (python_jinja2_cases). */
Test(jinja, long_chains_are_refused)
{
    static const struct { const char *head, *link, *tail; } chains[] = {
        {"{{ 1", " ~ 1", " }}"},        {"{{ 1", " + 1", " }}"},          {"{{ 2", " ** 1", " }}"},
        {"{{ 1", " * 1", " }}"},        {"{{ x", "|trim", " }}"},         {"{{ x", ".a", " }}"},
        {"{{ x", "[0]", " }}"},         {"{{ f", "()", " }}"},            {"{{ 1", " and 1", " }}"},
        {"{{ 1", " or 1", " }}"},       {"{% if 1", " == 1", " %}{% endif %}"},
        {"{{ 1", " if 1", " }}"},       {"{{ x", " is string", " }}"},
    };
    size_t cap = 60000 * 16 + 64;
    char *tpl = malloc(cap);
    cr_assert_not_null(tpl);
    for (size_t c = 0; c < sizeof chains / sizeof *chains; c++) {
        size_t n = (size_t)snprintf(tpl, cap, "%s", chains[c].head);
        for (int i = 0; i < 60000; i++)
            n += (size_t)snprintf(tpl + n, cap - n, "%s", chains[c].link);
        snprintf(tpl + n, cap - n, "%s", chains[c].tail);
        errbuf e = {{0}};
        char *got = render(tpl, NULL, &e);
        cr_expect_null(got, "chain %zu rendered", c);
        cr_expect(strstr(e.msg, "nest too deeply") && strstr(e.msg, "line 1"), "chain %zu: %s", c, e.msg);
        free(got);
    }
    free(tpl);
}

/* a method the engine lacks is named with its type, not as the template's
 * own undefined name; an unknown loop attribute by the loop's */
Test(jinja, missing_methods_are_named_by_type)
{
    static const struct { const char *tpl, *words; } cases[] = {
        {"{{ '{} {}'.format(1, 2) }}", "'str.format' is undefined"},
        {"{{ [1].nope(2) }}", "'list.nope' is undefined"},
        {"{% for i in [1] %}{{ loop.nope(1) }}{% endfor %}", "'loop.nope' is undefined"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        errbuf e = {{0}};
        char *got = render(cases[i].tpl, NULL, &e);
        cr_expect_null(got, "%s", cases[i].tpl);
        cr_expect(strstr(e.msg, cases[i].words) && strstr(e.msg, "line 1"), "%s: %s", cases[i].tpl, e.msg);
        free(got);
    }
}

/* %-format widths up to 4096 are printed; past that refused, not cut */
Test(jinja, format_widths_past_4096_are_refused)
{
    errbuf e = {{0}};
    char *got = render("{{ '%4096s|%.4096f' % ('a', 1) }}", NULL, &e);
    cr_assert_not_null(got, "%s", e.msg);
    cr_expect_eq(strlen(got), 4096 + 1 + 2 + 4096);
    free(got);
    static const char *const refused[] = {"{{ '%5000s' % 'a' }}", "{{ '%.4097f' % 1 }}",
                                          "{{ '%99999999999999999999d' % 1 }}"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        got = render(refused[i], NULL, &e);
        cr_expect_null(got, "%s", refused[i]);
        cr_expect(strstr(e.msg, "above 4096 is not supported"), "%s: %s", refused[i], e.msg);
        free(got);
    }
}

/* Built-ins' work is no step: a search through a long string, over and
 * over, ends at the time limit. */
Test(jinja, a_long_rendering_ends_at_the_time_limit, .timeout = 60)
{
    const char *tpl = "{% set s = 'a' * 60000000 %}{% for i in range(100000) %}{% for j in range(100) %}"
                      "{% if 'b' in s %}{% endif %}{% endfor %}{% endfor %}";
    errbuf e = {{0}};
    char *got = render(tpl, NULL, &e);
    cr_expect_null(got);
    cr_expect(strstr(e.msg, "ran longer than 10 seconds"), "%s", e.msg);
    free(got);
}

/* ---- Kimi K2.5's own template: the engine against the native renderer ---- */

static char *kimi_dir(void)
{
    char *p = test_data_path("kimi-tokenizer");
    cr_assert_not_null(p);
    if (!test_path_exists(p)) {
        free(p);
        cr_skip_test("kimi-tokenizer testdata is absent (set MOETIER_TESTDATA to ../shared/testdata)");
    }
    return p;
}

static void expect_same(const chat_template *jt, const cJSON *messages, const cJSON *tools,
                        const chat_options *o, const char *what)
{
    char *native = NULL, *got = NULL;
    errbuf e1 = {{0}}, e2 = {{0}};
    int rn = chat_format_render(CHAT_TEMPLATE_K25, messages, tools, o, &native, NULL, &e1);
    int rj = chat_template_render(jt, messages, tools, o, &got, NULL, &e2);
    cr_assert_eq(rn, 0, "%s: native: %s", what, e1.msg);
    cr_assert_eq(rj, 0, "%s: engine: %s", what, e2.msg);
    cr_assert_str_eq(got, native, "%s", what);
    free(native);
    free(got);
}

Test(jinja, kimi_k25_template_fixtures)
{
    char *dir = kimi_dir(), path[4096];
    chat_template jt;
    errbuf e = {{0}};
    cr_assert_eq(chat_template_open(dir, "jinja", &jt, &e), 0, "%s", e.msg);
    cr_assert_not_null(jt.jinja);
    snprintf(path, sizeof path, "%s/chat_cases.jsonl", dir);
    char *text = test_read_file(path, NULL);
    cr_assert_not_null(text);
    int n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *c = chat_json_parse(line, strlen(line), NULL);
        cr_assert_not_null(c);
        chat_options o;
        chat_options_default(&o);
        cr_assert_eq(chat_options_from_json(c, &o, &e), 0, "%s", e.msg);
        char *got = NULL;
        int rc = chat_template_render(&jt, cJSON_GetObjectItem(c, "messages"),
                                      cJSON_GetObjectItem(c, "tools"), &o, &got, NULL, &e);
        const char *id = cJSON_GetObjectItem(c, "id")->valuestring;
        cr_expect_eq(rc, 0, "%s: %s", id, e.msg);
        if (got)
            cr_expect_str_eq(got, cJSON_GetObjectItem(c, "rendered")->valuestring, "%s", id);
        free(got);
        cJSON_Delete(c);
        n++;
    }
    cr_expect_gt(n, 20);
    free(text);
    chat_template_close(&jt);
    free(dir);
}

/* Random conversations: roles, names, text and part contents, reasoning,
 * tool calls with string or object arguments, tools, every switch. */
static const char *pick(test_rng *g, const char *const *v, unsigned n)
{
    return v[test_rnd(g, n)];
}

static cJSON *random_text(test_rng *g)
{
    static const char *const bits[] = {"Hi", " there",       "\n",  "<think>", "</think>", "{\"a\": 1}", "é😀",
                                       "  ", "## Return of", "'q'", "\"dq\"",  "\\",       "<|im_end|>", "x"};
    char buf[256] = "";
    for (unsigned k = test_rnd(g, 5); k > 0; k--)
        strncat(buf, pick(g, bits, sizeof bits / sizeof bits[0]), sizeof buf - strlen(buf) - 1);
    return cJSON_CreateString(buf);
}

static cJSON *random_json(test_rng *g, int depth)
{
    static const char *const nums[] = {"0", "-1", "2.5", "1e20", "-0.0", "12345678901234567890", "1.0"};
    switch (test_rnd(g, depth > 2 ? 4 : 6)) {
    case 0: return random_text(g);
    case 1: return cJSON_CreateBool(test_rnd(g, 2));
    case 2: {
        const char *s = pick(g, nums, sizeof nums / sizeof nums[0]);
        return chat_json_parse(s, strlen(s), NULL);
    }
    case 3: return cJSON_CreateNull();
    case 4: {
        cJSON *a = cJSON_CreateArray();
        for (unsigned k = test_rnd(g, 3); k > 0; k--)
            cJSON_AddItemToArray(a, random_json(g, depth + 1));
        return a;
    }
    default: {
        static const char *const keys[] = {"b", "a", "type", "properties", "é", "Z", "name"};
        cJSON *o = cJSON_CreateObject();
        for (unsigned k = test_rnd(g, 4); k > 0; k--)
            cJSON_AddItemToObject(o, pick(g, keys, sizeof keys / sizeof keys[0]), random_json(g, depth + 1));
        return o;
    }
    }
}

static cJSON *random_message(test_rng *g, int i)
{
    static const char *const roles[] = {"system", "user", "assistant", "tool", "developer"};
    cJSON *m = cJSON_CreateObject();
    const char *role = pick(g, roles, 5);
    cJSON_AddStringToObject(m, "role", role);
    if (!test_rnd(g, 6))
        cJSON_AddStringToObject(m, "name", test_rnd(g, 2) ? "bob" : "");
    switch (test_rnd(g, 4)) {
    case 0: break;
    case 1: cJSON_AddNullToObject(m, "content"); break;
    case 2: {
        cJSON *parts = cJSON_AddArrayToObject(m, "content");
        static const char *const types[] = {"text", "image_url", "video", "image"};
        for (unsigned k = test_rnd(g, 3); k > 0; k--) {
            cJSON *p = cJSON_CreateObject();
            const char *type = pick(g, types, 4);
            cJSON_AddStringToObject(p, "type", type);
            if (!strcmp(type, "text"))
                cJSON_AddItemToObject(p, "text", random_text(g));
            cJSON_AddItemToArray(parts, p);
        }
        break;
    }
    default: cJSON_AddItemToObject(m, "content", random_text(g));
    }
    if (!strcmp(role, "assistant")) {
        if (test_rnd(g, 2))
            cJSON_AddItemToObject(m, test_rnd(g, 3) ? "reasoning_content" : "reasoning", random_text(g));
        if (test_rnd(g, 2)) {
            cJSON *calls = cJSON_AddArrayToObject(m, "tool_calls");
            for (unsigned k = test_rnd(g, 3); k > 0; k--) {
                cJSON *c = cJSON_CreateObject(), *fn = cJSON_CreateObject();
                char id[32];
                snprintf(id, sizeof id, "functions.f:%d", i);
                cJSON_AddStringToObject(c, "id", id);
                cJSON_AddStringToObject(fn, "name", "f");
                if (test_rnd(g, 2)) {
                    cJSON_AddStringToObject(fn, "arguments", "{\"x\": 1}");
                } else {
                    cJSON *args = cJSON_CreateObject();
                    cJSON_AddItemToObject(args, "q", random_json(g, 1));
                    cJSON_AddItemToObject(fn, "arguments", args);
                }
                cJSON_AddItemToObject(c, "function", fn);
                cJSON_AddItemToArray(calls, c);
            }
        }
    }
    if (!strcmp(role, "tool"))
        cJSON_AddStringToObject(m, "tool_call_id", "functions.f:0");
    return m;
}

Test(jinja, kimi_k25_template_random_conversations)
{
    char *dir = kimi_dir();
    chat_template jt;
    errbuf e = {{0}};
    cr_assert_eq(chat_template_open(dir, "jinja", &jt, &e), 0, "%s", e.msg);
    test_rng g = {20261206};
    for (int it = 0; it < 3000; it++) {
        cJSON *messages = cJSON_CreateArray(), *tools = NULL;
        for (unsigned k = test_rnd(&g, 7); k > 0; k--)
            cJSON_AddItemToArray(messages, random_message(&g, (int)k));
        if (test_rnd(&g, 3) == 0) {
            tools = cJSON_CreateArray();
            for (unsigned k = 1 + test_rnd(&g, 2); k > 0; k--)
                cJSON_AddItemToArray(tools, random_json(&g, 0));
        }
        /* a switch not given is its default, which the template assumes when it is undefined */
        int thinking_set = (int)test_rnd(&g, 2), preserve_set = (int)test_rnd(&g, 2);
        chat_options o = {.add_generation_prompt = (int)test_rnd(&g, 2),
                          .thinking = thinking_set ? (int)test_rnd(&g, 2) : 1,
                          .preserve_thinking = preserve_set ? (int)test_rnd(&g, 2) : 0,
                          .tools_ts_str = test_rnd(&g, 4) ? NULL : "TS",
                          .thinking_set = thinking_set,
                          .preserve_set = preserve_set};
        char what[64];
        snprintf(what, sizeof what, "random conversation %d", it);
        expect_same(&jt, messages, tools, &o, what);
        cJSON_Delete(messages);
        cJSON_Delete(tools);
    }
    chat_template_close(&jt);
    free(dir);
}

Test(jinja, where_a_prompt_leaves_the_answer)
{
    static const struct {
        const char *text;
        reasoning_start start;
    } cases[] = {
        {"<|im_assistant|>assistant<|im_middle|><think>", REASONING_OPEN},   /* K2.5, thinking on */
        {"<|im_assistant|>assistant<|im_middle|><think>\n", REASONING_OPEN}, /* a template breaking the line */
        {"<|im_assistant|>assistant<|im_middle|><think></think>", REASONING_CLOSED}, /* K2.5, thinking off */
        {"<|im_assistant|>assistant<|im_middle|><think></think>\n ", REASONING_CLOSED},
        {"<|im_assistant|>assistant<|im_middle|>", REASONING_MODEL}, /* K2-Thinking: the model opens it */
        {"<think>", REASONING_OPEN},
        {"think>", REASONING_MODEL},
        {"/think>", REASONING_MODEL},
        {"", REASONING_MODEL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_expect_eq(chat_prompt_reasoning(cases[i].text, strlen(cases[i].text)), cases[i].start, "%s",
                     cases[i].text);
}

/* A request's chat_template_kwargs reach an interpreted template, over the
 * tokenizer's special tokens but not over messages or the switches. */
Test(jinja, template_kwargs_and_special_tokens)
{
    char *tmp = test_make_tmpdir("jinjavars"), path[4096];
    snprintf(path, sizeof path, "%s/chat_template.jinja", tmp);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("{{ bos_token }}|{{ eos_token }}|{{ greeting | default('none') }}|{{ messages | length }}|"
          "{{ thinking }}",
          f);
    fclose(f);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", tmp);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("{\"bos_token\": \"[BOS]\", \"eos_token\": {\"content\": \"[EOS]\"}}", f);
    fclose(f);
    chat_template t;
    errbuf e = {{0}};
    cr_assert_eq(chat_template_open(tmp, NULL, &t, &e), 0, "%s", e.msg);
    cJSON *msgs = cJSON_Parse("[{\"role\": \"user\", \"content\": \"Hi\"}]");
    cJSON *kw =
        cJSON_Parse("{\"greeting\": \"hey\", \"bos_token\": \"<s>\", \"messages\": [], \"thinking\": 7}");
    chat_options o;
    chat_options_default(&o);
    char *out = NULL;
    cr_assert_eq(chat_template_render(&t, msgs, NULL, &o, &out, NULL, &e), 0, "%s", e.msg);
    cr_expect_str_eq(out, "[BOS]|[EOS]|none|1|",
                     "thinking not given is undefined, as Hugging Face leaves it");
    free(out);
    o.vars = kw;
    o.thinking = 0;
    o.thinking_set = 1;
    cr_assert_eq(chat_template_render(&t, msgs, NULL, &o, &out, NULL, &e), 0, "%s", e.msg);
    cr_expect_str_eq(out, "<s>|[EOS]|hey|1|False");
    free(out);
    cJSON_Delete(kw);
    cJSON_Delete(msgs);
    chat_template_close(&t);
    test_remove_tree(tmp);
    free(tmp);
}

/* tools reach a template in the request's key order, as transformers gives
 * them; Kimi's tokenizer (tiktoken.model) deep-sorts their keys first, as its
 * apply_chat_template does. */
Test(jinja, tools_sorted_only_for_kimis_tokenizer)
{
    char *tmp = test_make_tmpdir("jinjatools"), path[4096];
    snprintf(path, sizeof path, "%s/chat_template.jinja", tmp);
    test_write_file(path, "{{ tools | tojson }}", 20);
    cJSON *msgs = cJSON_Parse("[{\"role\": \"user\", \"content\": \"Hi\"}]");
    cJSON *tools = cJSON_Parse("[{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": "
                               "{\"type\": \"object\", \"properties\": {\"query\": {}, \"limit\": {}}}}}]");
    const char *want[2] = {
        "[{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"object\", "
        "\"properties\": {\"query\": {}, \"limit\": {}}}}}]",
        "[{\"function\": {\"name\": \"f\", \"parameters\": {\"properties\": {\"limit\": {}, \"query\": {}}, "
        "\"type\": \"object\"}}, \"type\": \"function\"}]"};
    for (int kimi = 0; kimi < 2; kimi++) {
        if (kimi) {
            snprintf(path, sizeof path, "%s/tiktoken.model", tmp);
            test_write_file(path, "", 0);
        }
        chat_template t;
        errbuf e = {{0}};
        cr_assert_eq(chat_template_open(tmp, NULL, &t, &e), 0, "%s", e.msg);
        char *out = NULL;
        cr_assert_eq(chat_template_render(&t, msgs, tools, NULL, &out, NULL, &e), 0, "%s", e.msg);
        cr_expect_str_eq(out, want[kimi], "Kimi's tokenizer: %d", kimi);
        free(out);
        chat_template_close(&t);
    }
    cJSON_Delete(tools);
    cJSON_Delete(msgs);
    test_remove_tree(tmp);
    free(tmp);
}

/* Indexing the request's arrays: short ones walked, long ones read once; both
 * must give every index as Python does (negative ones, past the end). */
Test(jinja, indexing_long_and_short_arrays)
{
    for (int len = 5; len <= 200; len += 65) {
        cJSON *ctx = cJSON_CreateObject(), *xs = cJSON_AddArrayToObject(ctx, "xs");
        for (int i = 0; i < len; i++)
            cJSON_AddItemToArray(xs, cJSON_CreateNumber(i * 7));
        char want[8192] = "";
        size_t o = 0;
        for (int i = len - 1; i >= -len - 1; i -= 3) {
            int k = i < 0 ? i + len : i; /* Python's index; -len - 1 is past the start */
            if (k >= 0 && k < len)
                o += (size_t)snprintf(want + o, sizeof want - o, "%d,", k * 7);
            else
                o += (size_t)snprintf(want + o, sizeof want - o, "?,");
        }
        snprintf(want + o, sizeof want - o, "%d", len * 7 - 7);
        errbuf e = {{0}};
        char *got = render("{% for i in range(xs|length - 1, -(xs|length) - 2, -3) %}"
                           "{{ xs[i] if xs[i] is defined else '?' }},{% endfor %}{{ xs[-1] }}",
                           ctx, &e);
        cr_assert_not_null(got, "%s", e.msg);
        cr_expect_str_eq(got, want, "an array of %d", len);
        free(got);
        cJSON_Delete(ctx);
    }
}

/* continue_final_message: the prompt ends where the template printed the end
 * of the last message's text, as transformers finds it (a marker appended to
 * the text): kept whitespace kept, trimmed whitespace gone, the last text part,
 * the last message even when an earlier one says the same. */
static void expect_continue(const char *tpl, const char *messages_json, const char *want)
{
    jinja_template *j = jinja_compile(tpl, strlen(tpl), NULL);
    cr_assert_not_null(j, "%s", tpl);
    chat_template t = {.jinja = j};
    cJSON *m = cJSON_Parse(messages_json);
    cr_assert_not_null(m);
    chat_options o;
    chat_options_default(&o);
    o.add_generation_prompt = 0;
    char *out = NULL;
    size_t len = 0;
    errbuf e = {{0}};
    int rc = chat_template_render_continue(&t, m, NULL, &o, &out, &len, &e);
    if (want) {
        cr_expect_eq(rc, 0, "%s: %s", messages_json, e.msg);
        cr_expect_str_eq(out ? out : "", want, "%s through %s", messages_json, tpl);
        cr_expect_eq(len, strlen(want));
    } else {
        cr_expect_neq(rc, 0, "%s: should be refused", messages_json);
        cr_expect_null(out);
        cr_expect(strstr(e.msg, "continue_final_message") != NULL, "%s", e.msg);
    }
    free(out);
    cJSON_Delete(m);
    jinja_free(j);
}

Test(jinja, continue_final_message_ends_the_prompt_in_the_last_message)
{
    const char *keep = "{% for m in messages %}<{{ m.role[0] }}>{{ m.content }}<e>{% endfor %}";
    const char *trim = "{% for m in messages %}<{{ m.role[0] }}>{{ m.content | trim }}<e>{% endfor %}";
    const char *parts =
        "{% for m in messages %}<{{ m.role[0] }}>{% for p in m.content %}{{ p.text }}|{% endfor %}"
        "<e>{% endfor %}";
    expect_continue(keep, "[{\"role\": \"assistant\", \"content\": \"Hello wor\"}]", "<a>Hello wor");
    expect_continue(keep, "[{\"role\": \"assistant\", \"content\": \"Hello \"}]", "<a>Hello ");
    expect_continue(trim, "[{\"role\": \"assistant\", \"content\": \"Hello \"}]", "<a>Hello");
    expect_continue(keep, "[{\"role\": \"assistant\", \"content\": \" Hi\"}]", "<a> Hi");
    expect_continue(
        keep,
        "[{\"role\": \"user\", \"content\": \"same\"}, {\"role\": \"assistant\", \"content\": \"same\"}]",
        "<u>same<e><a>same");
    expect_continue(
        parts,
        "[{\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"text\": \"one\"}, "
        "{\"type\": \"image\"}, {\"type\": \"text\", \"text\": \"two\"}, {\"type\": \"image\"}]}]",
        "<a>one||two");
    expect_continue(keep, "[{\"role\": \"assistant\", \"content\": [{\"type\": \"image\"}]}]", NULL);
    expect_continue("{% for m in messages %}<{{ m.role }}><e>{% endfor %}",
                    "[{\"role\": \"assistant\", \"content\": \"gone\"}]", NULL);
    expect_continue(keep, "[]", NULL);
}
