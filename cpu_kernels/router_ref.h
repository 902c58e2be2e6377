/* router_ref: scalar reference of MoE expert selection (DeepSeek-V3 family).
 *
 * scores = sigmoid (or softmax) of the router logits; selection ranks
 * scores + e_score_correction_bias, optionally restricted to the topk_group best
 * groups; the combine weights are the unbiased scores of the chosen experts,
 * normalised to sum 1 when asked, times routed_scaling_factor. */
#ifndef MOETIER_ROUTER_REF_H
#define MOETIER_ROUTER_REF_H

#include "core/engine/backend.h"

/* Scratch floats needed by route_ref for one token. */
size_t route_ref_scratch(const route_params *p);
/* One token: logits [n_experts] -> ids/weights [top_k] in descending biased-score
 * order; scores_out (may be NULL) gets the unbiased scores. bias may be NULL. */
void route_ref(const route_params *p, const float *logits, const float *bias, int *ids,
               float *weights, float *scores_out, float *scratch);

#endif
