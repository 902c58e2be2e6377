/* random_weight: see random_weight.h. */
#include "random_weight.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/model/dtype.h"
#include "cpu_kernels/linear_ref.h"

static uint64_t rng = 88172645463325252ull;

uint32_t random_u32(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

float random_unit(void)
{
    return (float)((int)(random_u32() % 20001) - 10000) / 10000.0f;
}

void random_weight_free(random_weight *o)
{
    free(o->data);
    free(o->scale);
    o->data = o->scale = NULL;
}

random_weight random_weight_make(weight_format fmt, int rows, int cols, int blk, int gs)
{
    random_weight o = {.w = {.fmt = fmt, .rows = rows, .cols = cols}};
    size_t n = (size_t)rows * (size_t)cols;
    switch (fmt) {
    case WF_F32: {
        float *d = malloc(n * 4);
        for (size_t i = 0; i < n; i++)
            d[i] = random_unit();
        o.data = d;
        break;
    }
    case WF_F16:
    case WF_BF16: {
        uint16_t *d = malloc(n * 2);
        for (size_t i = 0; i < n; i++)
            d[i] = fmt == WF_BF16 ? f32_to_bf16(random_unit()) : (uint16_t)(random_u32() & 0x3bff); /* |v| < 1 */
        o.data = d;
        break;
    }
    case WF_FP8_BLOCK: {
        uint8_t *d = malloc(n);
        for (size_t i = 0; i < n; i++) {
            uint8_t q = (uint8_t)random_u32();
            d[i] = (q & 0x7f) == 0x7f ? (uint8_t)(q - 1) : q;
        }
        int sr = (rows + blk - 1) / blk, sc = (cols + blk - 1) / blk;
        float *s = malloc((size_t)sr * (size_t)sc * 4);
        for (int i = 0; i < sr * sc; i++)   /* include scales too large to fold 2^120 into */
            s[i] = i % 7 == 3 ? 300.0f * random_unit() : 0.001f * (1.0f + random_unit());
        o.data = d;
        o.scale = s;
        o.w.block_rows = o.w.block_cols = blk;
        o.w.scale_cols = sc;
        break;
    }
    case WF_INT4_GROUP: {
        int words = (cols + 7) / 8, sc = (cols + gs - 1) / gs;
        uint32_t *d = malloc((size_t)rows * (size_t)words * 4);
        for (size_t i = 0; i < (size_t)rows * (size_t)words; i++)
            d[i] = random_u32() << 16 ^ random_u32();
        uint16_t *s = malloc((size_t)rows * (size_t)sc * 2);
        for (int i = 0; i < rows * sc; i++)
            s[i] = f32_to_bf16(0.02f * random_unit());
        o.data = d;
        o.scale = s;
        o.w.group_size = gs;
        o.w.row_words = words;
        o.w.scale_cols = sc;
        break;
    }
    default: break;
    }
    o.w.data = o.data;
    o.w.scale = o.scale;
    return o;
}

void random_weight_bounds(const linear_weight *w, const float *x, int T, float *bound)
{
    float *row = malloc((size_t)w->cols * sizeof *row);
    for (int r = 0; r < w->rows; r++) {
        linear_ref_dequant_row(w, r, row);
        for (int t = 0; t < T; t++) {
            double s = 0;
            for (int c = 0; c < w->cols; c++)
                s += fabs((double)row[c] * x[(size_t)t * w->cols + c]);
            bound[(size_t)t * w->rows + r] = (float)s;
        }
    }
    free(row);
}

