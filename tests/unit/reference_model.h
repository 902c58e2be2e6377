/* reference_model: an independent, deliberately plain float64 implementation of
 * the DeepSeek-V3 forward pass, written from the testdata README's formulas and
 * used to check the engine on family members that have no golden files (other
 * dimensions, several dense layers, group-limited routing, plain q_proj,
 * softmax scoring, no YaRN). Naive attention, no cache, no chunking, no expert
 * grouping: nothing shared with the engine but the weight views and the format
 * decoding (which test_kernels checks on its own). */
#ifndef MOETIER_REFERENCE_MODEL_H
#define MOETIER_REFERENCE_MODEL_H

#include "core/engine/backend.h"
#include "core/model/model_weights.h"

/* logits [T][vocab] of every position of ids. */
void reference_forward(const model_weights *m, const int *ids, int T, double *logits);

/* One token's routing by full ranking: ids/weights [top_k] in descending
 * biased-score order. */
void reference_route(const route_params *p, const float *logits, const float *bias, int *ids,
                     float *w);

#endif
