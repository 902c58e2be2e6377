/* fp8_widen_avx512: 64 E4M3 codes to their exact values as floats on AVX-512
 * VBMI, shared by the CPU kernels (linear_avx512.c) and the GPU backend's CPU
 * twin (kernels/gpu_twin_avx512.c). Every E4M3 value is a bf16 value, so two
 * 128-entry byte tables (fp8_bf16_table) give a code's bf16 high and low
 * bytes for its magnitude, the code's sign goes into the high byte, and the
 * bytes widen to float32 with zero low halves. */
#ifndef MOETIER_FP8_WIDEN_AVX512_H
#define MOETIER_FP8_WIDEN_AVX512_H

#include <immintrin.h>

#include "cpu_kernels/linear_kernels.h"

#define FP8_WIDEN_INL static inline __attribute__((target("avx512f,avx512bw,avx512vbmi"), always_inline))

typedef struct fp8_tables {
    __m512i hi0, hi1, lo0, lo1;
} fp8_tables;

FP8_WIDEN_INL fp8_tables fp8_tables_load(void)
{
    const uint8_t *tbl = fp8_bf16_table();
    fp8_tables t = {_mm512_loadu_si512(tbl), _mm512_loadu_si512(tbl + 64),
                    _mm512_loadu_si512(tbl + 128), _mm512_loadu_si512(tbl + 192)};
    return t;
}

/* the 64 codes of q; f[k] holds, in each 128-bit lane L, codes 16 L + 4 k .. + 3 */
FP8_WIDEN_INL void fp8_widen_64(const fp8_tables *t, __m512i q, __m512 f[4])
{
    __m512i hi = _mm512_permutex2var_epi8(t->hi0, q, t->hi1);
    __m512i lo = _mm512_permutex2var_epi8(t->lo0, q, t->lo1);
    hi = _mm512_ternarylogic_epi32(hi, q, _mm512_set1_epi8((char)0x80), 0xf8);   /* hi | (q & 0x80) */
    __m512i w0 = _mm512_unpacklo_epi8(lo, hi), w1 = _mm512_unpackhi_epi8(lo, hi);
    const __m512i zero = _mm512_setzero_si512();
    f[0] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, w0));
    f[1] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, w0));
    f[2] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, w1));
    f[3] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, w1));
}

#endif
