/* rope_freq: rotary frequencies and attention scale, plain or YaRN.
 *
 * Follows the DeepSeek-V3 reference: inv_freq[i] = theta^(-2i/d) in float32,
 * blended towards inv_freq/factor by a linear ramp between the correction dims
 * of beta_fast and beta_slow; the softmax scale is (nope+rope)^-0.5 times
 * mscale(factor, mscale_all_dim)^2 and cos/sin are scaled by
 * mscale(factor, mscale) / mscale(factor, mscale_all_dim) (1 for Kimi K2). */
#ifndef MOETIER_ROPE_FREQ_H
#define MOETIER_ROPE_FREQ_H

#include "core/model/config.h"

/* inv_freq gets dim/2 values; *cos_sin_scale the cos/sin multiplier. */
void rope_freq_compute(const rope_config *r, int dim, float *inv_freq, float *cos_sin_scale);
float attention_softmax_scale(const model_config *c);

#endif
