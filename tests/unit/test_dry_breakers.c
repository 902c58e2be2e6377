/* dry_breakers: breakers made into token sequences as llama.cpp makes them,
 * checked against the definition over a whole vocabulary (synthetic, and
 * Kimi's when the testdata is there): a token that holds a breaker is one by
 * itself; a token whose text ends with a breaker's start heads one, followed
 * by the tokens of the breaker's rest; no other token heads one. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/dry_breakers.h"
#include "testutil.h"

/* The sequences token id heads for breaker str, by the definition: into
 * tails (lengths in lens), how many. */
static int expected(const tokenizer *t, int id, const char *str, int tails[][DRY_MAX_TAIL], int *lens)
{
    size_t wn, len = strlen(str);
    const char *w = vocab_decode(&t->v, id, &wn);
    if (!w || !wn)
        return 0;
    for (size_t pos = 0; pos + len <= wn; pos++)
        if (!memcmp(w + pos, str, len)) {
            lens[0] = 0;
            return 1;
        }
    int n = 0;
    for (size_t pos = 0; pos < wn; pos++) {
        size_t k = wn - pos;
        if (k >= len || memcmp(w + pos, str, k))
            continue;
        token_list rest = {0};
        errbuf e;
        cr_assert_eq(tokenizer_encode(t, str + k, len - k, 0, &rest, &e), 0, "%s", e.msg);
        int m = rest.n > DRY_MAX_TAIL ? DRY_MAX_TAIL : (int)rest.n, dup = 0;
        for (int i = 0; i < n && !dup; i++)
            dup = lens[i] == m && (!m || !memcmp(tails[i], rest.ids, (size_t)m * sizeof *rest.ids));
        if (!dup) {
            memcpy(tails[n], rest.ids, (size_t)m * sizeof *rest.ids);
            lens[n++] = m;
        }
        token_list_free(&rest);
    }
    return n;
}

static void breakers_are_as_defined(const tokenizer *t)
{
    static const char *const strs[] = {"\n", "*", "the end.", "<|im_end|>"};
    for (size_t s = 0; s < sizeof strs / sizeof *strs; s++) {
        dry_breakers b;
        errbuf e;
        cr_assert_eq(dry_breakers_build(&b, t, &strs[s], 1, &e), 0, "%s", e.msg);
        int heads = 0, singles = 0;
        for (int id = 0, k = 0; id < t->v.n_vocab; id++) {
            int tails[8][DRY_MAX_TAIL], lens[8];
            int want = expected(t, id, strs[s], tails, lens), got = 0;
            for (; k < b.n && b.head[k] == id; k++, got++) {
                int len = b.at[k + 1] - b.at[k], found = 0;
                for (int i = 0; i < want && !found; i++)
                    found = lens[i] == len &&
                            (!len || !memcmp(tails[i], b.tail + b.at[k], (size_t)len * sizeof *b.tail));
                cr_expect(found, "breaker '%s': token %d heads a sequence of %d the definition lacks",
                          strs[s], id, len);
                singles += len == 0;
            }
            cr_expect_eq(got, want, "breaker '%s': token %d heads %d sequences, the definition %d", strs[s],
                         id, got, want);
            heads += got > 0;
        }
        cr_expect_gt(heads, 0, "breaker '%s' has no token", strs[s]);
        if (s == 2) /* (no token holds "the end." whole: it is begun by many) */
            cr_expect_gt(heads - singles, 10, "breaker '%s' is begun by %d tokens", strs[s], heads - singles);
        else
            cr_expect_gt(singles, 0, "breaker '%s' is held by no token", strs[s]);
        dry_breakers_free(&b);
    }
}

Test(dry_breakers, as_defined_on_a_synthetic_vocabulary, .timeout = 60)
{
    tokenizer tok;
    test_synth_tokenizer(&tok);
    breakers_are_as_defined(&tok);
    tokenizer_free(&tok);
}

Test(dry_breakers, as_defined_on_kimis_vocabulary, .timeout = 120)
{
    tokenizer tok;
    test_kimi_tokenizer_or_skip(&tok);
    breakers_are_as_defined(&tok);
    tokenizer_free(&tok);
}
