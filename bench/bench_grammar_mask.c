/* bench_grammar_mask: the cost per token of an answer held to a GBNF grammar
 * (grammar_answer_mask through the trie of the grammar's token groups) on Kimi's vocabulary,
 * at points from restrictive to free: an arithmetic expression, inside a
 * string of llama.cpp's JSON grammar, a line of free text, and
 * [A-Za-z ,.]+ written as a grammar. The yardsticks, measured in the same
 * run: the default draw over as many logits (as bench_json_mask), and for
 * the last point the same language held as a pattern (regex_answer_mask,
 * vLLM's guided_regex), and for each point the same mask walking the
 * vocabulary's own trie, token by token, instead of the grammar's groups
 * (grammar_trie.h). The first mask, which builds the grammar's trie, is
 * timed apart. Masks are kept by the state they were made at (a state met
 * again costs a pass over the logits): "ms" is the walk (none kept), "again_ms"
 * a state met again, and "per_token_ms" the mean over an answer's next tokens
 * (the point's continuation, fed a token at a time), against the same tokens
 * walked every time. One JSON line per point. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/progress.h"
#include "core/engine/sampler.h"
#include "core/text/grammar_answer.h"
#include "core/text/regex_answer.h"
#include "core/text/tokenizer.h"
#include "draw_yardstick.h"

enum { ROUNDS = 20 };

static const char json_grammar[] =
    "root   ::= object\n"
    "value  ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
    "object ::= \"{\" ws ( string \":\" ws value (\",\" ws string \":\" ws value)* )? \"}\" ws\n"
    "array  ::= \"[\" ws ( value (\",\" ws value)* )? \"]\" ws\n"
    "string ::= \"\\\"\" ( [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\bfnrt] | \"u\" [0-9a-fA-F]{4}) )* \"\\\"\" ws\n"
    "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws\n"
    "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";

static const struct {
    const char *name, *grammar, *prefix, *then;
} points[] = {
    {"arithmetic",
     "root ::= expr\nexpr ::= term ((\"+\" | \"-\") term)*\n"
     "term ::= factor ((\"*\" | \"/\") factor)*\nfactor ::= [0-9]+ | \"(\" expr \")\" | \"-\" factor\n",
     "(12+3)*", "(45-6)/789+10*(11-12)"},
    {"json_string", json_grammar, "{\"name\": \"The capital of",
     " France is Paris, a city on the Seine known for its museums and cafes"},
    {"free_line", "root ::= [^\\n]* \"\\n\"", "Once upon a",
     " time there lived a king who had three daughters, each fairer than the last"},
    {"letters", "root ::= [A-Za-z ,.]+", "The capital of",
     " France is Paris, a city on the Seine known for its museums and cafes"},
};

/* The mean ms of a mask at each of the continuation's tokens, fed in turn
 * to a copy of the point's answer (walk_always: none kept). */
static double per_token_ms(const gbnf *g, const char *prefix, const token_list *then, int walk_always,
                           const tokenizer *tok, const json_vocab *jv, int end_id, float *logits, int V)
{
    grammar_answer a;
    if (grammar_answer_init(&a, g) || grammar_answer_feed(&a, prefix, strlen(prefix)))
        return NAN;
    a.walk_always = walk_always;
    double t = 0;
    for (size_t i = 0; i < then->n; i++) {
        double t0 = now_seconds();
        grammar_answer_mask(&a, &tok->v, jv, &end_id, 1, logits, V);
        t += now_seconds() - t0;
        size_t n;
        const char *b = vocab_decode(&tok->v, then->ids[i], &n);
        if (!b || grammar_answer_feed(&a, b, n)) {
            grammar_answer_free(&a);
            return NAN;
        }
    }
    grammar_answer_free(&a);
    return t * 1e3 / (double)then->n;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "../shared/testdata/kimi-tokenizer";
    tokenizer tok;
    errbuf e;
    if (tokenizer_load(&tok, dir, &e)) {
        fprintf(stderr, "bench_grammar_mask: %s (give the kimi-tokenizer folder as argument)\n", e.msg);
        return 2;
    }
    int V = tok.v.n_vocab, end_id = vocab_find_special(&tok.v, "<|im_end|>");
    float *logits = malloc((size_t)V * sizeof *logits);
    sampler s;
    sampler_params p = sampler_defaults();
    json_vocab jv;
    if (!logits || sampler_create(&s, &p, V, &e) || json_vocab_build(&jv, &tok.v, &e)) {
        fprintf(stderr, "bench_grammar_mask: out of memory\n");
        return 2;
    }
    double draw_ms = draw_yardstick_ms(&s, logits, V, ROUNDS), t0;
    for (size_t k = 0; k < sizeof points / sizeof *points; k++) {
        gbnf g;
        grammar_answer a;
        if (gbnf_compile(&g, points[k].grammar, strlen(points[k].grammar), &e) ||
            grammar_answer_init(&a, &g) ||
            grammar_answer_feed(&a, points[k].prefix, strlen(points[k].prefix))) {
            fprintf(stderr, "bench_grammar_mask: %s: %s\n", points[k].name, e.msg);
            return 2;
        }
        t0 = now_seconds();
        int possible = grammar_answer_mask(&a, &tok.v, &jv, &end_id, 1, logits, V);
        double first_ms = (now_seconds() - t0) * 1e3; /* (the first mask builds the grammar's trie) */
        t0 = now_seconds();
        for (int r = 0; r < ROUNDS; r++)
            grammar_answer_mask(&a, &tok.v, &jv, &end_id, 1, logits, V);
        double again_ms = (now_seconds() - t0) * 1e3 / ROUNDS;
        a.walk_always = 1;
        t0 = now_seconds();
        for (int r = 0; r < ROUNDS; r++)
            possible = grammar_answer_mask(&a, &tok.v, &jv, &end_id, 1, logits, V);
        double ms = (now_seconds() - t0) * 1e3 / ROUNDS;
        token_list then = {0};
        if (tokenizer_encode(&tok, points[k].then, strlen(points[k].then), 0, &then, &e)) {
            fprintf(stderr, "bench_grammar_mask: %s: %s\n", points[k].name, e.msg);
            return 2;
        }
        double kept_ms = per_token_ms(&g, points[k].prefix, &then, 0, &tok, &jv, end_id, logits, V);
        double walked_ms = per_token_ms(&g, points[k].prefix, &then, 1, &tok, &jv, end_id, logits, V);
        if (isnan(kept_ms) || isnan(walked_ms)) {
            fprintf(stderr, "bench_grammar_mask: %s: the continuation is not held by the grammar\n",
                    points[k].name);
            return 2;
        }
        a.ungrouped = 1;
        grammar_answer_mask(&a, &tok.v, &jv, &end_id, 1, logits, V); /* (builds the vocabulary's trie) */
        t0 = now_seconds();
        for (int r = 0; r < ROUNDS; r++)
            grammar_answer_mask(&a, &tok.v, &jv, &end_id, 1, logits, V);
        double ungrouped_ms = (now_seconds() - t0) * 1e3 / ROUNDS;
        printf(
            "{\"bench\": \"grammar_mask\", \"point\": \"%s\", \"vocab\": %d, \"possible\": %d, \"ms\": %.3f, "
            "\"draw_ms\": %.3f, \"ratio_to_draw\": %.2f, \"ungrouped_ms\": %.3f, \"ratio_to_ungrouped\": %.2f, "
            "\"again_ms\": %.3f, \"tokens\": %zu, \"per_token_ms\": %.3f, \"walked_per_token_ms\": %.3f, "
            "\"per_token_ratio_to_walked\": %.2f",
            points[k].name, V, possible, ms, draw_ms, ms / draw_ms, ungrouped_ms, ms / ungrouped_ms, again_ms,
            then.n, kept_ms, walked_ms, kept_ms / walked_ms);
        token_list_free(&then);
        if (!strcmp(points[k].name, "letters")) {
            json_regex re;
            regex_answer ra;
            if (regex_answer_compile(&re, "[A-Za-z ,.]+", &e)) {
                fprintf(stderr, "bench_grammar_mask: %s\n", e.msg);
                return 2;
            }
            regex_answer_init(&ra, &re);
            regex_answer_feed(&ra, points[k].prefix, strlen(points[k].prefix));
            regex_answer_mask(&ra, NULL, &tok.v, &jv, &end_id, 1, logits, V); /* (its grouping is built once) */
            t0 = now_seconds();
            for (int r = 0; r < ROUNDS; r++)
                regex_answer_mask(&ra, NULL, &tok.v, &jv, &end_id, 1, logits, V);
            double rms = (now_seconds() - t0) * 1e3 / ROUNDS;
            printf(", \"pattern_ms\": %.3f, \"ratio_to_pattern\": %.2f", rms, ms / rms);
            json_regex_free(&re);
        }
        printf(", \"first_mask_with_trie_build_ms\": %.1f", first_ms);
        printf("}\n");
        grammar_answer_free(&a);
        gbnf_free(&g);
    }
    sampler_destroy(&s);
    json_vocab_free(&jv);
    tokenizer_free(&tok);
    free(logits);
    return 0;
}
