/* sampler: picks the next token from the logits.
 *
 * First, greedy or not: the logit biases, the repetition penalty over the
 * last tokens, and the presence and frequency penalties over the answer's
 * tokens (OpenAI's: each token the answer holds loses presence + frequency x
 * its count). Then argmax when temperature is 0; otherwise, in this order:
 * top-k, temperature softmax, top-p (nucleus), min-p, then a draw from a
 * seeded generator, so a seed reproduces a run. */
#ifndef MOETIER_SAMPLER_H
#define MOETIER_SAMPLER_H

#include <stdint.h>

#include "core/base/errbuf.h"

/* A bias added to one token's logit. */
typedef struct sampler_bias {
    int id;
    float bias;
} sampler_bias;

typedef struct sampler_params {
    float temperature;      /* 0: greedy */
    int top_k;              /* 0: off */
    float top_p;            /* 1: off */
    float min_p;            /* 0: off */
    float repeat_penalty;   /* 1: off */
    int repeat_last_n;      /* tokens the penalty looks back over */
    float presence_penalty; /* 0: off */
    float frequency_penalty;/* 0: off */
    const sampler_bias *bias;   /* [n_bias], copied by sampler_create */
    int n_bias;
    uint64_t seed;
} sampler_params;

typedef struct sampler_cand {
    float logit;
    int id;
} sampler_cand;

typedef struct sampler {
    sampler_params p;
    int vocab;
    uint64_t rng[4];
    sampler_cand *cand;     /* candidates, best first as far as sorted; scratch */
    float *prob;            /* scratch of the reference */
    unsigned char *seen;    /* [vocab] tokens penalised in this step; scratch */
    int *history;           /* ring of the last repeat_last_n tokens */
    int n_history, history_next;
    sampler_bias *bias;     /* the params' copy */
    int *count;             /* [vocab] times the answer holds each token; NULL
                             * without presence or frequency penalty */
    int *answer_ids;        /* the distinct tokens counted, n_answer_ids */
    int n_answer_ids;
    float head_span;        /* sampler_sample sorts first the candidates within
                             * e^-head_span of the best's probability (18; the
                             * draw does not depend on it) */
} sampler;

sampler_params sampler_defaults(void);
int sampler_check(const sampler_params *p, errbuf *e);
int sampler_create(sampler *s, const sampler_params *p, int vocab, errbuf *e);
void sampler_destroy(sampler *s);
/* Records a token of the prompt for the repetition penalty. */
void sampler_accept(sampler *s, int token);
/* Records a token of the answer: for the repetition penalty, and for the
 * presence and frequency penalties. */
void sampler_accept_output(sampler *s, int token);
/* Forgets the recorded tokens (the generator's state stays). */
void sampler_forget(sampler *s);
/* Picks a token; logits may be modified. Sorts only the candidates within
 * e^-head_span of the best's probability, unless a filter or the draw reaches
 * past them: the same token as sampler_sample_reference for the same state. A
 * NaN logit is impossible; a +inf one is certain (the first such). */
int sampler_sample(sampler *s, float *logits);
/* The definition: the whole vocabulary sorted, then each filter in turn. */
int sampler_sample_reference(sampler *s, float *logits);
/* The first largest; a NaN is never taken unless every value is NaN. */
int argmax_f32(const float *x, int n);

#endif
