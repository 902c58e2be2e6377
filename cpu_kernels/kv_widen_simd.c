/* kv_widen_simd: see kv_widen_simd.h. */
#include "kv_widen_simd.h"

#include <immintrin.h>
#include <stdint.h>

#include "core/engine/kv_q8.h"
#include "core/model/dtype.h"

#define TGT512 __attribute__((target("avx512f,avx2,fma")))
#define TGT2 __attribute__((target("avx2,fma")))

TGT512 static void bf16_avx512(const uint16_t *src, int n, float *dst)
{
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(src + i));
        __m512i u = _mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16);
        _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(u));
    }
    bf16_widen(src + i, (size_t)(n - i), dst + i);
}

TGT2 static void bf16_avx2(const uint16_t *src, int n, float *dst)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
        __m256i u = _mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16);
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(u));
    }
    bf16_widen(src + i, (size_t)(n - i), dst + i);
}

void bf16_widen_simd(kernel_path path, const uint16_t *src, int n, float *dst)
{
    if (path == KPATH_AVX512)
        bf16_avx512(src, n, dst);
    else if (path == KPATH_AVX2)
        bf16_avx2(src, n, dst);
    else
        bf16_widen(src, (size_t)n, dst);
}

/* the values [c, c + k) of one block, all under one scale */
TGT512 static void block_avx512(const int8_t *q, float s, int k, float *dst)
{
    __m512 vs = _mm512_set1_ps(s);
    int i = 0;
    for (; i + 16 <= k; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(q + i));
        _mm512_storeu_ps(dst + i, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v)), vs));
    }
    for (; i < k; i++)
        dst[i] = (float)q[i] * s;
}

TGT2 static void block_avx2(const int8_t *q, float s, int k, float *dst)
{
    __m256 vs = _mm256_set1_ps(s);
    int i = 0;
    for (; i + 8 <= k; i += 8) {
        __m128i v = _mm_loadl_epi64((const __m128i *)(const void *)(q + i));
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), vs));
    }
    for (; i < k; i++)
        dst[i] = (float)q[i] * s;
}

void kv_q8_widen_simd(kernel_path path, const void *row, int n, int c0, int k, float *dst)
{
    if (path != KPATH_AVX512 && path != KPATH_AVX2) {
        kv_q8_widen(row, n, c0, k, dst);
        return;
    }
    const float *scale = row;
    const int8_t *q = (const int8_t *)(scale + kv_q8_blocks(n));
    for (int c = c0; c < c0 + k;) {
        int b = c / KV_Q8_BLOCK;
        int end = (b + 1) * KV_Q8_BLOCK < c0 + k ? (b + 1) * KV_Q8_BLOCK : c0 + k;
        if (path == KPATH_AVX512)
            block_avx512(q + c, scale[b], end - c, dst + (c - c0));
        else
            block_avx2(q + c, scale[b], end - c, dst + (c - c0));
        c = end;
    }
}
