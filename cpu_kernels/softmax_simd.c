/* softmax_simd: see softmax_simd.h. */
#include "softmax_simd.h"

#include <immintrin.h>
#include <math.h>

#include "ops_ref.h"

#define TGT512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
#define TGT2 __attribute__((target("avx2,fma")))
#define INL static inline __attribute__((always_inline))

/* exp(x) = 2^k exp(r), k = round(x / ln 2), r = x - k ln 2 in two parts (ln 2
 * split so that k * LN2_HI is exact), exp(r) on [-ln2/2, ln2/2] by a minimax
 * polynomial (the Cephes single-precision coefficients). x is clamped to
 * [-87.6, 88], where k stays within [-126, 127]: 2^k a normal float (the
 * results below FLT_MIN, from x < -87.34, are subnormal, or FLT_MIN-sized for
 * x < -87.6 where expf's are smaller or zero). */
#define EXP_LO (-87.6f)
#define EXP_HI 88.0f
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f
#define LN2_LO (-2.12194440e-4f)
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

/* (max and min take their second operand when either is NaN, so a NaN x
 * stays NaN through the clamp) */
TGT512 INL __m512 exp16(__m512 x)
{
    x = _mm512_min_ps(_mm512_set1_ps(EXP_HI), _mm512_max_ps(_mm512_set1_ps(EXP_LO), x));
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(LN2_HI), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(LN2_LO), r);
    __m512 p = _mm512_set1_ps(EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P5));
    __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(y, k);
}

TGT2 INL __m256 exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_set1_ps(EXP_HI), _mm256_max_ps(_mm256_set1_ps(EXP_LO), x));
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_HI), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_LO), r);
    __m256 p = _mm256_set1_ps(EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P5));
    __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    /* 2^k through the exponent field: k is within [-126, 127] after the clamp
     * (a NaN's garbage k meets a NaN y) */
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127));
    e = _mm256_slli_epi32(e, 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* four vectors a pass, each with a sum of its own, then a masked tail into the
 * first; the four added pairwise, then the lanes */
TGT512 static float exp_sum_avx512(float *p, int n, float m)
{
    __m512 mv = _mm512_set1_ps(m), s[4];
    for (int k = 0; k < 4; k++)
        s[k] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 64 <= n; i += 64)
        for (int k = 0; k < 4; k++) {
            __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(p + i + 16 * k), mv));
            _mm512_storeu_ps(p + i + 16 * k, e);
            s[k] = _mm512_add_ps(s[k], e);
        }
    for (; i < n; i += 16) {
        __mmask16 mk = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, p + i), mv));
        _mm512_mask_storeu_ps(p + i, mk, e);
        s[0] = _mm512_mask_add_ps(s[0], mk, s[0], e);
    }
    __m512 t = _mm512_add_ps(_mm512_add_ps(s[0], s[1]), _mm512_add_ps(s[2], s[3]));
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(t),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1)));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

TGT2 static float exp_sum_avx2(float *p, int n, float m)
{
    __m256 mv = _mm256_set1_ps(m), s[4];
    for (int k = 0; k < 4; k++)
        s[k] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++) {
            __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p + i + 8 * k), mv));
            _mm256_storeu_ps(p + i + 8 * k, e);
            s[k] = _mm256_add_ps(s[k], e);
        }
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p + i), mv));
        _mm256_storeu_ps(p + i, e);
        s[0] = _mm256_add_ps(s[0], e);
    }
    __m256 t = _mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3]));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    float sum = _mm_cvtss_f32(q);
    if (i < n) {    /* the tail through a full vector, its lanes past n unused */
        float tail[8] = {0};
        for (int k = i; k < n; k++)
            tail[k - i] = p[k];
        _mm256_storeu_ps(tail, exp8(_mm256_sub_ps(_mm256_loadu_ps(tail), mv)));
        for (int k = i; k < n; k++) {
            p[k] = tail[k - i];
            sum += p[k];
        }
    }
    return sum;
}

float softmax_exp_sum(kernel_path path, float *p, int n, float m)
{
    if (path == KPATH_AVX512)
        return exp_sum_avx512(p, n, m);
    if (path == KPATH_AVX2)
        return exp_sum_avx2(p, n, m);
    float s = 0;
    for (int i = 0; i < n; i++) {
        p[i] = expf(p[i] - m);
        s += p[i];
    }
    return s;
}

/* p[i] *= scale, in place, and the largest of them in the same pass (the
 * scores are read once; max_ps(v, m) takes m when v is NaN: NaNs are passed
 * over) */
TGT512 static float scale_max_avx512(float *p, int n, float scale)
{
    __m512 m = _mm512_set1_ps(-INFINITY), sv = _mm512_set1_ps(scale);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_mul_ps(_mm512_loadu_ps(p + i), sv);
        _mm512_storeu_ps(p + i, v);
        m = _mm512_max_ps(v, m);
    }
    if (i < n) {
        __mmask16 mk = (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, p + i), sv);
        _mm512_mask_storeu_ps(p + i, mk, v);
        m = _mm512_mask_max_ps(m, mk, v, m);
    }
    return _mm512_reduce_max_ps(m);
}

TGT2 static float scale_max_avx2(float *p, int n, float scale)
{
    __m256 m = _mm256_set1_ps(-INFINITY), sv = _mm256_set1_ps(scale);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(p + i), sv);
        _mm256_storeu_ps(p + i, v);
        m = _mm256_max_ps(v, m);
    }
    float lanes[8], r = -INFINITY;
    _mm256_storeu_ps(lanes, m);
    for (int k = 0; k < 8; k++)
        r = lanes[k] > r ? lanes[k] : r;
    for (; i < n; i++) {
        p[i] *= scale;
        r = p[i] > r ? p[i] : r;
    }
    return r;
}

float softmax_scale_max(kernel_path path, float *p, int n, float scale)
{
    if (path == KPATH_AVX512)
        return scale_max_avx512(p, n, scale);
    if (path == KPATH_AVX2)
        return scale_max_avx2(p, n, scale);
    float m = -INFINITY;
    for (int i = 0; i < n; i++) {
        p[i] *= scale;
        m = p[i] > m ? p[i] : m;
    }
    return m;
}

/* p[i] /= s: softmax_ref's division, correctly rounded in every lane as it
 * is one at a time (the compiler leaves a loop of unknown length scalar at
 * -O2: 2 M divisions a K2 layer at 32 K positions) */
TGT512 static void divide_avx512(float *p, int n, float s)
{
    __m512 sv = _mm512_set1_ps(s);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(p + i, _mm512_div_ps(_mm512_loadu_ps(p + i), sv));
    if (i < n) {
        __mmask16 mk = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(p + i, mk, _mm512_div_ps(_mm512_maskz_loadu_ps(mk, p + i), sv));
    }
}

TGT2 static void divide_avx2(float *p, int n, float s)
{
    __m256 sv = _mm256_set1_ps(s);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(p + i, _mm256_div_ps(_mm256_loadu_ps(p + i), sv));
    for (; i < n; i++)
        p[i] /= s;
}

void softmax_simd(kernel_path path, float *p, int n, float scale)
{
    if (path != KPATH_AVX512 && path != KPATH_AVX2) {
        for (int i = 0; i < n; i++)
            p[i] *= scale;
        softmax_ref(p, n);
        return;
    }
    float s = softmax_exp_sum(path, p, n, softmax_scale_max(path, p, n, scale));
    if (path == KPATH_AVX512)
        divide_avx512(p, n, s);
    else
        divide_avx2(p, n, s);
}
