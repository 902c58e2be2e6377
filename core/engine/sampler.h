/* sampler: picks the next token from the logits.
 *
 * First, greedy or not: the logit biases, the repetition penalty over the
 * last tokens, and the presence and frequency penalties over the answer's
 * tokens (OpenAI's: each token the answer holds loses presence + frequency x
 * its count); then llama.cpp's DRY penalty (a token that would make a
 * sequence of the context repeat longer than dry_allowed_length loses
 * dry_multiplier x dry_base^(length - allowed)) and top-n-sigma (tokens more
 * than top_n_sigma standard deviations of the logits below the best are
 * left out). Then argmax when temperature is 0; otherwise, in this order:
 * top-k, temperature softmax (dynamic with dynatemp_range: the temperature
 * moves within +-range with the candidates' normalized
 * entropy^dynatemp_exponent), typical (the tokens whose surprise is nearest
 * the distribution's entropy, up to typical_p of the probability, as
 * llama.cpp keeps them), top-p (nucleus), min-p, XTC (with probability xtc_probability, the tokens at
 * or above xtc_threshold but the least likely of them are left out; their
 * probabilities at temperature 1 among the tokens kept, as llama.cpp has
 * them), then a draw from a seeded generator, so a seed reproduces a run.
 * Mirostat (1 or 2, llama.cpp's) replaces everything after the temperature:
 * it draws from the tokens its target surprise mirostat_tau allows, learning
 * at rate mirostat_eta (the penalties, DRY and top-n-sigma still come first,
 * where llama.cpp's chain leaves them out). */
#ifndef MOETIER_SAMPLER_H
#define MOETIER_SAMPLER_H

#include <stdint.h>

#include "core/base/errbuf.h"

/* A bias added to one token's logit. */
typedef struct sampler_bias {
    int id;
    float bias;
} sampler_bias;

/* DRY's sequence breakers as token sequences (dry_breakers.h makes them
 * from text): breaker i is token head[i] followed by tail[at[i], at[i + 1]);
 * a token that holds a breaker's whole text has none after it. A repeat
 * never reaches back past a breaker, and a one-token breaker is never
 * penalised. */
typedef struct sampler_breakers {
    int n;
    const int *head, *at, *tail;
} sampler_breakers;

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
    float dry_multiplier;       /* 0: off */
    float dry_base;             /* >= 1 (1.75) */
    int dry_allowed_length;     /* repeats longer than this are penalised (2) */
    int dry_penalty_last_n;     /* the tokens it looks back over (callers give -1, the
                                 * context, as its size); 0: off */
    sampler_breakers dry_breakers; /* copied by sampler_create */
    float top_n_sigma;          /* <= 0: off */
    float xtc_probability;      /* 0: off */
    float xtc_threshold;        /* above 0.5: off (0.1) */
    float typical_p;            /* 1: off */
    float dynatemp_range;       /* 0: off */
    float dynatemp_exponent;    /* 1 */
    int mirostat;               /* 0: off; 1 or 2: the version */
    float mirostat_tau;         /* the target surprise, bits (5) */
    float mirostat_eta;         /* its learning rate (0.1) */
    uint64_t seed;
} sampler_params;

typedef struct sampler_cand {
    float logit;
    int id;
} sampler_cand;

/* What a draw chose from (llama.cpp's post_sampling_probs): the candidates
 * every filter kept, best first, with their probabilities among them (at
 * most max), and the drawn token's. Greedy, or a certain token: that token,
 * probability 1. */
typedef struct sampler_kept {
    int id;
    float p;
} sampler_kept;

typedef struct sampler_report {
    sampler_kept *top; /* [max] */
    int max, n;
    float chosen;
} sampler_report;

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
    int *dry_tokens;        /* the last tokens recorded, dry_n of them (room for
                             * twice the window: moved back when full) */
    int dry_n;
    int n_brk;              /* the breakers, by head token */
    int *brk_head, *brk_at, *brk_tail;
    int *dry_z;             /* [window] scratch */
    int *dry_len;           /* [vocab] scratch: each token's longest repeat + 1, 0 */
    int *dry_hit;           /* [window] scratch: the tokens dry_len holds */
    float mu;               /* Mirostat's surprise bound, learnt (2 x tau to start) */
    sampler_report *report; /* optional: filled by each draw (its caller's) */
    struct typical_rank *rank; /* [vocab] scratch of typical's order, when typical_p < 1 */
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
