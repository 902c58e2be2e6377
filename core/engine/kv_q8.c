/* kv_q8: see kv_q8.h. */
#include "kv_q8.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

size_t kv_q8_row_bytes(int n)
{
    return (size_t)kv_q8_blocks(n) * sizeof(float) + (((size_t)n + 3) & ~(size_t)3);
}

void kv_q8_quantize(const float *x, int n, void *row)
{
    float *scale = row;
    int8_t *q = (int8_t *)(scale + kv_q8_blocks(n));
    for (int b = 0; b < kv_q8_blocks(n); b++) {
        int c0 = b * KV_Q8_BLOCK, c1 = c0 + KV_Q8_BLOCK < n ? c0 + KV_Q8_BLOCK : n;
        float amax = 0;
        int finite = 1;
        for (int c = c0; c < c1; c++) {
            finite &= isfinite(x[c]) != 0;
            amax = fabsf(x[c]) > amax ? fabsf(x[c]) : amax;
        }
        /* a zero block keeps zeros; a non-finite one reads back as NaN */
        float s = !finite ? NAN : amax / 127.0f;
        scale[b] = s;
        for (int c = c0; c < c1; c++) {
            float r = finite && s > 0 ? nearbyintf(x[c] / s) : 0.0f;
            r = r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r;
            q[c] = (int8_t)r;
        }
    }
    /* the padding's bytes defined, so saved rows are the same bits */
    memset(q + n, 0, kv_q8_row_bytes(n) - (size_t)kv_q8_blocks(n) * sizeof(float) - (size_t)n);
}

void kv_q8_widen(const void *row, int n, int c0, int k, float *dst)
{
    const float *scale = row;
    const int8_t *q = (const int8_t *)(scale + kv_q8_blocks(n));
    /* block by block, so the inner loop is a plain vector loop */
    for (int c = c0; c < c0 + k;) {
        int b = c / KV_Q8_BLOCK, end = (b + 1) * KV_Q8_BLOCK;
        end = end < c0 + k ? end : c0 + k;
        float s = scale[b];
        for (int i = c; i < end; i++)
            dst[i - c0] = (float)q[i] * s;
        c = end;
    }
}
