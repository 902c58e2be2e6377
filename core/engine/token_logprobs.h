/* token_logprobs: the log-probabilities a step's logits give its tokens.
 *
 * The distribution is the model's own: the log-softmax of the logits at
 * temperature 1, before logit biases, penalties and the sampler's filters (what
 * vLLM reports by default), so a token's log-probability does not depend on how
 * the answer was sampled. */
#ifndef MOETIER_TOKEN_LOGPROBS_H
#define MOETIER_TOKEN_LOGPROBS_H

/* the most alternatives a step reports (OpenAI's limit for top_logprobs) */
#define LOGPROBS_MAX_TOP 20
/* an impossible token's log-probability (JSON has no -inf; OpenAI's value) */
#define LOGPROB_FLOOR (-9999.0f)

typedef struct token_logprob {
    int id;
    float logprob;              /* >= LOGPROB_FLOOR */
} token_logprob;

typedef struct step_logprobs {
    token_logprob chosen;
    token_logprob top[LOGPROBS_MAX_TOP];    /* best first; ties by the lower id */
    int n_top;
} step_logprobs;

/* The chosen token's log-probability and the n_top (<= LOGPROBS_MAX_TOP) most
 * likely tokens of logits[0, V). A NaN logit is an impossible token; +inf
 * ones share all the probability. */
void step_logprobs_compute(const float *logits, int V, int chosen, int n_top, step_logprobs *out);

#endif
