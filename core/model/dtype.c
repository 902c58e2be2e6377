/* dtype: names, sizes and scalar conversions (see dtype.h). */
#include "dtype.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    int bits;
} dtype_table[DT_COUNT] = {
    [DT_BOOL] = {"BOOL", 8},        [DT_U8] = {"U8", 8},
    [DT_I8] = {"I8", 8},            [DT_I16] = {"I16", 16},
    [DT_U16] = {"U16", 16},         [DT_I32] = {"I32", 32},
    [DT_U32] = {"U32", 32},         [DT_I64] = {"I64", 64},
    [DT_U64] = {"U64", 64},         [DT_F16] = {"F16", 16},
    [DT_BF16] = {"BF16", 16},       [DT_F32] = {"F32", 32},
    [DT_F64] = {"F64", 64},         [DT_F8_E4M3] = {"F8_E4M3", 8},
    [DT_F8_E5M2] = {"F8_E5M2", 8},  [DT_F8_E8M0] = {"F8_E8M0", 8},
    [DT_F6_E2M3] = {"F6_E2M3", 6},  [DT_F6_E3M2] = {"F6_E3M2", 6},
    [DT_F4] = {"F4", 4},            [DT_C64] = {"C64", 64},
};

dtype dtype_from_name(const char *name)
{
    for (int i = 0; i < DT_COUNT; i++)
        if (strcmp(dtype_table[i].name, name) == 0)
            return (dtype)i;
    return DT_INVALID;
}

const char *dtype_name(dtype t)
{
    return (t >= 0 && t < DT_COUNT) ? dtype_table[t].name : "?";
}

int dtype_bits(dtype t)
{
    return (t >= 0 && t < DT_COUNT) ? dtype_table[t].bits : 0;
}

static float bits_to_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f32_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

float bf16_to_f32(uint16_t h)
{
    return bits_to_f32((uint32_t)h << 16);
}

void bf16_widen(const uint16_t *src, size_t n, float *dst)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &u, sizeof u);
    }
}

uint16_t f32_to_bf16(float f)
{
    uint32_t u = f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0) {
        float v = ldexpf((float)man, -24);
        return sign ? -v : v;
    }
    if (exp == 31)
        return bits_to_f32(sign | 0x7f800000u | (man << 13));
    return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

float e4m3_to_f32(uint8_t q)
{
    int sign = q & 0x80;
    int exp = (q >> 3) & 0xf;
    int man = q & 0x7;
    float v;
    if (exp == 0xf && man == 0x7)
        return NAN;
    if (exp == 0)
        v = ldexpf((float)man, -9);                 /* subnormal: man/8 * 2^-6 */
    else
        v = ldexpf((float)(8 + man), exp - 10);     /* (1+man/8) * 2^(exp-7) */
    return sign ? -v : v;
}

uint8_t f32_to_e4m3(float f)
{
    /* Bit arithmetic rather than a table search: big fp8 checkpoints quantize
     * billions of values. */
    uint32_t u = f32_to_bits(f);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u)
        return 0x7f;                            /* NaN */
    if (u >= 0x43e00000u)
        return sign | 0x7e;                     /* >= 448: saturate */
    if (u >= (121u << 23)) {                    /* >= 2^-6: normal in E4M3 */
        uint32_t r = u + 0x7ffffu + ((u >> 20) & 1u);   /* round the 20 dropped bits, ties even */
        uint32_t code = (r >> 20) - (120u << 3);        /* rebias exponent 127 -> 7 */
        return sign | (uint8_t)(code > 0x7e ? 0x7e : code);
    }
    long m = lrintf(bits_to_f32(u) * 512.0f);   /* subnormal m * 2^-9 (m = 8 is 2^-6) */
    return sign | (uint8_t)m;
}
