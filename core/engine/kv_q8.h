/* kv_q8: the rows of a q8_0 KV cache (--cache-type q8_0).
 *
 * A row of n values is cut into blocks of KV_Q8_BLOCK; each block keeps a
 * float32 scale (its largest magnitude / 127) and its values as int8 rounded
 * to the nearest multiple of the scale (ties to even). A row is laid out as
 * its ceil(n / 32) scales, then its n int8 values, padded to a multiple of 4
 * bytes: 648 bytes for K2's 576 values a row, against 1,152 in bf16 and 2,304
 * in float32. A value reads back as (float)q * scale, one rounding, on every
 * path. A block holding a NaN or an infinity reads back as NaN, all of it,
 * so nothing non-finite is hidden. */
#ifndef MOETIER_KV_Q8_H
#define MOETIER_KV_Q8_H

#include <stddef.h>

#define KV_Q8_BLOCK 32

/* blocks of a row of n values: its scales come first, its int8 values after them */
static inline int kv_q8_blocks(int n)
{
    return (n + KV_Q8_BLOCK - 1) / KV_Q8_BLOCK;
}

/* bytes of a row of n values (a multiple of 4) */
size_t kv_q8_row_bytes(int n);
/* the n values of x into row (kv_q8_row_bytes(n) bytes, 4-byte aligned) */
void kv_q8_quantize(const float *x, int n, void *row);
/* values [c0, c0 + k) of a row of n values, as float32 */
void kv_q8_widen(const void *row, int n, int c0, int k, float *dst);

#endif
