/* Fuzz target: GBNF grammars (core/text/gbnf_parse.c) and answers held to
 * them (core/text/grammar_answer.c).
 *
 * The bytes up to the first NUL are a grammar; after it, a text. Compiling
 * must succeed or say why. A compiled grammar's answer is fed the text in
 * pieces; at each piece's end the mask through the vocabulary's trie (a small
 * synthetic tokenizer) must equal the mask by feeding each token alone, and
 * every token it leaves must feed. Errors of the parse (its limits, memory)
 * must be the documented codes. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/text/grammar_answer.h"
#include "core/text/synth_tokenizer.h"
#include "core/text/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static tokenizer tok;
static json_vocab jv;

static void setup(void)
{
    static int ready;
    if (ready)
        return;
    char dir[] = "/tmp/fuzz_gbnf_XXXXXX";
    errbuf e;
    if (!mkdtemp(dir) || synth_tokenizer_write(dir, 600, 560, 561, &e) || tokenizer_load(&tok, dir, &e) ||
        json_vocab_build(&jv, &tok.v, &e)) {
        fprintf(stderr, "fuzz_gbnf: %s\n", e.msg);
        abort();
    }
    char path[64];
    snprintf(path, sizeof path, "%s/tiktoken.model", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    unlink(path);
    rmdir(dir);
    ready = 1;
}

/* The masks agree at the text fed so far (prefix[0, n)), and some of the
 * tokens left feed after that text. */
static void check_mask(grammar_answer *a, const char *prefix, size_t n)
{
    int V = tok.v.n_vocab, end = V - 1;
    float *x = calloc((size_t)V, sizeof *x), *y = calloc((size_t)V, sizeof *y);
    int px = grammar_answer_mask(a, &tok.v, &jv, &end, 1, x, V);
    int py = grammar_answer_mask(a, &tok.v, NULL, &end, 1, y, V);
    if ((px < 0 && px != GRAMMAR_TOO_COMPLEX && px != GRAMMAR_NO_MEMORY) ||
        (py < 0 && py != GRAMMAR_TOO_COMPLEX && py != GRAMMAR_NO_MEMORY))
        abort();
    if (px == GRAMMAR_TOO_COMPLEX || py == GRAMMAR_TOO_COMPLEX)
        px = py = -1;   /* (the two ways count their work apart: one may pass the limit alone) */
    if (px != py)
        abort();
    for (int id = 0, tried = 0; px >= 0 && id < V && tried < 8; id++) {
        if (isinf(x[id]) != isinf(y[id]))
            abort();
        if (isinf(x[id]) || id == end || vocab_is_special(&tok.v, id) || id % 5)
            continue;
        size_t k;
        const char *b = vocab_decode(&tok.v, id, &k);
        grammar_answer t;
        if (grammar_answer_init(&t, a->g) || grammar_answer_feed(&t, prefix, n) ||
            grammar_answer_feed(&t, b, k))
            abort();
        grammar_answer_free(&t);
        tried++;
    }
    free(x);
    free(y);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    const char *text = (const char *)data;
    const char *nul = memchr(text, 0, size);
    size_t glen = nul ? (size_t)(nul - text) : size;
    gbnf g;
    errbuf e;
    e.msg[0] = 0;
    if (gbnf_compile(&g, text, glen, &e)) {
        if (!e.msg[0])
            abort(); /* a refusal must say why */
        return 0;
    }
    grammar_answer a;
    int rc = grammar_answer_init(&a, &g);
    if (rc) {
        if (rc != GRAMMAR_TOO_COMPLEX && rc != GRAMMAR_NO_MEMORY)
            abort();
        gbnf_free(&g);
        return 0;
    }
    /* (a grammar whose parses multiply reaches a small bound at once, where
     * K2's would take a second of each input's time) */
    a.max_work = 200000;
    const char *s = nul ? nul + 1 : "";
    size_t n = nul ? size - glen - 1 : 0;
    check_mask(&a, s, 0);
    for (size_t i = 0; i < n;) {
        size_t k = 1 + (unsigned char)s[i] % 5;
        if (k > n - i)
            k = n - i;
        int was_complete = grammar_answer_complete(&a);
        rc = grammar_answer_feed(&a, s + i, k);
        if (rc == -1 && grammar_answer_complete(&a) != was_complete)
            abort(); /* a refused piece leaves the state as it was */
        if (rc && rc != -1 && rc != GRAMMAR_TOO_COMPLEX && rc != GRAMMAR_NO_MEMORY)
            abort();
        if (rc)
            break;
        i += k;
        check_mask(&a, s, i);
    }
    grammar_answer_free(&a);
    gbnf_free(&g);
    return 0;
}
