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

/* OpenAI's penalties: each token the answer holds loses presence +
 * frequency x its count; the prompt's tokens count for neither. */
Test(sampler, presence_and_frequency_penalties_count_the_answer)
{
    sampler_params p = sampler_defaults();
    p.temperature = 0;
    p.presence_penalty = 0.2f;
    sampler s;
    errbuf e;
    float l[6];
    cr_assert_eq(sampler_create(&s, &p, 6, &e), 0, "%s", e.msg);
    for (int i = 0; i < 5; i++)
        sampler_accept(&s, 1);
    memcpy(l, logits_src, sizeof l);
    cr_expect_eq(sampler_sample(&s, l), 1, "tokens of the prompt are not penalised");
    sampler_accept_output(&s, 1);
    memcpy(l, logits_src, sizeof l);
    cr_expect_eq(sampler_sample(&s, l), 5, "3.0 - 0.2 drops below 2.9");
    sampler_forget(&s);
    memcpy(l, logits_src, sizeof l);
    cr_expect_eq(sampler_sample(&s, l), 1, "forgotten");
    sampler_destroy(&s);
    p.presence_penalty = 0;
    p.frequency_penalty = 0.04f;
    cr_assert_eq(sampler_create(&s, &p, 6, &e), 0, "%s", e.msg);
    int want[] = {1, 1, 5};    /* 3 - 0.04 k against 2.9 */
    for (int k = 1; k <= 3; k++) {
        sampler_accept_output(&s, 1);
        memcpy(l, logits_src, sizeof l);
        cr_expect_eq(sampler_sample(&s, l), want[k - 1], "after %d times", k);
    }
    sampler_destroy(&s);
}

Test(sampler, logit_bias_is_added_first)
{
    sampler_bias b[2] = {{3, 5.0f}, {1, -100.0f}};
    sampler_params p = sampler_defaults();
    p.temperature = 0;
    p.bias = b;
    p.n_bias = 1;
    int c[6];
    draw(p, 3, c);
    cr_expect_eq(c[3], 3, "-1 + 5 is the largest");
    p.bias = b + 1;
    p.temperature = 1;
    draw(p, 500, c);
    cr_expect_eq(c[1], 0, "a bias of -100 leaves token 1 a chance of e^-100");
    sampler_bias out[1] = {{6, 1.0f}};
    p.bias = out;
    sampler s;
    errbuf e;
    cr_expect_neq(sampler_create(&s, &p, 6, &e), 0);
    cr_expect(strstr(e.msg, "token 6") != NULL, "%s", e.msg);
    sampler_bias nan_bias[1] = {{2, NAN}};
    p.bias = nan_bias;
    cr_expect_neq(sampler_create(&s, &p, 6, &e), 0);
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

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static float uniform01(uint64_t *s)
{
    return (float)lcg(s) / 2147483648.0f;
}

static float gaussian(uint64_t *s)
{
    float u = (uniform01(s) + 1e-7f), v = uniform01(s);
    return sqrtf(-2 * logf(u)) * cosf(6.2831853f * v);
}

/* Logits of one of four shapes: broad, peaked as a language model's, tied
 * (integers), or with impossible (-inf) tokens. */
static void random_logits(uint64_t *s, int shape, float *l, int V)
{
    float scale = 0.1f + 30 * uniform01(s);
    for (int i = 0; i < V; i++) {
        if (shape == 0)
            l[i] = scale * gaussian(s);
        else if (shape == 1)
            l[i] = 2.5f * gaussian(s);
        else if (shape == 2)
            l[i] = (float)((int)(lcg(s) % 7) - 3);
        else
            l[i] = uniform01(s) < 0.3f ? -INFINITY : scale * gaussian(s);
    }
    if (shape == 1)
        for (int k = 0; k < 10 && V > 0; k++)
            l[lcg(s) % (uint64_t)V] = 10 + 15 * uniform01(s);
}

/* sampler_sample against its definition: the same token from the same state,
 * over vocabularies of 1 to 40,000, the four shapes and every filter, with
 * the repetition penalty on and off; half the trials with a head so narrow
 * that the filters and the draw often go past it. */
Test(sampler, draws_what_the_reference_draws, .timeout = 120)
{
    static const int vocabs[] = {1, 2, 7, 300, 5000, 40000};
    static const float temps[] = {0.05f, 0.6f, 1.0f, 3.0f};
    static const int top_ks[] = {0, 1, 5, 50, 100000};
    static const float top_ps[] = {1.0f, 0.9f, 0.5f, 0.99999f};
    static const float min_ps[] = {0.0f, 0.05f, 1e-9f};
    uint64_t st = 2024;
    float *la = malloc(40000 * sizeof *la), *lb = malloc(40000 * sizeof *lb),
          *l = malloc(40000 * sizeof *l);
    int draws = 0, mismatches = 0;
    for (int trial = 0; trial < 360; trial++) {
        int V = vocabs[lcg(&st) % 6];
        sampler_params p = sampler_defaults();
        p.temperature = temps[lcg(&st) % 4];
        p.top_k = top_ks[lcg(&st) % 5];
        p.top_p = top_ps[lcg(&st) % 4];
        p.min_p = min_ps[lcg(&st) % 3];
        p.repeat_penalty = lcg(&st) % 2 ? 1.3f : 1.0f;
        p.repeat_last_n = 16;
        p.presence_penalty = lcg(&st) % 2 ? 0.4f : 0.0f;
        p.frequency_penalty = lcg(&st) % 2 ? -0.3f : 0.0f;
        sampler_bias bias[3] = {{(int)(lcg(&st) % (uint64_t)V), 3.0f},
                                {(int)(lcg(&st) % (uint64_t)V), -2.0f},
                                {(int)(lcg(&st) % (uint64_t)V), 0.5f}};
        p.bias = bias;
        p.n_bias = (int)(lcg(&st) % 4);
        p.seed = (uint64_t)trial;
        sampler a, b;
        errbuf e;
        cr_assert_eq(sampler_create(&a, &p, V, &e), 0, "%s", e.msg);
        cr_assert_eq(sampler_create(&b, &p, V, &e), 0, "%s", e.msg);
        if (trial / 4 % 2)
            a.head_span = 0.5f;
        random_logits(&st, trial % 4, l, V);
        for (int d = 0; d < 8; d++) {
            memcpy(la, l, (size_t)V * sizeof *l);
            memcpy(lb, l, (size_t)V * sizeof *l);
            int x = sampler_sample(&a, la), y = sampler_sample_reference(&b, lb);
            draws++;
            if (x != y && mismatches++ < 5)
                cr_log_error("trial %d (V %d, shape %d, T %g, top-k %d, top-p %g, min-p %g, penalty "
                             "%g), draw %d: %d, the reference %d", trial, V, trial % 4, p.temperature,
                             p.top_k, p.top_p, p.min_p, p.repeat_penalty, d, x, y);
            sampler_accept_output(&a, x);
            sampler_accept_output(&b, y);
        }
        sampler_destroy(&a);
        sampler_destroy(&b);
    }
    cr_expect_eq(mismatches, 0, "%d of %d draws differ from the reference", mismatches, draws);
    free(l);
    free(la);
    free(lb);
}

/* A NaN logit is an impossible token, a +inf one a certain token, and a step
 * where every token is -inf takes the first rather than a random one. */
Test(sampler, non_finite_logits)
{
    sampler_params p = sampler_defaults();
    p.temperature = 1;
    sampler s;
    errbuf e;
    cr_assert_eq(sampler_create(&s, &p, 4, &e), 0, "%s", e.msg);
    int counts[4] = {0};
    for (int i = 0; i < 400; i++) {
        float inf[4] = {1, INFINITY, 0, -1}, nan[4] = {1, 5, NAN, -1};
        cr_assert_eq(sampler_sample(&s, inf), 1, "a +inf logit must be drawn");
        counts[sampler_sample(&s, nan)]++;
    }
    cr_expect_eq(counts[2], 0, "the NaN token was drawn %d times", counts[2]);
    cr_expect_gt(counts[1], 300, "logit 5 against 1 and -1: %d of 400", counts[1]);
    float none[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    cr_expect_eq(sampler_sample(&s, none), 0);
    sampler_destroy(&s);
    /* greedy: the same rules */
    p.temperature = 0;
    cr_assert_eq(sampler_create(&s, &p, 4, &e), 0, "%s", e.msg);
    float first_nan[4] = {NAN, -3, 2, NAN}, inf[4] = {1, INFINITY, NAN, 2};
    cr_expect_eq(sampler_sample(&s, first_nan), 2, "greedy took a NaN");
    cr_expect_eq(sampler_sample(&s, inf), 1);
    cr_expect_eq(sampler_sample(&s, none), 0);
    sampler_destroy(&s);
}
