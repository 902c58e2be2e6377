/* regex_answer: an answer held to a pattern as a whole (guided_regex,
 * guided_choice): characters split across tokens judged by the code points
 * their bytes allow; choices taken as literal text; and the token mask on
 * Kimi's vocabulary at each prefix of an answer, and on a synthetic one under
 * random patterns, against feeding the prefix and the token (end tokens only
 * once the text matches); masks kept by state as the walk makes them. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/pattern_tokens.h"
#include "core/text/regex_answer.h"
#include "core/text/tokenizer.h"
#include "testutil.h"

/* 1 a match, 0 the start of one, -1 neither */
static int judge(const json_regex *r, const char *t)
{
    regex_answer a;
    regex_answer_init(&a, r);
    if (regex_answer_feed(&a, t, strlen(t)))
        return -1;
    return regex_answer_complete(&a);
}

Test(regex_answer, whole_answers_and_split_characters)
{
    json_regex r;
    errbuf e;
    cr_assert_eq(regex_answer_compile(&r, "^(caf\xc3\xa9|na\xc3\xafve) [0-9]{2}$", &e), 0, "%s", e.msg);
    static const struct {
        const char *t;
        int want;
    } cases[] = {{"caf\xc3\xa9 42", 1},
                 {"caf\xc3\xa9 4", 0},
                 {"caf\xc3", 0},
                 {"caf\xc3\xa8", -1},
                 {"caf\xc4", -1},
                 {"na\xc3\xafve 00", 1},
                 {"cafe 42", -1},
                 {"caf\xc3\xa9 421", -1},
                 {"", 0},
                 {"x", -1},
                 {"\xc0\xa0", -1}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        cr_expect_eq(judge(&r, cases[i].t), cases[i].want, "'%s'", cases[i].t);
    json_regex_free(&r);
    /* without anchors the whole answer must still match */
    cr_assert_eq(regex_answer_compile(&r, "yes|no", &e), 0, "%s", e.msg);
    cr_expect_eq(judge(&r, "yes"), 1);
    cr_expect_eq(judge(&r, "yes!"), -1);
    cr_expect_eq(judge(&r, "so yes"), -1);
    json_regex_free(&r);
    /* choices are literal text, special characters included */
    const char *choices[] = {"a.b", "(x)", "1+1", "\xc3\xa9t\xc3\xa9", ""};
    cr_assert_eq(regex_answer_choices(&r, choices, 5, &e), 0, "%s", e.msg);
    cr_expect_eq(judge(&r, "a.b"), 1);
    cr_expect_eq(judge(&r, "axb"), -1);
    cr_expect_eq(judge(&r, "(x)"), 1);
    cr_expect_eq(judge(&r, "11"), -1);
    cr_expect_eq(judge(&r, "1+1"), 1);
    cr_expect_eq(judge(&r, "\xc3\xa9t\xc3\xa9"), 1);
    cr_expect_eq(judge(&r, ""), 1, "the empty choice");
    json_regex_free(&r);
    cr_expect_neq(regex_answer_compile(&r, "(a)\\1", &e), 0);
    cr_expect(strstr(e.msg, "backreference") != NULL, "%s", e.msg);
}

Test(regex_answer, mask_on_kimis_vocabulary, .timeout = 120)
{
    tokenizer tok;
    errbuf e;
    test_kimi_tokenizer_or_skip(&tok);
    const vocab *v = &tok.v;
    int V = v->n_vocab, end_ids[1] = {vocab_find_special(v, "<|im_end|>")};
    float *logits = malloc((size_t)V * sizeof *logits);
    json_vocab jv;
    cr_assert_eq(json_vocab_build(&jv, v, &e), 0, "%s", e.msg);
    json_regex pattern, choice;
    cr_assert_eq(regex_answer_compile(&pattern, "(yes|no), because [a-z\xc3\xa9 ]{1,30}\\.", &e), 0, "%s",
                 e.msg);
    const char *choices[] = {"Positive", "Negative", "Neutral \xe2\x9c\x93"};
    cr_assert_eq(regex_answer_choices(&choice, choices, 3, &e), 0, "%s", e.msg);
    const struct {
        const json_regex *r;
        const char *answer;
    } cases[] = {{&pattern, "yes, because caf\xc3\xa9 is good."}, {&choice, "Neutral \xe2\x9c\x93"}};
    char buf[256];
    for (size_t c = 0; c < 4; c++) { /* each case with the token table and without */
        const json_vocab *table = c < 2 ? &jv : NULL;
        const char *doc = cases[c % 2].answer;
        size_t len = strlen(doc);
        for (size_t k = 0; k <= len; k++) {
            regex_answer a;
            regex_answer_init(&a, cases[c % 2].r);
            cr_assert_eq(regex_answer_feed(&a, doc, k), 0);
            for (int i = 0; i < V; i++)
                logits[i] = 1.0f;
            int possible = regex_answer_mask(&a, NULL, v, table, end_ids, 1, logits, V), counted = 0;
            for (int id = 0; id < V; id++) {
                int want;
                if (vocab_is_special(v, id)) {
                    want = id == end_ids[0] &&
                           judge(cases[c % 2].r, (memcpy(buf, doc, k), buf[k] = 0, buf)) == 1;
                } else {
                    size_t n;
                    const char *b = vocab_decode(v, id, &n);
                    regex_answer r = a;     /* the state after the prefix, then the token */
                    want = n > 0 && b[0] && regex_answer_feed(&r, b, n) == 0;
                }
                counted += want;
                cr_assert_eq(logits[id] == 1.0f, want, "case %zu, prefix of %zu bytes, token %d", c, k, id);
            }
            cr_assert_eq(possible, counted);
            cr_assert_gt(possible, 0, "case %zu, prefix of %zu bytes: no token may follow", c, k);
        }
    }
    json_regex_free(&pattern);
    json_regex_free(&choice);
    json_vocab_free(&jv);
    free(logits);
    tokenizer_free(&tok);
}

/* The mask tries tokens of whole characters a group at a time
 * (pattern_tokens.h): on a synthetic vocabulary (single bytes, English
 * merges, special tokens), under 300 random patterns at random prefixes (some
 * ending inside a character), a token stays possible exactly when its bytes
 * fed after the prefix are taken; an end token exactly when the text matches. */
Test(regex_answer, token_groups_mask_as_feeding_does, .timeout = 120)
{
    errbuf e;
    tokenizer tok;
    test_synth_tokenizer(&tok);
    const vocab *v = &tok.v;
    int V = v->n_vocab, end_ids[1] = {2001}, grouped = 0, groups = 0;
    float *logits = malloc((size_t)V * sizeof *logits);
    json_vocab jv;
    cr_assert_eq(json_vocab_build(&jv, v, &e), 0, "%s", e.msg);
    static const char *const pieces[] = {"a", "b", "c", "1", "z", ".", " ", "\xc3\xa9", "the", "\xc3"};
    test_rng g = {.s = 17};
    for (int c = 0; c < 300; c++) {
        char pat[256];
        test_random_pattern(&g, pat, sizeof pat, 0);
        json_regex re;
        cr_assert_eq(regex_answer_compile(&re, pat, &e), 0, "%s: %s", pat, e.msg);
        regex_answer a;
        regex_answer_init(&a, &re);
        for (int k = (int)test_rnd(&g, 7); k > 0; k--) {     /* a prefix the pattern takes */
            const char *p = pieces[test_rnd(&g, 10)];
            regex_answer t = a;
            if (regex_answer_feed(&t, p, strlen(p)) == 0)
                a = t;
        }
        /* the same mask kept by state (mask_memo.h): made at this state, then
         * taken from the memo, and at every state of a walk on from it (a
         * character's first bytes, other end tokens) as the walk makes it */
        mask_memo *kept = NULL;
        regex_answer w = a;
        for (int k = 0; k < 12; k++) {
            for (int twice = 0; twice < 2; twice++)
                for (int ends = 1; ends <= 2; ends++) {
                    int two[2] = {end_ids[0], 2000};
                    float *x = calloc((size_t)V, sizeof *x), *y = calloc((size_t)V, sizeof *y);
                    cr_assert(x && y);
                    int px = regex_answer_mask(&w, &kept, v, &jv, two, ends, x, V);
                    int py = regex_answer_mask(&w, NULL, v, &jv, two, ends, y, V);
                    int differ = 0;
                    for (int id = 0; id < V; id++)
                        differ += isinf(x[id]) != isinf(y[id]);
                    cr_assert(px == py && !differ, "pattern %s, step %d: %d tokens kept, %d made, %d differ", pat,
                              k, px, py, differ);
                    free(x);
                    free(y);
                }
            const char *p = pieces[test_rnd(&g, 10)];
            regex_answer t = w;
            if (regex_answer_feed(&t, p, strlen(p)) == 0)
                w = t;
        }
        mask_memo_free(kept);
        for (int i = 0; i < V; i++)
            logits[i] = 1.0f;
        int possible = regex_answer_mask(&a, NULL, v, c % 2 ? &jv : NULL, end_ids, 1, logits, V), counted = 0;
        for (int id = 0; id < V; id++) {
            int want;
            if (vocab_is_special(v, id)) {
                want = id == end_ids[0] && regex_answer_complete(&a);
            } else {
                size_t n;
                const char *b = vocab_decode(v, id, &n);
                regex_answer r = a;
                want = n > 0 && b[0] && regex_answer_feed(&r, b, n) == 0;
            }
            counted += want;
            cr_assert_eq(logits[id] == 1.0f, want, "pattern %s, token %d", pat, id);
        }
        cr_assert_eq(possible, counted);
        const pattern_tokens *pt = pattern_tokens_get(&re, v);
        cr_assert_not_null(pt);
        for (int id = 0; id < V; id++)
            grouped += pt->tg.group[id] >= 0;
        groups += pt->tg.n_groups;
        json_regex_free(&re);
    }
    /* (the groups do share: tried once, each settles several tokens) */
    cr_expect_lt(groups * 2, grouped, "%d groups for %d tokens", groups, grouped);
    json_vocab_free(&jv);
    free(logits);
    tokenizer_free(&tok);
}

/* Tokens that are not whole, valid UTF-8 characters are never grouped (they
 * are fed byte by byte): a bad continuation byte, an overlong form, a
 * surrogate, a character cut short; whole ones are, by their characters. */
Test(regex_answer, token_groups_split_what_is_not_utf8)
{
    static const char *const extra[] = {"ab", "\xc3\xa9", "\xc3\x28", "\xe0\x80\x80", "\xed\xa0\x80", "\xe4\xb8",
                                        "a\xc3", "\xf0\x9f\x98\x80", "\xf4\x90\x80\x80"};
    static const int want_split[] = {0, 0, 1, 1, 1, 1, 1, 0, 1};
    const int n_extra = (int)(sizeof extra / sizeof extra[0]);
    vocab v;
    errbuf e = {{0}};
    test_vocab_of(&v, extra, n_extra);
    json_regex re;
    const char *pat = "[a-z\xc3\xa9(\xf0\x9f\x98\x80]+";    /* a-z, e acute, '(' and U+1F600 */
    cr_assert_eq(json_regex_compile(&re, pat, strlen(pat), &e), 0, "%s", e.msg);
    const pattern_tokens *pt = pattern_tokens_get(&re, &v);
    cr_assert_not_null(pt);
    for (int i = 0; i < n_extra; i++) {
        int g = pt->tg.group[256 + i];
        if (want_split[i])
            cr_expect_eq(g, TG_SPLIT, "token %d (%zu bytes) must be split, got %d", i, strlen(extra[i]), g);
        else
            cr_expect_geq(g, 0, "token %d is whole characters the pattern holds, got %d", i, g);
    }
    cr_expect_eq(pt->tg.group['a'], pt->tg.group['b'], "a and b are alike here");
    json_regex_free(&re);
    vocab_free(&v);
}
