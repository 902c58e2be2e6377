/* token_logprobs: see token_logprobs.h. */
#include "token_logprobs.h"

#include <math.h>

/* the log-softmax's normaliser */
typedef struct norm {
    float max;                  /* the largest logit; -inf when none is possible */
    int n_inf;                  /* logits at +inf */
    double log_z;               /* log of the sum of exp(logit - max) */
} norm;

static float possible(float l)
{
    return l == l ? l : -INFINITY;
}

static norm normaliser(const float *logits, int V)
{
    norm n = {-INFINITY, 0, 0};
    for (int i = 0; i < V; i++) {
        float l = possible(logits[i]);
        if (l > n.max)
            n.max = l;
        n.n_inf += l == INFINITY;
    }
    if (isfinite(n.max)) {
        double z = 0;
        for (int i = 0; i < V; i++)
            z += exp((double)possible(logits[i]) - n.max);
        n.log_z = log(z);
    }
    return n;
}

static float logprob_of(const norm *n, float logit)
{
    float l = possible(logit);
    double v;
    if (n->max == INFINITY)
        v = l == INFINITY ? -log((double)n->n_inf) : -INFINITY;
    else if (l == -INFINITY)
        v = -INFINITY;
    else
        v = (double)l - n->max - n->log_z;
    return v < LOGPROB_FLOOR ? LOGPROB_FLOOR : (float)v;
}

/* logit a before logit b, ties by the lower id */
static int better(float la, int a, float lb, int b)
{
    return la > lb || (la == lb && a < b);
}

void step_logprobs_compute(const float *logits, int V, int chosen, int n_top, step_logprobs *out)
{
    norm n = normaliser(logits, V);
    out->chosen = (token_logprob){chosen, logprob_of(&n, logits[chosen])};
    if (n_top > LOGPROBS_MAX_TOP)
        n_top = LOGPROBS_MAX_TOP;
    if (n_top > V)
        n_top = V;
    /* the best n_top so far, sorted, by insertion: most tokens fail the
     * comparison with the worst kept */
    int ids[LOGPROBS_MAX_TOP], k = 0;
    for (int i = 0; i < V && n_top > 0; i++) {
        float l = possible(logits[i]);
        if (k == n_top && !better(l, i, possible(logits[ids[k - 1]]), ids[k - 1]))
            continue;
        int at = k < n_top ? k++ : k - 1;
        while (at > 0 && better(l, i, possible(logits[ids[at - 1]]), ids[at - 1])) {
            ids[at] = ids[at - 1];
            at--;
        }
        ids[at] = i;
    }
    out->n_top = k;
    for (int i = 0; i < k; i++)
        out->top[i] = (token_logprob){ids[i], logprob_of(&n, logits[ids[i]])};
}
