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

/* OCP E4M3 "fn": bias 7, subnormals below exponent 1, 0x7F/0xFF NaN, no infinity */
__device__ __forceinline__ float gw_e4m3(uint8_t q)
{
    uint32_t sign = (uint32_t)(q & 0x80u) << 24;
    uint32_t e = (q >> 3) & 15u, m = q & 7u;
    if ((q & 0x7fu) == 0x7fu)
        return __uint_as_float(0x7fc00000u | sign);
    float v = e ? __uint_as_float(((e + 120u) << 23) | (m << 20)) : (float)m * 0.001953125f;
    return sign ? -v : v;
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
        int q = (int)((word >> (4 * (c % 8))) & 15u) - 8;
        return (float)q * gw_bf16(((const uint16_t *)w.scale)[(size_t)r * (size_t)w.scale_cols +
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

/* The bytes of row r's data in format FMT: 32 consecutive columns (one pass of
 * a warp) take 32 x 4, 2 or 1 bytes, or 16 for INT4 (two columns per byte). */
template <int FMT> __device__ __forceinline__ const char *gw_row_data(const gpu_weight &w, int r)
{
    size_t row_bytes = FMT == WF_INT4_GROUP ? (size_t)w.row_words * 4
                       : (size_t)w.cols * (FMT == WF_F32 ? 4 : FMT == WF_FP8_BLOCK ? 1 : 2);
    return (const char *)w.data + (size_t)r * row_bytes;
}
template <int FMT> __host__ __device__ constexpr int gw_pass_bytes(void)
{
    return FMT == WF_F32 ? 128 : FMT == WF_FP8_BLOCK ? 32 : FMT == WF_INT4_GROUP ? 16 : 64;
}

#endif
