/* rope_freq: see rope_freq.h. */
#include "rope_freq.h"

#include <math.h>

static double yarn_mscale(double factor, double m)
{
    return factor <= 1.0 ? 1.0 : 0.1 * m * log(factor) + 1.0;
}

static double correction_dim(double rotations, int dim, double base, int max_pos)
{
    return dim * log(max_pos / (rotations * 2 * M_PI)) / (2 * log(base));
}

void rope_freq_compute(const rope_config *r, int dim, float *inv_freq, float *cos_sin_scale)
{
    int half = dim / 2;
    for (int i = 0; i < half; i++)
        inv_freq[i] = 1.0f / powf((float)r->theta, (float)(2 * i) / (float)dim);
    *cos_sin_scale = 1.0f;
    if (!r->yarn)
        return;
    double lo = floor(correction_dim(r->beta_fast, dim, r->theta, r->original_max_pos));
    double hi = ceil(correction_dim(r->beta_slow, dim, r->theta, r->original_max_pos));
    if (lo < 0)
        lo = 0;
    if (hi > dim - 1)
        hi = dim - 1;
    if (lo == hi)
        hi += 0.001;
    float flo = (float)lo, fhi = (float)hi, f = (float)r->factor;
    for (int i = 0; i < half; i++) {
        float ramp = ((float)i - flo) / (fhi - flo);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        float smooth = 1.0f - ramp;
        inv_freq[i] = inv_freq[i] / f * (1.0f - smooth) + inv_freq[i] * smooth;
    }
    *cos_sin_scale = (float)(yarn_mscale(r->factor, r->mscale) /
                             yarn_mscale(r->factor, r->mscale_all_dim));
}

float attention_softmax_scale(const model_config *c)
{
    double s = 1.0 / sqrt((double)(c->qk_nope_dim + c->qk_rope_dim));
    if (c->rope.yarn && c->rope.mscale_all_dim != 0) {
        double m = yarn_mscale(c->rope.factor, c->rope.mscale_all_dim);
        s *= m * m;
    }
    return (float)s;
}
