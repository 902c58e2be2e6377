/* token_groups: tokens are grouped exactly as the classes tell them apart,
 * against a brute-force oracle on random classes (negated ones, ranges at
 * NUL, the surrogates and the planes' edges); each representative is held
 * by the same classes as the character it stands for and is never NUL or a
 * surrogate; too many classes are refused rather than slow. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/token_groups.h"
#include "core/text/utf8.h"
#include "core/text/vocab.h"
#include "testutil.h"

enum { MAX_CLS = 12, MAX_RANGES = 4, TOKENS = 300, MAX_CHARS = 4 };

static const uint32_t edges[] = {0,      1,      '"',     '\\',    'a',      'z',     0x7f,   0x80,
                                 0xff,   0x100,  0x7ff,   0x800,   0xd7ff,   0xd800,  0xdfff, 0xe000,
                                 0xfffd, 0xffff, 0x10000, 0x1f600, 0x10fffe, 0x10ffff};
#define N_EDGES (sizeof edges / sizeof *edges)

static uint32_t random_cp(test_rng *r)
{
    uint32_t c;
    switch (test_rnd(r, 3)) {
    case 0: c = edges[test_rnd(r, N_EDGES)]; break;
    case 1: c = edges[test_rnd(r, N_EDGES)] + test_rnd(r, 3) - 1; break;
    default: c = test_rnd(r, 0x110000); break;
    }
    return c > 0x10ffff ? 0x10ffff : c;
}

typedef struct classes {
    uint32_t pairs[MAX_CLS][2 * MAX_RANGES];
    class_ranges c[MAX_CLS];
    int n;
} classes;

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Random classes: sorted ends paired into disjoint ranges, some negated. */
static void random_classes(test_rng *r, classes *k)
{
    k->n = 1 + (int)test_rnd(r, MAX_CLS);
    for (int c = 0; c < k->n; c++) {
        int n = 1 + (int)test_rnd(r, MAX_RANGES);
        uint32_t ends[2 * MAX_RANGES];
        for (int i = 0; i < 2 * n; i++)
            ends[i] = random_cp(r);
        qsort(ends, (size_t)(2 * n), sizeof *ends, cmp_u32);
        int m = 0; /* ranges [ends[2i], ends[2i+1]] kept apart from the one before */
        for (int i = 0; i < n; i++)
            if (!m || ends[2 * i] > k->pairs[c][2 * m - 1] + 1) {
                k->pairs[c][2 * m] = ends[2 * i];
                k->pairs[c][2 * m + 1] = ends[2 * i + 1];
                m++;
            }
        k->c[c] = (class_ranges){k->pairs[c], (uint32_t)m, (uint8_t)(test_rnd(r, 4) == 0)};
    }
}

static int holds(const class_ranges *c, uint32_t cp)
{
    int in = 0;
    for (uint32_t i = 0; i < c->n; i++)
        in |= c->pairs[2 * i] <= cp && cp <= c->pairs[2 * i + 1];
    return in != c->negated;
}

/* The classes that hold cp, as bits. */
static unsigned held_by(const classes *k, uint32_t cp)
{
    unsigned m = 0;
    for (int c = 0; c < k->n; c++)
        m |= (unsigned)holds(&k->c[c], cp) << c;
    return m;
}

static int is_scalar(uint32_t c)
{
    return c <= 0x10ffff && (c < 0xd800 || c > 0xdfff);
}

Test(token_groups, groups_are_what_the_classes_tell_apart, .timeout = 60)
{
    test_rng r = {20261206};
    static uint32_t chars[TOKENS][MAX_CHARS];
    static int len[TOKENS];
    static char text[TOKENS][4 * MAX_CHARS + 1];
    const char *extra[TOKENS];
    int never = 0, grouped = 0, shared = 0;
    for (int round = 0; round < 200; round++) {
        classes k;
        random_classes(&r, &k);
        for (int t = 0; t < TOKENS; t++) {
            int again;
            do { /* a token of scalars, not a single byte (those are there) and not one drawn before */
                len[t] = 1 + (int)test_rnd(&r, MAX_CHARS);
                size_t o = 0;
                for (int i = 0; i < len[t]; i++) {
                    uint32_t c;
                    do /* (a NUL cannot be in a C string: the byte 0 token has it) */
                        c = random_cp(&r);
                    while (!c || !is_scalar(c));
                    chars[t][i] = c;
                    o += utf8_encode(c, text[t] + o);
                }
                text[t][o] = 0;
                again = o == 1;
                for (int u = 0; u < t && !again; u++)
                    again = !strcmp(text[u], text[t]);
            } while (again);
            extra[t] = text[t];
        }
        vocab v;
        test_vocab_of(&v, extra, TOKENS);
        token_groups tg;
        cr_assert_eq(token_groups_build(&tg, &v, k.c, k.n), 0);
        cr_assert_eq(tg.n_vocab, v.n_vocab);
        /* the single bytes: NUL is never taken; bytes past ASCII are not whole characters */
        cr_expect_eq(tg.group[0], TG_NEVER);
        cr_expect_eq(tg.group[0x80], TG_SPLIT);
        for (int t = 0; t < TOKENS; t++) {
            int g = tg.group[256 + t], none = 0;
            for (int i = 0; i < len[t]; i++)
                none |= held_by(&k, chars[t][i]) == 0;
            if (none) {
                cr_expect_eq(g, TG_NEVER, "round %d token %d: a character no class holds", round, t);
                never++;
                continue;
            }
            cr_assert_geq(g, 0, "round %d token %d must be grouped, got %d", round, t, g);
            grouped++;
            cr_assert_eq(tg.at[g + 1] - tg.at[g], len[t]);
            for (int i = 0; i < len[t]; i++) {
                uint32_t rep = tg.cps[tg.at[g] + i];
                cr_expect(rep != 0 && is_scalar(rep), "round %d: representative U+%X", round, rep);
                cr_expect_eq(held_by(&k, rep), held_by(&k, chars[t][i]),
                             "round %d: U+%X stands for U+%X but classes tell them apart", round, rep,
                             chars[t][i]);
            }
            for (int u = 0; u < t; u++) {
                int same = tg.group[256 + u] == g, alike = len[u] == len[t];
                for (int i = 0; alike && i < len[t]; i++)
                    alike = held_by(&k, chars[u][i]) == held_by(&k, chars[t][i]);
                cr_expect_eq(same, alike, "round %d: tokens %d and %d grouped %d, alike %d", round, u, t,
                             same, alike);
                shared += same;
            }
        }
        token_groups_free(&tg);
        vocab_free(&v);
    }
    cr_log_info("%d tokens grouped (%d pairs sharing a group), %d never taken", grouped, shared, never);
    cr_expect_gt(grouped, 10000);
    cr_expect_gt(never, 1000);
    cr_expect_gt(shared, 1000);
}

/* A great many classes are refused (the caller tries tokens one by one),
 * not swept slowly. */
Test(token_groups, too_many_classes_are_refused)
{
    enum { N = 40000 };
    uint32_t *pairs = malloc(2 * N * sizeof *pairs);
    class_ranges *cls = malloc(N * sizeof *cls);
    cr_assert(pairs && cls);
    for (int c = 0; c < N; c++) {
        pairs[2 * c] = pairs[2 * c + 1] = 0x10000u + 2u * (uint32_t)c;
        cls[c] = (class_ranges){pairs + 2 * c, 1, 0};
    }
    vocab v;
    test_vocab_of(&v, NULL, 0);
    token_groups tg;
    cr_expect_eq(token_groups_build(&tg, &v, cls, N), -1);
    cr_expect_eq(token_groups_build(&tg, &v, cls, 100), 0, "a hundred of them are grouped");
    cr_expect_eq(tg.group['a'], TG_NEVER, "'a' is in none of them");
    token_groups_free(&tg);
    vocab_free(&v);
    free(pairs);
    free(cls);
}
