/* router_ref: see router_ref.h. */
#include "router_ref.h"

#include <math.h>
#include <string.h>

#include "ops_ref.h"

size_t route_ref_scratch(const route_params *p)
{
    return 2 * (size_t)p->n_experts + 2 * (size_t)p->n_group;
}

void route_ref(const route_params *p, const float *logits, const float *bias, int *ids,
               float *weights, float *scores_out, float *scratch)
{
    int E = p->n_experts;
    float *s = scratch;             /* unbiased scores */
    float *b = s + E;               /* selection scores (biased, masked) */
    float *gs = b + E;              /* group scores */
    float *dropped = gs + p->n_group;   /* 1: the group's experts are masked */
    memcpy(s, logits, (size_t)E * sizeof *s);
    if (p->sigmoid)
        for (int i = 0; i < E; i++)
            s[i] = 1.0f / (1.0f + expf(-s[i]));
    else
        softmax_ref(s, E);
    for (int i = 0; i < E; i++)
        b[i] = bias ? s[i] + bias[i] : s[i];
    if (p->use_groups && p->n_group > 1) {
        int per = E / p->n_group;
        for (int g = 0; g < p->n_group; g++) {
            float m1 = -INFINITY, m2 = -INFINITY;
            for (int i = g * per; i < (g + 1) * per; i++) {
                if (b[i] > m1) {
                    m2 = m1;
                    m1 = b[i];
                } else if (b[i] > m2) {
                    m2 = b[i];
                }
            }
            gs[g] = p->group_by_top2 ? m1 + m2 : m1;
        }
        /* keep the topk_group best groups; mask the experts of the others (a
         * flag marks the dropped: any score, +inf included, can be a group's) */
        for (int g = 0; g < p->n_group; g++)
            dropped[g] = 0;
        for (int k = 0; k < p->n_group - p->topk_group; k++) {
            int worst = -1;
            for (int g = 0; g < p->n_group; g++)
                if (!dropped[g] && (worst < 0 || gs[g] < gs[worst]))
                    worst = g;
            dropped[worst] = 1;
            for (int i = worst * per; i < (worst + 1) * per; i++)
                b[i] = -INFINITY;
        }
    }
    float sum = 0;
    for (int k = 0; k < p->top_k; k++) {
        int best = -1;
        for (int i = 0; i < E; i++)
            if (b[i] != -INFINITY && (best < 0 || b[i] > b[best]))
                best = i;
        if (best < 0) {             /* fewer eligible experts than top_k: config rules it out */
            ids[k] = 0;
            weights[k] = 0;
            continue;
        }
        ids[k] = best;
        weights[k] = s[best];
        sum += s[best];
        b[best] = -INFINITY;
    }
    for (int k = 0; k < p->top_k; k++) {
        if (p->normalize)
            weights[k] /= sum;
        weights[k] *= p->scaling;
    }
    if (scores_out)
        memcpy(scores_out, s, (size_t)E * sizeof *s);
}
