/* sampler: see sampler.h. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

sampler_params sampler_defaults(void)
{
    return (sampler_params){.temperature = 0.6f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f,
                            .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 0};
}

int sampler_check(const sampler_params *p, errbuf *e)
{
    if (!(p->temperature >= 0) || !isfinite(p->temperature))
        return err_set(e, "--temp must be >= 0 (got %g)", p->temperature);
    if (p->top_k < 0)
        return err_set(e, "--top-k must be >= 0 (got %d)", p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return err_set(e, "--top-p must be in (0, 1] (got %g)", p->top_p);
    if (!(p->min_p >= 0 && p->min_p < 1))
        return err_set(e, "--min-p must be in [0, 1) (got %g)", p->min_p);
    if (!(p->repeat_penalty > 0) || !isfinite(p->repeat_penalty))
        return err_set(e, "--repeat-penalty must be > 0 (got %g)", p->repeat_penalty);
    if (p->repeat_last_n < 0)
        return err_set(e, "--repeat-last-n must be >= 0 (got %d)", p->repeat_last_n);
    return 0;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256** */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static double rng_uniform(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

int sampler_create(sampler *s, const sampler_params *p, int vocab, errbuf *e)
{
    memset(s, 0, sizeof *s);
    if (sampler_check(p, e))
        return -1;
    s->p = *p;
    s->vocab = vocab;
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    s->cand = malloc((size_t)vocab * sizeof *s->cand);
    s->prob = malloc((size_t)vocab * sizeof *s->prob);
    s->history = malloc(((size_t)p->repeat_last_n + 1) * sizeof *s->history);
    if (!s->cand || !s->prob || !s->history) {
        sampler_destroy(s);
        return err_set(e, "out of memory for the sampler");
    }
    return 0;
}

void sampler_destroy(sampler *s)
{
    free(s->cand);
    free(s->prob);
    free(s->history);
    memset(s, 0, sizeof *s);
}

void sampler_accept(sampler *s, int token)
{
    int n = s->p.repeat_last_n;
    if (n <= 0)
        return;
    if (s->n_history < n) {
        s->history[s->n_history++] = token;
    } else {
        memmove(s->history, s->history + 1, (size_t)(n - 1) * sizeof *s->history);
        s->history[n - 1] = token;
    }
}

int argmax_f32(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

static int by_logit_desc(const void *a, const void *b)
{
    const sampler_cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit < y->logit ? 1 : -1;
    return x->id - y->id;
}

int sampler_sample(sampler *s, float *logits)
{
    const sampler_params *p = &s->p;
    int V = s->vocab;
    if (p->repeat_penalty != 1.0f)
        for (int i = 0; i < s->n_history; i++) {
            int t = s->history[i];
            if (t < 0 || t >= V)
                continue;
            /* each distinct token once: skip if it appeared earlier in the window */
            int seen = 0;
            for (int j = 0; j < i && !seen; j++)
                seen = s->history[j] == t;
            if (!seen)
                logits[t] = logits[t] > 0 ? logits[t] / p->repeat_penalty
                                          : logits[t] * p->repeat_penalty;
        }
    if (p->temperature == 0.0f)
        return argmax_f32(logits, V);
    int n = V;
    for (int i = 0; i < V; i++)
        s->cand[i] = (sampler_cand){logits[i], i};
    qsort(s->cand, (size_t)V, sizeof *s->cand, by_logit_desc);
    if (p->top_k > 0 && p->top_k < n)
        n = p->top_k;
    float mx = s->cand[0].logit;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        s->prob[i] = expf((s->cand[i].logit - mx) / p->temperature);
        sum += s->prob[i];
    }
    for (int i = 0; i < n; i++)
        s->prob[i] = (float)(s->prob[i] / sum);
    if (p->top_p < 1.0f) {
        double acc = 0;
        for (int i = 0; i < n; i++) {
            acc += s->prob[i];
            if (acc >= p->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0) {
        float cut = p->min_p * s->prob[0];
        int m = 1;
        while (m < n && s->prob[m] >= cut)
            m++;
        n = m;
    }
    sum = 0;
    for (int i = 0; i < n; i++)
        sum += s->prob[i];
    double r = rng_uniform(s->rng) * sum, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += s->prob[i];
        if (r < acc)
            return s->cand[i].id;
    }
    return s->cand[n - 1].id;
}
