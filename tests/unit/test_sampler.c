/* Sampler: greedy is argmax, each filter narrows the candidates as defined, a
 * seed reproduces a run, and draws follow the softmax distribution. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "core/engine/sampler.h"

static float logits_src[6] = {1.0f, 3.0f, 2.5f, -1.0f, 0.0f, 2.9f};

static int draw(sampler_params p, int n, int *counts)
{
    sampler s;
    errbuf e;
    cr_assert_eq(sampler_create(&s, &p, 6, &e), 0, "%s", e.msg);
    int last = -1;
    memset(counts, 0, 6 * sizeof *counts);
    for (int i = 0; i < n; i++) {
        float l[6];
        memcpy(l, logits_src, sizeof l);
        last = sampler_sample(&s, l);
        counts[last]++;
    }
    sampler_destroy(&s);
    return last;
}

Test(sampler, greedy_and_top_k_1)
{
    int c[6];
    sampler_params p = sampler_defaults();
    p.temperature = 0;
    draw(p, 10, c);
    cr_expect_eq(c[1], 10);
    p = sampler_defaults();
    p.temperature = 5;
    p.top_k = 1;
    draw(p, 50, c);
    cr_expect_eq(c[1], 50);
}

Test(sampler, top_p_and_min_p_narrow)
{
    int c[6];
    sampler_params p = sampler_defaults();
    p.temperature = 1;
    p.top_p = 0.5f;        /* token 1 alone has ~0.37, with 5 (~0.34) the mass passes 0.5 */
    draw(p, 2000, c);
    cr_expect_eq(c[0] + c[2] + c[3] + c[4], 0, "only tokens 1 and 5 may be drawn");
    cr_expect(c[1] > 0 && c[5] > 0);
    p = sampler_defaults();
    p.temperature = 1;
    p.min_p = 0.7f;        /* keeps tokens within 0.7x of the best: 1 (1.0), 5 (0.90), 2 (0.61: out) */
    draw(p, 2000, c);
    cr_expect_eq(c[0] + c[2] + c[3] + c[4], 0);
}

Test(sampler, seed_reproduces)
{
    sampler_params p = sampler_defaults();
    p.temperature = 1.5f;
    p.seed = 42;
    sampler a, b;
    errbuf e;
    cr_assert_eq(sampler_create(&a, &p, 6, &e), 0);
    cr_assert_eq(sampler_create(&b, &p, 6, &e), 0);
    int same = 1, distinct = 0, first = -1;
    for (int i = 0; i < 200; i++) {
        float l1[6], l2[6];
        memcpy(l1, logits_src, sizeof l1);
        memcpy(l2, logits_src, sizeof l2);
        int x = sampler_sample(&a, l1), y = sampler_sample(&b, l2);
        same &= x == y;
        if (first < 0)
            first = x;
        distinct |= x != first;
    }
    cr_expect(same);
    cr_expect(distinct, "temperature 1.5 should not always pick one token");
    sampler_destroy(&a);
    sampler_destroy(&b);
}

Test(sampler, frequencies_follow_softmax)
{
    int c[6], n = 40000;
    sampler_params p = sampler_defaults();
    p.temperature = 1;
    p.seed = 7;
    draw(p, n, c);
    double z = 0;
    for (int i = 0; i < 6; i++)
        z += exp(logits_src[i]);
    for (int i = 0; i < 6; i++) {
        double want = exp(logits_src[i]) / z, got = (double)c[i] / n;
        /* 5 standard deviations of a binomial proportion */
        cr_expect_leq(fabs(got - want), 5 * sqrt(want * (1 - want) / n) + 1e-9,
                      "token %d: %.4f vs %.4f", i, got, want);
    }
}

Test(sampler, repetition_penalty_demotes_recent)
{
    sampler_params p = sampler_defaults();
    p.temperature = 0;
    p.repeat_penalty = 2.0f;
    sampler s;
    errbuf e;
    cr_assert_eq(sampler_create(&s, &p, 6, &e), 0);
    sampler_accept(&s, 1);
    float l[6];
    memcpy(l, logits_src, sizeof l);
    cr_expect_eq(sampler_sample(&s, l), 5, "3.0 / 2 = 1.5 drops below 2.9");
    sampler_destroy(&s);
}

Test(sampler, bad_parameters_rejected)
{
    errbuf e;
    sampler_params p = sampler_defaults();
    p.top_p = 0;
    cr_expect_neq(sampler_check(&p, &e), 0);
    cr_expect(strstr(e.msg, "--top-p") != NULL);
    p = sampler_defaults();
    p.temperature = -1;
    cr_expect_neq(sampler_check(&p, &e), 0);
    p = sampler_defaults();
    p.min_p = 1.5f;
    cr_expect_neq(sampler_check(&p, &e), 0);
}
