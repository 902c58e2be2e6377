/* linear_weight: a view of one Linear layer's weight, in whatever format the
 * checkpoint (or later the expert store) holds it, without converting anything.
 *
 * y = W x with W [rows = out_features, cols = in_features]. The bytes stay where
 * they are (mmap'd shard, DRAM tier, VRAM slot); kernels dequantize on the fly:
 *   F32 / F16 / BF16   plain row-major values
 *   FP8_BLOCK          E4M3 row-major, scale[r / block_rows][c / block_cols] (F32),
 *                      w = e4m3(q) * scale_inv   (partial blocks at the edges)
 *   INT4_GROUP         compressed-tensors pack-quantized: u32 words, 8 nibbles
 *                      along the input, value 8*c + k in bits [4k, 4k+4) of word c,
 *                      q = nibble - 8, w = q * scale[r][c / group_size] (BF16 scale) */
#ifndef MOETIER_LINEAR_WEIGHT_H
#define MOETIER_LINEAR_WEIGHT_H

#include <stdint.h>

typedef enum weight_format {
    WF_F32,
    WF_F16,
    WF_BF16,
    WF_FP8_BLOCK,
    WF_INT4_GROUP,
    WF_COUNT
} weight_format;

typedef struct linear_weight {
    weight_format fmt;
    int rows, cols;
    const void *data;
    const void *scale;          /* FP8_BLOCK: float; INT4_GROUP: bf16 */
    int block_rows, block_cols; /* FP8_BLOCK */
    int group_size;             /* INT4_GROUP */
    int64_t row_words;          /* INT4_GROUP: u32 words per row = ceil(cols / 8) */
    int64_t scale_cols;         /* columns of the scale grid */
} linear_weight;

const char *weight_format_name(weight_format f);
/* Bytes of weight data plus scales. */
uint64_t linear_weight_bytes(const linear_weight *w);
uint64_t linear_weight_data_bytes(const linear_weight *w);
uint64_t linear_weight_scale_bytes(const linear_weight *w);
/* Rows [r0, r0 + n) of w as a weight of their own, the same bytes: 1, or 0
 * when its scales cannot start there (FP8: r0 not a multiple of block_rows). */
int linear_weight_rows(const linear_weight *w, int r0, int n, linear_weight *out);

#endif
