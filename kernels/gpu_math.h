/* gpu_math: float math that gives the same bits on the GPU and on the CPU.
 *
 * An expert computed on the CPU while others run on the GPU must give the
 * GPU's bits, or logits would depend on which experts the VRAM cache holds.
 * The exponential here is built from IEEE operations only (correctly rounded
 * on both sides), and every product and sum is written so that no compiler
 * fuses it: on the device through __fmul_rn/__fadd_rn, which nvcc never
 * contracts into an FMA; in C, ISO mode does not contract. Plain C (used by
 * gpu_twin.c) and CUDA (the kernels) include it alike. */
#ifndef MOETIER_GPU_MATH_H
#define MOETIER_GPU_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define GM_FN __host__ __device__ static inline
#else
#define GM_FN static inline
#endif
#ifdef __CUDA_ARCH__    /* the device pass of nvcc */
#define GM_MUL(a, b) __fmul_rn((a), (b))
#define GM_ADD(a, b) __fadd_rn((a), (b))
#else
#define GM_MUL(a, b) ((a) * (b))
#define GM_ADD(a, b) ((a) + (b))
#endif

GM_FN float gm_bits_to_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* e^x within 2 ulp: x = n ln2 + r, |r| <= ln2 / 2, e^r by a degree-6 polynomial
 * (Horner with FMAs), times 2^n in two steps so results near the subnormal
 * range and n = 128 are right. NaN stays NaN. */
GM_FN float gm_expf(float x)
{
    if (x != x)
        return x;
    if (x > 88.72283935546875f)
        return gm_bits_to_float(0x7f800000u);
    if (x < -103.97207641601562f)
        return 0.0f;
    float n = rintf(GM_MUL(x, 1.44269502162933349609f));
    float r = fmaf(n, -0.693145751953125f, x);          /* ln2, high part: n * it is exact */
    r = fmaf(n, -1.42860676533018704e-06f, r);          /* ln2, low part */
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, GM_MUL(r, r), r);                       /* e^r - 1 */
    p = GM_ADD(p, 1.0f);
    int k = (int)n;
    if (k > 127) {
        p = GM_MUL(p, 2.0f);
        k--;
    } else if (k < -126) {
        p = GM_MUL(p, 5.9604644775390625e-08f);         /* 2^-24 */
        k += 24;
    }
    return GM_MUL(p, gm_bits_to_float((uint32_t)(k + 127) << 23));
}

/* the FFN's gate: silu(g) * u = g / (1 + e^-g) * u */
GM_FN float gm_silu_mul(float g, float u)
{
    return GM_MUL(g / GM_ADD(1.0f, gm_expf(-g)), u);
}

#endif
