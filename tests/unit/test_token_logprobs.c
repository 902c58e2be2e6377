/* token_logprobs against a plain reference: each token's log-probability is
 * its logit less the log of the softmax's sum (in long double), the top list
 * is the sorted vocabulary's head, and impossible tokens get the floor. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/engine/token_logprobs.h"

static uint64_t next_u64(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 11;
}

static float ref_logprob(const float *l, int V, int id)
{
    long double mx = -INFINITY, z = 0;
    for (int i = 0; i < V; i++)
        if (l[i] == l[i] && l[i] > mx)
            mx = l[i];
    for (int i = 0; i < V; i++)
        if (l[i] == l[i])
            z += expl(l[i] - mx);
    if (l[id] != l[id] || l[id] == -INFINITY)
        return LOGPROB_FLOOR;
    long double v = l[id] - mx - logl(z);
    return v < LOGPROB_FLOOR ? LOGPROB_FLOOR : (float)v;
}

Test(token_logprobs, match_a_plain_reference)
{
    uint64_t st = 11;
    static const int vocabs[] = {1, 3, 50, 4000};
    for (int trial = 0; trial < 200; trial++) {
        int V = vocabs[trial % 4], n_top = (int)(next_u64(&st) % 22);
        float *l = malloc((size_t)V * sizeof *l);
        float scale = (float)(next_u64(&st) % 100) + 0.5f;
        for (int i = 0; i < V; i++) {
            uint64_t r = next_u64(&st);
            l[i] = r % 17 == 0 ? -INFINITY : r % 23 == 0 ? NAN
                   : trial % 3 == 0 ? (float)(r % 5)   /* ties */
                                    : scale * ((float)(r % 20001) / 10000.0f - 1.0f);
        }
        int chosen = (int)(next_u64(&st) % (uint64_t)V);
        step_logprobs out;
        step_logprobs_compute(l, V, chosen, n_top, &out);
        float want = ref_logprob(l, V, chosen);
        cr_assert_eq(out.chosen.id, chosen);
        cr_assert(fabsf(out.chosen.logprob - want) <= 1e-5f * (1 + fabsf(want)),
                  "trial %d: %g, the reference %g", trial, out.chosen.logprob, want);
        int k_want = n_top < V ? (n_top < LOGPROBS_MAX_TOP ? n_top : LOGPROBS_MAX_TOP) : V;
        cr_assert_eq(out.n_top, k_want, "trial %d", trial);
        /* the top list: not worse than any token left out, in order, ties by id */
        for (int k = 0; k < out.n_top; k++) {
            int id = out.top[k].id;
            float lk = l[id] == l[id] ? l[id] : -INFINITY;
            cr_assert(fabsf(out.top[k].logprob - ref_logprob(l, V, id)) <= 1e-5f * (1 + fabsf(out.top[k].logprob)));
            if (k > 0) {
                int pid = out.top[k - 1].id;
                float lp = l[pid] == l[pid] ? l[pid] : -INFINITY;
                cr_assert(lp > lk || (lp == lk && pid < id), "trial %d: top %d out of order", trial, k);
            }
            for (int i = 0; i < V; i++) {
                int listed = 0;
                for (int q = 0; q < out.n_top; q++)
                    listed |= out.top[q].id == i;
                float li = l[i] == l[i] ? l[i] : -INFINITY;
                cr_assert(listed || li < lk || (li == lk && i > id),
                          "trial %d: token %d (%g) left out before %d (%g)", trial, i, li, id, lk);
            }
        }
        free(l);
    }
}

Test(token_logprobs, infinite_and_impossible_logits)
{
    float inf[4] = {1, INFINITY, INFINITY, NAN};
    step_logprobs out;
    step_logprobs_compute(inf, 4, 2, 3, &out);
    cr_expect_float_eq(out.chosen.logprob, -logf(2), 1e-6, "two certain tokens share it");
    cr_expect(out.top[0].id == 1 && out.top[1].id == 2 && out.top[2].id == 0);
    cr_expect_eq(out.top[2].logprob, LOGPROB_FLOOR);
    float none[3] = {-INFINITY, NAN, -INFINITY};
    step_logprobs_compute(none, 3, 1, 0, &out);
    cr_expect_eq(out.chosen.logprob, LOGPROB_FLOOR);
    cr_expect_eq(out.n_top, 0);
    float one[1] = {-3};
    step_logprobs_compute(one, 1, 0, 5, &out);
    cr_expect_eq(out.chosen.logprob, 0.0f, "a single possible token is certain");
    cr_expect_eq(out.n_top, 1);
}
