/* GBNF grammars (gbnf.h) and answers held to them (grammar_answer.h):
 * compile errors named with their line; random grammars (literals, classes,
 * '.', groups, alternatives, repetitions, rules calling rules, recursion
 * included) judge random strings and long walks exactly as PCRE2 does the
 * same language written as a pattern with recursive subroutine calls (a
 * whole match: the text is whole; a hard partial match: it may still be);
 * characters split across feeds; the mask through the vocabulary's trie
 * against feeding each token alone, on a synthetic vocabulary and on Kimi's;
 * masks kept by state and met again (split characters, other end tokens,
 * frames renumbered) as the walk makes them; a long answer's memory kept
 * small; a grammar whose parses explode refused with its error rather than
 * guessed. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <criterion/criterion.h>
#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/grammar_answer.h"
#include "core/text/grammar_trie.h"
#include "core/text/tokenizer.h"
#include "testutil.h"

static int compile_text(gbnf *g, const char *text, errbuf *e)
{
    return gbnf_compile(g, text, strlen(text), e);
}

Test(grammar, compile_errors_name_the_rule_and_line)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"", "no 'root' rule"},
        {"# only a comment\n", "no 'root' rule"},
        {"root ::= item\n", "line 1: rule 'item' is used but not defined"},
        {"root ::= \"a\"\n\nroot ::= \"b\"\n", "line 3: rule 'root' is defined twice (first on line 1)"},
        {"root ::= root \"a\" | \"b\"", "rule 'root' is left-recursive"},
        {"root ::= x\nx ::= y \"a\"\ny ::= \"b\"? x", "is left-recursive"},
        {"root ::= (\"\")*", "is left-recursive"}, /* a repetition of what can be empty */
        {"root ::= (\"a\"?)+ \"b\"", "is left-recursive"},
        {"root ::= \"abc", "line 1: a string literal is not closed"},
        {"root ::= \"a\nb\"", "a line break inside a string literal"},
        {"root ::= [abc", "a character class is not closed"},
        {"root ::= [z-a]", "backwards"},
        {"root ::= \"\\q\"", "unknown escape '\\q'"},
        {"root ::= \"\\x4\"", "2 hexadecimal digits"},
        {"root ::= \"\\uD800\"", "U+D800 is not a character"},
        {"root ::= \"a\"{3,2}", "bounds backwards"},
        {"root ::= \"a\"{10001}", "a repetition count above 10000"},
        {"root ::= \"a\"{,2}", "needs its count m"},
        {"root ::= \"a\"{2", "not closed (})"},
        {"root ::= (\"a\" | \"b\"", "a group is not closed"},
        {"root ::= \"a\" )", "a ')' that closes no group"},
        {"root := \"a\"", "expected '::=' after the rule name 'root'"},
        {"::= \"a\"", "expected a rule's name"},
        {"root ::= \"a\" ; \"b\"", "unexpected ';' in rule 'root'"},
        {"root ::= \"\xff\"", "not UTF-8"},
        {"root ::= \"a\"\nnext ::= \"b\"\n  \"c\" @", "line 3: unexpected '@' in rule 'next'"},
        /* alternatives no text ends (taken, an answer could begin one and never finish) */
        {"root ::= \"a\" [] | \"b\"", "rule 'root' has an alternative that can never end (a class"},
        {"root ::= \"a\" [\\x00] | \"b\"", "can never end (a class no character"},
        {"root ::= \"a\" x | \"b\"\nx ::= \"c\" x", "can never end (a rule every text of which"},
        {"root ::= x\nx ::= \"c\" x", "rule 'root' has an alternative that can never end"},
    };
    char large[1024] = "root ::=";
    for (int k = 0; k < 6; k++) /* 1.2 M elements once written out */
        strcat(large, " \"abcdefghijklmnopqrst\"{10000}");
    gbnf g;
    errbuf e;
    cr_expect_eq(compile_text(&g, large, &e), -1);
    cr_expect(strstr(e.msg, "too large: more than 1048576 elements") != NULL, "%s", e.msg);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cr_expect_eq(compile_text(&g, cases[i].text, &e), -1, "%s: compiled", cases[i].text);
        cr_expect(strstr(e.msg, cases[i].want) != NULL, "%s: '%s', wanted '%s'", cases[i].text, e.msg,
                  cases[i].want);
    }
}

/* the text fed whole: 1 whole, 0 a start, -1 neither; the feed's error (< -1) */
static int judge(const gbnf *g, const char *s, size_t n)
{
    grammar_answer a;
    cr_assert_eq(grammar_answer_init(&a, g), 0);
    int rc = grammar_answer_feed(&a, s, n);
    int out = rc < -1 ? rc : rc ? -1 : grammar_answer_complete(&a);
    grammar_answer_free(&a);
    return out;
}

/* A chain of rules, each empty or the next: r1 ::= r2 | "" ... (a request's
 * grammar may be long; the empty rules are found back from the chain's end) */
static char *rule_chain(int n, const char *tail)
{
    size_t cap = 64 + 40 * (size_t)n;
    char *t = malloc(cap);
    cr_assert_not_null(t);
    size_t at = (size_t)snprintf(t, cap, "root ::= r1 %s\n", tail);
    for (int i = 1; i < n; i++)
        at += (size_t)snprintf(t + at, cap - at, "r%d ::= r%d | \"\"\n", i, i + 1);
    snprintf(t + at, cap - at, "r%d ::= \"\"\n", n);
    return t;
}

Test(grammar, long_grammars_compile_or_are_refused_by_their_nesting)
{
    gbnf g;
    errbuf e;
    char *t = rule_chain(5000, "\"a\"");
    cr_assert_eq(compile_text(&g, t, &e), 0, "%s", e.msg);
    cr_expect_eq(judge(&g, "a", 1), 1, "every rule of the chain is empty");
    cr_expect_eq(judge(&g, "", 0), 0);
    gbnf_free(&g);
    free(t);
    t = rule_chain(20000, "\"a\"");
    cr_expect_eq(compile_text(&g, t, &e), -1);
    cr_expect(strstr(e.msg, "rules nest more than 10000 deep before a character") != NULL, "%s", e.msg);
    free(t);
    /* the same chain's last rule calling the first again is left recursion */
    t = rule_chain(3000, "\"a\"");
    char *last = strstr(t, "r3000 ::= \"\"");
    cr_assert_not_null(last);
    memcpy(last, "r3000 ::= r1", 12);
    cr_expect_eq(compile_text(&g, t, &e), -1);
    cr_expect(strstr(e.msg, "left-recursive") != NULL, "%s", e.msg);
    free(t);
}

Test(grammar, the_forms_llama_cpp_grammars_use)
{
    /* json.gbnf's shape: rules over several lines, comments, escapes, classes, {m} */
    const char *json =
        "# a JSON value\n"
        "root   ::= object\n"
        "value  ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
        "object ::=\n"
        "  \"{\" ws (\n"
        "            string \":\" ws value\n"
        "    (\",\" ws string \":\" ws value)*\n"
        "  )? \"}\" ws\n"
        "array  ::= \"[\" ws ( value (\",\" ws value)* )? \"]\" ws\n"
        "string ::= \"\\\"\" ( [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\bfnrt] | \"u\" [0-9a-fA-F]{4}) )* "
        "\"\\\"\" ws\n"
        "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws\n"
        "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";
    gbnf g;
    errbuf e;
    cr_assert_eq(compile_text(&g, json, &e), 0, "%s", e.msg);
    static const struct {
        const char *s;
        int want;
    } cases[] = {
        {"{}", 1},
        {"{\"a\": [1, 2.5e3, true, null], \"b\": {\"c\": \"\\u00e9\\n\"}}", 1},
        {"{\"a\": ", 0},
        {"{\"a\" 1}", -1},
        {"[1]", -1}, /* root is an object */
        {"{\"k\": \"caf\xc3\xa9\"} ", 1},
        {"{\"k\": 01}", -1},
        {"{\"k\": \"\\uZZZZ\"}", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        cr_expect_eq(judge(&g, cases[i].s, strlen(cases[i].s)), cases[i].want, "%s", cases[i].s);
    gbnf_free(&g);
    /* a line that starts with '|'; '_' in names; an empty alternative */
    cr_assert_eq(compile_text(&g, "root ::= my_rule\n  | \"x\"\nmy_rule ::= \"a\" | \n", &e), 0, "%s", e.msg);
    cr_expect_eq(judge(&g, "x", 1), 1);
    cr_expect_eq(judge(&g, "a", 1), 1);
    cr_expect_eq(judge(&g, "", 0), 1);
    cr_expect_eq(judge(&g, "b", 1), -1);
    gbnf_free(&g);
    /* repetition bounds */
    cr_assert_eq(compile_text(&g, "root ::= \"ab\"{2,3} [xy]{2,} \"z\"?", &e), 0, "%s", e.msg);
    cr_expect_eq(judge(&g, "abab", 4), 0);
    cr_expect_eq(judge(&g, "ababxy", 6), 1);
    cr_expect_eq(judge(&g, "abababyyyz", 10), 1);
    cr_expect_eq(judge(&g, "ababababxx", 10), -1);
    cr_expect_eq(judge(&g, "ababx", 5), 0);
    gbnf_free(&g);
}

/* ---- random grammars against PCRE2 -------------------------------------- */

typedef struct gtext {
    char s[4096];
    size_t n;
} gtext;

static void put(gtext *t, const char *s)
{
    size_t k = strlen(s);
    cr_assert_lt(t->n + k, sizeof t->s, "a random grammar outgrew the buffer");
    memcpy(t->s + t->n, s, k + 1);
    t->n += k;
}

/* the alphabet: ASCII, a 2-byte and a 3-byte character, and a line break */
static const char *const glyph[] = {"a", "b", "c", "\xc3\xa9", "\xe4\xb8\xad", "\n"};
static const char *const glyph_gbnf[] = {"a", "b", "c", "\xc3\xa9", "\xe4\xb8\xad", "\\n"};
static const char *const glyph_pcre[] = {"\\x{61}", "\\x{62}", "\\x{63}", "\\x{e9}", "\\x{4e2d}", "\\x{a}"};
#define N_GLYPH 6

static void random_item(test_rng *r, gtext *gb, gtext *re, int n_rules, int depth);

static void random_alternatives(test_rng *r, gtext *gb, gtext *re, int n_rules, int depth)
{
    int alts = 1 + (int)test_rnd(r, 3);
    for (int a = 0; a < alts; a++) {
        if (a) {
            put(gb, " | ");
            put(re, "|");
        }
        int items = (int)test_rnd(r, 4);
        for (int i = 0; i < items; i++) {
            put(gb, " ");
            random_item(r, gb, re, n_rules, depth);
        }
    }
}

static void random_item(test_rng *r, gtext *gb, gtext *re, int n_rules, int depth)
{
    char buf[64];
    unsigned kind = test_rnd(r, depth < 2 ? 6 : 4);
    if (kind == 0) { /* a literal */
        put(gb, "\"");
        put(re, "(?:");
        for (int k = 1 + (int)test_rnd(r, 2); k > 0; k--) {
            int c = (int)test_rnd(r, N_GLYPH);
            put(gb, glyph_gbnf[c]);
            put(re, glyph_pcre[c]);
        }
        put(gb, "\"");
        put(re, ")");
    } else if (kind == 1) { /* a class */
        int neg = test_rnd(r, 3) == 0, members = 0;
        gtext in = {.n = 0};
        put(gb, neg ? "[^" : "[");
        if (test_rnd(r, 3) == 0) {
            put(gb, "a-b");
            put(&in, "\\x{61}-\\x{62}");
            members++;
        }
        for (int c = 0; c < N_GLYPH; c++)
            if (test_rnd(r, 3) == 0) {
                put(gb, glyph_gbnf[c]);
                put(&in, glyph_pcre[c]);
                members++;
            }
        put(gb, "]");
        /* (PCRE2 reads "[]" and "[^]" otherwise: an empty class matches nothing, its complement anything) */
        put(re, members ? (neg ? "[^" : "[") : neg ? "(?s:.)" : "(?!)");
        if (members) {
            put(re, in.s);
            put(re, "]");
        }
    } else if (kind == 2) {
        put(gb, ".");
        put(re, "(?s:.)");
    } else if (kind == 3 || kind == 4) { /* a rule */
        int k = (int)test_rnd(r, (unsigned)n_rules);
        snprintf(buf, sizeof buf, k ? "r%d" : "root", k);
        put(gb, buf);
        snprintf(buf, sizeof buf, "(?&r%d)", k);
        put(re, buf);
    } else { /* a group */
        put(gb, "(");
        put(re, "(?:");
        random_alternatives(r, gb, re, n_rules, depth + 1);
        put(gb, " )");
        put(re, ")");
    }
    static const char *const reps[] = {"*", "+", "?", "{2}", "{0,2}", "{1,}"};
    if (test_rnd(r, 3) == 0) {
        const char *q = reps[test_rnd(r, 6)];
        put(gb, q);
        put(re, q);
    }
}

/* PCRE2: 1 the whole text matches, 2 a hard partial match, 0 neither, -1 it
 * gave up (its backtracking through an ambiguous grammar is cut short, where
 * the stacks take each character once) */
static int pcre(pcre2_code *re, const char *s, size_t n, uint32_t options)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    pcre2_set_match_limit(mc, 200000);
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, 0, options, md, mc);
    pcre2_match_context_free(mc);
    pcre2_match_data_free(md);
    if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT)
        return -1;
    cr_assert(rc >= 0 || rc == PCRE2_ERROR_NOMATCH || rc == PCRE2_ERROR_PARTIAL, "PCRE2 error %d", rc);
    return rc >= 0 ? 1 : rc == PCRE2_ERROR_PARTIAL ? 2 : 0;
}

/* PCRE2's verdict as judge() gives it; -2 when it gave up */
static int oracle(pcre2_code *re, const char *s, size_t n)
{
    int whole = pcre(re, s, n, 0), part = pcre(re, s, n, PCRE2_PARTIAL_HARD);
    if (whole < 0 || part < 0)
        return -2;
    return whole ? 1 : part ? 0 : -1;
}

/* Feeds s in pieces of random sizes (characters split across them); as judge(). */
static int judge_in_pieces(test_rng *r, const gbnf *g, const char *s, size_t n)
{
    grammar_answer a;
    cr_assert_eq(grammar_answer_init(&a, g), 0);
    int rc = 0;
    for (size_t i = 0; i < n && !rc;) {
        size_t k = 1 + test_rnd(r, 4);
        if (k > n - i)
            k = n - i;
        rc = grammar_answer_feed(&a, s + i, k);
        i += k;
    }
    int out = rc < -1 ? rc : rc ? -1 : grammar_answer_complete(&a);
    grammar_answer_free(&a);
    return out;
}

Test(grammar, random_grammars_judge_texts_as_pcre2_does, .timeout = 240)
{
    test_rng r = {20261206};
    int compiled = 0, refused = 0, texts = 0, whole = 0, starts = 0, gave_up = 0, complex = 0;
    int rounds = test_rounds(1000);
    for (int round = 0; round < rounds; round++) {
        int n_rules = 1 + (int)test_rnd(&r, 3);
        gtext gb = {.n = 0}, pat = {.n = 0};
        char buf[64];
        put(&pat, "(?(DEFINE)");
        for (int k = 0; k < n_rules; k++) {
            snprintf(buf, sizeof buf, k ? "r%d ::=" : "root ::=", k);
            put(&gb, buf);
            snprintf(buf, sizeof buf, "(?<r%d>", k);
            put(&pat, buf);
            random_alternatives(&r, &gb, &pat, n_rules, 0);
            put(&gb, "\n");
            put(&pat, ")");
        }
        put(&pat, ")\\A(?&r0)\\z");
        gbnf g;
        errbuf e;
        if (compile_text(&g, gb.s, &e)) {
            cr_assert(strstr(e.msg, "left-recursive") || strstr(e.msg, "can never end"), "%s: %s", gb.s, e.msg);
            refused++;
            continue;
        }
        compiled++;
        int err;
        PCRE2_SIZE at;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat.s, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &err, &at, NULL);
        cr_assert_not_null(re, "PCRE2 refuses %s (from %s)", pat.s, gb.s);
        /* random texts, then walks that PCRE2 keeps inside the language */
        for (int t = 0; t < 60; t++) {
            char s[64] = "";
            size_t n = 0;
            for (int k = (int)test_rnd(&r, 6); k > 0; k--) {
                const char *c = glyph[test_rnd(&r, N_GLYPH)];
                memcpy(s + n, c, strlen(c) + 1);
                n += strlen(c);
            }
            int want = oracle(re, s, n);
            if (want == -2) {
                gave_up++;
                continue;
            }
            int got = judge_in_pieces(&r, &g, s, n);
            if (got == GRAMMAR_TOO_COMPLEX) {
                complex++;
                continue;
            }
            texts++;
            cr_expect_eq(got, want, "grammar:\n%s\ntext '%s': PCRE2 says %d", gb.s, s, want);
        }
        for (int w = 0; w < 4; w++) {
            char s[256] = "";
            size_t n = 0;
            int v = oracle(re, s, n);
            for (int step = 0; step < 40 && v != -2; step++) {
                int got = judge(&g, s, n);
                if (got == GRAMMAR_TOO_COMPLEX) {
                    complex++;
                    break;
                }
                texts++;
                whole += v == 1;
                starts += v >= 0;
                cr_expect_eq(got, v, "grammar:\n%s\nwalk '%s': PCRE2 says %d", gb.s, s, v);
                /* the next character: one PCRE2 says goes on, when there is one
                 * (a hard partial match also finds a whole one, which ends at
                 * \z: one call per character, then one for the whole text) */
                int options[N_GLYPH], n_opt = 0;
                for (int c = 0; c < N_GLYPH; c++) {
                    size_t k = strlen(glyph[c]);
                    memcpy(s + n, glyph[c], k + 1);
                    if (pcre(re, s, n + k, PCRE2_PARTIAL_HARD) > 0)
                        options[n_opt++] = c;
                    s[n] = 0;
                }
                if (!n_opt)
                    break;
                const char *c = glyph[options[test_rnd(&r, (unsigned)n_opt)]];
                memcpy(s + n, c, strlen(c) + 1);
                n += strlen(c);
                int is_whole = pcre(re, s, n, 0);
                v = is_whole < 0 ? -2 : is_whole;
            }
        }
        pcre2_code_free(re);
        gbnf_free(&g);
    }
    cr_log_info("%d grammars compiled, %d refused as left-recursive or never ending; %d texts (%d whole, %d starts), PCRE2 "
                "gave up on %d, too many parses for %d",
                compiled, refused, texts, whole, starts, gave_up, complex);
    cr_expect_gt(compiled, 200 * rounds / 1000);
    cr_expect_gt(whole, 4000 * rounds / 1000);
    /* (a grammar whose parses double with each character, as "r ::= . root root | ''" makes them, is
     * refused at 65,536: rare among these) */
    cr_expect_lt(complex * 50, texts, "%d texts too complex of %d", complex, texts);
}

/* ---- the mask ------------------------------------------------------------ */

/* The mask through the trie of the grammar's token groups, through the
 * vocabulary's own trie and by feeding each token alone agree at each prefix
 * of text (fed in tokens' worth of bytes, split characters included). */
static void masks_agree(const vocab *v, const json_vocab *jv, const char *grammar, const char *text)
{
    gbnf g;
    errbuf e;
    cr_assert_eq(compile_text(&g, grammar, &e), 0, "%s", e.msg);
    int V = v->n_vocab, ends[1] = {V - 1};
    float *a = malloc((size_t)V * sizeof *a), *b = malloc((size_t)V * sizeof *b);
    float *c = malloc((size_t)V * sizeof *c);
    grammar_answer ga;
    cr_assert_eq(grammar_answer_init(&ga, &g), 0);
    size_t n = strlen(text);
    for (size_t at = 0; at <= n; at += at % 3 + 1) {
        grammar_answer t;
        cr_assert_eq(grammar_answer_init(&t, &g), 0);
        cr_assert_eq(grammar_answer_feed(&t, text, at), 0, "'%.*s' is a start of a text", (int)at, text);
        for (int i = 0; i < V; i++)
            a[i] = b[i] = c[i] = 0;
        int pa = grammar_answer_mask(&t, v, jv, ends, 1, a, V);
        int pb = grammar_answer_mask(&t, v, NULL, ends, 1, b, V);
        t.ungrouped = 1;
        int pc = grammar_answer_mask(&t, v, jv, ends, 1, c, V);
        t.ungrouped = 0;
        cr_expect(pa == pb && pc == pb, "after '%.*s': %d tokens by groups, %d by the trie, %d one by one",
                  (int)at, text, pa, pc, pb);
        int differ = 0;
        for (int i = 0; i < V; i++)
            differ += isinf(a[i]) != isinf(b[i]) || isinf(c[i]) != isinf(b[i]);
        cr_expect_eq(differ, 0, "after '%.*s': %d tokens judged otherwise", (int)at, text, differ);
        cr_expect_gt(pa, 0, "after '%.*s' some token must come", (int)at, text);
        /* a token the mask leaves is one the answer takes, and the end token waits for a whole text */
        for (int i = 0, tried = 0; i < V && tried < 40; i++) {
            if (isinf(a[i]) || i == V - 1)
                continue;
            size_t k;
            const char *bytes = vocab_decode(v, i, &k);
            grammar_answer u;
            cr_assert_eq(grammar_answer_init(&u, &g), 0);
            cr_assert_eq(grammar_answer_feed(&u, text, at), 0);
            cr_expect_eq(grammar_answer_feed(&u, bytes, k), 0, "token %d after '%.*s'", i, (int)at, text);
            grammar_answer_free(&u);
            tried++;
        }
        cr_expect_eq(!isinf(a[V - 1]), grammar_answer_complete(&t), "after '%.*s': the end token", (int)at,
                     text);
        grammar_answer_free(&t);
    }
    grammar_answer_free(&ga);
    free(a);
    free(b);
    free(c);
    gbnf_free(&g);
}

static const char arithmetic[] = "root ::= expr\n"
                                 "expr ::= term ((\"+\" | \"-\") term)*\n"
                                 "term ::= factor ((\"*\" | \"/\") factor)*\n"
                                 "factor ::= [0-9]+ | \"(\" expr \")\" | \"-\" factor\n";
static const char words[] = "root ::= (word \" \")* word \".\"\n"
                            "word ::= [a-zA-Z\\u00e0-\\u00ff]+ | \"caf\\u00e9\" | [\\u4e00-\\u9fff]{1,3}\n";
/* classes whose atoms begin at NUL, at the surrogates and past the BMP:
 * their representatives are characters a token may hold */
static const char edges[] = "root ::= ([^\\n] | \"\\n\" [^a-z\\u4e00-\\ud7ff\\ue000-\\U0001F5FF])*\n"
                            "         \"!\" [\\x00-\\x20]? .\n";
static const char high[] = "root ::= [a-z ]* [^\\x00-\\ud7ff]+\n";

Test(grammar, mask_through_the_trie_is_feeding_each_token, .timeout = 120)
{
    errbuf e;
    tokenizer tok;
    test_synth_tokenizer(&tok);
    json_vocab jv;
    cr_assert_eq(json_vocab_build(&jv, &tok.v, &e), 0, "%s", e.msg);
    masks_agree(&tok.v, &jv, arithmetic, "(12+3)*-4/(5-6)");
    masks_agree(&tok.v, &jv, words, "the quick brown fox jumps over the lazy dog.");
    masks_agree(&tok.v, &jv, edges, "one\nTwo \xe4\xb8\xad\n\xf0\x9f\x98\x80!");
    json_vocab_free(&jv);
    tokenizer_free(&tok);
}

/* A grammar of more classes than token_groups sweeps (TG_MAX_ATOM_WORK) is
 * not grouped: its mask walks the vocabulary's own trie, to the same tokens. */
Test(grammar, too_many_classes_to_group_walk_the_vocabulary, .timeout = 60)
{
    enum { CLASSES = 40000 };
    char *text = malloc(64 + (size_t)CLASSES * 16);
    cr_assert_not_null(text);
    size_t o = (size_t)sprintf(text, "root ::= [a-z]+ tail\ntail ::=");
    for (int c = 0; c < CLASSES; c++)
        o += (size_t)sprintf(text + o, " [\\U%08X]", 0x10000u + 2u * (unsigned)c);
    strcpy(text + o, "\n");
    errbuf e;
    tokenizer tok;
    test_synth_tokenizer(&tok);
    json_vocab jv;
    cr_assert_eq(json_vocab_build(&jv, &tok.v, &e), 0, "%s", e.msg);
    gbnf g;
    cr_assert_eq(compile_text(&g, text, &e), 0, "%s", e.msg);
    cr_expect_null(grammar_trie_get(&g, &tok.v), "%d classes are past the grouping's bound", CLASSES);
    gbnf_free(&g);
    masks_agree(&tok.v, &jv, text, "abc");
    json_vocab_free(&jv);
    tokenizer_free(&tok);
    free(text);
}

Test(grammar, mask_on_kimis_vocabulary, .timeout = 180)
{
    tokenizer tok;
    test_kimi_tokenizer_or_skip(&tok);
    json_vocab jv;
    errbuf e;
    cr_assert_eq(json_vocab_build(&jv, &tok.v, &e), 0, "%s", e.msg);
    masks_agree(&tok.v, &jv, arithmetic, "(12+3)*-4");
    masks_agree(&tok.v, &jv, words, "caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 ok.");
    masks_agree(&tok.v, &jv, edges, "one\nTwo \xe4\xb8\xad\n\xf0\x9f\x98\x80! x");
    masks_agree(&tok.v, &jv, high, "ok \xef\xbc\x8c\xf0\x9f\x98\x80");
    /* each letter may open a nested root: the parses multiply along the trie's
     * long tokens of letters, and the mask that would move them all is refused
     * (the answer's state stays as it was) */
    gbnf g;
    cr_assert_eq(compile_text(&g, "root ::= ([a-z] root?)+ \".\"", &e), 0, "%s", e.msg);
    int V = tok.v.n_vocab;
    float *logits = calloc((size_t)V, sizeof *logits);
    grammar_answer a;
    cr_assert_eq(grammar_answer_init(&a, &g), 0);
    cr_assert_eq(grammar_answer_feed(&a, "abc", 3), 0);
    cr_expect_eq(grammar_answer_mask(&a, &tok.v, &jv, &V, 0, logits, V), GRAMMAR_TOO_COMPLEX);
    cr_expect_eq(grammar_answer_feed(&a, "d.", 2), 0);
    cr_expect(grammar_answer_complete(&a));
    grammar_answer_free(&a);
    gbnf_free(&g);
    free(logits);
    json_vocab_free(&jv);
    tokenizer_free(&tok);
}

/* The mask kept at a state (grammar_answer.c's memo) and the walk at that
 * state agree, both how many tokens may come and which. */
static void kept_is_walked(grammar_answer *a, const vocab *v, const json_vocab *jv, const int *ends, int n_end,
                           const char *where)
{
    int V = v->n_vocab;
    float *kept = calloc((size_t)V, sizeof *kept), *walked = calloc((size_t)V, sizeof *walked);
    cr_assert(kept && walked);
    int pk = grammar_answer_mask(a, v, jv, ends, n_end, kept, V);
    a->walk_always = 1;
    int pw = grammar_answer_mask(a, v, jv, ends, n_end, walked, V);
    a->walk_always = 0;
    cr_expect_eq(pk, pw, "%s: %d tokens kept, %d walked", where, pk, pw);
    int differ = 0;
    for (int i = 0; i < V; i++)
        differ += isinf(kept[i]) != isinf(walked[i]);
    cr_expect_eq(differ, 0, "%s: %d tokens judged otherwise", where, differ);
    free(kept);
    free(walked);
}

/* Inside a loop the state comes back token after token and the mask is
 * taken from the memo; a character's first bytes (the same stacks, a
 * different character being read), other end tokens, and a long answer
 * whose frames are renumbered never take a mask made elsewhere. */
Test(grammar, masks_met_again_are_the_walks, .timeout = 60)
{
    errbuf e;
    tokenizer tok;
    test_synth_tokenizer(&tok);
    json_vocab jv;
    cr_assert_eq(json_vocab_build(&jv, &tok.v, &e), 0, "%s", e.msg);
    int V = tok.v.n_vocab, end1[1] = {V - 1}, end2[2] = {V - 2, V - 1};
    static const char *const cases[][2] = {
        {"root ::= [^\\n]* \"\\n\"", "caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 ok, caf\xc3\xa9 again"},
        {arithmetic, "(12+3)*-4/(5-6)+(7*8)"},
        {words, "the quick brown fox jumps over the lazy dog."},
    };
    char where[160];
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        gbnf g;
        cr_assert_eq(compile_text(&g, cases[k][0], &e), 0, "%s", e.msg);
        grammar_answer a;
        cr_assert_eq(grammar_answer_init(&a, &g), 0);
        const char *text = cases[k][1];
        size_t n = strlen(text);
        /* a byte at a time (split characters), then each state asked twice and with other ends */
        for (size_t at = 0; at <= n; at++) {
            snprintf(where, sizeof where, "after '%.*s'", (int)at, text);
            kept_is_walked(&a, &tok.v, &jv, end1, 1, where);
            kept_is_walked(&a, &tok.v, &jv, end1, 1, where);
            kept_is_walked(&a, &tok.v, &jv, end2, 2, where);
            if (at < n)
                cr_assert_eq(grammar_answer_feed(&a, text + at, 1), 0, "%s", where);
        }
        cr_expect_gt(a.masks_met, n, "%s: %lu masks met again", cases[k][0], a.masks_met);
        if (k == 0) { /* between characters of any script a free line's state is one state */
            unsigned long before = a.masks_met;
            static const char *const chars[] = {"\xe4\xb8\xad", "\xe6\x96\x87", "\xc3\xa9", "\xf0\x9f\x98\x80"};
            for (int c = 0; c < 4; c++) {
                kept_is_walked(&a, &tok.v, &jv, end1, 1, chars[c]);
                cr_assert_eq(grammar_answer_feed(&a, chars[c], strlen(chars[c])), 0);
            }
            cr_expect_eq(a.masks_met - before, 4, "%lu of 4 masks between characters met again",
                         a.masks_met - before);
        }
        grammar_answer_free(&a);
        gbnf_free(&g);
    }
    /* compact() renumbers the frames the kept states name: nestings of
     * random openers leave frames behind as they close, a long answer is
     * compacted now and then, and the masks around it are the walks */
    gbnf g;
    cr_assert_eq(compile_text(&g, "root ::= x* \"!\"\nx ::= \"a\" x* \"b\" | \"c\" x* \"d\"", &e), 0, "%s",
                 e.msg);
    grammar_answer a;
    cr_assert_eq(grammar_answer_init(&a, &g), 0);
    test_rng r = {7};
    int compactions = 0, since = 0;
    for (int round = 0; compactions < 3 && round < 20000; round++) {
        char text[64];
        int depth = 12 + (int)test_rnd(&r, 12);
        for (int d = 0; d < depth; d++) {
            text[d] = test_rnd(&r, 2) ? 'a' : 'c';
            text[2 * depth - 1 - d] = text[d] == 'a' ? 'b' : 'd';
        }
        for (int i = 0; i < 2 * depth; i++) {
            uint32_t before = a.n_frames;
            cr_assert_eq(grammar_answer_feed(&a, text + i, 1), 0);
            if (a.n_frames < before) {
                compactions++;
                since = 0;
            }
            if (since++ < 40 || i == 0) {
                snprintf(where, sizeof where, "round %d, %d compactions, %d characters since", round,
                         compactions, since);
                kept_is_walked(&a, &tok.v, &jv, end1, 1, where);
            }
        }
    }
    cr_expect_eq(compactions, 3, "the answer's frames were compacted %d times", compactions);
    grammar_answer_free(&a);
    gbnf_free(&g);
    json_vocab_free(&jv);
    tokenizer_free(&tok);
}

Test(grammar, a_long_answer_keeps_its_memory_small)
{
    gbnf g;
    errbuf e;
    cr_assert_eq(compile_text(&g, "root ::= (\"ab\" | \"a\" [bc])* \"!\"", &e), 0, "%s", e.msg);
    grammar_answer a;
    cr_assert_eq(grammar_answer_init(&a, &g), 0);
    for (int i = 0; i < 200000; i++)
        cr_assert_eq(grammar_answer_feed(&a, i % 2 ? "b" : "a", 1), 0);
    cr_expect_lt(a.n_frames, 100000u, "%u frames kept after 200,000 characters", a.n_frames);
    cr_expect(!grammar_answer_complete(&a));
    cr_assert_eq(grammar_answer_feed(&a, "!", 1), 0);
    cr_expect(grammar_answer_complete(&a));
    cr_expect_eq(grammar_answer_feed(&a, "a", 1), -1, "nothing follows the whole text");
    cr_expect(grammar_answer_complete(&a), "a refused feed leaves the state as it was");
    grammar_answer_free(&a);
    gbnf_free(&g);
}

Test(grammar, parses_that_explode_are_an_error_not_a_guess)
{
    /* after n a's, every sequence of n pending b's and c's is a parse of its own */
    gbnf g;
    errbuf e;
    cr_assert_eq(compile_text(&g, "root ::= \"a\" root \"b\" | \"a\" root \"c\" | \"\"", &e), 0, "%s", e.msg);
    grammar_answer a;
    cr_assert_eq(grammar_answer_init(&a, &g), 0);
    int rc = 0, n = 0;
    while (!rc && n < 40) {
        rc = grammar_answer_feed(&a, "a", 1);
        n++;
    }
    cr_expect_eq(rc, GRAMMAR_TOO_COMPLEX, "after %d a's: %d", n, rc);
    cr_expect(n > 12 && n < 18, "%d a's: about 3 x 2^n parses pass 65,536 at n = 15", n);
    grammar_answer_free(&a);
    gbnf_free(&g);
}
