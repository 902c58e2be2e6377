/* mla_ref: scalar reference of Multi-head Latent Attention over the latent cache.
 *
 * Two formulations of the same math: the naive one expands every cached latent to
 * per-head keys and values with kv_b (used for prefill, where many queries share
 * the expansion), the absorbed one folds kv_b into the query and the output so
 * that only the cached latent is read (decode). They agree to float32 rounding. */
#ifndef MOETIER_MLA_REF_H
#define MOETIER_MLA_REF_H

#include "core/engine/backend.h"

/* Scratch floats the two forms need for a call with these sizes. */
size_t mla_ref_naive_scratch(const mla_args *a);
size_t mla_ref_absorbed_scratch(const mla_args *a);
void mla_ref_naive(const mla_args *a, float *scratch);
void mla_ref_absorbed(const mla_args *a, float *scratch);

#endif
