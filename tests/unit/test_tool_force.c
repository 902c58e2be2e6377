/* tool_force on Kimi's vocabulary: a forced call's tokens are each allowed
 * where the format has them and the alternatives refused (another marker, a
 * function not allowed, arguments the parameters do not take, text after the
 * section); "required" picks among the functions and may call again. The same
 * in DeepSeek-V3.1's format on a DeepSeek-like vocabulary, and which format a
 * model's template writes. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/jinja.h"
#include "core/text/tokenizer.h"
#include "core/text/tokenizer_json.h"
#include "core/text/tool_force.h"
#include "hf_tokenizer_file.h"
#include "testutil.h"

static const char *tools_json =
    "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": {\"type\": "
    "\"object\", \"properties\": {\"city\": {\"enum\": [\"Paris\", \"Rome\"]}, \"days\": {\"type\": "
    "\"integer\", \"minimum\": 1}}, \"required\": [\"city\"], \"additionalProperties\": false}}}, "
    "{\"type\": \"function\", \"function\": {\"name\": \"get_time\"}}]";

typedef struct fixture {
    tokenizer tok;
    json_vocab jv;
    cJSON *tools;
    float *logits;
    int V, end;
} fixture;

/* (skips the test when the testdata is absent) */
/* the rest of a fixture once its tokenizer is loaded */
static void fixture_on(fixture *x, const char *end)
{
    errbuf e;
    cr_assert_eq(json_vocab_build(&x->jv, &x->tok.v, &e), 0, "%s", e.msg);
    x->tools = cJSON_Parse(tools_json);
    x->V = x->tok.v.n_vocab;
    x->logits = malloc((size_t)x->V * sizeof *x->logits);
    x->end = vocab_find_special(&x->tok.v, end);
}

static void load(fixture *x)
{
    test_kimi_tokenizer_or_skip(&x->tok);
    fixture_on(x, "<|im_end|>");
}

/* A DeepSeek-family vocabulary: the 256 bytes, then the end token and
 * DeepSeek's tool-call markers (ids 256-261) */
static const char *const deepseek_specials[] = {"<｜end▁of▁sentence｜>", "<｜tool▁calls▁begin｜>",
                                                "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>",
                                                "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"};

static void load_vocab(fixture *x, int deepseek)
{
    errbuf e;
    cJSON *root = hf_tokenizer_file(NULL, 0, NULL, 0);
    cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    for (int i = 0; deepseek && i < 6; i++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddNumberToObject(t, "id", 256 + i);
        cJSON_AddStringToObject(t, "content", deepseek_specials[i]);
        cJSON_AddBoolToObject(t, "special", 1);
        cJSON_AddItemToArray(added, t);
    }
    char *text = cJSON_PrintUnformatted(root);
    cr_assert_eq(tokenizer_json_parse(&x->tok, text, strlen(text), "t/tokenizer.json", NULL, 0,
                                      "t/tokenizer_config.json", 0, &e), 0, "%s", e.msg);
    free(text);
    cJSON_Delete(root);
    fixture_on(x, deepseek_specials[0]);
}

static void unload(fixture *x)
{
    free(x->logits);
    cJSON_Delete(x->tools);
    json_vocab_free(&x->jv);
    tokenizer_free(&x->tok);
}

/* whether id may come next (the mask run on fresh logits) */
static int allowed(fixture *x, const tool_force *f, int id)
{
    for (int i = 0; i < x->V; i++)
        x->logits[i] = 0.0f;
    tool_force_mask(f, &x->jv, &x->end, 1, x->logits, x->V);
    return x->logits[id] == 0.0f;
}

/* feeds text token by token, each checked allowed first */
static void feed_text(fixture *x, tool_force *f, const char *text)
{
    token_list ids = {0};
    errbuf e;
    cr_assert_eq(tokenizer_encode(&x->tok, text, strlen(text), 0, &ids, &e), 0, "%s", e.msg);
    for (size_t i = 0; i < ids.n; i++) {
        cr_assert(allowed(x, f, ids.ids[i]), "'%s': token %zu (%d) refused", text, i, ids.ids[i]);
        tool_force_accept(f, ids.ids[i]);
    }
    token_list_free(&ids);
}

/* whether the whole piece may come next, token after token (on a copy) */
static int text_allowed(fixture *x, const tool_force *f, const char *piece)
{
    token_list ids = {0};
    errbuf e;
    cr_assert_eq(tokenizer_encode(&x->tok, piece, strlen(piece), 0, &ids, &e), 0, "%s", e.msg);
    tool_force t = *f;
    int ok = 1;
    for (size_t i = 0; i < ids.n && ok; i++) {
        ok = allowed(x, &t, ids.ids[i]);
        tool_force_accept(&t, ids.ids[i]);
    }
    token_list_free(&ids);
    return ok;
}

Test(tool_force, a_named_call_token_by_token, .timeout = 60)
{
    fixture x;
    load(&x);
    tool_force f;
    errbuf e;
    cr_assert_eq(tool_force_init(&f, &x.tok.v, TOOL_FORMAT_KIMI, x.tools, "get_weather", &e), 0, "%s", e.msg);
    cr_expect(!text_allowed(&x, &f, "Sure"), "text before the section");
    cr_expect(!allowed(&x, &f, f.call_begin));
    cr_assert(allowed(&x, &f, f.section_begin));
    tool_force_accept(&f, f.section_begin);
    cr_assert(allowed(&x, &f, f.call_begin));
    tool_force_accept(&f, f.call_begin);
    cr_expect(!text_allowed(&x, &f, "functions.get_time:0"), "a function not named");
    cr_expect(!allowed(&x, &f, f.argument_begin), "the id is not written yet");
    feed_text(&x, &f, "functions.get_weather:0");
    cr_assert(allowed(&x, &f, f.argument_begin));
    tool_force_accept(&f, f.argument_begin);
    cr_expect(!allowed(&x, &f, f.call_end), "arguments first");
    feed_text(&x, &f, "{\"city\": \"");
    cr_expect(!text_allowed(&x, &f, "London"), "not in the enum");
    feed_text(&x, &f, "Paris\", \"days\": 3");
    cr_expect(!text_allowed(&x, &f, ".5"), "days is an integer");
    cr_expect(!allowed(&x, &f, f.call_end), "the object is still open");
    feed_text(&x, &f, "}");
    cr_assert(allowed(&x, &f, f.call_end));
    tool_force_accept(&f, f.call_end);
    cr_expect(!allowed(&x, &f, f.call_begin), "a named function is called once");
    cr_assert(allowed(&x, &f, f.section_end));
    tool_force_accept(&f, f.section_end);
    cr_expect(allowed(&x, &f, x.end));
    cr_expect(!text_allowed(&x, &f, "Done"), "text after the section");
    tool_force_free(&f);
    cr_expect_neq(tool_force_init(&f, &x.tok.v, TOOL_FORMAT_KIMI, x.tools, "nope", &e), 0);
    cr_expect(strstr(e.msg, "'nope'") != NULL, "%s", e.msg);
    unload(&x);
}

Test(tool_force, required_picks_a_function_and_may_call_again, .timeout = 60)
{
    fixture x;
    load(&x);
    tool_force f;
    errbuf e;
    cr_assert_eq(tool_force_init(&f, &x.tok.v, TOOL_FORMAT_KIMI, x.tools, NULL, &e), 0, "%s", e.msg);
    tool_force_accept(&f, f.section_begin);
    tool_force_accept(&f, f.call_begin);
    feed_text(&x, &f, "functions.get_time:0");
    tool_force_accept(&f, f.argument_begin);
    feed_text(&x, &f, "{\"anything\": [1, 2]}");   /* no parameters: any object */
    tool_force_accept(&f, f.call_end);
    cr_assert(allowed(&x, &f, f.call_begin), "required: another call may follow");
    tool_force_accept(&f, f.call_begin);
    cr_expect(!text_allowed(&x, &f, "functions.get_time:0"), "the second call is number 1");
    feed_text(&x, &f, "functions.get_weather:1");
    tool_force_accept(&f, f.argument_begin);
    feed_text(&x, &f, "{\"city\": \"Rome\"}");
    tool_force_accept(&f, f.call_end);
    tool_force_accept(&f, f.section_end);
    cr_expect(allowed(&x, &f, x.end));
    tool_force_restart(&f);
    cr_expect(allowed(&x, &f, f.section_begin), "restarted: the section again");
    tool_force_free(&f);
    unload(&x);
}

/* Tokens the mask refused but taken anyway (a test's forced answer) leave the
 * constraint in a state it can go on from: an id no function has keeps the
 * function before, and its arguments are read against its parameters. */
Test(tool_force, tokens_taken_against_the_mask_leave_a_usable_state, .timeout = 60)
{
    fixture x;
    load(&x);
    tool_force f;
    errbuf e;
    cr_assert_eq(tool_force_init(&f, &x.tok.v, TOOL_FORMAT_KIMI, x.tools, NULL, &e), 0, "%s", e.msg);
    f.first_call = 3;
    tool_force_accept(&f, f.section_begin);
    tool_force_accept(&f, f.call_begin);
    token_list ids = {0};
    cr_assert_eq(tokenizer_encode(&x.tok, "functions.get_weather:0", 23, 0, &ids, &e), 0, "%s", e.msg);
    for (size_t i = 0; i < ids.n; i++)
        tool_force_accept(&f, ids.ids[i]);     /* the number is 3 here: refused, taken */
    token_list_free(&ids);
    tool_force_accept(&f, f.argument_begin);
    cr_assert(text_allowed(&x, &f, "{\"city\": \"Paris\"}"), "the first function's parameters");
    tool_force_free(&f);
    unload(&x);
}

/* whether the mask leaves every logit as it was */
static int untouched(fixture *x, const tool_force *f)
{
    for (int i = 0; i < x->V; i++)
        x->logits[i] = 0.0f;
    int n = tool_force_mask(f, &x->jv, &x->end, 1, x->logits, x->V);
    for (int i = 0; i < x->V; i++)
        if (x->logits[i] != 0.0f)
            return 0;
    return n > 0;
}

Test(tool_force, lazy_leaves_the_answer_free_until_its_section_then_holds_it, .timeout = 60)
{
    fixture x;
    load(&x);
    tool_force f;
    errbuf e;
    cr_assert_eq(tool_force_init_lazy(&f, &x.tok.v, TOOL_FORMAT_KIMI, x.tools, &e), 0, "%s", e.msg);
    f.first_call = 2;   /* two calls earlier in the conversation */
    cr_expect(untouched(&x, &f), "free before the section");
    feed_text(&x, &f, "Let me check: <think> functions.get_time:0 {\"city\": 1}");
    tool_force_accept(&f, f.call_begin);    /* a stray marker outside a section holds nothing */
    cr_expect(untouched(&x, &f), "still free");
    tool_force_accept(&f, f.section_begin);
    cr_expect(!allowed(&x, &f, x.end), "a section is not left empty");
    cr_expect(!text_allowed(&x, &f, "Sure"));
    cr_assert(allowed(&x, &f, f.call_begin));
    tool_force_accept(&f, f.call_begin);
    cr_expect(!text_allowed(&x, &f, "functions.get_weather:0"), "the conversation's calls are counted");
    cr_expect(!text_allowed(&x, &f, "functions.get_wind:2"), "not a tool");
    feed_text(&x, &f, "functions.get_weather:2");
    tool_force_accept(&f, f.argument_begin);
    cr_expect(!text_allowed(&x, &f, "{\"city\": \"Oslo\""), "the parameters hold");
    feed_text(&x, &f, "{\"city\": \"Rome\"}");
    tool_force_accept(&f, f.call_end);
    cr_assert(allowed(&x, &f, f.call_begin), "auto: more calls may follow");
    tool_force_accept(&f, f.call_begin);
    feed_text(&x, &f, "functions.get_time:3");
    tool_force_accept(&f, f.argument_begin);
    feed_text(&x, &f, "{}");
    tool_force_accept(&f, f.call_end);
    tool_force_accept(&f, f.section_end);
    cr_expect(allowed(&x, &f, x.end));
    cr_expect(!text_allowed(&x, &f, "Done"), "the answer ends with its section");
    tool_force_restart(&f);
    cr_expect(untouched(&x, &f), "restarted: free again");
    tool_force_free(&f);
    unload(&x);
}

/* a tools array of n functions named fK, the first with the parameters given */
static cJSON *many_tools(int n, const char *first_params)
{
    cJSON *tools = cJSON_CreateArray();
    for (int k = 0; k < n; k++) {
        char name[16];
        snprintf(name, sizeof name, "f%d", k);
        cJSON *t = cJSON_CreateObject(), *fn = cJSON_AddObjectToObject(t, "function");
        cJSON_AddStringToObject(t, "type", "function");
        cJSON_AddStringToObject(fn, "name", name);
        if (!k && first_params)
            cJSON_AddItemToObject(fn, "parameters", cJSON_Parse(first_params));
        cJSON_AddItemToArray(tools, t);
    }
    return tools;
}

Test(tool_force, lazy_takes_what_clients_send_and_says_what_it_cannot_hold, .timeout = 60)
{
    fixture x;
    load(&x);
    tool_force f;
    errbuf e;
    /* parameters the schema compiler refuses: a forced call names them, a lazy one takes any object */
    cJSON *bad = many_tools(2, "{\"type\": \"object\", \"properties\": {\"a\": {\"$ref\": \"#/$defs/none\"}}}");
    cr_expect_neq(tool_force_init(&f, &x.tok.v, TOOL_FORMAT_KIMI, bad, NULL, &e), 0);
    cr_expect(strstr(e.msg, "function 'f0': parameters") != NULL, "%s", e.msg);
    cr_assert_eq(tool_force_init_lazy(&f, &x.tok.v, TOOL_FORMAT_KIMI, bad, &e), 0, "%s", e.msg);
    tool_force_accept(&f, f.section_begin);
    tool_force_accept(&f, f.call_begin);
    feed_text(&x, &f, "functions.f0:0");
    tool_force_accept(&f, f.argument_begin);
    cr_expect(!text_allowed(&x, &f, "[1"), "parameters are an object");
    feed_text(&x, &f, "{\"a\": [1, {\"b\": null}]}");
    cr_expect(allowed(&x, &f, f.call_end));
    tool_force_free(&f);
    cJSON_Delete(bad);
    /* Moonshot's limit of tools is held; one more leaves the calls free */
    cJSON *most = many_tools(TOOL_FORCE_MAX_FUNCTIONS, NULL), *more = many_tools(TOOL_FORCE_MAX_FUNCTIONS + 1, NULL);
    cr_assert_eq(tool_force_init_lazy(&f, &x.tok.v, TOOL_FORMAT_KIMI, most, &e), 0, "%s", e.msg);
    tool_force_accept(&f, f.section_begin);
    tool_force_accept(&f, f.call_begin);
    char last[32];
    snprintf(last, sizeof last, "functions.f%d:0", TOOL_FORCE_MAX_FUNCTIONS - 1);
    feed_text(&x, &f, last);
    cr_expect(allowed(&x, &f, f.argument_begin));
    tool_force_free(&f);
    cr_expect_neq(tool_force_init_lazy(&f, &x.tok.v, TOOL_FORMAT_KIMI, more, &e), 0);
    cr_expect(strstr(e.msg, "more than 128 tools") != NULL, "%s", e.msg);
    cJSON_Delete(most);
    cJSON_Delete(more);
    /* a name the id cannot hold */
    cJSON *spaced = cJSON_Parse("[{\"type\": \"function\", \"function\": {\"name\": \"get time\"}}]");
    cr_expect_neq(tool_force_init_lazy(&f, &x.tok.v, TOOL_FORMAT_KIMI, spaced, &e), 0);
    cr_expect(strstr(e.msg, "'get time'") != NULL, "%s", e.msg);
    cJSON_Delete(spaced);
    unload(&x);
}

Test(tool_force, a_named_call_in_deepseek_v3_1s_format, .timeout = 60)
{
    fixture x;
    load_vocab(&x, 1);
    tool_force f;
    errbuf e;
    cr_assert_eq(tool_force_init(&f, &x.tok.v, TOOL_FORMAT_DEEPSEEK, x.tools, "get_weather", &e), 0, "%s",
                 e.msg);
    cr_expect_eq(f.section_begin, 257);
    cr_expect_eq(f.argument_begin, 261);
    cr_expect(!text_allowed(&x, &f, "Sure"), "text before the section");
    tool_force_accept(&f, f.section_begin);
    cr_assert(allowed(&x, &f, f.call_begin));
    tool_force_accept(&f, f.call_begin);
    cr_expect(!text_allowed(&x, &f, "functions.get_weather:0"), "Kimi's id");
    cr_expect(!text_allowed(&x, &f, "get_time"), "a function not named");
    feed_text(&x, &f, "get_weat");
    cr_expect(!allowed(&x, &f, f.argument_begin), "the name is not whole");
    feed_text(&x, &f, "her");
    cr_assert(allowed(&x, &f, f.argument_begin));
    tool_force_accept(&f, f.argument_begin);
    feed_text(&x, &f, "{\"city\": \"");
    cr_expect(!text_allowed(&x, &f, "London"), "not in the enum");
    feed_text(&x, &f, "Rome\"}");
    cr_assert(allowed(&x, &f, f.call_end));
    tool_force_accept(&f, f.call_end);
    cr_expect(!allowed(&x, &f, f.call_begin), "a named function is called once");
    tool_force_accept(&f, f.section_end);
    cr_expect(allowed(&x, &f, x.end));
    cr_expect(!text_allowed(&x, &f, "Done"), "text after the section");
    tool_force_free(&f);
    /* Kimi's markers are not in this vocabulary */
    cr_expect_neq(tool_force_init(&f, &x.tok.v, TOOL_FORMAT_KIMI, x.tools, NULL, &e), 0);
    cr_expect(strstr(e.msg, "<|tool_calls_section_begin|>") != NULL, "%s", e.msg);
    cr_expect_neq(tool_force_init(&f, &x.tok.v, TOOL_FORMAT_NONE, x.tools, NULL, &e), 0);
    unload(&x);
}

/* the format detected with a template of this source (NULL: none) */
static tool_format detect(const vocab *v, const char *src, char *why, size_t cap)
{
    errbuf e;
    chat_template t = {.kind = CHAT_TEMPLATE_K25};
    if (src)
        cr_assert_not_null(t.jinja = jinja_compile(src, strlen(src), &e), "%s", e.msg);
    tool_format f = tool_format_detect(src ? &t : NULL, v, why, cap);
    jinja_free(t.jinja);
    return f;
}

/* A model's format is the one its template writes an assistant's calls in:
 * V3.1's NAME<sep>ARGS or V3's TYPE<sep>NAME with fenced JSON */
Test(tool_force, the_format_is_the_one_the_template_writes)
{
    const char *loop = "{%- for m in messages %}{%- if m.tool_calls %}<｜tool▁calls▁begin｜>"
                       "{%- for t in m.tool_calls %}";
    const char *end = "{%- endfor %}<｜tool▁calls▁end｜>{%- else %}{{ m.content }}{%- endif %}{%- endfor %}";
    char v31[1024], v3[1024], why[200];
    snprintf(v31, sizeof v31, "%s{{ '<｜tool▁call▁begin｜>' + t.function.name + '<｜tool▁sep｜>' + "
             "t.function.arguments + '<｜tool▁call▁end｜>' }}%s", loop, end);
    snprintf(v3, sizeof v3, "%s{{ '<｜tool▁call▁begin｜>' + t.type + '<｜tool▁sep｜>' + t.function.name + "
             "'\\n```json\\n' + t.function.arguments + '\\n```<｜tool▁call▁end｜>' }}%s", loop, end);
    fixture x;
    load_vocab(&x, 1);
    cr_expect_eq(detect(&x.tok.v, v31, why, sizeof why), TOOL_FORMAT_DEEPSEEK, "%s", why);
    cr_expect_eq(detect(&x.tok.v, v3, why, sizeof why), TOOL_FORMAT_DEEPSEEK_V3, "%s", why);
    cr_expect_eq(detect(&x.tok.v, "{{ messages[0].content }}", why, sizeof why), TOOL_FORMAT_NONE);
    cr_expect(strstr(why, "neither DeepSeek-V3's nor V3.1's calls") != NULL, "%s", why);
    cr_expect_eq(detect(&x.tok.v, NULL, why, sizeof why), TOOL_FORMAT_NONE);
    unload(&x);
    load_vocab(&x, 0);
    cr_expect_eq(detect(&x.tok.v, v31, why, sizeof why), TOOL_FORMAT_NONE);
    cr_expect(strstr(why, "neither Kimi's nor DeepSeek's") != NULL, "%s", why);
    unload(&x);
    load(&x);
    cr_expect_eq(detect(&x.tok.v, NULL, why, sizeof why), TOOL_FORMAT_KIMI);
    unload(&x);
}

/* The token that begins a section (and ends a reasoning): Kimi's, DeepSeek's,
 * or none */
Test(tool_force, a_sections_first_token_in_either_vocabulary)
{
    fixture x;
    load_vocab(&x, 1);
    cr_expect_eq(tool_section_begin(&x.tok.v), 257, "DeepSeek's <｜tool▁calls▁begin｜>");
    unload(&x);
    load_vocab(&x, 0);
    cr_expect_eq(tool_section_begin(&x.tok.v), -1);
    unload(&x);
    load(&x);
    cr_expect_eq(tool_section_begin(&x.tok.v), vocab_find_special(&x.tok.v, "<|tool_calls_section_begin|>"));
    cr_expect_geq(tool_section_begin(&x.tok.v), 0);
    unload(&x);
}

/* DeepSeek-V3's layout: the type "function", the separator, the name and the
 * opening fence, the arguments, the closing fence, and a line break before
 * another call */
Test(tool_force, calls_in_deepseek_v3s_layout, .timeout = 60)
{
    fixture x;
    load_vocab(&x, 1);
    tool_force f;
    errbuf e;
    cr_assert_eq(tool_force_init(&f, &x.tok.v, TOOL_FORMAT_DEEPSEEK_V3, x.tools, NULL, &e), 0, "%s", e.msg);
    tool_force_accept(&f, f.section_begin);
    tool_force_accept(&f, f.call_begin);
    cr_expect(!text_allowed(&x, &f, "get_weather"), "the type comes first");
    cr_expect(!allowed(&x, &f, f.argument_begin));
    feed_text(&x, &f, "function");
    cr_assert(allowed(&x, &f, f.argument_begin));
    tool_force_accept(&f, f.argument_begin);
    cr_expect(!text_allowed(&x, &f, "get_weather{"), "the fence after the name");
    cr_expect(!text_allowed(&x, &f, "get_wind"), "a function not among the tools");
    feed_text(&x, &f, "get_weather\n```json\n");
    cr_expect(!text_allowed(&x, &f, "\n```"), "the arguments first");
    feed_text(&x, &f, "{\"city\": \"Paris\"");
    cr_expect(!text_allowed(&x, &f, "\n```"), "the object is still open");
    cr_expect(!allowed(&x, &f, f.call_end));
    feed_text(&x, &f, "}");
    cr_expect(!allowed(&x, &f, f.call_end), "the fence closes first");
    cr_expect(!text_allowed(&x, &f, "\n``x"));
    feed_text(&x, &f, "\n```");
    cr_assert(allowed(&x, &f, f.call_end));
    tool_force_accept(&f, f.call_end);
    /* required: the section ends, or a line break and another call */
    cr_expect(allowed(&x, &f, f.section_end));
    cr_expect(!allowed(&x, &f, f.call_begin), "a line break first");
    feed_text(&x, &f, "\n");
    cr_assert(allowed(&x, &f, f.call_begin));
    cr_expect(!allowed(&x, &f, f.section_end));
    tool_force_accept(&f, f.call_begin);
    feed_text(&x, &f, "function");
    tool_force_accept(&f, f.argument_begin);
    feed_text(&x, &f, "get_time\n```json\n{}\n```");
    tool_force_accept(&f, f.call_end);
    tool_force_accept(&f, f.section_end);
    cr_expect(allowed(&x, &f, x.end));
    cr_expect(!text_allowed(&x, &f, "\n"), "nothing after the section");
    tool_force_free(&f);
    /* a named function: one call, then the section's end */
    cr_assert_eq(tool_force_init(&f, &x.tok.v, TOOL_FORMAT_DEEPSEEK_V3, x.tools, "get_time", &e), 0, "%s",
                 e.msg);
    tool_force_accept(&f, f.section_begin);
    tool_force_accept(&f, f.call_begin);
    feed_text(&x, &f, "function");
    tool_force_accept(&f, f.argument_begin);
    cr_expect(!text_allowed(&x, &f, "get_weather"));
    feed_text(&x, &f, "get_time\n```json\n");
    cr_expect(!text_allowed(&x, &f, "[1]"), "no parameters: any object, and only an object");
    feed_text(&x, &f, "{\"a\": [1]}\n```");
    tool_force_accept(&f, f.call_end);
    cr_expect(!text_allowed(&x, &f, "\n"), "a named function is called once");
    cr_expect(allowed(&x, &f, f.section_end));
    tool_force_free(&f);
    unload(&x);
}
