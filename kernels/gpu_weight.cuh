/* gpu_weight: a linear_weight whose bytes live on the device, and the
 * dequantization of one element in each format, exactly as linear_ref does it
 * on the CPU (core/model/linear_weight.h describes the formats). */
#ifndef MOETIER_GPU_WEIGHT_CUH
#define MOETIER_GPU_WEIGHT_CUH

#include <cuda_fp16.h>
#include <stdint.h>

extern "C" {
#include "core/model/linear_weight.h"
}

struct gpu_weight {
    int fmt, rows, cols;
    const void *data;           /* device */
    const void *scale;          /* device; FP8_BLOCK: float, INT4_GROUP: bf16 */
    int block_rows, block_cols, group_size;
    long long row_words, scale_cols;
};

__device__ __forceinline__ float gw_bf16(uint16_t h)
{
    return __uint_as_float((uint32_t)h << 16);
}

/* The decoders below turn codes into float32 with integer operations and one
 * float add or multiply, never an int-to-float conversion: the GPU converts
 * at a small fraction of its integer and float rate (16 per clock and SM
 * against 64 and 128 on sm_80 and sm_90): 8 per INT4 word would hold an SM
 * to 8 bytes of weights per clock, below an H100's memory speed. Their values
 * are exactly those of the plain definitions (core/model/dtype.c), so nothing
 * the CPU twin does changes. */

/* OCP E4M3 "fn" (bias 7, subnormals below exponent 1, 0x7F/0xFF NaN, no
 * infinity), the code in byte j of u. With the code's sign at float32's sign
 * and its 4 exponent and 3 mantissa bits at bits 26-20, the float is the code
 * times 2^-120 (exponent bias 127 instead of 7; a subnormal code lands on a
 * float32 subnormal): times 2^120 is exact. Needs subnormals kept (no -ftz). */
__device__ __forceinline__ float gw_e4m3_finite_in(uint32_t u, int j)
{
    int32_t top = (int32_t)(u << (24 - 8 * j));     /* the code in bits 31-24 */
    /* the shift copies the sign into bits 31-27; the mask keeps bit 31 */
    return __uint_as_float((uint32_t)(top >> 4) & 0x87f00000u) * 0x1p120f;
}

/* whether a byte of u is a NaN code (low 7 bits all ones: plus one carries
 * into the byte's top bit, never further) */
__device__ __forceinline__ bool gw_e4m3_nan_in_word(uint32_t u)
{
    return (((u & 0x7f7f7f7fu) + 0x01010101u) & 0x80808080u) != 0;
}

__device__ __forceinline__ float gw_e4m3_in(uint32_t u, int j)
{
    if (((u >> (8 * j)) & 0x7fu) == 0x7fu)
        return __uint_as_float(0x7fc00000u | ((u << (24 - 8 * j)) & 0x80000000u));
    return gw_e4m3_finite_in(u, j);
}

__device__ __forceinline__ float gw_e4m3(uint8_t q)
{
    return gw_e4m3_in(q, 0);
}

/* INT4 code j of u (nibble j holds q + 8) as the float q: 0x4B000000 | n is
 * the float 2^23 + n, so subtracting 2^23 + 8 leaves n - 8 exactly */
__device__ __forceinline__ float gw_int4_in(uint32_t u, int j)
{
    return __uint_as_float(((u >> (4 * j)) & 15u) | 0x4b000000u) - 8388616.0f;
}

/* element (r, c) of w in format FMT, a constant: kernels instantiated per
 * format read their weights without a branch per element */
template <int FMT> __device__ __forceinline__ float gw_at_fmt(const gpu_weight &w, int r, int c)
{
    size_t rc = (size_t)r * (size_t)w.cols + (size_t)c;
    switch (FMT) {
    case WF_F32:
        return ((const float *)w.data)[rc];
    case WF_F16:
        return __half2float(__ushort_as_half(((const uint16_t *)w.data)[rc]));
    case WF_BF16:
        return gw_bf16(((const uint16_t *)w.data)[rc]);
    case WF_FP8_BLOCK: {
        float s = ((const float *)w.scale)[(size_t)(r / w.block_rows) * (size_t)w.scale_cols +
                                           (size_t)(c / w.block_cols)];
        return gw_e4m3(((const uint8_t *)w.data)[rc]) * s;
    }
    case WF_INT4_GROUP: {
        uint32_t word = ((const uint32_t *)w.data)[(size_t)r * (size_t)w.row_words + (size_t)(c / 8)];
        return gw_int4_in(word, c % 8) * gw_bf16(((const uint16_t *)w.scale)[(size_t)r * (size_t)w.scale_cols +
                                                              (size_t)(c / w.group_size)]);
    }
    }
    return __int_as_float(0x7fc00000);     /* an unknown format never passes silently */
}

/* element (r, c) of w, in float32 */
__device__ __forceinline__ float gw_at(const gpu_weight &w, int r, int c)
{
    switch (w.fmt) {
    case WF_F32:
        return gw_at_fmt<WF_F32>(w, r, c);
    case WF_F16:
        return gw_at_fmt<WF_F16>(w, r, c);
    case WF_BF16:
        return gw_at_fmt<WF_BF16>(w, r, c);
    case WF_FP8_BLOCK:
        return gw_at_fmt<WF_FP8_BLOCK>(w, r, c);
    case WF_INT4_GROUP:
        return gw_at_fmt<WF_INT4_GROUP>(w, r, c);
    }
    return __int_as_float(0x7fc00000);
}

/* The bytes of row r's data in format FMT, for the kernels that give each lane
 * one column (INT4 always goes by words): 32 consecutive columns, one pass of
 * a warp, take 32 x 4, 2 or 1 bytes. */
template <int FMT> __device__ __forceinline__ const char *gw_row_data(const gpu_weight &w, int r)
{
    static_assert(FMT != WF_INT4_GROUP, "INT4 rows are read by words");
    size_t row_bytes = (size_t)w.cols * (FMT == WF_F32 ? 4 : FMT == WF_FP8_BLOCK ? 1 : 2);
    return (const char *)w.data + (size_t)r * row_bytes;
}
template <int FMT> __host__ __device__ constexpr int gw_pass_bytes(void)
{
    static_assert(FMT != WF_INT4_GROUP, "INT4 rows are read by words");
    return FMT == WF_F32 ? 128 : FMT == WF_FP8_BLOCK ? 32 : 64;
}

#endif
