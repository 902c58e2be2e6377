/* reasoning_end: "</think>" found across any split of the answer's bytes, and
 * on Kimi's vocabulary the mask bans exactly the tokens that would close the
 * reasoning with more than whitespace after it (judged by a plain search of
 * the text so far plus the token). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/reasoning_end.h"
#include "core/text/tokenizer.h"
#include "testutil.h"

/* feeds text in pieces of `piece` bytes: the offset in text just after the
 * first "</think>", or -1 */
static long close_at(const char *text, size_t piece)
{
    reasoning_end m;
    reasoning_end_init(&m);
    size_t n = strlen(text);
    for (size_t i = 0; i < n; i += piece) {
        size_t k = n - i < piece ? n - i : piece, after;
        if (reasoning_end_feed(&m, text + i, k, &after))
            return (long)(i + after);
    }
    return -1;
}

Test(reasoning_end, found_across_any_split)
{
    const struct { const char *text; long at; } cases[] = {
        {"plan</think>{}", 12},     {"</think>", 8},          {"a<</think>b", 10},
        {"<</</think>", 11},        {"</thinK></think>x", 16}, {"</think", -1},
        {"<think>a</think", -1},    {"x</ think>", -1},       {"", -1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        for (size_t piece = 1; piece <= 9; piece++)
            cr_expect_eq(close_at(cases[c].text, piece), cases[c].at, "\"%s\" in pieces of %zu: %ld",
                         cases[c].text, piece, close_at(cases[c].text, piece));
}

static int only_whitespace(const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strchr(" \t\r\n", b[i]) || !b[i])
            return 0;
    return 1;
}

Test(reasoning_end, mask_bans_closing_tokens_with_text_after, .timeout = 60)
{
    tokenizer tok;
    test_kimi_tokenizer_or_skip(&tok);
    int V = tok.v.n_vocab;
    float *logits = malloc((size_t)V * sizeof *logits);
    cr_assert_not_null(logits);
    const char *sofar[] = {"", "so <", "ok </thi", "x</think", "<<"};
    for (size_t q = 0; q < 2 * sizeof sofar / sizeof *sofar; q++) {
        size_t p = q % (sizeof sofar / sizeof *sofar);
        int bare = q >= sizeof sofar / sizeof *sofar;     /* then nothing may follow the tag */
        reasoning_end m;
        reasoning_end_init(&m);
        size_t after;
        cr_assert_not(reasoning_end_feed(&m, sofar[p], strlen(sofar[p]), &after));
        for (int t = 0; t < V; t++)
            logits[t] = 0;
        reasoning_end_mask(&m, &tok.v, bare, logits, V);
        int banned = 0;
        for (int t = 0; t < V; t++) {
            size_t n, lp = strlen(sofar[p]);
            const char *b = vocab_decode(&tok.v, t, &n);
            char buf[1024];
            int want = 0;
            if (b && lp + n < sizeof buf) {
                memcpy(buf, sofar[p], lp);
                memcpy(buf + lp, b, n);
                const char *hit = memmem(buf, lp + n, "</think>", 8);
                size_t end = hit ? (size_t)(hit - buf) + 8 : 0;
                want = hit && end > lp && (bare ? end < lp + n : !only_whitespace(buf + end, lp + n - end));
            }
            banned += isinf(logits[t]) != 0;
            cr_expect_eq(isinf(logits[t]) != 0, want, "after \"%s\": token %d (%.*s) %s", sofar[p], t,
                         (int)n, b ? b : "", want ? "closes with text after: not banned" : "banned");
        }
        if (!strcmp(sofar[p], "x</think"))
            cr_expect(banned > 0, "after \"</think\" some token starts with '>' and goes on");
    }
    free(logits);
    tokenizer_free(&tok);
}

/* the parts a gate gives tokens: ids 7 ("<think>" here) and others whose
 * bytes are the strings; the answer's bytes are what a held answer sees */
static void gate_run(reasoning_start start, int think_begin, const int *ids, const char *const *bytes, int n,
                     const char *parts, const char *answer)
{
    reasoning_gate g;
    reasoning_gate_init(&g, start, think_begin);
    char got[64] = "", seen[256] = "";
    for (int i = 0; i < n; i++) {
        size_t after = 0, len = strlen(bytes[i]);
        int part = reasoning_gate_feed(&g, ids[i], bytes[i], len, &after);
        got[i] = "RCA"[part];
        if (part == GATE_CLOSED)
            cr_expect(after > 0 && after <= len);
        size_t from = part == GATE_CLOSED ? after : 0;
        if (part != GATE_REASONING)
            strncat(seen, bytes[i] + from, len - from);
    }
    cr_expect_str_eq(got, parts, "start %d: parts %s, wanted %s", (int)start, got, parts);
    cr_expect_str_eq(seen, answer, "start %d: the answer saw \"%s\"", (int)start, seen);
}

Test(reasoning_end, gate_holds_the_answer_after_the_reasoning_however_it_starts)
{
    const int think = 7, ids[] = {7, 1, 2, 3, 4};
    const char *const bytes[] = {"<think>", "plan", "</", "think>  ", "{}"};
    /* the model opens it with its first token: the opener and the reasoning are not the answer's */
    gate_run(REASONING_MODEL, think, ids, bytes, 5, "RRRCA", "  {}");
    /* the prompt opened it: "<think>" written again is reasoning text */
    gate_run(REASONING_OPEN, think, ids, bytes, 5, "RRRCA", "  {}");
    /* closed: everything is the answer's, "<think>" included */
    gate_run(REASONING_CLOSED, think, ids, bytes, 5, "AAAAA", "<think>plan</think>  {}");
    /* only the first token may open it */
    const int late[] = {5, 7, 1};
    const char *const late_bytes[] = {"{", "<think>", "}"};
    gate_run(REASONING_MODEL, think, late, late_bytes, 3, "AAA", "{<think>}");
    /* a vocabulary without the token: nothing opens it */
    gate_run(REASONING_MODEL, -1, ids, bytes, 5, "AAAAA", "<think>plan</think>  {}");
    reasoning_gate g;
    reasoning_gate_init(&g, REASONING_MODEL, think);
    cr_expect(g.may_open && !g.reasoning);
    reasoning_gate_init(&g, REASONING_OPEN, think);
    cr_expect(!g.may_open && g.reasoning);
}
