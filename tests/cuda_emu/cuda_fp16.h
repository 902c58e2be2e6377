/* cuda_fp16.h for the CPU emulation: the half conversions the kernels use. */
#ifndef MOETIER_CUDA_EMU_FP16_H
#define MOETIER_CUDA_EMU_FP16_H

#include <cstdint>
#include <cstring>

inline uint16_t __ushort_as_half(uint16_t h) { return h; }
/* IEEE binary16 to float, exactly (normals, subnormals, infinities, NaN) */
inline float __half2float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 31u, m = h & 1023u, u;
    if (e == 31)
        u = sign | 0x7f800000u | (m << 13);
    else if (e)
        u = sign | ((e + 112u) << 23) | (m << 13);
    else {
        float f = (float)m * (1.0f / 16777216.0f);  /* m * 2^-24 */
        return sign ? -f : f;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#endif
