/* bench_sampler: time to pick one token from K2's 163,840 logits, for the
 * default sampling (temperature 0.6, no other filter), top-p 0.9, top-k 40, and
 * llama.cpp's samplers: DRY over a window of 32,768 tokens of earlier text
 * (drawn from 4,000 words, Zipf-like, so repeats abound), top-n-sigma 1, XTC
 * (probability 1, threshold 0.1), typical 0.9, a dynamic temperature (range
 * 0.5) and Mirostat 2
 * and 1 (target 5 bits).
 * The logits have a language model's shape: most tokens spread around zero
 * (normal, sigma 2.5), a few (20) far above them (15 to 25). The yardstick,
 * measured in the same run on the same logits and seed, is the reference draw
 * that sorts the whole vocabulary: ratio = reference ms / sampler ms; both draw
 * the same tokens (checked). One JSON line per setting; then the cost of a
 * token's log-probabilities with 20 alternatives (the server's copy of the
 * logits and step_logprobs_compute) against the default draw in the same run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/progress.h"
#include "core/engine/sampler.h"
#include "core/engine/token_logprobs.h"

enum { VOCAB = 163840, DRAWS = 40 };

static double gaussian(unsigned *s)
{
    double u = (rand_r(s) + 1.0) / (RAND_MAX + 2.0), v = (rand_r(s) + 1.0) / (RAND_MAX + 2.0);
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

/* ms per draw, with the sum of the ids drawn (to compare the two draws) */
static double time_draws(const sampler_params *p, const float *logits, const int *text, int n_text,
                         int reference, long *ids)
{
    sampler s;
    errbuf e;
    if (sampler_create(&s, p, VOCAB, &e)) {
        fprintf(stderr, "bench_sampler: %s\n", e.msg);
        exit(1);
    }
    for (int i = 0; i < n_text; i++)
        sampler_accept(&s, text[i]);
    float *l = malloc(VOCAB * sizeof *l);
    *ids = 0;
    double t = 0;
    for (int d = 0; d < DRAWS; d++) {
        memcpy(l, logits, VOCAB * sizeof *l);
        double t0 = now_seconds();
        *ids += reference ? sampler_sample_reference(&s, l) : sampler_sample(&s, l);
        t += now_seconds() - t0;
    }
    free(l);
    sampler_destroy(&s);
    return t / DRAWS * 1e3;
}

int main(void)
{
    unsigned seed = 1;
    float *logits = malloc(VOCAB * sizeof *logits);
    for (int i = 0; i < VOCAB; i++)
        logits[i] = (float)(2.5 * gaussian(&seed));
    for (int i = 0; i < 20; i++)
        logits[rand_r(&seed) % VOCAB] = 15.0f + 0.5f * (float)i;
    enum { TEXT = 32768 };
    int *text = malloc(TEXT * sizeof *text);
    for (int i = 0; i < TEXT; i++) /* (word w about as often as 1 / w) */
        text[i] = (int)(exp((double)rand_r(&seed) / RAND_MAX * log(4000.0))) - 1;
    const char *names[] = {"default", "top_p_0.9", "top_k_40", "dry_32k",   "top_n_sigma_1",
                           "xtc",     "typical_0.9", "dynatemp", "mirostat_2", "mirostat_1"};
    double default_ms = 0;
    for (int k = 0; k < 10; k++) {
        sampler_params p = sampler_defaults();
        p.seed = 7;
        if (k == 1)
            p.top_p = 0.9f;
        if (k == 2)
            p.top_k = 40;
        if (k == 3) {
            p.dry_multiplier = 0.8f;
            p.dry_penalty_last_n = TEXT;
        }
        if (k == 4)
            p.top_n_sigma = 1.0f;
        if (k == 5)
            p.xtc_probability = 1.0f;
        if (k == 6)
            p.typical_p = 0.9f;
        if (k == 7)
            p.dynatemp_range = 0.5f;
        if (k >= 8)
            p.mirostat = k == 8 ? 2 : 1;
        long fast_ids, ref_ids;
        int n_text = k == 3 ? TEXT : 0;
        double ref = time_draws(&p, logits, text, n_text, 1, &ref_ids),
               fast = time_draws(&p, logits, text, n_text, 0, &fast_ids);
        printf("{\"bench\": \"sampler\", \"setting\": \"%s\", \"vocab\": %d, \"ms_per_token\": %.3f, "
               "\"reference_ms_per_token\": %.3f, \"ratio\": %.1f, \"same_tokens\": %s}\n",
               names[k], VOCAB, fast, ref, ref / fast, fast_ids == ref_ids ? "true" : "false");
        if (k == 0)
            default_ms = fast;
    }
    float *copy = malloc(VOCAB * sizeof *copy);
    step_logprobs st;
    double t0 = now_seconds();
    for (int d = 0; d < DRAWS; d++) {
        memcpy(copy, logits, VOCAB * sizeof *copy);
        step_logprobs_compute(copy, VOCAB, d, LOGPROBS_MAX_TOP, &st);
    }
    double lp_ms = (now_seconds() - t0) / DRAWS * 1e3;
    printf("{\"bench\": \"logprobs\", \"top\": %d, \"vocab\": %d, \"ms_per_token\": %.3f, "
           "\"default_draw_ms\": %.3f, \"ratio_to_draw\": %.2f, \"best_logprob\": %.4f}\n",
           LOGPROBS_MAX_TOP, VOCAB, lp_ms, default_ms, lp_ms / default_ms, st.top[0].logprob);
    free(copy);
    free(text);
    free(logits);
    return 0;
}
