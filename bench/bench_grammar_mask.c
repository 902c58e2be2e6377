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
 * timed apart. One JSON line per point. */
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
    const char *name, *grammar, *prefix;
} points[] = {
    {"arithmetic",
     "root ::= expr\nexpr ::= term ((\"+\" | \"-\") term)*\n"
     "term ::= factor ((\"*\" | \"/\") factor)*\nfactor ::= [0-9]+ | \"(\" expr \")\" | \"-\" factor\n",
     "(12+3)*"},
    {"json_string", json_grammar, "{\"name\": \"The capital of"},
    {"free_line", "root ::= [^\\n]* \"\\n\"", "Once upon a"},
    {"letters", "root ::= [A-Za-z ,.]+", "The capital of"},
};

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
            possible = grammar_answer_mask(&a, &tok.v, &jv, &end_id, 1, logits, V);
        double ms = (now_seconds() - t0) * 1e3 / ROUNDS;
        a.ungrouped = 1;
        grammar_answer_mask(&a, &tok.v, &jv, &end_id, 1, logits, V); /* (builds the vocabulary's trie) */
        t0 = now_seconds();
        for (int r = 0; r < ROUNDS; r++)
            grammar_answer_mask(&a, &tok.v, &jv, &end_id, 1, logits, V);
        double ungrouped_ms = (now_seconds() - t0) * 1e3 / ROUNDS;
        printf(
            "{\"bench\": \"grammar_mask\", \"point\": \"%s\", \"vocab\": %d, \"possible\": %d, \"ms\": %.3f, "
            "\"draw_ms\": %.3f, \"ratio_to_draw\": %.2f, \"ungrouped_ms\": %.3f, \"ratio_to_ungrouped\": %.2f",
            points[k].name, V, possible, ms, draw_ms, ms / draw_ms, ungrouped_ms, ms / ungrouped_ms);
        if (!strcmp(points[k].name, "letters")) {
            json_regex re;
            regex_answer ra;
            if (regex_answer_compile(&re, "[A-Za-z ,.]+", &e)) {
                fprintf(stderr, "bench_grammar_mask: %s\n", e.msg);
                return 2;
            }
            regex_answer_init(&ra, &re);
            regex_answer_feed(&ra, points[k].prefix, strlen(points[k].prefix));
            regex_answer_mask(&ra, &tok.v, &jv, &end_id, 1, logits, V); /* (its grouping is built once) */
            t0 = now_seconds();
            for (int r = 0; r < ROUNDS; r++)
                regex_answer_mask(&ra, &tok.v, &jv, &end_id, 1, logits, V);
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
