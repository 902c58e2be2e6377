/* transpose_avx512: a 16 x 16 block of 32-bit elements transposed in
 * registers, shared by the kernels that turn rows into columns (the batched
 * GEMM's weight panels, the AMX product's x). The elements are moved, never
 * computed on, so any 32-bit data passes through as floats unchanged. */
#ifndef MOETIER_TRANSPOSE_AVX512_H
#define MOETIER_TRANSPOSE_AVX512_H

#include <immintrin.h>
#include <stddef.h>

/* dst[c * ld_dst + i] = src[i * ld_src + c] for a 16 x 16 block: unpack pairs of
 * rows, shuffle quads, then gather 128-bit lanes across the four row groups. */
static inline __attribute__((always_inline, target("avx512f"))) void
transpose16(const float *src, size_t ld_src, float *dst, size_t ld_dst)
{
    __m512 r[16], t[16], u[16];
    _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + (size_t)i * ld_src);
    _Pragma("GCC unroll 16") for (int i = 0; i < 8; i++)
    {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < 4; i++)
    { /* u[4i + j], lane L: rows 4i..4i+3 of column 4L + j */
        u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    _Pragma("GCC unroll 16") for (int j = 0; j < 4; j++)
    {
        __m512 s0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);
        __m512 s1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xdd);
        __m512 s2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
        __m512 s3 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xdd);
        _mm512_storeu_ps(dst + (size_t)(j)*ld_dst, _mm512_shuffle_f32x4(s0, s2, 0x88));
        _mm512_storeu_ps(dst + (size_t)(4 + j) * ld_dst, _mm512_shuffle_f32x4(s1, s3, 0x88));
        _mm512_storeu_ps(dst + (size_t)(8 + j) * ld_dst, _mm512_shuffle_f32x4(s0, s2, 0xdd));
        _mm512_storeu_ps(dst + (size_t)(12 + j) * ld_dst, _mm512_shuffle_f32x4(s1, s3, 0xdd));
    }
}

#endif
