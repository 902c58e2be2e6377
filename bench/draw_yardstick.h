/* draw_yardstick: the yardstick of the token-mask benchmarks (bench_json_mask,
 * bench_grammar_mask): one default draw over a vocabulary's logits shaped as
 * bench_sampler's (normal with sigma 2.5, 20 tokens at 15-25), the mean of
 * `rounds` draws in ms. Header-only: each benchmark is one program. */
#ifndef MOETIER_BENCH_DRAW_YARDSTICK_H
#define MOETIER_BENCH_DRAW_YARDSTICK_H

#include <math.h>
#include <stdlib.h>

#include "core/base/progress.h"
#include "core/engine/sampler.h"

static double draw_yardstick_ms(sampler *s, float *logits, int V, int rounds)
{
    unsigned seed = 1;
    double total = 0;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < V; i += 2) { /* Box-Muller: two normals per draw */
            double u = (rand_r(&seed) + 1.0) / (RAND_MAX + 2.0), w = (rand_r(&seed) + 1.0) / (RAND_MAX + 2.0);
            logits[i] = (float)(2.5 * sqrt(-2 * log(u)) * cos(6.283185307179586 * w));
            if (i + 1 < V)
                logits[i + 1] = (float)(2.5 * sqrt(-2 * log(u)) * sin(6.283185307179586 * w));
        }
        for (int k = 0; k < 20; k++)
            logits[rand_r(&seed) % V] = 15.0f + 0.5f * (float)k;
        double t0 = now_seconds();
        sampler_sample(s, logits);
        total += now_seconds() - t0;
    }
    return total / rounds * 1e3;
}

#endif
