/* gpu_twin_simd: the SIMD halves of the CPU twin (gpu_twin.h):
 * kernels/gpu_twin_avx512.c and kernels/gpu_twin_avx2.c. Each computes rows
 * [r0, r1) of y [T][rows] = w x to the GPU's bits: every one of the 32 lanes
 * of a row a chain of FMAs over its columns (c = lane, lane + 32, ...; INT4
 * and FP8 whole words, below) in order, then the warp's butterfly. A lane's chain
 * waits on the FMA latency, so several rows run at once. x comes laid out for the case (below); work:
 * TWIN_ROWS * cols floats of the calling worker. */
#ifndef MOETIER_GPU_TWIN_SIMD_H
#define MOETIER_GPU_TWIN_SIMD_H

#include <stddef.h>

#include "cpu_kernels/linear_kernels.h"

#define TWIN_LANES 32
#define TWIN_ROWS 4

/* floats of one token's x as the SIMD twins take it: whole passes of 256
 * columns (32 lanes of 8 INT4 columns; FP8 passes of 128 fit too) */
static inline size_t twin_x_stride(int cols)
{
    return ((size_t)cols + 255) / 256 * 256;
}

/* INT4 and FP8 lanes take whole 32-bit words (gpu_linear.cu): x comes as
 * twin_words_permute_x lays it out for CW columns per word and V lanes per
 * register (16 AVX-512, 8 AVX2), token stride twin_x_stride: column j of a
 * register's V words in one load. */
void twin_words_permute_x(const float *x, int T, int cols, int CW, int V, float *xp);

/* INT4 in registers (AVX-512, AVX2): each lane a word of 8 columns as the
 * GPU's lanes take them (gpu_twin.c, int4_row_lanes). Every group size (a
 * multiple of 8 columns, so a word lies in one group) whose words per group
 * are a power of two: a register's V words then take their scales with one
 * shuffle. */
static inline int twin_int4_in_registers(const linear_weight *w)
{
    int wpg = w->group_size / 8;
    return w->fmt == WF_INT4_GROUP && wpg > 0 && (wpg & (wpg - 1)) == 0;
}

/* FP8 whose GPU lanes take words of 4 columns (gpu_linear.cu, gw_fp8_words):
 * rows and scale blocks of whole words; other FP8 lanes take a column each */
static inline int twin_fp8_words(const linear_weight *w)
{
    return w->fmt == WF_FP8_BLOCK && w->cols % 4 == 0 && w->block_cols % 4 == 0;
}

/* FP8 words in registers: 16 lanes through the CPU kernels' byte tables
 * (AVX-512 VBMI), a register's 64 columns in one scale block */
static inline int twin_fp8_words_16(const linear_weight *w)
{
    return twin_fp8_words(w) && w->block_cols % 64 == 0 && kernel_fp8_lut_supported();
}

/* 8 lanes through byte shuffles (AVX2, and AVX-512 without VBMI), a
 * register's 32 columns in one scale block */
static inline int twin_fp8_words_8(const linear_weight *w)
{
    return twin_fp8_words(w) && w->block_cols % 32 == 0;
}

/* BF16 with whole 32-column blocks (AVX-512, AVX2); x as it is */
static inline int twin_bf16_in_registers(const linear_weight *w)
{
    return w->fmt == WF_BF16 && w->cols % TWIN_LANES == 0;
}

void twin_int4_avx512(const linear_weight *w, int r0, int r1, const float *xp, int T, float *y);
void twin_fp8_avx512(const linear_weight *w, int r0, int r1, const float *xp, int T, float *y);
void twin_bf16_avx512(const linear_weight *w, int r0, int r1, const float *xp, int T, float *y);
/* any format: TWIN_ROWS rows at a time dequantized into work by `path` */
void twin_dequant_avx512(kernel_path path, const linear_weight *w, int r0, int r1, const float *x,
                         int T, float *y, float *work);
void twin_int4_avx2(const linear_weight *w, int r0, int r1, const float *xp, int T, float *y);
void twin_fp8_avx2(const linear_weight *w, int r0, int r1, const float *xp, int T, float *y);
void twin_bf16_avx2(const linear_weight *w, int r0, int r1, const float *x, int T, float *y);
/* any format: TWIN_ROWS rows at a time dequantized into work by the reference */
void twin_dequant_avx2(const linear_weight *w, int r0, int r1, const float *x, int T, float *y,
                       float *work);

#endif
