/* Sampler: greedy is argmax, each filter narrows the candidates as defined, a
 * seed reproduces a run, and draws follow the softmax distribution; DRY
 * against its quadratic definition, top-n-sigma and XTC by what they keep. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
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

/* n draws from logits[0, V) by a fresh sampler of p (V <= 8), each token's
 * count into counts. */
static void count_draws(sampler_params p, const float *logits, int V, int n, int *counts)
{
    sampler s;
    errbuf e;
    cr_assert_eq(sampler_create(&s, &p, V, &e), 0, "%s", e.msg);
    memset(counts, 0, (size_t)V * sizeof *counts);
    for (int i = 0; i < n; i++) {
        float l[8];
        memcpy(l, logits, (size_t)V * sizeof *l);
        counts[sampler_sample(&s, l)]++;
    }
    sampler_destroy(&s);
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
 * the repetition penalty on and off and llama.cpp's DRY, top-n-sigma and
 * XTC each in a third of the trials, typical, the dynamic temperature and
 * Mirostat (1 and 2, learning over the draws) each in a quarter; half the
 * trials with a head so narrow
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
    int draws = 0, mismatches = 0, report_mismatches = 0;
    for (int trial = 0; trial < 720; trial++) {
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
        /* llama.cpp's samplers, a third of the trials each */
        int brk_head[2] = {(int)(lcg(&st) % (uint64_t)V), (int)(lcg(&st) % (uint64_t)V)};
        int brk_at[3] = {0, 0, 1}, brk_tail[1] = {(int)(lcg(&st) % (uint64_t)V)};
        if (lcg(&st) % 3 == 0) {
            p.dry_multiplier = 0.8f;
            p.dry_allowed_length = (int)(lcg(&st) % 3);
            p.dry_penalty_last_n = 12;
            p.dry_breakers = (sampler_breakers){2, brk_head, brk_at, brk_tail};
        }
        if (lcg(&st) % 3 == 0)
            p.top_n_sigma = (float[]){0.5f, 1.0f, 3.0f}[lcg(&st) % 3];
        if (lcg(&st) % 3 == 0) {
            p.xtc_probability = lcg(&st) % 2 ? 1.0f : 0.5f;
            p.xtc_threshold = (float[]){0.1f, 0.01f, 1e-4f, 0.5f}[lcg(&st) % 4];
        }
        if (lcg(&st) % 4 == 0)
            p.typical_p = (float[]){0.2f, 0.9f}[lcg(&st) % 2];
        if (lcg(&st) % 4 == 0) {
            p.dynatemp_range = (float[]){0.5f, 2.0f}[lcg(&st) % 2];
            p.dynatemp_exponent = (float[]){1.0f, 0.5f, 3.0f}[lcg(&st) % 3];
        }
        if (lcg(&st) % 4 == 0) {
            p.mirostat = 1 + (int)(lcg(&st) % 2);
            p.mirostat_tau = (float[]){5.0f, 2.0f, 9.0f}[lcg(&st) % 3];
        }
        p.seed = (uint64_t)trial;
        sampler a, b;
        errbuf e;
        cr_assert_eq(sampler_create(&a, &p, V, &e), 0, "%s", e.msg);
        cr_assert_eq(sampler_create(&b, &p, V, &e), 0, "%s", e.msg);
        if (trial / 4 % 2)
            a.head_span = 0.5f;
        /* what each draw chose from (post_sampling_probs): the same from both */
        sampler_kept kept_a[5], kept_b[5];
        sampler_report rep_a = {kept_a, 5, 0, 0}, rep_b = {kept_b, 5, 0, 0};
        a.report = &rep_a;
        b.report = &rep_b;
        random_logits(&st, trial % 4, l, V);
        for (int d = 0; d < 8; d++) {
            memcpy(la, l, (size_t)V * sizeof *l);
            memcpy(lb, l, (size_t)V * sizeof *l);
            int x = sampler_sample(&a, la), y = sampler_sample_reference(&b, lb);
            draws++;
            if (x != y && mismatches++ < 5)
                cr_log_error("trial %d (V %d, shape %d, T %g, top-k %d, top-p %g, min-p %g, penalty "
                             "%g, DRY %g, top-n-sigma %g, XTC %g/%g, typical %g, dynatemp %g^%g, mirostat %d "
                             "tau %g), draw %d: %d, the reference %d",
                             trial, V, trial % 4, p.temperature, p.top_k, p.top_p, p.min_p, p.repeat_penalty,
                             p.dry_multiplier, p.top_n_sigma, p.xtc_probability, p.xtc_threshold, p.typical_p,
                             p.dynatemp_range, p.dynatemp_exponent, p.mirostat, p.mirostat_tau, d, x, y);
            int same = rep_a.n == rep_b.n && fabsf(rep_a.chosen - rep_b.chosen) <= 1e-6f * (1 + rep_b.chosen);
            for (int i = 0; same && i < rep_a.n; i++)
                same = kept_a[i].id == kept_b[i].id && fabsf(kept_a[i].p - kept_b[i].p) <= 1e-6f * (1 + kept_b[i].p);
            if (x == y && !same && report_mismatches++ < 5)
                cr_log_error("trial %d draw %d: the reports differ (%d and %d kept shown; chosen %.9g %.9g; first %d "
                             "%.9g, %d %.9g; mirostat %d typical %g dynatemp %g xtc %g topk %d)",
                             trial, d, rep_a.n, rep_b.n, rep_a.chosen, rep_b.chosen, kept_a[0].id, kept_a[0].p,
                             kept_b[0].id, kept_b[0].p, p.mirostat, p.typical_p, p.dynatemp_range,
                             p.xtc_probability, p.top_k);
            sampler_accept_output(&a, x);
            sampler_accept_output(&b, y);
        }
        sampler_destroy(&a);
        sampler_destroy(&b);
    }
    cr_expect_eq(mismatches, 0, "%d of %d draws differ from the reference", mismatches, draws);
    cr_expect_eq(report_mismatches, 0, "%d reports differ from the reference's", report_mismatches);
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

/* ---- DRY, top-n-sigma, XTC ------------------------------------------------ */

/* DRY from its definition, quadratic: for each earlier position j of the
 * window w[0, n), the common suffix of w[..j] and the whole window (at most
 * the tokens after the last breaker) is a repeat the token after j would
 * extend. */
static void naive_dry(const int *w, int n, const sampler_params *p, const int *bh, const int *ba,
                      const int *bt, int nb, float *logits, int V)
{
    int allowed = p->dry_allowed_length, limit = n;
    if (n <= allowed)
        return;
    for (int i = 0, found = 0; i < n && !found; i++) { /* i places before the last */
        int longest = -1;
        for (int b = 0; b < nb; b++) {
            int len = ba[b + 1] - ba[b], ok = bh[b] == w[n - 1 - i] && len <= i;
            for (int o = 0; o < len && ok; o++)
                ok = bt[ba[b] + o] == w[n - 1 - i + o + 1];
            if (ok && len > longest)
                longest = len;
        }
        if (longest >= 0) {
            limit = i - longest;
            found = 1;
        }
    }
    if (limit < allowed)
        return;
    int *best = calloc((size_t)V, sizeof *best);
    for (int j = 0; j + 1 < n; j++) {
        int m = 0;
        while (m <= j && w[j - m] == w[n - 1 - m])
            m++;
        if (m > limit)
            m = limit;
        if (m >= allowed && m + 1 > best[w[j + 1]])
            best[w[j + 1]] = m + 1;
    }
    int max_exp = p->dry_base > 1.000001f ? (int)(88.7228391f / logf(p->dry_base)) : 0;
    for (int t = 0; t < V; t++) {
        int single = 0;
        for (int b = 0; b < nb; b++)
            single |= bh[b] == t && ba[b + 1] == ba[b];
        if (!best[t] || single)
            continue;
        int x = best[t] - 1 - allowed;
        if (max_exp > 0 && x > max_exp)
            x = max_exp;
        logits[t] -= (float)((double)p->dry_multiplier * pow((double)p->dry_base, (double)x));
    }
    free(best);
}

/* The penalties a greedy step leaves in the logits, against the naive DRY,
 * over random texts of a few tokens (so repeats abound), windows, allowed
 * lengths, bases and breakers of one to three tokens. */
Test(sampler, dry_penalises_as_defined, .timeout = 60)
{
    enum { V = 16, MAX_N = 80 };
    uint64_t st = 77;
    int penalised = 0, broken = 0;
    for (int trial = 0; trial < 3000; trial++) {
        int alphabet = 2 + (int)(lcg(&st) % 6), n = 1 + (int)(lcg(&st) % MAX_N);
        int bh[4], ba[5] = {0}, bt[12], nb = (int)(lcg(&st) % 4);
        for (int b = 0; b < nb; b++) {
            bh[b] = (int)(lcg(&st) % (uint64_t)alphabet);
            int len = (int)(lcg(&st) % 3);
            for (int o = 0; o < len; o++)
                bt[ba[b] + o] = (int)(lcg(&st) % (uint64_t)alphabet);
            ba[b + 1] = ba[b] + len;
        }
        sampler_params p = sampler_defaults();
        p.temperature = 0;
        p.dry_multiplier = lcg(&st) % 2 ? 0.8f : 2.0f;
        p.dry_base = (float[]){1.0f, 1.75f, 3.0f, 1000.0f}[lcg(&st) % 4];
        p.dry_allowed_length = (int)(lcg(&st) % 5);
        p.dry_penalty_last_n = 1 + (int)(lcg(&st) % (MAX_N + 10));
        p.dry_breakers = (sampler_breakers){nb, bh, ba, bt};
        sampler s;
        errbuf e;
        cr_assert_eq(sampler_create(&s, &p, V, &e), 0, "%s", e.msg);
        int text[3 * MAX_N];
        int total = n + (int)(lcg(&st) % (MAX_N * 2)); /* more than the window, some of them */
        for (int i = 0; i < total; i++) {
            text[i] = (int)(lcg(&st) % (uint64_t)alphabet);
            if (i % 3)
                sampler_accept(&s, text[i]);
            else
                sampler_accept_output(&s, text[i]);
        }
        float got[V], want[V];
        for (int t = 0; t < V; t++)
            got[t] = want[t] = (float)t * 0.01f;
        sampler_sample(&s, got);
        int w = total < p.dry_penalty_last_n ? total : p.dry_penalty_last_n;
        naive_dry(text + total - w, w, &p, bh, ba, bt, nb, want, V);
        for (int t = 0; t < V; t++) {
            cr_assert_eq(got[t], want[t], "trial %d: token %d: %g, by the definition %g", trial, t, got[t],
                         want[t]);
            penalised += got[t] != (float)t * 0.01f;
        }
        broken += nb > 0;
        sampler_destroy(&s);
    }
    cr_expect_gt(penalised, 3000, "only %d penalties", penalised);
    cr_expect_gt(broken, 1000);
}

/* llama.cpp's worked example: after a b c c b c y a b c, emitting c would
 * repeat "a b c" (3), y "b c" (2) and b only "c" (1, allowed). */
Test(sampler, dry_worked_example)
{
    sampler_params p = sampler_defaults();
    p.temperature = 0;
    p.dry_multiplier = 1.0f;
    p.dry_penalty_last_n = 64;
    sampler s;
    errbuf e;
    cr_assert_eq(sampler_create(&s, &p, 26, &e), 0, "%s", e.msg);
    for (const char *c = "abccbcyabc"; *c; c++)
        sampler_accept(&s, *c - 'a');
    float l[26] = {0};
    sampler_sample(&s, l);
    cr_expect_float_eq(l['c' - 'a'], -1.75f, 1e-6f);
    cr_expect_float_eq(l['y' - 'a'], -1.0f, 1e-6f);
    cr_expect_eq(l['b' - 'a'], 0.0f);
    cr_expect_eq(l['a' - 'a'], 0.0f);
    sampler_destroy(&s);
}

Test(sampler, top_n_sigma_keeps_the_tokens_near_the_best)
{
    float base[8] = {0, 1, 2, 3, 4, 5, 6, 7}; /* mean 3.5, standard deviation sqrt(5.25) */
    for (int n = 1; n <= 3; n++) {
        sampler_params p = sampler_defaults();
        p.temperature = 0;
        p.top_n_sigma = (float)n;
        sampler s;
        errbuf e;
        cr_assert_eq(sampler_create(&s, &p, 8, &e), 0, "%s", e.msg);
        float l[8];
        memcpy(l, base, sizeof l);
        cr_expect_eq(sampler_sample(&s, l), 7);
        for (int t = 0; t < 8; t++)
            cr_expect_eq(isinf(l[t]) != 0, base[t] < 7 - n * sqrtf(5.25f), "n %d, token %d", n, t);
        sampler_destroy(&s);
    }
}

/* XTC with probability 1 and threshold 0.1 over probabilities .5 .3 .15 .05:
 * the first two are never drawn, the last two in proportion; with
 * probability 0.5, about half the draws keep the top ones. */
Test(sampler, xtc_leaves_out_the_likeliest)
{
    float logp[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    for (int half = 0; half < 2; half++) {
        sampler_params p = sampler_defaults();
        p.temperature = 1.0f;
        p.xtc_probability = half ? 0.5f : 1.0f;
        p.xtc_threshold = 0.1f;
        int counts[4];
        count_draws(p, logp, 4, 4000, counts);
        if (!half) {
            cr_expect_eq(counts[0] + counts[1], 0, "%d %d", counts[0], counts[1]);
            cr_expect(counts[2] > 2800 && counts[2] < 3200, "%d of 4000 at .15 against .05", counts[2]);
        } else {
            /* half the time all four, at .5 .3 .15 .05; else .75 .25 of the last two */
            cr_expect(counts[0] > 850 && counts[0] < 1150, "%d of 4000 for the first", counts[0]);
            cr_expect(counts[2] > 1650 && counts[2] < 2050, "%d of 4000 for the third", counts[2]);
        }
    }
}

/* 500 draws from logits[0, V) (V <= 8) by the fast draw and 500 by the
 * reference, each by a fresh sampler of p: every one is token `want`. */
static void expect_only(sampler_params p, const float *logits, int V, int want, const char *what)
{
    for (int ref = 0; ref < 2; ref++) {
        sampler s;
        errbuf e;
        cr_assert_eq(sampler_create(&s, &p, V, &e), 0, "%s", e.msg);
        int other = -1, n_other = 0;
        for (int i = 0; i < 500; i++) {
            float l[8];
            memcpy(l, logits, (size_t)V * sizeof *l);
            int t = ref ? sampler_sample_reference(&s, l) : sampler_sample(&s, l);
            if (t != want) {
                other = t;
                n_other++;
            }
        }
        sampler_destroy(&s);
        cr_expect_eq(n_other, 0, "%s (%s): %d of 500 draws not %d (%d among them)", what,
                     ref ? "reference" : "fast draw", n_other, want, other);
    }
}

/* What XTC leaves can be impossible, or round to nothing: at temperature
 * 0.01 the chances of all but the likeliest (which XTC cut) round to 0 and
 * the best of the rest is drawn, not the last candidate; with a threshold of
 * 0 the masked tokens are not counted as above it (the last possible one is
 * drawn, not a masked one); and under typical, XTC's softmax is over the
 * kept candidates, even 110 nats below the best of all. */
Test(sampler, xtc_never_leaves_only_what_cannot_be_drawn)
{
    sampler_params p = sampler_defaults();
    p.xtc_probability = 1.0f;
    p.xtc_threshold = 0.1f;
    p.temperature = 0.01f;
    const float cold[5] = {5, 3.5f, 0, -10, -12};
    expect_only(p, cold, 5, 1, "temperature 0.01");
    p.temperature = 1.0f;
    p.xtc_threshold = 0;
    const float masked[5] = {5, 3.5f, -INFINITY, 0, -INFINITY};
    expect_only(p, masked, 5, 3, "threshold 0 over masked tokens");
    p.xtc_threshold = 0.1f;
    p.typical_p = 0.5f;
    p.temperature = 110.0f;
    const float far[5] = {110, 0, 0, 0, 0};
    expect_only(p, far, 5, 4, "typical leaving out a best 110 nats above");
}

/* A negative dynamic-temperature exponent over one possible token (a mask
 * leaving one) made the temperature infinite and every chance NaN: the last
 * token of the vocabulary, a masked one, was drawn. */
Test(sampler, dynamic_temperature_over_one_possible_token)
{
    sampler_params p = sampler_defaults();
    p.temperature = 1.0f;
    p.dynatemp_range = 0.5f;
    p.dynatemp_exponent = -1.0f;
    float l[8];
    for (int i = 0; i < 8; i++)
        l[i] = i == 3 ? 0.5f : -INFINITY;
    expect_only(p, l, 8, 3, "one possible token");
}

/* Typical keeps the tokens whose surprise is nearest the entropy: over .4
 * and four of .15 the four come first and hold more than 0.5 by themselves,
 * so the likeliest token is never drawn. */
Test(sampler, typical_can_leave_out_the_likeliest)
{
    float l[5] = {logf(0.4f), logf(0.15f), logf(0.15f), logf(0.15f), logf(0.15f)};
    sampler_params p = sampler_defaults();
    p.temperature = 1.0f;
    p.typical_p = 0.5f;
    int counts[5];
    count_draws(p, l, 5, 2000, counts);
    cr_expect_eq(counts[0], 0, "the likeliest was drawn %d times", counts[0]);
    for (int t = 1; t < 5; t++)
        cr_expect_gt(counts[t], 350, "token %d: %d of 2000", t, counts[t]);
}

/* Typical over a wide set: logits spread like a sum of uniforms over 50,000
 * tokens keep thousands, so the draw takes typical's order in several runs
 * (256, 512, ...): each draw and its report are the reference's, with top-k
 * and top-p after it too. */
Test(sampler, typical_keeps_thousands_as_the_reference_does)
{
    enum { V = 50000 };
    static float l[V], la[V], lb[V];
    uint64_t st = 77;
    for (int i = 0; i < V; i++)
        l[i] = (float)(uniform01(&st) + uniform01(&st) + uniform01(&st)) * 2.0f;
    for (int setting = 0; setting < 4; setting++) {
        sampler_params p = sampler_defaults();
        p.temperature = 1.0f;
        p.typical_p = setting % 2 ? 0.99f : 0.5f;
        p.top_k = setting == 2 ? 20000 : 0;
        p.top_p = setting == 3 ? 0.8f : 1.0f;
        p.seed = (uint64_t)setting;
        sampler a, b;
        errbuf e;
        cr_assert_eq(sampler_create(&a, &p, V, &e), 0, "%s", e.msg);
        cr_assert_eq(sampler_create(&b, &p, V, &e), 0, "%s", e.msg);
        sampler_kept kept_a[4], kept_b[4];
        sampler_report rep_a = {kept_a, 4, 0, 0}, rep_b = {kept_b, 4, 0, 0};
        a.report = &rep_a;
        b.report = &rep_b;
        for (int d = 0; d < 6; d++) {
            memcpy(la, l, sizeof l);
            memcpy(lb, l, sizeof l);
            int x = sampler_sample(&a, la), y = sampler_sample_reference(&b, lb);
            cr_expect_eq(x, y, "setting %d draw %d: %d, the reference %d", setting, d, x, y);
            cr_expect(rep_a.n == rep_b.n && kept_a[0].id == kept_b[0].id && kept_a[0].p == kept_b[0].p &&
                          rep_a.chosen == rep_b.chosen,
                      "setting %d draw %d: the reports differ", setting, d);
        }
        sampler_destroy(&a);
        sampler_destroy(&b);
    }
}

/* The dynamic temperature over .25 and .75 (normalized entropy 0.811): at
 * temperature 1 +- 1 it is 1.623, so the second token's chance falls from
 * .75 to 1 / (1 + 3^-(1 / 1.623)) = .663. */
Test(sampler, dynamic_temperature_follows_the_entropy)
{
    sampler_params p = sampler_defaults();
    p.temperature = 1.0f;
    p.dynatemp_range = 1.0f;
    float l[2] = {0.0f, logf(3.0f)};
    int counts[2];
    count_draws(p, l, 2, 8000, counts);
    cr_expect(counts[1] > 8000 * 0.663 - 170 && counts[1] < 8000 * 0.663 + 170,
              "%d of 8000 (.663 expected, .75 at a fixed temperature)", counts[1]);
}

/* Mirostat 2 draws only tokens whose surprise is within mu (2 tau to
 * start), then learns: mu -= eta (surprise of the one drawn, among those
 * kept, - tau). Mirostat 1 over Zipf's law (p ~ 1 / i^1.2, whose exponent it
 * estimates exactly) keeps the top k the law gives for the target. */
Test(sampler, mirostat_keeps_the_surprise_bound)
{
    enum { V = 1000 };
    float base[V];
    double z = 0;
    for (int i = 0; i < V; i++)
        z += pow(i + 1, -1.2);
    for (int i = 0; i < V; i++)
        base[i] = (float)(-1.2 * log(i + 1.0));
    for (int version = 1; version <= 2; version++) {
        sampler_params p = sampler_defaults();
        p.temperature = 1.0f;
        p.mirostat = version;
        p.mirostat_tau = 3.0f;
        p.mirostat_eta = 0.1f;
        sampler s;
        errbuf e;
        cr_assert_eq(sampler_create(&s, &p, V, &e), 0, "%s", e.msg);
        for (int d = 0; d < 200; d++) {
            float mu = s.mu, l[V];
            memcpy(l, base, sizeof l);
            int t = sampler_sample(&s, l);
            /* the tokens it may keep, as the definitions give them */
            int kept = 0;
            double kept_p = 0;
            if (version == 2) {
                while (kept < V && -log2(pow(kept + 1, -1.2) / z) <= mu + 1e-4)
                    kept_p += pow(++kept, -1.2) / z;
            } else {
                double eps = 0.2, k = pow(eps * pow(2, mu) / (1 - pow(V, -eps)), 1 / 1.2);
                kept = k < 1 ? 1 : k > V ? V : (int)k;
                for (int i = 0; i < kept; i++)
                    kept_p += pow(i + 1, -1.2) / z;
            }
            cr_assert_leq(t, kept, "version %d, draw %d: token %d past the %d kept (mu %g)", version, d, t, kept,
                          mu);
            if (version == 2 && t < kept) {
                double surprise = -log2(pow(t + 1, -1.2) / z / kept_p);
                cr_expect_float_eq(s.mu, mu - 0.1 * (surprise - 3.0), 1e-3, "version 2, draw %d: mu %g", d, s.mu);
            }
        }
        sampler_destroy(&s);
    }
}

/* What a draw chose from: under top-k 3 the three best, renormalized (their
 * probabilities sum to 1 and keep their ratios), the drawn one's among them;
 * greedy, the token alone with probability 1. */
Test(sampler, report_is_what_the_draw_chose_from)
{
    float base[6] = {1.0f, 3.0f, 2.5f, -1.0f, 0.0f, 2.9f};
    sampler_params p = sampler_defaults();
    p.temperature = 1.0f;
    p.top_k = 3;
    sampler s;
    errbuf e;
    cr_assert_eq(sampler_create(&s, &p, 6, &e), 0, "%s", e.msg);
    sampler_kept kept[4];
    sampler_report r = {kept, 4, 0, 0};
    s.report = &r;
    for (int d = 0; d < 50; d++) {
        float l[6];
        memcpy(l, base, sizeof l);
        int t = sampler_sample(&s, l);
        cr_assert_eq(r.n, 3);
        cr_expect(kept[0].id == 1 && kept[1].id == 5 && kept[2].id == 2, "%d %d %d", kept[0].id, kept[1].id,
                  kept[2].id);
        cr_expect_float_eq(kept[0].p + kept[1].p + kept[2].p, 1.0f, 1e-6f);
        cr_expect_float_eq(kept[0].p / kept[2].p, expf(0.5f), 1e-4f);
        int at = t == kept[0].id ? 0 : t == kept[1].id ? 1 : 2;
        cr_expect_eq(kept[at].id, t);
        cr_expect_float_eq(r.chosen, kept[at].p, 1e-7f);
    }
    sampler_destroy(&s);
    p.temperature = 0;
    cr_assert_eq(sampler_create(&s, &p, 6, &e), 0, "%s", e.msg);
    s.report = &r;
    float l[6];
    memcpy(l, base, sizeof l);
    cr_expect_eq(sampler_sample(&s, l), 1);
    cr_expect(r.n == 1 && kept[0].id == 1 && kept[0].p == 1.0f && r.chosen == 1.0f);
    sampler_destroy(&s);
    /* tokens top-n-sigma or a bias rules out are not among those kept */
    for (int way = 0; way < 2; way++) {
        p = sampler_defaults();
        p.temperature = 1.0f;
        if (way == 0)
            p.top_n_sigma = 1e-4f;
        cr_assert_eq(sampler_create(&s, &p, 6, &e), 0, "%s", e.msg);
        s.report = &r;
        memcpy(l, base, sizeof l);
        for (int i = 0; i < 6 && way == 1; i++)
            if (i != 1 && i != 5)
                l[i] = -INFINITY;
        int t = (way ? sampler_sample_reference : sampler_sample)(&s, l);
        cr_expect_eq(r.n, way ? 2 : 1, "way %d: %d kept", way, r.n);
        for (int i = 0; i < r.n; i++)
            cr_expect_gt(kept[i].p, 0.0f, "way %d: %d kept with p 0", way, kept[i].id);
        cr_expect(t == 1 || (way && t == 5));
        sampler_destroy(&s);
    }
}
