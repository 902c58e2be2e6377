/* mask_memo: a kept mask applied sets -inf exactly where it ruled tokens out
 * (random masks over vocabularies of every size around the words' edges),
 * returns its count, is found only by its own key and question, and the
 * least recently met of more masks than it keeps is the one replaced. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "core/text/mask_memo.h"
#include "testutil.h"

static const vocab *const fake_vocab = (const vocab *)&fake_vocab; /* (only compared) */

Test(mask_memo, kept_masks_apply_as_made)
{
    test_rng g = {.s = 5};
    for (int V = 1; V < 300; V += 1 + (int)test_rnd(&g, 9)) {
        uint8_t *ok = malloc((size_t)V);
        float *logits = malloc((size_t)V * sizeof *logits);
        cr_assert(ok && logits);
        int possible = 0;
        for (int i = 0; i < V; i++)
            possible += ok[i] = (uint8_t)(test_rnd(&g, 3) != 0);
        mask_memo *m = NULL;
        int key = V, ends[2] = {V - 1, 7};
        cr_expect_eq(mask_memo_apply(m, &key, sizeof key, fake_vocab, V, ends, 1, logits), -1, "nothing kept");
        mask_memo_keep(&m, &key, sizeof key, fake_vocab, V, ends, 1, ok, possible);
        for (int i = 0; i < V; i++)
            logits[i] = 1.0f;
        cr_assert_eq(mask_memo_apply(m, &key, sizeof key, fake_vocab, V, ends, 1, logits), possible);
        for (int i = 0; i < V; i++)
            cr_assert_eq(isinf(logits[i]) != 0, !ok[i], "V %d, token %d", V, i);
        /* another key, other end tokens, another vocabulary size: not this mask */
        int other = V + 1;
        cr_expect_eq(mask_memo_apply(m, &other, sizeof other, fake_vocab, V, ends, 1, logits), -1);
        cr_expect_eq(mask_memo_apply(m, &key, sizeof key, fake_vocab, V, ends, 2, logits), -1);
        cr_expect_eq(mask_memo_apply(m, &key, sizeof key, fake_vocab, V + 1, ends, 1, logits), -1);
        cr_expect_eq(mask_memo_apply(m, &key, sizeof key - 1, fake_vocab, V, ends, 1, logits), -1);
        mask_memo_forget(m);
        cr_expect_eq(mask_memo_apply(m, &key, sizeof key, fake_vocab, V, ends, 1, logits), -1, "forgotten");
        mask_memo_free(m);
        free(ok);
        free(logits);
    }
}

Test(mask_memo, the_least_recently_met_is_replaced)
{
    enum { V = 100, KEYS = 6 };
    uint8_t ok[V] = {0};
    float logits[V];
    mask_memo *m = NULL;
    for (int k = 0; k < 4; k++) { /* four kept, the first met again */
        ok[k] = 1;
        mask_memo_keep(&m, &k, sizeof k, fake_vocab, V, NULL, 0, ok, k + 1);
        ok[k] = 0;
    }
    int first = 0, fifth = 4;
    cr_assert_eq(mask_memo_apply(m, &first, sizeof first, fake_vocab, V, NULL, 0, logits), 1);
    mask_memo_keep(&m, &fifth, sizeof fifth, fake_vocab, V, NULL, 0, ok, 0);
    int kept[KEYS];
    for (int k = 0; k < KEYS; k++)
        kept[k] = mask_memo_apply(m, &k, sizeof k, fake_vocab, V, NULL, 0, logits) >= 0;
    cr_expect(kept[0] && !kept[1] && kept[2] && kept[3] && kept[4] && !kept[5],
              "kept %d %d %d %d %d %d: the second (least recently met) replaced", kept[0], kept[1], kept[2],
              kept[3], kept[4], kept[5]);
    /* a key longer than the memo keeps, or too many end tokens: nothing kept */
    static uint8_t long_key[MASK_MEMO_MAX_KEY + 1];
    int ends[MASK_MEMO_MAX_END + 1] = {0};
    cr_expect(!mask_memo_keeps(sizeof long_key, 1) && !mask_memo_keeps(4, MASK_MEMO_MAX_END + 1));
    mask_memo_keep(&m, long_key, sizeof long_key, fake_vocab, V, NULL, 0, ok, 0);
    cr_expect_eq(mask_memo_apply(m, long_key, sizeof long_key, fake_vocab, V, NULL, 0, logits), -1);
    mask_memo_keep(&m, &first, sizeof first, fake_vocab, V, ends, MASK_MEMO_MAX_END + 1, ok, 0);
    cr_expect_eq(mask_memo_apply(m, &first, sizeof first, fake_vocab, V, ends, MASK_MEMO_MAX_END + 1, logits), -1);
    mask_memo_free(m);
}
