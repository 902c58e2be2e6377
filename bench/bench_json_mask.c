/* bench_json_mask: the cost per token of constrained output on Kimi's
 * vocabulary: json_mask_logits (with the token table) at three points of a
 * json_object answer: before the object, inside a string (most tokens fit)
 * and after a value (few do); under a schema's bounds, in a string near its
 * maxLength, in a bounded integer, in a date-time and in a string held to a
 * pattern most text takes (its tokens tried by group, the grouping's first
 * mask timed apart); for thinking on, reasoning_end_mask while the reasoning
 * is open; a held tool call's id (tool_force) among 24 and 128 tools; and a
 * whole answer held to that pattern (regex_answer_mask, vLLM's guided_regex).
 * The yardstick, measured in the same run, is the default draw (temperature
 * 0.6) over as many logits shaped as bench_sampler's (normal with sigma 2.5,
 * 20 tokens at 15-25): ratio = mask ms / draw ms. One JSON line per point. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/progress.h"
#include "core/engine/sampler.h"
#include "core/text/json_mask.h"
#include "core/text/reasoning_end.h"
#include "core/text/regex_answer.h"
#include "core/text/tokenizer.h"
#include "core/text/tool_force.h"
#include "draw_yardstick.h"

enum { ROUNDS = 20 };

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "../shared/testdata/kimi-tokenizer";
    tokenizer tok;
    errbuf e;
    if (tokenizer_load(&tok, dir, &e)) {
        fprintf(stderr, "bench_json_mask: %s (give the kimi-tokenizer folder as argument)\n", e.msg);
        return 2;
    }
    int V = tok.v.n_vocab, end_id = vocab_find_special(&tok.v, "<|im_end|>");
    float *logits = malloc((size_t)V * sizeof *logits);
    sampler s;
    sampler_params p = sampler_defaults();
    json_schema any;
    json_vocab jv;
    if (!logits || sampler_create(&s, &p, V, &e) || json_schema_any_object(&any, &e) ||
        json_vocab_build(&jv, &tok.v, &e)) {
        fprintf(stderr, "bench_json_mask: out of memory\n");
        return 2;
    }
    double draw_ms = draw_yardstick_ms(&s, logits, V, ROUNDS), t0;
    static const struct {
        const char *name, *text;
        int bounded;
    } points[] = {{"start", "", 0},
                  {"in_string", "{\"answer\": \"The capital of", 0},
                  {"after_value", "{\"n\": 12", 0},
                  {"in_bounded_string", "{\"answer\": \"The capital of", 1},
                  {"in_bounded_number", "{\"n\": 12", 1},
                  {"in_date_time", "{\"when\": \"2024-0", 1},
                  {"in_pattern_string", "{\"words\": \"The capital of", 1}};
    /* a schema's limits: a string near its maxLength (the token table still
     * settles plain text by its characters), a bounded number's digits, a
     * format, a pattern most text takes */
    cJSON *bj = cJSON_Parse("{\"type\": \"object\", \"properties\": {\"answer\": {\"type\": \"string\", "
                            "\"maxLength\": 20}, \"n\": {\"type\": \"integer\", \"minimum\": 10, \"maximum\": 1999}, "
                            "\"when\": {\"type\": \"string\", \"format\": \"date-time\"}, \"words\": {\"type\": "
                            "\"string\", \"pattern\": \"^[A-Za-z ,.]+$\"}}}");
    json_schema bounded;
    if (!bj || json_schema_compile(bj, &bounded, &e)) {
        fprintf(stderr, "bench_json_mask: %s\n", bj ? e.msg : "out of memory");
        return 2;
    }
    cJSON_Delete(bj);
    for (size_t k = 0; k < sizeof points / sizeof *points; k++) {
        json_prefix j;
        json_prefix_init(&j, points[k].bounded ? &bounded : &any);
        json_prefix_feed(&j, points[k].text, strlen(points[k].text));
        /* the first mask of a pattern's string groups the vocabulary's tokens
         * for it (pattern_tokens.h), once per request: timed apart */
        t0 = now_seconds();
        int possible = json_mask_logits(&j, &tok.v, &jv, &end_id, 1, logits, V);
        double first_ms = (now_seconds() - t0) * 1e3;
        t0 = now_seconds();
        for (int r = 0; r < ROUNDS; r++)
            possible = json_mask_logits(&j, &tok.v, &jv, &end_id, 1, logits, V);
        double ms = (now_seconds() - t0) / ROUNDS * 1e3;
        printf("{\"bench\": \"json_mask\", \"point\": \"%s\", \"vocab\": %d, \"possible\": %d, "
               "\"first_ms\": %.3f, \"ms_per_token\": %.3f, \"draw_ms\": %.3f, \"ratio_to_draw\": %.2f}\n",
               points[k].name, V, possible, first_ms, ms, draw_ms, ms / draw_ms);
    }
    json_schema_free(&bounded);
    /* with thinking on, while the reasoning is open: the ban of tokens that
     * would close it with text after */
    reasoning_end m;
    reasoning_end_init(&m);
    size_t after;
    reasoning_end_feed(&m, "so </think", 10, &after);
    t0 = now_seconds();
    for (int r = 0; r < ROUNDS; r++)
        reasoning_end_mask(&m, &tok.v, 0, logits, V);
    double ms = (now_seconds() - t0) / ROUNDS * 1e3;
    for (int i = 0; i < V; i++)     /* the tokens left of fresh logits */
        logits[i] = 0;
    reasoning_end_mask(&m, &tok.v, 0, logits, V);
    int possible = 0;
    for (int i = 0; i < V; i++)
        possible += !isinf(logits[i]);
    printf("{\"bench\": \"json_mask\", \"point\": \"reasoning\", \"vocab\": %d, \"possible\": %d, "
           "\"ms_per_token\": %.3f, \"draw_ms\": %.3f, \"ratio_to_draw\": %.2f}\n",
           V, possible, ms, draw_ms, ms / draw_ms);
    /* a held tool call's id (tool_choice auto or forced), its first token:
     * every function's id still possible; Claude Code declares 24 tools,
     * Moonshot's API takes at most 128 */
    for (int n_tools = 24; n_tools <= TOOL_FORCE_MAX_FUNCTIONS; n_tools += TOOL_FORCE_MAX_FUNCTIONS - 24) {
        cJSON *tools = cJSON_CreateArray();
        for (int k = 0; k < n_tools; k++) {
            char name[32];
            snprintf(name, sizeof name, "tool_number_%d", k);
            cJSON *t = cJSON_CreateObject();
            cJSON_AddStringToObject(cJSON_AddObjectToObject(t, "function"), "name", name);
            cJSON_AddItemToArray(tools, t);
        }
        tool_force f;
        if (tool_force_init_lazy(&f, &tok.v, TOOL_FORMAT_KIMI, tools, &e)) {
            fprintf(stderr, "bench_json_mask: %s\n", e.msg);
            return 2;
        }
        tool_force_accept(&f, f.section_begin);
        tool_force_accept(&f, f.call_begin);
        t0 = now_seconds();
        for (int r = 0; r < ROUNDS; r++)
            possible = tool_force_mask(&f, &jv, &end_id, 1, logits, V);
        ms = (now_seconds() - t0) / ROUNDS * 1e3;
        printf("{\"bench\": \"json_mask\", \"point\": \"tool_id\", \"tools\": %d, \"vocab\": %d, "
               "\"possible\": %d, \"ms_per_token\": %.3f, \"draw_ms\": %.3f, \"ratio_to_draw\": %.2f}\n",
               n_tools, V, possible, ms, draw_ms, ms / draw_ms);
        tool_force_free(&f);
        cJSON_Delete(tools);
    }
    /* vLLM's guided_regex: the whole answer held to a pattern most text takes */
    json_regex re;
    if (regex_answer_compile(&re, "[A-Za-z ,.]+", &e)) {
        fprintf(stderr, "bench_json_mask: %s\n", e.msg);
        return 2;
    }
    regex_answer ra;
    regex_answer_init(&ra, &re);
    regex_answer_feed(&ra, "The capital of", 14);
    t0 = now_seconds();
    possible = regex_answer_mask(&ra, NULL, &tok.v, &jv, &end_id, 1, logits, V);
    double first_ms = (now_seconds() - t0) * 1e3;
    t0 = now_seconds();
    for (int r = 0; r < ROUNDS; r++)
        possible = regex_answer_mask(&ra, NULL, &tok.v, &jv, &end_id, 1, logits, V);
    ms = (now_seconds() - t0) / ROUNDS * 1e3;
    /* an answer's next tokens, a mask before each: with the masks kept by
     * state (the pattern's loop comes back to one state) and without */
    static const char then_text[] = " France is Paris, a city on the Seine known for its museums and cafes";
    token_list then = {0};
    if (tokenizer_encode(&tok, then_text, strlen(then_text), 0, &then, &e)) {
        fprintf(stderr, "bench_json_mask: %s\n", e.msg);
        return 2;
    }
    double per_token[2];
    for (int keep = 0; keep < 2; keep++) {
        mask_memo *kept = NULL;
        regex_answer at = ra;
        double t = 0;
        for (size_t i = 0; i < then.n; i++) {
            t0 = now_seconds();
            regex_answer_mask(&at, keep ? &kept : NULL, &tok.v, &jv, &end_id, 1, logits, V);
            t += now_seconds() - t0;
            size_t n;
            const char *b = vocab_decode(&tok.v, then.ids[i], &n);
            if (regex_answer_feed(&at, b, n)) {
                fprintf(stderr, "bench_json_mask: the continuation does not match the pattern\n");
                return 2;
            }
        }
        mask_memo_free(kept);
        per_token[keep] = t * 1e3 / (double)then.n;
    }
    printf("{\"bench\": \"json_mask\", \"point\": \"guided_regex\", \"vocab\": %d, \"possible\": %d, "
           "\"first_ms\": %.3f, \"ms_per_token\": %.3f, \"draw_ms\": %.3f, \"ratio_to_draw\": %.2f, "
           "\"tokens\": %zu, \"kept_per_token_ms\": %.3f, \"walked_per_token_ms\": %.3f, "
           "\"kept_ratio_to_walked\": %.2f}\n",
           V, possible, first_ms, ms, draw_ms, ms / draw_ms, then.n, per_token[1], per_token[0],
           per_token[1] / per_token[0]);
    token_list_free(&then);
    json_regex_free(&re);
    sampler_destroy(&s);
    json_schema_free(&any);
    json_vocab_free(&jv);
    free(logits);
    tokenizer_free(&tok);
    return 0;
}
