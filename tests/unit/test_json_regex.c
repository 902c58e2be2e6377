/* json_regex against PCRE2 (the tokenizer's regex library) as the oracle:
 * random patterns (literals, '.', classes, \d, groups, alternation,
 * quantifiers) judge random strings as PCRE2's search does, and, anchored,
 * every prefix is taken exactly when PCRE2's hard partial match says a match
 * may still come; each position's completion lengths against the lengths of
 * the matches found by enumeration; what is not held refused by name; the
 * formats on their edge cases (leap days, leap seconds, offsets, octets). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <criterion/criterion.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/json_regex.h"
#include "testutil.h"


static pcre2_code *oracle(const char *pattern)
{
    int err;
    PCRE2_SIZE at;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_DOLLAR_ENDONLY, &err, &at, NULL);
    cr_assert_not_null(re, "PCRE2 refuses %s", pattern);
    return re;
}

/* PCRE2 on s[0, n): 1 a match, 0 none, 2 a hard partial one (options); -1
 * when its backtracking gave up (nested repeats) */
static int pcre(pcre2_code *re, const char *s, size_t n, uint32_t options)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, 0, options, md, NULL);
    pcre2_match_data_free(md);
    if (rc == PCRE2_ERROR_MATCHLIMIT)
        return -1;
    cr_assert(rc >= 0 || rc == PCRE2_ERROR_NOMATCH || rc == PCRE2_ERROR_PARTIAL, "PCRE2 error %d", rc);
    return rc >= 0 ? 1 : rc == PCRE2_ERROR_PARTIAL ? 2 : 0;
}

/* our automaton fed s[0, n) (UTF-8): -1 nothing left, else whether it accepts */
static int ours(const json_regex *r, const char *s, size_t n)
{
    json_regex_set st;
    json_regex_start(&st);
    for (size_t i = 0; i < n;) {
        uint32_t c = (unsigned char)s[i];
        int k = c < 0x80 ? 1 : c >= 0xe0 ? 3 : 2;
        if (k > 1) {
            c &= k == 2 ? 0x1f : 0x0f;
            for (int j = 1; j < k; j++)
                c = c << 6 | ((unsigned char)s[i + j] & 0x3f);
        }
        i += (size_t)k;
        if (!json_regex_may_take(r, &st, c, c, 0, -1))
            return -1;
        json_regex_step(r, &st, c);
    }
    return json_regex_accepts(r, &st);
}

static void random_string(test_rng *g, char *s, size_t *n, int max)
{
    static const char *const chars[] = {"a", "b", "c", "1", "z", ".", "\xc3\xa9", "\n"};
    *n = 0;
    for (int k = (int)test_rnd(g, (uint32_t)max + 1); k > 0; k--) {
        const char *c = chars[test_rnd(g, 8)];
        memcpy(s + *n, c, strlen(c));
        *n += strlen(c);
    }
}

Test(json_regex, random_patterns_match_as_pcre2_searches, .timeout = 120)
{
    test_rng g = {.s = 5};
    int judged = 0, matched = 0;
    for (int trial = 0; trial < 400; trial++) {
        char pat[300], full[320];
        test_random_pattern(&g, pat, sizeof pat, 0);
        /* as written (a search), and anchored at either end or both */
        int anchors = (int)test_rnd(&g, 4);
        snprintf(full, sizeof full, "%s(?:%s)%s", anchors & 1 ? "^" : "", pat, anchors & 2 ? "$" : "");
        json_regex r;
        errbuf e;
        int rc = json_regex_compile(&r, full, strlen(full), &e);
        if (rc && strstr(e.msg, "more than 511")) {
            continue;
        }
        cr_assert_eq(rc, 0, "%s: %s", full, e.msg);
        pcre2_code *re = oracle(full);
        for (int k = 0; k < 30; k++) {
            char s[64];
            size_t n;
            random_string(&g, s, &n, 8);
            int want = pcre(re, s, n, 0), got = ours(&r, s, n) == 1;
            if (want < 0)
                continue;
            cr_assert_eq(got, want, "'%.*s' under /%s/: ours %d, PCRE2 %d", (int)n, s, full, got, want);
            judged++;
            matched += want;
        }
        pcre2_code_free(re);
        json_regex_free(&r);
    }
    cr_expect(matched > judged / 10 && matched < judged * 9 / 10, "%d of %d matched", matched, judged);
}

Test(json_regex, anchored_prefixes_are_taken_as_pcre2_partial_matches_say, .timeout = 120)
{
    test_rng g = {.s = 9};
    int viable = 0, judged = 0;
    for (int trial = 0; trial < 400; trial++) {
        char pat[300], full[320];
        test_random_pattern(&g, pat, sizeof pat, 0);
        snprintf(full, sizeof full, "^(?:%s)$", pat);
        json_regex r;
        errbuf e;
        if (json_regex_compile(&r, full, strlen(full), &e)) {
            cr_assert(strstr(e.msg, "more than 511") != NULL, "%s: %s", full, e.msg);
            continue;
        }
        pcre2_code *re = oracle(full);
        for (int k = 0; k < 30; k++) {
            char s[64];
            size_t n;
            random_string(&g, s, &n, 6);
            if (!n)
                continue;
            int p = pcre(re, s, n, PCRE2_ANCHORED | PCRE2_PARTIAL_HARD), got = ours(&r, s, n) >= 0;
            if (p < 0)
                continue;
            cr_assert_eq(got, p != 0, "prefix '%.*s' under /%s/: ours %d, PCRE2 %d", (int)n, s, full, got, p);
            judged++;
            viable += got;
        }
        pcre2_code_free(re);
        json_regex_free(&r);
    }
    cr_expect(viable > judged / 20 && viable < judged, "%d of %d prefixes viable", viable, judged);
}

Test(json_regex, completion_lengths_are_those_of_the_matches, .timeout = 120)
{
    /* one character of each kind the patterns' classes tell apart */
    static const char *const reps[] = {"a", "b", "c", "1", ".", "\xc3\xa9"};
    test_rng g = {.s = 13};
    for (int trial = 0; trial < 100; trial++) {
        char pat[300], full[320];
        test_random_pattern(&g, pat, sizeof pat, 1);
        snprintf(full, sizeof full, "^(?:%s)$", pat);
        json_regex r;
        errbuf e;
        if (json_regex_compile(&r, full, strlen(full), &e))
            continue;
        pcre2_code *re = oracle(full);
        int lens[6] = {0}, gave_up = 0;
        char s[16];
        for (int len = 0; len <= 5 && !gave_up; len++) {
            int total = 1;
            for (int k = 0; k < len; k++)
                total *= 6;
            for (int code = 0; code < total && !lens[len]; code++) {
                size_t n = 0;
                for (int k = 0, c = code; k < len; k++, c /= 6) {
                    memcpy(s + n, reps[c % 6], strlen(reps[c % 6]));
                    n += strlen(reps[c % 6]);
                }
                int m = pcre(re, s, n, 0);
                gave_up |= m < 0;
                lens[len] |= m > 0;
            }
        }
        if (gave_up) {
            pcre2_code_free(re);
            json_regex_free(&r);
            continue;
        }
        json_regex_set st;
        json_regex_start(&st);
        for (int len = 0; len <= 5; len++)
            cr_assert_eq(json_regex_feasible(&r, &st, len, len), lens[len], "/%s/: a match of %d characters",
                         full, len);
        /* a window: some match between 2 and 4 */
        cr_assert_eq(json_regex_feasible(&r, &st, 2, 4), lens[2] || lens[3] || lens[4], "/%s/", full);
        pcre2_code_free(re);
        json_regex_free(&r);
    }
}

static void refused(const char *pattern, const char *why)
{
    json_regex r;
    errbuf e;
    cr_expect_neq(json_regex_compile(&r, pattern, strlen(pattern), &e), 0, "taken: %s", pattern);
    cr_expect(strstr(e.msg, why) != NULL, "'%s' for %s", e.msg, pattern);
}

Test(json_regex, refuses_what_it_does_not_hold)
{
    refused("(a)\\1", "backreference");
    refused("a(?=b)", "lookaround");
    refused("\\bword", "word boundary");
    refused("a|^b", "anchor");
    refused("a$b", "anchor");
    refused("*a", "nothing to repeat");
    refused("a**", "quantifier after a quantifier");
    refused("(ab", "without its ')'");
    refused("ab)", "without its '('");
    refused("[ab", "without its ']'");
    refused("[z-a]", "out of order");
    refused("\\p{L}", "Unicode property");
    refused("(a{50}){11}", "more than 511");
    refused("a{2,1}", "below n");
    refused("^[]$", "no string matches");
    refused("^a[^\\s\\S]$", "no string matches");
    refused("[ab]{2,65535}", "more than 1000");     /* (taken, it was the text "{2,65535}") */
    refused("a{100000}", "more than 1000");
    refused("^a|b$", "beside a '|' outside a group"); /* (taken, it was held as ^(a|b)$) */
    /* taken: '{' that is no quantifier, an escaped '$' at the end, named groups */
    json_regex r;
    errbuf e;
    /* empty groups repeated within each other are the empty string, once
     * (copies of them multiplied: 10^12 of them hung a server thread) */
    const char *empty = "^((((){1000}){1000}){1000}){1000}$";
    cr_assert_eq(json_regex_compile(&r, empty, strlen(empty), &e), 0, "%s", e.msg);
    cr_expect(ours(&r, "", 0) == 1 && ours(&r, "a", 1) != 1);
    json_regex_free(&r);
    cr_assert_eq(json_regex_compile(&r, "^(a(){5}|b){2}$", 15, &e), 0, "%s", e.msg);
    cr_expect(ours(&r, "ab", 2) == 1 && ours(&r, "abb", 3) != 1);
    json_regex_free(&r);
    cr_assert_eq(json_regex_compile(&r, "^a{,2}\\$$", 9, &e), 0, "%s", e.msg);
    cr_expect_eq(ours(&r, "a{,2}$", 6), 1);
    json_regex_free(&r);
    cr_assert_eq(json_regex_compile(&r, "^(?<year>\\d{4})$", 16, &e), 0, "%s", e.msg);
    cr_expect_eq(ours(&r, "2024", 4), 1);
    json_regex_free(&r);
    /* completions longer than the lengths known one by one */
    json_regex_set st;
    json_regex_start(&st);
    cr_assert_eq(json_regex_compile(&r, "^a{300}$", 8, &e), 0, "%s", e.msg);
    cr_expect(json_regex_feasible(&r, &st, 300, -1) && json_regex_feasible(&r, &st, 0, 400));
    cr_expect(!json_regex_feasible(&r, &st, 0, 255));
    json_regex_free(&r);
    cr_assert_eq(json_regex_compile(&r, "^a{2}b*$", 8, &e), 0, "%s", e.msg);
    cr_expect(json_regex_feasible(&r, &st, 1000, -1) && !json_regex_feasible(&r, &st, 0, 1));
    json_regex_free(&r);
}

static void format_cases(const char *format, const char *const *yes, const char *const *no)
{
    json_regex r;
    errbuf e;
    cr_assert_eq(json_regex_format(&r, format, &e), 0, "%s: %s", format, e.msg);
    for (; *yes; yes++)
        cr_expect_eq(ours(&r, *yes, strlen(*yes)), 1, "%s: '%s' refused", format, *yes);
    for (; *no; no++)
        cr_expect_neq(ours(&r, *no, strlen(*no)), 1, "%s: '%s' taken", format, *no);
    json_regex_free(&r);
}

Test(json_regex, formats)
{
    format_cases("date", (const char *[]){"2024-02-29", "2000-02-29", "2023-12-31", "2023-04-30", NULL},
                 (const char *[]){"2023-02-29", "1900-02-29", "2023-04-31", "2023-13-01", "2023-00-10",
                                  "2023-1-01", "2023-01-01T", NULL});
    format_cases("time", (const char *[]){"23:59:60Z", "00:00:00.123+05:30", "12:30:00z", NULL},
                 (const char *[]){"24:00:00Z", "12:30:00", "12:60:00Z", "12:30:00+5:30", NULL});
    format_cases("date-time", (const char *[]){"2024-01-05T10:20:30.5Z", "2024-01-05t10:20:30-08:00", NULL},
                 (const char *[]){"2024-01-05 10:20:30Z", "2024-01-05T10:20Z", NULL});
    format_cases(
        "uuid", (const char *[]){"123e4567-e89b-12d3-a456-426614174000", NULL},
        (const char *[]){"123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400g", NULL});
    format_cases("ipv4", (const char *[]){"255.255.255.255", "0.0.0.0", "10.1.20.199", NULL},
                 (const char *[]){"256.1.1.1", "01.1.1.1", "1.1.1", "1.1.1.1.", NULL});
    format_cases("hostname", (const char *[]){"a-b.c", "localhost", "x1.example.org", NULL},
                 (const char *[]){"-a", "a-", "a..b", "a_b", NULL});
    format_cases("email", (const char *[]){"a.b@example.com", "x+y@mail.co.uk", NULL},
                 (const char *[]){"a@b", "a@@b.c", ".a@b.c", "a b@c.d", NULL});
    json_regex r;
    errbuf e;
    cr_expect_neq(json_regex_format(&r, "uri", &e), 0);
    cr_expect(strstr(e.msg, "format 'uri' is not held") != NULL, "%s", e.msg);
}
