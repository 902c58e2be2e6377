/* random_weight: random weights of every format and random activations for the
 * kernel tests, and the bound their results are checked against. */
#ifndef MOETIER_RANDOM_WEIGHT_H
#define MOETIER_RANDOM_WEIGHT_H

#include "core/model/linear_weight.h"

/* xorshift: the same sequence in every test process */
uint32_t random_u32(void);
/* uniform in [-1, 1], four decimals */
float random_unit(void);

typedef struct random_weight {
    linear_weight w;
    void *data, *scale;     /* owned */
} random_weight;

/* A random weight of the format (blk: FP8 block side, gs: INT4 group size);
 * E4M3 codes cover every value but NaN, FP8 scales include large ones. */
random_weight random_weight_make(weight_format fmt, int rows, int cols, int blk, int gs);
void random_weight_free(random_weight *o);
/* bound[t][r] = sum over columns of |w x|, from the reference dequantization:
 * float32 sums of the same terms in another order differ by a small multiple of it */
void random_weight_bounds(const linear_weight *w, const float *x, int T, float *bound);

#endif
